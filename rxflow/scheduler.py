"""A `reactivex` scheduler that runs on whichever anyio backend is running.

Rx's time-based operators (``buffer_with_time``, ``debounce``, ``delay``, ``interval``) ask a
scheduler to run an action later. :class:`AnyioScheduler` keeps those actions in one heap,
ordered by due time and then by the order they were scheduled, and runs them from a single
timer task in the task group it is given. One task instead of one task per timer keeps
per-item timers (``delay``) cheap and makes actions due at the same instant run in a fixed,
deterministic order, which virtual-time tests rely on.

Time is ``anyio.current_time()``: the event loop's monotonic clock, so trio's ``MockClock``
drives Rx time. ``now`` is that clock expressed as a UTC ``datetime`` counted from the
epoch (that is what `reactivex` schedulers return); it is *not* the wall clock.
"""

from __future__ import annotations

import heapq
import itertools
import threading
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar

import anyio
import anyio.abc
from anyio.lowlevel import checkpoint
from reactivex import abc, typing
from reactivex.scheduler.periodicscheduler import PeriodicScheduler

from rxflow._loop_thread import LoopThread
from rxflow.errors import WrongThreadError

__all__ = ["AnyioScheduler", "SourceGate"]

_TState = TypeVar("_TState")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# run_due() runs at most this many actions in one go; the timer task takes the rest, so an
# action that reschedules itself at once cannot keep the caller from returning.
_ACTIONS_PER_DRAIN = 1024


class SourceGate(Protocol):
    """Something that can stop a source being pulled: a pipe's pump."""

    def hold_source(self, *, inner_sources: bool = True) -> None: ...
    def release_source(self, *, inner_sources: bool = True) -> None: ...


class _Timer(abc.DisposableBase):
    """One scheduled action; disposing it before it runs takes it out of the schedule."""

    __slots__ = ("_action", "_result", "_scheduler", "_state", "due", "pending")

    def __init__(
        self,
        scheduler: AnyioScheduler,
        due: float,
        action: typing.ScheduledAction[Any],
        state: Any,
    ) -> None:
        self._scheduler = scheduler
        self._action: typing.ScheduledAction[Any] | None = action
        self._state = state
        self._result: abc.DisposableBase | None = None
        self.due = due
        self.pending = True

    def run(self) -> None:
        action, self._action = self._action, None
        self.pending = False
        if action is None:
            return
        result = action(self._scheduler, self._state)
        self._state = None
        if isinstance(result, abc.DisposableBase):
            self._result = result

    def dispose(self) -> None:
        if self.pending:
            self.pending = False
            self._action = None
            self._state = None
            self._scheduler._forget(self)
        if self._result is not None:
            result, self._result = self._result, None
            result.dispose()


class AnyioScheduler(PeriodicScheduler):
    """Run `reactivex` scheduled actions on the running anyio event loop.

    Args:
        task_group: where the timer task runs. The task starts when the first action is
            scheduled and ends when no action is left, so a task group that owns the
            scheduler exits as soon as its other work is done.
        on_error: called with an exception raised by a scheduled action. Without it the
            exception propagates out of the timer task and cancels ``task_group``.
        pace: awaited by observables that pull from async sources
            (:func:`rxflow.from_async_iterable`) between items. :func:`rxflow.open_pipe`
            passes one that waits until its consumer has room, so such sources are paced
            by the consumer. The default only yields to other tasks.
        source_gate: what :meth:`hold_source` and :meth:`release_source` act on;
            :func:`rxflow.open_pipe` passes its pump, so that an operator with its hands
            full (``rxflow.map_async`` at its concurrency) stops the source being pulled.
        max_buffer_size: the bound of the pipe this scheduler serves (None outside a
            pipe), by which inner async sources size how many of them may run at once
            (:func:`rxflow.from_async_iterable`).

    All scheduling must happen on the event-loop thread; from another thread, hand the
    call over with ``anyio.from_thread.run_sync``.

    Example:
        >>> import anyio, reactivex
        >>> from reactivex import operators as ops
        >>> from rxflow import AnyioScheduler
        >>> async def main():
        ...     async with anyio.create_task_group() as tg:
        ...         scheduler = AnyioScheduler(tg)
        ...         reactivex.timer(0.01).pipe(ops.map(lambda _: "tick")).subscribe(
        ...             print, scheduler=scheduler)
        >>> anyio.run(main)
        tick
    """

    def __init__(
        self,
        task_group: anyio.abc.TaskGroup,
        *,
        on_error: Callable[[Exception], None] | None = None,
        pace: Callable[[], Awaitable[None]] | None = None,
        source_gate: SourceGate | None = None,
        max_buffer_size: int | None = None,
    ) -> None:
        super().__init__()
        self.max_buffer_size = max_buffer_size
        self._task_group = task_group
        self._on_error = on_error
        self._pace = pace
        self._source_gate = source_gate
        self._thread = threading.get_ident()
        self._loop_thread = LoopThread()
        self._heap: list[tuple[float, int, _Timer]] = []
        self._sequence = itertools.count()
        self._live = 0
        self._running = False
        self._wakeup: anyio.Event | None = None
        # Set when an action is scheduled to run at once: run_due() has work. The flag is
        # all the pump reads per item, so that a pipe without such actions pays nothing.
        self.due_now = False
        self._in_action = False  # an action is running: run_due() must not nest in it

    @property
    def task_group(self) -> anyio.abc.TaskGroup:
        """The task group that timers, and async sources subscribed with this scheduler, run in."""
        return self._task_group

    @property
    def now(self) -> datetime:
        """The event loop's clock (``anyio.current_time()``) as a UTC datetime from the epoch."""
        self._check_thread()  # off the loop's thread there is no loop clock to read
        return _EPOCH + timedelta(seconds=anyio.current_time())

    async def pace(self) -> None:
        """Wait until an async source may push its next item (see ``pace`` above)."""
        if self._pace is None:
            await checkpoint()
        else:
            await self._pace()

    def hold_source(self, *, inner_sources: bool = True) -> None:
        """Ask the pipe this scheduler serves to pull no more items until released;
        ``inner_sources=False``: from its own source only, while the async sources
        subscribed with this scheduler go on.

        Outside a pipe (no ``source_gate``) there is nothing to hold and this does nothing.
        """
        if self._source_gate is not None:
            self._source_gate.hold_source(inner_sources=inner_sources)

    def release_source(self, *, inner_sources: bool = True) -> None:
        """Undo one :meth:`hold_source` (with the same ``inner_sources``)."""
        if self._source_gate is not None:
            self._source_gate.release_source(inner_sources=inner_sources)

    def schedule(
        self, action: typing.ScheduledAction[_TState], state: _TState | None = None
    ) -> abc.DisposableBase:
        """Run ``action`` as soon as the timer task gets its turn, after earlier-due actions."""
        self._check_thread()
        return self._add(anyio.current_time(), action, state)

    def schedule_relative(
        self,
        duetime: typing.RelativeTime,
        action: typing.ScheduledAction[_TState],
        state: _TState | None = None,
    ) -> abc.DisposableBase:
        """Run ``action`` after ``duetime`` (seconds or a ``timedelta``)."""
        self._check_thread()
        seconds = max(0.0, self.to_seconds(duetime))
        return self._add(anyio.current_time() + seconds, action, state)

    def schedule_absolute(
        self,
        duetime: typing.AbsoluteTime,
        action: typing.ScheduledAction[_TState],
        state: _TState | None = None,
    ) -> abc.DisposableBase:
        """Run ``action`` at ``duetime``, a time on this scheduler's clock (see ``now``)."""
        self._check_thread()
        due = (self.to_datetime(duetime) - _EPOCH).total_seconds()
        return self._add(max(due, anyio.current_time()), action, state)

    def run_due(self) -> None:
        """Run the actions that are due, here and now, in the order the timer task would.

        reactivex's current-thread scheduler runs what an operator schedules "now" (an
        inner ``of(...)`` of ``flat_map``, a subscription that ``concat`` or ``catch``
        defers) before the call that scheduled it returns to its caller's loop. A pipe's
        pump calls this after each item it pushes, before it pushes the source's end, and
        before its first pull, so that a pipeline gives the results reactivex gives, in the
        same order, whatever order the event loop runs tasks in. Like a trampoline it does
        not nest: called from inside a running action, it returns at once (the outer run
        picks up what was added).
        """
        if self._in_action:
            return
        self.due_now = False
        heap = self._heap
        budget = _ACTIONS_PER_DRAIN
        while heap and budget:
            due, _, timer = heap[0]
            if not timer.pending:
                heapq.heappop(heap)
                continue
            if due > anyio.current_time():
                return
            heapq.heappop(heap)
            self._live -= 1
            self._invoke(timer)
            budget -= 1
        if heap:
            self.due_now = True  # over budget: the timer task, or the next call, goes on

    def _check_thread(self) -> None:
        if threading.get_ident() != self._thread:
            error = WrongThreadError(
                "AnyioScheduler was used from a thread other than its event loop's (an "
                "operator after observe_on/subscribe_on with a thread scheduler asked it "
                "for a timer); put time-based operators before observe_on, or hand the "
                "call over with anyio.from_thread.run_sync(...)"
            )
            # Raised in the other thread, where a thread pool may swallow it: the pipe
            # that owns this scheduler fails with it too, rather than wait forever.
            if self._on_error is not None:
                self._loop_thread.call_soon(self._on_error, error)
            raise error

    def _add(
        self, due: float, action: typing.ScheduledAction[Any], state: Any
    ) -> abc.DisposableBase:
        timer = _Timer(self, due, action, state)
        if due <= anyio.current_time():
            self.due_now = True
        first = not self._heap or due < self._heap[0][0]
        heapq.heappush(self._heap, (due, next(self._sequence), timer))
        self._live += 1
        if not self._running:
            self._running = True
            self._task_group.start_soon(self._run_timers, name="rxflow AnyioScheduler timers")
        elif first:
            self._wake()
        return timer

    def _forget(self, timer: _Timer) -> None:
        """A pending timer was disposed: it stays in the heap, skipped when it comes up."""
        self._live -= 1
        if self._live == 0:
            # Nothing left to run: let the timer task end now rather than at the disposed
            # timer's due time, so the task group is not held open by a cancelled timeout.
            self._heap.clear()
            self._wake()

    def _wake(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()

    async def _run_timers(self) -> None:
        try:
            while self._heap:
                due, _, timer = self._heap[0]
                if not timer.pending:
                    heapq.heappop(self._heap)
                    continue
                if due > anyio.current_time():
                    self._wakeup = anyio.Event()
                    with anyio.CancelScope(deadline=due):
                        await self._wakeup.wait()
                    self._wakeup = None
                    continue
                heapq.heappop(self._heap)
                self._live -= 1
                self._invoke(timer)
                # Yield between actions so that an action that reschedules itself at once
                # cannot starve the event loop.
                await checkpoint()
        finally:
            self._running = False

    def _invoke(self, timer: _Timer) -> None:
        nested, self._in_action = self._in_action, True
        try:
            timer.run()
        except Exception as exc:
            if self._on_error is None:
                raise
            self._on_error(exc)
        finally:
            self._in_action = nested
