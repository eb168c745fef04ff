"""Joins: an interval join of two keyed streams in event time, and a lookup join of a stream
against a table kept from a changelog.

Both keep everything they must remember in tables from :func:`rxflow._state.current_state`
(taken when they are subscribed), so inside a checkpointed :class:`rxflow.Flow` they are
restored after a restart with nothing more to do; elsewhere the tables are plain dicts.

:func:`interval_join` follows Flink's interval join: a left item ``l`` and a right item
``r`` of the same key are a pair when ``l_ts + lower <= r_ts <= l_ts + upper``. The pair is
emitted when the later of the two arrives, so each pair once, whatever the order. Each side
buffers its items per key until the *watermark* passes the point where no future item of
the other side could match them. The watermark is the smaller of the two sides' largest
timestamps seen, minus ``out_of_orderness``; it never goes back. An item older than the
watermark is late: it is dropped and counted (``late_dropped``), as Flink drops it.

:func:`lookup_join` (from :mod:`rxflow.state._lookup_join`, re-exported here) enriches each
item with the latest value of its key in a table kept from a stream of table updates, as
Kafka Streams' stream-table join does.
"""

from __future__ import annotations

import bisect
import decimal
import math
import numbers
from collections.abc import Callable, Hashable
from datetime import timedelta
from typing import Any, Generic, TypeVar

import attrs
import reactivex
from reactivex import Observable, abc
from reactivex.disposable import CompositeDisposable, Disposable, SerialDisposable
from reactivex.scheduler import TimeoutScheduler

from rxflow._checks import check_function, check_name, check_seconds
from rxflow._holds import NO_HOLDS, AckHolds, current_holds
from rxflow._source_time import current_source_time
from rxflow._stage_metrics import StageMetrics
from rxflow._state import StateTable, current_state
from rxflow.scheduler import AnyioScheduler
from rxflow.state._join_buffer import Side, timestamp_of
from rxflow.state._lookup_join import (
    MISSING_POLICIES,
    Enriched,
    LookupJoin,
    MissingPolicy,
    Tombstone,
    lookup_join,
)
from rxflow.windows.processing import clock_of

__all__ = [
    "MISSING_POLICIES",
    "Enriched",
    "IntervalJoin",
    "Joined",
    "LookupJoin",
    "MissingPolicy",
    "Tombstone",
    "interval_join",
    "lookup_join",
]

L = TypeVar("L")
R = TypeVar("R")


@attrs.frozen
class Joined(Generic[L, R]):
    """A pair of items that :func:`interval_join` matched: one of each stream."""

    left: L
    right: R


# -- the interval join -----------------------------------------------------------------


class IntervalJoin(Generic[L, R]):
    """The operator that :func:`interval_join` returns (on the left stream).

    Attributes:
        late_dropped: how many items (of either side) came after the watermark had passed
            their timestamp and were dropped.
        metrics: a :class:`rxflow.flow.metrics.StageMetrics` (kind ``"join"``): items
            received from both sides, pairs emitted, late items dropped; its ``backlog`` is
            the number of items buffered now.
    """

    def __init__(
        self,
        other: Observable[R],
        *,
        key: Callable[[L], Hashable],
        timestamp: Callable[[L], float],
        other_key: Callable[[R], Hashable],
        other_timestamp: Callable[[R], float],
        lower: float,
        upper: float,
        out_of_orderness: float,
        idle_timeout: float | None,
        scheduler: abc.SchedulerBase | None,
        name: str,
    ) -> None:
        self.other = other
        self.key = key
        self.timestamp = timestamp
        self.other_key = other_key
        self.other_timestamp = other_timestamp
        self.lower = lower
        self.upper = upper
        self.out_of_orderness = out_of_orderness
        self.idle_timeout = idle_timeout
        self.scheduler = scheduler
        self.name = name
        self.late_dropped = 0
        self.metrics = StageMetrics(name, "join", backlog=self.state_size)
        self._runs: set[_IntervalRun] = set()

    @property
    def keyed(self) -> bool:
        """Always true: pairs are found per key, so one worker must see all of a key's
        items (a :class:`rxflow.Flow` over a source that shares work checks it)."""
        return True

    def state_size(self) -> int:
        """Items buffered now, over all subscriptions."""
        return sum(run.left.held + run.right.held for run in self._runs)

    def __call__(self, source: Observable[L]) -> Observable[Joined[L, R]]:
        def subscribe(
            observer: abc.ObserverBase[Joined[L, R]], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            clock = None
            if self.idle_timeout is not None:
                clock = self.scheduler or scheduler or TimeoutScheduler.singleton()
            run = _IntervalRun(self, observer, clock)
            self._runs.add(run)
            left = source.subscribe(
                run.on_left, run.on_error, run.on_left_completed, scheduler=scheduler
            )
            if run.ended:  # the left side failed at once: the right is not needed
                return CompositeDisposable(left, run.idle_timer, Disposable(run.dispose))
            right = self.other.subscribe(
                run.on_right, run.on_error, run.on_right_completed, scheduler=scheduler
            )
            return CompositeDisposable(left, right, run.idle_timer, Disposable(run.dispose))

        return reactivex.create(subscribe)


class _IntervalRun:
    """One subscription of an interval join: both sides' buffers and the watermark."""

    def __init__(
        self,
        spec: IntervalJoin[Any, Any],
        observer: abc.ObserverBase[Any],
        clock: abc.SchedulerBase | None,
    ) -> None:
        self.spec = spec
        self.observer = observer
        self.ended = False
        scope = current_state()
        name = spec.name
        # In a durable scope a checkpoint covers the buffered items, so their messages need
        # no holds (acks follow checkpoints); in memory, a held item keeps its message
        # unacknowledged until it can match nothing more.
        self.holds: AckHolds = NO_HOLDS if scope.durable else current_holds()
        self.releasing = None if self.holds is NO_HOLDS else self.holds  # skip when None
        self.time: StateTable[str, float] = scope.table(f"{name}.time", owner=spec)
        self.left = Side(
            scope.table(f"{name}.left", owner=spec),
            key=spec.key,
            timestamp=spec.timestamp,
            low=spec.lower,
            high=spec.upper,
            is_left=True,
        )
        self.right = Side(
            scope.table(f"{name}.right", owner=spec),
            key=spec.other_key,
            timestamp=spec.other_timestamp,
            low=-spec.upper,
            high=-spec.lower,
            is_left=False,
        )
        self.left.max_seen = self.time.get("left", -math.inf)
        self.right.max_seen = self.time.get("right", -math.inf)
        self.watermark: float = self.time.get("watermark", -math.inf)
        self.idle_timer = SerialDisposable()
        if clock is not None:
            self._watch_idleness(clock)

    def _watch_idleness(self, clock: abc.SchedulerBase) -> None:
        timeout = self.spec.idle_timeout
        assert timeout is not None  # a clock is given only with an idle timeout
        self.clock = clock
        # As for event-time windows: quiet counts only time in which the pipe's source was
        # free to deliver (waiting data is not late data), on the pipe's own scheduler.
        source_time = current_source_time()
        self.quiet_clock = (
            source_time.now
            if source_time is not None and isinstance(clock, AnyioScheduler)
            else clock_of(clock)
        )
        # A side that never sends goes idle too, counted from the subscription.
        self.left.last_arrival = self.right.last_arrival = self.quiet_clock()
        self._arm_idle_timer(timeout)

    def on_left(self, item: Any) -> None:
        self._on_item(self.left, self.right, item)

    def on_right(self, item: Any) -> None:
        self._on_item(self.right, self.left, item)

    def _on_item(self, side: Side, other: Side, item: Any) -> None:
        if self.ended:
            return
        spec = self.spec
        try:
            t = side.timestamp(item)
            key = side.key(item)
        except Exception as error:  # a user's function failed: the stream fails, as in map
            self.on_error(error)
            return
        kind = type(t)
        if (kind is not float and kind is not int) or t != t:  # t != t: NaN
            # Other real numbers (Fraction, Decimal, numpy floats) are timestamps too.
            real = isinstance(t, numbers.Real | decimal.Decimal) and not isinstance(t, bool)
            if not real or math.isnan(t):
                self.on_error(
                    TypeError(
                        f"{spec.name}: the {side.name} timestamp function returned {t!r} for "
                        f"item {item!r}; it must return a number (seconds, in event time)"
                    )
                )
                return
            t = float(t)
        spec.metrics.received += 1
        if spec.idle_timeout is not None:
            side.last_arrival = self.quiet_clock()
            side.idle = False  # counts again; the watermark stays where it is
            if self.idle_timer.disposable is None:
                self._arm_idle_timer(spec.idle_timeout)
        if t < self.watermark:
            spec.late_dropped += 1
            spec.metrics.dropped += 1
            return
        bucket = other.table.get(key)
        if bucket:
            first = bisect.bisect_left(bucket, t + side.low, key=timestamp_of)
            last = bisect.bisect_right(bucket, t + side.high, key=timestamp_of)
            for _, match, hold in bucket[first:last]:
                pair = Joined(item, match) if side.is_left else Joined(match, item)
                spec.metrics.emitted += 1
                if hold is None:  # in a durable scope, or outside a flow
                    self.observer.on_next(pair)
                else:
                    # The pair claims the buffered item's source message too.
                    with self.holds.attached((hold,)):
                        self.observer.on_next(pair)
                if self.ended:
                    return  # disposed by what it emitted to
        # Kept only while an item of the other side may still come and match it.
        if not other.done and t + side.high >= self.watermark:
            side.add(key, t, item, self.holds.hold())
        if t > side.max_seen:
            side.max_seen = t
            self.time.put(side.name, t)
            self._advance()

    def _advance(self) -> None:
        left, right = self.left, self.right
        # A side that completed or went idle holds the watermark back no longer (Flink's end
        # of input, and idleness).
        low = min(
            math.inf if left.done or left.idle else left.max_seen,
            math.inf if right.done or right.idle else right.max_seen,
        )
        if low == math.inf:
            return  # neither side sets the time now: it stays (and at the end, nothing to free)
        watermark = low - self.spec.out_of_orderness
        if watermark <= self.watermark:
            return
        self.watermark = watermark
        self.time.put("watermark", watermark)
        for side in (left, right):
            due = side.due
            if due and due[0][0] < watermark:  # the usual case per item: nothing is due
                side.free_before(watermark, self.releasing)

    # -- idleness ------------------------------------------------------------------------

    def _arm_idle_timer(self, delay: float) -> None:
        self.idle_timer.disposable = self.clock.schedule_relative(delay, self._on_idle_timer)

    def _on_idle_timer(self, scheduler: abc.SchedulerBase, state: Any = None) -> None:
        self.idle_timer.disposable = None
        timeout = self.spec.idle_timeout
        if self.ended or timeout is None:
            return
        now = self.quiet_clock()
        wait = math.inf  # until the next side that still sends may go idle
        for side in (self.left, self.right):
            if side.done or side.idle:
                continue
            quiet_for = now - side.last_arrival
            if quiet_for >= timeout:
                side.idle = True
            else:
                wait = min(wait, timeout - quiet_for)
        self._advance()
        if wait < math.inf:
            self._arm_idle_timer(wait)  # else the next item arms it

    # -- the end -------------------------------------------------------------------------

    def on_left_completed(self) -> None:
        self._completed(self.left)

    def on_right_completed(self) -> None:
        self._completed(self.right)

    def _completed(self, side: Side) -> None:
        if self.ended:
            return
        side.done = True
        if self.left.done and self.right.done:
            self._finish()
            # Every buffered item had its chance: its message may be acknowledged.
            self.left.release_all(self.holds)
            self.right.release_all(self.holds)
            self.observer.on_completed()
        else:
            self._advance()

    def on_error(self, error: Exception) -> None:
        if self.ended:
            return
        self._finish()
        self.observer.on_error(error)

    def _finish(self) -> None:
        self.ended = True
        self.idle_timer.dispose()
        self.spec._runs.discard(self)

    def dispose(self) -> None:
        # The tables are left as they are: in a checkpointed flow they are the state the
        # next run starts from; in memory they go with this run.
        if not self.ended:
            self._finish()


def _bound(where: str, name: str, value: object) -> float:
    """A finite number of seconds, or a ``timedelta``; negative is fine (an offset)."""
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(
            f"{where}: {name} must be seconds (a number or a timedelta, negative allowed), "
            f"got {value!r}"
        )
    if not math.isfinite(value):
        raise ValueError(f"{where}: {name} must be a finite number of seconds, got {value!r}")
    return float(value)


def interval_join(
    other: Observable[R],
    *,
    key: Callable[[L], Hashable],
    timestamp: Callable[[L], float],
    other_key: Callable[[R], Hashable] | None = None,
    other_timestamp: Callable[[R], float] | None = None,
    lower: float | timedelta,
    upper: float | timedelta,
    out_of_orderness: float | timedelta = 0.0,
    idle_timeout: float | timedelta | None = None,
    scheduler: abc.SchedulerBase | None = None,
    name: str = "interval_join",
) -> IntervalJoin[L, R]:
    """Join the stream (the left side) with ``other`` (the right side) in event time:
    emit ``Joined(left, right)`` for every pair of items with equal keys and
    ``left_ts + lower <= right_ts <= left_ts + upper``, when the later of the two arrives.

    Args:
        other: the right stream.
        key: the join key of a left item (and of a right item, without ``other_key``).
        timestamp: a left item's event time, in seconds (and a right item's, without
            ``other_timestamp``).
        other_key: the join key of a right item.
        other_timestamp: a right item's event time, in seconds.
        lower: the earliest right timestamp that matches, relative to the left's (seconds,
            may be negative).
        upper: the latest one (seconds, at least ``lower``).
        out_of_orderness: how far behind the largest timestamp seen an item may still come
            without being late (seconds, 0 or more).
        idle_timeout: a side that sends nothing for this long (processing time; inside a
            pipe, time in which its source was free to deliver) holds the watermark back no
            longer, until it sends again; its items older than the watermark by then are
            late. ``None`` (the default): a quiet side holds it back.
        scheduler: the clock of ``idle_timeout`` (default: the subscription's scheduler,
            inside a pipe the loop's clock).
        name: the stage's name in metrics, and its tables' names in a checkpointed flow
            (two joins in one flow need two names).

    The watermark is the smaller of both sides' largest timestamps, minus
    ``out_of_orderness``. An item older than it is late (dropped, counted in
    ``late_dropped``); a buffered item is freed once the watermark passes its last chance
    of a match (left: ``ts + upper``, right: ``ts - lower``), so state follows the
    watermark. A side that sends nothing holds the watermark, and so the other side's
    buffer, back, as in Flink, unless it is idle (``idle_timeout``) or completed; if both
    are idle the watermark stays where it is. The join completes when both sides have (an
    endless ``other`` keeps it open after the left stream ends: bound it with
    ``take_until`` if the join must end with the left); an error of either side (or of a
    function given here) is passed on, and disposes both subscriptions.

    Inside a checkpointed :class:`rxflow.Flow` the buffers, both sides' largest timestamps
    and the watermark are state (tables ``<name>.left``, ``<name>.right``, ``<name>.time``)
    and are restored after a restart; the items they hold then need no ack holds.

    Example:
        >>> from reactivex.subject import Subject
        >>> orders, payments = Subject(), Subject()
        >>> join = interval_join(payments, key=lambda e: e[0], timestamp=lambda e: e[1],
        ...                      lower=0, upper=10)
        >>> _ = orders.pipe(join).subscribe(lambda p: print(p.left, p.right))
        >>> orders.on_next(("o1", 0.0))
        >>> payments.on_next(("o1", 4.0))
        ('o1', 0.0) ('o1', 4.0)
        >>> payments.on_next(("o1", 12.0))  # more than 10 s after the order: no pair
        >>> orders.on_next(("o2", 11.0)); payments.on_next(("o2", 13.0))
        ('o2', 11.0) ('o2', 13.0)
    """
    where = "interval_join()"
    if not isinstance(other, Observable):
        raise TypeError(f"{where}: other must be an Observable (the right stream), got {other!r}")
    check_function(where, "key", key, "of a left item, returning its join key")
    check_function(where, "timestamp", timestamp, "of a left item, returning seconds")
    check_function(
        where, "other_key", other_key, "of a right item, returning its join key", optional=True
    )
    check_function(
        where,
        "other_timestamp",
        other_timestamp,
        "of a right item, returning seconds",
        optional=True,
    )
    low = _bound(where, "lower", lower)
    high = _bound(where, "upper", upper)
    if low > high:
        raise ValueError(
            f"{where}: lower ({low}) must not be more than upper ({high}): a right item matches "
            "when left_ts + lower <= right_ts <= left_ts + upper"
        )
    return IntervalJoin(
        other,
        key=key,
        timestamp=timestamp,
        other_key=other_key or key,  # type: ignore[arg-type]  # same function on both sides
        other_timestamp=other_timestamp or timestamp,  # type: ignore[arg-type]
        lower=low,
        upper=high,
        out_of_orderness=check_seconds(
            where, "out_of_orderness", out_of_orderness, allow_zero=True
        ),
        idle_timeout=check_seconds(where, "idle_timeout", idle_timeout, optional=True),
        scheduler=scheduler,
        name=check_name(where, "name", name),
    )
