"""Sources that hand over runs (``async def next_run()``): order, the bound in items, ends."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import anyio
import anyio.lowlevel
import pytest
from reactivex import operators as ops

from rxflow import RunSource, open_pipe
from rxflow.errors import SourceNotRerunnableError

pytestmark = pytest.mark.anyio


class Batches:
    """A plain user class: hands over prepared runs, counting what it handed over."""

    def __init__(self, runs: list[list[int]], fail_after: Exception | None = None) -> None:
        self.runs = list(runs)
        self.fail_after = fail_after
        self.handed_over = 0  # items in the runs returned so far
        self.calls = 0
        self.closed = False

    async def next_run(self) -> Sequence[int]:
        await anyio.lowlevel.checkpoint()
        self.calls += 1
        if not self.runs:
            if self.fail_after is not None:
                raise self.fail_after
            raise StopAsyncIteration
        run = self.runs.pop(0)
        self.handed_over += len(run)
        return run

    async def aclose(self) -> None:
        self.closed = True


def runs_of(size: int, count: int) -> list[list[int]]:
    return [list(range(start, start + size)) for start in range(0, size * count, size)]


def test_a_plain_class_with_next_run_is_a_run_source() -> None:
    assert isinstance(Batches([]), RunSource)
    assert not isinstance([1, 2], RunSource)


async def test_runs_reach_the_consumer_in_order_through_the_operators() -> None:
    source = Batches([[1, 2, 3], [], [4], [5, 6]])
    async with open_pipe(source, ops.map(lambda n: n * 10)) as pipe:
        received = [item async for item in pipe]
        stats = pipe.stats()
    assert received == [10, 20, 30, 40, 50, 60]
    assert (stats.admitted, stats.delivered) == (6, 6)
    assert source.calls == 5  # four runs, then the end
    assert source.closed


async def test_the_bound_is_counted_in_items_not_runs() -> None:
    """Runs of 10 into a pipe bounded at 3, read slowly: never more than 3 outputs wait,
    and a new run is pulled only once the last one is in."""
    source = Batches(runs_of(10, 5))
    most_buffered = 0
    most_admitted_ahead = 0
    most_handed_over_ahead = 0
    async with open_pipe(source, max_buffer_size=3) as pipe:
        received = []
        while True:
            await anyio.lowlevel.checkpoint()  # a slow consumer: the pump runs meanwhile
            stats = pipe.stats()  # what waits before this read
            most_buffered = max(most_buffered, stats.buffered)
            most_admitted_ahead = max(most_admitted_ahead, stats.admitted - stats.delivered)
            most_handed_over_ahead = max(
                most_handed_over_ahead, source.handed_over - stats.delivered
            )
            try:
                received.append(await pipe.receive())
            except anyio.EndOfStream:
                break
    assert received == list(range(50))
    assert most_buffered == 3
    assert most_admitted_ahead == 3
    # What the pump holds of a run is at most the rest of one run.
    assert most_handed_over_ahead <= 3 + 10


async def test_with_no_buffer_a_run_is_pushed_one_item_per_waiting_read() -> None:
    source = Batches([[1, 2, 3], [4, 5]])
    async with open_pipe(source, max_buffer_size=0) as pipe:
        first = await pipe.receive()
        await anyio.lowlevel.checkpoint()
        assert pipe.stats().admitted == 1  # nothing is pushed without a reader waiting
        rest = [item async for item in pipe]
    assert [first, *rest] == [1, 2, 3, 4, 5]


async def test_a_failing_run_source_fails_the_pipe_after_the_items_before() -> None:
    source = Batches([[1, 2], [3]], fail_after=ConnectionError("broker went away"))
    received = []
    with pytest.raises(ConnectionError, match="broker went away") as caught:
        async with open_pipe(source) as pipe:
            async for item in pipe:
                received.append(item)
    assert received == [1, 2, 3]
    assert any("raised by its source" in note for note in caught.value.__notes__)
    assert source.closed


async def test_stop_mid_run_completes_the_chain_and_leaves_the_rest() -> None:
    source = Batches(runs_of(10, 3))
    async with open_pipe(source, ops.to_list(), max_buffer_size=0) as pipe:
        await anyio.lowlevel.checkpoint()
        pipe.stop()
        (collected,) = [batch async for batch in pipe]
    assert collected == list(range(len(collected)))
    assert len(collected) < 30
    assert source.closed


async def test_next_run_is_preferred_over_item_by_item_iteration() -> None:
    class Both(Batches):
        def __aiter__(self) -> AsyncIterator[int]:
            return self

        async def __anext__(self) -> int:
            raise AssertionError("read item by item although it offers runs")

    async with open_pipe(Both([[1, 2], [3]])) as pipe:
        assert [item async for item in pipe] == [1, 2, 3]


async def test_a_factory_of_run_sources_is_read_again_by_repeat() -> None:
    made: list[Batches] = []

    def make() -> Batches:
        made.append(Batches([[1, 2]]))
        return made[-1]

    async with open_pipe(make, ops.repeat(2)) as pipe:
        assert [item async for item in pipe] == [1, 2, 1, 2]
    assert len(made) == 2
    assert all(source.closed for source in made)


async def test_a_run_source_that_is_read_once_refuses_a_second_run() -> None:
    with pytest.raises(SourceNotRerunnableError):
        async with open_pipe(Batches([[1]]), ops.repeat(2)) as pipe:
            async for _ in pipe:
                pass
