"""map_async: bounded concurrency reaching the source, order, cancellation, error strategies."""

from __future__ import annotations

import itertools
import logging
from typing import Any

import anyio
import pytest
import reactivex
import trio
import trio.testing
from support import TrackedSource, running_tasks

from rxflow import DeadLetter, Failure, Retry, Skip, map_async, open_pipe
from rxflow.errors import NoTaskGroupError


class Probe:
    """An async function that records how many calls run at once."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.running = 0
        self.most_running = 0

    async def __call__(self, item: int) -> int:
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            await anyio.sleep(self.delay)
            return item * 10
        finally:
            self.running -= 1


@pytest.mark.anyio
@pytest.mark.parametrize("concurrency", [1, 3, 8])
async def test_at_most_concurrency_calls_run_and_the_source_is_held(concurrency: int) -> None:
    probe = Probe()
    source = TrackedSource()  # endless
    async with open_pipe(
        source, map_async(probe, concurrency=concurrency), max_buffer_size=2
    ) as pipe:
        for expected in range(0, 300, 10):
            assert await pipe.receive() == expected
            held = source.pulled - pipe.stats().delivered
            assert held <= concurrency + 2 + 1  # in hand + the pipe's buffer + one in transit
    assert probe.most_running == concurrency
    assert source.closed


@pytest.mark.trio
async def test_ordered_results_keep_input_order_unordered_ones_arrive_as_they_finish(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def slow_first(n: int) -> int:
        await trio.sleep(3 - n)
        return n

    async with open_pipe([0, 1, 2], map_async(slow_first, concurrency=3)) as pipe:
        assert [x async for x in pipe] == [0, 1, 2]
    started = trio.current_time()
    async with open_pipe([0, 1, 2], map_async(slow_first, concurrency=3, ordered=False)) as pipe:
        arrivals = [(x, trio.current_time() - started) async for x in pipe]
    assert arrivals == [(2, 1.0), (1, 2.0), (0, 3.0)]


@pytest.mark.anyio
async def test_leaving_the_pipe_cancels_the_calls_in_flight() -> None:
    cancelled: list[int] = []

    async def forever(n: int) -> int:
        try:
            await anyio.sleep_forever()
        finally:
            cancelled.append(n)
        return n

    tasks_before = running_tasks()
    async with open_pipe(range(10), map_async(forever, concurrency=4)):
        for _ in range(5):
            await anyio.lowlevel.checkpoint()
    assert sorted(cancelled) == [0, 1, 2, 3]
    assert running_tasks() == tasks_before


@pytest.mark.anyio
async def test_plain_functions_are_called_too() -> None:
    async with open_pipe(range(4), map_async(lambda n: -n, concurrency=2)) as pipe:
        assert [x async for x in pipe] == [0, -1, -2, -3]


@pytest.mark.anyio
async def test_fail_fast_ends_the_pipe_with_the_item_named() -> None:
    async def parse(text: str) -> int:
        return int(text)

    received = []
    with pytest.raises(ValueError, match="invalid literal") as caught:
        async with open_pipe(["1", "2", "x", "4"], map_async(parse)) as pipe:
            async for item in pipe:
                received.append(item)
    assert received == [1, 2]
    assert "rxflow: stage 'parse' failed on item 'x'" in caught.value.__notes__


@pytest.mark.anyio
async def test_skip_counts_and_logs_the_failed_item(caplog: pytest.LogCaptureFixture) -> None:
    stage = map_async(int, on_error=Skip(), name="parse")
    with caplog.at_level(logging.WARNING, logger="rxflow"):
        async with open_pipe(["1", "x", "3"], stage) as pipe:
            assert [x async for x in pipe] == [1, 3]
    snapshot = stage.metrics.snapshot()
    assert (snapshot.received, snapshot.emitted, snapshot.errors, snapshot.skipped) == (3, 2, 1, 1)
    assert "parse skipped 'x'" in caplog.text


@pytest.mark.anyio
async def test_dead_letters_carry_the_item_and_the_exception() -> None:
    dead: list[Failure] = []
    async with open_pipe(
        ["1", "x", "3", "y"], map_async(int, on_error=DeadLetter(dead.append))
    ) as pipe:
        assert [x async for x in pipe] == [1, 3]
    assert [(f.item, type(f.error), f.stage, f.attempts) for f in dead] == [
        ("x", ValueError, "int", 1),
        ("y", ValueError, "int", 1),
    ]


@pytest.mark.trio
async def test_retry_waits_with_exponential_backoff_in_virtual_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    attempts: list[float] = []
    start = trio.current_time()

    async def flaky(n: int) -> int:
        attempts.append(trio.current_time() - start)
        if len(attempts) < 4:
            raise ConnectionError("try again")
        return n

    stage = map_async(flaky, on_error=Retry(attempts=5, base=0.5, cap=1.5, jitter=0))
    async with open_pipe([7], stage) as pipe:
        assert [x async for x in pipe] == [7]
    assert attempts == [0.0, 0.5, 1.5, 3.0]  # waits 0.5, 1.0, then capped at 1.5
    snapshot = stage.metrics.snapshot()
    assert (snapshot.errors, snapshot.retries, snapshot.emitted) == (3, 3, 1)


@pytest.mark.trio
async def test_jittered_waits_stay_within_the_backoff(
    autojump_clock: trio.testing.MockClock,
) -> None:
    attempts: list[float] = []

    async def always_fails(n: int) -> int:
        attempts.append(trio.current_time())
        raise TimeoutError("down")

    dead: list[Failure] = []
    retry = Retry(attempts=6, base=1.0, cap=4.0, jitter=0.5, then=DeadLetter(dead.append))
    async with open_pipe([1], map_async(always_fails, on_error=retry)) as pipe:
        assert [x async for x in pipe] == []
    waits = [later - earlier for earlier, later in itertools.pairwise(attempts)]
    for attempt, wait in enumerate(waits, start=1):
        backoff = min(4.0, 2.0 ** (attempt - 1))
        assert backoff / 2 <= wait <= backoff
    assert dead[0].attempts == 6


@pytest.mark.anyio
async def test_only_the_listed_exceptions_are_retried() -> None:
    calls = 0

    async def broken(n: int) -> int:
        nonlocal calls
        calls += 1
        raise KeyError(n)

    with pytest.raises(KeyError):
        async with open_pipe([1], map_async(broken, on_error=Retry(on=(ConnectionError,)))) as pipe:
            await pipe.receive()
    assert calls == 1


@pytest.mark.anyio
async def test_outside_a_pipe_without_a_scheduler_it_says_what_it_needs() -> None:
    errors: list[Exception] = []
    reactivex.of(1).pipe(map_async(abs)).subscribe(on_error=errors.append)
    assert isinstance(errors[0], NoTaskGroupError)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"concurrency": 0}, ValueError),
        ({"concurrency": 1.5}, TypeError),  # the wrong type, as for every rxflow count
        ({"on_error": "skip"}, TypeError),
    ],
)
def test_bad_arguments_are_refused(kwargs: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error, match="map_async"):
        map_async(abs, **kwargs)


def test_retry_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="attempts must be an int of 1 or more"):
        Retry(attempts=0)
    with pytest.raises(ValueError, match="base <= cap"):
        Retry(base=2, cap=1)


def test_a_stage_is_equal_only_to_itself_and_hashable() -> None:
    async def lookup(item: int) -> int:
        return item

    first, second = map_async(lookup, concurrency=2), map_async(lookup, concurrency=2)
    assert first != second  # the same arguments, still two stages
    assert len({first, second}) == 2
    assert (first.function, first.concurrency, first.ordered) == (lookup, 2, True)
    assert first.metrics is not second.metrics  # each stage counts its own calls
