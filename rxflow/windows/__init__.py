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
from typing import Any

from reactivex import abc

from rxflow.windows import processing
from rxflow.windows._checks import optional_seconds, positive_count, seconds
from rxflow.windows._window import Window
from rxflow.windows.event_time import LATE_POLICIES, Aligned, EventTimeWindows, LatePolicy

__all__ = ["EventTimeWindows", "LatePolicy", "Window", "session", "sliding", "tumbling"]

Operator = Callable[[Any], Any]


def tumbling(
    span: float,
    *,
    key: Callable[[Any], Any] | None = None,
    max_count: int | None = None,
    emit_empty: bool = False,
    timestamp: Callable[[Any], float] | None = None,
    out_of_orderness: float = 0.0,
    late: LatePolicy = "drop",
    allowed_lateness: float = 0.0,
    idle_timeout: float | None = None,
    scheduler: abc.SchedulerBase | None = None,
    name: str = "tumbling",
) -> Operator:
    """Back-to-back windows of ``span`` seconds.

    Args:
        span: the window length, in seconds (or a ``timedelta``).
        key: split each window by this function of the item (one window per key).
        max_count: processing time only: a window also closes when it holds this many.
        emit_empty: processing time only, without ``key``: emit windows with no items too.
        timestamp: the item's own time, in seconds: windows by event time, aligned on
            multiples of ``span``, closed by the watermark.
        out_of_orderness, late, allowed_lateness, idle_timeout: event time only; see
            :mod:`rxflow.windows.event_time`.
        scheduler: the clock and timers (default: the subscription's; a pipe's
            ``AnyioScheduler`` inside :func:`rxflow.open_pipe`).
        name: the stage's name in metrics.

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
    span = seconds(span, "span", where)
    max_count = positive_count(max_count, "max_count", where)
    if timestamp is None:
        return processing.buffered_windows(span, None, max_count, key, emit_empty, scheduler)
    _refuse_for_event_time(where, max_count=max_count, emit_empty=emit_empty)
    return _event_time(
        where, Aligned(span, span), None, None, timestamp, key, out_of_orderness, late,
        allowed_lateness, idle_timeout, scheduler, name,
    )  # fmt: skip


def sliding(
    span: float,
    every: float,
    *,
    key: Callable[[Any], Any] | None = None,
    emit_empty: bool = False,
    timestamp: Callable[[Any], float] | None = None,
    out_of_orderness: float = 0.0,
    late: LatePolicy = "drop",
    allowed_lateness: float = 0.0,
    idle_timeout: float | None = None,
    scheduler: abc.SchedulerBase | None = None,
    name: str = "sliding",
) -> Operator:
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
    span = seconds(span, "span", where)
    every = seconds(every, "every", where)
    if every > span:
        raise ValueError(
            f"{where}: every={every} is longer than span={span}, so items between windows "
            "would belong to none; use tumbling(span) for windows back to back"
        )
    if timestamp is None:
        return processing.buffered_windows(span, every, None, key, emit_empty, scheduler)
    _refuse_for_event_time(where, emit_empty=emit_empty)
    return _event_time(
        where, Aligned(span, every), None, None, timestamp, key, out_of_orderness, late,
        allowed_lateness, idle_timeout, scheduler, name,
    )  # fmt: skip


def session(
    key: Callable[[Any], Any],
    gap: float,
    *,
    max_duration: float | None = None,
    timestamp: Callable[[Any], float] | None = None,
    out_of_orderness: float = 0.0,
    late: LatePolicy = "drop",
    allowed_lateness: float = 0.0,
    idle_timeout: float | None = None,
    scheduler: abc.SchedulerBase | None = None,
    name: str = "session",
) -> Operator:
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
    if not callable(key):
        raise TypeError(f"{where}: key must be a function of the item, got {key!r}")
    gap = seconds(gap, "gap", where)
    max_duration = optional_seconds(max_duration, "max_duration", where)
    if max_duration is not None and max_duration < gap:
        raise ValueError(f"{where}: max_duration={max_duration} is shorter than gap={gap}")
    if timestamp is None:
        return processing.sessions(key, gap, max_duration, scheduler)
    return _event_time(
        where, None, gap, max_duration, timestamp, key, out_of_orderness, late,
        allowed_lateness, idle_timeout, scheduler, name,
    )  # fmt: skip


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
    out_of_orderness: float,
    late: LatePolicy,
    allowed_lateness: float,
    idle_timeout: float | None,
    scheduler: abc.SchedulerBase | None,
    name: str,
) -> EventTimeWindows:
    if not callable(timestamp):
        raise TypeError(f"{where}: timestamp must be a function of the item, got {timestamp!r}")
    if late not in LATE_POLICIES:
        raise ValueError(f"{where}: late must be one of {LATE_POLICIES}, got {late!r}")
    lateness = seconds(allowed_lateness, "allowed_lateness", where, allow_zero=True)
    if lateness and late != "update":
        raise ValueError(f"{where}: allowed_lateness= only matters with late='update'")
    return EventTimeWindows(
        timestamp=timestamp,
        key=key,
        aligned=aligned,
        gap=gap,
        max_duration=max_duration,
        out_of_orderness=seconds(out_of_orderness, "out_of_orderness", where, allow_zero=True),
        allowed_lateness=lateness,
        idle_timeout=optional_seconds(idle_timeout, "idle_timeout", where),
        late=late,
        scheduler=scheduler,
        name=name,
    )
