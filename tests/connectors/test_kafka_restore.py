"""Keyed state over Kafka restored by a partition's next owner (examples/keyed_totals_kafka.py):
a running total per customer (``aggregate``) in a checkpointed Flow whose state is kept in a
``KafkaChangelogStore``; worker processes in one consumer group over a topic of 6
partitions, one killed with SIGKILL after it stored a checkpoint and committed an offset.

What must hold, whoever processed what: every update any worker wrote is a prefix of its
customer's orders in order (count, sum and last order id), so no order was counted twice
or skipped in anything that surfaced; and each customer's last update is its final
total, as one process reading every partition computes it. Updates written again after the
kill (the killed worker's work after its last stored checkpoint) are allowed and counted.

The last test states the same rule without Kafka, in one process: a checkpointed flow over
a partitioned source whose acks take effect only when flushed (Kafka's offset commits),
killed while the commit of its first checkpoint's acks is in flight and after its second
checkpoint was stored: the next run reads every record again, and counts none twice.
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from rxflow import Flow
from rxflow.connectors import Message, Settlement
from rxflow.partitions import Partition
from rxflow.state import Keyed, MemoryStore, aggregate
from tests.connectors.conftest import require_service
from tests.connectors.support import load_example, wait_until

BACKENDS = ("asyncio", "trio")  # worker n runs BACKENDS[n % 2]


def _problems(report: Any) -> str:
    example = load_example("keyed_totals_kafka")
    return (
        f"{len(report.wrong)} updates are no prefix of their customer's orders (an order "
        f"counted twice or skipped), {len(report.not_final)} customers did not end at their "
        f"final total; worker {report.killed} was killed holding partitions "
        f"{list(report.killed_held)}\n{example.explain(report)}"
    )


def _summary(what: str, report: Any) -> str:
    return (
        f"\n{what}: {report.orders} orders of {report.customers} customers, "
        f"{report.updates} updates in {report.seconds:.1f} s, per worker "
        f"{list(report.per_worker)}; killed worker {report.killed} held "
        f"{list(report.killed_held)}; updates written again after the kill: "
        f"{report.rewritten_after_kill}; customers carried on from the changelog: "
        f"{report.continued} ({report.continued_of_killed} of the killed worker's partitions)"
    )


@pytest.mark.anyio
async def test_a_killed_workers_partitions_go_on_from_their_changelog(
    anyio_backend: str, tmp_path: Path
) -> None:
    host, port = require_service("kafka")
    example = load_example("keyed_totals_kafka")
    victim = BACKENDS.index(anyio_backend)  # the killed worker runs this test's backend
    report = await example.keyed_totals(
        bootstrap=f"{host}:{port}",
        log_dir=tmp_path,
        workers=3,
        orders=3000,
        customers=60,
        kill=victim,
        backends=BACKENDS,
    )
    print(_summary(f"{anyio_backend} victim", report))
    assert report.killed == victim
    assert report.killed_held  # it held partitions when it was killed
    assert report.per_worker[victim] > 0  # and had written updates
    assert len(report.per_worker) == 4  # one worker was added
    assert report.wrong == (), _problems(report)
    assert report.not_final == (), _problems(report)
    # The killed worker's partitions went on from restored counts, not from zero: their
    # records below the committed offsets were never read again.
    assert report.continued_of_killed > 0


@pytest.mark.anyio
async def test_a_worker_killed_and_started_again_goes_on_from_its_changelog(
    anyio_backend: str, tmp_path: Path
) -> None:
    host, port = require_service("kafka")
    example = load_example("keyed_totals_kafka")
    # One worker of this test's backend, killed; the next runs on the other backend.
    backends = (anyio_backend, *(b for b in BACKENDS if b != anyio_backend))
    report = await example.keyed_totals(
        bootstrap=f"{host}:{port}",
        log_dir=tmp_path,
        workers=1,
        orders=1500,
        customers=30,
        kill=0,
        backends=backends,
    )
    print(_summary(f"{anyio_backend} then {backends[1]}", report))
    assert report.killed == 0
    assert sorted(report.killed_held) == list(range(example.PARTITIONS))
    assert len(report.per_worker) == 2
    assert all(report.per_worker)  # both wrote updates
    assert report.wrong == (), _problems(report)
    assert report.not_final == (), _problems(report)
    assert report.continued > 0  # the second worker went on from restored counts


# -- the same rule in one process, without Kafka -------------------------------------------


class _Group:
    """A consumer group's view of partition 0 of ``orders``: acknowledged offsets take
    effect (the committed offset moves) only when flushed, as kafka_source's commits.
    ``hang`` makes a flush never finish: the process dies before its commit lands."""

    def __init__(self) -> None:
        self.acked: set[int] = set()
        self.committed = 0
        self.hang = False

    async def ack_many(self, messages: Any) -> None:
        self.acked.update(message.offset for message in messages)

    async def flush_acks(self) -> None:
        if self.hang:
            await anyio.sleep_forever()
        while self.committed in self.acked:
            self.committed += 1


class _Acked(Settlement):
    def __init__(self, group: _Group, offset: int) -> None:
        super().__init__(("orders", 0, offset))
        self.group = group

    @property
    def batch_acker(self) -> _Group:
        return self.group


class _Partition0:
    """Partition 0 of ``orders``: 10 orders of one customer, read from the committed
    offset. With ``pause``, it waits for it before offset 5, and after offset 9 waits for
    ever (a live topic)."""

    partitioned = True

    def __init__(self, group: _Group, pause: Any = None) -> None:
        self.partition = Partition("orders", 0)
        self.group, self.pause = group, pause

    async def __aiter__(self) -> AsyncIterator[Message[dict[str, Any]]]:
        for offset in range(self.group.committed, 10):
            if offset == 5 and self.pause is not None:
                await self.pause()
            yield Message(
                {"customer": "ann", "amount": 1},
                partition=self.partition,
                offset=offset,
                settlement=_Acked(self.group, offset),
            )
        if self.pause is not None:
            await anyio.sleep_forever()


def _totals_flow(source: _Partition0, written: list[Keyed[str, int]]) -> Flow:
    totals = aggregate(
        lambda m: m.value["customer"], lambda t, m: t + m.value["amount"], int, name="totals"
    )
    return Flow("totals").source(source, name="orders").pipe(totals).sink(written.append)


@pytest.mark.anyio
async def test_records_an_earlier_checkpoint_covered_are_not_counted_again() -> None:
    # A worker stored two checkpoints, the first covering offsets 0-4 and the second 5-9,
    # and died before the group's committed offset moved past any of them (the commit of
    # the first checkpoint's acks was still in flight): the partition's next owner reads
    # all ten records again, with the state that holds all ten.
    store, group = MemoryStore(), _Group()
    group.hang = True

    async def after_a_checkpoint() -> None:
        await wait_until(lambda: store.commits >= 1)

    first: list[Keyed[str, int]] = []
    flow = _totals_flow(_Partition0(group, after_a_checkpoint), first)
    handle = flow.checkpoint(store, every=0.01).prepare()
    async with anyio.create_task_group() as tg:
        tg.start_soon(handle.run)
        await wait_until(lambda: store.commits >= 2)  # the second covers offsets 5-9
        # SIGKILL: what the store holds now is all the next owner gets (an abort still
        # runs code: a checkpoint that was about to start can be stored after it).
        stored = copy.deepcopy(store)
        handle.abort()
    assert [update.value for update in first] == list(range(1, 11))
    assert group.committed == 0  # the hung commit never landed
    group.hang = False
    again: list[Keyed[str, int]] = []
    await _totals_flow(_Partition0(group), again).checkpoint(stored).run()
    # Every record read again is covered by a stored checkpoint: none may count again.
    assert [update.value for update in again] == []
    assert group.committed == 10  # and they were acknowledged
