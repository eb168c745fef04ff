"""Fencing in a checkpointed Flow: a worker that lost a partition without being told (a
zombie) and still checkpoints it neither overwrites the new owner's state nor, with the
exactly-once PostgreSQL sink, writes rows; both backends.

The partition moves as a Kafka group moves it: the new owner gets a new Partition object of
the same topic and index, and the zombie's object is never revoked by its source.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import pytest

from rxflow import Flow
from rxflow.connectors import Message, Settlement
from rxflow.errors import ScopeFencedError
from rxflow.partitions import Partition
from rxflow.state import MemoryStore, PostgresStore, Store
from tests.connectors.conftest import require_service
from tests.state.test_checkpoints import counting
from tests.state.test_fencing import _sql
from tests.state.test_stores import _drop_postgres_tables

pytestmark = pytest.mark.anyio

POSTGRES_DSN = "postgresql://postgres@127.0.0.1:5432/test"


class Acks(Settlement):
    """Acks land in a log, except those of a revoked partition, which a partitioned source
    ignores (the Kafka source commits no offset of a revoked partition)."""

    def __init__(self, log: list[Any], partition: Partition, identity: int) -> None:
        super().__init__(identity)
        self.log, self.partition = log, partition

    async def _ack(self) -> None:
        if not self.partition.revoked:
            self.log.append(self.identity)


def read(
    values: list[str], partition: Partition, log: list[Any], first: int = 0
) -> list[Message[str]]:
    """Records of ``partition`` at offsets ``first``, ``first + 1``..."""
    return [
        Message(value, settlement=Acks(log, partition, first + n), partition=partition)
        for n, value in enumerate(values)
    ]


async def held_open(messages: list[Message[str]], sent: anyio.Event) -> AsyncIterator[Any]:
    """The zombie's source: its records, then nothing (it is never told of the move)."""
    for message in messages:
        yield message
    sent.set()
    await anyio.sleep_forever()


async def zombie_and_new_owner(
    name: str, store: Callable[[], Store], sink: Callable[[], Any]
) -> tuple[Partition, list[Any], list[Any], BaseException | None]:
    """The zombie counts ``a a a`` of orders/0 (checkpointing only when it stops); meanwhile
    the partition moves, and the new owner counts ``a b`` of it from the start and ends; then
    the zombie stops and checkpoints. Returns the zombie's partition, the zombie's and the new
    owner's acks, and what the zombie failed with."""
    zombie_partition, zombie_acks, new_acks = Partition("orders", 0), [], []
    sent = anyio.Event()
    failure: BaseException | None = None
    zombie = (
        Flow(name)
        .source(held_open(read(["a", "a", "a"], zombie_partition, zombie_acks), sent))
        .pipe(counting())
        .sink(sink())
        .checkpoint(store(), every=3600)
        .prepare()
    )

    async def run_zombie() -> None:
        nonlocal failure
        try:
            await zombie.run()
        except ScopeFencedError as error:
            failure = error

    async with anyio.create_task_group() as tg:
        tg.start_soon(run_zombie)
        await sent.wait()
        await anyio.wait_all_tasks_blocked()
        new_partition = Partition("orders", 0)
        await (
            Flow(name)
            .source(read(["a", "b"], new_partition, new_acks))
            .pipe(counting())
            .sink(sink())
            .checkpoint(store())
            .run()
        )
        zombie.stop()  # its last checkpoint, of a partition it no longer owns
    return zombie_partition, zombie_acks, new_acks, failure


async def counts_restored(name: str, store: Store) -> list[Any]:
    written: list[Any] = []
    again = read(["a", "b"], Partition("orders", 0), [], first=10)
    flow = Flow(name).source(again).pipe(counting()).sink(written.append).checkpoint(store)
    await flow.run()
    return written


async def test_a_zombies_checkpoint_leaves_the_new_owners_state() -> None:
    store, written = MemoryStore(), []
    partition, zombie_acks, new_acks, failure = await zombie_and_new_owner(
        "totals", lambda: store, lambda: written.append
    )
    assert failure is None  # a partition lost: let go, the flow goes on
    assert partition.revoked
    assert zombie_acks == []  # nothing of the lost partition acknowledged
    assert sorted(new_acks) == [0, 1]
    # The new owner's counts (a: 1, b: 1) are what the next owner restores, not the
    # zombie's (a: 3).
    assert await counts_restored("totals", store) == [("a", 2), ("b", 2)]


async def test_two_runs_of_one_flow_name_fail_the_older() -> None:
    store = MemoryStore()
    sent = anyio.Event()

    def plain(values: list[str]) -> list[Message[str]]:
        return [Message(value, settlement=Settlement(n)) for n, value in enumerate(values)]

    older = (
        Flow("shared")
        .source(held_open(plain(["a"]), sent))
        .pipe(counting())
        .sink(lambda item: None)
        .checkpoint(store, every=3600)
        .prepare()
    )
    failures: list[BaseException] = []

    async def run_older() -> None:
        try:
            await older.run()
        except ScopeFencedError as error:
            failures.append(error)

    async with anyio.create_task_group() as tg:
        tg.start_soon(run_older)
        await sent.wait()
        await anyio.wait_all_tasks_blocked()
        await (
            Flow("shared").source(plain(["b"])).pipe(counting()).sink(print).checkpoint(store).run()
        )
        older.stop()
    assert len(failures) == 1
    assert "one worker per flow name" in str(failures[0])
    assert failures[0].fenced == [""]
    snapshot = await store.load("shared", "")
    assert len(snapshot.tables["count"]) == 1  # the newer run's "b" only


async def test_a_zombie_writes_no_exactly_once_rows() -> None:
    from rxflow.connectors.postgres import postgres_sink

    require_service("postgresql")
    prefix = f"rxflow_fence_{uuid.uuid4().hex[:10]}"
    table, name = f"{prefix}_rows", f"fence-{uuid.uuid4().hex[:8]}"
    await _sql(f'CREATE TABLE "{table}" (customer text, n int)')
    try:
        columns = ["customer", "n"]
        async with (
            postgres_sink(POSTGRES_DSN, table, columns, exactly_once=True) as zombie_sink,
            postgres_sink(POSTGRES_DSN, table, columns, exactly_once=True) as new_sink,
        ):
            _, zombie_acks, new_acks, failure = await zombie_and_new_owner(
                name,
                lambda: PostgresStore(POSTGRES_DSN, table_prefix=prefix),
                iter([zombie_sink, new_sink]).__next__,  # one each, as in two processes
            )
        assert isinstance(failure, ScopeFencedError)
        assert "exactly-once rows" in str(failure)
        assert failure.fenced == ["orders/0"]
        assert zombie_acks == []
        assert sorted(new_acks) == [0, 1]
        # Only the new owner's rows: none of the zombie's ("a", 2), ("a", 3).
        assert sorted(await _sql(f'SELECT customer, n FROM "{table}"')) == [("a", 1), ("b", 1)]
        restored = await counts_restored(name, PostgresStore(POSTGRES_DSN, table_prefix=prefix))
        assert restored == [("a", 2), ("b", 2)]
    finally:
        await _sql(f'DROP TABLE IF EXISTS "{table}"')
        await anyio.to_thread.run_sync(lambda: asyncio.run(_drop_postgres_tables(prefix)))


async def test_over_a_kafka_changelog_a_zombies_commit_is_never_restored() -> None:
    # The changelog cannot refuse the zombie's commit: it is written after the new owner's
    # claim, and every load leaves it out. (Its acks are Kafka offset commits, which the
    # group coordinator refuses from a member of an old generation.)
    from rxflow.state import KafkaChangelogStore

    host, port = require_service("kafka")
    topic = f"rxflow-fence-{uuid.uuid4().hex[:10]}"

    def store() -> Store:
        return KafkaChangelogStore(f"{host}:{port}", topic=topic, partitions=1)

    _, _, new_acks, failure = await zombie_and_new_owner("totals", store, lambda: lambda item: None)
    assert failure is None
    assert sorted(new_acks) == [0, 1]
    assert await counts_restored("totals", store()) == [("a", 2), ("b", 2)]
