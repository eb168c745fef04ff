"""Run one reactivex operator chain two ways, record what each emits, and compare.

* The reference is plain reactivex: the chain over ``reactivex.from_iterable(values)`` on the
  current-thread scheduler for an untimed case, or over a cold timed Observable on
  reactivex's ``TestScheduler`` for a timed one.
* The pipe is the same chain inside :func:`rxflow.open_pipe`, fed by one of four source
  kinds (:data:`KINDS`), in virtual time (trio's ``MockClock``, or rxflow's
  ``VirtualTimeEventLoop`` for asyncio), read by a consumer that is always waiting.

Both sides give an :data:`Outcome`: the notifications as ``(seconds since the start, kind,
value)``, kind ``N`` (an item), ``E`` (an error: its type and message), ``C`` (completion)
or ``H`` (nothing ended the run by :data:`VIRTUAL_LIMIT`: a hang).

Each source kind has its own reference, because the kinds differ in what a user would also
see in reactivex: a list and an Observable can be read again (a cold Observable); a one-shot
async generator cannot (rxflow raises ``SourceNotRerunnableError`` on the second read, so
its reference is an Observable that does the same); the erroring source fails after its
items, once the work they started is done (:class:`_LateFailures`). A timed case delivers
its items at their times, except from a list, which has no times: all its items come at
once, at the start.

:func:`subject_reference` is the documented rule for the inherent differences of pulled
sources (docs/operators.md): reactivex over a Subject pushed item by item.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, NamedTuple

import anyio
import anyio.from_thread
import anyio.lowlevel
import attrs
import reactivex
import sniffio
from reactivex import Observable, abc
from reactivex.disposable import CompositeDisposable, Disposable
from reactivex.notification import Notification
from reactivex.scheduler import ThreadPoolScheduler
from reactivex.subject import Subject
from reactivex.testing import TestScheduler
from support import running_tasks

from rxflow import open_pipe
from rxflow.errors import RxflowError, SourceNotRerunnableError

Operator = Callable[[Observable[Any]], Observable[Any]]
Kind = Literal["list", "async_generator", "observable", "erroring"]

KINDS: tuple[Kind, ...] = ("list", "async_generator", "observable", "erroring")
# The kinds the pipe pulls from (the pump reads them), as opposed to the Observable it subscribes.
PULLED: tuple[Kind, ...] = ("list", "async_generator", "erroring")

# Virtual seconds after which a run that has not ended counts as a hang. Every timeline
# ends within a few virtual seconds, and virtual time costs nothing.
VIRTUAL_LIMIT = 100.0
# Real seconds a run may take at most (a pipe spinning without awaiting, a thread that never
# comes back): the watchdog cancels it, and it counts as a hang.
REAL_LIMIT = 10.0

# Under trio a case runs this many times: trio orders ready tasks differently from run to
# run, so a pipeline whose output depends on task order shows it within a few runs.
TRIO_RUNS = 5

REAL_HANG = f"still running after {REAL_LIMIT} real seconds"

# Times are compared to 1e-4 s: the clocks add floats (0.1 + 0.25), reactivex's
# TestScheduler counts in microseconds.
_DIGITS = 4


class SourceFailure(Exception):
    """What the erroring source raises after its items."""


class Note(NamedTuple):
    """One notification: when (seconds from the start), which kind, what value."""

    at: float
    kind: str
    value: Any


Outcome = tuple[Note, ...]


@attrs.frozen
class Timeline:
    """A source's items, each at its time (seconds from the subscription), and when it ends."""

    items: tuple[tuple[float, Any], ...]
    end: float = 0.0

    @property
    def values(self) -> tuple[Any, ...]:
        return tuple(value for _, value in self.items)

    @property
    def timed(self) -> bool:
        return self.end > 0 or any(at > 0 for at, _ in self.items)


def untimed(*values: Any) -> Timeline:
    """Items that are all there at once."""
    return Timeline(tuple((0.0, value) for value in values))


@attrs.frozen
class Case:
    """One operator under test: a chain that uses it, and the input to run it on.

    ``make`` builds a fresh chain for each run (operators may hold state: a counter in a
    ``do_while`` condition, a subject). ``refused`` is for a stage that open_pipe must refuse
    when the pipe opens: the error's type and a text its message contains.
    """

    operator: str
    make: Callable[[], Sequence[Operator]]
    source: Timeline
    label: str = ""
    threads: bool = False
    refused: tuple[type[Exception], str] | None = None

    @property
    def id(self) -> str:
        return f"{self.operator}[{self.label}]" if self.label else self.operator


# -- values --------------------------------------------------------------------------------


def plain(value: Any, start: datetime | None) -> Any:
    """``value`` in a form that compares across the two runs: times as seconds since the
    start, notifications and records as tuples, errors as (type, message)."""
    if isinstance(value, Observable):
        raise TypeError(
            f"the case emits an Observable ({type(value).__name__}); flatten it in the case's "
            "chain (flat_map(lambda w: w.pipe(ops.to_list())))"
        )
    if isinstance(value, datetime | timedelta):
        if isinstance(value, timedelta):
            return round(value.total_seconds(), _DIGITS)
        if start is None:
            raise TypeError("a datetime in an untimed case: make the case timed")
        return round((value - start).total_seconds(), _DIGITS)
    if isinstance(value, Notification):
        payload = getattr(value, "value", getattr(value, "exception", None))
        return ("Notification", value.kind, plain(payload, start))
    if isinstance(value, BaseException):
        return describe(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = (plain(getattr(value, f.name), start) for f in dataclasses.fields(value))
        return (type(value).__name__, *fields)
    if isinstance(value, list | tuple):
        return type(value)(plain(item, start) for item in value)
    if isinstance(value, dict):
        return {key: plain(item, start) for key, item in value.items()}
    return value


def describe(error: BaseException) -> tuple[str, str]:
    """An error as (type, message); rxflow's own errors by type only, since the reference
    raises them with its own words."""
    if isinstance(error, RxflowError):
        return (type(error).__name__, "")
    return (type(error).__name__, str(error))


# -- the reference: plain reactivex -----------------------------------------------------------


def one_shot(source: Observable[Any]) -> Observable[Any]:
    """``source`` that, like a one-shot async generator in a pipe, can be subscribed once:
    a later subscription fails with SourceNotRerunnableError."""
    subscribed = False

    def subscribe(
        observer: abc.ObserverBase[Any], scheduler: abc.SchedulerBase | None = None
    ) -> abc.DisposableBase:
        nonlocal subscribed
        if subscribed:
            observer.on_error(SourceNotRerunnableError("read twice"))
            return Disposable()
        subscribed = True
        return source.subscribe(observer, scheduler=scheduler)

    return reactivex.create(subscribe)


def timed_observable(timeline: Timeline, failure: Exception | None = None) -> Observable[Any]:
    """A cold Observable that emits the timeline's items at their times on the scheduler it
    is subscribed with, then completes, or fails with ``failure``."""

    def subscribe(
        observer: abc.ObserverBase[Any], scheduler: abc.SchedulerBase | None = None
    ) -> abc.DisposableBase:
        assert scheduler is not None, "a timed source runs on the subscription's scheduler"

        def emit(_s: abc.SchedulerBase, value: Any) -> None:
            observer.on_next(value)

        timers = CompositeDisposable()
        for at, value in timeline.items:
            timers.add(scheduler.schedule_relative(at, emit, value))

        def end(_s: abc.SchedulerBase, _t: Any) -> None:
            if failure is None:
                observer.on_completed()
            else:
                observer.on_error(failure)

        timers.add(scheduler.schedule_relative(timeline.end, end))
        return timers

    return reactivex.create(subscribe)


class _LateFailures:
    """Untimed failing sources for the reference: each run yields its items, as
    ``from_iterable`` does, and fails afterwards, once the work its items started is done.

    In a pipe, the source's failure is an event of its own: the pump pulls it after it has
    pushed the items, and operators have run what the items started (an inner ``of(...)`` of
    ``flat_map``). The reference delivers it the same way, from the top of the stack, after
    the chain's subscription has returned: not from inside ``from_iterable``'s loop, where it
    would overtake what the items scheduled. Every subscription gets its own run (``retry``).
    """

    def __init__(self) -> None:
        self._due: deque[Callable[[], None]] = deque()

    def source(self, values: tuple[Any, ...]) -> Observable[Any]:
        def subscribe(
            observer: abc.ObserverBase[Any], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            disposed = False

            def fail() -> None:
                if not disposed:
                    observer.on_error(SourceFailure("the source failed"))

            items = reactivex.from_iterable(values).subscribe(
                observer.on_next,
                observer.on_error,
                lambda: self._due.append(fail),
                scheduler=scheduler,
            )

            def dispose() -> None:
                nonlocal disposed
                disposed = True
                items.dispose()

            return Disposable(dispose)

        return reactivex.create(subscribe)

    def deliver(self) -> None:
        """Fail the runs that have yielded their items (a retry's new run, too)."""
        while self._due:
            self._due.popleft()()


def _reference_source(case: Case, kind: Kind, failures: _LateFailures) -> Observable[Any]:
    timeline = case.source
    if timeline.timed and kind != "list":  # a list has no times
        failure = SourceFailure("the source failed") if kind == "erroring" else None
        source = timed_observable(timeline, failure)
    elif kind == "erroring":
        source = failures.source(timeline.values)
    else:
        source = reactivex.from_iterable(timeline.values)
    return one_shot(source) if kind == "async_generator" else source


class _Recorder:
    """An observer that records notifications with the time ``now()`` gives."""

    def __init__(self, now: Callable[[], float], start: datetime | None) -> None:
        self.now, self.start = now, start
        self.notes: list[Note] = []
        self.done = threading.Event()

    def on_next(self, value: Any) -> None:
        self.notes.append(Note(self.now(), "N", plain(value, self.start)))

    def on_error(self, error: Exception) -> None:
        self.notes.append(Note(self.now(), "E", describe(error)))
        self.done.set()

    def on_completed(self) -> None:
        self.notes.append(Note(self.now(), "C", None))
        self.done.set()

    def outcome(self, hang_at: float) -> Outcome:
        if not self.done.is_set():
            self.notes.append(Note(hang_at, "H", None))
        return tuple(self.notes)


def reference(case: Case, kind: Kind) -> Outcome:
    """What plain reactivex gives for ``case`` with the reference source of ``kind``."""
    failures = _LateFailures()
    source = _reference_source(case, kind, failures)
    with released_thread_pools():
        if case.source.timed:
            return _on_test_scheduler(source, case.make())
        recorder = _Recorder(lambda: 0.0, None)
        subscription = source.pipe(*case.make()).subscribe(
            recorder.on_next, recorder.on_error, recorder.on_completed
        )
        failures.deliver()
        if case.threads:  # the chain runs in a pool thread: wait for it (and its failure)
            until = time.monotonic() + REAL_LIMIT
            while not recorder.done.wait(0.005) and time.monotonic() < until:
                failures.deliver()
        subscription.dispose()
        return recorder.outcome(VIRTUAL_LIMIT)


def _on_test_scheduler(source: Observable[Any], operators: Sequence[Operator]) -> Outcome:
    scheduler = TestScheduler()
    recorder = _Recorder(lambda: round(float(scheduler.clock), _DIGITS), scheduler.now)
    subscription: list[abc.DisposableBase] = []

    def subscribe(_s: abc.SchedulerBase, _t: Any) -> None:
        subscription.append(
            source.pipe(*operators).subscribe(
                recorder.on_next, recorder.on_error, recorder.on_completed, scheduler=scheduler
            )
        )

    def stop(_s: abc.SchedulerBase, _t: Any) -> None:
        for disposable in subscription:
            disposable.dispose()
        scheduler.stop()

    scheduler.schedule_absolute(0.0, subscribe)
    scheduler.schedule_absolute(VIRTUAL_LIMIT, stop)
    scheduler.start()
    return recorder.outcome(VIRTUAL_LIMIT)


def subject_reference(case: Case, kind: Kind) -> Outcome:
    """What reactivex gives with a Subject as the source, pushed after the chain subscribed:
    the documented rule for an operator whose result depends on the source being
    asynchronous (see INHERENT_DIFFERENCES). Untimed cases only."""
    assert not case.source.timed, "the Subject rule is for untimed cases"
    subject: Subject[Any] = Subject()
    recorder = _Recorder(lambda: 0.0, None)
    subscription = subject.pipe(*case.make()).subscribe(
        recorder.on_next, recorder.on_error, recorder.on_completed
    )
    for value in case.source.values:
        subject.on_next(value)
    if kind == "erroring":
        subject.on_error(SourceFailure("the source failed"))
    else:
        subject.on_completed()
    subscription.dispose()
    return recorder.outcome(VIRTUAL_LIMIT)


# -- the pipe ------------------------------------------------------------------------------


class _Erroring:
    """An async iterable that yields the timeline's items, then fails; every ``async for``
    starts anew, so operators that subscribe again (retry) can read it again."""

    def __init__(self, timeline: Timeline) -> None:
        self.timeline = timeline

    def __aiter__(self) -> AsyncIterator[Any]:
        return _timed_items(self.timeline, SourceFailure("the source failed"))


async def _timed_items(timeline: Timeline, failure: Exception | None = None) -> AsyncIterator[Any]:
    """The timeline's items, each after its time counted from the first read, as an async
    generator that sleeps between them would give them; an untimed one never awaits."""
    elapsed = 0.0
    for at, value in timeline.items:
        if at > elapsed:
            await anyio.sleep(at - elapsed)
            elapsed = at
        yield value
    if timeline.end > elapsed:
        await anyio.sleep(timeline.end - elapsed)
    if failure is not None:
        raise failure


def pipe_source(case: Case, kind: Kind) -> Any:
    """The source of ``kind`` that open_pipe reads for ``case``."""
    timeline = case.source
    if kind == "list":
        return list(timeline.values)
    if kind == "async_generator":
        return _timed_items(timeline)
    if kind == "observable":
        if timeline.timed:
            return timed_observable(timeline)
        return reactivex.from_iterable(timeline.values)
    return _Erroring(timeline)


async def piped(case: Case, kind: Kind) -> Outcome:
    """What open_pipe gives for ``case`` with a source of ``kind``."""
    start = anyio.current_time()
    start_datetime = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=start)
    recorder = _Recorder(lambda: round(anyio.current_time() - start, _DIGITS), start_datetime)
    options: dict[str, Any] = {}
    if kind == "observable":  # it pushes: a buffer far bigger than any case's output
        options = {"overflow": "error", "max_buffer_size": 10_000}
    source = pipe_source(case, kind)
    # A pipe waiting on a pool thread is idle to a virtual clock, which would jump to any
    # deadline at once: a case with threads is watched in real time only.
    deadline = anyio.current_time() + VIRTUAL_LIMIT if not case.threads else float("inf")
    with anyio.CancelScope(deadline=deadline) as scope, _watchdog(scope) as fired:
        try:
            async with open_pipe(source, *case.make(), **options) as pipe:
                async for item in pipe:
                    recorder.on_next(item)
        except Exception as error:
            recorder.on_error(error)
        else:
            recorder.on_completed()
    if fired.is_set():
        return (*recorder.notes, Note(VIRTUAL_LIMIT, "H", REAL_HANG))
    return recorder.outcome(VIRTUAL_LIMIT)


@contextlib.contextmanager
def _watchdog(scope: anyio.CancelScope) -> Iterator[threading.Event]:
    """Cancel ``scope`` after :data:`REAL_LIMIT` real seconds, and set the event it yields.
    A threading.Timer, joined on the way out, so that it leaves no thread behind."""
    token = anyio.lowlevel.current_token()
    fired = threading.Event()

    def fire() -> None:
        fired.set()
        anyio.from_thread.run_sync(scope.cancel, token=token)

    timer = threading.Timer(REAL_LIMIT, fire)
    timer.start()
    try:
        yield fired
    finally:
        timer.cancel()
        timer.join()


# -- thread pools and leaks ------------------------------------------------------------------

_pools: list[ThreadPoolScheduler] = []


def thread_pool(workers: int = 2) -> ThreadPoolScheduler:
    """A thread pool scheduler for a case; shut down (its threads joined) after the run."""
    pool = ThreadPoolScheduler(workers)
    _pools.append(pool)
    return pool


@contextlib.contextmanager
def released_thread_pools() -> Iterator[None]:
    """Shut down the pools a case made, waiting for their threads, when the block ends."""
    try:
        yield
    finally:
        while _pools:
            _pools.pop().executor.shutdown(wait=True)


@attrs.frozen
class Leaks:
    """What a run left behind."""

    tasks: int
    threads: tuple[str, ...]


@attrs.define
class LeakCheck:
    """Counts the tasks and threads before a run, to compare after it."""

    tasks: int = attrs.field(factory=running_tasks)
    threads: frozenset[threading.Thread] = attrs.field(
        factory=lambda: frozenset(threading.enumerate())
    )

    def leaks(self) -> Leaks:
        left = [thread.name for thread in threading.enumerate() if thread not in self.threads]
        return Leaks(running_tasks() - self.tasks, tuple(left))


async def run_piped(case: Case, kind: Kind, runs: int) -> list[tuple[Outcome, Leaks]]:
    """Run the case ``runs`` times through open_pipe; each outcome with what it left behind."""
    results: list[tuple[Outcome, Leaks]] = []
    for _ in range(runs):
        check = LeakCheck()
        with released_thread_pools():
            outcome = await piped(case, kind)
        await anyio.lowlevel.checkpoint()  # let a task that was told to end, end
        results.append((outcome, check.leaks()))
        if outcome[-1].value == REAL_HANG:  # another run would only take as long
            break
    return results


def show(outcome: Outcome) -> str:
    """An outcome, one notification a line, for an assertion message."""
    return "\n".join(f"  {note.at:>8} {note.kind} {note.value!r}" for note in outcome) or "  -"


def _untimed(outcome: Outcome, case: Case) -> tuple[Any, ...]:
    """The outcome to compare: with its times, except for a case with threads. While the
    loop waits for a pool thread, a virtual clock sees nothing to do but wait and jumps to
    the next deadline (the asyncio one by a day at a time), so its times mean nothing."""
    if case.threads:
        return tuple((note.kind, note.value) for note in outcome)
    return outcome


def trio_runs() -> int:
    """How many times a case runs here: :data:`TRIO_RUNS` under trio, once under asyncio,
    whose order of ready tasks is fixed."""
    return TRIO_RUNS if sniffio.current_async_library() == "trio" else 1


async def check(case: Case, kind: Kind, *, subject_rule: bool = False) -> None:
    """Run ``case`` through open_pipe with a source of ``kind`` and assert that every run
    gives what reactivex gives (or, with ``subject_rule``, what reactivex gives with a
    Subject source), the same each time, and leaves no task or thread behind."""
    expected: Outcome = ()
    if case.refused is None:
        expected = subject_reference(case, kind) if subject_rule else reference(case, kind)
    results = await run_piped(case, kind, trio_runs())
    outcomes = [outcome for outcome, _ in results]
    problems: list[str] = []
    shown = Counter(show(outcome) for outcome in outcomes)
    if len(shown) > 1:
        variants = "\n".join(f"{count} run(s):\n{text}" for text, count in shown.items())
        problems.append(f"the runs differ from each other:\n{variants}")
    for number, (_, leaks) in enumerate(results, start=1):
        if leaks.tasks or leaks.threads:
            problems.append(
                f"run {number} left {leaks.tasks} task(s) and the threads {leaks.threads} behind"
            )
    if case.refused is not None:
        error_type, text = case.refused
        for outcome in outcomes:
            refused = (
                len(outcome) == 1
                and outcome[0].kind == "E"
                and outcome[0].value[0] == error_type.__name__
                and text in outcome[0].value[1]
            )
            if not refused:
                problems.append(
                    f"open_pipe should refuse it with a {error_type.__name__} naming {text!r}, "
                    f"but gave:\n{show(outcome)}"
                )
                break
    else:
        rule = "reactivex with a Subject source" if subject_rule else "reactivex"
        for outcome in outcomes:
            if _untimed(outcome, case) != _untimed(expected, case):
                problems.append(
                    f"open_pipe gave:\n{show(outcome)}\n{rule} gives:\n{show(expected)}"
                )
                break
    assert not problems, f"{case.id} with a {kind} source: " + "\n".join(problems)
