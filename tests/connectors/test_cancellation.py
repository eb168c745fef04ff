"""Cancelling any connector while it connects, opens or waits leaves nothing behind, quietly.

Every source and sink is opened, used once (the first message, one send) and left waiting,
and cancelled at some point on the way, many times over, on both backends: against a
server that accepts connections and never answers (a black hole: the cancel lands in the
connect; for the brokers, the contract suite), and against the real server at small random
delays (it lands anywhere: connect, handshake, subscription, the first read, the close).
Afterwards no task, no thread and no file descriptor may be left over, and nothing may have
been printed or logged: no stderr, no warning or error log record, no asyncio
exception-handler call, no unraisable exception.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import attrs
import pytest

from rxflow.connectors import (
    file_sink,
    follow_file,
    http_post_sink,
    jetstream_sink,
    jetstream_source,
    kafka_sink,
    kafka_source,
    mqtt_sink,
    mqtt_source,
    poll_source,
    postgres_listen_source,
    postgres_sink,
    postgres_table_source,
    process_sink,
    process_source,
    rabbitmq_sink,
    rabbitmq_source,
    read_file,
    redis_stream_sink,
    redis_stream_source,
    sse_source,
    tcp_server_source,
    tcp_sink,
    tcp_source,
    udp_source,
)
from rxflow.connectors._asyncio_host import AsyncioHost
from tests.connectors.conftest import SERVICES, require_service
from tests.connectors.http_server import Exchange, serving
from tests.connectors.support import (
    Leftovers,
    after,
    black_hole,
    leftovers_of,
    nothing_printed,
    random_delays,
)

pytestmark = pytest.mark.anyio

CANCELS = 50  # per connector, per backend, per kind of target
WITHIN_S = 120.0  # the most one test's cancels may take, close timeouts included
SEED = 11
TEST_SERVERS = ("tests.connectors.http_server.", f"{__name__}.real_server.")


@attrs.frozen
class Target:
    """Where a connector connects to, and the names it uses there (unique per test)."""

    host: str
    port: int
    name: str  # a stream, queue, topic, table or channel of this test's own
    path: Path  # a file or directory of this test's own


Open = Callable[[Target], AbstractAsyncContextManager[Any]]


async def first_message(source: Any) -> None:
    async for _ in source:
        return


async def one_send(sink: Any, item: Any) -> None:
    await sink.send(item)


@attrs.frozen
class Case:
    """One connector: how to open it against a target, and what its first use is."""

    open: Open
    use: Callable[[Any], Awaitable[None]]
    service: str | None = None  # a local service it needs; None: it is its own server
    black_hole: bool = True  # it connects over TCP, so a black hole can stall it


def _sink_case(open_: Open, item: Any, **kwargs: Any) -> Case:
    return Case(open_, lambda sink: one_send(sink, item), **kwargs)


def _source_case(open_: Open, **kwargs: Any) -> Case:
    return Case(open_, first_message, **kwargs)


def _nats(t: Target) -> str:
    return f"nats://{t.host}:{t.port}"


def _redis(t: Target) -> str:
    return f"redis://{t.host}:{t.port}"


def _amqp(t: Target) -> str:
    return f"amqp://guest:guest@{t.host}:{t.port}/"


def _mqtt(t: Target) -> str:
    return f"mqtt://{t.host}:{t.port}"


def _postgres(t: Target) -> str:
    return f"postgresql://postgres@{t.host}:{t.port}/test"


def _http(t: Target, path: str) -> str:
    return f"http://{t.host}:{t.port}{path}"


CASES: dict[str, Case] = {
    "jetstream_source": _source_case(
        lambda t: jetstream_source(_nats(t), t.name, f"{t.name}.>", "worker", create=True),
        service="nats",
    ),
    "jetstream_sink": _sink_case(
        lambda t: jetstream_sink(_nats(t), f"{t.name}.out", stream=t.name, create=True),
        b"x",
        service="nats",
    ),
    "kafka_source": _source_case(
        lambda t: kafka_source(f"{t.host}:{t.port}", t.name, "group", session_timeout_ms=6000),
        service="kafka",
    ),
    "kafka_sink": _sink_case(
        lambda t: kafka_sink(f"{t.host}:{t.port}", t.name), b"x", service="kafka"
    ),
    "redis_stream_source": _source_case(
        lambda t: redis_stream_source(_redis(t), t.name, "group", "worker", block_ms=100),
        service="redis",
    ),
    "redis_stream_sink": _sink_case(
        lambda t: redis_stream_sink(_redis(t), t.name), b"x", service="redis"
    ),
    "rabbitmq_source": _source_case(
        lambda t: rabbitmq_source(_amqp(t), t.name, durable=False), service="rabbitmq"
    ),
    "rabbitmq_sink": _sink_case(
        # To the test's queue (declared beforehand): an unroutable send would fail.
        lambda t: rabbitmq_sink(_amqp(t), routing_key=t.name),
        b"x",
        service="rabbitmq",
    ),
    "mqtt_source": _source_case(
        lambda t: mqtt_source(_mqtt(t), f"rxflow/{t.name}/#"), service="mqtt"
    ),
    "mqtt_sink": _sink_case(
        lambda t: mqtt_sink(_mqtt(t), f"rxflow/{t.name}/out"), b"x", service="mqtt"
    ),
    "postgres_listen_source": _source_case(
        lambda t: postgres_listen_source(_postgres(t), t.name), service="postgresql"
    ),
    "postgres_table_source": _source_case(
        lambda t: postgres_table_source(_postgres(t), t.name, id_column="id", poll_interval=0.05),
        service="postgresql",
    ),
    "postgres_sink": _sink_case(
        lambda t: postgres_sink(_postgres(t), t.name, ["v"], method="insert"),
        (1,),
        service="postgresql",
    ),
    "sse_source": _source_case(lambda t: sse_source(_http(t, "/events"))),
    "poll_source": _source_case(lambda t: poll_source(_http(t, "/items"), interval=0.05)),
    "http_post_sink": _sink_case(lambda t: http_post_sink(_http(t, "/ingest")), {"n": 1}),
    "tcp_source": _source_case(lambda t: tcp_source(t.host, t.port)),
    "tcp_sink": _sink_case(lambda t: tcp_sink(t.host, t.port), b"x"),
    "tcp_server_source": _source_case(lambda t: tcp_server_source(), black_hole=False),
    "udp_source": _source_case(lambda t: udp_source(), black_hole=False),
    "process_source": _source_case(
        lambda t: process_source(["sleep", "30"], terminate_timeout=1.0), black_hole=False
    ),
    "process_sink": _sink_case(
        lambda t: process_sink(["cat"], stdout=subprocess.DEVNULL, terminate_timeout=1.0),
        "x",
        black_hole=False,
    ),
    "read_file": _source_case(lambda t: read_file(t.path / "lines"), black_hole=False),
    "follow_file": _source_case(
        lambda t: follow_file(t.path / "followed", poll_interval=0.05), black_hole=False
    ),
    "file_sink": _sink_case(lambda t: file_sink(t.path / "out"), "x", black_hole=False),
}


# -- the run: cancel, many times ----------------------------------------------------------


async def open_use_and_wait(case: Case, target: Target) -> None:
    async with case.open(target) as opened:
        await case.use(opened)
        await anyio.sleep_forever()  # the block is cancelled too: the close is exercised


async def cancel_many(case: Case, target: Target, delays: list[float | int]) -> None:
    """Open ``case`` once per delay and cancel it after that many seconds (a float) or
    event-loop turns (an int)."""
    for delay in delays:
        async with anyio.create_task_group() as tg:
            tg.start_soon(open_use_and_wait, case, target)
            await after(delay)
            tg.cancel_scope.cancel()


async def run_and_count(case: Case, target: Target, delays: list[float | int]) -> Leftovers:
    """Cancel ``case`` at each delay; what was left running or open compared with before."""
    return await leftovers_of(
        lambda some: cancel_many(case, target, some),
        delays,
        within=WITHIN_S,
        ignore_tasks=TEST_SERVERS,
    )


# -- targets ------------------------------------------------------------------------------


@pytest.fixture
def name() -> str:
    return f"rxflow_cancel_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def files(tmp_path: Path) -> Path:
    (tmp_path / "lines").write_text("a\nb\n")
    (tmp_path / "followed").write_text("")
    return tmp_path


async def _ignore_request(exchange: Exchange) -> None:
    await exchange.wait_for_disconnect()


async def _no_items(exchange: Exchange) -> None:
    await exchange.respond_json([])


async def _accepted(exchange: Exchange) -> None:
    await exchange.respond_json({})


async def _silent_stream(exchange: Exchange) -> None:
    await exchange.start_stream()
    await exchange.wait_for_disconnect()


@contextlib.asynccontextmanager
async def real_server(case_name: str, case: Case) -> AsyncIterator[tuple[str, int]]:
    """The server ``case`` talks to: the local service, or one this test runs."""
    if case.service is not None:
        yield require_service(case.service)
    elif case_name in ("sse_source", "poll_source", "http_post_sink"):
        routes = {"GET /events": _silent_stream, "GET /items": _no_items, "POST /ingest": _accepted}
        async with serving(routes) as server:
            yield "127.0.0.1", server.port
    elif case_name in ("tcp_source", "tcp_sink"):
        async with await anyio.create_tcp_listener(local_host="127.0.0.1") as listener:

            async def hold(stream: anyio.abc.SocketStream) -> None:
                async with stream:
                    with contextlib.suppress(anyio.BrokenResourceError, anyio.EndOfStream):
                        while await stream.receive():
                            pass

            async with anyio.create_task_group() as tg:
                tg.start_soon(listener.serve, hold)
                yield "127.0.0.1", listener.extra(anyio.abc.SocketAttribute.local_port)
                tg.cancel_scope.cancel()
    else:
        yield "127.0.0.1", 0  # it is its own server, or needs none


async def _prepare(case_name: str, host: str, port: int, name: str) -> None:
    """What a case needs on the real server: PostgreSQL tables, the sink's RabbitMQ queue,
    the Kafka topic (the others create theirs)."""
    if case_name.startswith("kafka"):
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # type: ignore[import-untyped]

        admin = AIOKafkaAdminClient(bootstrap_servers=f"{host}:{port}")
        await admin.start()
        try:
            await admin.create_topics([NewTopic(name, 1, 1)])
        finally:
            await admin.close()
    elif case_name in ("postgres_table_source", "postgres_sink"):
        import asyncpg  # type: ignore[import-untyped,unused-ignore]

        connection = await asyncpg.connect(f"postgresql://postgres@{host}:{port}/test")
        try:
            await connection.execute(f"CREATE TABLE {name} (id serial PRIMARY KEY, v int)")
        finally:
            await connection.close()
    elif case_name == "rabbitmq_sink":
        import aio_pika

        connection = await aio_pika.connect(f"amqp://guest:guest@{host}:{port}/")
        async with connection:
            channel = await connection.channel()
            await channel.declare_queue(name, durable=False)


async def _clean_up(case_name: str, host: str, port: int, name: str) -> None:
    """Remove what the cancelled opens created on the real server."""
    if case_name.startswith("jetstream"):
        import nats
        import nats.js.errors

        client = await nats.connect(f"nats://{host}:{port}")
        try:
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await client.jetstream().delete_stream(name)
        finally:
            await client.close()
    elif case_name.startswith("kafka"):
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(bootstrap_servers=f"{host}:{port}")
        await admin.start()
        try:
            await admin.delete_topics([name])
        finally:
            await admin.close()
    elif case_name.startswith("redis"):
        import redis.asyncio

        client = redis.asyncio.Redis(host=host, port=port)
        try:
            await client.delete(name)
        finally:
            await client.aclose()
    elif case_name.startswith("rabbitmq"):
        import aio_pika

        connection = await aio_pika.connect(f"amqp://guest:guest@{host}:{port}/")
        async with connection:
            channel = await connection.channel()
            await channel.queue_delete(name)
    elif case_name.startswith("postgres"):
        import asyncpg

        connection = await asyncpg.connect(f"postgresql://postgres@{host}:{port}/test")
        try:
            await connection.execute(f"DROP TABLE IF EXISTS {name}")
        finally:
            await connection.close()


def _on_own_loop(function: Callable[..., Awaitable[None]], *args: Any) -> Callable[[], None]:
    """``function(*args)`` run to the end on a fresh asyncio loop (called in a thread)."""
    return lambda: asyncio.run(function(*args))  # type: ignore[arg-type]


# -- the tests ------------------------------------------------------------------------------


def _assert_clean(case_name: str, left: Leftovers, noise: list[str]) -> None:
    assert left.nothing, left.describe(f"{case_name}: {CANCELS} cancels")
    assert noise == [], f"{case_name}: cancelling printed or reported:\n" + "\n".join(noise)


# The brokers' sources and sinks (the cases with a service) are cancelled while connecting to
# a black hole by the contract suite (tests/connectors/contract): the same checks, at 12
# cancels each (the real-server test below still cancels them 50 times, anywhere).
@pytest.mark.parametrize(
    "case_name", [n for n, c in CASES.items() if c.black_hole and c.service is None]
)
async def test_cancelled_while_connecting_to_a_black_hole_leaves_nothing(
    case_name: str,
    name: str,
    files: Path,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    case = CASES[case_name]
    with black_hole() as port, nothing_printed(capfd, caplog) as noise:
        target = Target("127.0.0.1", port, name, files)
        # The connect never completes: every cancel lands in it, at some step.
        left = await run_and_count(case, target, random_delays(CANCELS, longest=0.02))
    _assert_clean(case_name, left, noise)


@pytest.mark.parametrize("case_name", list(CASES))
async def test_cancelled_at_random_points_against_the_real_server_leaves_nothing(
    case_name: str,
    name: str,
    files: Path,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    case = CASES[case_name]
    async with real_server(case_name, case) as (host, port):
        if case.service is not None:
            await anyio.to_thread.run_sync(_on_own_loop(_prepare, case_name, host, port, name))
        try:
            with nothing_printed(capfd, caplog) as noise:
                target = Target(host, port, name, files)
                # Up to about what opening and a first read take here, so that the cancels
                # land all along the way.
                left = await run_and_count(case, target, random_delays(CANCELS, longest=0.05))
        finally:
            if case.service is not None:
                await anyio.to_thread.run_sync(_on_own_loop(_clean_up, case_name, host, port, name))
    _assert_clean(case_name, left, noise)


def test_every_connector_is_covered() -> None:
    from rxflow import connectors

    factories = {n for n in connectors.__all__ if n.endswith(("_source", "_sink", "_file"))}
    assert factories - {"stdin_source", "stdout_sink"} == set(CASES)
    assert {c.service for c in CASES.values()} - {None} == {*SERVICES, "kafka"}


# -- the shared mechanism: calls on a hosted asyncio loop ----------------------------------


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_hosted_calls_cancelled_as_they_end_print_nothing(
    capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """A cancel that meets the call's end used to log an AttributeError traceback (anyio's
    portal clears the task's cancel scope as the future's cancel callback, in the caller's
    thread, reads it). The race is narrow: threads switch often here, and the call's end
    and the cancel are made to meet, a few thousand times (about 1 in 200 hit it)."""
    rng = random.Random(SEED)
    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        with nothing_printed(capfd, caplog) as noise:
            async with AsyncioHost() as host:
                for _ in range(3000):
                    await _cancel_as_it_ends(host, spin=rng.randrange(200))
    finally:
        sys.setswitchinterval(switch_interval)
    assert noise == []


async def _cancel_as_it_ends(host: AsyncioHost, *, spin: int) -> None:
    waiting = anyio.Event()
    ending: list[Callable[[], object]] = []

    async def until_told() -> None:
        told = asyncio.Event()
        loop = asyncio.get_running_loop()
        ending.append(lambda: loop.call_soon_threadsafe(told.set))
        host.call_soon_here(waiting.set)
        await told.wait()

    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:
            tg.start_soon(host.call, until_told)
            await waiting.wait()
            ending[0]()
            for _ in range(spin):  # a few microseconds, for the other thread to run
                pass
            scope.cancel()


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_a_hosted_open_that_completes_as_it_is_cancelled_is_closed() -> None:
    closed: list[object] = []
    made = object()

    async def open_regardless() -> object:
        # Its result was on its way: it returns all the same.
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(3600)
        return made

    async def close(thing: object) -> None:
        asyncio.get_running_loop()  # on the client's loop
        closed.append(thing)

    async with AsyncioHost() as host:
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(lambda: host.call(open_regardless, close_if_cancelled=close))
                await anyio.sleep(0.01)  # not a measurement: the call is waiting by then
                scope.cancel()
        assert scope.cancelled_caught
        assert closed == [made]
