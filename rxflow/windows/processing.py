"""Windows in processing time: by when items arrive, on the subscription scheduler's clock.

Tumbling and sliding windows are ``buffer_with_time`` (one timer for the whole stream,
whatever the number of keys); with ``key=``, each buffer is split into one window per key.
Sessions are ``group_by_until``: a key's group ends after ``gap`` without items (or at
``max_duration``), its items are emitted as one window, and the group is gone, so keys
that go idle cost nothing.

Timers run on the scheduler's clock (the loop's, in a pipe: virtual under trio's
``MockClock``), but a window's ``start`` and ``end`` are given as wall-clock times, which is
what a reader of them expects: the clock is read against ``time.time()`` once per
subscription, so differences between bounds stay exactly those of the scheduler's clock.

In a checkpointed :class:`rxflow.Flow` the operator keeps the items of its open windows (of
each key's open session) in the flow's state table named after the stage (``name=``; two
window stages of one flow need distinct names), and holds no acks on them: the checkpoint
covers them. Processing time means nothing after a restart (the windows' times were the
stopped process's clock), so a flow restored from a checkpoint does not rebuild the windows
that were open: it puts their items into the first window that opens (tumbling, sliding:
the window open at subscription) or into the first session of the same key (sessions: the
items restored for a key open its session at the restart, as if they had just arrived, and
the key's items in the next ``gap`` join them). So no item is lost, no window emitted before
the checkpoint is emitted again, and the windows that were open at the crash are emitted
once, as the windows of the restarted run, with their bounds on its clock. Session keys are
stored, so they must be picklable.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

import reactivex
from reactivex import Observable, abc
from reactivex import operators as ops
from reactivex.scheduler import TimeoutScheduler

from rxflow._holds import NO_HOLDS, AckHolds, Hold, current_holds
from rxflow._stage_metrics import StageMetrics
from rxflow._state import StateTable
from rxflow.windows._durable import OpenItems, OpenSessions
from rxflow.windows._stage import WindowStage
from rxflow.windows._window import Window

__all__ = ["ProcessingTimeWindows"]

T = TypeVar("T")

Build = Callable[[Observable[Any], abc.SchedulerBase, "_Run"], Observable[Window[Any]]]


def clock_of(scheduler: abc.SchedulerBase) -> Callable[[], float]:
    """The scheduler's time in seconds: ``anyio.current_time()`` for an AnyioScheduler."""
    epoch = scheduler.to_datetime(0.0)

    def now() -> float:
        return (scheduler.now - epoch).total_seconds()

    return now


def wall_clock_of(scheduler: abc.SchedulerBase) -> Callable[[], float]:
    """The scheduler's time as seconds since the epoch, anchored on ``time.time()`` now."""
    clock = clock_of(scheduler)
    # Seconds since the epoch are large floats (about 2**31), with steps of 2**-22 s. An
    # offset on a coarser grid (1/1024 s) adds to a clock reading exactly when the reading
    # is on that grid too (virtual times such as 60.0 or 0.5), so that a window's
    # duration is then exactly the clock's, 60.0 and not 59.99999976.
    offset = round((time.time() - clock()) * 1024) / 1024

    def now() -> float:
        return clock() + offset

    return now


class _Run:
    """One subscription's clock and the count of items its open windows hold."""

    __slots__ = ("arrivals", "held", "now", "table")

    def __init__(
        self, scheduler: abc.SchedulerBase, sliding: bool, table: StateTable[Any, Any] | None
    ) -> None:
        self.now = wall_clock_of(scheduler)
        self.held = 0
        # In a checkpointed flow: where the items of open windows are kept (and no holds
        # are taken on them, since the checkpoints cover them); None in memory.
        self.table = table
        # Sliding windows overlap: an item is held until the last window holding it
        # closes, which its arrival time tells (tumbling windows and sessions need none;
        # in a durable scope OpenItems knows exactly which items are held).
        self.arrivals: deque[float] | None = deque() if sliding and table is None else None

    def released(self, count: int, oldest_open: float) -> None:
        """``count`` items left with a window; the oldest window still open started at
        ``oldest_open`` (sliding windows)."""
        arrivals = self.arrivals
        if arrivals is None:
            self.held -= count
            return
        while arrivals and arrivals[0] < oldest_open:
            arrivals.popleft()
        self.held = len(arrivals)


class ProcessingTimeWindows(WindowStage[_Run]):
    """The operator that :func:`rxflow.tumbling`, :func:`rxflow.sliding` and
    :func:`rxflow.session` return without ``timestamp=``: it turns an
    ``Observable[T]`` into an ``Observable[Window[T]]``.

    Attributes:
        metrics: a :class:`rxflow.flow.metrics.StageMetrics` (kind ``"window"``): ``received``
            items, ``emitted`` windows, and as ``backlog`` the items held in open windows;
            a :class:`rxflow.Flow` shows it in its snapshots.

    Example:
        >>> import reactivex
        >>> from rxflow import tumbling
        >>> minutes = tumbling(60.0, name="per-minute")
        >>> windows = []
        >>> _ = reactivex.of(1, 2, 3).pipe(minutes).subscribe(windows.append)
        >>> [window.items for window in windows], minutes.metrics.received
        ([(1, 2, 3)], 3)
    """

    def __init__(
        self,
        build: Build,
        scheduler: abc.SchedulerBase | None,
        sliding: bool,
        name: str,
        key: Callable[[Any], Any] | None = None,
    ) -> None:
        super().__init__(name)
        self._build = build
        self._scheduler = scheduler
        self._sliding = sliding
        self.key = key

    @property
    def keyed(self) -> bool:
        """Whether windows are per key (``key=``, and every session): such windows are
        only right when one worker sees all of a key's items (a :class:`rxflow.Flow` over
        a source that shares work among workers checks it)."""
        return self.key is not None

    def __call__(self, source: Observable[T]) -> Observable[Window[T]]:
        def subscribe(
            observer: abc.ObserverBase[Window[T]],
            subscription_scheduler: abc.SchedulerBase | None = None,
        ) -> abc.DisposableBase:
            # The chain is built at subscription, once the scheduler is known: the one
            # given, else the subscription's (the pipe's AnyioScheduler in a pipe).
            chosen = self._scheduler or subscription_scheduler or TimeoutScheduler.singleton()
            run = _Run(chosen, self._sliding, self.durable_table())
            self._runs.add(run)
            windows = self._build(source, chosen, run).pipe(
                ops.finally_action(lambda: self._runs.discard(run))
            )
            # The chain's timers are given `chosen`; upstream keeps the subscription's own
            # scheduler, as if this operator were not there (a fallback TimeoutScheduler
            # passed down would make a synchronous source push from timer threads).
            return windows.subscribe(observer, scheduler=subscription_scheduler)

        return reactivex.create(subscribe)


Entry = tuple[Window[Any], list[Hold]]


class _SharedHolds:
    """Sliding windows share items, and an item's claim on its source message (one hold,
    taken when it arrived) must outlive every window it is in. Buffers close in order and
    an item is in consecutive ones, so its hold is released when the first buffer without
    it closes (or the stream completes): one window late, never early."""

    def __init__(self, holds: AckHolds) -> None:
        self.holds = holds
        self.in_last_buffer: set[Hold] = set()  # holds of the items of the last buffer

    def buffer_closed(self, windows: list[Entry]) -> list[Hold]:
        """The holds whose last window was the previous buffer's."""
        now = {hold for _, holds in windows for hold in holds}
        done = [hold for hold in self.in_last_buffer if hold not in now]
        self.in_last_buffer = now
        return done

    def finish(self) -> None:
        done, self.in_last_buffer = self.in_last_buffer, set()
        self.holds.release(done)


def emit_windows(
    holds: AckHolds, metrics: StageMetrics, *, overlapping: bool = False
) -> Callable[[Observable[list[Entry]]], Observable[Window[Any]]]:
    """Emit each ``(window, holds)`` of a list, at once and in order (no scheduling, unlike
    ``flat_map(from_iterable)``), each window carrying the claims of its items' source
    messages in a flow (see :mod:`rxflow._holds`). ``overlapping``: the lists are the
    buffers of sliding windows, which share items (:class:`_SharedHolds`)."""

    def operator(source: Observable[list[Entry]]) -> Observable[Window[Any]]:
        def subscribe(
            observer: abc.ObserverBase[Window[Any]], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            shared = _SharedHolds(holds) if overlapping else None

            def on_next(windows: list[Entry]) -> None:
                if shared is not None:
                    done = shared.buffer_closed(windows)
                    for window, held in windows:
                        metrics.emitted += 1
                        with holds.attached(held):
                            observer.on_next(window)
                    holds.release(done)  # after: the new outputs claim first
                    return
                for window, held in windows:
                    metrics.emitted += 1
                    with holds.emitting(held):
                        observer.on_next(window)

            def on_completed() -> None:
                if shared is not None:
                    shared.finish()
                observer.on_completed()

            return source.subscribe(on_next, observer.on_error, on_completed, scheduler=scheduler)

        return reactivex.create(subscribe)

    return operator


def admit(
    holds: AckHolds, run: _Run, metrics: StageMetrics
) -> Callable[[Observable[Any]], Observable[Any]]:
    """Count each item in and keep it with its hold (in a flow, a claim on its source
    message: :meth:`~rxflow._holds.AckHolds.keep`), for the window that will keep it."""

    arrivals = run.arrivals

    def operator(source: Observable[Any]) -> Observable[Any]:
        def subscribe(
            observer: abc.ObserverBase[Any], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            # Per item, so kept to a few local operations (no ops.map: its mapper call and
            # error guard cost a quarter of a tumbling window's time).
            push = observer.on_next
            now = run.now
            keep = holds.keep

            def on_next(item: Any) -> None:
                metrics.received += 1
                run.held += 1
                if arrivals is not None:
                    arrivals.append(now())
                push(keep(item))

            return source.subscribe(
                on_next, observer.on_error, observer.on_completed, scheduler=scheduler
            )

        return reactivex.create(subscribe)

    return operator


def readmit(
    run: _Run,
    metrics: StageMetrics,
    restored: list[Any],
    keep: Callable[[Any], None] | None = None,
) -> Callable[[Observable[Any]], Observable[Any]]:
    """:func:`admit` in a durable scope: count each item in and ``keep`` it where a
    checkpoint finds it (no hold is taken: the checkpoint covers it). At subscription, once
    the windows downstream are open, the items ``restored`` from the last checkpoint enter
    first (not counted as received again: the stopped run received them)."""

    def operator(source: Observable[Any]) -> Observable[Any]:
        def subscribe(
            observer: abc.ObserverBase[Any], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            push = observer.on_next

            def take(item: Any) -> None:
                run.held += 1
                if keep is not None:
                    keep(item)
                push(item)

            def on_next(item: Any) -> None:
                metrics.received += 1
                take(item)

            for item in restored:
                take(item)
            return source.subscribe(
                on_next, observer.on_error, observer.on_completed, scheduler=scheduler
            )

        return reactivex.create(subscribe)

    return operator


def durable_buffers(
    source: Observable[Any],
    run: _Run,
    table: StateTable[Any, Any],
    metrics: StageMetrics,
    windowing: Callable[[Observable[Any]], Observable[Observable[Any]]],
) -> tuple[Observable[list[Any]], Callable[[int, float], None]]:
    """``buffer_with_time`` (or ``_or_count``) in a durable scope, as ``windowing``
    (``window_with_time``...) then each window to a list, keeping in :class:`OpenItems` the
    items of the open windows; and the function that each closed buffer calls (in place of
    :meth:`_Run.released`). Windows open and close in order, so their items are those since
    the oldest open window opened: the number of items arrived is noted as each opens."""
    restored = OpenItems.restored(table)
    kept = OpenItems(table)
    opened_at: deque[int] = deque()  # per open window, oldest first

    def collect(window: Observable[Any]) -> Observable[list[Any]]:
        opened_at.append(kept.arrived)
        return window.pipe(ops.to_list())

    def released(count: int, oldest_open: float) -> None:
        opened_at.popleft()  # the window that closed
        kept.keep_from(opened_at[0] if opened_at else kept.arrived)
        run.held = len(kept)

    admitted = source.pipe(readmit(run, metrics, restored, kept.add))
    return admitted.pipe(windowing, ops.flat_map(collect)), released


def split_by_key(
    holds: AckHolds,
    entries: list[Any],
    start: float,
    end: float,
    key: Callable[[Any], Any] | None,
) -> list[Entry]:
    """The windows of one buffer of entries (:meth:`~rxflow._holds.AckHolds.keep`), one
    per key."""
    if key is None:
        return [window_of(holds, None, start, end, entries)]
    item_of = holds.item_of
    groups: dict[Any, list[Any]] = {}
    for entry in entries:
        groups.setdefault(key(item_of(entry)), []).append(entry)
    return [window_of(holds, k, start, end, group) for k, group in groups.items()]


def window_of(holds: AckHolds, key: Any, start: float, end: float, entries: list[Any]) -> Entry:
    """The window of ``entries``, with the holds on its items."""
    items, held = holds.unpack(entries)
    return Window(key, start, end, items), held


def buffered_windows(
    span: float,
    every: float | None,
    max_count: int | None,
    key: Callable[[Any], Any] | None,
    emit_empty: bool,
    scheduler: abc.SchedulerBase | None,
    name: str,
) -> ProcessingTimeWindows:
    """Tumbling (``every`` None) or sliding windows over ``buffer_with_time``."""

    def build(source: Observable[Any], chosen: abc.SchedulerBase, run: _Run) -> Observable[Any]:
        now = run.now
        opened = [now()]  # when the oldest window still open opened
        table = run.table
        holds = current_holds() if table is None else NO_HOLDS
        buffers: Observable[list[Any]]
        released: Callable[[int, float], None]
        if table is None:
            entries = source.pipe(admit(holds, run, windows.metrics))
            released = run.released
            if max_count is not None:
                buffers = entries.pipe(
                    ops.buffer_with_time_or_count(span, max_count, scheduler=chosen)
                )
            else:
                buffers = entries.pipe(ops.buffer_with_time(span, every, scheduler=chosen))
        else:
            windowing = (
                ops.window_with_time(span, every, scheduler=chosen)
                if max_count is None
                else ops.window_with_time_or_count(span, max_count, scheduler=chosen)
            )
            buffers, released = durable_buffers(source, run, table, windows.metrics, windowing)

        def to_windows(entries: list[Any]) -> list[Entry]:
            # Windows close in the order they opened: back to back when tumbling (a full
            # window closes early with max_count), one every `every` seconds when sliding.
            end = now()
            start = opened[0]
            opened[0] = end if every is None else start + every
            released(len(entries), opened[0])
            if not entries:
                return [(Window(None, start, end, ()), [])] if emit_empty else []
            return split_by_key(holds, entries, start, end, key)

        return buffers.pipe(
            ops.map(to_windows),
            emit_windows(holds, windows.metrics, overlapping=every is not None),
        )

    windows = ProcessingTimeWindows(build, scheduler, every is not None, name, key)
    return windows


def sessions(
    key: Callable[[Any], Any],
    gap: float,
    max_duration: float | None,
    scheduler: abc.SchedulerBase | None,
    name: str,
) -> ProcessingTimeWindows:
    """Sessions per key over ``group_by_until``: a group ends after ``gap`` of silence."""

    def build(source: Observable[Any], chosen: abc.SchedulerBase, run: _Run) -> Observable[Any]:
        now = run.now
        table = run.table
        holds = current_holds() if table is None else NO_HOLDS
        item_of = holds.item_of
        kept = None if table is None else OpenSessions(table)

        def key_of(entry: Any) -> Any:
            return key(item_of(entry))

        if kept is not None:
            # group_by_until asks each item's key once, as the item arrives: where a durable
            # scope notes it in its key's open session (and a key function that fails
            # reaches on_error, as it does in memory).
            def key_of(entry: Any) -> Any:
                k = key(entry)
                kept.add(k, entry)
                return k

        def until_quiet(group: Observable[Any]) -> Observable[Any]:
            quiet = group.pipe(ops.debounce(gap, scheduler=chosen))
            if max_duration is None:
                return quiet
            return reactivex.merge(quiet, reactivex.timer(max_duration, scheduler=chosen))

        def to_window(group: Any) -> Observable[list[Entry]]:
            start = now()

            def close(entries: list[Any]) -> list[Entry]:
                run.released(len(entries), 0.0)
                if kept is not None:
                    kept.closed(group.key)
                return [window_of(holds, group.key, start, now(), entries)]

            closed: Observable[list[Entry]] = group.pipe(ops.to_list(), ops.map(close))
            return closed

        admitted = (
            source.pipe(admit(holds, run, windows.metrics))
            if kept is None
            else source.pipe(readmit(run, windows.metrics, kept.restored()))
        )
        return admitted.pipe(
            ops.group_by_until(key_of, None, until_quiet),
            ops.flat_map(to_window),
            emit_windows(holds, windows.metrics),
        )

    windows = ProcessingTimeWindows(build, scheduler, False, name, key)
    return windows
