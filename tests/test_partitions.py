"""Keyed work per partition (``rxflow.per_partition``): each partition's chain has its own
state and event time; a revoked partition's chain is dropped without emitting; a Flow over a
partitioned source does this by itself, lets the dropped messages go, and tells the source
which messages made one output."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import attrs
import pytest
import reactivex
from reactivex import operators as ops
from reactivex.testing import ReactiveTest, TestScheduler

from rxflow import Flow, Partition, open_pipe, per_partition, tumbling

on_next, on_completed = ReactiveTest.on_next, ReactiveTest.on_completed


@attrs.define(eq=False)
class Record:
    """A source message as the flow sees it: a value, a partition, an ack."""

    value: Any
    partition: Partition | None = None
    acked: bool = False

    async def ack(self) -> None:
        self.acked = True


def totals_of(records: list[Record]) -> list[Any]:
    seen: list[Any] = []
    reactivex.from_iterable(records).pipe(
        per_partition(ops.map(lambda r: r.value), ops.scan(lambda total, n: total + n))
    ).subscribe(seen.append)
    return seen


def test_each_partition_has_its_own_state() -> None:
    a, b = Partition("t", 0), Partition("t", 1)
    records = [Record(1, a), Record(10, b), Record(2, a), Record(20, b), Record(3, None)]
    assert totals_of(records) == [1, 10, 3, 30, 3]


def test_each_partition_has_its_own_event_time() -> None:
    # Partition b is far ahead in event time: merged, its records would close a's window
    # at 0-10 before a's record at t=5 came, and drop that record as late.
    a, b = Partition("t", 0), Partition("t", 1)
    records = [Record(1.0, a), Record(50.0, b), Record(5.0, a), Record(60.0, b)]
    windows: list[tuple[int, float, int]] = []
    reactivex.from_iterable(records).pipe(
        per_partition(tumbling(10.0, timestamp=lambda r: r.value))
    ).subscribe(lambda w: windows.append((w.items[0].partition.index, w.start, len(w.items))))
    assert sorted(windows) == [(0, 0.0, 2), (1, 50.0, 1), (1, 60.0, 1)]


def test_a_revoked_partition_is_dropped_without_emitting() -> None:
    scheduler = TestScheduler()
    a, b = Partition("t", 0), Partition("t", 1)
    source = scheduler.create_hot_observable(
        on_next(210, Record(1, a)),
        on_next(220, Record(2, b)),
        on_next(240, Record(3, b)),  # after a's revocation (at 230): a's chain is dropped
        on_next(250, Record(4, a)),  # a record of a revoked partition is not pushed
        on_completed(300),
    )
    scheduler.schedule_absolute(230, lambda *_: a.revoke())
    results = scheduler.start(
        lambda: source.pipe(
            per_partition(ops.map(lambda r: r.value), ops.to_list()),
        )
    )
    assert results.messages == [on_next(300, [2, 3]), on_completed(300)]


def test_a_window_due_after_the_revocation_is_not_emitted() -> None:
    scheduler = TestScheduler()
    a = Partition("t", 0)
    source = scheduler.create_hot_observable(on_next(210, Record(1, a)), on_completed(900))
    scheduler.schedule_absolute(250, lambda *_: a.revoke())
    results = scheduler.start(
        lambda: source.pipe(per_partition(ops.buffer_with_time(100, scheduler=scheduler)))
    )
    assert results.messages == [on_completed(900)]  # the window due at 300 was dropped


def test_operators_are_checked() -> None:
    with pytest.raises(TypeError, match="operator 2 is 'map', not an operator"):
        per_partition(ops.map(str), "map")  # type: ignore[arg-type]


@attrs.define
class PartitionedSource:
    """What a Flow looks for in a partitioned source that links outputs (Kafka's)."""

    records: list[Record]
    revoke_after: int | None = None  # revoke partition 0 after this many records
    partitioned: bool = True
    links_outputs: bool = True
    links: list[list[Any]] = attrs.field(factory=list)

    def link_many(self, messages: list[Record]) -> None:
        self.links.append([message.value for message in messages])

    async def __aiter__(self) -> AsyncIterator[Record]:
        for position, record in enumerate(self.records):
            if position == self.revoke_after:
                assert record.partition is not None
                self.records[0].partition.revoke()  # type: ignore[union-attr]
            yield record
            await anyio.lowlevel.checkpoint()


@pytest.mark.anyio
async def test_a_flow_runs_keyed_windows_per_partition_and_links_their_messages() -> None:
    a, b = Partition("t", 0), Partition("t", 1)
    records = [Record(t, p) for t, p in [(1.0, a), (50.0, b), (5.0, a), (60.0, b), (99.0, a)]]
    source = PartitionedSource(records)
    windows: list[tuple[float, list[float]]] = []
    flow = (
        Flow("per-partition")
        .source(source)
        .pipe(tumbling(10.0, timestamp=lambda r: r.value), ops.filter(lambda w: bool(w.items)))
        .sink(lambda w: windows.append((w.start, [r.value for r in w.items])))
    )
    await flow.run()
    # Partition b's event time did not close a's window [0, 10) before 5.0 came.
    assert sorted(windows) == [(0.0, [1.0, 5.0]), (50.0, [50.0]), (60.0, [60.0]), (90.0, [99.0])]
    assert source.links == [[1.0, 5.0]]  # the one output made of several messages
    assert all(record.acked for record in records)


@pytest.mark.anyio
async def test_a_flow_lets_go_of_what_a_revoked_partition_held() -> None:
    a, b = Partition("t", 0), Partition("t", 1)
    records = [Record(t, p) for t, p in [(1.0, a), (2.0, a), (50.0, b), (55.0, b), (70.0, b)]]
    source = PartitionedSource(records, revoke_after=3)  # a is revoked after 3 records
    windows: list[tuple[float, list[float]]] = []
    flow = (
        Flow("revoked")
        .source(source)
        .pipe(tumbling(10.0, timestamp=lambda r: r.value))
        .sink(lambda w: windows.append((w.start, [r.value for r in w.items])))
    )
    with anyio.fail_after(5):
        await flow.run()
    # a's open window [0, 10) was never emitted: its new owner builds it.
    assert sorted(windows) == [(50.0, [50.0, 55.0]), (70.0, [70.0])]
    # Nothing waits for claims that can never end: every message was let go or acked (the
    # source ignores acknowledgements of a revoked partition).
    assert all(record.acked for record in records)


def test_flush_at_end_false_drops_open_windows_without_letting_go() -> None:
    a = Partition("t", 0)
    seen: list[Any] = []
    reactivex.from_iterable([Record(1, a), Record(2, a)]).pipe(
        per_partition(ops.to_list(), flush_at_end=False)
    ).subscribe(seen.append, on_completed=lambda: seen.append("done"))
    assert seen == ["done"]  # the open "window" (to_list) was not emitted


@pytest.mark.anyio
async def test_a_chain_that_subscribes_through_the_scheduler_gets_its_first_item() -> None:
    # merge subscribes its sources through the pipe's scheduler ("now", not at once): a
    # partition's chain, subscribed while its first item is pushed, must still get that item.
    a, b = Partition("t", 0), Partition("t", 1)
    records = [Record(n, a if n % 2 else b) for n in range(6)]

    def both_ways(shared: reactivex.Observable[Record]) -> reactivex.Observable[Any]:
        return reactivex.merge(
            shared.pipe(ops.map(lambda r: r.value)), shared.pipe(ops.ignore_elements())
        )

    async with open_pipe(records, per_partition(ops.publish(both_ways))) as pipe:
        values = [value async for value in pipe]
    assert sorted(values) == list(range(6))


@pytest.mark.anyio
async def test_a_graceful_stop_drops_a_partitioned_sources_open_windows() -> None:
    a = Partition("t", 0)
    records = [Record(t, a) for t in (1.0, 2.0, 15.0)]  # 15.0 closes [0, 10); [10, 20) is open
    windows: list[list[float]] = []
    written = anyio.Event()

    def write(window: Any) -> None:
        windows.append([r.value for r in window.items])
        written.set()

    async def endless() -> AsyncIterator[Record]:
        for record in records:
            yield record
        await anyio.sleep_forever()

    class Endless(PartitionedSource):
        def __aiter__(self) -> AsyncIterator[Record]:
            return endless()

    flow = (
        Flow("stopped")
        .source(Endless(records))
        .pipe(tumbling(10.0, timestamp=lambda r: r.value))
        .sink(write)
    )
    async with anyio.create_task_group() as tg:
        handle = flow.start(tg)
        with anyio.fail_after(5):
            await written.wait()
        handle.stop()
    # [10, 20) was open at the stop: not emitted, its record not acknowledged, so the
    # partition's next reader builds it whole.
    assert windows == [[1.0, 2.0]]
    assert [record.acked for record in records] == [True, True, False]
