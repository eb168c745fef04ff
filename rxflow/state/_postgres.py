"""State in PostgreSQL (:class:`PostgresStore`), through asyncpg (hosted on an asyncio loop
of its own under trio, as the PostgreSQL connectors do).

Three tables, made if missing: ``<prefix>_entries`` (namespace, scope, tbl, key, value,
expires_at; the first four its primary key), ``<prefix>_meta`` (namespace, scope, meta) and
``<prefix>_owners`` (namespace, scope, epoch: each scope's owner epoch, see
:meth:`~rxflow.state.Store.claim`). A commit is one transaction for all its scopes, which
first reads the epochs of its scopes (``FOR SHARE``: a claim waits for the commit to end)
and leaves out the scopes claimed since; then, each table's puts one ``INSERT ... SELECT
FROM unnest(...)`` of arrays (one statement per table, however many keys), and the rows that
exactly-once ``postgres_sink``s on the same database staged for the checkpoint
(:class:`~rxflow.connectors.postgres.sink.StagedRows`).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Final, TypeVar
from urllib.parse import urlsplit

import anyio

from rxflow._checks import check_name
from rxflow.connectors._asyncio_host import AsyncioHost
from rxflow.connectors._extras import requires_extra
from rxflow.connectors.postgres._connection import (
    CONNECTION_FAILED,
    MAX_IDENTIFIER_BYTES,
    check_identifier,
    close,
    connect,
    describe_server,
    quote_ident,
    terminate,
)
from rxflow.connectors.postgres.sink import PostgresSink, StagedRows, database_of
from rxflow.errors import ServiceUnavailableError
from rxflow.state._store import (
    ScopeChanges,
    ScopeSnapshot,
    Store,
    StoredEntry,
    TransactionalSink,
    fenced_error,
)

with requires_extra("postgres", feature="PostgresStore (rxflow.state)"):
    import asyncpg  # type: ignore[import-untyped,unused-ignore]

__all__ = ["PostgresStore"]

T = TypeVar("T")

CONNECT_TIMEOUT_S: Final = 10.0
_LONGEST_SUFFIX: Final = len("_entries_expiry")


class PostgresStore(Store):
    """State kept in PostgreSQL tables, each commit one transaction.

    A flow checkpointed here may write exactly once into tables of the same database:
    ``postgres_sink(..., exactly_once=True)`` with a DSN naming the same host, port and
    database (:func:`~rxflow.connectors.postgres.sink.database_of`). Each checkpoint's commit
    then writes the sink's rows in the transaction that stores the state and the source
    messages covered, after them.

    Args:
        dsn: the server, as asyncpg takes it (``postgresql://user:password@host:port/db``;
            asyncpg 0.32 refuses libpq's ``host=... dbname=...`` form). The password never
            shows in errors nor in :attr:`description`.
        table_prefix: the names of the three tables (``<prefix>_entries``,
            ``<prefix>_meta``, ``<prefix>_owners``), made when the store opens if they are
            missing.

    Example:
        >>> store = PostgresStore("postgresql://app:s3cret@db.local/orders")
        >>> store.description
        'PostgreSQL at db.local:5432/orders, tables rxflow_state_*'
    """

    def __init__(self, dsn: str, *, table_prefix: str = "rxflow_state") -> None:
        check_name("PostgresStore", "dsn", dsn)
        if "://" in dsn:
            try:
                parts = urlsplit(dsn)
                parts.port  # noqa: B018  # raises ValueError for a port that is not a number
            except ValueError:
                raise ValueError(
                    "PostgresStore: dsn is a URL that does not parse; pass "
                    "postgresql://user:password@host:port/database"
                ) from None
            if parts.scheme not in ("postgresql", "postgres"):
                raise ValueError(
                    f"PostgresStore: dsn must start with postgresql://, got {parts.scheme}://"
                )
        check_identifier("PostgresStore", "table_prefix", table_prefix)
        if len(table_prefix.encode()) > MAX_IDENTIFIER_BYTES - _LONGEST_SUFFIX:
            raise ValueError(
                f"PostgresStore: table_prefix {table_prefix!r} is too long: its tables' names "
                f"would pass PostgreSQL's {MAX_IDENTIFIER_BYTES} bytes; use at most "
                f"{MAX_IDENTIFIER_BYTES - _LONGEST_SUFFIX} bytes"
            )
        self._dsn = dsn
        self._database = database_of(dsn)
        self._prefix = table_prefix
        entries, meta = quote_ident(f"{table_prefix}_entries"), quote_ident(f"{table_prefix}_meta")
        self._sql = _Statements(
            entries,
            meta,
            quote_ident(f"{table_prefix}_entries_expiry"),
            quote_ident(f"{table_prefix}_owners"),
        )
        self._host: AsyncioHost | None = None
        # Invariant: used by one call at a time (the one holding _lock); None while closed
        # or after a call was cancelled mid-way (the next call connects again).
        self._connection: asyncpg.Connection | None = None
        self._lock = anyio.Lock()

    @property
    def description(self) -> str:
        return f"{describe_server(self._dsn)}, tables {self._prefix}_*"

    async def open(self) -> None:
        if self._host is not None:
            return
        host = AsyncioHost()
        await host.__aenter__()
        self._host = host
        try:
            await self._call(self._create_tables)
        except BaseException:
            await self.close()
            raise

    async def _create_tables(self, connection: asyncpg.Connection) -> None:
        async with connection.transaction():
            # Two processes creating the tables at once would collide in the catalog.
            await connection.execute(
                "SELECT pg_advisory_xact_lock(hashtext($1))", f"rxflow state {self._prefix}"
            )
            await connection.execute(self._sql.create)

    async def close(self) -> None:
        with anyio.CancelScope(shield=True):
            async with self._lock:
                host, self._host = self._host, None
                connection, self._connection = self._connection, None
                if host is not None:
                    if connection is not None:
                        await close(host, connection)
                    await host.__aexit__(None, None, None)

    async def claim(self, namespace: str, scope: str) -> int:
        async def raise_epoch(connection: asyncpg.Connection) -> int:
            return int(await connection.fetchval(self._sql.claim, namespace, scope))

        return await self._call(raise_epoch)

    async def load(self, namespace: str, scope: str) -> ScopeSnapshot:
        async def read(connection: asyncpg.Connection) -> ScopeSnapshot:
            # One snapshot: the entries and the meta of the same commit.
            async with connection.transaction(isolation="repeatable_read", readonly=True):
                rows = await connection.fetch(self._sql.load, namespace, scope, time.time())
                meta = await connection.fetchval(self._sql.load_meta, namespace, scope)
            tables: dict[str, dict[bytes, StoredEntry]] = {}
            for table, key, value, expires_at in rows:
                entries = tables.get(table)
                if entries is None:
                    entries = tables[table] = {}
                entries[key] = StoredEntry(value, expires_at)
            return ScopeSnapshot(tables, meta)

        return await self._call(read)

    def can_write(self, sink: TransactionalSink) -> bool:
        """True for an exactly-once ``postgres_sink`` whose DSN names this store's host,
        port and database."""
        return (
            isinstance(sink, PostgresSink)
            and sink.transactional
            and sink.database == self._database
        )

    async def commit(
        self, namespace: str, changes: Sequence[ScopeChanges], writes: Sequence[object] = ()
    ) -> None:
        if not changes and not writes:
            return
        rows = [self._writable(write) for write in writes]
        sql = self._sql
        fenced: list[tuple[str, int, int]] = []

        async def write(connection: asyncpg.Connection) -> None:
            fenced.clear()
            async with connection.transaction():
                now = time.time()
                for change in changes:
                    if change.epoch is None:
                        continue
                    stored = await connection.fetchval(sql.epoch, namespace, change.scope)
                    if stored is not None and stored > change.epoch:
                        fenced.append((change.scope, stored, change.epoch))
                if fenced and rows:
                    # The rows are the whole checkpoint's, of every scope: write none (the
                    # error rolls the transaction back).
                    raise fenced_error(self.description, namespace, fenced, [], writes=True)
                refused = {scope for scope, _, _ in fenced}
                for change in changes:
                    scope = change.scope
                    if scope in refused:
                        continue
                    await connection.execute(sql.purge, namespace, scope, now)
                    for table, keys in change.deletes.items():
                        if keys:
                            await connection.execute(
                                sql.delete, namespace, scope, table, list(keys)
                            )
                    for table, entries in change.puts.items():
                        if entries:
                            await _put(connection, sql.put, namespace, scope, table, entries)
                    await connection.execute(sql.put_meta, namespace, scope, change.meta)
                for staged in rows:
                    await staged.apply(connection)

        await self._call(write)
        for staged in rows:
            staged.committed()
        if fenced:
            refused = {scope for scope, _, _ in fenced}
            committed = [change.scope for change in changes if change.scope not in refused]
            raise fenced_error(self.description, namespace, fenced, committed)

    def _writable(self, write: object) -> StagedRows:
        if not isinstance(write, StagedRows):
            raise TypeError(
                f"PostgresStore.commit: writes must be the rows an exactly-once postgres_sink "
                f"staged (StagedRows from its take()), got {type(write).__name__}; nothing of "
                "this commit was written"
            )
        if not self.can_write(write.sink):
            raise TypeError(
                f"PostgresStore.commit: rows staged by {write.sink.name} for "
                f"{write.sink.server} cannot be written in a transaction of {self.description}: "
                "the sink must be exactly-once on the store's database; nothing of this "
                "commit was written"
            )
        return write

    async def _call(self, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """``work(connection)`` on asyncpg's loop, one call at a time. A call cancelled or cut
        off mid-way drops its connection (the server rolls its transaction back), and the
        next call connects again."""
        async with self._lock:
            host = self._host
            if host is None:
                raise RuntimeError(
                    f"{self.description} is not open: use the store as an async context "
                    "manager (async with store: ...) or await store.open() first"
                )
            connection = self._connection
            if connection is None or connection.is_closed():
                connection = await connect(
                    host,
                    self._dsn,
                    "rxflow state",
                    CONNECT_TIMEOUT_S,
                    f"state store {self.description}",
                )
                self._connection = connection
            try:
                return await host.call(work, connection)
            except CONNECTION_FAILED as error:
                self._connection = None
                await terminate(host, connection)
                raise ServiceUnavailableError(
                    f"state store {self.description}: the connection failed ({error!r}); is "
                    "the server running?"
                ) from error
            except anyio.get_cancelled_exc_class():
                # Whether the transaction ended is not known: the server ends it with the
                # connection.
                self._connection = None
                await terminate(host, connection)
                raise


async def _put(
    connection: asyncpg.Connection,
    statement: str,
    namespace: str,
    scope: str,
    table: str,
    entries: Mapping[bytes, StoredEntry],
) -> None:
    keys, values, expiries = [], [], []
    for key, entry in entries.items():
        keys.append(key)
        values.append(entry.value)
        expiries.append(entry.expires_at)
    try:
        await connection.execute(statement, namespace, scope, table, keys, values, expiries)
    except asyncpg.DataError:
        # asyncpg's message quotes the whole array: say what was wrong without it.
        raise TypeError(
            f"PostgresStore.commit: the keys and values of table {table!r} of scope {scope!r} "
            "must be bytes; nothing of this commit was written"
        ) from None


class _Statements:
    """The store's SQL, with its tables' quoted names in place."""

    def __init__(self, entries: str, meta: str, expiry_index: str, owners: str) -> None:
        self.create = f"""
            CREATE TABLE IF NOT EXISTS {entries} (
                namespace text NOT NULL, scope text NOT NULL, tbl text NOT NULL,
                key bytea NOT NULL, value bytea NOT NULL, expires_at double precision,
                PRIMARY KEY (namespace, scope, tbl, key));
            CREATE INDEX IF NOT EXISTS {expiry_index} ON {entries} (namespace, scope, expires_at)
                WHERE expires_at IS NOT NULL;
            CREATE TABLE IF NOT EXISTS {meta} (
                namespace text NOT NULL, scope text NOT NULL, meta bytea NOT NULL,
                PRIMARY KEY (namespace, scope));
            CREATE TABLE IF NOT EXISTS {owners} (
                namespace text NOT NULL, scope text NOT NULL, epoch bigint NOT NULL,
                PRIMARY KEY (namespace, scope))"""
        self.claim = f"""
            INSERT INTO {owners} AS o (namespace, scope, epoch) VALUES ($1, $2, 1)
            ON CONFLICT (namespace, scope) DO UPDATE SET epoch = o.epoch + 1
            RETURNING epoch"""
        # FOR SHARE: a claim of the scope (an update of the row) waits until the commit
        # that read the epoch has ended, so none comes between the check and the changes.
        self.epoch = f"""
            SELECT epoch FROM {owners} WHERE namespace = $1 AND scope = $2 FOR SHARE"""
        self.put = f"""
            INSERT INTO {entries} (namespace, scope, tbl, key, value, expires_at)
            SELECT $1, $2, $3, k, v, e
            FROM unnest($4::bytea[], $5::bytea[], $6::double precision[]) AS u(k, v, e)
            ON CONFLICT (namespace, scope, tbl, key)
            DO UPDATE SET value = EXCLUDED.value, expires_at = EXCLUDED.expires_at"""
        self.delete = f"""
            DELETE FROM {entries}
            WHERE namespace = $1 AND scope = $2 AND tbl = $3 AND key = ANY($4::bytea[])"""
        self.purge = f"""
            DELETE FROM {entries}
            WHERE namespace = $1 AND scope = $2 AND expires_at IS NOT NULL
            AND expires_at <= $3"""
        self.put_meta = f"""
            INSERT INTO {meta} (namespace, scope, meta) VALUES ($1, $2, $3)
            ON CONFLICT (namespace, scope) DO UPDATE SET meta = EXCLUDED.meta"""
        self.load = f"""
            SELECT tbl, key, value, expires_at FROM {entries}
            WHERE namespace = $1 AND scope = $2 AND (expires_at IS NULL OR expires_at > $3)"""
        self.load_meta = f"SELECT meta FROM {meta} WHERE namespace = $1 AND scope = $2"
