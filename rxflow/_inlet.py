"""Where a pipe's source enters its operator chain, and how a source is read again.

The :class:`Inlet` is the head of the chain. For a pulled source the pump calls its
``on_next``; a pushed source (an Observable) it subscribes itself. An operator that
subscribes again after a run ended (``repeat``, ``retry``, ``concat``, ``catch``) gets a new
run, as from a cold Observable; a source that can be read only once refuses it.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Callable, Iterable
from typing import TypeVar

import anyio
from reactivex import Observable, abc
from reactivex.disposable import Disposable, SingleAssignmentDisposable

from rxflow._loop_thread import LoopThread
from rxflow.errors import SourceNotRerunnableError
from rxflow.scheduler import AnyioScheduler

__all__ = ["Inlet", "can_be_read_again", "describe_source"]

T = TypeVar("T")


class Inlet(Observable[T]):
    """Head of a pipe's operator chain: where the source's items enter.

    The pump calls ``on_next`` for a pulled source; for a pushed source the inlet subscribes
    to it. Observers that subscribe while the source runs share that run. One that
    subscribes after a run ended (``repeat``, ``retry``, ``concat``, ``catch`` resubscribe)
    gets a new run, as a cold Observable would give it: the pushed source is subscribed
    again, or the pump reads the pulled source again. A source that can be read only once
    (an async generator, an iterator) refuses with :class:`~rxflow.errors.SourceNotRerunnableError`.
    """

    def __init__(
        self,
        pushed: Observable[T] | None,
        loop_thread: LoopThread,
        rerunnable: bool,
        source_name: str,
    ) -> None:
        super().__init__()
        self._pushed = pushed
        self._loop_thread = loop_thread
        self._rerunnable = rerunnable
        self._source_name = source_name
        # A pulled source's next run was asked for (an observer came after the last run
        # ended); the pump waits on the event for it.
        self._rerun_requested = False
        self._rerun_asked: anyio.Event | None = None
        # The pipe stopped gracefully: no new run. What to do with an observer that asks
        # for one (a repeat() around the source): the pipe ends its output.
        self.stopped = False
        self.on_rerun_after_stop: Callable[[], None] = lambda: None
        # Pulled sources: observers that subscribed after the current run delivered items
        # (catch subscribing again when an operator failed mid-run). Like subscribers of a
        # cold Observable, each wants the source from its start: they get the next run,
        # which starts when the current one ends, or at once if its observers all left
        # (on_abandon stops the current run).
        self._next_run: list[abc.ObserverBase[T]] = []
        self._run_began_at = 0  # `admitted` when the current run began
        self.on_abandon: Callable[[], None] = lambda: None
        self._upstream: abc.DisposableBase | None = None
        self._observers: list[abc.ObserverBase[T]] = []
        self._ended = False
        self._error: Exception | None = None
        self._observed: anyio.Event | None = None
        self.admitted = 0
        # The pipe's scheduler, once it runs: what it has due now runs before the source's
        # next item or its end, as reactivex's current-thread scheduler would run it.
        self.scheduler: AnyioScheduler | None = None

    def run_due(self) -> None:
        """Run the scheduler's actions that are due now (see AnyioScheduler.run_due)."""
        scheduler = self.scheduler
        if scheduler is not None and scheduler.due_now:
            scheduler.run_due()

    async def wait_for_observer(self) -> None:
        """Return once the chain has subscribed here.

        Some operators (``catch``, ``concat``) subscribe to their source from a scheduled
        action rather than at once; an item pushed before that would reach nobody.
        """
        self.run_due()  # subscriptions an operator deferred to the scheduler happen now
        if not self._observers and not self._ended:
            self._observed = anyio.Event()
            await self._observed.wait()

    def _subscribe_core(
        self, observer: abc.ObserverBase[T], scheduler: abc.SchedulerBase | None = None
    ) -> abc.DisposableBase:
        if not self._loop_thread.is_current():
            return self._subscribe_from_another_thread(observer, scheduler)
        if self._ended:
            if self.stopped:
                self.on_rerun_after_stop()
                return Disposable()
            if not self._rerunnable:
                observer.on_error(self._not_rerunnable("after it ended"))
                return Disposable()
            self._ended, self._error = False, None  # a new run, for this observer
            if self._pushed is None:
                self._ask_for_a_run()
        elif self._pushed is None and self.admitted > self._run_began_at:
            # Mid-run: like a cold Observable's, this subscriber wants the source from its
            # start.
            if not self._rerunnable:
                observer.on_error(self._not_rerunnable("while it was being read"))
                return Disposable()
            return self._subscribe_to_next_run(observer)
        self._observers.append(observer)
        if self._observed is not None:
            self._observed.set()
        if self._pushed is not None and self._upstream is None:
            self._upstream = self._pushed.subscribe(
                self._on_pushed,
                self._on_pushed_error,
                self._on_pushed_completed,
                scheduler=scheduler,
            )

        def unsubscribe() -> None:
            if observer in self._observers:
                self._observers.remove(observer)
            if not self._observers:
                self._dispose_upstream()
                if self._next_run and not self._ended:
                    # Nobody is left on this run, and some want one of their own: stop
                    # reading it and start theirs (the observers catch switched to).
                    self.on_abandon()
                    self._start_next_run()

        return Disposable(unsubscribe)

    # A pushed source may push from another thread (subscribe_on(ThreadPoolScheduler())):
    # what it pushes is handed to the loop's thread, in order, and handled there.

    def _on_pushed(self, item: T) -> None:
        if not self._loop_thread.is_current():
            self._loop_thread.call_soon(self._on_pushed, item)
            return
        self.on_next(item)
        self.run_due()

    def _on_pushed_error(self, error: Exception) -> None:
        if not self._loop_thread.is_current():
            self._loop_thread.call_soon(self.on_error, error)
            return
        self.on_error(error)

    def _on_pushed_completed(self) -> None:
        if not self._loop_thread.is_current():
            self._loop_thread.call_soon(self.on_completed)
            return
        self.on_completed()

    def on_next(self, item: T) -> None:
        self.admitted += 1
        observers = self._observers
        if len(observers) == 1:  # the usual case: the operator chain
            observers[0].on_next(item)
            return
        for observer in observers:
            observer.on_next(item)

    def on_error(self, error: Exception) -> None:
        if self._ended:
            return
        self.run_due()  # what the items before it started (an inner of(...)) comes first
        if self._ended:
            return
        self._ended, self._error = True, error
        for observer in self._end_of_run():
            observer.on_error(error)

    def on_completed(self) -> None:
        if self._ended:
            return
        self.run_due()
        if self._ended:
            return
        self._ended = True
        for observer in self._end_of_run():
            observer.on_completed()

    def _end_of_run(self) -> list[abc.ObserverBase[T]]:
        """The observers of the run that ends: they are done, and one that subscribes
        again while hearing of the end (``repeat``) starts the next run."""
        observers, self._observers = self._observers, []
        upstream, self._upstream = self._upstream, None  # a pushed source's run is over
        if upstream is not None:
            upstream.dispose()
        if self._next_run:
            self._start_next_run()  # after this end is delivered, the pump reads again
        return observers

    def _subscribe_from_another_thread(
        self, observer: abc.ObserverBase[T], scheduler: abc.SchedulerBase | None
    ) -> abc.DisposableBase:
        """``subscribe_on(pool)`` subscribes from a pool thread: the subscription is made on
        the loop's thread, and so is its disposal."""
        subscription = SingleAssignmentDisposable()

        def subscribe_on_the_loop() -> None:
            if not subscription.is_disposed:
                subscription.disposable = self._subscribe_core(observer, scheduler)

        self._loop_thread.call_soon(subscribe_on_the_loop)
        return Disposable(lambda: self._loop_thread.call_soon(subscription.dispose))

    def _not_rerunnable(self, when: str) -> SourceNotRerunnableError:
        return SourceNotRerunnableError(
            "open_pipe(): an operator (repeat, retry, concat, catch...) subscribed to the "
            f"source again {when}, but {self._source_name} can be read only once. Pass a "
            "source that can be read again: a list, an object whose __aiter__ starts anew, "
            "a reactivex Observable, or a function that returns a fresh source "
            "(open_pipe(make_source, ...), such as a connector's source with its arguments "
            "bound)"
        )

    def _subscribe_to_next_run(self, observer: abc.ObserverBase[T]) -> abc.DisposableBase:
        self._next_run.append(observer)

        def unsubscribe() -> None:
            if observer in self._next_run:
                self._next_run.remove(observer)

        return Disposable(unsubscribe)

    def _ask_for_a_run(self) -> None:
        self._rerun_requested = True
        if self._rerun_asked is not None:
            self._rerun_asked.set()

    def _start_next_run(self) -> None:
        """The observers waiting for a run of their own get it now."""
        waiting, self._next_run = self._next_run, []
        self._observers.extend(waiting)
        self._ended, self._error = False, None
        self._ask_for_a_run()

    def run_began(self) -> None:
        """The pump starts reading the source (again)."""
        self._run_began_at = self.admitted

    async def wait_for_rerun(self) -> None:
        """Return once an observer asked for another run of a pulled source."""
        if not self._rerun_requested:
            self._rerun_asked = anyio.Event()
            await self._rerun_asked.wait()
            self._rerun_asked = None
        self._rerun_requested = False

    def stop_pushed(self) -> None:
        """Graceful stop of a pushed source: unsubscribe from it and complete the chain."""
        self.stopped = True
        self._dispose_upstream()
        self.on_completed()

    def _dispose_upstream(self) -> None:
        upstream, self._upstream = self._upstream, None
        if upstream is not None:
            upstream.dispose()


def can_be_read_again(source: object) -> bool:
    """Whether a new run can read ``source`` from its start: an Observable, a factory, a
    list or any iterable whose iterator is a new object each time; not an iterator, an
    async generator or a stream, which are their own iterators."""
    if isinstance(source, Observable):
        return True
    if isinstance(source, AsyncIterable):
        return aiter(source) is not source
    if isinstance(source, Iterable):
        return iter(source) is not source
    return callable(source)


def describe_source(source: object) -> str:
    kind = type(source).__name__
    name = getattr(source, "__qualname__", None)
    return f"the source {name}()" if callable(source) and name else f"the source (a {kind})"
