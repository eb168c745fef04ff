"""The contract every durable store keeps (rxflow.state.Store), checked on each store against
its real engine: SQLite on a temporary file, the local Redis and PostgreSQL; both backends.

Each test writes in namespaces of its own (and, on the servers, under a key or table prefix
of its own that is removed afterwards), so runs never see each other's data.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import anyio.lowlevel
import attrs
import pytest

from rxflow.errors import ServiceUnavailableError
from rxflow.state._postgres import PostgresStore
from rxflow.state._redis import RedisStore
from rxflow.state._sqlite import SQLiteStore
from rxflow.state._store import ScopeChanges, ScopeSnapshot, Store, StoredEntry
from tests.connectors.conftest import require_service
from tests.connectors.support import (
    PASSWORD,
    after,
    leftover_threads,
    nothing_printed,
    random_delays,
    refused_port,
    tcp_proxy,
    texts_of,
)

pytestmark = pytest.mark.anyio

REDIS_URL = "redis://127.0.0.1:6379/0"
POSTGRES_DSN = "postgresql://postgres@127.0.0.1:5432/test"
KINDS = ("sqlite", "redis", "postgres")


@attrs.frozen
class StoreSpec:
    """How to make a store of one kind over one test's data; calling it makes a new store
    object (as another process would)."""

    kind: str
    where: str  # the file, URL or DSN
    prefix: str  # the key or table prefix (servers)

    def __call__(self) -> Store:
        if self.kind == "sqlite":
            return SQLiteStore(self.where)
        if self.kind == "redis":
            return RedisStore(self.where, prefix=self.prefix)
        return PostgresStore(self.where, table_prefix=self.prefix)


MakeStore = Callable[[], Store]


@pytest.fixture(params=KINDS)
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreSpec]:
    """Makes store objects over the same data (each one as another process would)."""
    kind = request.param
    prefix = f"rxflow_test_{uuid.uuid4().hex[:10]}"
    if kind == "sqlite":
        yield StoreSpec(kind, str(tmp_path / "state.db"), prefix)
    elif kind == "redis":
        require_service("redis")
        yield StoreSpec(kind, REDIS_URL, prefix)
        asyncio.run(_drop_redis_keys(prefix))
    else:
        require_service("postgresql")
        yield StoreSpec(kind, POSTGRES_DSN, prefix)
        asyncio.run(_drop_postgres_tables(prefix))


@pytest.fixture
def server_prefix() -> Iterator[str]:
    """A key and table prefix of the test's own, removed afterwards from both servers."""
    prefix = f"rxflow_test_{uuid.uuid4().hex[:10]}"
    yield prefix
    with contextlib.suppress(OSError):
        asyncio.run(_drop_redis_keys(prefix))
    with contextlib.suppress(OSError):
        asyncio.run(_drop_postgres_tables(prefix))


async def _drop_redis_keys(prefix: str) -> None:
    import redis.asyncio

    client = redis.asyncio.from_url(REDIS_URL)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


async def _drop_postgres_tables(prefix: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(POSTGRES_DSN)
    try:
        await connection.execute(
            f'DROP TABLE IF EXISTS "{prefix}_entries", "{prefix}_meta", "{prefix}_owners"'
        )
    finally:
        await connection.close()


@pytest.fixture
def namespace() -> str:
    return f"flow-{uuid.uuid4().hex}"


def entries(count: int, tag: bytes, *, size: int = 100) -> dict[bytes, StoredEntry]:
    """``count`` entries, keys ``k0``..., values of ``size`` bytes that start with ``tag``."""
    return {b"k%d" % n: StoredEntry((tag + b":%d:" % n).ljust(size, b".")) for n in range(count)}


def values_of(snapshot: ScopeSnapshot) -> dict[str, dict[bytes, bytes]]:
    return {
        table: {key: entry.value for key, entry in content.items()}
        for table, content in snapshot.tables.items()
    }


def plain(table: dict[bytes, StoredEntry]) -> dict[bytes, bytes]:
    return {key: entry.value for key, entry in table.items()}


# -- what a commit leaves ---------------------------------------------------------------


async def test_puts_deletes_and_meta_round_trip(make_store: MakeStore, namespace: str) -> None:
    expires = time.time() + 3600
    async with make_store() as store:
        assert await store.load(namespace, "") == ScopeSnapshot({}, None)
        first = {
            "totals": {b"ann": StoredEntry(b"3"), b"bob": StoredEntry(b"4", expires)},
            "seen": {b"\x00\xff": StoredEntry(b"")},
        }
        await store.commit(namespace, [ScopeChanges("", first, {}, b"offsets 1")])
        assert await store.load(namespace, "") == ScopeSnapshot(first, b"offsets 1")

        puts = {"totals": {b"ann": StoredEntry(b"5"), b"cid": StoredEntry(b"1")}}
        deletes = {"totals": [b"bob", b"never-there"], "seen": [b"\x00\xff"]}
        await store.commit(namespace, [ScopeChanges("", puts, deletes, b"offsets 2")])
        snapshot = await store.load(namespace, "")
    assert values_of(snapshot) == {"totals": {b"ann": b"5", b"cid": b"1"}}
    assert snapshot.meta == b"offsets 2"


async def test_scopes_and_namespaces_are_independent(make_store: MakeStore, namespace: str) -> None:
    other = namespace + ":other"
    async with make_store() as store:
        await store.commit(
            namespace,
            [
                ScopeChanges("", {"t": entries(3, b"root")}, {}, b"m-root"),
                ScopeChanges("orders/0", {"t": entries(2, b"p0")}, {}, b"m-p0"),
                ScopeChanges("orders/1", {"u": entries(1, b"p1")}, {}, b"m-p1"),
            ],
        )
        await store.commit(other, [ScopeChanges("orders/0", {"t": entries(5, b"x")}, {}, b"m-x")])
        # Deleting every key of one scope touches no other.
        await store.commit(
            namespace, [ScopeChanges("orders/1", {}, {"u": [b"k0"], "t": [b"k0"]}, b"m-p1b")]
        )
        loaded = {
            (ns, scope): await store.load(ns, scope)
            for ns, scope in [
                (namespace, ""),
                (namespace, "orders/0"),
                (namespace, "orders/1"),
                (other, "orders/0"),
                (other, ""),
            ]
        }
    assert loaded == {
        (namespace, ""): ScopeSnapshot({"t": entries(3, b"root")}, b"m-root"),
        (namespace, "orders/0"): ScopeSnapshot({"t": entries(2, b"p0")}, b"m-p0"),
        (namespace, "orders/1"): ScopeSnapshot({}, b"m-p1b"),
        (other, "orders/0"): ScopeSnapshot({"t": entries(5, b"x")}, b"m-x"),
        (other, ""): ScopeSnapshot({}, None),
    }


async def test_names_with_separators_do_not_collide(make_store: MakeStore, namespace: str) -> None:
    async with make_store() as store:
        await store.commit(f"{namespace}:a", [ScopeChanges("b", {"t": entries(1, b"1")}, {}, b"1")])
        await store.commit(namespace, [ScopeChanges("a:b", {"t": entries(1, b"2")}, {}, b"2")])
        assert (await store.load(f"{namespace}:a", "b")).meta == b"1"
        assert (await store.load(namespace, "a:b")).meta == b"2"


async def test_expired_entries_are_not_loaded(make_store: MakeStore, namespace: str) -> None:
    now = time.time()
    live = {b"live": StoredEntry(b"1", now + 3600), b"forever": StoredEntry(b"2")}
    gone = {b"gone": StoredEntry(b"3", now - 1.0)}
    async with make_store() as store:
        await store.commit(namespace, [ScopeChanges("", {"t": live | gone}, {}, b"m")])
        snapshot = await store.load(namespace, "")
        # A later commit of the scope (which may purge what expired) changes nothing more.
        await store.commit(namespace, [ScopeChanges("", {}, {}, b"m2")])
        again = await store.load(namespace, "")
    assert snapshot.tables == {"t": live}
    assert again == ScopeSnapshot({"t": live}, b"m2")


async def test_a_new_store_object_sees_what_was_committed(
    make_store: MakeStore, namespace: str
) -> None:
    async with make_store() as writer:
        await writer.commit(namespace, [ScopeChanges("p/3", {"t": entries(50, b"w")}, {}, b"m")])
        async with make_store() as reader:  # while the writer is still open
            assert await reader.load(namespace, "p/3") == ScopeSnapshot(
                {"t": entries(50, b"w")}, b"m"
            )
    async with make_store() as reader:  # after it closed
        assert (await reader.load(namespace, "p/3")).meta == b"m"


# A process that commits, says so, and waits to be killed.
COMMIT_THEN_WAIT = """
import sys, anyio
from rxflow.state._store import ScopeChanges, StoredEntry
from tests.state.test_stores import StoreSpec

async def main():
    async with StoreSpec(*sys.argv[1:4])() as store:
        puts = {"t": {b"k%d" % n: StoredEntry(b"v%d" % n) for n in range(1000)}}
        await store.commit(sys.argv[4], [ScopeChanges("", puts, {}, b"killed")])
        print("committed", flush=True)
        await anyio.sleep(60)

anyio.run(main)
"""


async def test_a_commit_survives_its_process_being_killed(
    make_store: StoreSpec, namespace: str
) -> None:
    spec = make_store
    argv = [sys.executable, "-c", COMMIT_THEN_WAIT, spec.kind, spec.where, spec.prefix, namespace]
    with anyio.fail_after(60):
        async with await anyio.open_process(argv, cwd=Path(__file__).parents[2]) as process:
            assert process.stdout is not None
            said = b""
            async for chunk in process.stdout:
                said += chunk
                if b"committed" in said:
                    break
            process.kill()  # SIGKILL: no close, no clean-up
            await process.wait()
        assert b"committed" in said
        async with spec() as store:
            snapshot = await store.load(namespace, "")
    assert snapshot.meta == b"killed"
    assert len(snapshot.tables["t"]) == 1000


async def test_a_large_commit_round_trips(make_store: MakeStore, namespace: str) -> None:
    big = entries(10_000, b"big")
    async with make_store() as store:
        await store.commit(namespace, [ScopeChanges("", {"t": big}, {}, b"m")])
        deletes = {"t": [b"k%d" % n for n in range(0, 10_000, 2)]}
        await store.commit(namespace, [ScopeChanges("", {}, deletes, b"m2")])
        snapshot = await store.load(namespace, "")
    assert plain(snapshot.tables["t"]) == {
        key: entry.value for n, (key, entry) in enumerate(big.items()) if n % 2
    }


async def test_an_empty_commit_changes_nothing(make_store: MakeStore, namespace: str) -> None:
    async with make_store() as store:
        await store.commit(namespace, [ScopeChanges("", {"t": entries(2, b"e")}, {}, b"m")])
        await store.commit(namespace, [])
        assert await store.load(namespace, "") == ScopeSnapshot({"t": entries(2, b"e")}, b"m")
        # A scope's commit with no entry changed still replaces its meta.
        await store.commit(namespace, [ScopeChanges("", {"t": {}}, {"t": []}, b"m2")])
        assert await store.load(namespace, "") == ScopeSnapshot({"t": entries(2, b"e")}, b"m2")


# -- atomicity -----------------------------------------------------------------------------


async def test_a_commit_that_fails_midway_leaves_the_scope_as_it_was(
    make_store: MakeStore, namespace: str
) -> None:
    before = ScopeSnapshot({"a": entries(100, b"old"), "b": entries(10, b"old")}, b"m-old")
    async with make_store() as store:
        await store.commit(namespace, [ScopeChanges("s", before.tables, {}, b"m-old")])
        # The engine refuses the last value, after it took the deletes and the first table.
        bad = entries(10, b"new") | {b"z": StoredEntry({"not": "bytes"})}  # type: ignore[arg-type]
        new = {key: entry for key, entry in entries(1000, b"new").items() if key != b"k1"}
        failing = ScopeChanges("s", {"a": new, "b": bad}, {"a": [b"k1"]}, b"m-new")
        with pytest.raises(TypeError, match="must be bytes"):
            await store.commit(namespace, [failing])
        assert await store.load(namespace, "s") == before
        # The store is still usable.
        await store.commit(namespace, [ScopeChanges("s", {}, {"b": [b"k0"]}, b"m-3")])
        assert (await store.load(namespace, "s")).meta == b"m-3"


async def test_a_cancelled_commit_is_all_or_nothing_and_leaves_nothing_running(
    make_store: MakeStore,
    namespace: str,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    old, new = entries(10_000, b"old"), entries(10_000, b"new")
    with nothing_printed(capfd, caplog) as noise:
        await cancel_commits_and_loads(make_store, namespace, old, new)
    assert noise == [], "cancelling printed or reported:\n" + "\n".join(noise)


async def cancel_commits_and_loads(
    make_store: MakeStore,
    namespace: str,
    old: dict[bytes, StoredEntry],
    new: dict[bytes, StoredEntry],
) -> None:
    async with make_store() as store:
        started = time.perf_counter()
        await store.commit(namespace, [ScopeChanges("", {"t": old}, {}, b"old")])
        took = time.perf_counter() - started  # the cancels land all over a commit's time
        await store.load(namespace, "")
        threads = set(threading.enumerate())
        tasks = len(anyio.get_running_tasks())
        delays = [*random_delays(12, longest=took * 1.5, seed=5), took * 0.3, took * 0.8]
        for n, delay in enumerate(delays):
            tag = b"old" if n % 2 else b"new"  # each commit changes every value
            changes = [ScopeChanges("", {"t": old if n % 2 else new}, {}, tag)]
            with anyio.CancelScope() as scope:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(store.commit, namespace, changes)
                    await after(delay)
                    scope.cancel()
            snapshot = await store.load(namespace, "")
            assert snapshot.meta in (b"old", b"new")
            expected = old if snapshot.meta == b"old" else new
            assert snapshot.tables == {"t": expected}, f"cancelled after {delay}: a mixed scope"
        # Loads, cancelled anywhere, change nothing and leave nothing either.
        for delay in random_delays(6, longest=took, seed=6):
            with anyio.CancelScope() as scope:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(store.load, namespace, "")
                    await after(delay)
                    scope.cancel()
        await anyio.wait_all_tasks_blocked()
        assert len(anyio.get_running_tasks()) == tasks
        assert leftover_threads(threads) == []
        await store.commit(namespace, [ScopeChanges("", {}, {}, b"after")])
        assert (await store.load(namespace, "")).meta == b"after"


# -- errors --------------------------------------------------------------------------------


def unreachable(kind: str, tmp_path: Path) -> Store:
    """A store of ``kind`` whose engine cannot be reached, with a password where one fits."""
    if kind == "sqlite":
        (tmp_path / "a-file").write_text("not a directory")
        return SQLiteStore(tmp_path / "a-file" / "state.db")
    if kind == "redis":
        return RedisStore(f"redis://:{PASSWORD}@127.0.0.1:{refused_port()}/0")
    return PostgresStore(f"postgresql://app:{PASSWORD}@127.0.0.1:{refused_port()}/test")


@pytest.mark.parametrize("kind", KINDS)
async def test_an_unreachable_engine_is_service_unavailable_without_the_password(
    kind: str, tmp_path: Path
) -> None:
    store = unreachable(kind, tmp_path)
    assert PASSWORD not in store.description
    with anyio.fail_after(20), pytest.raises(ServiceUnavailableError) as raised:
        async with store:
            pass
    assert store.description in str(raised.value)
    for text in texts_of(raised.value):
        assert PASSWORD not in text
    await store.close()  # again: nothing to do


async def test_redis_removes_what_expired_while_no_flow_ran(
    namespace: str, server_prefix: str
) -> None:
    require_service("redis")
    import redis

    now = time.time()
    puts = {b"gone": StoredEntry(b"1", now - 1.0), b"live": StoredEntry(b"2", now + 3600)}
    async with RedisStore(REDIS_URL, prefix=server_prefix) as store:
        await store.commit(namespace, [ScopeChanges("", {"t": puts}, {}, b"m")])
        assert (await store.load(namespace, "")).tables == {"t": {b"live": puts[b"live"]}}
    with redis.Redis.from_url(REDIS_URL) as client:  # what is left in Redis itself
        keys = list(client.scan_iter(match=f"{server_prefix}:*:t:t"))
        assert len(keys) == 1
        assert client.hkeys(keys[0]) == [b"live"]


async def test_sqlite_waits_for_another_writer_then_says_the_file_is_locked(
    tmp_path: Path, namespace: str
) -> None:
    path = tmp_path / "state.db"
    async with SQLiteStore(path, lock_timeout=0.2) as store:
        await store.commit(namespace, [ScopeChanges("", {"t": entries(3, b"a")}, {}, b"a")])
        other = sqlite3.connect(path, isolation_level=None)  # another process's writer
        other.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(ServiceUnavailableError, match="database is locked") as raised:
                await store.commit(namespace, [ScopeChanges("", {}, {"t": [b"k0"]}, b"b")])
            assert store.description in str(raised.value)
        finally:
            other.rollback()
            other.close()
        assert await store.load(namespace, "") == ScopeSnapshot({"t": entries(3, b"a")}, b"a")


@pytest.mark.parametrize("kind", ["redis", "postgres"])
async def test_a_lost_server_is_unavailable_and_one_that_returns_is_used_again(
    kind: str, namespace: str, server_prefix: str
) -> None:
    _, port = require_service("redis" if kind == "redis" else "postgresql")
    async with tcp_proxy(port) as proxy:
        store: Store = (
            RedisStore(f"redis://127.0.0.1:{proxy.port}/0", prefix=server_prefix)
            if kind == "redis"
            else PostgresStore(
                f"postgresql://postgres@127.0.0.1:{proxy.port}/test", table_prefix=server_prefix
            )
        )
        async with store:
            await store.commit(namespace, [ScopeChanges("", {"t": entries(5, b"1")}, {}, b"1")])
            proxy.drop()  # connections dropped, the server back at once
            second = [ScopeChanges("", {"t": entries(5, b"2")}, {}, b"2")]
            with anyio.fail_after(20):
                try:
                    await store.commit(namespace, second)
                except ServiceUnavailableError:  # the call that found the connection lost
                    await store.commit(namespace, second)  # connects again
                assert await store.load(namespace, "") == ScopeSnapshot(
                    {"t": entries(5, b"2")}, b"2"
                )
            proxy.cut()  # and now gone
            with anyio.fail_after(20), pytest.raises(ServiceUnavailableError) as raised:
                await store.commit(namespace, [ScopeChanges("", {}, {}, b"3")])
            assert store.description in str(raised.value)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: SQLiteStore(":memory:"), "must be a file on disk"),
        (lambda: SQLiteStore(42), "must be the database file's path"),
        (lambda: SQLiteStore("x.db", synchronous="off"), "'normal' or 'full'"),
        (lambda: SQLiteStore("x.db", lock_timeout=-1), "0 or more seconds"),
        (lambda: RedisStore(f"http://:{PASSWORD}@host"), "is not a Redis URL"),
        (lambda: RedisStore(prefix=""), "prefix must be a non-empty str"),
        (lambda: PostgresStore(f"mysql://u:{PASSWORD}@db/x"), "must start with postgresql://"),
        (lambda: PostgresStore(f"postgresql://u:{PASSWORD}@db:port/x"), "does not parse"),
        (lambda: PostgresStore(POSTGRES_DSN, table_prefix="x" * 60), "too long"),
    ],
)
def test_bad_arguments_are_refused_at_once(make: Callable[[], Store], message: str) -> None:
    with pytest.raises((TypeError, ValueError), match=message) as raised:
        make()
    assert PASSWORD not in str(raised.value)


async def test_a_store_that_is_not_open_says_so(make_store: MakeStore, namespace: str) -> None:
    store = make_store()
    with pytest.raises(RuntimeError, match="is not open"):
        await store.load(namespace, "")
    with contextlib.suppress(Exception):
        await store.close()


def test_a_key_both_put_and_deleted_in_one_commit_is_refused() -> None:
    # Stores would disagree on which change wins (MemoryStore applied the delete, the Kafka
    # changelog the put), so the changes are refused where they are made.
    with pytest.raises(ValueError, match=r"key b'k' of table 't' is both put and deleted"):
        ScopeChanges("s", {"t": {b"k": StoredEntry(b"v")}}, {"t": [b"k"]}, b"")
    # The same key in two tables, or a delete of another key, is fine.
    ScopeChanges("s", {"t": {b"k": StoredEntry(b"v")}}, {"u": [b"k"], "t": [b"j"]}, b"")
