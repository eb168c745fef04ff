"""PostgreSQL as a sink: batches of rows written to one table, each in one transaction, with
``COPY`` or ``INSERT``; a batch is confirmed when it is committed. With
``exactly_once=True`` the sink writes nothing itself: it keeps a checkpointed flow's rows
until a ``PostgresStore`` on the same database writes them in the transaction of the
checkpoint that covers their inputs (:class:`StagedRows`)."""

from __future__ import annotations

import getpass
import os
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, Literal
from urllib.parse import SplitResult, parse_qs, urlsplit

import anyio

from rxflow._checks import check_count
from rxflow.connectors._asyncio_host import AsyncioHost
from rxflow.connectors._extras import requires_extra
from rxflow.connectors._redact import key_value_pairs
from rxflow.connectors.postgres._connection import (
    CONNECTION_FAILED,
    DEFAULT_APPLICATION_NAME,
    check_identifier,
    close,
    connect,
    describe_server,
    qualified_table,
    quote_ident,
    terminate,
)
from rxflow.errors import FlowStateError, ServiceUnavailableError

with requires_extra("postgres"):
    import asyncpg  # type: ignore[import-untyped,unused-ignore]

__all__ = ["OnConflict", "PostgresSink", "SinkMethod", "StagedRows", "database_of", "postgres_sink"]

SinkMethod = Literal["copy", "insert"]
OnConflict = Literal["error", "ignore"]


class PostgresSink:
    """Writes rows to one table; each batch in one transaction. Made by :func:`postgres_sink`.

    Attributes:
        batch_size: the batch size a :class:`rxflow.Flow` should use for this sink.
        rows_written: rows in the batches committed so far (with ``on_conflict="ignore"``,
            including those the table already had).
        transactional: True for an exactly-once sink (``exactly_once=True``): a flow
            hands it its outputs with :meth:`stage` instead of :meth:`send_batch`, and
            its checkpoints write them (see :func:`postgres_sink`).
        database: ``(host, port, database)`` as the DSN names them (:func:`database_of`).
        server: the server, for messages (``"PostgreSQL at host:port/db"``, no password).

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
        *,
        exactly_once: bool = False,
        database: tuple[str, int, str] = ("", 0, ""),
    ) -> None:
        self.batch_size = batch_size
        self.rows_written = 0
        self.name = f"postgresql:{table}"
        self.transactional = exactly_once
        self.database = database
        self.server = server
        self._host = host
        self._connect = connect
        self._connection: asyncpg.Connection | None = None
        self._table = table
        self._schema = schema
        self._columns = columns
        self._column_types: tuple[Any, ...] = ()  # asyncpg.types.Type: its name and schema
        self._method = method
        self._on_conflict = on_conflict
        self._qualified = self._insert = ""
        self._name_table(schema)
        # Exactly-once: rows staged for the checkpoints, as (epoch, rows) in epoch order.
        # Invariant: epochs strictly increase along the deque (stage appends to the last
        # chunk of its epoch; restage puts back chunks older than any staged since).
        self._staged: deque[tuple[int, list[tuple[Any, ...]]]] = deque()
        # asyncpg allows one operation at a time on a connection; concurrent sends queue here.
        self._lock = anyio.Lock()

    def _name_table(self, schema: str | None) -> None:
        self._schema = schema
        self._qualified = qualified_table(schema, self._table)
        placeholders = ", ".join(f"${n}" for n in range(1, len(self._columns) + 1))
        self._insert = (
            f"INSERT INTO {self._qualified} ({', '.join(map(quote_ident, self._columns))}) "
            f"VALUES ({placeholders})"
            + (" ON CONFLICT DO NOTHING" if self._on_conflict == "ignore" else "")
        )

    async def _open(self) -> asyncpg.Connection:
        """Connect, and check the table and columns (their types serve error messages)."""
        self._connection = connection = await self._connect()
        probe = await self._host.call(
            connection.prepare,
            f"SELECT {', '.join(map(quote_ident, self._columns))} FROM {self._qualified} LIMIT 0",
        )
        self._column_types = tuple(attribute.type for attribute in probe.get_attributes())
        if self.transactional and self._schema is None:
            # A store's connection may log in as another user, whose search_path could find
            # another table of that name: write where this sink's session finds it.
            self._name_table(
                await self._host.call(connection.fetchval, _SCHEMA_OF, self._qualified)
            )
        return connection

    async def _aclose(self) -> None:
        if self._connection is not None:
            await close(self._host, self._connection)

    async def send(self, item: Sequence[Any] | Mapping[str, Any]) -> None:
        """Write one row (a tuple in ``columns`` order, or a dict by column name)."""
        await self.send_batch([item])

    async def send_batch(self, items: Sequence[Sequence[Any] | Mapping[str, Any]]) -> None:
        """Write ``items`` in one transaction; return once it is committed.

        Raises:
            TypeError, ValueError: an item is not a row of ``columns`` (the message names
                the item's index and the column); nothing of the batch is written.
            FlowStateError: the sink is exactly-once: it writes only in a flow's checkpoints.
        """
        if self.transactional:
            raise FlowStateError(
                f"{self.name}: an exactly-once postgres_sink writes only in the checkpoints of "
                "a checkpointed Flow (Flow(...).sink(this sink).checkpoint(PostgresStore(dsn)) "
                "on the same database), never through send_batch(); to write batches "
                "yourself, open it without exactly_once=True"
            )
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
            except CONNECTION_FAILED as error:
                # Right after the server ends a session, asyncpg may report a broken protocol
                # before it sees the socket close: either way this connection is done.
                await terminate(self._host, connection)
                raise ServiceUnavailableError(
                    f"{self.name}: the connection to {self.server} failed while writing a "
                    f"batch of {len(rows)} rows: {error!r}. The batch is not confirmed; if the "
                    "connection dropped during the commit it may be written all the same. The "
                    "next send_batch() connects again"
                ) from error
        self.rows_written += len(rows)

    # -- exactly once: the TransactionalSink a checkpointed flow uses ---------------------

    def stage(self, outputs: Sequence[tuple[int, Sequence[Any] | Mapping[str, Any]]]) -> None:
        """Keep a flow's ``(epoch, item)`` outputs as rows for the checkpoint of their
        epoch (an item that is no row of ``columns`` raises here, failing the flow)."""
        staged, width = self._staged, len(self._columns)
        for index, (epoch, item) in enumerate(outputs):
            if type(item) is not tuple or len(item) != width:
                item = self._as_row(index, item)
            if staged and staged[-1][0] == epoch:
                staged[-1][1].append(item)
            else:
                staged.append((epoch, [item]))

    def take(self, epoch: int) -> StagedRows | None:
        """Remove and return the rows staged for ``epoch`` and earlier (None if none)."""
        staged = self._staged
        chunks = []
        while staged and staged[0][0] <= epoch:
            chunks.append(staged.popleft())
        return StagedRows(self, chunks) if chunks else None

    def restage(self, write: StagedRows | None) -> None:
        """A checkpoint that had taken ``write`` was not stored: keep its rows, in front."""
        if write is not None:
            self._staged.extendleft(reversed(write.chunks))

    @property
    def staged_rows(self) -> int:
        """Rows staged and not taken by a checkpoint yet."""
        return sum(len(rows) for _, rows in self._staged)

    async def _write_staged(self, connection: asyncpg.Connection, rows: list[Any]) -> None:
        """Write ``rows`` with the caller's connection, inside its open transaction."""
        try:
            # In a savepoint (_write's transaction, nested): after a value that does not
            # encode, the caller's transaction can still ask the server which one it was.
            await self._write(connection, rows)
        except (TypeError, ValueError, OverflowError, asyncpg.DataError) as error:
            await self._raise_for_bad_value(connection, rows, error)
            raise

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


class StagedRows:
    """Rows an exactly-once :class:`PostgresSink` staged for one checkpoint: what
    ``PostgresStore.commit`` writes, with its own connection, in the transaction that
    stores the flow's state and the source messages the checkpoint covers. Made by
    :meth:`PostgresSink.take`; true while it holds a row.

    Example:
        ::

            rows = sink.take(epoch)
            if rows:
                async with connection.transaction():
                    ...  # the state and the covered messages
                    await rows.apply(connection)
                rows.committed()
    """

    __slots__ = ("chunks", "sink")

    def __init__(self, sink: PostgresSink, chunks: list[tuple[int, list[tuple[Any, ...]]]]) -> None:
        self.sink = sink
        self.chunks = chunks  # (epoch, rows) as the sink staged them

    def __len__(self) -> int:
        return sum(len(rows) for _, rows in self.chunks)

    async def apply(self, connection: asyncpg.Connection) -> None:
        """Write the rows with ``connection`` (asyncpg's, on its own loop), inside the
        transaction it has open, with the sink's method (``COPY`` or ``INSERT``)."""
        rows = [row for _, chunk in self.chunks for row in chunk]
        await self.sink._write_staged(connection, rows)

    def committed(self) -> None:
        """The transaction that applied the rows was committed: count them as written."""
        self.sink.rows_written += len(self)


def database_of(dsn: str) -> tuple[str, int, str]:
    """``(host, port, database)`` that a DSN (a URL or libpq key/value settings) names, with
    libpq's defaults (``PGHOST``, ``PGPORT``, ``PGDATABASE``; a database named after the
    user): how an exactly-once sink and a ``PostgresStore`` tell that they share a database.

    Example:
        >>> database_of("postgresql://app:secret@DB.local/orders")
        ('db.local', 5432, 'orders')
        >>> database_of("host=db.local port=5433 dbname=orders user=app password=secret")
        ('db.local', 5433, 'orders')
    """
    if "://" in dsn:
        url = urlsplit(dsn)
        query = {key: values[-1] for key, values in parse_qs(url.query).items()}
        settings = {
            "host": url.hostname or query.get("host", ""),
            "port": _port_of(url) or query.get("port", ""),
            "dbname": url.path.lstrip("/") or query.get("dbname", query.get("database", "")),
            "user": url.username or query.get("user", ""),
        }
    else:
        settings = key_value_pairs(dsn)
    host = settings.get("host") or os.environ.get("PGHOST") or "localhost"
    port_text = settings.get("port") or os.environ.get("PGPORT") or "5432"
    port = int(port_text) if port_text.isdigit() else -1  # connecting will say what is wrong
    user = settings.get("user") or os.environ.get("PGUSER") or getpass.getuser()
    database = settings.get("dbname") or os.environ.get("PGDATABASE") or user
    return host.lower(), port, database


def _port_of(url: SplitResult) -> str:
    try:
        return str(url.port or "")
    except ValueError:  # not a number: connecting says so
        return "?"


# The schema where a session finds a table (its search_path), from the table's quoted name.
_SCHEMA_OF = (
    "SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE c.oid = $1::regclass"
)


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
    exactly_once: bool = False,
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

    **Exactly once.** With ``exactly_once=True`` the sink is for a checkpointed
    :class:`rxflow.Flow` whose store is a ``PostgresStore`` on the same database (same
    host, port and database in both DSNs). It writes nothing itself: it keeps the flow's
    rows, and each checkpoint writes those emitted before its barrier in the one
    transaction that stores the flow's state and which source messages it covers; the
    messages are acknowledged after that commit. After a crash, rows are in the table
    exactly when the state that made them is, and the source messages they came from are
    recognised when delivered again and not processed twice: each input's rows are in the
    table once. Rows appear only at checkpoints (``Flow.checkpoint(every=...)`` sets the
    latency). The store's user needs ``INSERT`` on the table; the table is found where this
    sink's session finds it (its schema is fixed when the sink opens). Outside such a flow
    the sink refuses (``send_batch`` raises :class:`~rxflow.errors.FlowStateError`; a flow
    without the right store fails at start with one too).

    Args:
        dsn: ``postgresql://user@host:port/database``.
        table: the table name, taken literally (case matters); ``schema`` to qualify it.
        columns: the columns each item fills, in order.
        method: ``"copy"`` or ``"insert"``.
        on_conflict: ``"error"`` (the batch fails) or, with ``"insert"``, ``"ignore"``.
        batch_size: the batch size a :class:`rxflow.Flow` should use for this sink.
        exactly_once: write only in the transactions of a flow's checkpoints (above).
        application_name: the session's name in ``pg_stat_activity``.
        connect_timeout: seconds to wait for the server at connect time.

    Example:
        ::

            async with postgres_sink(dsn, "readings", ["sensor", "value"]) as readings:
                await readings.send_batch([("a", 1.5), {"sensor": "b", "value": 2.0}])

        Exactly once, a running total per sensor from a Redis stream::

            totals = postgres_sink(dsn, "totals", ["sensor", "n", "total"], exactly_once=True)
            await (
                Flow("totals")
                .source(redis_stream_source(redis_url, "readings", "totals", "worker-1",
                                            codec="json"))
                .pipe(
                    aggregate(lambda m: m.value["sensor"],
                              lambda s, m: (s[0] + 1, s[1] + m.value["value"]),
                              lambda: (0, 0.0)),
                    ops.map(lambda k: (k.key, *k.value)),
                )
                .sink(totals)
                .checkpoint(PostgresStore(dsn), every=1.0)
                .run()
            )
    """
    where = f"postgres_sink({table!r})"
    check_identifier(where, "table", table)
    if schema is not None:
        check_identifier(where, "schema", schema)
    if isinstance(columns, str) or not isinstance(columns, Sequence) or not columns:
        raise TypeError(f"{where}: columns must be a non-empty list of names, got {columns!r}")
    for column in columns:
        check_identifier(where, "column", column)
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
    check_count(where, "batch_size", batch_size)

    async with AsyncioHost() as host:
        sink = PostgresSink(
            host,
            partial(connect, host, dsn, application_name, connect_timeout, where),
            describe_server(dsn),
            table,
            schema,
            tuple(columns),
            method,
            on_conflict,
            batch_size,
            exactly_once=bool(exactly_once),
            database=database_of(dsn),
        )
        try:
            await sink._open()
            if exactly_once:  # its connection served the checks; a store writes its rows
                await sink._aclose()
                sink._connection = None
            yield sink
        finally:
            await sink._aclose()
