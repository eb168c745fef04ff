"""Windows in processing time: by when items arrive, on the subscription scheduler's clock.

Tumbling and sliding windows are ``buffer_with_time`` (one timer for the whole stream,
whatever the number of keys); with ``key=``, each buffer is split into one window per key.
Sessions are ``group_by_until``: a key's group ends after ``gap`` without items (or at
``max_duration``), its items are emitted as one window, and the group is gone, so keys
that go idle cost nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import reactivex
from reactivex import Observable, abc
from reactivex import operators as ops
from reactivex.scheduler import TimeoutScheduler

from rxflow._delivery import Delivery, current_delivery
from rxflow.windows._window import Window

Operator = Callable[[Observable[Any]], Observable[Window]]


def clock_of(scheduler: abc.SchedulerBase) -> Callable[[], float]:
    """The scheduler's time in seconds: ``anyio.current_time()`` for an AnyioScheduler."""
    epoch = scheduler.to_datetime(0.0)

    def now() -> float:
        return (scheduler.now - epoch).total_seconds()

    return now


def with_scheduler(
    build: Callable[[Observable[Any], abc.SchedulerBase], Observable[Window]],
    scheduler: abc.SchedulerBase | None,
) -> Operator:
    """An operator whose chain is built at subscription, once the scheduler is known
    (the one given, else the subscription's: the pipe's AnyioScheduler in a pipe)."""

    def operator(source: Observable[Any]) -> Observable[Window]:
        def subscribe(
            observer: abc.ObserverBase[Window],
            subscription_scheduler: abc.SchedulerBase | None = None,
        ) -> abc.DisposableBase:
            chosen = scheduler or subscription_scheduler or TimeoutScheduler.singleton()
            # The chain's timers are given `chosen`; upstream keeps the subscription's own
            # scheduler, as if this operator were not there (a fallback TimeoutScheduler
            # passed down would make a synchronous source push from timer threads).
            return build(source, chosen).subscribe(observer, scheduler=subscription_scheduler)

        return reactivex.create(subscribe)

    return operator


def emit_windows(delivery: Delivery | None) -> Callable[[Observable[Any]], Observable[Window]]:
    """Emit each ``(window, tokens)`` of a list, at once and in order (no scheduling, unlike
    ``flat_map(from_iterable)``), each window carrying the claims of its items' source
    messages in a flow (``tokens``; see :mod:`rxflow._delivery`)."""

    def operator(source: Observable[list[tuple[Window, list[int | None]]]]) -> Observable[Window]:
        def subscribe(
            observer: abc.ObserverBase[Window], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            def on_next(windows: list[tuple[Window, list[int | None]]]) -> None:
                for window, tokens in windows:
                    if delivery is None:
                        observer.on_next(window)
                    else:
                        with delivery.emitting(tokens):
                            observer.on_next(window)

            return source.subscribe(
                on_next, observer.on_error, observer.on_completed, scheduler=scheduler
            )

        return reactivex.create(subscribe)

    return operator


def held(delivery: Delivery | None) -> Callable[[Observable[Any]], Observable[Any]]:
    """In a flow, pair each item with a claim on its source message, for the window that
    will hold it; elsewhere, leave items alone."""
    if delivery is None:
        return lambda source: source
    return ops.map(lambda item: (item, delivery.hold()))


def split_by_key(
    entries: list[Any],
    start: float,
    end: float,
    key: Callable[[Any], Any] | None,
    tracked: bool,
) -> list[tuple[Window, list[int | None]]]:
    """The windows of one buffer, one per key; ``tracked`` entries are (item, token)."""
    if not tracked:
        if key is None:
            return [(Window(None, start, end, tuple(entries)), [])]
        by_key: dict[Any, list[Any]] = {}
        for item in entries:
            by_key.setdefault(key(item), []).append(item)
        return [(Window(k, start, end, tuple(group)), []) for k, group in by_key.items()]
    groups: dict[Any, list[tuple[Any, int | None]]] = {}
    for entry in entries:
        groups.setdefault(key(entry[0]) if key is not None else None, []).append(entry)
    return [
        (Window(k, start, end, tuple(item for item, _ in group)), [t for _, t in group])
        for k, group in groups.items()
    ]


def buffered_windows(
    span: float,
    every: float | None,
    max_count: int | None,
    key: Callable[[Any], Any] | None,
    emit_empty: bool,
    scheduler: abc.SchedulerBase | None,
) -> Operator:
    """Tumbling (``every`` None) or sliding windows over ``buffer_with_time``."""

    def build(source: Observable[Any], chosen: abc.SchedulerBase) -> Observable[Window]:
        now = clock_of(chosen)
        opened = [now()]  # when the oldest window still open opened
        delivery = current_delivery()

        def to_windows(entries: list[Any]) -> list[tuple[Window, list[int | None]]]:
            # Windows close in the order they opened: back to back when tumbling (a full
            # window closes early with max_count), one every `every` seconds when sliding.
            end = now()
            start = opened[0]
            opened[0] = end if every is None else start + every
            if not entries:
                return [(Window(None, start, end, ()), [])] if emit_empty else []
            return split_by_key(entries, start, end, key, delivery is not None)

        source = source.pipe(held(delivery))
        if max_count is not None:
            buffers = source.pipe(ops.buffer_with_time_or_count(span, max_count, scheduler=chosen))
        else:
            buffers = source.pipe(ops.buffer_with_time(span, every, scheduler=chosen))
        return buffers.pipe(ops.map(to_windows), emit_windows(delivery))

    return with_scheduler(build, scheduler)


def sessions(
    key: Callable[[Any], Any],
    gap: float,
    max_duration: float | None,
    scheduler: abc.SchedulerBase | None,
) -> Operator:
    """Sessions per key over ``group_by_until``: a group ends after ``gap`` of silence."""

    def build(source: Observable[Any], chosen: abc.SchedulerBase) -> Observable[Window]:
        now = clock_of(chosen)
        delivery = current_delivery()
        key_of = key if delivery is None else (lambda entry: key(entry[0]))

        def until_quiet(group: Observable[Any]) -> Observable[Any]:
            quiet = group.pipe(ops.debounce(gap, scheduler=chosen))
            if max_duration is None:
                return quiet
            return reactivex.merge(quiet, reactivex.timer(max_duration, scheduler=chosen))

        def to_window(group: Any) -> Observable[list[tuple[Window, list[int | None]]]]:
            start = now()

            def close(entries: list[Any]) -> list[tuple[Window, list[int | None]]]:
                if delivery is None:
                    return [(Window(group.key, start, now(), tuple(entries)), [])]
                items = tuple(item for item, _ in entries)
                return [(Window(group.key, start, now(), items), [t for _, t in entries])]

            windows: Observable[list[tuple[Window, list[int | None]]]] = group.pipe(
                ops.to_list(), ops.map(close)
            )
            return windows

        return source.pipe(
            held(delivery),
            ops.group_by_until(key_of, None, until_quiet),
            ops.flat_map(to_window),
            emit_windows(delivery),
        )

    return with_scheduler(build, scheduler)
