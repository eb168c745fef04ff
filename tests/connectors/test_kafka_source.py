"""The Kafka source against the tests' broker (tansu, or ``RXFLOW_KAFKA_BOOTSTRAP``), on
asyncio and trio: every field of a record; at-least-once commits (never past an
unacknowledged offset, whatever order the acks come in); bounded read-ahead, in the source
and in the client; rebalances, with one Partition object per assignment.

The test side talks to Kafka with aiokafka on an asyncio loop of its own in a worker thread
(the same under both backends). Group members use a short session (6 s, the least Apache
Kafka accepts by default): tansu makes a joining member wait half of it.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio
import anyio.abc
import attrs
import pytest

from rxflow.connectors import Message
from rxflow.connectors.kafka import KafkaSource, kafka_source
from rxflow.partitions import Partition
from tests.connectors.conftest import require_service
from tests.connectors.support import take, wait_until

pytestmark = pytest.mark.anyio

T = TypeVar("T")
SESSION: dict[str, Any] = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000}


async def on_own_loop(function: Callable[..., Awaitable[T]], *args: Any) -> T:
    """``await function(*args)`` on a fresh asyncio loop in a worker thread."""

    async def bounded() -> T:
        return await asyncio.wait_for(function(*args), 30)

    return await anyio.to_thread.run_sync(lambda: asyncio.run(bounded()))


@attrs.frozen
class Record:
    """A record to produce."""

    value: bytes | None
    key: bytes | None = None
    partition: int = 0
    headers: tuple[tuple[str, bytes], ...] = ()
    timestamp_ms: int | None = None


class Topic:
    """One test's topic (and consumer group), made with the admin client."""

    def __init__(self, bootstrap: str, partitions: int) -> None:
        self.bootstrap = bootstrap
        self.name = f"rxflow-source-{uuid.uuid4().hex[:12]}"
        self.group = f"{self.name}-group"
        self.partitions = partitions

    async def create(self) -> None:
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic

        async def create() -> None:
            admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
            await admin.start()
            try:
                await admin.create_topics([NewTopic(self.name, self.partitions, 1)])
            finally:
                await admin.close()

        await on_own_loop(create)

    async def produce(self, records: list[Record]) -> list[tuple[int, int]]:
        """Produce the records; their (partition, offset)."""
        from aiokafka import AIOKafkaProducer

        async def produce() -> list[tuple[int, int]]:
            producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all")
            await producer.start()
            try:
                futures = [
                    await producer.send(
                        self.name,
                        r.value,
                        key=r.key,
                        partition=r.partition,
                        headers=list(r.headers) or None,
                        timestamp_ms=r.timestamp_ms,
                    )
                    for r in records
                ]
                return [((m := await f).partition, m.offset) for f in futures]
            finally:
                await producer.stop()

        return await on_own_loop(produce)

    async def spread(self, count: int, size: int = 0) -> list[tuple[int, int]]:
        """``count`` records, round robin over the partitions, values ``b"<n>"`` padded to
        ``size`` bytes."""
        return await self.produce(
            [
                Record(str(n).encode().ljust(size, b"."), partition=n % self.partitions)
                for n in range(count)
            ]
        )

    async def committed(self) -> dict[int, int | None]:
        """The group's committed offset of each partition (None: none yet)."""
        from aiokafka import AIOKafkaConsumer, TopicPartition

        async def committed() -> dict[int, int | None]:
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self.bootstrap, group_id=self.group, enable_auto_commit=False
            )
            await consumer.start()
            try:
                return {
                    n: await consumer.committed(TopicPartition(self.name, n))
                    for n in range(self.partitions)
                }
            finally:
                await consumer.stop()

        return await on_own_loop(committed)

    def source(self, **options: Any) -> Any:
        return kafka_source(self.bootstrap, self.name, self.group, **{**SESSION, **options})


@pytest.fixture
def make_topic() -> Callable[..., Awaitable[Topic]]:
    host, port = require_service("kafka")

    async def make(partitions: int = 1) -> Topic:
        topic = Topic(f"{host}:{port}", partitions)
        await topic.create()
        return topic

    return make


def where(message: Message[Any]) -> tuple[int, int]:
    assert message.partition is not None
    assert message.offset is not None
    return message.partition.index, message.offset


async def test_a_record_comes_out_with_every_field(
    make_topic: Callable[..., Awaitable[Topic]],
) -> None:
    topic = await make_topic(partitions=2)
    produced = await topic.produce(
        [
            Record(b"one", b"k1", 1, (("trace", b"abc"), ("bin", b"\xff")), 1_700_000_000_123),
            Record(b"two", None, 0),
            Record(None, b"gone", 1),  # a tombstone
        ]
    )
    async with topic.source(codec="text") as source:
        assert isinstance(source, KafkaSource)
        assert source.partitioned
        messages = sorted(await take(aiter(source), 3), key=where)
        for message in messages:
            await message.ack()
        assignment = source.assignment
    two, one, tombstone = messages
    assert (one.value, one.key, one.headers) == ("one", "k1", {"trace": "abc", "bin": "\\xff"})
    assert one.timestamp == 1_700_000_000.123
    assert one.source == f"kafka:{topic.name}"
    assert one.settlement.identity == (topic.name, 1, produced[0][1])
    assert where(one) == produced[0]
    assert where(two) == produced[1]
    assert (two.value, two.key, two.headers) == ("two", None, {})
    assert (tombstone.value, tombstone.key) == (None, "gone")
    # One Partition object per assigned partition, the same on each of its messages.
    assert {id(p) for p in assignment} == {id(m.partition) for m in messages}
    assert one.partition is tombstone.partition
    assert isinstance(one.partition, Partition)
    assert one.partition.topic == topic.name


async def test_keys_as_bytes(make_topic: Callable[..., Awaitable[Topic]]) -> None:
    topic = await make_topic()
    await topic.produce([Record(b"v", b"\x00\x01")])
    async with topic.source(key_codec="bytes") as source:
        (message,) = await take(aiter(source), 1)
        await message.ack()
    assert (message.key, message.value) == (b"\x00\x01", b"v")


async def test_acked_records_are_committed_and_a_new_member_starts_after_them(
    make_topic: Callable[..., Awaitable[Topic]],
) -> None:
    topic = await make_topic()
    await topic.spread(10)
    async with topic.source(codec="text") as first:
        messages = await take(aiter(first), 10)
        for message in messages[:6]:
            await message.ack()
    assert await first.committed_offsets() == {(topic.name, 0): 6}  # committed at close
    assert await topic.committed() == {0: 6}
    async with topic.source(codec="text") as second:
        again = await take(aiter(second), 4)
        for message in again:
            await message.ack()
    assert [m.value for m in again] == ["6", "7", "8", "9"]  # the unacked, delivered again
    assert await topic.committed() == {0: 10}


async def test_commits_come_every_commit_interval_while_reading(
    make_topic: Callable[..., Awaitable[Topic]],
) -> None:
    topic = await make_topic()
    await topic.spread(5)
    async with topic.source(commit_interval=0.1) as source:
        messages = await take(aiter(source), 5)
        for message in messages[:3]:
            await message.ack()

        async def committed_three() -> bool:
            return await topic.committed() == {0: 3}

        await wait_until(committed_three)  # without closing the source
        for message in messages[3:]:
            await message.ack()


@pytest.mark.parametrize("seed", [1, 2])
async def test_out_of_order_acks_never_commit_past_an_unacked_offset(
    make_topic: Callable[..., Awaitable[Topic]], seed: int
) -> None:
    """Ack a random subset, in random order, close: each partition is committed up to its
    lowest unacked offset exactly, and the next member gets exactly what lies from there."""
    rng = random.Random(seed)
    topic = await make_topic(partitions=3)
    await topic.spread(60)
    async with topic.source(batch=7) as first:
        messages = await take(aiter(first), 60)
        acked = rng.sample(messages, rng.randrange(20, 55))
        for message in acked:
            await message.ack()
    unacked = {where(m) for m in messages} - {where(m) for m in acked}
    lowest = {n: min((o for p, o in unacked if p == n), default=20) for n in range(3)}
    # (Nothing committed where the first record was not acked.)
    assert await topic.committed() == {n: offset or None for n, offset in lowest.items()}
    expected = {(n, offset) for n in range(3) for offset in range(lowest[n], 20)}
    async with topic.source(batch=7) as second:
        again = await take(aiter(second), len(expected))
        for message in again:
            await message.ack()
    assert {where(m) for m in again} == expected
    assert await topic.committed() == dict.fromkeys(range(3), 20)


async def test_a_requeued_record_comes_again_with_what_follows_it(
    make_topic: Callable[..., Awaitable[Topic]],
) -> None:
    topic = await make_topic()
    await topic.spread(6)
    async with topic.source(codec="text", batch=3) as source:
        messages = aiter(source)
        first = await take(messages, 4)  # 0..3: 3 is the first of the second fetch
        await first[0].ack()
        await first[2].ack()
        await first[1].nack()  # requeue: 1 and everything after it in the partition again
        again = await take(messages, 5)
        for message in [first[3], *again]:
            await message.ack()
    assert [m.value for m in again] == ["1", "2", "3", "4", "5"]
    assert await topic.committed() == {0: 6}


async def test_read_ahead_is_bounded_by_batch(
    make_topic: Callable[..., Awaitable[Topic]],
) -> None:
    topic = await make_topic(partitions=2)
    await topic.spread(100)
    async with topic.source(batch=5) as source:
        messages = aiter(source)
        for _ in range(40):
            (message,) = await take(messages, 1)
            assert source.buffered <= 5
            await message.ack()
        assert source.fetches >= 8  # 40 records, 5 at a time at most


async def read_and_ack(
    source: KafkaSource,
    acked: set[tuple[int, int]],
    *,
    pace: float = 0.0,
    stop: Callable[[], bool] = lambda: False,
) -> None:
    """Read and ack one message at a time, ``pace`` seconds each, until ``stop()``; note
    what was acked while its partition was still this member's (acks of a revoked one are
    ignored: the new owner reads it again)."""
    with anyio.fail_after(60):
        async for message in source:
            await anyio.sleep(pace)
            await message.ack()
            if message.partition is not None and not message.partition.revoked:
                acked.add(where(message))
            if stop():
                return


async def until(condition: Callable[[], bool], within: float = 60) -> None:
    with anyio.fail_after(within):
        while not condition():  # noqa: ASYNC110  # the broker's pace: nothing to wait on
            await anyio.sleep(0.01)


async def test_a_rebalance_mid_stream_splits_the_partitions_and_loses_nothing(
    make_topic: Callable[..., Awaitable[Topic]],
) -> None:
    topic = await make_topic(partitions=4)
    produced = set(await topic.spread(600))
    acked: set[tuple[int, int]] = set()
    async with topic.source(batch=10, commit_interval=0.2) as a, anyio.create_task_group() as tg:
        # The first member reads, at a pace that leaves it reading when the second joins.
        tg.start_soon(lambda: read_and_ack(a, acked, pace=0.02))
        await until(lambda: len(acked) >= 20)
        first_assignment = a.assignment
        assert len(first_assignment) == 4
        async with topic.source(batch=10, commit_interval=0.2) as b:
            tg.start_soon(lambda: read_and_ack(b, acked, pace=0.02))
            # The group rebalances, and the partitions are split.
            await until(lambda: len(a.assignment) == len(b.assignment) == 2)
            assert len(acked) < len(produced)  # mid-stream
            a_partitions = {p.index for p in a.assignment}
            b_partitions = {p.index for p in b.assignment}
            await until(lambda: acked >= produced)
            tg.cancel_scope.cancel()
    assert a_partitions.isdisjoint(b_partitions)
    assert a_partitions | b_partitions == set(range(4))
    # Every Partition object of the first assignment was revoked (the group takes every
    # partition back to rebalance); the first member's partitions now are new objects.
    assert all(p.revoked for p in first_assignment)
    assert all(p is not q for p in first_assignment for q in a.assignment)
    assert acked == produced  # nothing lost: every record acked by its owner of the time
    # ... and committed, never past an unacked record.
    assert await topic.committed() == dict.fromkeys(range(4), 150)


async def test_a_member_cancelled_mid_stream_leaves_its_unacked_records_to_the_other(
    make_topic: Callable[..., Awaitable[Topic]],
) -> None:
    topic = await make_topic(partitions=2)
    produced = set(await topic.spread(40))
    held: list[Message[Any]] = []
    acked: set[tuple[int, int]] = set()

    async with topic.source(batch=4) as survivor:

        async def member_that_dies(*, task_status: anyio.abc.TaskStatus[None]) -> None:
            async with topic.source(batch=4) as doomed:
                await until(lambda: len(doomed.assignment) == len(survivor.assignment) == 1)
                for message in await take(aiter(doomed), 6):  # every other one acked
                    if len(held) % 2:
                        await message.ack()
                        acked.add(where(message))
                    held.append(message)
                task_status.started()
                await anyio.sleep_forever()

        async with anyio.create_task_group() as tg:
            await tg.start(member_that_dies)
            tg.cancel_scope.cancel()  # gone, with 3 records never acked
        unacked = {where(m) for m in held} - acked
        assert len(unacked) == 3
        assert len({p for p, _ in unacked}) == 1
        # The survivor is given the dead member's partition, from its last commit on.
        await read_and_ack(survivor, acked, stop=lambda: acked >= produced)
    assert await topic.committed() == {0: 20, 1: 20}


async def test_leaving_the_block_commits_and_later_acks_raise(
    make_topic: Callable[..., Awaitable[Topic]],
) -> None:
    from rxflow.errors import SettledAfterCloseError

    topic = await make_topic()
    await topic.spread(3)
    async with topic.source() as source:
        messages = await take(aiter(source), 3)
        await messages[0].ack()
    with pytest.raises(SettledAfterCloseError):
        await messages[1].ack()
    assert await topic.committed() == {0: 1}


async def test_a_commit_never_falls_inside_records_that_made_one_output(
    make_topic: Callable[..., Awaitable[Topic]],
) -> None:
    """Records 2, 3 and 4 made one output (a window): with 3 unacked, committing 3 would
    make the next reader rebuild the window without 2; the commit stays at 2."""
    topic = await make_topic()
    await topic.spread(10)
    async with topic.source() as source:
        messages = await take(aiter(source), 10)
        source.link_many(messages[2:5])
        for message in messages[:3] + messages[4:]:
            await message.ack()
    assert await topic.committed() == {0: 2}
