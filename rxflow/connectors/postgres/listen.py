"""PostgreSQL LISTEN/NOTIFY as a source: the notifications of one channel, at most once.

NOTIFY is fire-and-forget, which shapes what the source can promise:

* **at-most-once**: PostgreSQL delivers a notification to the sessions listening when it is
  committed and keeps no copy; there is nothing to acknowledge and nothing is redelivered. A
  notification sent while no one listens, or while the listening connection is down, is
  gone. Acking a message from this source does nothing.
* **it pushes**: the server sends notifications as they are committed and cannot be paused,
  so the source holds them in a bounded buffer with an explicit overflow policy
  (:class:`rxflow._overflow.OverflowBuffer`), and counts what it drops.
"""

from __future__ import annotations

import collections
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Final

import anyio

from rxflow._checks import check_count
from rxflow._overflow import OverflowBuffer, OverflowPolicy
from rxflow.connectors._asyncio_host import AsyncioHost
from rxflow.connectors._kit._making import decode_run
from rxflow.connectors._message import Message, NoOpSettlement, make_message
from rxflow.connectors.codecs import SKIPPED, Codec, CodecName, DecodeFailure, DecodePolicy, Decoder
from rxflow.connectors.postgres._connection import (
    DEFAULT_APPLICATION_NAME,
    check_identifier,
    close,
    connect,
    describe_server,
)
from rxflow.errors import ServiceUnavailableError, SourceOverflowError

__all__ = ["PostgresListenSource", "postgres_listen_source"]

Notification = tuple[int, str, float]  # the sender's pid, the payload, when it arrived

RUN_LIMIT: Final = 128
"""The most messages :meth:`PostgresListenSource.next_run` makes at once: a burst of 10,000
buffered notifications becomes messages a run at a time, not all 10,000 at once."""


class PostgresListenSource:
    """The notifications of one channel, as an async iterable of :class:`Message`.

    Made by :func:`postgres_listen_source`. Each message has ``key`` = the channel,
    ``value`` = the decoded payload, ``headers`` = ``{"pid": <the sending backend's pid>}``
    and ``timestamp`` = when the notification reached this process.

    Attributes:
        received: notifications that reached the source, including dropped ones.
        dropped: notifications the overflow policy dropped.
        decoder: its :class:`~rxflow.connectors.codecs.Decoder`, with the counts of skipped
            and dead-lettered payloads.

    Example:
        ::

            async with postgres_listen_source(dsn, "prices", overflow="latest") as prices:
                async for message in prices:
                    show(message.value)
                print(prices.received, prices.dropped)
    """

    def __init__(
        self,
        channel: str,
        decoder: Decoder,
        max_buffer_size: int,
        overflow: OverflowPolicy,
        server: str,
    ) -> None:
        self.channel = channel
        self.decoder = decoder
        self.name = f"postgresql:{channel}"
        self.received = 0
        self._server = server
        # Notifications received and not taken; it ends the stream after what it holds
        # when it overflows under "error", the connection is lost or the source closes.
        self._buffer: OverflowBuffer[Notification] = OverflowBuffer(
            overflow,
            max_buffer_size,
            overflow_message=(
                f"{self.name}: more than max_buffer_size={max_buffer_size} notifications "
                "arrived that the consumer had not taken yet (NOTIFY cannot be paused). "
                "Consume faster, raise max_buffer_size, or choose overflow="
                "'drop_oldest', 'drop_newest' or 'latest' (drops counted in source.dropped)"
            ),
        )

    @property
    def dropped(self) -> int:
        """Notifications the overflow policy dropped."""
        return self._buffer.dropped

    def __aiter__(self) -> PostgresListenSource:
        return self

    async def __anext__(self) -> Message[Any]:
        while True:
            try:
                pid, payload, timestamp = await self._buffer.receive()
            except anyio.EndOfStream:
                raise StopAsyncIteration from None
            value = await self.decoder.decode(payload.encode(), key=self.channel)
            if value is SKIPPED:  # nothing to ack: a notification has no settlement
                continue
            return self._message(value, pid, timestamp)

    async def next_run(self) -> list[Message[Any]]:
        """The messages of the notifications buffered now, at most :data:`RUN_LIMIT` of
        them (waiting for one if none is): one await for a burst, which
        :func:`rxflow.open_pipe` prefers to ``__anext__``. ``StopAsyncIteration`` at the end.

        A run's payloads go to the codec in one call where the codec allows; a payload it
        rejects ends the run before it, and goes through the decode policy at the next call
        (so what came before it is never lost to its error)."""
        items = self._buffer.items
        if not items:
            return [await self.__anext__()]
        notifications = list(itertools.islice(items, RUN_LIMIT))
        decoder = self.decoder
        values = decode_run(decoder, [payload.encode() for _, payload, _ in notifications])
        if not values:  # the first one fails: its policy applies
            return [await self.__anext__()]
        for _ in values:  # taken only now: nothing awaited since they were looked at
            items.popleft()
        decoder.decoded += len(values)
        message = self._message
        return [
            message(value, pid, timestamp)
            for value, (pid, _, timestamp) in zip(values, notifications, strict=False)
        ]

    def _message(self, value: Any, pid: int, timestamp: float) -> Message[Any]:
        # A settlement of its own (the message's settled state), though acking does nothing.
        return make_message(
            value, self.channel, {"pid": str(pid)}, timestamp, self.name, NoOpSettlement()
        )

    # The methods below run on the caller's loop (asyncpg's callbacks hand over to it).

    def _notified(self, notification: Notification) -> None:
        self.received += 1
        try:
            self._buffer.add(notification)
        except SourceOverflowError as overflow:
            self._buffer.fail(overflow)  # after what is buffered

    def _connection_lost(self) -> None:
        self._buffer.fail(
            ServiceUnavailableError(
                f"{self.name}: the listening connection to {self._server} was closed by the "
                "server or the network (a restart, pg_terminate_backend, a timeout). "
                "Notifications sent from then on are lost, because NOTIFY keeps no copy; "
                "open the source again to resume listening"
            )
        )

    def _close(self) -> None:
        self._buffer.close()


class _Handover:
    """Hands notifications from asyncpg's loop to the caller's, a run at a time.

    Under trio, asyncpg runs in the host's thread and each hand-over wakes the trio loop
    from there, which costs more than handling a notification; a burst is handed over as one
    run instead. (Under asyncio it is not needed: asyncpg runs on the caller's loop.)
    """

    def __init__(self, host: AsyncioHost, deliver: Callable[[Notification], None]) -> None:
        self._host = host
        self._deliver = deliver
        self._pending: collections.deque[Notification] = collections.deque()
        self._scheduled = False

    def put(self, notification: Notification) -> None:
        """On asyncpg's loop."""
        self._pending.append(notification)
        if not self._scheduled:
            self._scheduled = True
            self._host.call_soon_here(self._drain)

    def _drain(self) -> None:
        """On the caller's loop. The flag is cleared first, so that whatever is put from
        then on either is taken by this loop or schedules the next drain."""
        self._scheduled = False
        while self._pending:
            self._deliver(self._pending.popleft())


@asynccontextmanager
async def postgres_listen_source(
    dsn: str,
    channel: str,
    *,
    codec: Codec | CodecName = "text",
    on_decode_error: DecodePolicy = "raise",
    dead_letter: Callable[[DecodeFailure], Awaitable[object] | object] | None = None,
    max_buffer_size: int = 10_000,
    overflow: OverflowPolicy = "error",
    application_name: str = DEFAULT_APPLICATION_NAME,
    connect_timeout: float = 10.0,
) -> AsyncIterator[PostgresListenSource]:
    """Listen on a PostgreSQL channel (``LISTEN``); yield its notifications as messages.

    Delivery is **at-most-once**. A notification reaches the sessions that listen when its
    transaction commits; PostgreSQL keeps no copy, so one sent before the source opened, or
    while its connection was down, is lost, and ``message.ack()`` does nothing (there is
    nothing to settle). Use a table (an outbox) when every event must arrive.

    NOTIFY cannot be paused: the server pushes notifications as they are committed. They wait
    for the consumer in a buffer of at most ``max_buffer_size``; when it is full,
    ``overflow`` decides: ``"error"`` (default) delivers what is buffered and then raises
    :class:`~rxflow.errors.SourceOverflowError`; ``"drop_oldest"``, ``"drop_newest"`` and
    ``"latest"`` (keep only the newest) drop notifications, counted in ``source.dropped``.

    PostgreSQL itself folds identical notifications (same channel and payload) sent in one
    transaction into one, and limits a payload to 8000 bytes: send an id and read the rest
    from a table for anything bigger.

    If the server closes the listening connection (a restart, ``pg_terminate_backend``),
    the source delivers what it had buffered and then raises
    :class:`~rxflow.errors.ServiceUnavailableError`. It does not reconnect on its own: the
    notifications of the gap are lost, and a silent reconnect would hide that.

    Args:
        dsn: ``postgresql://user@host:port/database``.
        channel: the channel name (at most 63 bytes, taken literally: case matters).
        codec: applied to the payload's UTF-8 bytes: ``"text"`` (default), ``"json"``,
            ``"bytes"`` or a function ``bytes -> value``.
        on_decode_error: what to do with a payload the codec rejects: ``"raise"``,
            ``"skip"`` or ``"dead_letter"`` (:mod:`rxflow.connectors.codecs`).
        dead_letter: the function given such payloads, with ``"dead_letter"``.
        max_buffer_size: notifications received and not yet taken, at most.
        overflow: ``"error"``, ``"drop_oldest"``, ``"drop_newest"`` or ``"latest"``.
        application_name: the session's name in ``pg_stat_activity``.
        connect_timeout: seconds to wait for the server at connect time.

    Raises:
        ServiceUnavailableError: the server cannot be reached, or dropped the connection.

    Example:
        A channel fed by ``NOTIFY orders, '{"id": 1}'`` or ``pg_notify('orders', ...)``::

            async with postgres_listen_source(dsn, "orders", codec="json") as orders:
                async for message in orders:
                    print(message.value["id"], message.headers["pid"])
    """
    where = f"postgres_listen_source({channel!r})"
    check_identifier(where, "channel", channel)
    check_count(where, "max_buffer_size", max_buffer_size)
    name = f"postgresql:{channel}"
    decoder = Decoder(codec, on_decode_error=on_decode_error, dead_letter=dead_letter, source=name)
    try:
        source = PostgresListenSource(
            channel, decoder, max_buffer_size, overflow, describe_server(dsn)
        )
    except ValueError as refused:  # the overflow policy, checked by the buffer
        raise ValueError(f"{where}: {refused}") from None

    async with AsyncioHost() as host:
        # asyncpg calls these on its own loop; they hand over to the caller's loop.
        handover = _Handover(host, source._notified)
        notified = handover.put if host.hosted else source._notified

        def on_notification(_: object, pid: int, _channel: str, payload: str) -> None:
            notified((pid, payload, time.time()))

        def on_termination(_: object) -> None:
            host.call_soon_here(source._connection_lost)

        # asyncpg's listener sets are read on its loop: change them there.
        async def listen() -> None:
            connection.add_termination_listener(on_termination)
            await connection.add_listener(channel, on_notification)

        async def stop_watching() -> None:  # our own close is not a lost connection
            connection.remove_termination_listener(on_termination)

        connection = await connect(host, dsn, application_name, connect_timeout, where)
        try:
            await host.call(listen)
            yield source
        finally:
            with anyio.CancelScope(shield=True):
                await host.call(stop_watching)
            source._close()
            await close(host, connection)
