"""Reading a pipe in batches: ``Pipe.receive_batch()`` and ``Pipe.batches()``.

The same items in the same order as ``async for``, the bound still counted in items, the
error after the items before it, and nothing left running when the reader leaves.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import anyio
import pytest
import reactivex
import trio
from reactivex import operators as ops
from support import TrackedSource, running_tasks

from rxflow import Pipe, open_pipe

pytestmark = pytest.mark.anyio


class Runs:
    """A run source: hands over ``runs`` one per ``next_run()``; ``closed`` once closed."""

    def __init__(self, runs: list[list[int]]) -> None:
        self._runs = iter(runs)
        self.closed = False

    async def next_run(self) -> Sequence[int]:
        for run in self._runs:
            return run
        raise StopAsyncIteration

    async def aclose(self) -> None:
        self.closed = True


def sources() -> dict[str, Any]:
    """Fresh sources of 0..999 of each kind a pipe pumps (an async generator, a plain
    iterable, runs of uneven sizes)."""
    sizes = [1, 7, 0, 256, 3, 300, 433]
    runs, start = [], 0
    for size in sizes:
        runs.append(list(range(start, start + size)))
        start += size
    return {"async": TrackedSource(1000), "sync": range(1000), "runs": Runs(runs)}


def chain() -> tuple[Any, ...]:
    return (
        ops.map(lambda n: n * 3),
        ops.filter(lambda n: n % 2 == 0),
        ops.scan(lambda a, n: a + n, 0),
    )


async def slow() -> None:
    for _ in range(3):
        await anyio.lowlevel.checkpoint()


# -- the same items, in order ------------------------------------------------------------


@pytest.mark.parametrize("kind", ["async", "sync", "runs"])
@pytest.mark.parametrize("max_buffer_size", [0, 1, 7, 128])
@pytest.mark.parametrize("max_items", [None, 1, 5, 1000])
async def test_batches_deliver_the_items_of_async_for_in_order(
    kind: str, max_buffer_size: int, max_items: int | None
) -> None:
    async with open_pipe(sources()[kind], *chain(), max_buffer_size=max_buffer_size) as pipe:
        expected = [item async for item in pipe]
    batches: list[list[int]] = []
    async with open_pipe(sources()[kind], *chain(), max_buffer_size=max_buffer_size) as pipe:
        async for batch in pipe.batches(max_items=max_items):
            batches.append(batch)
            if len(batches) % 3 == 0:
                await slow()  # let the pump get ahead, so that batches fill up
        stats = pipe.stats()
    assert [item for batch in batches for item in batch] == expected
    assert all(batch for batch in batches)  # a batch is never empty
    assert all(len(batch) <= (max_items or len(expected)) for batch in batches)
    assert len(expected) == 500
    # More than one item at a time whenever the buffer and the limit allow it.
    assert max(map(len, batches)) == min(max_items or 1000, max(max_buffer_size, 1))
    assert stats.delivered == len(expected)


async def test_receive_batch_takes_what_is_buffered_up_to_max_items() -> None:
    async with open_pipe(range(10), max_buffer_size=6) as pipe:
        await slow()  # the pump fills the buffer and waits
        assert pipe.stats().buffered == 6
        assert await pipe.receive_batch(max_items=4) == [0, 1, 2, 3]
        assert await pipe.receive_batch() == [4, 5]  # every buffered item, no more
        await slow()
        assert await pipe.receive() == 6  # one at a time goes on where batches left off
        assert await pipe.receive_batch(max_items=100) == [7, 8, 9]
        with pytest.raises(anyio.EndOfStream):
            await pipe.receive_batch()


async def test_async_for_goes_on_where_batches_left_off() -> None:
    async with open_pipe(range(100), max_buffer_size=8) as pipe:
        async for batch in pipe.batches(max_items=3):
            assert batch == [0, 1, 2]
            break
        rest = [item async for item in pipe]
    assert rest == list(range(3, 100))


async def test_a_pushed_source_is_read_in_batches_under_its_overflow_policy() -> None:
    subject: reactivex.subject.Subject[int] = reactivex.subject.Subject()
    async with open_pipe(subject, max_buffer_size=3, overflow="drop_oldest") as pipe:
        for n in range(5):
            subject.on_next(n)
        assert await pipe.receive_batch() == [2, 3, 4]
        subject.on_next(5)
        subject.on_completed()
        assert [batch async for batch in pipe.batches()] == [[5]]
        assert pipe.stats().dropped == 2


# -- the bound, in items ------------------------------------------------------------------


class WatchedSource:
    """``range`` as an async iterable that records, at each pull, how many items it had
    handed out that the pipe's consumer had not received (``pipe`` is set once open)."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.pipe: Pipe[int] | None = None
        self.most_outstanding = 0
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[int]:
        try:
            for n in range(self.count):
                if self.pipe is not None:
                    outstanding = n + 1 - self.pipe.stats().delivered  # with the one pulled now
                    self.most_outstanding = max(self.most_outstanding, outstanding)
                yield n
        finally:
            self.closed = True


@pytest.mark.parametrize("max_buffer_size", [1, 4, 32])
@pytest.mark.parametrize("max_items", [None, 2, 100])
async def test_a_slow_batch_reader_holds_the_source_to_the_bound_in_items(
    max_buffer_size: int, max_items: int | None
) -> None:
    source = WatchedSource(2_000)
    received = 0
    async with open_pipe(source, ops.map(lambda n: n + 1), max_buffer_size=max_buffer_size) as pipe:
        source.pipe = pipe
        async for batch in pipe.batches(max_items=max_items):
            received += len(batch)
            await slow()
    assert received == 2_000
    # Never more pulled and not yet received than the bound, the item being pulled
    # included; and the bound was reached, so the check saw the pump at its limit.
    assert source.most_outstanding == max_buffer_size


async def test_taking_a_batch_frees_its_room_at_once() -> None:
    source = TrackedSource()  # endless
    async with open_pipe(source, max_buffer_size=16) as pipe:
        await slow()
        assert (source.pulled, pipe.stats().buffered) == (16, 16)  # full: the pump waits
        assert len(await pipe.receive_batch(max_items=7)) == 7
        await slow()
        assert source.pulled == 16  # 9 left: more than half the buffer, the pump still waits
        assert len(await pipe.receive_batch(max_items=2)) == 2
        await slow()
        # 7 left: the pump was woken and refilled the room both batches freed
        assert (source.pulled, pipe.stats().buffered) == (25, 16)
        assert len(await pipe.receive_batch()) == 16
        assert pipe.stats().buffered == 0
        await slow()
        assert (source.pulled, pipe.stats().buffered) == (41, 16)


async def test_with_buffer_size_zero_a_batch_reader_pulls_only_on_demand() -> None:
    source = TrackedSource()
    async with open_pipe(source, max_buffer_size=0) as pipe:
        for expected in range(20):
            assert await pipe.receive_batch() == [expected]
            await slow()
            assert source.pulled == expected + 1


# -- errors and the end -------------------------------------------------------------------


async def failing_after(count: int) -> AsyncIterator[int]:
    for n in range(count):
        yield n
    raise ConnectionResetError("peer went away")


async def test_batches_deliver_the_items_before_an_error_then_raise_it() -> None:
    received: list[int] = []
    with pytest.raises(ConnectionResetError, match="peer went away") as caught:
        async with open_pipe(failing_after(300), max_buffer_size=64) as pipe:
            async for batch in pipe.batches(max_items=50):
                received.extend(batch)
    assert received == list(range(300))
    assert any("raised by its source" in note for note in caught.value.__notes__)


async def test_receive_batch_raises_the_error_once_after_the_items_then_the_end() -> None:
    async with open_pipe([1, 2, 0, 3], ops.map(lambda n: 6 // n)) as pipe:
        await slow()  # everything up to the error is buffered, the error recorded
        assert await pipe.receive_batch() == [6, 3]
        with pytest.raises(ZeroDivisionError):
            await pipe.receive_batch()
        with pytest.raises(anyio.EndOfStream):
            await pipe.receive_batch()
        assert [batch async for batch in pipe.batches()] == []


async def test_after_completion_batches_end_at_once() -> None:
    async with open_pipe([1, 2, 3]) as pipe:
        assert [batch async for batch in pipe.batches()] == [[1, 2, 3]]
        assert [batch async for batch in pipe.batches()] == []
        with pytest.raises(anyio.EndOfStream):
            await pipe.receive_batch()


@pytest.mark.parametrize("bad", [0, -3, True, 2.5, "8"])
async def test_a_bad_max_items_is_refused_with_advice(bad: Any) -> None:
    async with open_pipe(range(3)) as pipe:
        with pytest.raises((TypeError, ValueError), match="max_items must be"):
            await pipe.receive_batch(max_items=bad)
        with pytest.raises((TypeError, ValueError), match="max_items must be"):
            pipe.batches(max_items=bad)
        assert await pipe.receive_batch() == [0, 1, 2]  # the pipe is unharmed


# -- leaving, cancellation ----------------------------------------------------------------


async def test_leaving_early_closes_the_pipe_and_its_source() -> None:
    source = TrackedSource()  # endless
    disposed: list[str] = []
    tasks_before = running_tasks()
    async with open_pipe(
        source, ops.finally_action(lambda: disposed.append("chain")), ops.delay(0.0)
    ) as pipe:
        async for batch in pipe.batches():
            if batch[-1] >= 500:
                break
    assert disposed == ["chain"]
    assert source.closed
    assert running_tasks() == tasks_before
    with pytest.raises(anyio.ClosedResourceError):
        await pipe.receive_batch()
    with pytest.raises(anyio.ClosedResourceError):
        async for _ in pipe.batches():
            pass


async def test_a_reader_waiting_in_receive_batch_is_cancellable_and_leaks_nothing() -> None:
    source = TrackedSource(delay=3600.0)  # nothing comes for an hour
    tasks_before = running_tasks()

    async def read() -> None:
        async with open_pipe(source) as pipe:
            await pipe.receive_batch()

    async with anyio.create_task_group() as tg:
        tg.start_soon(read)
        await slow()
        assert running_tasks() > tasks_before  # the reader waits, the pump waits on the source
        tg.cancel_scope.cancel()
    assert source.closed
    assert running_tasks() == tasks_before


async def test_cancelling_a_batch_reader_mid_stream_leaves_nothing_running() -> None:
    source = TrackedSource()
    tasks_before = running_tasks()
    received = 0
    with anyio.CancelScope() as scope:
        async with open_pipe(source, ops.map(lambda n: n), max_buffer_size=8) as pipe:
            async for batch in pipe.batches():
                received += len(batch)
                if received >= 100:
                    scope.cancel()
                await slow()
    assert scope.cancelled_caught
    assert source.closed
    assert running_tasks() == tasks_before


# -- in virtual time ----------------------------------------------------------------------


def virtual_time() -> Any:
    """Run a test on trio only, in virtual time (the clock jumps whenever all tasks wait)."""
    return pytest.mark.parametrize(
        "anyio_backend", [("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)})]
    )


@virtual_time()
async def test_a_batch_holds_what_arrived_by_the_time_it_is_read() -> None:
    """Items arrive in bursts (a at 0 s, b c at 1 s, d e f at 3 s); a reader that reads at
    0.5 s, 2 s and 2.5 s gets each burst whole, and waits for the next one when none has
    arrived."""

    async def bursts() -> AsyncIterator[str]:
        for pause, burst in ((0.0, "a"), (1.0, "bc"), (2.0, "def")):
            await anyio.sleep(pause)
            for item in burst:
                yield item

    start = trio.current_time()
    read: list[tuple[float, list[str]]] = []
    async with open_pipe(bursts()) as pipe:
        for reading_at in (0.5, 2.0, 2.5):
            await anyio.sleep(start + reading_at - trio.current_time())
            batch = await pipe.receive_batch()
            read.append((trio.current_time() - start, batch))
        rest = [batch async for batch in pipe.batches()]
    assert read == [
        (pytest.approx(0.5), ["a"]),
        (pytest.approx(2.0), ["b", "c"]),
        (pytest.approx(3.0), ["d", "e", "f"]),  # nothing at 2.5 s: it waited for the burst
    ]
    assert rest == []


@virtual_time()
async def test_windows_read_in_batches_keep_their_times() -> None:
    async def ticks() -> AsyncIterator[int]:  # at 0.25 s, 0.75 s, ... 2.75 s; ends at 3.25 s
        await anyio.sleep(0.25)
        for n in range(6):
            yield n
            await anyio.sleep(0.5)

    start = trio.current_time()
    received: list[tuple[float, list[list[int]]]] = []
    async with open_pipe(ticks(), ops.buffer_with_time(1.0)) as pipe:
        async for batch in pipe.batches():
            received.append((trio.current_time() - start, batch))
    assert received == [
        (pytest.approx(1.0), [[0, 1]]),
        (pytest.approx(2.0), [[2, 3]]),
        (pytest.approx(3.0), [[4, 5]]),
        (pytest.approx(3.25), [[]]),  # the source ended: the open window is flushed
    ]


@pytest.mark.parametrize("reading", ["items", "batches"])
async def test_a_reader_that_awaits_nothing_else_is_still_cancellable(reading: str) -> None:
    """An endless source and a loop body without an await: the read blocks whenever the
    buffer is empty, which lets another task cancel the reader (a hang fails the test)."""
    source = TrackedSource()  # endless, never awaits
    received = 0
    with anyio.fail_after(30):  # a guard against a hang, not a measure
        async with anyio.create_task_group() as tasks:
            with anyio.CancelScope() as scope:
                tasks.start_soon(_cancel_soon, scope)  # it runs only if the reader lets it
                async with open_pipe(source, max_buffer_size=16) as pipe:
                    if reading == "items":
                        async for _ in pipe:
                            received += 1
                    else:
                        async for batch in pipe.batches():
                            received += len(batch)
    assert scope.cancelled_caught
    assert received > 0
    assert source.closed


async def _cancel_soon(scope: anyio.CancelScope) -> None:
    await slow()
    scope.cancel()
