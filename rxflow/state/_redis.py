"""State in Redis (:class:`RedisStore`), through redis-py's asyncio client (hosted on an
asyncio loop of its own under trio, as the Redis connectors do).

Layout, per scope (``{...}`` is a hash tag: a scope's keys share one cluster slot, so that
one transaction can write them all)::

    <prefix>:{<namespace>:<scope>}:t:<table>   hash: key -> expiry header + value
    <prefix>:{<namespace>:<scope>}:tables      set: the scope's table names
    <prefix>:{<namespace>:<scope>}:meta        string: the meta of the last commit
    <prefix>:{<namespace>:<scope>}:owner       integer: the owner epoch (INCR by a claim)

A commit of a scope with an epoch WATCHes the owner key, reads it, and runs its MULTI/EXEC
only if no newer owner claimed the scope; a claim in between fails the EXEC, and the check
is made again (then it refuses).

Namespaces and scopes are percent-encoded (``%3A`` for ``:``), so that no two (namespace,
scope) pairs share a key. Redis 7.0 has no expiry per hash field: each value starts with a
header that holds its expiry time, and :meth:`RedisStore.load` leaves expired entries out.
While a flow runs, its tables delete what expires (its checkpoints delete the keys); what
expired while no flow ran is found by the next load, which removes it from the hash (a
script that removes a field only if it still holds the expired value, so that a commit
that wrote the key again in between keeps its value).
"""

from __future__ import annotations

import contextlib
import struct
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Final, TypeVar
from urllib.parse import quote

from rxflow._checks import check_name
from rxflow.connectors._asyncio_host import AsyncioHost
from rxflow.connectors._extras import requires_extra
from rxflow.connectors._redact import mask_url, mask_urls_in
from rxflow.connectors.redis._client import CONNECTION_ERRORS, connected
from rxflow.errors import ServiceUnavailableError
from rxflow.state._store import ScopeChanges, ScopeSnapshot, Store, StoredEntry, fenced_error

with requires_extra("redis", feature="RedisStore (rxflow.state)"):
    from redis.connection import parse_url
    from redis.exceptions import DataError, WatchError

__all__ = ["RedisStore"]

T = TypeVar("T")

# A value's header: b"\0" (never expires) or b"\1" and the expiry as a big-endian double.
_NEVER: Final = b"\x00"
_EXPIRES: Final = b"\x01"
_TIME: Final = struct.Struct(">d")
_LOAD_ATTEMPTS: Final = 10  # a load retried while commits keep adding tables to its scope
_PURGE_BATCH: Final = 1_000  # expired fields removed per script call
# Remove each field (ARGV[i]) that still holds the expired value the load read (ARGV[i+1]).
_PURGE_SCRIPT: Final = """
local removed = 0
for i = 1, #ARGV, 2 do
    if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then
        removed = removed + redis.call('HDEL', KEYS[1], ARGV[i])
    end
end
return removed
"""


class RedisStore(Store):
    """State kept in Redis: a hash per table and scope, each commit of a scope one
    ``MULTI``/``EXEC`` transaction.

    Args:
        url: the server, as redis-py takes it (``redis://[[user]:password@]host:port/db``,
            ``rediss://`` for TLS, ``unix://``). The password never shows in errors nor in
            :attr:`description`.
        prefix: the first part of every key this store writes.

    Example:
        >>> store = RedisStore("redis://:s3cret@cache.local:6379/2")
        >>> store.description
        'redis://:***@cache.local:6379/2'
    """

    def __init__(self, url: str = "redis://127.0.0.1:6379/0", *, prefix: str = "rxflow") -> None:
        check_name("RedisStore", "url", url)
        try:
            parse_url(url)  # type: ignore[no-untyped-call]
        except ValueError as error:
            raise ValueError(
                f"RedisStore: url {mask_url(url)!r} is not a Redis URL "
                f"({mask_urls_in(str(error))}); pass "
                "redis://host:port/db, rediss://... or unix:///path/to/socket"
            ) from None
        self._url = url
        self._prefix = check_name("RedisStore", "prefix", prefix)
        self._stack: contextlib.AsyncExitStack | None = None
        self._host: AsyncioHost | None = None
        self._client: Any = None  # redis.asyncio.Redis, on the host's loop

    @property
    def description(self) -> str:
        return mask_url(self._url)

    async def open(self) -> None:
        if self._stack is not None:
            return
        stack = contextlib.AsyncExitStack()
        try:
            host = await stack.enter_async_context(AsyncioHost())
            self._client = await stack.enter_async_context(connected(host, self._url, retry=True))
        except ServiceUnavailableError as error:
            await stack.aclose()
            raise ServiceUnavailableError(f"state store {self.description}: {error}") from error
        except BaseException:
            await stack.aclose()
            raise
        self._stack, self._host = stack, host

    async def close(self) -> None:
        stack, self._stack, self._host, self._client = self._stack, None, None, None
        if stack is not None:
            await stack.aclose()

    def _keys(self, namespace: str, scope: str) -> str:
        """The start of every key of the scope: ``<prefix>:{<namespace>:<scope>}``."""
        return f"{self._prefix}:{{{quote(namespace, safe='')}:{quote(scope, safe='')}}}"

    async def claim(self, namespace: str, scope: str) -> int:
        host, client = self._connected()
        return int(await self._run(host, client.incr, f"{self._keys(namespace, scope)}:owner"))

    async def load(self, namespace: str, scope: str) -> ScopeSnapshot:
        host, client = self._connected()
        base = self._keys(namespace, scope)

        async def read() -> tuple[list[Any], list[Any]]:
            for _ in range(_LOAD_ATTEMPTS):
                names = sorted(await client.smembers(f"{base}:tables"))
                async with client.pipeline(transaction=True) as pipe:
                    pipe.smembers(f"{base}:tables").get(f"{base}:meta")
                    for name in names:
                        pipe.hgetall(f"{base}:t:".encode() + name)
                    replies: list[Any] = await pipe.execute()
                # The same tables inside the transaction as before it: the replies are one
                # commit's state. Otherwise a commit added a table in between: read again.
                if sorted(replies[0]) == names:
                    return names, replies
            raise ServiceUnavailableError(
                f"{self.description}: scope {scope!r} of {namespace!r} kept changing while "
                f"it was loaded ({_LOAD_ATTEMPTS} tries); is another process committing it?"
            )

        names, replies = await self._run(host, read)
        now = time.time()
        tables: dict[str, dict[bytes, StoredEntry]] = {}
        expired: dict[bytes, list[bytes]] = {}  # table key -> field, value, field, value...
        for name, fields in zip(names, replies[2:], strict=True):
            entries = {}
            for key, stored in fields.items():
                if stored[:1] == _EXPIRES:
                    (expires_at,) = _TIME.unpack_from(stored, 1)
                    if expires_at > now:
                        entries[key] = StoredEntry(stored[9:], expires_at)
                    else:
                        expired.setdefault(f"{base}:t:".encode() + name, []).extend((key, stored))
                else:
                    entries[key] = StoredEntry(stored[1:])
            if entries:
                tables[name.decode()] = entries
        if expired:
            await self._run(host, _purge, client, expired)
        return ScopeSnapshot(tables, replies[1])

    async def commit(
        self, namespace: str, changes: Sequence[ScopeChanges], writes: Sequence[object] = ()
    ) -> None:
        host, client = self._connected()
        fenced: list[tuple[str, int, int]] = []
        committed: list[str] = []
        for change in changes:
            puts = {table: _encoded(entries) for table, entries in change.puts.items() if entries}
            base = self._keys(namespace, change.scope)
            stored = await self._run(host, _write_scope, client, base, change, puts)
            if stored is None:
                committed.append(change.scope)
            else:
                assert change.epoch is not None  # only a commit with an epoch is refused
                fenced.append((change.scope, stored, change.epoch))
        if fenced:
            raise fenced_error(self.description, namespace, fenced, committed)

    def _connected(self) -> tuple[AsyncioHost, Any]:
        if self._host is None:
            raise RuntimeError(
                f"{self.description} is not open: use the store as an async context manager "
                "(async with store: ...) or await store.open() first"
            )
        return self._host, self._client

    async def _run(self, host: AsyncioHost, work: Callable[..., Awaitable[T]], *args: Any) -> T:
        try:
            return await host.call(work, *args)
        except CONNECTION_ERRORS as error:
            raise ServiceUnavailableError(
                f"state store {self.description}: the connection failed ({error}); is Redis "
                "running?"
            ) from error


async def _write_scope(
    client: Any, base: str, change: ScopeChanges, puts: Mapping[str, Mapping[bytes, bytes]]
) -> int | None:
    """One scope's changes in one MULTI/EXEC (on the client's loop), unless the scope was
    claimed since ``change.epoch``: then the stored epoch, and nothing written."""
    while True:
        try:
            return await _write_scope_once(client, base, change, puts)
        except WatchError:
            continue  # a claim came in between: look at the epoch again


async def _write_scope_once(
    client: Any, base: str, change: ScopeChanges, puts: Mapping[str, Mapping[bytes, bytes]]
) -> int | None:
    async with client.pipeline(transaction=True) as pipe:
        if change.epoch is not None:
            await pipe.watch(f"{base}:owner")  # the EXEC fails if a claim comes meanwhile
            stored = await pipe.get(f"{base}:owner")
            if stored is not None and int(stored) > change.epoch:
                return int(stored)
            pipe.multi()
        for table, keys in change.deletes.items():
            if keys:
                pipe.hdel(f"{base}:t:{table}", *keys)
        for table, fields in puts.items():
            pipe.hset(f"{base}:t:{table}", mapping=fields)
        if puts:
            pipe.sadd(f"{base}:tables", *puts)
        pipe.set(f"{base}:meta", change.meta)
        try:
            await pipe.execute()
        except DataError as error:  # raised as the commands were packed: nothing was sent
            raise TypeError(
                f"RedisStore.commit: the keys and values of scope {change.scope!r} must be "
                f"bytes ({error}); nothing of the scope's changes was written"
            ) from None
    return None


async def _purge(client: Any, expired: Mapping[bytes, Sequence[bytes]]) -> None:
    """Remove the expired fields a load found (on the client's loop)."""
    for table_key, pairs in expired.items():
        for start in range(0, len(pairs), 2 * _PURGE_BATCH):
            await client.eval(_PURGE_SCRIPT, 1, table_key, *pairs[start : start + 2 * _PURGE_BATCH])


def _encoded(entries: Mapping[bytes, StoredEntry]) -> dict[bytes, bytes]:
    """Each entry's value behind its expiry header."""
    encoded = {}
    for key, entry in entries.items():
        value = entry.value
        if not isinstance(value, bytes):  # would be concatenated wrongly, or not at all
            raise TypeError(
                f"RedisStore.commit: the value of key {key!r} must be bytes, got "
                f"{type(value).__name__}; nothing of the scope's changes was written"
            )
        expires_at = entry.expires_at
        encoded[key] = (
            _NEVER + value if expires_at is None else _EXPIRES + _TIME.pack(expires_at) + value
        )
    return encoded
