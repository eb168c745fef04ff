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
a partitioned source, whose records are all read again from an older position (a Kafka
consumer group's committed offset lags its acknowledgements by up to ``commit_interval``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from rxflow import Flow, FlowHandle
from rxflow.connectors import Message, Settlement
from rxflow.partitions import Partition
from rxflow.state import MemoryStore
from rxflow.state._operators import Keyed, aggregate
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


class _ReadAgain:
    """Partition 0 of ``orders``: 10 orders of one customer, read from offset 0. Before
    offset 5 it waits for ``pause`` (the test's: until a checkpoint is stored), so that
    two checkpoints cover the records: 0-4, then 5-9 (at the end)."""

    partitioned = True

    def __init__(self, pause: Any = None) -> None:
        self.partition = Partition("orders", 0)
        self.pause = pause

    async def __aiter__(self) -> AsyncIterator[Message[dict[str, Any]]]:
        for offset in range(10):
            if offset == 5 and self.pause is not None:
                await self.pause()
            yield Message(
                {"customer": "ann", "amount": 1},
                partition=self.partition,
                offset=offset,
                settlement=Settlement(("orders", 0, offset)),
            )


def _totals_flow(source: _ReadAgain, written: list[Keyed[str, int]]) -> Flow:
    totals = aggregate(
        lambda m: m.value["customer"], lambda t, m: t + m.value["amount"], int, name="totals"
    )
    return Flow("totals").source(source, name="orders").pipe(totals).sink(written.append)


@pytest.mark.anyio
async def test_records_an_earlier_checkpoint_covered_are_not_counted_again() -> None:
    # A worker stored two checkpoints and acknowledged their records, but was killed
    # before the consumer group's offset was committed (kafka_source commits acknowledged
    # offsets every commit_interval seconds, on a timer of its own): the partition's next
    # owner reads all ten records again, with the state that holds all ten.
    store = MemoryStore()
    handle: FlowHandle | None = None

    async def until_a_checkpoint() -> None:
        # Acks follow the checkpoint that covers them.
        await wait_until(lambda: handle is not None and handle.acknowledged >= 5)

    first: list[Keyed[str, int]] = []
    flow = _totals_flow(_ReadAgain(until_a_checkpoint), first).checkpoint(store, every=0.01)
    handle = flow.prepare()
    with anyio.fail_after(10):
        await handle.run()
    assert [update.value for update in first] == list(range(1, 11))
    again: list[Keyed[str, int]] = []
    await _totals_flow(_ReadAgain(), again).checkpoint(store).run()
    # Every record read again is covered by a stored checkpoint: none may count again.
    assert [update.value for update in again] == []
