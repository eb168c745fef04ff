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
from rxflow.errors import ServiceUnavailableError
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
        self, queue: str, *bodies: bytes, headers: dict[str, Any] | None = None
    ) -> None:
        async def publish(channel: Any) -> None:
            await channel.declare_queue(queue, durable=True)
            for body in bodies:
                message = aio_pika.Message(body, headers=headers)
                await channel.default_exchange.publish(message, routing_key=queue)

        await self._on_channel(publish)

    async def delete(self, queue: str) -> None:
        await self._on_channel(lambda channel: channel.queue_delete(queue))


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
