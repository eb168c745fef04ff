"""Fencing by owner epochs, on every store against its real engine (memory, SQLite on a
temporary file, the local Redis and PostgreSQL, Kafka through the tests' broker), on both
backends: a scope's former owner that commits after a newer owner claimed the scope does
not change it, and a restore sees the newer owner's state.

SQLite, Redis, PostgreSQL and memory refuse the zombie's commit (ScopeFencedError, the
commit's other scopes committed); the Kafka changelog, which cannot compare and set,
writes it and leaves it out of every load.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import pytest

from rxflow.errors import ScopeFencedError
from rxflow.state import KafkaChangelogStore, MemoryStore, PostgresStore, RedisStore, SQLiteStore
from rxflow.state._store import ScopeChanges, ScopeSnapshot, Store, StoredEntry
from tests.connectors.conftest import require_service
from tests.state.test_stores import _drop_postgres_tables, _drop_redis_keys

pytestmark = pytest.mark.anyio

REDIS_URL = "redis://127.0.0.1:6379/0"
POSTGRES_DSN = "postgresql://postgres@127.0.0.1:5432/test"
KINDS = ("memory", "sqlite", "redis", "postgres", "kafka")
REFUSING = ("memory", "sqlite", "redis", "postgres")  # those that refuse at commit


@pytest.fixture(params=KINDS)
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Store]]:
    """Makes store objects over the same data, each as another process would (the memory
    store: the same object, which is what processes sharing it would see)."""
    kind = request.param
    prefix = f"rxflow_fence_{uuid.uuid4().hex[:10]}"
    if kind == "memory":
        memory = MemoryStore()
        yield lambda: memory
    elif kind == "sqlite":
        yield lambda: SQLiteStore(tmp_path / "state.db")
    elif kind == "redis":
        require_service("redis")
        yield lambda: RedisStore(REDIS_URL, prefix=prefix)
        asyncio.run(_drop_redis_keys(prefix))
    elif kind == "postgres":
        require_service("postgresql")
        yield lambda: PostgresStore(POSTGRES_DSN, table_prefix=prefix)
        asyncio.run(_drop_postgres_tables(prefix))
    else:
        host, port = require_service("kafka")
        topic = f"rxflow-fence-{uuid.uuid4().hex[:10]}"
        yield lambda: KafkaChangelogStore(f"{host}:{port}", topic=topic, partitions=2)


@pytest.fixture
def kind(make_store: Callable[[], Store], request: pytest.FixtureRequest) -> str:
    return str(request.node.callspec.params["make_store"])


def changes(
    scope: str, value: bytes, epoch: int | None, *, delete: bytes | None = None
) -> ScopeChanges:
    deletes = {"counts": [delete]} if delete is not None else {}
    return ScopeChanges(
        scope, {"counts": {b"ann": StoredEntry(value)}}, deletes, b"meta " + value, epoch
    )


def values(snapshot: ScopeSnapshot) -> dict[bytes, bytes]:
    return {key: entry.value for key, entry in snapshot.tables.get("counts", {}).items()}


async def test_claims_raise_the_epoch(make_store: Callable[[], Store]) -> None:
    async with make_store() as first, make_store() as second:
        a = await first.claim("flow", "orders/0")
        b = await second.claim("flow", "orders/0")
        c = await first.claim("flow", "orders/0")
        other = await second.claim("flow", "orders/1")
    assert a < b < c
    assert other >= 0
    async with make_store() as again:  # durable: a new process goes on from there
        assert await again.claim("flow", "orders/0") > c


async def test_a_former_owner_cannot_overwrite_the_new_owners_state(
    make_store: Callable[[], Store], kind: str
) -> None:
    namespace, scope = f"flow-{uuid.uuid4().hex[:8]}", "orders/1"
    async with make_store() as old, make_store() as new:
        old_epoch = await old.claim(namespace, scope)
        assert values(await old.load(namespace, scope)) == {}
        await old.commit(namespace, [changes(scope, b"old 1", old_epoch)])

        # The partition moves: the new owner claims it, then restores what the old stored.
        new_epoch = await new.claim(namespace, scope)
        assert new_epoch > old_epoch
        assert values(await new.load(namespace, scope)) == {b"ann": b"old 1"}
        await new.commit(namespace, [changes(scope, b"new 1", new_epoch)])

        # The old owner (a zombie) still commits, with its epoch, the scope and another one.
        zombie = [
            changes(scope, b"old 2", old_epoch, delete=b"bob"),
            changes("orders/0", b"x", None),
        ]
        if kind in REFUSING:
            with pytest.raises(ScopeFencedError) as refused:
                await old.commit(namespace, zombie)
            assert refused.value.fenced == [scope]
            assert refused.value.committed == ["orders/0"]
            assert "newer owner" in str(refused.value)
        else:  # the Kafka changelog writes it and ignores it at load
            await old.commit(namespace, zombie)

        # The new owner's state is intact, for itself and for whoever restores next.
        assert values(await new.load(namespace, scope)) == {b"ann": b"new 1"}
        assert (await new.load(namespace, scope)).meta == b"meta new 1"
        assert values(await new.load(namespace, "orders/0")) == {b"ann": b"x"}
        await new.commit(namespace, [changes(scope, b"new 2", new_epoch)])
    async with make_store() as restorer:
        assert await restorer.claim(namespace, scope) > new_epoch
        snapshot = await restorer.load(namespace, scope)
        assert values(snapshot) == {b"ann": b"new 2"}
        assert snapshot.meta == b"meta new 2"


async def test_a_commit_before_the_claim_is_what_the_new_owner_restores(
    make_store: Callable[[], Store],
) -> None:
    # The old owner's last commit before the handover is kept, and its later ones are not,
    # even when they follow the new owner's claim with no commit of the new owner between.
    namespace, scope = f"flow-{uuid.uuid4().hex[:8]}", ""
    async with make_store() as old, make_store() as new:
        old_epoch = await old.claim(namespace, scope)
        await old.commit(namespace, [changes(scope, b"old 1", old_epoch)])
        await new.claim(namespace, scope)
        with contextlib.suppress(ScopeFencedError):
            await old.commit(namespace, [changes(scope, b"old 2", old_epoch)])
        assert values(await new.load(namespace, scope)) == {b"ann": b"old 1"}


async def test_commits_without_an_epoch_are_not_fenced(make_store: Callable[[], Store]) -> None:
    namespace = f"flow-{uuid.uuid4().hex[:8]}"
    async with make_store() as store:
        await store.claim(namespace, "")
        await store.claim(namespace, "")
        await store.commit(namespace, [changes("", b"tool", None)])
        assert values(await store.load(namespace, "")) == {b"ann": b"tool"}


async def test_the_owner_of_the_newest_claim_commits_again_and_again(
    make_store: Callable[[], Store],
) -> None:
    namespace = f"flow-{uuid.uuid4().hex[:8]}"
    async with make_store() as store:
        epoch = await store.claim(namespace, "t/0")
        for n in range(3):
            await store.commit(namespace, [changes("t/0", b"%d" % n, epoch)])
        assert values(await store.load(namespace, "t/0")) == {b"ann": b"2"}


async def test_a_fenced_commit_with_exactly_once_rows_writes_nothing() -> None:
    """PostgreSQL: the rows of a checkpoint are of all its scopes, so a commit of which one
    scope is fenced writes no row and no scope's state."""
    from rxflow.connectors.postgres import postgres_sink

    require_service("postgresql")
    prefix = f"rxflow_fence_{uuid.uuid4().hex[:10]}"
    table, namespace = f"{prefix}_rows", "flow"
    await _sql(f'CREATE TABLE "{table}" (customer text, total int)')
    try:
        async with (
            postgres_sink(POSTGRES_DSN, table, ["customer", "total"], exactly_once=True) as sink,
            PostgresStore(POSTGRES_DSN, table_prefix=prefix) as old,
            PostgresStore(POSTGRES_DSN, table_prefix=prefix) as new,
        ):
            old_epoch = await old.claim(namespace, "orders/0")
            other_epoch = await old.claim(namespace, "orders/1")
            await new.claim(namespace, "orders/0")
            sink.stage([(0, ("ann", 3)), (0, ("bob", 4))])
            rows = sink.take(0)
            zombie = [
                changes("orders/0", b"old", old_epoch),
                changes("orders/1", b"mine", other_epoch),
            ]
            with pytest.raises(ScopeFencedError, match="nor any exactly-once row") as refused:
                await old.commit(namespace, zombie, [rows])
            assert (refused.value.fenced, refused.value.committed) == (["orders/0"], [])
            assert await _sql(f'SELECT * FROM "{table}"') == []
            assert values(await new.load(namespace, "orders/0")) == {}
            assert values(await new.load(namespace, "orders/1")) == {}
            # Without the fenced scope, the same rows and the other scope's state go in.
            await old.commit(namespace, zombie[1:], [rows])
            assert sorted(await _sql(f'SELECT customer, total FROM "{table}"')) == [
                ("ann", 3),
                ("bob", 4),
            ]
            assert values(await new.load(namespace, "orders/1")) == {b"ann": b"mine"}
    finally:
        await _sql(f'DROP TABLE IF EXISTS "{table}"')
        await _drop_postgres_tables_async(prefix)


async def _sql(query: str) -> list[tuple[object, ...]]:
    """asyncpg on a loop of its own in a worker thread: the test may run under trio."""

    import asyncpg

    async def run() -> list[tuple[object, ...]]:
        connection = await asyncpg.connect(POSTGRES_DSN)
        try:
            return [tuple(row) for row in await connection.fetch(query)]
        finally:
            await connection.close()

    return await anyio.to_thread.run_sync(lambda: asyncio.run(run()))


async def _drop_postgres_tables_async(prefix: str) -> None:

    await anyio.to_thread.run_sync(lambda: asyncio.run(_drop_postgres_tables(prefix)))
