"""Arguments that used to be accepted and then failed late, or silently did the wrong thing,
are refused at the call with a message that says what to pass; a connector whose client
is not installed says which extra installs it."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import timedelta
from typing import Any

import anyio
import pytest

import rxflow.connectors
from rxflow import DeadLetter, Flow, Retry, Skip, session, sliding, tumbling
from rxflow._checks import check_count, check_int_range, check_port, check_seconds
from rxflow.connectors import (
    mqtt_sink,
    mqtt_source,
    tcp_server_source,
    tcp_sink,
    tcp_source,
    udp_source,
)
from rxflow.errors import MissingExtraError
from rxflow.strategies import Failure

NAN, INF = math.nan, math.inf


def at(item: Any) -> float:
    return float(item)


def wrong(value: object) -> Any:
    """A value of the wrong type, passed as a user without a type checker would."""
    return value


# -- windows -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "error", "message"),
    [
        (lambda: tumbling(NAN), ValueError, r"tumbling\(\): span must be more than 0 seconds"),
        (lambda: tumbling(INF), ValueError, "span must be more than 0 seconds .* got inf"),
        (lambda: tumbling(-INF), ValueError, "span must be more than 0 seconds"),
        (lambda: tumbling(timedelta(0)), ValueError, "span must be more than 0 seconds"),
        (lambda: sliding(10, every=NAN), ValueError, r"sliding\(\): every must be more than 0"),
        (lambda: sliding(NAN, 1), ValueError, "span must be more than 0 seconds"),
        (lambda: session(len, gap=NAN), ValueError, r"session\(\): gap must be more than 0"),
        (lambda: session(len, gap=INF), ValueError, "gap must be more than 0 seconds"),
        (lambda: session(len, 1, max_duration=NAN), ValueError, "max_duration must be more"),
        (
            lambda: tumbling(1, key=wrong("k")),
            TypeError,
            "key must be a function of the item, got 'k'",
        ),
        (lambda: sliding(2, 1, key=wrong(3)), TypeError, "key must be a function of the item"),
        (lambda: session(wrong("user"), 2), TypeError, "key must be a function of the item"),
        (lambda: tumbling(1, max_count=True), TypeError, "max_count must be an int of 1 or more"),
    ],
)
def test_processing_time_windows_refuse_what_cannot_be_a_window(
    build: Callable[[], object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        build()


@pytest.mark.parametrize("option", ["out_of_orderness", "allowed_lateness"])
@pytest.mark.parametrize("value", [NAN, INF, -1.0, "1"])
def test_event_time_durations_must_be_finite_and_not_negative(option: str, value: Any) -> None:
    error = TypeError if isinstance(value, str) else ValueError
    with pytest.raises(error, match=f"{option} must be (0 or more seconds|seconds)"):
        tumbling(10, timestamp=at, late="update", **{option: value})


@pytest.mark.parametrize("value", [NAN, INF, 0, -5.0])
def test_idle_timeout_must_be_a_finite_positive_duration(value: float) -> None:
    with pytest.raises(ValueError, match="idle_timeout must be more than 0 seconds"):
        session(len, 5.0, timestamp=at, idle_timeout=value)


def test_event_time_options_without_a_timestamp_are_refused_not_ignored() -> None:
    with pytest.raises(ValueError, match=r"out_of_orderness= is for event-time .* timestamp="):
        tumbling(10, out_of_orderness=5)  # type: ignore[call-overload]
    with pytest.raises(ValueError, match="idle_timeout= is for event-time windows"):
        session(len, 5, idle_timeout=1)  # type: ignore[call-overload]
    with pytest.raises(ValueError, match="late= is for event-time windows"):
        sliding(2, 1, late="side")  # type: ignore[call-overload]


def test_good_durations_still_pass() -> None:
    tumbling(timedelta(seconds=1))
    tumbling(1, timestamp=at, out_of_orderness=0, idle_timeout=timedelta(seconds=3))
    sliding(2, 1, timestamp=at, late="update", allowed_lateness=5.5)
    session(len, 1e-3, max_duration=1e6)


# -- strategies ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        ({"base": NAN}, ValueError, "base must be 0 or more seconds"),
        ({"base": -1}, ValueError, "base must be 0 or more seconds"),
        ({"cap": INF}, ValueError, "cap must be 0 or more seconds .* got inf"),
        ({"cap": NAN}, ValueError, "cap must be 0 or more seconds"),
        ({"base": 2, "cap": 1}, ValueError, "need base <= cap"),
        ({"base": "0.1"}, TypeError, "base must be seconds"),
        ({"jitter": NAN}, ValueError, "jitter must be a number from 0 to 1"),
        ({"jitter": 1.5}, ValueError, "jitter must be a number from 0 to 1"),
        ({"attempts": 0}, ValueError, "attempts must be an int of 1 or more"),
        ({"attempts": 2.5}, TypeError, "attempts must be an int of 1 or more"),
        ({"attempts": True}, TypeError, "attempts must be an int of 1 or more"),
        (
            {"on": ConnectionError},
            TypeError,
            r"on must be a non-empty tuple .*\(ConnectionError,\)",
        ),
        ({"on": ()}, TypeError, "on must be a non-empty tuple of exception classes"),
        ({"on": (ConnectionError, "timeout")}, TypeError, "on must be a non-empty tuple"),
        ({"then": "skip"}, TypeError, r"then must be FailFast\(\), Skip\(\) or DeadLetter"),
        ({"then": Retry()}, TypeError, "say it once"),
    ],
)
def test_retry_refuses_what_it_could_not_wait_or_catch(
    arguments: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        Retry(**arguments)


def test_retry_accepts_its_documented_forms() -> None:
    policy = Retry(attempts=5, base=0, cap=0.5, jitter=0, on=(OSError,), then=Skip())
    assert policy.delay(3) == 0.0


@pytest.mark.parametrize("sink", ["x", 42, None, ["failures"]])
def test_dead_letter_needs_a_function_or_a_send_stream(sink: Any) -> None:
    with pytest.raises(TypeError, match=r"DeadLetter\(\): sink must be a function .* got"):
        DeadLetter(sink)


def test_dead_letter_takes_functions_and_send_streams() -> None:
    failures: list[Failure] = []
    DeadLetter(failures.append)
    send, receive = anyio.create_memory_object_stream[Failure](1)
    with send, receive:
        DeadLetter(send)


# -- flow -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("batch_size", "error"), [(True, TypeError), (0, ValueError), (2.5, TypeError)]
)
def test_a_sink_batch_size_is_an_int_of_1_or_more(batch_size: Any, error: type[Exception]) -> None:
    with pytest.raises(
        error, match=r"Flow.sink\(\): batch_size must be an int of 1 or more or None"
    ):
        Flow().sink(print, batch_size=batch_size)


# -- connectors: host and port -------------------------------------------------------------

Opener = Callable[[], AbstractAsyncContextManager[Any]]


@pytest.mark.parametrize(
    ("open_", "error", "message"),
    [
        (lambda: tcp_source("127.0.0.1", 70000), ValueError, "between 1 and 65535, got 70000"),
        (lambda: tcp_source("127.0.0.1", 0), ValueError, "port must be a port number"),
        (lambda: tcp_source("127.0.0.1", -1), ValueError, "port must be a port number"),
        (lambda: tcp_source("127.0.0.1", wrong("80")), TypeError, "port must be a port number"),
        (lambda: tcp_source("127.0.0.1", True), TypeError, "port must be a port number"),
        (lambda: tcp_source(wrong(("127.0.0.1", 80)), 80), TypeError, "host must be a host name"),
        (lambda: tcp_source("", 80), TypeError, "host must be a host name"),
        (lambda: tcp_sink("127.0.0.1", 65536), ValueError, "between 1 and 65535"),
        (lambda: tcp_server_source("127.0.0.1", 70000), ValueError, r"between 0 and 65535 \(0:"),
        (lambda: udp_source("127.0.0.1", -2), ValueError, r"between 0 and 65535 \(0:"),
        (lambda: udp_source(wrong(None), 0), TypeError, "host must be a host name"),
        (lambda: mqtt_source("mqtt://127.0.0.1:70000", "t"), ValueError, "port"),
        (lambda: mqtt_sink("mqtt://127.0.0.1:99999", "t"), ValueError, "port"),
    ],
)
@pytest.mark.anyio
async def test_connectors_refuse_a_bad_host_or_port_before_connecting(
    open_: Opener, error: type[Exception], message: str
) -> None:
    # A port out of range used to reach the socket layer and come back as a bare
    # ExceptionGroup of OverflowError; now it is one plain error that says what to pass.
    with pytest.raises(error, match=message) as raised:
        async with open_():
            pass  # pragma: no cover
    assert not isinstance(raised.value, BaseExceptionGroup)


# -- the one module of checks ----------------------------------------------------------------


def test_every_check_takes_where_name_value_and_returns_the_value() -> None:
    assert check_seconds("f()", "t", timedelta(milliseconds=1500)) == 1.5
    assert check_seconds("f()", "t", None, optional=True) is None
    assert check_count("f()", "n", 0, minimum=0) == 0
    assert check_int_range("f()", "qos", 2, 0, 2) == 2
    assert check_port("f()", "port", 0, allow_zero=True) == 0
    with pytest.raises(ValueError, match=r"^f\(\): qos must be between 0 and 2, got 3$"):
        check_int_range("f()", "qos", 3, 0, 2)


# -- connectors: a missing extra -----------------------------------------------------------

EXTRAS = {
    "postgres": ("asyncpg", "postgres_sink"),
    "mqtt": ("aiomqtt", "mqtt_source"),
    "rabbitmq": ("aio_pika", "rabbitmq_source"),
    "http": ("httpx", "sse_source"),
    "nats": ("nats", "jetstream_source"),
    "redis": ("redis", "redis_stream_source"),
}

_WITHOUT = """
import json, sys
sys.modules[{client!r}] = None  # as if the extra were not installed
try:
    {statement}
except BaseException as error:
    print(json.dumps([
        type(error).__name__, str(error), isinstance(error, ModuleNotFoundError),
    ]))
"""


def _import_without(client: str, statement: str) -> tuple[str, str, bool]:
    script = _WITHOUT.format(client=client, statement=statement)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    kind, message, is_module_not_found = json.loads(out.stdout)
    return kind, message, is_module_not_found


@pytest.mark.parametrize("extra", sorted(EXTRAS))
def test_a_connector_without_its_extra_says_what_to_install(extra: str) -> None:
    client, name = EXTRAS[extra]
    for statement in (
        f"import rxflow.connectors.{extra}",
        f"from rxflow.connectors import {name}",
    ):
        kind, message, is_module_not_found = _import_without(client, statement)
        assert kind == "MissingExtraError", (statement, message)
        assert is_module_not_found
        assert message == (
            f"rxflow.connectors.{extra} needs {client}, which is not installed: "
            f"pip install 'rxflow[{extra}]'"
        )


def test_the_missing_extra_error_is_a_module_not_found_error() -> None:
    assert issubclass(MissingExtraError, ModuleNotFoundError)


def test_the_lazy_names_are_all_exported() -> None:
    exported = {name for name in rxflow.connectors.__all__ if name.islower()}
    assert exported == set(rxflow.connectors._MODULE_OF)
