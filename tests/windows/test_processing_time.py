"""Processing-time windows: on trio's MockClock through open_pipe, and on Rx's TestScheduler."""

from __future__ import annotations

import types
from collections.abc import AsyncIterator
from typing import Any

import anyio
import attrs
import pytest
import trio
import trio.testing
from reactivex import operators as ops
from reactivex.testing import ReactiveTest, TestScheduler

from rxflow import Window, open_pipe, session, sliding, tumbling
from rxflow.windows import processing

on_next, on_completed, on_error = (
    ReactiveTest.on_next,
    ReactiveTest.on_completed,
    ReactiveTest.on_error,
)


async def timed(events: list[tuple[float, Any]]) -> AsyncIterator[Any]:
    """Yield each value at its (virtual) time, measured from the first pull."""
    start = anyio.current_time()
    for at, value in events:
        await anyio.sleep(max(0.0, start + at - anyio.current_time()))
        yield value


# Window bounds are wall-clock times read once per subscription; these tests fix that
# reading, so that bounds are WALL plus the virtual time since the pipe opened.
WALL = 1_000_000.0


@pytest.fixture(autouse=True)
def fixed_wall_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(processing, "time", types.SimpleNamespace(time=lambda: WALL))


async def collect(source: Any, *operators: Any) -> list[tuple[float, Window]]:
    """(time since start, window) for every window the pipe emits, with the windows'
    bounds measured from the start too."""
    start = anyio.current_time()

    def since_start(window: Window) -> Window:
        return attrs.evolve(
            window, start=round(window.start - WALL, 6), end=round(window.end - WALL, 6)
        )

    async with open_pipe(source, *operators) as pipe:
        return [
            (round(anyio.current_time() - start, 6), since_start(window)) async for window in pipe
        ]


def shape(results: list[tuple[float, Window]]) -> list[tuple[float, Any, tuple[Any, ...]]]:
    return [(at, window.key, window.items) for at, window in results]


@pytest.mark.trio
async def test_tumbling_windows_close_every_span(autojump_clock: trio.testing.MockClock) -> None:
    events = [(0.5, "a"), (1.5, "b"), (1.7, "c"), (3.2, "d")]
    results = await collect(timed(events), tumbling(1.0))
    # [2, 3) is empty, so not emitted; the last window is flushed when the source
    # completes at 3.2.
    assert shape(results) == [(1.0, None, ("a",)), (2.0, None, ("b", "c")), (3.2, None, ("d",))]
    assert [(w.start, w.end) for _, w in results] == [(0.0, 1.0), (1.0, 2.0), (3.0, 3.2)]


@pytest.mark.trio
async def test_tumbling_can_emit_empty_windows(autojump_clock: trio.testing.MockClock) -> None:
    results = await collect(timed([(0.5, "a"), (2.5, "b")]), tumbling(1.0, emit_empty=True))
    assert [window.items for _, window in results] == [("a",), (), ("b",)]


@pytest.mark.trio
async def test_max_count_closes_a_window_early(autojump_clock: trio.testing.MockClock) -> None:
    events = [(0.1, 1), (0.2, 2), (0.3, 3), (0.4, 4), (0.5, 5)]
    results = await collect(timed(events), tumbling(10.0, max_count=2))
    assert [w.items for _, w in results] == [(1, 2), (3, 4), (5,)]
    assert [at for at, _ in results] == [0.2, 0.4, 0.5]
    # The next window opens when a full one closes.
    assert [(w.start, w.end) for _, w in results] == [(0.0, 0.2), (0.2, 0.4), (0.4, 0.5)]


@pytest.mark.trio
async def test_keyed_tumbling_splits_each_window_by_key(
    autojump_clock: trio.testing.MockClock,
) -> None:
    events = [(0.1, ("ann", 1)), (0.2, ("bob", 2)), (0.3, ("ann", 3)), (1.5, ("bob", 4))]
    results = await collect(timed(events), tumbling(1.0, key=lambda e: e[0]))
    assert shape(results) == [
        (1.0, "ann", (("ann", 1), ("ann", 3))),
        (1.0, "bob", (("bob", 2),)),
        (1.5, "bob", (("bob", 4),)),
    ]


@pytest.mark.trio
async def test_sliding_windows_overlap(autojump_clock: trio.testing.MockClock) -> None:
    events = [(0.5, "a"), (1.5, "b"), (2.5, "c")]
    results = await collect(timed(events), sliding(2.0, 1.0))
    # Windows open at 0, 1 and 2; the source completes at 2.5, which flushes the last two.
    assert [(at, w.start, w.items) for at, w in results] == [
        (2.0, 0.0, ("a", "b")),
        (2.5, 1.0, ("b", "c")),
        (2.5, 2.0, ("c",)),
    ]


@pytest.mark.trio
async def test_sessions_close_after_the_gap_per_key(autojump_clock: trio.testing.MockClock) -> None:
    events = [
        (0.0, ("ann", 1)), (1.0, ("bob", 1)), (2.0, ("ann", 2)),
        (10.0, ("ann", 3)), (11.0, ("ann", 4)),
    ]  # fmt: skip
    results = await collect(timed(events), session(lambda e: e[0], 3.0))
    assert shape(results) == [
        (4.0, "bob", (("bob", 1),)),
        (5.0, "ann", (("ann", 1), ("ann", 2))),
        (11.0, "ann", (("ann", 3), ("ann", 4))),  # flushed when the source completes
    ]
    # A session runs from its first item to gap after its last.
    assert [(w.start, w.end) for _, w in results] == [(1.0, 4.0), (0.0, 5.0), (10.0, 11.0)]


@pytest.mark.trio
async def test_sessions_close_at_max_duration(autojump_clock: trio.testing.MockClock) -> None:
    events = [(t + 0.3, ("ann", t)) for t in range(10)]  # never quiet for the gap
    results = await collect(timed(events), session(lambda e: e[0], 2.0, max_duration=3.5))
    assert [len(w) for _, w in results] == [4, 4, 2]
    assert [at for at, _ in results] == [3.8, 7.8, 9.3]


@pytest.mark.trio
async def test_stop_flushes_the_open_windows(autojump_clock: trio.testing.MockClock) -> None:
    async def endless() -> AsyncIterator[int]:
        n = 0
        while True:
            await trio.sleep(0.3)
            yield n
            n += 1

    windows = []
    async with open_pipe(endless(), tumbling(1.0)) as pipe:
        async for window in pipe:
            windows.append(window.items)
            if len(windows) == 2:
                await trio.sleep(0.5)
                pipe.stop()
    # Stopped at 2.5: the window open since 2.0 is flushed, not lost.
    assert windows == [(0, 1, 2), (3, 4, 5), (6, 7)]


@pytest.mark.trio
async def test_idle_keys_free_their_sessions(autojump_clock: trio.testing.MockClock) -> None:
    events = [(i * 0.001, (f"user{i}", i)) for i in range(1000)]
    operator = session(lambda e: e[0], 1.0)
    async with open_pipe(timed([*events, (5.0, ("late", 0))]), operator) as pipe:
        first = [await pipe.receive() for _ in range(1000)]
        assert {w.key for w in first} == {f"user{i}" for i in range(1000)}
        rest = [w async for w in pipe]
    assert [w.key for w in rest] == ["late"]


def test_on_test_scheduler_windows_follow_virtual_ticks() -> None:
    scheduler = TestScheduler()
    source = scheduler.create_hot_observable(
        on_next(210, 1), on_next(240, 2), on_next(320, 3), on_completed(390)
    )
    results = scheduler.start(
        lambda: source.pipe(tumbling(100, scheduler=scheduler), ops.map(lambda w: w.items))
    )
    # On reactivex's TestScheduler a relative time of 1.0 is one tick; windows open at
    # subscription (tick 200), so they close at 300 and at completion (390).
    assert [m.value.value for m in results.messages if m.value.kind == "N"] == [(1, 2), (3,)]


def test_bad_arguments_are_refused_at_build_time() -> None:
    with pytest.raises(ValueError, match="span must be more than 0"):
        tumbling(0)
    with pytest.raises(TypeError, match="span must be seconds"):
        tumbling("1s")  # type: ignore[call-overload]
    with pytest.raises(ValueError, match=r"every=3\.0 is longer than span=2\.0"):
        sliding(2, 3)
    with pytest.raises(ValueError, match="max_count must be an int of 1 or more"):
        tumbling(1, max_count=0)
    with pytest.raises(ValueError, match=r"max_duration=1\.0 is shorter than gap=2\.0"):
        session(len, 2, max_duration=1)
    with pytest.raises(TypeError, match="key must be a function"):
        session("user", 2)  # type: ignore[call-overload]
