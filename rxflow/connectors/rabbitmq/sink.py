"""The RabbitMQ sink: an exchange published to in confirm mode, on the connector kit."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from rxflow._checks import check_count
from rxflow.connectors._asyncio_host import AsyncioHost, open_on_host
from rxflow.connectors._extras import requires_extra
from rxflow.connectors._kit import Address, BrokerSink
from rxflow.connectors.codecs import EncoderSpec, sink_encoder
from rxflow.connectors.rabbitmq._client import (
    CHANNEL_LOST,
    CLOSE_TIMEOUT,
    address_of,
    close,
    connect,
    set_up,
)
from rxflow.errors import ServiceUnavailableError

with requires_extra("rabbitmq"):
    import aio_pika
    from aio_pika.abc import AbstractConnection

__all__ = ["RabbitMQSink", "rabbitmq_sink"]

Outgoing = tuple[bytes, str, str | None]  # body, routing key, message_id (None: a random one)


class _Publisher:
    """The publishing channel on the client's loop, in confirm mode. A lost connection fails
    the batch in flight; the next batch connects again."""

    def __init__(self, url: str, exchange: str) -> None:
        self.url, self.exchange_name = url, exchange
        self.connection: AbstractConnection | None = None
        self.exchange: aio_pika.abc.AbstractExchange | None = None

    async def open(self) -> None:
        self.connection = await connect(self.url)
        await set_up(self.connection, self._open_channel)

    async def _open_channel(self, connection: AbstractConnection) -> None:
        # on_return_raises: an unroutable mandatory message fails its publish, not just a log.
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        if self.exchange_name:
            self.exchange = await channel.get_exchange(self.exchange_name, ensure=True)
        else:
            self.exchange = channel.default_exchange

    async def publish(self, bodies: Sequence[Outgoing]) -> None:
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
                    aio_pika.Message(
                        body, delivery_mode=persistent, timestamp=now, message_id=message_id
                    ),
                    routing_key=key,
                    mandatory=True,
                )
                for body, key, message_id in bodies
            ),
            return_exceptions=True,  # every publish finished, whatever the first failure
        )
        errors = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
        if lost := [error for error in errors if isinstance(error, CHANNEL_LOST)]:
            self.exchange = None
            raise ServiceUnavailableError(
                f"rabbitmq: the connection to {address_of(self.url)} was lost while publishing "
                f"({lost[0]!r}); part of the batch may have reached the broker, send it again "
                "(the next send connects again)"
            ) from lost[0]
        if errors:
            raise errors[0]

    async def close(self) -> None:
        connection, self.connection, self.exchange = self.connection, None, None
        if connection is not None:
            await close(connection)


class _Addressing:
    """The sink's publisher: each item's routing key and ``message_id``, then the whole batch
    in one call on the client's loop."""

    def __init__(
        self,
        host: AsyncioHost,
        publisher: _Publisher,
        routing_key: Address,
        message_id: Callable[[Any], str] | None,
    ) -> None:
        self._host, self._publisher = host, publisher
        self._key, self._id = routing_key, message_id

    async def publish(self, records: Sequence[tuple[bytes, Any]]) -> None:
        key, name = self._key, self._id
        outgoing: list[Outgoing] = []
        for body, item in records:
            message_id = None if name is None else name(item)
            if message_id is not None and not isinstance(message_id, str):
                raise TypeError(
                    f"rabbitmq_sink: message_id= returned {message_id!r} for an item; an AMQP "
                    "message_id is a string: return str(...) of it"
                )
            outgoing.append((body, key(item) if callable(key) else key, message_id))
        if outgoing:
            await self._host.call(self._publisher.publish, outgoing)


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
    encoder: EncoderSpec | None = None,
    batch_size: int = 100,
    encode: EncoderSpec | None = None,
    message_id: Callable[[Any], str] | None = None,
) -> AsyncIterator[RabbitMQSink]:
    """Publish items to a RabbitMQ exchange with publisher confirms.

    Args:
        url: the broker, as ``amqp://user:password@host:port/vhost``.
        exchange: the exchange; ``""`` is the default exchange, which routes to the queue
            named by the routing key. A named exchange must exist.
        routing_key: a string, or a function of the item that returns one.
        encoder: how items become message bodies (:mod:`rxflow.connectors.codecs`): the
            default ``"auto"`` sends bytes as they are, text as UTF-8 and anything else as
            JSON; or ``"bytes"``, ``"text"``, ``"json"``, a record class, a function.
        batch_size: how many items a :class:`rxflow.Flow` hands to ``send_batch`` at once.
        encode: the old name of ``encoder`` (deprecated, works for one more release).
        message_id: a function of the item that returns its AMQP ``message_id``, its own
            id (``lambda order: str(order["id"])``: the same if the item is sent again);
            unique among the messages of one batch. By default each message gets a random
            UUID (the AMQP client, aio-pika, sets one to match returned messages).
            :func:`rabbitmq_source` gives a message's ``message_id`` as its ``identity``,
            by which a checkpointed :class:`rxflow.Flow` recognises a redelivery of a
            message it has counted already.

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
    encode_item = sink_encoder(where, encoder, encode=encode)
    if not callable(routing_key) and not isinstance(routing_key, str):
        raise TypeError(f"{where}: routing_key must be a string or a function, got {routing_key!r}")
    if message_id is not None and not callable(message_id):
        raise TypeError(
            f"{where}: message_id must be a function of the item that returns a string, "
            f"such as lambda order: str(order['id']), got {message_id!r}"
        )
    if not exchange and not routing_key:
        raise ValueError(
            f"{where}: the default exchange routes by queue name; pass routing_key=<queue>"
        )
    publisher = _Publisher(url, exchange)
    async with open_on_host(publisher, close_timeout=CLOSE_TIMEOUT) as host:
        publishing = _Addressing(host, publisher, routing_key, message_id)
        yield RabbitMQSink(publishing, encode_item, batch_size=batch_size, name=where)
