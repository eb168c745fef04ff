"""Marble tests of observables on reactivex's ``TestScheduler``, one frame = 1 ms.

Example:
    >>> from reactivex import operators as ops
    >>> from rxflow.testing import MarbleContext
    >>> with MarbleContext() as m:
    ...     source = m.cold("-a--b-c|")
    ...     m.expect(source.pipe(ops.map(str.upper))).to_be("-A--B-C|")
    ...     m.expect_subscriptions(source.subscriptions).to_be("^------!")
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any

from reactivex import Notification, Observable, abc, typing
from reactivex.disposable import CompositeDisposable, Disposable
from reactivex.notification import OnCompleted, OnError, OnNext
from reactivex.scheduler import VirtualTimeScheduler
from reactivex.testing import TestScheduler

from rxflow.errors import MarbleMismatch, MarbleTimeLimitError
from rxflow.testing.marbles import (
    FRAME_SECONDS,
    Event,
    Legend,
    MarbleSyntaxError,
    by_frame,
    draw_gap,
    frame_of_seconds,
    normalize_frame,
    parse,
    parse_subscription,
    token,
)

__all__ = [
    "DEFAULT_MAX_ACTIONS",
    "MarbleContext",
    "MarbleMismatch",
    "MarbleObservable",
    "MarbleTimeLimitError",
]

# Frames from the start of the scheduler's clock to the test's frame 0. Hot observables may
# have events before their "^" (negative frames); they are scheduled this much earlier.
_ORIGIN = 1000


def _time(frame: float) -> float:
    return (frame + _ORIGIN) * FRAME_SECONDS


def _frame(time: float) -> float:
    return frame_of_seconds(time - _ORIGIN * FRAME_SECONDS)


# An endless source that nobody unsubscribes (an interval) would run virtual time forever;
# RxJS's run mode then hangs. Stopping after this many scheduled actions (about 2 s of work
# on a 2-core machine, measured) turns the hang into an error; marble tests are far smaller.
DEFAULT_MAX_ACTIONS = 100_000


class _LimitedTestScheduler(TestScheduler):
    """reactivex's ``TestScheduler``, stopped when an action is due past ``max_frames`` or
    when more than ``max_actions`` actions have run (``None``: no limit)."""

    def __init__(self, max_frames: float | None, max_actions: int | None) -> None:
        super().__init__()
        self.max_frames = max_frames
        self.max_actions = max_actions
        self.actions_run = 0
        self.stopped_by: tuple[str, float, float] | None = None  # (limit, its value, frame)

    def schedule_absolute(
        self,
        duetime: typing.AbsoluteTime,
        action: typing.ScheduledAction[Any],
        state: Any = None,
    ) -> abc.DisposableBase:
        def limited(scheduler: abc.SchedulerBase, state: Any = None) -> Any:
            frame = _frame(self.clock)
            if self.max_frames is not None and frame > self.max_frames:
                self._stop_at("max_frames", self.max_frames, frame)
                return None
            self.actions_run += 1
            if self.max_actions is not None and self.actions_run > self.max_actions:
                self._stop_at("max_actions", self.max_actions, frame)
                return None
            return action(scheduler, state)

        return super().schedule_absolute(duetime, limited, state)

    def _stop_at(self, limit: str, value: float, frame: float) -> None:
        if self.stopped_by is None:
            self.stopped_by = (limit, value, frame)
        self.stop()


class MarbleContext:
    """A virtual-time test context: make sources from diagrams, state expectations as
    diagrams, then :meth:`flush` (done on leaving a ``with`` block) to run and compare.

    ``scheduler`` is the ``TestScheduler`` to pass to time-based operators under test
    (``ops.debounce(0.02, scheduler=m.scheduler)``); one frame is 1 ms, so 20 frames is 0.02.

    Virtual time runs as far as the test needs, as in RxJS's run mode. Two optional limits
    stop it with :class:`MarbleTimeLimitError` instead: ``max_frames`` (default ``None``, no
    limit), and ``max_actions``, the number of scheduled actions run (default 100,000),
    which catches an endless source that nobody unsubscribes.
    """

    def __init__(
        self, *, max_frames: float | None = None, max_actions: int | None = DEFAULT_MAX_ACTIONS
    ) -> None:
        if max_frames is not None and (
            isinstance(max_frames, bool)
            or not isinstance(max_frames, int | float)
            or not max_frames > 0
        ):
            raise ValueError(
                f"max_frames must be a positive number of frames or None (no limit), "
                f"not {max_frames!r}"
            )
        if max_actions is not None and (
            isinstance(max_actions, bool) or not isinstance(max_actions, int) or max_actions < 1
        ):
            raise ValueError(
                f"max_actions must be a positive whole number or None (no limit), "
                f"not {max_actions!r}"
            )
        self._limited = _LimitedTestScheduler(max_frames, max_actions)
        self.scheduler: TestScheduler = self._limited
        self.scheduler.advance_to(_time(-_ORIGIN))
        self.max_frames = max_frames
        self.max_actions = max_actions
        self._checks: list[_Expectation | _SubscriptionsExpectation] = []
        self._hot: list[MarbleObservable] = []
        self.flushed = False

    # -- sources -------------------------------------------------------------------------

    def cold(
        self,
        diagram: str,
        values: Mapping[str, Any] | None = None,
        error: BaseException | None = None,
    ) -> MarbleObservable:
        """An observable that plays ``diagram`` from each subscription. Its
        ``subscriptions`` record when it was subscribed, for :meth:`expect_subscriptions`."""
        parsed = parse(diagram, values, error)
        if parsed.subscribed is not None:
            raise MarbleSyntaxError(
                diagram,
                diagram.index("^"),
                "a cold observable cannot have a subscription point '^' (it plays from each "
                "subscription): remove it, or make the source with hot()",
            )
        return MarbleObservable(self.scheduler, parsed.events, hot=False)

    def hot(
        self,
        diagram: str,
        values: Mapping[str, Any] | None = None,
        error: BaseException | None = None,
    ) -> MarbleObservable:
        """An observable that plays ``diagram`` whether subscribed or not; ``^`` marks the
        test's frame 0 (default: the diagram's start)."""
        hot = MarbleObservable(self.scheduler, parse(diagram, values, error).events, hot=True)
        self._hot.append(hot)
        return hot

    # -- expectations --------------------------------------------------------------------

    def expect(self, observable: Observable[Any], subscription: str | None = None) -> _Expectation:
        """Subscribe ``observable`` at frame 0 (or as ``subscription``, e.g. ``"--^--!"``)
        and record what it emits; say what you expect with ``.to_be(...)``."""
        subscribe_at: float | None = 0
        unsubscribe_at = None
        if subscription is not None:
            subscribe_at, unsubscribe_at = parse_subscription(subscription)
        expectation = _Expectation(self, observable, subscribe_at or 0, unsubscribe_at)
        self._checks.append(expectation)
        return expectation

    def expect_subscriptions(
        self, subscriptions: Sequence[tuple[float, float | None]]
    ) -> _SubscriptionsExpectation:
        """Say when a cold or hot observable was subscribed, as subscription diagrams."""
        expectation = _SubscriptionsExpectation(subscriptions)
        self._checks.append(expectation)
        return expectation

    def flush(self) -> None:
        """Run virtual time to the end and check every expectation."""
        self.flushed = True
        scheduler = self.scheduler
        # As in RxJS, hot observables start playing at the flush, so that a subscription
        # due at the same frame as a hot value is in place before the value.
        for hot in self._hot:
            hot.play()
        VirtualTimeScheduler.start(scheduler)  # TestScheduler.start() would add its own actions
        if self._limited.stopped_by is not None:
            limit, value, frame = self._limited.stopped_by
            raise MarbleTimeLimitError(
                f"virtual time stopped at the limit {limit}={value} with work still due at "
                f"frame {frame}. An endless source (an interval) must be unsubscribed with a "
                f"subscription diagram, m.expect(source, '^---!'); or raise the limit: "
                f"MarbleContext({limit}=...), None for no limit"
            )
        for check in self._checks:
            check.verify()

    def __enter__(self) -> MarbleContext:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if kind is None and not self.flushed:
            self.flush()


class MarbleObservable(Observable[Any]):
    """A hot or cold observable made from a diagram; ``subscriptions`` lists
    ``(subscribed frame, unsubscribed frame or None)`` for each subscription."""

    def __init__(self, scheduler: TestScheduler, events: Sequence[Event], *, hot: bool) -> None:
        super().__init__()
        self._scheduler = scheduler
        self._events = events
        self._hot = hot
        self._observers: list[abc.ObserverBase[Any]] = []
        self.subscriptions: list[tuple[float, float | None]] = []

    def play(self) -> None:
        """Schedule a hot observable's events (done by :meth:`MarbleContext.flush`)."""
        for event in self._events:
            self._scheduler.schedule_absolute(_time(event.frame), self._broadcast(event))

    def _broadcast(self, event: Event) -> Any:
        def action(_: Any, __: Any = None) -> None:
            for observer in list(self._observers):
                _notification(event).accept(observer)

        return action

    def _subscribe_core(
        self, observer: abc.ObserverBase[Any], scheduler: abc.SchedulerBase | None = None
    ) -> abc.DisposableBase:
        index = len(self.subscriptions)
        self.subscriptions.append((_frame(self._scheduler.clock), None))
        timers = CompositeDisposable()
        if self._hot:
            self._observers.append(observer)
        else:
            for event in self._events:

                def action(_: Any, __: Any = None, event: Event = event) -> None:
                    _notification(event).accept(observer)

                timers.add(self._scheduler.schedule_relative(event.frame * FRAME_SECONDS, action))

        def unsubscribe() -> None:
            start, _ = self.subscriptions[index]
            self.subscriptions[index] = (start, _frame(self._scheduler.clock))
            timers.dispose()
            if observer in self._observers:
                self._observers.remove(observer)

        return Disposable(unsubscribe)


def _notification(event: Event) -> Notification[Any]:
    if event.kind == "N":
        return OnNext(event.value)
    if event.kind == "E":
        return OnError(event.value)
    return OnCompleted()


class _Expectation:
    def __init__(
        self,
        context: MarbleContext,
        observable: Observable[Any],
        subscribe_at: float,
        unsubscribe_at: float | None,
    ) -> None:
        self.received: list[Event] = []
        self.expected: tuple[Event, ...] | None = None
        self.values: Mapping[str, Any] | None = None
        scheduler = context.scheduler
        subscription: list[Any] = []

        def subscribe(_: Any, __: Any = None) -> None:
            subscription.append(
                observable.subscribe(
                    lambda value: self._record(scheduler, OnNext(value)),
                    lambda error: self._record(scheduler, OnError(error)),
                    lambda: self._record(scheduler, OnCompleted()),
                    scheduler=scheduler,
                )
            )

        scheduler.schedule_absolute(_time(subscribe_at), subscribe)
        if unsubscribe_at is not None:

            def unsubscribe(_: Any, __: Any = None) -> None:
                subscription[0].dispose()

            scheduler.schedule_absolute(_time(unsubscribe_at), unsubscribe)

    def _record(self, scheduler: TestScheduler, notification: Notification[Any]) -> None:
        frame = _frame(scheduler.clock)
        if isinstance(notification, OnNext):
            self.received.append(Event(frame, "N", notification.value))
        elif isinstance(notification, OnError):
            self.received.append(Event(frame, "E", notification.exception))
        else:
            self.received.append(Event(frame, "C"))

    def to_be(
        self,
        diagram: str,
        values: Mapping[str, Any] | None = None,
        error: BaseException | None = None,
    ) -> None:
        """The diagram this observable must produce (checked at :meth:`MarbleContext.flush`).

        An expected ``#`` matches any error of the same type and message as ``error`` (any
        error at all when ``error`` is not given).
        """
        self.expected = parse(diagram, values, error).events
        self.values = values
        self._error_given = error is not None

    def verify(self) -> None:
        if self.expected is None:
            raise AssertionError("expect(...) without .to_be(...): say what you expect")
        if not same_events(self.expected, self.received, self._error_given):
            raise MarbleMismatch(describe_mismatch(self.expected, self.received, self.values))


class _SubscriptionsExpectation:
    def __init__(self, subscriptions: Sequence[tuple[float, float | None]]) -> None:
        self.subscriptions = subscriptions
        self.expected: list[tuple[float, float | None]] | None = None

    def to_be(self, *diagrams: str) -> None:
        """One subscription diagram per subscription, e.g. ``to_be("^--!", "--^---!")``;
        ``to_be()`` (or a diagram without ``^``) says it was never subscribed."""
        parsed = [parse_subscription(diagram) for diagram in diagrams]
        self.expected = [_normalized(start, end) for start, end in parsed if start is not None]

    def verify(self) -> None:
        actual = [_normalized(start, end) for start, end in self.subscriptions]
        if actual != self.expected:
            raise MarbleMismatch(
                "subscriptions differ (^ subscribed, ! unsubscribed):\n"
                f"  expected: {_draw_subscriptions(self.expected or [])}\n"
                f"  actual:   {_draw_subscriptions(actual)}"
            )


def _normalized(start: float, end: float | None) -> tuple[float, float | None]:
    return normalize_frame(start), None if end is None else normalize_frame(end)


def _draw_subscriptions(subscriptions: list[tuple[float, float | None]]) -> str:
    drawn = []
    for start, end in subscriptions:
        line = draw_gap(start) + "^"
        if end == start:
            line = draw_gap(start) + "(^!)"
        elif end is not None:
            line += draw_gap(end - start - 1, before=line) + "!"
        drawn.append(line)
    return ", ".join(drawn) or "(none)"


def same_events(expected: Sequence[Event], actual: Sequence[Event], error_given: bool) -> bool:
    """Same frames, kinds and values; errors match by type and message if ``error_given``."""
    if len(expected) != len(actual):
        return False
    return all(_same_event(e, a, error_given) for e, a in zip(expected, actual, strict=True))


def _same_event(expected: Event, actual: Event, error_given: bool) -> bool:
    # At the virtual clock's resolution: 0.1ms + 0.2ms is the frame of 0.3ms.
    if normalize_frame(expected.frame) != normalize_frame(actual.frame):
        return False
    if expected.kind != actual.kind:
        return False
    if expected.kind == "E":
        if not error_given:
            return True
        return type(expected.value) is type(actual.value) and str(expected.value) == str(
            actual.value
        )
    return bool(expected.value == actual.value)


def describe_mismatch(
    expected: Sequence[Event], actual: Sequence[Event], values: Mapping[str, Any] | None = None
) -> str:
    """Both diagrams drawn aligned one above the other, a caret at the first differing frame,
    the differing notifications listed, and a legend for values drawn with made-up letters."""
    legend = Legend(values)
    expected_frames, actual_frames = by_frame(_at_clock(expected)), by_frame(_at_clock(actual))
    frames = sorted(set(expected_frames) | set(actual_frames))
    first_difference = next(
        frame
        for frame in frames
        if not same_events(expected_frames.get(frame, []), actual_frames.get(frame, []), True)
    )
    top, bottom, caret = "", "", 0
    cursor: float = min(0, frames[0])
    for frame in frames:
        filler = draw_gap(frame - cursor, before=top)
        top += filler
        bottom += filler
        if frame == first_difference:
            caret = len(top)
        mine = token(expected_frames[frame], legend) if frame in expected_frames else "-"
        theirs = token(actual_frames[frame], legend) if frame in actual_frames else "-"
        width = max(len(mine), len(theirs))
        top += mine.ljust(width)
        bottom += theirs.ljust(width)
        cursor = frame + 1
    lines = [
        f"the observable did not match its marble diagram (1 frame = 1 ms); "
        f"first difference at frame {first_difference}:",
        f"  expected: {top}",
        f"  actual:   {bottom}",
        "            " + " " * caret + "^",
        "differences:",
    ]
    for frame in frames:
        wanted = expected_frames.get(frame, [])
        got = actual_frames.get(frame, [])
        if not same_events(wanted, got, True):
            lines.append(  # one line per differing frame
                f"  frame {frame}: expected {_describe(wanted)}, got {_describe(got)}"
            )
    if legend.assigned:
        lines.append("legend:")
        lines.extend(legend.lines())
    return "\n".join(lines)


def _at_clock(events: Sequence[Event]) -> list[Event]:
    return [Event(normalize_frame(event.frame), event.kind, event.value) for event in events]


def _describe(events: Sequence[Event]) -> str:
    return ", ".join(event.describe() for event in events) if events else "nothing"
