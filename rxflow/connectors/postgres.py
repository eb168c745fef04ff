"""PostgreSQL through asyncpg: LISTEN/NOTIFY and outbox tables as sources, a table as a sink.

:func:`postgres_listen_source` yields the notifications sent on a channel. NOTIFY is
fire-and-forget, which shapes what the source can promise:

* **at-most-once**: PostgreSQL delivers a notification to the sessions listening when it is
  committed and keeps no copy; there is nothing to acknowledge and nothing is redelivered. A
  notification sent while no one listens, or while the listening connection is down, is
  gone. Acking a message from this source does nothing.
* **it pushes**: the server sends notifications as they are committed and cannot be paused,
  so the source holds them in a bounded buffer with an explicit overflow policy, and counts
  what it drops.

For at-least-once delivery write the events to a table (an outbox) and read it with
:func:`postgres_table_source`: rows in id order, each deleted when its message is acked.

:func:`postgres_sink` writes batches of rows, each batch in one transaction, with ``COPY`` or
``INSERT``; a batch is confirmed when it is committed.

asyncpg runs only on asyncio; under trio they all run it through
:class:`~rxflow.connectors._asyncio_host.AsyncioHost`.
"""

from __future__ import annotations

import collections
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, Final, Literal
from urllib.parse import urlsplit

import anyio

from rxflow._overflow import OVERFLOW_POLICIES, OverflowPolicy
from rxflow.connectors._asyncio_host import AsyncioHost
from rxflow.connectors._extras import requires_extra
from rxflow.connectors._message import Message, Settlement
from rxflow.connectors._redact import key_value_pairs, mask_urls_in
from rxflow.connectors.codecs import SKIPPED, Codec, CodecName, DecodeFailure, DecodePolicy, Decoder
from rxflow.errors import ServiceUnavailableError, SourceOverflowError

with requires_extra("postgres"):
    import asyncpg  # type: ignore[import-untyped,unused-ignore]

DEFAULT_APPLICATION_NAME: Final = "rxflow"
MAX_IDENTIFIER_BYTES: Final = 63  # PostgreSQL truncates longer names (NAMEDATALEN - 1)

# What asyncpg raises when a connection in use breaks.
_CONNECTION_FAILED = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)
# What asyncpg.connect raises when no server answers, or the server refuses for now.
_UNREACHABLE = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
)


def describe_server(dsn: str) -> str:
    """``"PostgreSQL at host:port/db"`` for error messages, without the password, from a
    URL DSN or a key/value one.

    Example:
        >>> describe_server("postgresql://me:secret@db.local:5433/app")
        'PostgreSQL at db.local:5433/app'
        >>> describe_server("host=db.local dbname=app user=me password=secret")
        'PostgreSQL at db.local:5432/app'
    """
    if "://" not in dsn:
        settings = key_value_pairs(dsn)
        host = settings.get("host", "localhost")
        port: object = settings.get("port", 5432)
        database = settings.get("dbname", "")
    else:
        try:
            url = urlsplit(dsn)
            host, port = url.hostname or "localhost", url.port or 5432
        except ValueError:
            return "PostgreSQL (a DSN that does not parse)"
        database = url.path.lstrip("/")
    return f"PostgreSQL at {host}:{port}" + (f"/{database}" if database else "")


def quote_ident(name: str) -> str:
    """``name`` as a quoted SQL identifier (so any table or column name is taken literally).

    Example:
        >>> print(quote_ident('Orders "2024" EU'))
        "Orders ""2024"" EU"
    """
    return '"' + name.replace('"', '""') + '"'


def _check_identifier(where: str, what: str, name: object) -> str:
    if not isinstance(name, str) or not name:
        raise TypeError(f"{where}: {what} must be a non-empty str, got {name!r}")
    if len(name.encode()) > MAX_IDENTIFIER_BYTES:
        raise ValueError(
            f"{where}: {what} {name!r} is longer than {MAX_IDENTIFIER_BYTES} bytes, and "
            "PostgreSQL would silently truncate it; use a shorter name"
        )
    return name


def _retrieve_lost_tls_probe_errors() -> None:
    """asyncpg (0.30 to 0.32 at least: MagicStack/asyncpg#1211, #1310) probes for TLS
    with a protocol whose future gets an exception when its connection closes. A connect
    cancelled as that connection opens closes it with nobody awaiting the future, and
    asyncio logs "Future exception was never retrieved" (a ConnectionError) once it is
    collected. Marking the exception seen changes nothing else: a connect that awaits the
    future still gets it."""
    probe = getattr(getattr(asyncpg, "connect_utils", None), "TLSUpgradeProto", None)
    connection_lost = getattr(probe, "connection_lost", None)
    if probe is None or connection_lost is None or hasattr(connection_lost, "_rxflow_quiet"):
        return

    def quiet_connection_lost(self: Any, exc: BaseException | None) -> None:
        connection_lost(self, exc)
        future = getattr(self, "on_data", None)
        if future is not None and future.done() and not future.cancelled():
            future.exception()

    quiet_connection_lost._rxflow_quiet = True  # type: ignore[attr-defined]
    probe.connection_lost = quiet_connection_lost


_retrieve_lost_tls_probe_errors()


async def _connect(
    host: AsyncioHost, dsn: str, application_name: str, connect_timeout: float, where: str
) -> asyncpg.Connection:
    server_settings = {"application_name": application_name}
    try:
        connection: asyncpg.Connection = await host.call(
            lambda: asyncpg.connect(dsn, timeout=connect_timeout, server_settings=server_settings),
            close_if_cancelled=_close_on_its_loop,
        )
    except _UNREACHABLE as error:
        raise ServiceUnavailableError(
            f"{where}: cannot connect to {describe_server(dsn)}: "
            f"{mask_urls_in(repr(error))}. Is the server running, and is the DSN right?"
        ) from error
    return connection


async def _close_on_its_loop(connection: asyncpg.Connection) -> None:
    """For a connect whose caller was cancelled as it completed: drop it at once."""
    connection.terminate()


async def _close(host: AsyncioHost, connection: asyncpg.Connection) -> None:
    """Close the connection even if the caller is being cancelled; drop it if closing fails."""
    with anyio.CancelScope(shield=True):
        if connection.is_closed():
            return
        try:
            await host.call(lambda: connection.close(timeout=5.0))
        except Exception:
            await _terminate(host, connection)


async def _terminate(host: AsyncioHost, connection: asyncpg.Connection) -> None:
    """Abort the connection's socket at once (on asyncpg's loop: transports are not
    thread-safe)."""

    async def terminate() -> None:
        connection.terminate()

    with anyio.CancelScope(shield=True):
        await host.call(terminate)


# -- LISTEN/NOTIFY source --------------------------------------------------------------------


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
        self.dropped = 0
        self._server = server
        # "latest" is "drop_oldest" with room for one: the consumer gets the newest payload.
        self._limit = 1 if overflow == "latest" else max_buffer_size
        self._overflow = overflow
        self._buffer: collections.deque[tuple[int, str, float]] = collections.deque()
        self._arrived: anyio.Event | None = None
        self._failure: Exception | None = None  # raised once the buffer is drained
        self._closed = False

    def __aiter__(self) -> PostgresListenSource:
        return self

    async def __anext__(self) -> Message[Any]:
        while True:
            while not self._buffer:
                if self._failure is not None:
                    raise self._failure
                if self._closed:
                    raise StopAsyncIteration
                self._arrived = anyio.Event()
                await self._arrived.wait()
            pid, payload, timestamp = self._buffer.popleft()
            value = await self.decoder.decode(payload.encode(), key=self.channel)
            if value is SKIPPED:  # nothing to ack: a notification has no settlement
                continue
            return Message(value, self.channel, {"pid": str(pid)}, timestamp, self.name)

    # The methods below run on the caller's loop (asyncpg's callbacks hand over to it).

    def _notified(self, notification: tuple[int, str, float]) -> None:
        """One notification: (sender pid, payload, arrival time)."""
        self.received += 1
        if self._failure is not None or self._closed:
            return
        if len(self._buffer) >= self._limit:
            if self._overflow == "error":
                self._fail(
                    SourceOverflowError(
                        f"{self.name}: more than max_buffer_size={self._limit} notifications "
                        "arrived that the consumer had not taken yet (NOTIFY cannot be paused). "
                        "Consume faster, raise max_buffer_size, or choose overflow="
                        "'drop_oldest', 'drop_newest' or 'latest' (drops counted in "
                        "source.dropped)"
                    )
                )
                return
            self.dropped += 1
            if self._overflow == "drop_newest":
                return
            self._buffer.popleft()
        self._buffer.append(notification)
        self._wake()

    def _connection_lost(self) -> None:
        self._fail(
            ServiceUnavailableError(
                f"{self.name}: the listening connection to {self._server} was closed by the "
                "server or the network (a restart, pg_terminate_backend, a timeout). "
                "Notifications sent from then on are lost, because NOTIFY keeps no copy; "
                "open the source again to resume listening"
            )
        )

    def _fail(self, error: Exception) -> None:
        if self._failure is None:
            self._failure = error
        self._wake()

    def _close(self) -> None:
        self._closed = True
        self._wake()

    def _wake(self) -> None:
        if self._arrived is not None:
            self._arrived.set()


class _Handover:
    """Hands notifications from asyncpg's loop to the caller's, a run at a time.

    Under trio, asyncpg runs in the host's thread and each hand-over wakes the trio loop
    from there, which costs more than handling a notification; a burst is handed over as one
    run instead. (Under asyncio it is not needed: asyncpg runs on the caller's loop.)
    """

    def __init__(
        self, host: AsyncioHost, deliver: Callable[[tuple[int, str, float]], None]
    ) -> None:
        self._host = host
        self._deliver = deliver
        self._pending: collections.deque[tuple[int, str, float]] = collections.deque()
        self._scheduled = False

    def put(self, notification: tuple[int, str, float]) -> None:
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
    _check_identifier(where, "channel", channel)
    if isinstance(max_buffer_size, bool) or not isinstance(max_buffer_size, int):
        raise TypeError(f"{where}: max_buffer_size must be an int, got {max_buffer_size!r}")
    if max_buffer_size < 1:
        raise ValueError(f"{where}: max_buffer_size must be 1 or more, got {max_buffer_size}")
    if overflow not in OVERFLOW_POLICIES:
        raise ValueError(
            f"{where}: overflow must be one of {', '.join(map(repr, OVERFLOW_POLICIES))}, "
            f"got {overflow!r}"
        )
    decoder = Decoder(
        codec,
        on_decode_error=on_decode_error,
        dead_letter=dead_letter,
        source=f"postgresql:{channel}",
    )
    source = PostgresListenSource(channel, decoder, max_buffer_size, overflow, describe_server(dsn))

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

        connection = await _connect(host, dsn, application_name, connect_timeout, where)
        try:
            await host.call(listen)
            yield source
        finally:
            with anyio.CancelScope(shield=True):
                await host.call(stop_watching)
            source._close()
            await _close(host, connection)


# -- sink --------------------------------------------------------------------------------------

SinkMethod = Literal["copy", "insert"]
OnConflict = Literal["error", "ignore"]


class PostgresSink:
    """Writes rows to one table; each batch in one transaction. Made by :func:`postgres_sink`.

    Attributes:
        batch_size: the batch size a :class:`rxflow.Flow` should use for this sink.
        rows_written: rows in the batches committed so far (with ``on_conflict="ignore"``,
            including those the table already had).

    Example:
        ::

            async with postgres_sink(dsn, "readings", ["sensor", "value"]) as readings:
                await readings.send(("a", 1.5))
                flow.sink(readings)  # or let a Flow hand it batches of readings.batch_size
    """

    def __init__(
        self,
        host: AsyncioHost,
        connect: Callable[[], Awaitable[asyncpg.Connection]],
        server: str,
        table: str,
        schema: str | None,
        columns: tuple[str, ...],
        method: SinkMethod,
        on_conflict: OnConflict,
        batch_size: int,
    ) -> None:
        self.batch_size = batch_size
        self.rows_written = 0
        self.name = f"postgresql:{table}"
        self._host = host
        self._connect = connect
        self._server = server
        self._connection: asyncpg.Connection | None = None
        self._table = table
        self._schema = schema
        self._columns = columns
        self._column_types: tuple[Any, ...] = ()  # asyncpg.types.Type: its name and schema
        self._method = method
        self._qualified = (quote_ident(schema) + "." if schema else "") + quote_ident(table)
        placeholders = ", ".join(f"${n}" for n in range(1, len(columns) + 1))
        self._insert = (
            f"INSERT INTO {self._qualified} ({', '.join(map(quote_ident, columns))}) "
            f"VALUES ({placeholders})"
            + (" ON CONFLICT DO NOTHING" if on_conflict == "ignore" else "")
        )
        # asyncpg allows one operation at a time on a connection; concurrent sends queue here.
        self._lock = anyio.Lock()

    async def _open(self) -> asyncpg.Connection:
        """Connect, and check the table and columns (their types serve error messages)."""
        self._connection = connection = await self._connect()
        probe = await self._host.call(
            connection.prepare,
            f"SELECT {', '.join(map(quote_ident, self._columns))} FROM {self._qualified} LIMIT 0",
        )
        self._column_types = tuple(attribute.type for attribute in probe.get_attributes())
        return connection

    async def _aclose(self) -> None:
        if self._connection is not None:
            await _close(self._host, self._connection)

    async def send(self, item: Sequence[Any] | Mapping[str, Any]) -> None:
        """Write one row (a tuple in ``columns`` order, or a dict by column name)."""
        await self.send_batch([item])

    async def send_batch(self, items: Sequence[Sequence[Any] | Mapping[str, Any]]) -> None:
        """Write ``items`` in one transaction; return once it is committed.

        Raises:
            TypeError, ValueError: an item is not a row of ``columns`` (the message names
                the item's index and the column); nothing of the batch is written.
        """
        width = len(self._columns)
        rows = [  # a tuple of the right length is already a row: the common case, kept cheap
            item if type(item) is tuple and len(item) == width else self._as_row(index, item)
            for index, item in enumerate(items)
        ]
        if not rows:
            return
        async with self._lock:
            connection = self._connection
            if connection is None or connection.is_closed():
                connection = await self._open()  # the last batch lost the connection
            try:
                await self._host.call(self._write, connection, rows)
            except (TypeError, ValueError, OverflowError, asyncpg.DataError) as error:
                # asyncpg could not encode a value (COPY does not say which): find it.
                await self._host.call(self._raise_for_bad_value, connection, rows, error)
                raise
            except _CONNECTION_FAILED as error:
                # Right after the server ends a session, asyncpg may report a broken protocol
                # before it sees the socket close: either way this connection is done.
                await _terminate(self._host, connection)
                raise ServiceUnavailableError(
                    f"{self.name}: the connection to {self._server} failed while writing a "
                    f"batch of {len(rows)} rows: {error!r}. The batch is not confirmed; if the "
                    "connection dropped during the commit it may be written all the same. The "
                    "next send_batch() connects again"
                ) from error
        self.rows_written += len(rows)

    def _as_row(self, index: int, item: object) -> tuple[Any, ...]:
        columns = self._columns
        if isinstance(item, Mapping):
            missing = [column for column in columns if column not in item]
            unknown = [key for key in item if key not in columns]
            if missing or unknown:
                raise ValueError(
                    f"{self.name}: item {index} is a dict "
                    + (f"without column(s) {missing}" if missing else "")
                    + (" and " if missing and unknown else "")
                    + (f"with key(s) {unknown} that are not columns" if unknown else "")
                    + f"; its keys must be the sink's columns {list(columns)}"
                )
            return tuple(item[column] for column in columns)
        if isinstance(item, Sequence) and not isinstance(item, str | bytes | bytearray):
            if len(item) != len(columns):
                raise ValueError(
                    f"{self.name}: item {index} has {len(item)} value(s) but the sink has "
                    f"{len(columns)} columns {list(columns)}; pass one value per column, in "
                    "that order, or a dict by column name"
                )
            return tuple(item)
        raise TypeError(
            f"{self.name}: item {index} is a {type(item).__name__}; pass a tuple of values in "
            f"column order {list(columns)} or a dict by column name"
        )

    async def _write(self, connection: asyncpg.Connection, rows: list[tuple[Any, ...]]) -> None:
        async with connection.transaction():
            if self._method == "copy":
                await connection.copy_records_to_table(
                    self._table, records=rows, columns=self._columns, schema_name=self._schema
                )
            else:
                await connection.executemany(self._insert, rows)

    async def _raise_for_bad_value(
        self, connection: asyncpg.Connection, rows: list[tuple[Any, ...]], error: Exception
    ) -> None:
        """Raise a TypeError naming the first value its column's type cannot take, if any.

        Runs only after a failed batch: it asks the server to cast each value in turn, which
        encodes it exactly as the write did, and stops at the first failure.
        """
        casts = [
            f"SELECT CAST($1 AS {quote_ident(type_.schema)}.{quote_ident(type_.name)})"
            for type_ in self._column_types
        ]
        for index, row in enumerate(rows):
            for column, type_, cast, value in zip(
                self._columns, self._column_types, casts, row, strict=True
            ):
                try:
                    await connection.fetchval(cast, value)
                except (TypeError, ValueError, OverflowError, asyncpg.DataError) as failure:
                    reason = failure.__cause__ or failure  # asyncpg wraps the encoder's error
                    raise TypeError(
                        f"{self.name}: item {index}, column {column!r}: {value!r} cannot be "
                        f"written to a column of type {type_.name}: {reason}. Nothing of the "
                        "batch was written"
                    ) from error


@asynccontextmanager
async def postgres_sink(
    dsn: str,
    table: str,
    columns: Sequence[str],
    *,
    schema: str | None = None,
    method: SinkMethod = "copy",
    on_conflict: OnConflict = "error",
    batch_size: int = 1000,
    application_name: str = DEFAULT_APPLICATION_NAME,
    connect_timeout: float = 10.0,
) -> AsyncIterator[PostgresSink]:
    """Write rows to a PostgreSQL table; each batch in one transaction.

    ``send_batch(items)`` writes every item of the batch and commits, or writes none of them:
    it returns once the transaction is committed. An item is a tuple of values in
    ``columns`` order or a dict by column name. ``method="copy"`` (default) uses ``COPY``
    (``copy_records_to_table``), the fastest way in; ``"insert"`` uses ``INSERT`` statements
    (``executemany``), which fire ``INSERT`` rules that ``COPY`` does not.

    With ``method="insert", on_conflict="ignore"`` a row that violates a unique constraint
    (one written before) is skipped instead of failing the batch (``ON CONFLICT DO
    NOTHING``): with a key in the rows, a batch delivered again is written once.

    If the connection is lost (a server restart, ``pg_terminate_backend``), ``send_batch``
    raises :class:`~rxflow.errors.ServiceUnavailableError` and the next call connects again,
    so a retrying caller carries on. A batch whose commit was cut off may have been written
    all the same: delivery is at-least-once, and a primary key makes a retry safe to refuse.

    The table and columns are checked when the sink opens: a missing one raises asyncpg's
    ``UndefinedTableError`` or ``UndefinedColumnError`` there, not at the first write.

    Args:
        dsn: ``postgresql://user@host:port/database``.
        table: the table name, taken literally (case matters); ``schema`` to qualify it.
        columns: the columns each item fills, in order.
        method: ``"copy"`` or ``"insert"``.
        on_conflict: ``"error"`` (the batch fails) or, with ``"insert"``, ``"ignore"``.
        batch_size: the batch size a :class:`rxflow.Flow` should use for this sink.
        application_name: the session's name in ``pg_stat_activity``.
        connect_timeout: seconds to wait for the server at connect time.

    Example:
        ::

            async with postgres_sink(dsn, "readings", ["sensor", "value"]) as readings:
                await readings.send_batch([("a", 1.5), {"sensor": "b", "value": 2.0}])
    """
    where = f"postgres_sink({table!r})"
    _check_identifier(where, "table", table)
    if schema is not None:
        _check_identifier(where, "schema", schema)
    if isinstance(columns, str) or not isinstance(columns, Sequence) or not columns:
        raise TypeError(f"{where}: columns must be a non-empty list of names, got {columns!r}")
    for column in columns:
        _check_identifier(where, "column", column)
    if len(set(columns)) != len(columns):
        raise ValueError(f"{where}: columns {list(columns)} name a column twice")
    if method not in ("copy", "insert"):
        raise ValueError(f"{where}: method must be 'copy' or 'insert', got {method!r}")
    if on_conflict not in ("error", "ignore"):
        raise ValueError(f"{where}: on_conflict must be 'error' or 'ignore', got {on_conflict!r}")
    if on_conflict == "ignore" and method == "copy":
        raise ValueError(
            f"{where}: COPY cannot skip conflicting rows; use method='insert' with "
            "on_conflict='ignore'"
        )
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"{where}: batch_size must be an int of 1 or more, got {batch_size!r}")

    async with AsyncioHost() as host:
        sink = PostgresSink(
            host,
            partial(_connect, host, dsn, application_name, connect_timeout, where),
            describe_server(dsn),
            table,
            schema,
            tuple(columns),
            method,
            on_conflict,
            batch_size,
        )
        try:
            await sink._open()
            yield sink
        finally:
            await sink._aclose()


# -- table (outbox) source ------------------------------------------------------------------


class _RowSettlement(Settlement):
    """Acking a row marks it for deletion; nacking puts it back in line (or aside)."""

    __slots__ = ("_id", "_source")

    def __init__(self, source: PostgresTableSource, row_id: Any) -> None:
        super().__init__(identity=row_id)
        self._source = source
        self._id = row_id

    async def _ack(self) -> None:
        self._source._acked(self._id)

    async def _nack(self, requeue: bool) -> None:
        self._source._nacked(self._id, requeue)


class PostgresTableSource:
    """The rows of a table in id order, as an async iterable of :class:`Message`; acking a
    message deletes its row (with the next read). Made by :func:`postgres_table_source`.

    Attributes:
        fetched: rows read from the table so far (redeliveries included).
        queries: reads of the table so far, including those that found nothing.
        deleted: rows deleted by acks so far.
        decoder: its :class:`~rxflow.connectors.codecs.Decoder` (with ``value_column``).

    Example:
        ::

            async with postgres_table_source(dsn, "outbox", id_column="id") as outbox:
                async for message in outbox:
                    await handle(message.value)  # the row, as a dict
                    await message.ack()
    """

    def __init__(
        self,
        host: AsyncioHost,
        connection: asyncpg.Connection,
        table: str,
        schema: str | None,
        id_column: str,
        value_column: str | None,
        decoder: Decoder | None,
        batch_size: int,
        poll_interval: float,
    ) -> None:
        self.name = f"postgresql:{table}"
        self.decoder = decoder
        # Rows in hand are left out of every read, however many: no in-flight limit.
        self.in_flight_limit = None
        self.fetched = 0
        self.queries = 0
        self.deleted = 0
        self._host = host
        self._connection = connection
        self._id_column = id_column
        self._value_column = value_column
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        qualified = (quote_ident(schema) + "." if schema else "") + quote_ident(table)
        id_ = quote_ident(id_column)
        # Always from the lowest id, leaving out the rows that are out: a row committed late
        # with a lower id than others (ids are taken before commit) is not passed over.
        self._select = f"SELECT * FROM {qualified} WHERE {id_} <> ALL($2) ORDER BY {id_} LIMIT $1"
        self._delete_rows = f"DELETE FROM {qualified} WHERE {id_} = ANY($1)"
        named = [id_column] + ([value_column] if value_column else [])
        self._probe = f"SELECT {', '.join(map(quote_ident, named))} FROM {qualified} LIMIT 0"
        self._rows: collections.deque[Any] = collections.deque()  # fetched, not yet yielded
        self._in_flight: set[Any] = set()  # ids yielded and not settled yet
        self._set_aside: set[Any] = set()  # ids nacked without requeue: not again in this run
        self._to_delete: list[Any] = []  # ids acked, deleted with the next read
        self._wakeup = anyio.Event()
        # asyncpg allows one operation at a time on a connection: reads and flushes queue here.
        self._lock = anyio.Lock()

    def __aiter__(self) -> PostgresTableSource:
        return self

    async def __anext__(self) -> Message[Any]:
        while True:
            while not self._rows:
                if not await self._fetch():
                    with anyio.move_on_after(self._poll_interval):
                        await self._wakeup.wait()  # a nack with requeue wakes it early
                    self._wakeup = anyio.Event()
            row = self._rows.popleft()
            row_id = row[self._id_column]
            settlement = _RowSettlement(self, row_id)
            value = await self._decode(row, row_id)
            if value is SKIPPED:
                await settlement.ack()  # set aside by the decode policy: done with
                continue
            self._in_flight.add(row_id)
            return Message(value, str(row_id), source=self.name, settlement=settlement)

    async def _decode(self, row: Any, row_id: Any) -> Any:
        if self.decoder is None:
            return dict(row)
        data = row[self._value_column]
        if isinstance(data, str):
            data = data.encode()
        elif data is None:
            data = b""  # let the codec reject it (or accept it), by its policy
        return await self.decoder.decode(data, key=str(row_id))

    async def _fetch(self) -> bool:
        """Read the next batch into ``_rows``; whether there was any."""
        out = [*self._in_flight, *self._set_aside]
        rows = await self._delete_acked_then(
            self._connection.fetch, self._select, self._batch_size, out
        )
        self.queries += 1
        if rows:
            self._rows.extend(rows)
            self.fetched += len(rows)
        return bool(rows)

    async def flush_acks(self) -> None:
        """Delete the rows acked so far now, rather than with the next read of the table."""
        await self._delete_acked_then(None)

    def _acked(self, row_id: Any) -> None:
        self._in_flight.discard(row_id)
        self._to_delete.append(row_id)

    async def _delete_acked_then(
        self, read: Callable[..., Awaitable[Any]] | None, *args: Any
    ) -> Any:
        """Delete the rows acked so far, then ``read(*args)``: one hand-over to asyncpg's
        loop (a costly one under trio) for a whole batch of acks and the next read."""
        async with self._lock:
            deleting, self._to_delete = self._to_delete, []
            try:
                result = await self._host.call(self._delete_and_read, deleting, read, *args)
            except BaseException:
                self._to_delete[:0] = deleting  # not deleted: try again next time
                raise
        self.deleted += len(deleting)
        return result

    async def _delete_and_read(
        self, deleting: list[Any], read: Callable[..., Awaitable[Any]] | None, *args: Any
    ) -> Any:
        if deleting:
            await self._connection.execute(self._delete_rows, deleting)
        return None if read is None else await read(*args)

    def _nacked(self, row_id: Any, requeue: bool) -> None:
        self._in_flight.discard(row_id)
        if not requeue:
            self._set_aside.add(row_id)
            return
        self._rows.clear()  # read again from the table: the nacked row first, in id order
        self._wakeup.set()


@asynccontextmanager
async def postgres_table_source(
    dsn: str,
    table: str,
    *,
    id_column: str,
    schema: str | None = None,
    value_column: str | None = None,
    codec: Codec | CodecName | None = None,
    on_decode_error: DecodePolicy = "raise",
    dead_letter: Callable[[DecodeFailure], Awaitable[object] | object] | None = None,
    batch_size: int = 100,
    poll_interval: float = 1.0,
    application_name: str = DEFAULT_APPLICATION_NAME,
    connect_timeout: float = 10.0,
) -> AsyncIterator[PostgresTableSource]:
    """Read a table as a queue (an outbox): rows in ``id_column`` order; acked rows are deleted.

    Delivery is **at-least-once**: a row stays in the table until its message is acked, so
    a row that was not acked, because the process stopped or the message was nacked, is
    read again by the next source that opens (``message.nack()`` redelivers it in the same
    run; ``nack(requeue=False)`` leaves it in the table without redelivering it in this
    run). Write the events in the same transaction as the change they describe, and none is
    lost: that is the outbox pattern, and what ``NOTIFY`` alone cannot give.

    An ack marks the row; the rows acked since the last read are deleted (in one statement)
    with the next read of the table, by :meth:`~PostgresTableSource.flush_acks`, or when the
    source closes. A process that stops in between reads them again: at-least-once still.

    It is pulled: it reads ``batch_size`` rows when the consumer has taken every row read so
    far, and, when there are none, looks again every ``poll_interval`` seconds. Each read
    takes the lowest ids that are not out with the consumer (nor set aside), so a row that
    commits late with a lower id is not passed over. One source per table: two would read,
    and delete, the same rows.

    Each message has ``key`` = the row's id as a string and ``value`` = the row as a dict,
    or, with ``value_column``, that column's value decoded by ``codec`` (text is encoded as
    UTF-8 first); ``on_decode_error`` says what happens to a value the codec rejects (a
    skipped or dead-lettered row is deleted).

    Example:
        An ``outbox (id bigserial PRIMARY KEY, payload jsonb)`` table::

            async with postgres_table_source(
                dsn, "outbox", id_column="id", value_column="payload", codec="json"
            ) as outbox:
                async for message in outbox:
                    await publish(message.value)
                    await message.ack()  # the row is deleted with the next read
    """
    where = f"postgres_table_source({table!r})"
    for what, name in (("table", table), ("id_column", id_column)):
        _check_identifier(where, what, name)
    if schema is not None:
        _check_identifier(where, "schema", schema)
    if value_column is not None:
        _check_identifier(where, "value_column", value_column)
    if (codec is None) != (value_column is None):
        raise ValueError(
            f"{where}: codec= decodes value_column=; pass both (the value is that column, "
            "decoded), or neither (the value is the whole row as a dict)"
        )
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"{where}: batch_size must be an int of 1 or more, got {batch_size!r}")
    if not poll_interval > 0:
        raise ValueError(f"{where}: poll_interval must be more than 0 seconds")
    decoder = None
    if codec is not None:
        decoder = Decoder(
            codec,
            on_decode_error=on_decode_error,
            dead_letter=dead_letter,
            source=f"postgresql:{table}",
        )

    async with AsyncioHost() as host:
        connection = await _connect(host, dsn, application_name, connect_timeout, where)
        try:
            source = PostgresTableSource(
                host,
                connection,
                table,
                schema,
                id_column,
                value_column,
                decoder,
                batch_size,
                poll_interval,
            )
            # A missing table or column is reported here, at open.
            await host.call(connection.prepare, source._probe)
            yield source
        finally:
            with anyio.CancelScope(shield=True):
                if not connection.is_closed():
                    with contextlib.suppress(*_CONNECTION_FAILED):
                        # If this fails, those rows are read again next time: at-least-once.
                        await source.flush_acks()
            await _close(host, connection)
