"""MQTT source and sink against the local broker, on asyncio and on trio."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiomqtt
import anyio
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from reactivex import operators as ops

from rxflow import Flow, open_pipe
from rxflow.connectors import Message
from rxflow.connectors._asyncio_host import AsyncioHost
from rxflow.connectors.mqtt import MQTTSource, mqtt_sink, mqtt_source
from rxflow.connectors.rabbitmq import rabbitmq_source
from rxflow.errors import DecodeError, RecordRejected, ServiceUnavailableError
from tests.connectors.conftest import require_service
from tests.connectors.support import take, tcp_proxy, wait_until
from tests.connectors.test_rabbitmq import URL, Admin

HOST, PORT = "127.0.0.1", 1883
BROKER = f"mqtt://{HOST}:{PORT}"


@pytest.fixture
def topic(anyio_backend: str) -> str:
    require_service("mqtt")
    return f"rxflow-test/{uuid.uuid4().hex}"


@pytest.fixture
async def client_id(anyio_backend: str) -> AsyncIterator[str]:
    """A persistent session's name; the session is ended after the test."""
    name = f"rxflow-test-{uuid.uuid4().hex}"
    yield name

    async def forget() -> None:  # a clean start without expiry ends the session
        async with aiomqtt.Client(
            HOST, PORT, identifier=name, protocol=aiomqtt.ProtocolVersion.V5, clean_start=True
        ):
            pass

    async with AsyncioHost() as host:
        await host.call(forget)


async def publish(topic: str, *payloads: bytes) -> None:
    async with mqtt_sink(BROKER, topic) as sink:
        await sink.send_batch(payloads)


def double_value(message: Message[Any]) -> Any:
    return message.value * 2


async def all_acked(source: MQTTSource) -> bool:
    return source.unacked == 0


async def values_until(
    messages: AsyncIterator[Message[Any]], wanted: set[Any], seen: set[Any]
) -> None:
    """Ack what comes until every wanted value has been seen."""
    with anyio.fail_after(10):
        while not wanted <= seen:
            message = await anext(messages)
            seen.add(message.value)
            await message.ack()


@pytest.mark.anyio
async def test_sink_to_source_round_trip_through_a_pipe(topic: str) -> None:
    async with mqtt_source(BROKER, topic, codec="json") as source:
        async with mqtt_sink(BROKER, topic, batch_size=10) as sink:
            assert sink.batch_size == 10
            await sink.send_batch([{"n": n} for n in range(5)])
            await sink.send({"n": 5})
        async with open_pipe(source) as pipe:
            messages = await take(pipe, 6)
        for message in messages:
            await message.ack()
        await wait_until(lambda: all_acked(source))  # under trio, acks go out asynchronously
    assert [message.value for message in messages] == [{"n": n} for n in range(6)]
    assert {message.key for message in messages} == {topic}
    assert {message.source for message in messages} == {f"mqtt:{topic}"}
    assert source.decoder.decoded == 6


@pytest.mark.anyio
async def test_encode_is_the_old_name_of_encoder(topic: str) -> None:
    async with mqtt_source(BROKER, topic) as source:
        with pytest.warns(DeprecationWarning, match=r"encode= is deprecated; pass encoder="):
            async with mqtt_sink(BROKER, topic, encode=lambda n: b"n=%d" % n) as sink:
                await sink.send(7)
        async with mqtt_sink(BROKER, topic, encoder="text") as sink:
            await sink.send("eight")
        messages = [await anext(source), await anext(source)]
        await source.ack_many(messages)
    assert [message.value for message in messages] == [b"n=7", b"eight"]


@pytest.mark.anyio
async def test_qos_2_round_trip_and_user_properties_as_headers(topic: str) -> None:
    async def publish_with_properties() -> None:
        properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        properties.UserProperty = [("trace", "t-1"), ("tenant", "acme")]
        async with aiomqtt.Client(HOST, PORT, protocol=aiomqtt.ProtocolVersion.V5) as client:
            await client.publish(topic, b"with headers", qos=1, properties=properties)

    async with mqtt_source(BROKER, topic, qos=2) as source:
        async with mqtt_sink(BROKER, topic, qos=2) as sink:
            await sink.send(b"exactly once")
        async with AsyncioHost() as host:
            await host.call(publish_with_properties)
        messages = await take(aiter(source), 2)
        for message in messages:
            await message.ack()
        await wait_until(lambda: all_acked(source))
    assert {message.value: message.headers for message in messages} == {
        b"exactly once": {},
        b"with headers": {"trace": "t-1", "tenant": "acme"},
    }


@pytest.mark.anyio
async def test_unacked_messages_come_again_to_the_same_client_id(
    topic: str, client_id: str
) -> None:
    async with mqtt_source(BROKER, topic, client_id=client_id) as source:
        await publish(topic, b"a", b"b", b"c", b"d")
        a, b, c, _ = await take(aiter(source), 4)
        await a.ack()
        await b.nack()  # MQTT has no negative ack: like not acking
        await c.ack()
    await publish(topic, b"e")  # while away: kept by the session
    async with mqtt_source(BROKER, topic, client_id=client_id) as source:
        again = await take(aiter(source), 3)
        for message in again:
            await message.ack()
    assert [message.value for message in again] == [b"b", b"d", b"e"]


@pytest.mark.anyio
async def test_a_dropped_connection_loses_no_message(topic: str, client_id: str) -> None:
    before, after = {b"a%d" % n for n in range(20)}, {b"b%d" % n for n in range(20)}
    acked: set[Any] = set()
    lost = r"connection to 127\.0\.0\.1:\d+ was lost"
    async with tcp_proxy(PORT) as proxy:
        with pytest.raises(ServiceUnavailableError, match=lost):
            async with mqtt_source(
                f"mqtt://{HOST}:{proxy.port}", topic, client_id=client_id, receive_maximum=5
            ) as source:
                await publish(topic, *sorted(before))
                messages = aiter(source)
                await values_until(messages, {b"a%d" % n for n in range(7)}, acked)
                proxy.cut()  # mid-stream; acks from now on never reach the broker
                await publish(topic, *sorted(after))  # these cannot reach this connection
                await values_until(messages, before | after, set())
    # At least once: all that was not acked before the cut comes again.
    async with mqtt_source(BROKER, topic, client_id=client_id) as source:
        await values_until(aiter(source), before | after, acked)


@pytest.mark.anyio
async def test_the_sink_reports_a_dropped_connection_and_reconnects(topic: str) -> None:
    async with mqtt_source(BROKER, topic) as source:
        async with (
            tcp_proxy(PORT) as proxy,
            mqtt_sink(f"mqtt://{HOST}:{proxy.port}", topic) as sink,
        ):
            await sink.send(b"before")
            proxy.drop()
            with pytest.raises(ServiceUnavailableError, match="lost while publishing"):
                with anyio.fail_after(10):
                    await sink.send(b"lost?")
            await sink.send_batch([b"after", b"after"])  # connects again
        values: list[Any] = []
        with anyio.fail_after(10):
            async for message in source:
                values.append(message.value)
                await message.ack()
                if values.count(b"after") == 2:
                    break
    assert values[0] == b"before"
    assert set(values) <= {b"before", b"lost?", b"after"}  # "lost?" may have got through


@pytest.mark.anyio
async def test_bad_arguments_say_what_to_pass(topic: str) -> None:
    with pytest.raises(ValueError, match="'a/#/b' is not a valid topic filter"):
        async with mqtt_source(BROKER, "a/#/b"):
            pass
    with pytest.raises(ValueError, match="receive_maximum must be between 1 and 65535"):
        async with mqtt_source(BROKER, "t", receive_maximum=0):
            pass
    with pytest.raises(ValueError, match="qos must be between 0 and 2"):
        async with mqtt_sink(BROKER, "t", qos=3):
            pass
    with pytest.raises(ServiceUnavailableError, match=r"mqtt: cannot connect to 127\.0\.0\.1:1 "):
        async with mqtt_source(f"mqtt://{HOST}:1", "t"):
            pass


@pytest.mark.anyio
async def test_a_flow_from_a_rabbitmq_queue_to_mqtt_acks_once_published(topic: str) -> None:
    require_service("rabbitmq")
    queue = f"rxflow-test-{uuid.uuid4().hex}"
    async with AsyncioHost() as host:
        admin = Admin(host)
        await admin.publish(queue, *(b"%d" % n for n in range(30)))
        try:
            async with (
                mqtt_source(BROKER, topic, codec="json") as doubled,
                rabbitmq_source(URL, queue, codec="json", prefetch=10) as numbers,
                mqtt_sink(BROKER, topic, batch_size=8) as out,
            ):
                flow = Flow("double").source(numbers).pipe(ops.map(double_value)).sink(out)
                async with anyio.create_task_group() as tg:
                    handle = flow.start(tg)
                    received = await take(aiter(doubled), 30)
                    handle.stop()
                assert sorted(message.value for message in received) == list(range(0, 60, 2))
                assert handle.acknowledged == 30
            assert await admin.counts(queue) == (0, 0)  # every message acked, once published
        finally:
            await admin.delete(queue)


# -- identity: what names a message across redeliveries ------------------------------------


async def publish_with_user_property(topic: str, payload: bytes, **pairs: str) -> None:
    async def run() -> None:
        properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        properties.UserProperty = list(pairs.items())
        async with aiomqtt.Client(HOST, PORT, protocol=aiomqtt.ProtocolVersion.V5) as client:
            await client.publish(topic, payload, qos=1, properties=properties)

    async with AsyncioHost() as host:
        await host.call(run)


def event_id(message: Message[Any]) -> Any:
    return message.value["id"]


@pytest.mark.anyio
async def test_identity_from_a_payload_field_the_same_when_redelivered(
    topic: str, client_id: str
) -> None:
    async with mqtt_source(BROKER, topic, client_id=client_id, codec="json") as source:
        await publish(topic, b'{"id": 7}', b'{"id": "e-8"}')
        plain = await take(aiter(source), 2)  # without identity=: none; never acked
    async with mqtt_source(
        BROKER, topic, client_id=client_id, codec="json", identity=event_id
    ) as source:
        again = await take(aiter(source), 2)
        await source.ack_many(again)
        await wait_until(lambda: all_acked(source))
    assert [message.identity for message in plain] == [None, None]
    assert [message.identity for message in again] == [7, "e-8"]


@pytest.mark.anyio
async def test_identity_from_a_user_property(topic: str) -> None:
    by_property = lambda message: message.headers.get("message-id")  # noqa: E731
    async with mqtt_source(BROKER, topic, identity=by_property) as source:
        await publish_with_user_property(topic, b"a", **{"message-id": "m-1"})
        await publish(topic, b"b")  # no such property: None
        messages = await take(aiter(source), 2)
        await source.ack_many(messages)
        await wait_until(lambda: all_acked(source))
    assert [(message.value, message.identity) for message in messages] == [
        (b"a", "m-1"),
        (b"b", None),
    ]


@pytest.mark.anyio
async def test_a_failing_identity_function_stops_at_its_message_and_loses_none(
    topic: str, client_id: str
) -> None:
    got: list[Any] = []
    async with mqtt_source(
        BROKER, topic, client_id=client_id, codec="json", identity=event_id
    ) as source:
        await publish(topic, b'{"id": 1}', b'{"id": 2}', b"{}", b'{"id": 4}')
        with anyio.fail_after(10), pytest.raises(DecodeError) as raised:
            while True:  # the runs that come before the failing message, whole
                got += await source.next_run()
        await source.ack_many(got)
        with pytest.raises(DecodeError):  # still at the head: raised again, not dropped
            await anext(source)
        await wait_until(lambda: all_acked_but(source, 2))
    assert [message.identity for message in got] == [1, 2]
    assert "identity=event_id raised KeyError('id') on it" in str(raised.value)
    assert isinstance(raised.value.__cause__, RecordRejected)
    assert isinstance(raised.value.__cause__.__cause__, KeyError)
    # The session delivers the other two again; with "skip" the failing one is set aside.
    async with mqtt_source(
        BROKER,
        topic,
        client_id=client_id,
        codec="json",
        identity=event_id,
        on_decode_error="skip",
    ) as source:
        (rest,) = await take(aiter(source), 1)
        await rest.ack()
        await wait_until(lambda: all_acked(source))
        assert rest.identity == 4
        assert source.decoder.skipped == 1


async def all_acked_but(source: MQTTSource, count: int) -> bool:
    return source.unacked == count


@pytest.mark.anyio
async def test_identity_must_be_a_function(topic: str) -> None:
    with pytest.raises(TypeError, match="identity must be a function of the message"):
        async with mqtt_source(BROKER, topic, identity="id"):  # type: ignore[arg-type]
            pass
