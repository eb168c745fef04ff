"""A PostgreSQL table read as a queue (an outbox), on the connector kit: rows in id order,
each deleted when its message is acked; at least once.

The kit's :class:`~rxflow.connectors._kit.BrokerSource` owns the loop (read-ahead by count
and bytes, decoding, runs, settlements, the guard after close); :class:`_TableReader` is
the table's part: the SELECT of the lowest ids not in hand nor set aside, with the DELETE of
the rows acked since the last read in the same hand-over to asyncpg's loop.
"""

from __future__ import annotations

import bisect
import contextlib
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio

from rxflow._checks import check_count, check_seconds
from rxflow.connectors._asyncio_host import AsyncioHost
from rxflow.connectors._extras import requires_extra
from rxflow.connectors._kit import (
    DEFAULT_READ_AHEAD_BYTES,
    NO_HEADERS,
    BrokerSource,
    Decoded,
    Incoming,
    Verb,
)
from rxflow.connectors._message import InFlightLimit
from rxflow.connectors.codecs import Codec, CodecName, DecodeFailure, DecodePolicy, Decoder
from rxflow.connectors.postgres._connection import (
    CONNECTION_FAILED,
    DEFAULT_APPLICATION_NAME,
    check_identifier,
    close,
    connect,
    qualified_table,
    quote_ident,
)

with requires_extra("postgres"):
    import asyncpg  # type: ignore[import-untyped,unused-ignore]

__all__ = ["PostgresTableSource", "postgres_table_source"]

RowId = Any  # the id column's value: an int, a str, a uuid...


def _text_size(row: Any) -> int:
    """The size of a row's text and bytes values (what a whole row's read-ahead counts)."""
    size = 0
    for value in row:
        if type(value) is str or type(value) is bytes:  # exact types: the cheapest test
            size += len(value)
    return size


def _as_bytes(data: str | bytes | None) -> bytes:
    """A value column's content for the codec: text as UTF-8; NULL as no bytes, which the
    codec accepts or rejects by its policy."""
    if isinstance(data, str):
        return data.encode()
    return b"" if data is None else data


class _TableReader:
    """The kit's view of the table (see :class:`~rxflow.connectors._kit.Reader`).

    Invariants: ``in_hand`` holds the ids fetched and not settled (read ahead or out with
    the consumer) and ``set_aside`` those nacked without requeue; every read leaves both
    out. ``to_delete`` holds the ids acked and not deleted yet.
    """

    # Rows in hand are left out of every read, however many: no in-flight limit.
    in_flight_limit: InFlightLimit | None = None
    # A settlement is a mark in memory (the DELETE goes with the next read): no hop to
    # batch, so it is written before ack() returns.
    queues_settlements = False

    def __init__(
        self,
        host: AsyncioHost,
        connection: asyncpg.Connection,
        name: str,
        qualified: str,
        id_column: str,
        value_column: str | None,
        poll_interval: float,
    ) -> None:
        self.name = name
        self.fetched = self.queries = self.deleted = 0  # rows read, reads, rows deleted
        self._host, self._connection = host, connection
        self._id_column, self._value_column = id_column, value_column
        self._poll_interval = poll_interval
        id_ = quote_ident(id_column)
        # Always from the lowest id, leaving out the rows that are out: a row committed late
        # with a lower id than others (ids are taken before commit) is not passed over.
        self._select = f"SELECT * FROM {qualified} WHERE {id_} <> ALL($2) ORDER BY {id_} LIMIT $1"
        self._delete_rows = f"DELETE FROM {qualified} WHERE {id_} = ANY($1)"
        # Both in one statement, one round trip. The SELECT sees the table as it was before
        # the DELETE (one snapshot): the deleted ids are left out of it with the others.
        self._delete_then_select = (
            f"WITH deleted AS ({self._delete_rows.replace('$1', '$3')}) {self._select}"
        )
        self.in_hand: set[RowId] = set()
        self.set_aside: set[RowId] = set()  # not again in this run; left in the table
        self.to_delete: list[RowId] = []
        self._wakeup = anyio.Event()  # a requeue: read again before poll_interval is up
        # asyncpg allows one operation at a time on a connection: reads and flushes queue here.
        self._lock = anyio.Lock()

    async def fetch(self, count: int, max_bytes: int) -> list[Incoming[RowId]]:
        rows = await self.delete_acked(then_read=count)
        self.queries += 1
        if not rows:
            with anyio.move_on_after(self._poll_interval):
                await self._wakeup.wait()
            self._wakeup = anyio.Event()
            return []
        value_column = self._value_column
        if value_column is None:  # the whole row; its size is that of its text and bytes
            payloads: list[Any] = [Decoded(dict(row)) for row in rows]
            sizes = [_text_size(row) for row in rows]
        else:
            payloads = [_as_bytes(row[value_column]) for row in rows]
            sizes = [len(payload) for payload in payloads]
        # The rows within the byte budget (one at least); the others stay in the table for
        # the next read: a read sized by the average size cannot overrun it.
        kept = max(1, bisect.bisect_right(list(itertools.accumulate(sizes)), max_bytes))
        id_column = self._id_column
        ids = [row[id_column] for row in rows[:kept]]
        self.in_hand.update(ids)
        self.fetched += kept
        return [
            Incoming(payload, row_id, str(row_id), NO_HEADERS, None, row_id, size)
            for payload, row_id, size in zip(payloads, ids, sizes, strict=False)
        ]

    async def settle(self, settlements: Sequence[tuple[RowId, Verb]]) -> None:
        for row_id, verb in settlements:
            self.in_hand.discard(row_id)
            if verb == "ack":
                self.to_delete.append(row_id)
            elif verb == "reject":
                self.set_aside.add(row_id)
            else:  # requeue: read again (the kit gives back its read-ahead too)
                self._wakeup.set()

    async def release(self, unhanded: Sequence[RowId]) -> int:
        # They stay in the table: the next read, here or in another source, takes them.
        self.in_hand.difference_update(unhanded)
        return len(unhanded)

    async def held_back(self) -> bool:
        return False  # no in-flight limit

    async def delete_acked(self, *, then_read: int | None = None) -> list[Any]:
        """Delete the rows acked so far and, with ``then_read``, read at most that many next
        rows in the same statement: one round trip (and under trio one hand-over to
        asyncpg's loop) for a whole batch of acks and the next read."""
        async with self._lock:
            deleting, self.to_delete = self.to_delete, []
            # Taken here, on the caller's loop: under trio the read runs in the host's thread.
            out = [*self.in_hand, *self.set_aside, *deleting]
            try:
                rows = await self._host.call(self._delete_and_read, deleting, then_read, out)
            except BaseException:
                self.to_delete[:0] = deleting  # not deleted: try again next time
                raise
        self.deleted += len(deleting)
        return rows

    async def _delete_and_read(
        self, deleting: list[RowId], count: int | None, out: list[RowId]
    ) -> list[Any]:
        """On asyncpg's loop. ``out``: the ids the read leaves out."""
        connection = self._connection
        if count is None:
            if deleting:
                await connection.execute(self._delete_rows, deleting)
            return []
        if deleting:
            rows: list[Any] = await connection.fetch(self._delete_then_select, count, out, deleting)
        else:
            rows = await connection.fetch(self._select, count, out)
        return rows


class PostgresTableSource(BrokerSource[Any, RowId]):
    """The rows of a table in id order, as an async iterable of :class:`Message`; acking a
    message deletes its row (with the next read). Made by :func:`postgres_table_source`.

    Besides the kit's attributes (``name``, ``decoder``, ``buffered``, ``buffered_bytes``,
    ``fetches``, ``released``, :meth:`next_run`, :meth:`ack_many`):

    Attributes:
        fetched: rows read from the table so far (redeliveries included).
        queries: reads of the table so far, including those that found nothing.
        deleted: rows deleted by acks so far.
        decoder: its :class:`~rxflow.connectors.codecs.Decoder` with ``value_column``;
            None when the value is the whole row.

    Example:
        ::

            async with postgres_table_source(dsn, "outbox", id_column="id") as outbox:
                async for message in outbox:
                    await handle(message.value)  # the row, as a dict
                    await message.ack()
    """

    requeue_rereads = True  # a requeued row comes again first, in id order

    def __init__(self, reader: _TableReader, decoder: Decoder | None, **bounds: Any) -> None:
        super().__init__(reader, decoder, **bounds)
        self._table = reader

    @property
    def fetched(self) -> int:
        """Rows read from the table so far (redeliveries included)."""
        return self._table.fetched

    @property
    def queries(self) -> int:
        """Reads of the table so far, including those that found nothing."""
        return self._table.queries

    @property
    def deleted(self) -> int:
        """Rows deleted by acks so far."""
        return self._table.deleted

    async def flush_acks(self) -> None:
        """Delete the rows acked so far now, rather than with the next read of the table."""
        await self._table.delete_acked()


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
    read_ahead_bytes: int = DEFAULT_READ_AHEAD_BYTES,
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
    Settling a message after the source closed raises
    :class:`~rxflow.errors.SettledAfterCloseError` (its row stays, and is read again).

    It is pulled: it reads at most ``batch_size`` rows when the consumer has taken every row
    read so far, and, when there are none, looks again every ``poll_interval`` seconds. Each
    read takes the lowest ids that are not out with the consumer (nor set aside), so a row
    that commits late with a lower id is not passed over. One source per table: two would
    read, and delete, the same rows.

    Each message has ``key`` = the row's id as a string and ``value`` = the row as a dict,
    or, with ``value_column``, that column's value decoded by ``codec`` (text is encoded as
    UTF-8 first); ``on_decode_error`` says what happens to a value the codec rejects (a
    skipped or dead-lettered row is deleted).

    Args:
        dsn: ``postgresql://user@host:port/database``.
        table: the table, taken literally (case matters); ``schema`` to qualify it.
        id_column: the column that orders the rows and names each (its primary key).
        value_column: the column that is the message's value, decoded by ``codec``; without
            both, the value is the whole row as a dict.
        batch_size: at most this many rows read at once and not handed out yet.
        read_ahead_bytes: at most this many bytes (of ``value_column``, or of the row's
            text and bytes columns) read and not handed out yet, plus one row.
        poll_interval: seconds between reads of a table found empty.
        application_name: the session's name in ``pg_stat_activity``.
        connect_timeout: seconds to wait for the server at connect time.

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
    names = {"table": table, "id_column": id_column, "schema": schema, "value_column": value_column}
    for what, name in names.items():
        if name is not None or what in ("table", "id_column"):  # the others are optional
            check_identifier(where, what, name)
    if (codec is None) != (value_column is None):
        raise ValueError(
            f"{where}: codec= decodes value_column=; pass both (the value is that column, "
            "decoded), or neither (the value is the whole row as a dict)"
        )
    for what, count in (("batch_size", batch_size), ("read_ahead_bytes", read_ahead_bytes)):
        check_count(where, what, count)
    check_seconds(where, "poll_interval", poll_interval)
    name = f"postgresql:{table}"
    decoder = None
    if codec is not None:
        decoder = Decoder(
            codec, on_decode_error=on_decode_error, dead_letter=dead_letter, source=name
        )
    qualified = qualified_table(schema, table)
    # The average size of the rows the first read will take (None if there are none yet):
    # it sizes that read, which would otherwise take one row to learn it. Asking for it
    # also reports a missing table or column here, at open.
    measured = quote_ident(value_column) if value_column else "head.*"
    first_rows = f"SELECT * FROM {qualified} ORDER BY {quote_ident(id_column)} LIMIT $1"
    size_query = f"SELECT avg(pg_column_size({measured}))::bigint FROM ({first_rows}) head"

    async with AsyncioHost() as host:
        connection = await connect(host, dsn, application_name, connect_timeout, where)
        reader = _TableReader(
            host, connection, name, qualified, id_column, value_column, poll_interval
        )
        try:
            expected_size = await host.call(connection.fetchval, size_query, batch_size)
            async with PostgresTableSource(
                reader,
                decoder,
                read_ahead=batch_size,
                read_ahead_bytes=read_ahead_bytes,
                expected_size=expected_size,
            ) as source:
                yield source
        finally:
            with anyio.CancelScope(shield=True):
                if not connection.is_closed():
                    with contextlib.suppress(*CONNECTION_FAILED):
                        # If this fails, those rows are read again next time: at-least-once.
                        await reader.delete_acked()
            await close(host, connection)
