"""Keyed event-time windows scaled out by Kafka partition (examples/scale_out_kafka.py):
a topic of 6 partitions, 3 worker processes running per-user sessions and tumbling counts
in one consumer group, one killed with SIGKILL a third of the way in and one added. The
windows the workers wrote, deduplicated by (kind, key, start, end), are those of a
single-process run over the same events, and none is ever written with other contents.

Why the run is deterministic: every event is on time (its disorder is below the windows'
``out_of_orderness``, in any partition's order), so a partition's windows depend only on
its events, whichever worker reads them and from which committed offset; and one flush
event per partition, far in the future, closes every window while the workers run (a
graceful stop would flush windows that are still open, so the run ends only once every
partition's committed offset reached its flush event, when none is).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from rxflow import Flow, Window, tumbling
from rxflow.partitions import Partition
from tests.connectors.conftest import require_service
from tests.connectors.support import load_example


@pytest.mark.anyio
async def test_a_killed_worker_changes_no_window(anyio_backend: str, tmp_path: Path) -> None:
    host, port = require_service("kafka")
    example = load_example("scale_out_kafka")
    backends = ("asyncio", "trio")  # worker n runs backends[n % 2]
    victim = backends.index(anyio_backend)  # the killed worker runs this test's backend
    report = await example.scale_out(
        bootstrap=f"{host}:{port}",
        log_dir=tmp_path,
        workers=3,
        events=3000,
        users=50,
        kill=victim,
        backends=backends,
    )
    print(
        f"\n{anyio_backend} victim: {report.expected} windows expected, {report.distinct} "
        f"distinct written in {report.seconds:.1f} s, per worker {list(report.per_worker)}, "
        f"written again (identical) {report.duplicates}, records taken for redeliveries "
        f"{report.redelivered_while_held}"
    )
    assert report.killed == victim
    assert report.per_worker[victim] > 0  # it was killed midway, not before it started
    assert len(report.per_worker) == 4  # and one worker was added
    # No window is ever written with other contents, by any worker, at any time, and the
    # union is the single-process run's windows: none missing, none extra.
    problems = (
        f"{len(report.conflicts)} windows written with different contents, "
        f"{len(report.different)} with other contents than the single-process run's, "
        f"{len(report.missing)} missing, {len(report.unexpected)} unexpected; records taken "
        f"for redeliveries of held ones: {report.redelivered_while_held}\n{report.details}"
    )
    assert report.conflicts == (), problems
    assert report.different == (), problems
    assert report.missing == (), problems
    assert report.unexpected == (), problems
    assert report.distinct == report.expected > 0


class _Record:
    """A record as kafka_source hands it out: identity (topic, partition, offset)."""

    def __init__(self, partition: Partition, offset: int, t: float) -> None:
        self.partition, self.offset, self.value = partition, offset, {"t": t}
        self.identity = (partition.topic, partition.index, offset)

    async def ack(self) -> None:
        pass


class _AssignedAgain:
    """A partitioned source whose partition is revoked and then assigned again to the same
    worker (an eager rebalance often gives a member its partitions back), which reads the
    records from the committed offset again: records its dropped chain held among them."""

    partitioned = True

    def __init__(self) -> None:
        self.first, self.second = Partition("clicks", 0), Partition("clicks", 0)

    async def __aiter__(self) -> AsyncIterator[_Record]:
        for offset in range(3):
            yield _Record(self.first, offset, float(offset))  # in the open window [0, 10)
        self.first.revoke()
        for offset in range(3):
            yield _Record(self.second, offset, float(offset))  # read again: the same window
        yield _Record(self.second, 3, 100.0)  # closes [0, 10)


@pytest.mark.anyio
async def test_a_partition_assigned_again_rebuilds_its_windows() -> None:
    # The scale-out run above wrote windows with other contents when this went wrong: the
    # re-read records were taken for redeliveries of the records the revoked chain held
    # (same identity), so they were acknowledged without entering the new chain's windows.
    written: list[list[int]] = []

    def write(window: Window[Any]) -> None:
        written.append([record.offset for record in window.items])

    flow = (
        Flow("assigned again")
        .source(_AssignedAgain(), name="records")
        .pipe(tumbling(10.0, timestamp=lambda record: record.value["t"]))
        .sink(write)
    )
    handle = flow.prepare()
    await handle.run()
    assert written == [[0, 1, 2], [3]]
    assert handle.redelivered_while_held == 0
