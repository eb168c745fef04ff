"""RabbitMQ source and sink against the local broker, on asyncio and on trio."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aio_pika
import anyio
import anyio.abc
import pytest

from rxflow import open_pipe
from rxflow.connectors._asyncio_host import AsyncioHost
from rxflow.connectors.rabbitmq import RabbitMQSettlement, rabbitmq_sink, rabbitmq_source
from rxflow.connectors.rabbitmq._client import close as close_connection
from rxflow.errors import DecodeError, RecordRejected, ServiceUnavailableError
from tests.connectors.conftest import require_service
from tests.connectors.support import (
    take,
    tcp_proxy,
)

URL = "amqp://guest:guest@127.0.0.1:5672/"


class Admin:
    """Test-side broker calls (declare, count, publish, delete), on both backends."""

    def __init__(self, host: AsyncioHost) -> None:
        self.host = host

    async def _on_channel(self, action: Callable[[Any], Awaitable[Any]]) -> Any:
        async def run() -> Any:
            connection = await aio_pika.connect(URL)
            try:
                return await action(await connection.channel())
            finally:
                await close_connection(connection)  # and the client's closing tasks

        return await self.host.call(run)

    async def counts(self, queue: str) -> tuple[int, int]:
        """(ready messages, consumers) of a queue."""

        async def count(channel: Any) -> tuple[int, int]:
            declared = (await channel.declare_queue(queue, passive=True)).declaration_result
            return declared.message_count, declared.consumer_count

        result: tuple[int, int] = await self._on_channel(count)
        return result

    async def publish(
        self,
        queue: str,
        *bodies: bytes,
        headers: dict[str, Any] | None = None,
        message_id: str | None = None,
    ) -> None:
        async def publish(channel: Any) -> None:
            await channel.declare_queue(queue, durable=True)
            for body in bodies:
                message = aio_pika.Message(body, headers=headers, message_id=message_id)
                await channel.default_exchange.publish(message, routing_key=queue)

        await self._on_channel(publish)

    async def delete(self, queue: str) -> None:
        await self._on_channel(lambda channel: channel.queue_delete(queue))


async def publish_with_no_message_id(queue: str, body: bytes) -> None:
    """Publish as clients that set no ``message_id`` do (aio-pika always sets one): AMQP
    0-9-1 frames written by hand, in confirm mode, over a socket (asyncio or trio)."""
    from pamqp import body as amqp_body
    from pamqp import commands, frame, header

    async with await anyio.connect_tcp("127.0.0.1", 5672) as stream:
        pending = b""

        async def expect(kind: type[Any]) -> None:
            nonlocal pending
            with anyio.fail_after(10):
                while True:
                    try:
                        used, _, received = frame.unmarshal(pending)
                    except Exception:  # pamqp: not a whole frame yet
                        pending += await stream.receive()
                        continue
                    pending = pending[used:]
                    if isinstance(received, kind):
                        return

        async def send(*frames: Any, channel: int = 0) -> None:
            await stream.send(b"".join(frame.marshal(each, channel) for each in frames))

        await stream.send(header.ProtocolHeader().marshal())
        await expect(commands.Connection.Start)
        await send(commands.Connection.StartOk(response="\0guest\0guest"))
        await expect(commands.Connection.Tune)
        await send(commands.Connection.TuneOk(2047, 131072, 0), commands.Connection.Open("/"))
        await expect(commands.Connection.OpenOk)
        await send(commands.Channel.Open(), channel=1)
        await expect(commands.Channel.OpenOk)
        await send(commands.Confirm.Select(), channel=1)
        await expect(commands.Confirm.SelectOk)
        properties = commands.Basic.Properties(delivery_mode=2)
        await send(
            commands.Basic.Publish(exchange="", routing_key=queue, mandatory=True),
            header.ContentHeader(0, len(body), properties),
            amqp_body.ContentBody(body),
            channel=1,
        )
        await expect(commands.Basic.Ack)  # the broker has it, routed
        await send(commands.Connection.Close(200, "done", 0, 0))
        await expect(commands.Connection.CloseOk)


@pytest.fixture
async def admin(anyio_backend: str) -> AsyncIterator[Admin]:
    require_service("rabbitmq")
    async with AsyncioHost() as host:
        yield Admin(host)


@pytest.fixture
async def queue(admin: Admin) -> AsyncIterator[str]:
    name = f"rxflow-test-{uuid.uuid4().hex}"
    yield name
    await admin.delete(name)


@pytest.mark.anyio
async def test_encode_is_the_old_name_of_encoder(admin: Admin, queue: str) -> None:
    await admin.publish(queue)  # declares the queue, so the mandatory publish is routed
    with pytest.warns(DeprecationWarning, match=r"encode= is deprecated; pass encoder="):
        async with rabbitmq_sink(URL, routing_key=queue, encode=lambda n: b"n=%d" % n) as sink:
            await sink.send(7)
    async with rabbitmq_sink(URL, routing_key=queue, encoder="text") as sink:
        await sink.send("eight")
    async with rabbitmq_source(URL, queue) as source:
        messages = [await anext(source), await anext(source)]
        await source.ack_many(messages)
    assert [message.value for message in messages] == [b"n=7", b"eight"]


@pytest.mark.anyio
async def test_sink_to_source_round_trip_through_a_pipe(admin: Admin, queue: str) -> None:
    async with rabbitmq_sink(URL, routing_key=queue, batch_size=10) as sink:
        assert sink.batch_size == 10
        await admin.publish(queue)  # declares the queue, so the mandatory publish is routed
        await sink.send_batch([{"n": n} for n in range(5)])
        await sink.send({"n": 5})
    async with rabbitmq_source(URL, queue, codec="json") as source:
        async with open_pipe(source) as pipe:
            messages = await take(pipe, 6)
        for message in messages:
            await message.ack()
    assert [message.value for message in messages] == [{"n": n} for n in range(6)]
    assert {message.key for message in messages} == {queue}
    assert {message.source for message in messages} == {f"rabbitmq:{queue}"}
    assert all(abs(time.time() - (message.timestamp or 0)) < 60 for message in messages)
    assert source.decoder.decoded == 6
    assert await admin.counts(queue) == (0, 0)  # all acked, and the consumer is gone


@pytest.mark.anyio
async def test_amqp_headers_come_as_strings(admin: Admin, queue: str) -> None:
    await admin.publish(queue, b"x", headers={"trace": "t-1", "attempt": 3, "retry": True})
    async with rabbitmq_source(URL, queue) as source:
        (message,) = await take(aiter(source), 1)
        await message.ack()
    assert message.headers == {"trace": "t-1", "attempt": "3", "retry": "True"}


@pytest.mark.anyio
async def test_an_unroutable_message_fails_its_send(admin: Admin, queue: str) -> None:
    async with rabbitmq_sink(URL, routing_key=f"{queue}-nobody") as sink:
        with pytest.raises(aio_pika.exceptions.PublishError, match="NO_ROUTE"):
            await sink.send(b"lost?")


@pytest.mark.anyio
async def test_unacked_messages_are_redelivered_after_close(admin: Admin, queue: str) -> None:
    await admin.publish(queue, b"a", b"b", b"c", b"d")
    async with rabbitmq_source(URL, queue) as source:
        a, b, c, d = await take(aiter(source), 4)
        assert not any(message.settlement.redelivered for message in (a, b, c, d))  # type: ignore[attr-defined]
        await a.ack()
        await b.nack(requeue=False)  # dropped (no dead-letter exchange)
        await c.nack(requeue=True)  # back to the queue at once
        # d: never settled
    async with rabbitmq_source(URL, queue) as source:
        again = await take(aiter(source), 2)
        assert sorted(message.value for message in again) == [b"c", b"d"]
        for message in again:
            assert isinstance(message.settlement, RabbitMQSettlement)
            assert message.settlement.redelivered
            await message.ack()
    assert await admin.counts(queue) == (0, 0)


@pytest.mark.anyio
async def test_a_dropped_connection_loses_no_message(admin: Admin, queue: str) -> None:
    sent = [b"%d" % n for n in range(20)]
    await admin.publish(queue, *sent)
    acked: list[bytes] = []
    async with tcp_proxy(5672) as proxy:
        with pytest.raises(ServiceUnavailableError, match="delivered again"):
            async with rabbitmq_source(
                f"amqp://guest:guest@127.0.0.1:{proxy.port}/", queue, prefetch=5
            ) as source:
                with anyio.fail_after(10):
                    async for message in source:
                        if len(acked) == 7:
                            proxy.cut()  # mid-stream, with deliveries unacked
                            continue
                        await message.ack()
                        acked.append(message.value)
    # At least once: an ack still on its way when the link dropped is lost, and that message
    # comes again; but every message comes.
    seen = set(acked)
    async with rabbitmq_source(URL, queue) as source:
        with anyio.fail_after(10):
            async for message in source:
                assert message.value not in seen or message.settlement.redelivered  # type: ignore[attr-defined]
                seen.add(message.value)
                await message.ack()
                if seen == set(sent):
                    break
    assert await admin.counts(queue) == (0, 0)


@pytest.mark.anyio
async def test_a_source_at_its_prefetch_limit_sees_a_dropped_connection(
    admin: Admin, queue: str
) -> None:
    # Every delivery handed out and none settled: the source fetches nothing more, so only
    # its check while it waits for a settlement can see the connection go.
    await admin.publish(queue, *[b"%d" % n for n in range(10)])
    async with tcp_proxy(5672) as proxy:
        with pytest.raises(ServiceUnavailableError, match="delivered again"):
            async with rabbitmq_source(
                f"amqp://guest:guest@127.0.0.1:{proxy.port}/", queue, prefetch=3
            ) as source:
                held = await take(aiter(source), 3)
                assert source.unsettled == 3
                proxy.cut()
                with anyio.fail_after(10):
                    await anext(aiter(source))
    assert len(held) == 3


@pytest.mark.anyio
async def test_the_sink_reports_a_dropped_connection_and_reconnects(
    admin: Admin, queue: str
) -> None:
    await admin.publish(queue)  # declares it
    async with (
        tcp_proxy(5672) as proxy,
        rabbitmq_sink(f"amqp://guest:guest@127.0.0.1:{proxy.port}/", routing_key=queue) as sink,
    ):
        await sink.send(b"before")
        proxy.drop()
        with pytest.raises(ServiceUnavailableError, match="lost while publishing"):
            with anyio.fail_after(10):
                await sink.send(b"lost?")
        await sink.send_batch([b"after", b"after"])  # connects again
    async with rabbitmq_source(URL, queue) as source:
        with anyio.fail_after(10):
            values = []
            async for message in source:
                values.append(message.value)
                await message.ack()
                if values.count(b"after") == 2:
                    break
    assert values[0] == b"before"
    assert set(values) <= {b"before", b"lost?", b"after"}  # "lost?" may have got through


@pytest.mark.anyio
async def test_bad_arguments_say_what_to_pass(admin: Admin, queue: str) -> None:
    with pytest.raises(ValueError, match="prefetch must be an int of 1 or more"):
        async with rabbitmq_source(URL, "q", prefetch=0):
            pass
    with pytest.raises(ValueError, match="there is no queue 'rxflow-test-absent'"):
        async with rabbitmq_source(URL, "rxflow-test-absent", declare=False):
            pass
    await admin.publish(queue)  # declares it durable
    with pytest.raises(ValueError, match="exists with other settings"):
        async with rabbitmq_source(URL, queue, durable=False):
            pass
    with pytest.raises(ValueError, match="pass routing_key"):
        async with rabbitmq_sink(URL):
            pass
    with pytest.raises(ServiceUnavailableError, match=r"cannot connect to 127\.0\.0\.1:1 "):
        async with rabbitmq_source("amqp://guest:guest@127.0.0.1:1/", "q"):
            pass


# -- identity: what names a message across redeliveries ------------------------------------


@pytest.mark.anyio
async def test_identity_is_the_message_id_and_the_same_when_redelivered(
    admin: Admin, queue: str
) -> None:
    await admin.publish(queue)  # declares the queue, so the mandatory publish is routed
    async with rabbitmq_sink(URL, routing_key=queue, encoder="json") as sink:
        await sink.send_batch([{"n": 0}, {"n": 1}])  # message_id: a random UUID each
    async with rabbitmq_sink(
        URL, routing_key=queue, encoder="json", message_id=lambda item: f"order-{item['n']}"
    ) as sink:
        await sink.send({"n": 2})
    await publish_with_no_message_id(queue, b'{"n": 3}')
    await admin.publish(queue, b'{"n": 4}', message_id="from-elsewhere")
    async with rabbitmq_source(URL, queue, codec="json") as source:
        first = await take(aiter(source), 5)  # never settled: all come again
    async with rabbitmq_source(URL, queue, codec="json") as source:
        again = await take(aiter(source), 5)
        await source.ack_many(again)
    identities = [message.identity for message in first]
    assert [message.value["n"] for message in first] == [0, 1, 2, 3, 4]
    assert all(isinstance(uuid.UUID(str(name)), uuid.UUID) for name in identities[:2])
    assert identities[0] != identities[1]
    assert identities[2:] == ["order-2", None, "from-elsewhere"]
    assert all(message.settlement.redelivered for message in again)  # type: ignore[attr-defined]
    assert [message.identity for message in again] == identities
    assert await admin.counts(queue) == (0, 0)


@pytest.mark.anyio
async def test_identity_from_a_function_of_the_message(admin: Admin, queue: str) -> None:
    await admin.publish(queue, b'{"id": "a-1"}', headers={"event-id": "h-1"}, message_id="m-1")
    await admin.publish(queue, b'{"id": "a-2"}', message_id="m-2")
    by_header = lambda message: message.headers.get("event-id")  # noqa: E731
    async with rabbitmq_source(URL, queue, codec="json", identity=by_header) as source:
        headed = await take(aiter(source), 2)  # in place of message_id; None without
    async with rabbitmq_source(
        URL, queue, codec="json", identity=lambda message: ("orders", message.value["id"])
    ) as source:
        fielded = await take(aiter(source), 2)
        await source.ack_many(fielded)
    assert [message.identity for message in headed] == ["h-1", None]
    assert [message.identity for message in fielded] == [("orders", "a-1"), ("orders", "a-2")]


@pytest.mark.anyio
async def test_a_failing_identity_function_stops_at_its_message_and_loses_none(
    admin: Admin, queue: str
) -> None:
    for body in (b'{"id": 1}', b'{"id": 2}', b"{}", b'{"id": 4}'):
        await admin.publish(queue, body)

    def order_id(message: Any) -> Any:
        return message.value["id"]

    got: list[Any] = []
    async with rabbitmq_source(URL, queue, codec="json", identity=order_id) as source:
        with anyio.fail_after(10), pytest.raises(DecodeError) as raised:
            while True:  # the runs that come before the failing message, whole
                got += await source.next_run()
        assert [message.identity for message in got] == [1, 2]
        await source.ack_many(got)
        with pytest.raises(DecodeError):  # still at the head: raised again, not dropped
            await anext(source)
    error = raised.value
    assert "identity=order_id raised KeyError('id') on it" in str(error)
    assert "on_decode_error='skip'" in str(error)
    assert isinstance(error.__cause__, RecordRejected)
    assert isinstance(error.__cause__.__cause__, KeyError)
    # With "skip", the message it fails on is set aside (acked) and the others go on.
    async with rabbitmq_source(
        URL, queue, codec="json", identity=order_id, on_decode_error="skip"
    ) as source:
        (rest,) = await take(aiter(source), 1)
        await rest.ack()
        assert rest.identity == 4
        assert source.decoder.skipped == 1
    assert await admin.counts(queue) == (0, 0)


@pytest.mark.anyio
async def test_an_identity_that_cannot_be_one_is_refused(admin: Admin, queue: str) -> None:
    await admin.publish(queue, b'{"ids": [1, 2]}')
    async with rabbitmq_source(
        URL, queue, codec="json", identity=lambda message: message.value["ids"]
    ) as source:
        with pytest.raises(DecodeError, match=r"returned \[1, 2\], which is not hashable"):
            await anext(source)
    with pytest.raises(TypeError, match="identity must be a function of the message"):
        async with rabbitmq_source(URL, queue, identity="message_id"):  # type: ignore[arg-type]
            pass
    with pytest.raises(TypeError, match="message_id must be a function of the item"):
        async with rabbitmq_sink(URL, routing_key=queue, message_id="id"):  # type: ignore[arg-type]
            pass
    async with rabbitmq_sink(URL, routing_key=queue, message_id=lambda item: 7) as sink:  # type: ignore[arg-type,return-value,unused-ignore]
        with pytest.raises(TypeError, match="an AMQP message_id is a string"):
            await sink.send(b"x")
