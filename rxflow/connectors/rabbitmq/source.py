"""The RabbitMQ source: a queue consumed with manual acks, on the connector kit."""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from rxflow._checks import check_count, check_name
from rxflow.connectors._asyncio_host import AsyncioHost, open_on_host
from rxflow.connectors._extras import requires_extra
from rxflow.connectors._kit import (
    DEFAULT_READ_AHEAD_BYTES,
    BrokerSettlement,
    HostedPushReader,
    IdentityOf,
    Incoming,
    PushedSource,
    Verb,
)
from rxflow.connectors._message import InFlightLimit
from rxflow.connectors.codecs import CodecSpec, DecodeFailure, DecodePolicy, Decoder
from rxflow.connectors.rabbitmq._client import (
    CHANNEL_LOST,
    CLOSE_TIMEOUT,
    address_of,
    close,
    connect,
    headers_of,
    set_up,
    timestamp_of,
)
from rxflow.errors import ServiceUnavailableError

with requires_extra("rabbitmq"):
    import aiormq
    from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage

__all__ = ["RabbitMQSettlement", "RabbitMQSource", "rabbitmq_source"]


class _Consumer:
    """The consumer on the client's loop: deliveries wait in a deque the broker bounds.

    aio-pika's delivery callback appends and wakes ``take``; a closed channel (connection
    lost, queue deleted) wakes it too, and ``take`` raises.
    """

    def __init__(self, url: str, queue: str, prefetch: int, declare: bool, durable: bool):
        self.url, self.queue, self.prefetch = url, queue, prefetch
        self.declare, self.durable = declare, durable
        self.connection: AbstractConnection | None = None
        # Delivered by the broker and not taken yet: at most `prefetch` (basic.qos).
        self.deliveries: collections.deque[AbstractIncomingMessage] = collections.deque()
        self.unacked = 0  # delivered by the broker and not settled yet
        self.closed_by: BaseException | None = None
        self.wake = asyncio.Event()

    async def open(self) -> None:
        self.connection = await connect(self.url)
        await set_up(self.connection, self._consume)

    async def _consume(self, connection: AbstractConnection) -> None:
        channel = await connection.channel()
        channel.close_callbacks.add(self._on_channel_closed)
        await channel.set_qos(prefetch_count=self.prefetch)
        try:
            if self.declare:
                queue = await channel.declare_queue(self.queue, durable=self.durable)
            else:
                queue = await channel.get_queue(self.queue, ensure=True)
        except aiormq.exceptions.ChannelNotFoundEntity as error:
            raise ValueError(
                f"rabbitmq: there is no queue {self.queue!r} at {address_of(self.url)}; create it, "
                "or pass declare=True to declare it"
            ) from error
        except aiormq.exceptions.ChannelPreconditionFailed as error:
            raise ValueError(
                f"rabbitmq: queue {self.queue!r} exists with other settings ({error}); pass "
                "the durable= it was declared with, or declare=False to use it as it is"
            ) from error
        await queue.consume(self._on_delivery)

    async def _on_delivery(self, delivery: AbstractIncomingMessage) -> None:
        self.unacked += 1
        self.deliveries.append(delivery)
        self.wake.set()

    def _on_channel_closed(self, _channel: AbstractChannel | None, error: Any) -> None:
        self.closed_by = error if isinstance(error, BaseException) else ConnectionError(error)
        self.wake.set()

    def check_open(self) -> None:
        """Raise if the channel closed (read from any thread: one attribute)."""
        if self.closed_by is not None:
            raise ServiceUnavailableError(
                f"rabbitmq: the channel consuming {self.queue!r} at {address_of(self.url)} "
                f"closed ({self.closed_by!r}); unacknowledged messages go back to the "
                "queue and are delivered again when you reopen the source"
            ) from self.closed_by

    async def take(self, count: int, max_bytes: int) -> list[AbstractIncomingMessage]:
        """Deliveries received so far (at least one, at most ``count`` and, past the first,
        ``max_bytes`` of bodies), waiting for one if there is none."""
        while not self.deliveries:
            self.check_open()
            self.wake.clear()
            await self.wake.wait()
        deliveries = self.deliveries
        taken = [deliveries.popleft()]
        size = len(taken[0].body)
        while deliveries and len(taken) < count:
            size += len(deliveries[0].body)
            if size > max_bytes:
                break
            taken.append(deliveries.popleft())
        return taken

    async def settle(self, settlements: Sequence[Settle]) -> None:
        # Never cancelled half-way by the kit (its writes are shielded): an ack cut off
        # after its frame went out, then written again, would ack an unknown delivery tag,
        # which closes the channel.
        for delivery, verb in settlements:
            self.unacked -= 1
            # On a lost channel the broker has already put the message back: nothing to do.
            with contextlib.suppress(*CHANNEL_LOST):
                if verb == "ack":
                    await delivery.ack()
                else:
                    await delivery.nack(requeue=verb == "requeue")

    async def close(self) -> None:
        # Closing the connection returns every unacked delivery to the queue.
        if self.connection is not None:
            self.closed_by = self.closed_by or ConnectionError("source closed")
            await close(self.connection)


Settle = tuple[AbstractIncomingMessage, Verb]


class _Reader(HostedPushReader[AbstractIncomingMessage]):
    """The kit's view of the consumer; closing the connection puts every unsettled delivery
    back in the queue."""

    def __init__(self, host: AsyncioHost, consumer: _Consumer, name: str) -> None:
        # The broker sends no more than `prefetch` unsettled deliveries (basic.qos).
        super().__init__(host, name, InFlightLimit(consumer.prefetch, "prefetch"))
        self.consumer = consumer

    async def fetch(self, count: int, max_bytes: int) -> list[Incoming[AbstractIncomingMessage]]:
        deliveries = await self.host.call(self.consumer.take, count, max_bytes)
        return [
            Incoming(
                delivery.body,
                delivery,
                key=delivery.routing_key,
                headers=headers_of(delivery.headers),
                timestamp=timestamp_of(delivery.timestamp),
                # The publisher's id, the same on every redelivery (None if it set none).
                identity=delivery.message_id or None,
                size=len(delivery.body),
                redelivered=bool(delivery.redelivered),
            )
            for delivery in deliveries
        ]

    @property
    def unacked(self) -> int:
        return self.consumer.unacked

    def check_open(self) -> None:
        self.consumer.check_open()

    async def settle(self, settlements: Sequence[Settle]) -> None:
        await self.host.call(self.consumer.settle, settlements)


RabbitMQSettlement = BrokerSettlement
"""Settles one delivery (``basic.ack``, ``basic.nack``); ``redelivered`` is the broker's
flag: the message was delivered before and not acked. (The kit's
:class:`~rxflow.connectors._kit.BrokerSettlement`, under the name it had.)"""


class RabbitMQSource(PushedSource[Any, AbstractIncomingMessage]):
    """The messages of one queue, each ``message.settlement.redelivered`` as the broker
    flagged it; made by :func:`rabbitmq_source`, iterated, or read a delivery batch at a
    time with ``next_run()``. ``unacked`` counts deliveries not settled yet (at most
    ``prefetch``)."""


@contextlib.asynccontextmanager
async def rabbitmq_source(
    url: str,
    queue: str,
    *,
    codec: CodecSpec = "bytes",
    on_decode_error: DecodePolicy = "raise",
    dead_letter: Callable[[DecodeFailure], object] | None = None,
    prefetch: int = 100,
    read_ahead_bytes: int = DEFAULT_READ_AHEAD_BYTES,
    declare: bool = True,
    durable: bool = True,
    identity: IdentityOf | None = None,
) -> AsyncIterator[RabbitMQSource]:
    """Consume a RabbitMQ queue with manual acks; yield its messages as :class:`Message`.

    Args:
        url: the broker, as ``amqp://user:password@host:port/vhost``.
        queue: the queue to consume.
        codec: how message bodies become values: ``"bytes"``, ``"text"``, ``"json"`` or
            a function (:mod:`rxflow.connectors.codecs`).
        on_decode_error: what to do with a body the codec rejects: ``"raise"``,
            ``"skip"`` or ``"dead_letter"``.
        dead_letter: the function given such bodies, with ``"dead_letter"``.
        prefetch: at most this many messages delivered and not yet settled; the broker sends
            more only as they are acked, so it bounds the local buffer too. In a
            :class:`rxflow.Flow`, windows keep their messages unsettled until written: a
            flow whose windows hold ``prefetch`` messages fails with
            :class:`~rxflow.errors.InFlightLimitError`; size it above what they hold.
        read_ahead_bytes: at most this many bytes of bodies taken from the broker and
            not handed out yet, plus one message.
        declare: declare the queue (idempotent) before consuming; with ``False`` it must exist.
        durable: declare it durable (survives a broker restart).
        identity: a function of each decoded message that returns what names it across
            redeliveries (``lambda m: m.value["order_id"]``, ``lambda m:
            m.headers.get("event-id")``), or None for a message without one. By default a
            message's identity is its AMQP ``message_id`` property, if the publisher set it
            (:func:`rabbitmq_sink` does). A checkpointed :class:`rxflow.Flow` needs it to
            recognise a redelivered message it has counted already; it must name one
            message of the queue only. A message the function fails on goes to
            ``on_decode_error``.

    Each message's ``key`` is its routing key; ``headers`` and ``timestamp`` are the AMQP
    properties; ``message.identity`` is its ``message_id`` (or what ``identity`` returns);
    ``message.settlement.redelivered`` is the broker's redelivery flag. Settle
    each with ``await message.ack()`` or ``await message.nack(requeue=...)``; unsettled ones
    return to the queue when the source closes. A lost connection ends the iteration with
    :class:`~rxflow.errors.ServiceUnavailableError`.

    Example (needs a RabbitMQ server)::

        async with rabbitmq_source(url, "orders", codec="json", prefetch=10) as orders:
            async with open_pipe(orders) as messages:
                async for message in messages:
                    handle(message.value)
                    await message.ack()
    """
    where = f"rabbitmq_source({queue!r})"
    check_name(where, "queue", queue)
    check_count(where, "prefetch", prefetch)
    check_count(where, "read_ahead_bytes", read_ahead_bytes)
    if identity is not None and not callable(identity):
        raise TypeError(
            f"{where}: identity must be a function of the message, such as "
            f"lambda m: m.headers['event-id'], got {identity!r}"
        )
    decoder = Decoder(
        codec, on_decode_error=on_decode_error, dead_letter=dead_letter, source=f"rabbitmq:{queue}"
    )
    consumer = _Consumer(url, queue, prefetch, declare, durable)
    async with open_on_host(consumer, close_timeout=CLOSE_TIMEOUT) as host:
        reader = _Reader(host, consumer, decoder.source)
        async with RabbitMQSource(
            reader,
            decoder,
            identity_of=identity,
            read_ahead=prefetch,
            read_ahead_bytes=read_ahead_bytes,
        ) as source:
            yield source
