"""MQTT connectors take the broker as a URL (``mqtt://``, ``mqtts://`` for TLS), as every
other connector does; ``(host, port, topic)`` still works for a release, with a warning."""

from __future__ import annotations

import ssl
import uuid
import warnings
from typing import Any

import pytest

from rxflow.connectors.mqtt import mqtt_sink, mqtt_source
from rxflow.errors import ServiceUnavailableError
from tests.connectors.conftest import require_service
from tests.connectors.support import take

pytestmark = pytest.mark.anyio


@pytest.fixture
def broker(anyio_backend: str) -> tuple[str, int]:
    return require_service("mqtt")


def new_topic() -> str:
    return f"rxflow-test/{uuid.uuid4().hex}"


async def round_trip(source_args: tuple[Any, ...], sink_args: tuple[Any, ...]) -> list[Any]:
    async with mqtt_source(*source_args) as source:
        async with mqtt_sink(*sink_args) as sink:
            await sink.send_batch([b"1", b"2"])
        received = aiter(source)
        messages = await take(received, 2)
        for message in messages:
            await message.ack()
    return [message.value for message in messages]


async def test_a_url_with_credentials_names_the_broker(broker: tuple[str, int]) -> None:
    host, port = broker
    topic = new_topic()
    # Mosquitto here lets anyone in: the credentials reach it, and are not refused.
    url = f"mqtt://reader:s%40cret@{host}:{port}"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the URL form warns about nothing
        assert await round_trip((url, topic), (f"mqtt://{host}:{port}/", topic)) == [b"1", b"2"]


async def test_the_port_defaults_to_1883(broker: tuple[str, int]) -> None:
    host, port = broker
    if port != 1883:
        pytest.skip("the broker does not listen on the default port")
    topic = new_topic()
    assert await round_trip((f"mqtt://{host}", topic), (f"mqtt://{host}", topic)) == [b"1", b"2"]


async def test_host_and_port_still_work_with_a_deprecation_warning(
    broker: tuple[str, int],
) -> None:
    host, port = broker
    topic = new_topic()
    with pytest.warns(DeprecationWarning, match="host, port, topic") as warned:
        assert await round_trip((host, port, topic), (host, port, topic)) == [b"1", b"2"]
    assert len(warned) == 2
    messages = [str(warning.message) for warning in warned]
    assert messages[0].startswith("mqtt_source(host, port, topic) is deprecated")
    assert f"mqtt_source('mqtt://{host}:{port}', topic)" in messages[0]
    assert messages[1].startswith("mqtt_sink(host, port, topic) is deprecated")
    # Reported at the caller's line, not inside rxflow or contextlib.
    assert {warning.filename for warning in warned} == {__file__}


async def test_mqtts_speaks_tls_on_port_8883_by_default(broker: tuple[str, int]) -> None:
    host, port = broker
    # Nothing listens on 8883 here: the error names the TLS default port.
    with pytest.raises(ServiceUnavailableError, match=rf"cannot connect to {host}:8883"):
        async with mqtt_source(f"mqtts://{host}", "t"):
            pass
    # The plain-text broker does not answer a TLS handshake: TLS was attempted.
    with pytest.raises(ServiceUnavailableError, match=rf"cannot connect to {host}:{port}"):
        async with mqtt_sink(f"mqtts://{host}:{port}", "t"):
            pass


@pytest.mark.parametrize(
    ("url", "options", "error", "message"),
    [
        ("broker.local", {}, TypeError, r"must be the broker's URL, such as 'mqtt://"),
        ("http://u:pw@h", {}, ValueError, r"'http://u:\*\*\*@h' is not an MQTT URL"),
        ("mqtt://u:pw@h:xx", {}, ValueError, r"the port of 'mqtt://u:\*\*\*@h:xx' is not a"),
        ("mqtt://u:pw@h/a?b=1", {}, ValueError, r"has a path or a query"),
        ("mqtt://u:pw@h", {"password": "x"}, ValueError, r"credentials given twice"),
        ("mqtt://h", {"tls_context": ssl.create_default_context()}, ValueError, r"mqtts://"),
    ],
)
async def test_bad_urls_say_what_to_pass_without_the_password(
    anyio_backend: str, url: str, options: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message) as raised:
        async with mqtt_source(url, "t", **options):
            pass
    assert "pw" not in str(raised.value)
    with pytest.raises(error, match=message):
        async with mqtt_sink(url, "t", **options):
            pass
