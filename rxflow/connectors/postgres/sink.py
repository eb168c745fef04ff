"""PostgreSQL as a sink: batches of rows written to one table, each in one transaction, with
``COPY`` or ``INSERT``; a batch is confirmed when it is committed."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, Literal

import anyio

from rxflow._checks import check_count
from rxflow.connectors._asyncio_host import AsyncioHost
from rxflow.connectors._extras import requires_extra
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
from rxflow.errors import ServiceUnavailableError

with requires_extra("postgres"):
    import asyncpg  # type: ignore[import-untyped,unused-ignore]

__all__ = ["OnConflict", "PostgresSink", "SinkMethod", "postgres_sink"]

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
        self._qualified = qualified_table(schema, table)
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
            await close(self._host, self._connection)

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
            except CONNECTION_FAILED as error:
                # Right after the server ends a session, asyncpg may report a broken protocol
                # before it sees the socket close: either way this connection is done.
                await terminate(self._host, connection)
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
        )
        try:
            await sink._open()
            yield sink
        finally:
            await sink._aclose()
