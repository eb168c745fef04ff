"""RabbitMQ: a queue as a source with manual acks, an exchange as a sink with publisher confirms.

The client is aio-pika (asyncio only); under trio it runs on an :class:`AsyncioHost`.

Source: the broker pushes deliveries to a consumer, at most ``prefetch`` of them unacked at a
time (``basic.qos``). That window is the backpressure: while the pipeline holds ``prefetch``
unsettled messages the broker sends nothing more, so the local buffer never grows past it.
Each message is acked (``basic.ack``) or rejected (``basic.nack``) through its settlement;
whatever is unsettled when the source closes, or when its connection drops, goes back to the
queue and is delivered again, marked ``redelivered``.

Sink: publishes on a channel in confirm mode, ``mandatory`` so that a message no queue would
take is an error rather than silently dropped; ``send`` and ``send_batch`` return once the
broker confirmed every message.

Example (needs a RabbitMQ server)::

    async with rabbitmq_source(
        "amqp://guest:guest@127.0.0.1:5672/", "orders", codec="json", prefetch=50
    ) as orders:
        async for message in orders:
            print(message.value)
            await message.ack()
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import anyio

from rxflow._checks import check_count
from rxflow.connectors._asyncio_host import AsyncioHost, open_on_host
from rxflow.connectors._extras import requires_extra
from rxflow.connectors._kit import (
    DEFAULT_READ_AHEAD_BYTES,
    AddressedPublisher,
    BrokerSettlement,
    BrokerSink,
    BrokerSource,
    Incoming,
    Verb,
)
from rxflow.connectors._message import InFlightLimit
from rxflow.connectors._redact import redact_logs_of
from rxflow.connectors.codecs import (
    Codec,
    CodecName,
    DecodeFailure,
    DecodePolicy,
    Decoder,
    encode_auto,
)
from rxflow.errors import ServiceUnavailableError

with requires_extra("rabbitmq"):
    import aio_pika
    import aiormq
    from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage
    from yarl import URL

CLOSE_TIMEOUT = 5.0  # seconds a close may take before the connection is abandoned

# aio-pika and aiormq log connections with their URL: the password hidden, the query not.
redact_logs_of("aiormq.connection", "aio_pika.connection", "aio_pika.channel", "aio_pika.queue")


def _where(url: str) -> str:
    """``host:port`` of an AMQP URL, for messages (never the credentials)."""
    parts = urlsplit(url)
    return f"{parts.hostname or 'localhost'}:{parts.port or 5672}"


_CLIENT_DIRS = tuple(os.path.dirname(module.__file__ or "") for module in (aio_pika, aiormq))


def _client_tasks() -> set[asyncio.Task[Any]]:
    """The running tasks that aio-pika or aiormq started (their coroutine is theirs)."""
    return {
        task
        for task in asyncio.all_tasks()
        if getattr(getattr(task.get_coro(), "cr_code", None), "co_filename", "").startswith(
            _CLIENT_DIRS
        )
    }


async def _finish_client_tasks(before: set[asyncio.Task[Any]]) -> None:
    """Wait for the tasks aio-pika started since ``before``, so none outlives the connector.

    A close, or a connect that failed or was cancelled, returns while tasks it spawned
    (writer shutdown, close callbacks) still have a few loop turns to run. Tasks that ran
    before (other connections') are left alone.
    """
    if started := _client_tasks() - before:
        await asyncio.wait(started, timeout=CLOSE_TIMEOUT)


async def _connect(url: str) -> AbstractConnection:
    # What aio_pika.connect() does, keeping hold of the connection: one that failed or was
    # cancelled half-way is closed here, not by a task its __del__ would start later.
    connection = aio_pika.Connection(URL(url))
    try:
        await connection.connect()
    except BaseException as error:
        await _close(connection)
        if isinstance(error, OSError | aiormq.exceptions.AMQPConnectionError):
            raise ServiceUnavailableError(
                f"rabbitmq: cannot connect to {_where(url)} ({error!r}); check that RabbitMQ "
                "is running there and that the URL's user, password and virtual host are right"
            ) from error
        raise
    return connection


async def _close(connection: AbstractConnection) -> None:
    before = _client_tasks()
    await connection.close()
    await _finish_client_tasks(before)


async def _set_up(
    connection: AbstractConnection, steps: Callable[[AbstractConnection], Awaitable[None]]
) -> None:
    """Run a channel's set-up ``steps`` (open, qos, declare, consume); cancelled, close the
    connection under them rather than cancel the RPC in flight.

    aiormq answers a cancelled RPC by closing its channel with a warning in the log. The
    connection is given up anyway, and closing it ends the RPCs quietly; the caller's
    ``close()`` then finishes the job.
    """
    failure: list[BaseException] = []
    finished = anyio.Event()

    async def run() -> None:
        with anyio.CancelScope(shield=True):  # only the connection's close stops it
            try:
                await steps(connection)
            except BaseException as error:  # raised by the caller, as itself
                failure.append(error)
            finally:
                finished.set()

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(run)
        try:
            await finished.wait()
        except anyio.get_cancelled_exc_class():
            with anyio.move_on_after(CLOSE_TIMEOUT, shield=True):
                with contextlib.suppress(Exception):
                    await connection.close()
                await finished.wait()
            raise
    if failure:
        raise failure[0]


def _headers(headers: Mapping[str, Any] | None) -> dict[str, str]:
    """AMQP header values are typed (ints, bytes, tables); a Message carries strings."""
    out = {}
    for name, value in (headers or {}).items():
        if isinstance(value, bytes):
            value = value.decode("utf-8", errors="replace")
        out[name] = value if isinstance(value, str) else str(value)
    return out


def _timestamp(stamp: datetime | float | None) -> float | None:
    if isinstance(stamp, datetime):
        return stamp.timestamp()
    return None if stamp is None else float(stamp)


# -- source --------------------------------------------------------------------------------


CHANNEL_LOST = (
    aiormq.exceptions.ChannelInvalidStateError,  # closed already
    aiormq.exceptions.AMQPChannelError,  # closed by the broker
    aiormq.exceptions.AMQPConnectionError,  # its connection dropped
)


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
        self.connection = await _connect(self.url)
        await _set_up(self.connection, self._consume)

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
                f"rabbitmq: there is no queue {self.queue!r} at {_where(self.url)}; create it, "
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

    async def take(self, count: int, max_bytes: int) -> list[AbstractIncomingMessage]:
        """Deliveries received so far (at least one, at most ``count`` and, past the first,
        ``max_bytes`` of bodies), waiting for one if there is none."""
        while not self.deliveries:
            if self.closed_by is not None:
                raise ServiceUnavailableError(
                    f"rabbitmq: the channel consuming {self.queue!r} at {_where(self.url)} "
                    f"closed ({self.closed_by!r}); unacknowledged messages go back to the "
                    "queue and are delivered again when you reopen the source"
                ) from self.closed_by
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
            await _close(self.connection)


Settle = tuple[AbstractIncomingMessage, Verb]


class _Reader:
    """The kit's view of the consumer (see :class:`~rxflow.connectors._kit.Reader`)."""

    def __init__(self, host: AsyncioHost, consumer: _Consumer, name: str) -> None:
        self._host, self.consumer, self.name = host, consumer, name
        # The broker sends no more than `prefetch` unsettled deliveries (basic.qos).
        self.in_flight_limit: InFlightLimit | None = InFlightLimit(consumer.prefetch, "prefetch")
        # Under trio each call is a hop to the client's thread, and the broker does not
        # answer acks: settlements are queued and written in runs.
        self.queues_settlements = host.hosted

    async def fetch(self, count: int, max_bytes: int) -> list[Incoming[AbstractIncomingMessage]]:
        deliveries = await self._host.call(self.consumer.take, count, max_bytes)
        return [
            Incoming(
                delivery.body,
                delivery,
                key=delivery.routing_key,
                headers=_headers(delivery.headers),
                timestamp=_timestamp(delivery.timestamp),
                size=len(delivery.body),
                redelivered=bool(delivery.redelivered),
            )
            for delivery in deliveries
        ]

    async def settle(self, settlements: Sequence[Settle]) -> None:
        await self._host.call(self.consumer.settle, settlements)

    async def release(self, unhanded: Sequence[AbstractIncomingMessage]) -> int:
        return 0  # closing the connection puts every unsettled delivery back in the queue

    async def held_back(self) -> bool:
        return False  # the broker pushes: an empty fetch never happens


RabbitMQSettlement = BrokerSettlement
"""Settles one delivery (``basic.ack``, ``basic.nack``); ``redelivered`` is the broker's
flag: the message was delivered before and not acked. (The kit's
:class:`~rxflow.connectors._kit.BrokerSettlement`, under the name it had.)"""


class RabbitMQSource(BrokerSource[Any, AbstractIncomingMessage]):
    """The messages of one queue; iterate it (see :func:`rabbitmq_source`).

    Attributes:
        decoder: its :class:`~rxflow.connectors.Decoder`, with the counts ``decoded``,
            ``skipped`` and ``dead_lettered``.

    Example (needs a RabbitMQ server)::

        async with rabbitmq_source(url, "orders", on_decode_error="skip") as orders:
            async for message in orders:
                await message.ack()
            print(orders.decoder.skipped, orders.unacked)
    """

    def __init__(self, reader: _Reader, decoder: Decoder, **bounds: int) -> None:
        super().__init__(reader, decoder, **bounds)
        self._consumer = reader.consumer

    @property
    def unacked(self) -> int:
        """Messages the broker delivered that are not settled yet (at most ``prefetch``).
        Under trio a settlement reaches the client's loop, and this count, a moment after
        ``ack()`` returns."""
        return self._consumer.unacked


@contextlib.asynccontextmanager
async def rabbitmq_source(
    url: str,
    queue: str,
    *,
    codec: Codec | CodecName = "bytes",
    on_decode_error: DecodePolicy = "raise",
    dead_letter: Callable[[DecodeFailure], object] | None = None,
    prefetch: int = 100,
    read_ahead_bytes: int = DEFAULT_READ_AHEAD_BYTES,
    declare: bool = True,
    durable: bool = True,
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

    Each message's ``key`` is its routing key; ``headers`` and ``timestamp`` are the AMQP
    properties; ``message.settlement.redelivered`` is the broker's redelivery flag. Settle
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
    if not isinstance(queue, str) or not queue:
        raise ValueError(f"{where}: queue must be a non-empty string, got {queue!r}")
    check_count(where, "prefetch", prefetch)
    check_count(where, "read_ahead_bytes", read_ahead_bytes)
    decoder = Decoder(
        codec, on_decode_error=on_decode_error, dead_letter=dead_letter, source=f"rabbitmq:{queue}"
    )
    consumer = _Consumer(url, queue, prefetch, declare, durable)
    async with open_on_host(consumer, close_timeout=CLOSE_TIMEOUT) as host:
        reader = _Reader(host, consumer, decoder.source)
        async with RabbitMQSource(
            reader, decoder, read_ahead=prefetch, read_ahead_bytes=read_ahead_bytes
        ) as source:
            yield source


# -- sink ----------------------------------------------------------------------------------


class _Publisher:
    """The publishing channel on the client's loop, in confirm mode. A lost connection fails
    the batch in flight; the next batch connects again."""

    def __init__(self, url: str, exchange: str) -> None:
        self.url, self.exchange_name = url, exchange
        self.connection: AbstractConnection | None = None
        self.exchange: aio_pika.abc.AbstractExchange | None = None

    async def open(self) -> None:
        self.connection = await _connect(self.url)
        await _set_up(self.connection, self._open_channel)

    async def _open_channel(self, connection: AbstractConnection) -> None:
        # on_return_raises: an unroutable mandatory message fails its publish, not just a log.
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        if self.exchange_name:
            self.exchange = await channel.get_exchange(self.exchange_name, ensure=True)
        else:
            self.exchange = channel.default_exchange

    async def publish(self, bodies: Sequence[tuple[bytes, str]]) -> None:
        """Publish all, then wait for every confirm: one round trip per batch, not per message."""
        if self.exchange is None:  # the last connection was lost
            await self.close()
            await self.open()
        assert self.exchange is not None
        exchange = self.exchange
        now = datetime.now(UTC)  # AMQP timestamps are whole seconds
        persistent = aio_pika.DeliveryMode.PERSISTENT
        outcomes = await asyncio.gather(
            *(
                exchange.publish(
                    aio_pika.Message(body, delivery_mode=persistent, timestamp=now),
                    routing_key=key,
                    mandatory=True,
                )
                for body, key in bodies
            ),
            return_exceptions=True,  # every publish finished, whatever the first failure
        )
        errors = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
        if lost := [error for error in errors if isinstance(error, CHANNEL_LOST)]:
            self.exchange = None
            raise ServiceUnavailableError(
                f"rabbitmq: the connection to {_where(self.url)} was lost while publishing "
                f"({lost[0]!r}); part of the batch may have reached the broker, send it again "
                "(the next send connects again)"
            ) from lost[0]
        if errors:
            raise errors[0]

    async def close(self) -> None:
        connection, self.connection, self.exchange = self.connection, None, None
        if connection is not None:
            await _close(connection)


class RabbitMQSink(BrokerSink[Any, None]):
    """Publishes to an exchange and returns once the broker confirmed (see
    :func:`rabbitmq_sink`). ``send_batch`` raises ``aiormq.exceptions.DeliveryError`` if the
    broker rejected a message, or its subclass ``PublishError`` if it returned one (no
    queue bound for its routing key).

    Example (needs a RabbitMQ server)::

        async with rabbitmq_sink(url, "events", routing_key=lambda e: e["kind"]) as events:
            await events.send_batch([{"kind": "click"}, {"kind": "view"}])
    """


@contextlib.asynccontextmanager
async def rabbitmq_sink(
    url: str,
    exchange: str = "",
    routing_key: str | Callable[[Any], str] = "",
    *,
    encode: Callable[[Any], bytes] = encode_auto,
    batch_size: int = 100,
) -> AsyncIterator[RabbitMQSink]:
    """Publish items to a RabbitMQ exchange with publisher confirms.

    Args:
        url: the broker, as ``amqp://user:password@host:port/vhost``.
        exchange: the exchange; ``""`` is the default exchange, which routes to the queue
            named by the routing key. A named exchange must exist.
        routing_key: a string, or a function of the item that returns one.
        encode: item -> bytes; by default bytes as they are, text as UTF-8, else JSON.
        batch_size: how many items a :class:`rxflow.Flow` hands to ``send_batch`` at once.

    Messages are persistent, stamped with the time they were sent, and published
    ``mandatory``: one that no queue takes is an error, not a silent drop. If the connection
    is lost, ``send_batch`` raises :class:`~rxflow.errors.ServiceUnavailableError` (part of
    the batch may have been published: at-least-once) and the next call connects again.

    Example (needs a RabbitMQ server)::

        async with rabbitmq_sink(url, routing_key="orders") as orders:
            await orders.send({"id": 1})
            await orders.send_batch([{"id": 2}, {"id": 3}])
    """
    where = f"rabbitmq_sink({exchange!r})"
    check_count(where, "batch_size", batch_size)
    if not callable(routing_key) and not isinstance(routing_key, str):
        raise TypeError(f"{where}: routing_key must be a string or a function, got {routing_key!r}")
    if not exchange and not routing_key:
        raise ValueError(
            f"{where}: the default exchange routes by queue name; pass routing_key=<queue>"
        )
    publisher = _Publisher(url, exchange)
    async with open_on_host(publisher, close_timeout=CLOSE_TIMEOUT) as host:
        publishing = AddressedPublisher(host, publisher.publish, routing_key)
        yield RabbitMQSink(publishing, encode, batch_size=batch_size, name=where)


__all__ = [
    "RabbitMQSettlement",
    "RabbitMQSink",
    "RabbitMQSource",
    "rabbitmq_sink",
    "rabbitmq_source",
]
