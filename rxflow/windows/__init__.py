"""Windows and sessions, in processing time or (with ``timestamp=``) in event time.

Each function returns an operator for ``.pipe(...)`` / :func:`rxflow.open_pipe` that emits
:class:`rxflow.Window` records. Without ``timestamp=`` windows follow the clock of the
scheduler (inside a pipe, the loop's clock, so trio's ``MockClock`` makes them virtual).
With it, see :mod:`rxflow.windows.event_time` for the watermark and the late policies.

The rule at the end of a stream: on completion, and on a pipe's graceful ``stop()``,
every open window is emitted; on error the error is passed on at once and open windows
are discarded.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any, overload

from reactivex import abc

from rxflow._checks import check_count, check_function, check_seconds
from rxflow._typevars import TimedT
from rxflow.windows import processing
from rxflow.windows._window import Window
from rxflow.windows.event_time import LATE_POLICIES, Aligned, EventTimeWindows, LatePolicy
from rxflow.windows.processing import ProcessingTimeWindows

__all__ = [
    "EventTimeWindows",
    "LatePolicy",
    "ProcessingTimeWindows",
    "Window",
    "session",
    "sliding",
    "tumbling",
]

Seconds = float | timedelta
"""A duration: seconds, or a ``timedelta``."""

# Each function has two typed forms: without ``timestamp=`` (processing time, none of the
# event-time options) and with it (event time, none of the processing-time ones), so a
# type checker refuses what the call would refuse, and knows that only the event-time
# operator has ``late_items``.


@overload
def tumbling(
    span: Seconds,
    *,
    key: Callable[[Any], Any] | None = ...,
    max_count: int | None = ...,
    emit_empty: bool = ...,
    timestamp: None = ...,
    scheduler: abc.SchedulerBase | None = ...,
    name: str = ...,
) -> ProcessingTimeWindows: ...
@overload
def tumbling(
    span: Seconds,
    *,
    key: Callable[[TimedT], Any] | None = ...,
    timestamp: Callable[[TimedT], float],
    out_of_orderness: Seconds = ...,
    late: LatePolicy = ...,
    allowed_lateness: Seconds = ...,
    idle_timeout: Seconds | None = ...,
    scheduler: abc.SchedulerBase | None = ...,
    name: str = ...,
) -> EventTimeWindows[TimedT]: ...
def tumbling(
    span: Seconds,
    *,
    key: Callable[[Any], Any] | None = None,
    max_count: int | None = None,
    emit_empty: bool = False,
    timestamp: Callable[[Any], float] | None = None,
    out_of_orderness: Seconds = 0.0,
    late: LatePolicy = "drop",
    allowed_lateness: Seconds = 0.0,
    idle_timeout: Seconds | None = None,
    scheduler: abc.SchedulerBase | None = None,
    name: str = "tumbling",
) -> ProcessingTimeWindows | EventTimeWindows[Any]:
    """Back-to-back windows of ``span`` seconds.

    Args:
        span: the window length, in seconds (or a ``timedelta``).
        key: split each window by this function of the item (one window per key).
        max_count: processing time only: a window also closes when it holds this many.
        emit_empty: processing time only, without ``key``: emit windows with no items too.
        timestamp: the item's own time, in seconds: windows by event time, aligned on
            multiples of ``span``, closed by the watermark.
        out_of_orderness: event time only: how far behind the largest timestamp seen an
            item may be and still count as on time (see :mod:`rxflow.windows.event_time`).
        late: event time only: what to do with a late item, ``"drop"``, ``"side"`` or
            ``"update"``.
        allowed_lateness: event time only, with ``late="update"``: how long after a
            window closed a late item still updates it.
        idle_timeout: event time only: seconds without items after which event time
            passes with processing time, so windows still close (``None``: never).
        scheduler: the clock and timers (default: the subscription's; a pipe's
            ``AnyioScheduler`` inside :func:`rxflow.open_pipe`).
        name: the stage's name (in metrics, and the name of its state in a checkpointed
            flow: two windows of one flow need different names, and the name must stay
            the same across restarts for the state to be restored).

    Example:
        >>> import reactivex
        >>> from rxflow import tumbling
        >>> clicks = [{"t": 0.5}, {"t": 1.2}, {"t": 1.9}, {"t": 3.1}]
        >>> _ = reactivex.from_iterable(clicks).pipe(
        ...     tumbling(1.0, timestamp=lambda c: c["t"])
        ... ).subscribe(lambda w: print(w.start, w.end, len(w)))
        0.0 1.0 1
        1.0 2.0 2
        3.0 4.0 1
    """
    where = "tumbling()"
    seconds = check_seconds(where, "span", span)
    max_count = check_count(where, "max_count", max_count, optional=True)
    key = check_function(where, "key", key, "of the item", optional=True)
    if timestamp is None:
        _refuse_without_timestamp(where, out_of_orderness, late, allowed_lateness, idle_timeout)
        return processing.buffered_windows(
            seconds, None, max_count, key, emit_empty, scheduler, name
        )
    _refuse_for_event_time(where, max_count=max_count, emit_empty=emit_empty)
    return _event_time(
        where, Aligned(seconds, seconds), None, None, timestamp, key, out_of_orderness, late,
        allowed_lateness, idle_timeout, scheduler, name,
    )  # fmt: skip


@overload
def sliding(
    span: Seconds,
    every: Seconds,
    *,
    key: Callable[[Any], Any] | None = ...,
    emit_empty: bool = ...,
    timestamp: None = ...,
    scheduler: abc.SchedulerBase | None = ...,
    name: str = ...,
) -> ProcessingTimeWindows: ...
@overload
def sliding(
    span: Seconds,
    every: Seconds,
    *,
    key: Callable[[TimedT], Any] | None = ...,
    timestamp: Callable[[TimedT], float],
    out_of_orderness: Seconds = ...,
    late: LatePolicy = ...,
    allowed_lateness: Seconds = ...,
    idle_timeout: Seconds | None = ...,
    scheduler: abc.SchedulerBase | None = ...,
    name: str = ...,
) -> EventTimeWindows[TimedT]: ...


def sliding(
    span: Seconds,
    every: Seconds,
    *,
    key: Callable[[Any], Any] | None = None,
    emit_empty: bool = False,
    timestamp: Callable[[Any], float] | None = None,
    out_of_orderness: Seconds = 0.0,
    late: LatePolicy = "drop",
    allowed_lateness: Seconds = 0.0,
    idle_timeout: Seconds | None = None,
    scheduler: abc.SchedulerBase | None = None,
    name: str = "sliding",
) -> ProcessingTimeWindows | EventTimeWindows[Any]:
    """Windows of ``span`` seconds, one starting every ``every`` seconds (they overlap, so
    an item is in ``span / every`` windows). Arguments as for :func:`tumbling`.

    Example:
        >>> import reactivex
        >>> from rxflow import sliding
        >>> _ = reactivex.of(0.5, 1.5, 2.5).pipe(
        ...     sliding(2.0, 1.0, timestamp=float)
        ... ).subscribe(lambda w: print(w.start, w.end, w.items))
        -1.0 1.0 (0.5,)
        0.0 2.0 (0.5, 1.5)
        1.0 3.0 (1.5, 2.5)
        2.0 4.0 (2.5,)
    """
    where = "sliding()"
    length = check_seconds(where, "span", span)
    step = check_seconds(where, "every", every)
    if step > length:
        raise ValueError(
            f"{where}: every={step} is longer than span={length}, so items between windows "
            "would belong to none; use tumbling(span) for windows back to back"
        )
    key = check_function(where, "key", key, "of the item", optional=True)
    if timestamp is None:
        _refuse_without_timestamp(where, out_of_orderness, late, allowed_lateness, idle_timeout)
        return processing.buffered_windows(length, step, None, key, emit_empty, scheduler, name)
    _refuse_for_event_time(where, emit_empty=emit_empty)
    return _event_time(
        where, Aligned(length, step), None, None, timestamp, key, out_of_orderness, late,
        allowed_lateness, idle_timeout, scheduler, name,
    )  # fmt: skip


@overload
def session(
    key: Callable[[Any], Any],
    gap: Seconds,
    *,
    max_duration: Seconds | None = ...,
    timestamp: None = ...,
    scheduler: abc.SchedulerBase | None = ...,
    name: str = ...,
) -> ProcessingTimeWindows: ...
@overload
def session(
    key: Callable[[TimedT], Any],
    gap: Seconds,
    *,
    max_duration: Seconds | None = ...,
    timestamp: Callable[[TimedT], float],
    out_of_orderness: Seconds = ...,
    late: LatePolicy = ...,
    allowed_lateness: Seconds = ...,
    idle_timeout: Seconds | None = ...,
    scheduler: abc.SchedulerBase | None = ...,
    name: str = ...,
) -> EventTimeWindows[TimedT]: ...


def session(
    key: Callable[[Any], Any],
    gap: Seconds,
    *,
    max_duration: Seconds | None = None,
    timestamp: Callable[[Any], float] | None = None,
    out_of_orderness: Seconds = 0.0,
    late: LatePolicy = "drop",
    allowed_lateness: Seconds = 0.0,
    idle_timeout: Seconds | None = None,
    scheduler: abc.SchedulerBase | None = None,
    name: str = "session",
) -> ProcessingTimeWindows | EventTimeWindows[Any]:
    """One window per burst of activity of each key: a key's session closes after ``gap``
    seconds without items (or once it spans ``max_duration``), is emitted, and is
    forgotten, so keys that go idle free their memory.

    In event time a session is ``[first timestamp, last timestamp + gap)``, and an item
    that falls between two sessions of its key merges them.

    Example:
        >>> import reactivex
        >>> from rxflow import session
        >>> clicks = [("ann", 0), ("bob", 1), ("ann", 2), ("ann", 9)]
        >>> _ = reactivex.from_iterable(clicks).pipe(
        ...     session(lambda c: c[0], 5.0, timestamp=lambda c: c[1])
        ... ).subscribe(lambda w: print(w.key, w.start, w.end, len(w)))
        bob 1 6.0 1
        ann 0 7.0 2
        ann 9 14.0 1
    """
    where = "session()"
    key = check_function(where, "key", key, "of the item")
    quiet = check_seconds(where, "gap", gap)
    longest = check_seconds(where, "max_duration", max_duration, optional=True)
    if longest is not None and longest < quiet:
        raise ValueError(f"{where}: max_duration={longest} is shorter than gap={quiet}")
    if timestamp is None:
        _refuse_without_timestamp(where, out_of_orderness, late, allowed_lateness, idle_timeout)
        return processing.sessions(key, quiet, longest, scheduler, name)
    return _event_time(
        where, None, quiet, longest, timestamp, key, out_of_orderness, late,
        allowed_lateness, idle_timeout, scheduler, name,
    )  # fmt: skip


def _refuse_without_timestamp(
    where: str,
    out_of_orderness: object,
    late: object,
    allowed_lateness: object,
    idle_timeout: object,
) -> None:
    """Event-time options given without ``timestamp=`` would be ignored: say so instead."""
    given = {
        "out_of_orderness": not _is_zero(out_of_orderness),
        "late": late != "drop",
        "allowed_lateness": not _is_zero(allowed_lateness),
        "idle_timeout": idle_timeout is not None,
    }
    for option, is_given in given.items():
        if is_given:
            raise ValueError(
                f"{where}: {option}= is for event-time windows: pass timestamp= too (a "
                "function giving each item's own time, in seconds), or leave it out"
            )


def _is_zero(duration: object) -> bool:
    if isinstance(duration, timedelta):
        return not duration
    return isinstance(duration, int | float) and duration == 0


def _refuse_for_event_time(where: str, **options: Any) -> None:
    for option, value in options.items():
        if value:
            raise ValueError(
                f"{where}: {option}= is for processing-time windows, not with timestamp="
            )


def _event_time(
    where: str,
    aligned: Aligned | None,
    gap: float | None,
    max_duration: float | None,
    timestamp: Callable[[Any], float],
    key: Callable[[Any], Any] | None,
    out_of_orderness: Seconds,
    late: LatePolicy,
    allowed_lateness: Seconds,
    idle_timeout: Seconds | None,
    scheduler: abc.SchedulerBase | None,
    name: str,
) -> EventTimeWindows[Any]:
    timestamp = check_function(where, "timestamp", timestamp, "of the item, giving seconds")
    if late not in LATE_POLICIES:
        raise ValueError(f"{where}: late must be one of {LATE_POLICIES}, got {late!r}")
    lateness = check_seconds(where, "allowed_lateness", allowed_lateness, allow_zero=True)
    if lateness and late != "update":
        raise ValueError(f"{where}: allowed_lateness= only matters with late='update'")
    return EventTimeWindows(
        timestamp=timestamp,
        key=key,
        aligned=aligned,
        gap=gap,
        max_duration=max_duration,
        out_of_orderness=check_seconds(
            where, "out_of_orderness", out_of_orderness, allow_zero=True
        ),
        allowed_lateness=lateness,
        idle_timeout=check_seconds(where, "idle_timeout", idle_timeout, optional=True),
        late=late,
        scheduler=scheduler,
        name=name,
    )
