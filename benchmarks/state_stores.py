"""The embedded state store, chosen by measurement: SQLite against RocksDB (rocksdict).

``state_store_commit``: keys per second written by checkpoints of 10,000 changed keys
(100-byte values, a meta record each) into a scope that already holds them, through
``SQLiteStore.commit`` on each backend, against a RocksDB ``WriteBatch`` of the same puts
(rocksdict, raw bytes, the WAL on and not synced: what survives a killed process, as SQLite's
``synchronous=NORMAL``). Extra figures: raw ``sqlite3`` (the same SQL, no store around it),
SQLiteStore with ``synchronous="full"``, and a plain dict (``dict.update``).

``state_store_load``: keys per second of loading a scope of 100,000 keys with
``SQLiteStore.load``, against a RocksDB prefix scan that builds the same dict of
:class:`~rxflow.state.StoredEntry`; extra: raw ``sqlite3`` and copying a dict.

``state_store_redis`` / ``state_store_postgres``: the same commits (10,000 keys, 10
checkpoints) and a load of 100,000 keys through RedisStore / PostgresStore on each
backend, against the same commands written with the raw client on asyncio (a MULTI/EXEC of
HSET and SET; an unnest upsert in a transaction). Needs the local servers
(``RXFLOW_REDIS_URL``, ``RXFLOW_POSTGRES_DSN``).

``state_store_kafka_load``: seconds to load a scope of 1,000 keys (100-byte values) from a
Kafka changelog after 100 checkpoints that each changed every key, by
``KafkaChangelogStore`` on each backend: with snapshots (the default; the commits wrote
them as the log grew, and a load starts at the newest) against the same log written
without (``snapshot_after=None``: the load reads all 101,000 records). Needs tansu (the
test extra) or ``RXFLOW_KAFKA_BOOTSTRAP``; ``ratio`` is the speed-up.

Both sides store the expiry with each entry and filter it at load. rocksdict is not a
dependency of rxflow: without it installed, the RocksDB figures are left out.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import sqlite3
import struct
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import attrs

from benchmarks._measure import BACKENDS, best_rate, row
from rxflow.state._sqlite import SQLiteStore
from rxflow.state._store import ScopeChanges, Store, StoredEntry

NAMESPACE = "bench"
_NEVER = b"\x00"
_TIME = struct.Struct(">d")


def checkpoint(changed: int, round_: int) -> ScopeChanges:
    """One checkpoint: every key of the scope changed, values of 100 bytes."""
    puts = {
        b"key-%08d" % n: StoredEntry((b"%d:%d:" % (round_, n)).ljust(100, b"."))
        for n in range(changed)
    }
    return ScopeChanges("", {"totals": puts}, {}, b"offsets %d" % round_)


# -- SQLiteStore ---------------------------------------------------------------------------


async def store_commits(path: Path, checkpoints: list[ScopeChanges], synchronous: Any) -> None:
    async with SQLiteStore(path, synchronous=synchronous) as store:
        for changes in checkpoints:
            await store.commit(NAMESPACE, [changes])


async def store_load(path: Path, expected: int) -> None:
    async with SQLiteStore(path) as store:
        snapshot = await store.load(NAMESPACE, "")
    if len(snapshot.tables["totals"]) != expected:
        raise AssertionError(f"SQLiteStore loaded {len(snapshot.tables['totals'])} keys")


# -- raw sqlite3: the same SQL, without the store ---------------------------------------------


def raw_sqlite_commits(path: Path, checkpoints: list[ScopeChanges]) -> None:
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    connection.execute(
        "CREATE TABLE IF NOT EXISTS entries (namespace TEXT, scope TEXT, tbl TEXT, key BLOB, "
        "value BLOB, expires_at REAL, PRIMARY KEY (namespace, scope, tbl, key)) WITHOUT ROWID"
    )
    for changes in checkpoints:
        connection.execute("BEGIN IMMEDIATE")
        connection.executemany(
            "INSERT OR REPLACE INTO entries VALUES (?, ?, ?, ?, ?, ?)",
            [
                (NAMESPACE, "", "totals", key, entry.value, entry.expires_at)
                for key, entry in changes.puts["totals"].items()
            ],
        )
        connection.execute("COMMIT")
    connection.close()


def raw_sqlite_load(path: Path, expected: int) -> None:
    connection = sqlite3.connect(path)
    rows = connection.execute(
        "SELECT tbl, key, value, expires_at FROM entries WHERE namespace = ? AND scope = ? "
        "AND (expires_at IS NULL OR expires_at > ?)",
        (NAMESPACE, "", time.time()),
    ).fetchall()
    loaded = {key: StoredEntry(value, expires_at) for _, key, value, expires_at in rows}
    connection.close()
    if len(loaded) != expected:
        raise AssertionError(f"raw sqlite3 loaded {len(loaded)} keys")


# -- RocksDB through rocksdict -------------------------------------------------------------


def rocks_prefix() -> bytes:
    return f"{NAMESPACE}\x00\x00totals\x00".encode()


def rocks_commits(path: Path, checkpoints: list[ScopeChanges]) -> None:
    from rocksdict import Options, Rdict, WriteBatch

    db = Rdict(str(path), Options(raw_mode=True))
    prefix = rocks_prefix()
    for changes in checkpoints:
        batch = WriteBatch(raw_mode=True)
        for key, entry in changes.puts["totals"].items():
            header = _NEVER if entry.expires_at is None else b"\x01" + _TIME.pack(entry.expires_at)
            batch.put(prefix + key, header + entry.value)
        batch.put(f"{NAMESPACE}\x00\x00\x01meta".encode(), changes.meta)
        db.write(batch)
    db.close()


def rocks_load(path: Path, expected: int) -> None:
    from rocksdict import Options, Rdict

    db = Rdict(str(path), Options(raw_mode=True))
    prefix, start, now = rocks_prefix(), len(rocks_prefix()), time.time()
    loaded = {}
    for key, stored in db.items(from_key=prefix):
        if not key.startswith(prefix):
            break
        if stored[:1] == _NEVER:
            loaded[key[start:]] = StoredEntry(stored[1:])
        else:
            (expires_at,) = _TIME.unpack_from(stored, 1)
            if expires_at > now:
                loaded[key[start:]] = StoredEntry(stored[9:], expires_at)
    db.close()
    if len(loaded) != expected:
        raise AssertionError(f"rocksdict loaded {len(loaded)} keys")


def has_rocksdict() -> bool:
    try:
        import rocksdict  # noqa: F401
    except ImportError:
        return False
    return True


# -- the cases -------------------------------------------------------------------------------


_RUNS = itertools.count()


def fresh(directory: str, name: str) -> Path:
    """A path no earlier run used (each timed run writes a database of its own)."""
    return Path(directory) / f"{name}-{next(_RUNS)}"


def commit(quick: bool) -> Iterator[dict[str, Any]]:
    changed, rounds = 10_000, (4 if quick else 20)
    repeats = 2 if quick else 3
    # The first checkpoint fills the scope; the timed ones change every key of it.
    checkpoints = [checkpoint(changed, n) for n in range(rounds + 1)]
    items = changed * rounds

    with tempfile.TemporaryDirectory() as directory:

        def timed(write: Callable[[Path, list[ScopeChanges]], None], name: str) -> float:
            def once() -> float:
                path = fresh(directory, name)
                write(path, checkpoints[:1])  # fills the scope, not timed
                started = time.perf_counter()
                write(path, checkpoints[1:])
                return time.perf_counter() - started

            return items / min(once() for _ in range(repeats))

        def dict_updates(_: Path, some: list[ScopeChanges]) -> None:
            table: dict[bytes, StoredEntry] = {}
            for changes in some:
                table.update(changes.puts["totals"])

        extra = {
            "dict_per_s": round(timed(dict_updates, "dict")),
            "raw_sqlite3_per_s": round(timed(raw_sqlite_commits, "raw")),
        }
        rocks = timed(rocks_commits, "rocks") if has_rocksdict() else None
        for backend in BACKENDS:

            def store_writes(path: Path, some: list[ScopeChanges], sync: str = "normal") -> None:
                anyio.run(store_commits, path, some, sync, backend=backend)

            full = timed(partial(store_writes, sync="full"), "full")
            rate = timed(store_writes, "store")
            yield _row("state_store_commit", backend, items, rate, rocks, extra, full=full)


def load(quick: bool) -> Iterator[dict[str, Any]]:
    loaded = 20_000 if quick else 100_000
    repeats = 2 if quick else 3
    filled = [checkpoint(loaded, 0)]
    with tempfile.TemporaryDirectory() as directory:
        sqlite_path, rocks_path = Path(directory) / "sqlite.db", Path(directory) / "rocks"
        anyio.run(store_commits, sqlite_path, filled, "normal")
        table = dict(filled[0].puts["totals"])
        extra = {
            "dict_per_s": round(best_rate(loaded, lambda: dict(table), repeats)),
            "raw_sqlite3_per_s": round(
                best_rate(loaded, partial(raw_sqlite_load, sqlite_path, loaded), repeats)
            ),
        }
        rocks = None
        if has_rocksdict():
            rocks_commits(rocks_path, filled)
            rocks = best_rate(loaded, partial(rocks_load, rocks_path, loaded), repeats)
        for backend in BACKENDS:
            run = partial(anyio.run, store_load, sqlite_path, loaded, backend=backend)
            rate = best_rate(loaded, run, repeats)
            yield _row("state_store_load", backend, loaded, rate, rocks, extra)


def _row(
    name: str,
    backend: str,
    items: int,
    rate: float,
    rocks: float | None,
    extra: dict[str, Any],
    *,
    full: float | None = None,
) -> dict[str, Any]:
    more = dict(extra)
    if full is not None:
        more["sqlite_store_sync_full_per_s"] = round(full)
    if rocks is None:
        more["note"] = "rocksdict not installed: baseline is the dict"
        return row(name, backend, items, rate, "dict", more.pop("dict_per_s"), **more)
    return row(name, backend, items, rate, "rocksdict", rocks, **more)


# -- the server stores against their raw clients ----------------------------------------------

REDIS_URL = os.environ.get("RXFLOW_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_DSN = os.environ.get("RXFLOW_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")


async def through_store(make: Callable[[], Store], checkpoints: list[ScopeChanges]) -> int:
    """Commit ``checkpoints`` (if any) then load the scope; the number of keys loaded."""
    async with make() as store:
        for changes in checkpoints:
            await store.commit(NAMESPACE, [changes])
        if checkpoints:
            return 0
        return len((await store.load(NAMESPACE, "")).tables["totals"])


async def raw_redis(prefix: str, checkpoints: list[ScopeChanges]) -> int:
    """What RedisStore does, written with redis-py: a MULTI/EXEC of HSET and SET per
    checkpoint; HGETALL and the expiry header undone per entry to load."""
    import redis.asyncio as aioredis

    client = aioredis.from_url(REDIS_URL)
    try:
        for changes in checkpoints:
            fields = {key: _NEVER + entry.value for key, entry in changes.puts["totals"].items()}
            async with client.pipeline(transaction=True) as pipe:
                pipe.hset(f"{prefix}:t", mapping=fields).set(f"{prefix}:meta", changes.meta)
                await pipe.execute()
        if checkpoints:
            return 0
        stored = await client.hgetall(f"{prefix}:t")
        return len({key: StoredEntry(value[1:]) for key, value in stored.items()})
    finally:
        await client.aclose()


_RAW_TABLE = """CREATE TABLE IF NOT EXISTS {table} (namespace text, scope text, tbl text,
    key bytea, value bytea, expires_at double precision,
    PRIMARY KEY (namespace, scope, tbl, key))"""
_RAW_PUT = """INSERT INTO {table} SELECT $1, $2, $3, k, v, e
    FROM unnest($4::bytea[], $5::bytea[], $6::double precision[]) AS u(k, v, e)
    ON CONFLICT (namespace, scope, tbl, key)
    DO UPDATE SET value = EXCLUDED.value, expires_at = EXCLUDED.expires_at"""


async def raw_asyncpg(table: str, checkpoints: list[ScopeChanges]) -> int:
    """What PostgresStore does, written with asyncpg: one unnest upsert per checkpoint in a
    transaction; one SELECT to load."""
    import asyncpg

    connection = await asyncpg.connect(POSTGRES_DSN)
    try:
        await connection.execute(_RAW_TABLE.format(table=table))
        for changes in checkpoints:
            entries = changes.puts["totals"]
            async with connection.transaction():
                await connection.execute(
                    _RAW_PUT.format(table=table),
                    NAMESPACE,
                    "",
                    "totals",
                    list(entries),
                    [entry.value for entry in entries.values()],
                    [entry.expires_at for entry in entries.values()],
                )
        if checkpoints:
            return 0
        rows = await connection.fetch(
            f"SELECT key, value, expires_at FROM {table} WHERE namespace = $1", NAMESPACE
        )
        return len({key: StoredEntry(value, expires_at) for key, value, expires_at in rows})
    finally:
        await connection.close()


def server_store(quick: bool, kind: str) -> Iterator[dict[str, Any]]:
    """Commit and load through RedisStore or PostgresStore against the raw client."""
    from rxflow.state._postgres import PostgresStore
    from rxflow.state._redis import RedisStore

    changed, rounds, loaded = 10_000, (4 if quick else 10), (20_000 if quick else 100_000)
    repeats = 2 if quick else 3
    checkpoints = [checkpoint(changed, n) for n in range(rounds)]
    filled = [checkpoint(loaded, 0)]
    prefix = f"rxflow_bench_{uuid.uuid4().hex[:8]}"
    make: Callable[[], Store]
    if kind == "redis":
        make = partial(RedisStore, REDIS_URL, prefix=prefix)
        raw = partial(raw_redis, f"{prefix}-raw")
    else:
        make = partial(PostgresStore, POSTGRES_DSN, table_prefix=prefix)
        raw = partial(raw_asyncpg, f"{prefix}_raw")
    try:
        for op, items, some in (("commit", changed * rounds, checkpoints), ("load", loaded, [])):
            if op == "load":  # both hold the scope to load
                anyio.run(through_store, make, filled)
                asyncio.run(raw(filled))
            expected = loaded if op == "load" else 0
            if asyncio.run(raw(some)) != expected:
                raise AssertionError(f"raw {kind} {op}: wrong count")
            raw_rate = best_rate(items, lambda: asyncio.run(raw(some)), repeats)
            for backend in BACKENDS:
                run = partial(anyio.run, through_store, make, some, backend=backend)
                if run() != expected:
                    raise AssertionError(f"{kind} store {op} on {backend}: wrong count")
                rate = best_rate(items, run, repeats)
                baseline = "raw_redis_py" if kind == "redis" else "raw_asyncpg"
                yield row(f"state_store_{kind}_{op}", backend, items, rate, baseline, raw_rate)
    finally:
        asyncio.run(_drop(kind, prefix))


async def _drop(kind: str, prefix: str) -> None:
    if kind == "redis":
        import redis.asyncio as aioredis

        client = aioredis.from_url(REDIS_URL)
        keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()
    else:
        import asyncpg

        connection = await asyncpg.connect(POSTGRES_DSN)
        await connection.execute(
            f"DROP TABLE IF EXISTS {prefix}_entries, {prefix}_meta, {prefix}_raw"
        )
        await connection.close()


async def kafka_changelog(
    bootstrap: str, namespace: str, checkpoints: list[ScopeChanges], after: int | None
) -> None:
    """The checkpoints committed by a flow's owner of scope ``""`` (claim, load, commits)."""
    from rxflow.state._kafka import KafkaChangelogStore

    async with KafkaChangelogStore(bootstrap, snapshot_after=after) as store:
        epoch = await store.claim(namespace, "")
        await store.load(namespace, "")
        for changes in checkpoints:
            await store.commit(namespace, [attrs.evolve(changes, epoch=epoch)])


async def kafka_loads(
    bootstrap: str, namespace: str, after: int | None, repeats: int
) -> tuple[float, int, int]:
    """The fastest of ``repeats`` loads of the scope, in seconds; the keys loaded and the
    records one load read."""
    from rxflow.state._kafka import KafkaChangelogStore

    async with KafkaChangelogStore(bootstrap, snapshot_after=after) as store:
        best, keys = float("inf"), 0
        for _ in range(repeats):
            started = time.perf_counter()
            keys = len((await store.load(namespace, "")).tables["totals"])
            best = min(best, time.perf_counter() - started)
        return best, keys, store.records_read // repeats


def kafka_load(quick: bool) -> Iterator[dict[str, Any]]:
    """Load after many checkpoints, with snapshots against without."""
    from benchmarks.connectors_kafka import broker

    keys, rounds, repeats = 1_000, (30 if quick else 100), (2 if quick else 3)
    checkpoints = [checkpoint(keys, n) for n in range(rounds)]
    with broker() as bootstrap:
        names = {after: f"bench-{uuid.uuid4().hex[:8]}" for after in (None, 1000)}
        for after, name in names.items():
            anyio.run(kafka_changelog, bootstrap, name, checkpoints, after)
        for backend in BACKENDS:
            found = {
                after: anyio.run(kafka_loads, bootstrap, name, after, repeats, backend=backend)
                for after, name in names.items()
            }
            (plain, plain_keys, plain_read), (snap, snap_keys, snap_read) = found.values()
            if plain_keys != keys or snap_keys != keys:
                raise AssertionError(f"kafka loads found {plain_keys} and {snap_keys} keys")
            yield row(
                "state_store_kafka_load",
                backend,
                keys,
                keys / snap,
                "no_snapshots",
                keys / plain,
                checkpoints=rounds,
                load_s=round(snap, 4),
                no_snapshots_load_s=round(plain, 4),
                records_read=snap_read,
                no_snapshots_records_read=plain_read,
            )


CASES: dict[str, Callable[[bool], Iterable[dict[str, Any]]]] = {
    "state_store_commit": commit,
    "state_store_load": load,
    "state_store_redis": partial(server_store, kind="redis"),
    "state_store_postgres": partial(server_store, kind="postgres"),
    "state_store_kafka_load": kafka_load,
}

if __name__ == "__main__":
    import json
    import sys

    for case in sys.argv[1:] or list(CASES):
        for result in CASES[case](os.environ.get("QUICK") == "1"):
            print(json.dumps(result), flush=True)
