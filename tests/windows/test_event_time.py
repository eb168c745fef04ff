"""Event-time windows: watermark, out-of-order items, late policies, merging, idleness."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
import reactivex
import trio
import trio.testing
from reactivex.subject import Subject

from rxflow import Window, open_pipe, session, sliding, tumbling
from rxflow.windows import EventTimeWindows


def run(events: list[Any], operator: Any) -> list[Window]:
    """Push ``events`` through ``operator`` synchronously; the windows it emitted."""
    windows: list[Window] = []
    reactivex.from_iterable(events).pipe(operator).subscribe(windows.append)
    return windows


def at(t: float, key: str = "k") -> tuple[str, float]:
    return (key, t)


def ts(event: tuple[str, float]) -> float:
    return event[1]


def summary(windows: list[Window]) -> list[tuple[Any, float, float, list[float], bool]]:
    return [(w.key, w.start, w.end, [ts(e) for e in w.items], w.update) for w in windows]


def test_out_of_order_items_within_the_allowance_land_in_their_windows() -> None:
    events = [at(1), at(12), at(3), at(15), at(25), at(31)]
    windows = run(events, tumbling(10, timestamp=ts, out_of_orderness=10))
    assert summary(windows) == [
        (None, 0.0, 10.0, [1, 3], False),  # closed by the watermark 25 - 10 = 15
        (None, 10.0, 20.0, [12, 15], False),  # closed at 31 - 10 = 21
        (None, 20.0, 30.0, [25], False),  # flushed at completion
        (None, 30.0, 40.0, [31], False),
    ]


def test_late_items_are_dropped_and_counted() -> None:
    operator = tumbling(10, timestamp=ts)
    windows = run([at(1), at(12), at(3), at(4), at(15)], operator)
    assert summary(windows) == [(None, 0.0, 10.0, [1], False), (None, 10.0, 20.0, [12, 15], False)]
    assert isinstance(operator, EventTimeWindows)
    assert operator.late_dropped == 2
    assert operator.metrics.snapshot().dropped == 2


def test_late_items_can_go_to_a_side_output() -> None:
    operator = tumbling(10, timestamp=ts, late="side")
    assert isinstance(operator, EventTimeWindows)
    late: list[Any] = []
    operator.late_items.subscribe(late.append)
    windows = run([at(1), at(12), at(3), at(15)], operator)
    assert late == [at(3)]
    assert [len(w) for w in windows] == [1, 2]
    assert operator.late_dropped == 0


def test_late_items_can_update_a_recently_closed_window() -> None:
    operator = tumbling(10, timestamp=ts, late="update", allowed_lateness=10)
    events = [at(1), at(12), at(3), at(22), at(4), at(33), at(5)]
    windows = run(events, operator)
    assert summary(windows) == [
        (None, 0.0, 10.0, [1], False),  # closed at watermark 12
        (None, 0.0, 10.0, [1, 3], True),  # 3 arrives while the window is kept (12 < 10 + 10)
        (None, 10.0, 20.0, [12], False),  # closed at watermark 22, which forgets [0, 10)
        (None, 20.0, 30.0, [22], False),
        (None, 30.0, 40.0, [33], False),
    ]
    assert operator.late_dropped == 2  # 4 and 5 came after [0, 10) was forgotten


def test_keyed_sliding_windows_by_event_time() -> None:
    events = [at(1, "a"), at(2, "b"), at(6, "a"), at(11, "a")]
    windows = run(events, sliding(10, 5, key=lambda e: e[0], timestamp=ts))
    assert summary(windows) == [
        ("a", -5.0, 5.0, [1], False),
        ("b", -5.0, 5.0, [2], False),
        ("a", 0.0, 10.0, [1, 6], False),
        ("b", 0.0, 10.0, [2], False),
        ("a", 5.0, 15.0, [6, 11], False),
        ("a", 10.0, 20.0, [11], False),
    ]


def test_an_item_between_two_sessions_merges_them() -> None:
    events = [at(0), at(10), at(5), at(40)]
    windows = run(events, session(lambda e: e[0], 6, timestamp=ts, out_of_orderness=20))
    assert summary(windows) == [("k", 0, 16.0, [0, 10, 5], False), ("k", 40, 46.0, [40], False)]


def test_sessions_are_per_key_and_cut_at_max_duration() -> None:
    events = [at(t, "a") for t in (0, 2, 4, 6, 8)] + [at(1, "b")]
    windows = run(
        events, session(lambda e: e[0], 3, timestamp=ts, max_duration=6, out_of_orderness=10)
    )
    # A session of "a" would span more than 6 seconds with the next item, so it starts anew.
    assert sorted(summary(windows)) == [
        ("a", 0, 5.0, [0, 2], False),
        ("a", 4, 9.0, [4, 6], False),
        ("a", 8, 11.0, [8], False),
        ("b", 1, 4.0, [1], False),
    ]


def test_a_timestamp_that_is_not_a_number_names_the_item() -> None:
    errors: list[Exception] = []
    windows: list[Window] = []
    reactivex.of(at(1), ("k", "noon")).pipe(tumbling(10, timestamp=ts)).subscribe(
        windows.append, errors.append
    )
    assert windows == []  # the open window is discarded: the error ends the stream
    assert isinstance(errors[0], TypeError)
    assert "returned 'noon' for item ('k', 'noon')" in str(errors[0])


def test_an_upstream_error_passes_at_once_and_discards_open_windows() -> None:
    subject: Subject[tuple[str, float]] = Subject()
    operator = tumbling(10, timestamp=ts)
    windows: list[Window] = []
    errors: list[Exception] = []
    subject.pipe(operator).subscribe(windows.append, errors.append)
    subject.on_next(at(1))
    subject.on_next(at(15))  # closes [0, 10)
    assert isinstance(operator, EventTimeWindows)
    assert operator.state_size() == 1
    subject.on_error(ConnectionError("gone"))
    assert [len(w) for w in windows] == [1]
    assert isinstance(errors[0], ConnectionError)
    assert operator.state_size() == 0


def test_state_is_freed_when_windows_close() -> None:
    subject: Subject[tuple[str, float]] = Subject()
    operator = session(lambda e: e[0], 1, timestamp=ts)
    assert isinstance(operator, EventTimeWindows)
    subject.pipe(operator).subscribe()
    for n in range(1000):
        subject.on_next(at(0.0, f"user{n}"))
    assert operator.state_size() == 1000
    subject.on_next(at(100.0, "someone"))  # the watermark passes every session
    assert operator.state_size() == 1


async def timed(events: list[tuple[float, Any]]) -> AsyncIterator[Any]:
    start = anyio.current_time()
    for when, value in events:
        await anyio.sleep(max(0.0, start + when - anyio.current_time()))
        yield value


@pytest.mark.trio
async def test_idle_timeout_closes_windows_while_the_source_is_quiet(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def quiet_after_two() -> AsyncIterator[tuple[str, float]]:
        yield at(1)
        yield at(3)
        await trio.sleep_forever()

    start = trio.current_time()
    operator = tumbling(5, timestamp=ts, idle_timeout=10)
    async with open_pipe(quiet_after_two(), operator) as pipe:
        window = await pipe.receive()
        # Quiet since t=0: after 10 s the watermark is taken to have moved on by 10 s too
        # (3 + 10 = 13), which closes [0, 5).
        assert trio.current_time() - start == pytest.approx(10.0)
    assert summary([window]) == [(None, 0.0, 5.0, [1, 3], False)]


@pytest.mark.trio
async def test_stop_flushes_event_time_windows(autojump_clock: trio.testing.MockClock) -> None:
    events = [(0.1 * n, at(float(n))) for n in range(100)]
    async with open_pipe(timed(events), tumbling(30, timestamp=ts)) as pipe:
        first = await pipe.receive()
        pipe.stop()
        rest = [w async for w in pipe]
    assert summary([first]) == [(None, 0.0, 30.0, [float(n) for n in range(30)], False)]
    # Item 30 closed the first window; stopped then, its own window is flushed, not lost.
    assert summary(rest) == [(None, 30.0, 60.0, [30.0], False)]


def test_bad_event_time_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="late must be one of"):
        tumbling(1, timestamp=ts, late="ignore")  # type: ignore[call-overload]
    with pytest.raises(ValueError, match="only matters with late='update'"):
        tumbling(1, timestamp=ts, allowed_lateness=5)
    with pytest.raises(ValueError, match="emit_empty= is for processing-time windows"):
        tumbling(1, timestamp=ts, emit_empty=True)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="timestamp must be a function"):
        tumbling(1, timestamp="t")  # type: ignore[call-overload]
    with pytest.raises(ValueError, match="out_of_orderness must be 0 or more"):
        sliding(2, 1, timestamp=ts, out_of_orderness=-1)


@pytest.mark.parametrize(
    "operator",
    [tumbling(10, timestamp=ts), tumbling(10.0), session(len, 5.0)],
    ids=["event-time", "processing-time", "session"],
)
def test_a_synchronous_source_stays_synchronous_on_the_callers_thread(operator: Any) -> None:
    # Regression: the operators' fallback clock (TimeoutScheduler) was passed upstream as
    # the subscription scheduler, so from_iterable pushed from a timer thread and the
    # windows arrived after subscribe() returned, now and then.
    threads: list[str] = []
    windows: list[Window] = []

    def on_window(window: Window) -> None:
        windows.append(window)
        threads.append(threading.current_thread().name)

    reactivex.from_iterable([at(1), at(2)]).pipe(operator).subscribe(on_window)
    assert len(windows) >= 1  # delivered before subscribe() returned
    assert set(threads) == {threading.current_thread().name}
