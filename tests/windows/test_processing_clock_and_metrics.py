"""Processing-time windows: their bounds are wall-clock times, and they report metrics
(received items, emitted windows, items held) like the event-time operators do."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import anyio
import pytest
import trio
import trio.testing

from rxflow import Flow, Window, open_pipe, session, sliding, tumbling
from rxflow.windows import ProcessingTimeWindows


async def timed(events: list[tuple[float, Any]]) -> AsyncIterator[Any]:
    """Yield each value at its (virtual) time, measured from the first pull."""
    start = anyio.current_time()
    for at, value in events:
        await anyio.sleep(max(0.0, start + at - anyio.current_time()))
        yield value


@pytest.mark.trio
async def test_bounds_are_seconds_since_the_epoch(autojump_clock: trio.testing.MockClock) -> None:
    before = time.time()
    async with open_pipe(timed([(0.5, "a"), (1.5, "b")]), tumbling(1.0)) as pipe:
        windows = [window async for window in pipe]
    after = time.time()
    # The first window opened when the pipe subscribed, in real time between the two
    # readings (to the 1/1024 s the wall clock is read to; the loop's clock, virtual
    # here, would give a small number instead).
    assert before - 0.001 <= windows[0].start <= after + 0.001
    assert datetime.fromtimestamp(windows[0].start, UTC).year >= 2024
    # Widths and gaps are the loop's (virtual) seconds, exactly, whatever the wall clock did.
    assert windows[0].duration == 1.0
    assert windows[1].start == windows[0].end
    assert windows[1].end - windows[0].start == 1.5


@pytest.mark.trio
async def test_session_bounds_are_wall_clock_too(autojump_clock: trio.testing.MockClock) -> None:
    before = time.time()
    operator = session(lambda e: e[0], 2.0)
    async with open_pipe(timed([(0.0, ("ann", 1)), (1.0, ("ann", 2))]), operator) as pipe:
        [window] = [window async for window in pipe]
    assert before - 0.001 <= window.start <= time.time() + 0.001
    assert window.duration == 1.0  # flushed when the source ended


@pytest.mark.parametrize(
    "make",
    [lambda: tumbling(60.0), lambda: sliding(60.0, 30.0), lambda: session(lambda n: n % 2, 60.0)],
    ids=["tumbling", "sliding", "session"],
)
@pytest.mark.anyio
async def test_a_flow_snapshot_shows_the_window_stage(
    make: Callable[[], ProcessingTimeWindows],
) -> None:
    operator = make()
    written: list[Window[int]] = []

    async def save(window: Window[int]) -> None:
        written.append(window)

    flow = Flow("windows").source(range(6)).pipe(operator).sink(save)
    snapshot = await flow.run()
    name = operator.metrics.name
    assert name in snapshot.names()
    stage = snapshot[name]
    assert stage.kind == "window"
    assert stage.received == 6
    assert stage.emitted == len(written) >= 1
    assert stage.backlog == 0  # every window was flushed at the end


def test_each_operator_is_named_for_its_metrics() -> None:
    assert tumbling(1.0).metrics.name == "tumbling"
    assert sliding(2.0, 1.0, name="recent").metrics.name == "recent"
    assert session(len, 1.0).metrics.name == "session"


@pytest.mark.trio
async def test_backlog_is_the_items_held_in_open_windows(
    autojump_clock: trio.testing.MockClock,
) -> None:
    operator = tumbling(1.0)
    backlog: list[tuple[Any, int]] = []
    events = [(0.1, "a"), (0.2, "b"), (1.5, "c")]
    async with open_pipe(timed(events), operator) as pipe:
        async for window in pipe:
            backlog.append((window.items, operator.metrics.snapshot().backlog))
    # At 1.0 the first window left with a and b; c, alone in the open window, is flushed
    # at the end.
    assert backlog == [(("a", "b"), 0), (("c",), 0)]
    assert operator.state_size() == 0
    assert operator.metrics.snapshot().emitted == 2


@pytest.mark.trio
async def test_sliding_backlog_counts_each_item_once_until_its_last_window(
    autojump_clock: trio.testing.MockClock,
) -> None:
    operator = sliding(2.0, 1.0)
    seen: list[tuple[tuple[Any, ...], int]] = []
    events = [(0.5, "a"), (1.5, "b"), (2.5, "c"), (3.9, "end")]
    async with open_pipe(timed(events), operator, max_buffer_size=0) as pipe:
        async for window in pipe:
            seen.append((window.items, operator.state_size()))
    # When [0, 2) closes at 2.0, b is still in [1, 3), a in nothing: 1 held. When [1, 3)
    # closes at 3.0, c is still in [2, 4): 1 held. The end flushes the rest.
    assert seen[:2] == [(("a", "b"), 1), (("b", "c"), 1)]
    assert operator.state_size() == 0


@pytest.mark.trio
async def test_backlog_while_a_window_is_open(autojump_clock: trio.testing.MockClock) -> None:
    operator = session(lambda e: e, 5.0)
    events = [(0.0, "x"), (0.1, "y"), (0.2, "x"), (20.0, "z")]
    async with open_pipe(timed(events), operator) as pipe:
        await trio.sleep(1.0)  # three items in, both sessions open
        assert operator.metrics.snapshot().backlog == 3
        assert operator.metrics.snapshot().received == 3
        windows = [window async for window in pipe]
    assert sorted(len(window) for window in windows) == [1, 1, 2]
    assert operator.metrics.snapshot().backlog == 0
