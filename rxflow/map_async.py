"""``map_async``: call an async function per item inside an Rx chain, a bounded number at once.

The calls run as tasks of the scheduler's task group (the pipe's, inside
:func:`rxflow.open_pipe`). At most ``concurrency`` items are in hand at a time, counting
those whose result waits for an earlier one (``ordered=True``); while the stage is full it
holds the pipe's source (:meth:`rxflow.AnyioScheduler.hold_source`), so the bound reaches
the source instead of becoming a queue. Disposing the subscription cancels every call.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Generic, overload

import anyio
import anyio.abc
import attrs
import reactivex
from reactivex import Observable, abc
from reactivex.disposable import CompositeDisposable, Disposable

from rxflow._checks import check_count, check_function
from rxflow._holds import Hold, current_holds
from rxflow._stage_metrics import StageMetrics, stage_name
from rxflow._typevars import ItemT, ResultT
from rxflow.errors import NoTaskGroupError
from rxflow.scheduler import AnyioScheduler
from rxflow.strategies import (
    FAIL_FAST,
    SKIPPED,
    ErrorStrategy,
    call_with_strategy,
    check_strategy,
)

__all__ = ["MapAsync", "map_async"]


@attrs.define(eq=False)  # an operator is equal only to itself, and hashable
class MapAsync(Generic[ItemT, ResultT]):
    """The operator :func:`map_async` returns: it turns an ``Observable[ItemT]`` into an
    ``Observable[ResultT]``; ``metrics`` (a :class:`rxflow.flow.metrics.StageMetrics`) counts
    its calls.

    Example:
        >>> from rxflow import map_async
        >>> async def shout(word: str) -> str:
        ...     return word.upper()
        >>> stage = map_async(shout, concurrency=2)
        >>> stage.concurrency, stage.metrics.name
        (2, 'shout')
    """

    function: Callable[[ItemT], Awaitable[ResultT] | ResultT]
    concurrency: int  # items in hand at most, those waiting for an earlier result included
    ordered: bool
    on_error: ErrorStrategy
    metrics: StageMetrics

    def __call__(self, source: Observable[ItemT]) -> Observable[ResultT]:
        def subscribe(
            observer: abc.ObserverBase[ResultT], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            if not isinstance(scheduler, AnyioScheduler):
                raise NoTaskGroupError(
                    f"map_async({self.metrics.name}) needs a task group for its calls: use it "
                    "inside rxflow.open_pipe(...), or subscribe with "
                    "scheduler=rxflow.AnyioScheduler(task_group)"
                )
            run = _Run(self, observer, scheduler)
            upstream = source.subscribe(
                run.on_next, run.on_error, run.on_completed, scheduler=scheduler
            )
            return CompositeDisposable(upstream, Disposable(run.dispose))

        return reactivex.create(subscribe)


class _Run:
    """One subscription of a :class:`MapAsync`: the items in hand and their tasks."""

    def __init__(
        self, stage: MapAsync[Any, Any], observer: abc.ObserverBase[Any], scheduler: AnyioScheduler
    ) -> None:
        self.stage = stage
        self.observer = observer
        self.scheduler = scheduler
        self.metrics = stage.metrics
        self.waiting: deque[tuple[int, Any]] = deque()  # admitted, no call started yet
        self.results: dict[int, Any] = {}  # finished, waiting for an earlier one (ordered)
        self.next_sequence = 0
        self.next_to_emit = 0
        self.in_hand = 0  # admitted and not yet emitted (or skipped)
        self.running = 0
        self.holding = False
        self.upstream_done = False
        self.ended = False
        self.scopes: set[anyio.CancelScope] = set()
        # The holds on the items in hand, by sequence (in a flow, claims on their source
        # messages: rxflow._holds); released when each one's result is emitted or skipped.
        self.holds = current_holds()
        self.held: dict[int, Hold] = {}

    # -- from upstream -------------------------------------------------------------------

    def on_next(self, item: Any) -> None:
        if self.ended:
            return
        self.metrics.received += 1
        self.held[self.next_sequence] = self.holds.hold()
        self.waiting.append((self.next_sequence, item))
        self.next_sequence += 1
        self.in_hand += 1
        self._update_hold()
        self._start_calls()

    def on_error(self, error: Exception) -> None:
        self._end()
        self.observer.on_error(error)

    def on_completed(self) -> None:
        self.upstream_done = True
        self._complete_if_done()

    # -- calls ---------------------------------------------------------------------------

    def _start_calls(self) -> None:
        while self.waiting and self.running < self.stage.concurrency:
            sequence, item = self.waiting.popleft()
            self.running += 1
            scope = anyio.CancelScope()
            self.scopes.add(scope)
            self.scheduler.task_group.start_soon(
                self._call, sequence, item, scope, name=f"rxflow map_async {self.metrics.name}"
            )

    async def _call(self, sequence: int, item: Any, scope: anyio.CancelScope) -> None:
        with scope:
            try:
                result = await call_with_strategy(
                    self.stage.function, item, self.stage.on_error, self.metrics
                )
            except Exception as error:
                if not self.ended:
                    self._end()
                    self.observer.on_error(error)
                return
            finally:
                self.scopes.discard(scope)
                self.running -= 1
            if self.ended:
                return
            self._finished(sequence, result)
            self._start_calls()
            self._complete_if_done()

    def _finished(self, sequence: int, result: Any) -> None:
        if not self.stage.ordered:
            self._emit(sequence, result)
        else:
            self.results[sequence] = result
            while self.next_to_emit in self.results:
                self._emit(self.next_to_emit, self.results.pop(self.next_to_emit))
                self.next_to_emit += 1
        self._update_hold()

    def _emit(self, sequence: int, result: Any) -> None:
        self.in_hand -= 1
        # The result carries the claim on its item's source message (a skipped one lets
        # it go: the item was handled).
        with self.holds.emitting((self.held.pop(sequence, None),)):
            self._emit_now(result)

    def _emit_now(self, result: Any) -> None:
        if result is not SKIPPED:
            self.metrics.emitted += 1
            self.observer.on_next(result)

    def _update_hold(self) -> None:
        full = self.in_hand >= self.stage.concurrency
        if full and not self.holding:
            self.holding = True
            self.scheduler.hold_source()
        elif not full and self.holding:
            self.holding = False
            self.scheduler.release_source()

    def _complete_if_done(self) -> None:
        if self.upstream_done and not self.in_hand and not self.ended:
            self._end()
            self.observer.on_completed()

    def _end(self) -> None:
        self.ended = True
        if self.holding:
            self.holding = False
            self.scheduler.release_source()

    def dispose(self) -> None:
        self._end()
        for scope in list(self.scopes):
            scope.cancel()


# Two typed forms, so that the result type is inferred: an async function's (what it
# awaits to), or a plain function's (what it returns). The async one is tried first.
@overload
def map_async(
    function: Callable[[ItemT], Awaitable[ResultT]],
    *,
    concurrency: int = ...,
    ordered: bool = ...,
    on_error: ErrorStrategy = ...,
    name: str | None = ...,
) -> MapAsync[ItemT, ResultT]: ...
@overload
def map_async(
    function: Callable[[ItemT], ResultT],
    *,
    concurrency: int = ...,
    ordered: bool = ...,
    on_error: ErrorStrategy = ...,
    name: str | None = ...,
) -> MapAsync[ItemT, ResultT]: ...
def map_async(
    function: Callable[[Any], Any],
    *,
    concurrency: int = 1,
    ordered: bool = True,
    on_error: ErrorStrategy = FAIL_FAST,
    name: str | None = None,
) -> MapAsync[Any, Any]:
    """An operator that calls ``function`` (async, or plain) on each item, up to
    ``concurrency`` items at a time, and emits the results.

    Args:
        function: called with each item; an awaitable result is awaited.
        concurrency: the most items in hand at once (being called, or finished and waiting
            for an earlier item when ``ordered``). Inside a pipe, a full stage holds the
            source.
        ordered: emit results in input order (a slow item holds back later ones), or as
            they finish.
        on_error: what a failing call does (:mod:`rxflow.strategies`): ``FailFast()``
            ends the pipeline, ``Skip()``, ``DeadLetter(sink)`` or ``Retry(...)``.
        name: the stage's name in metrics, logs and error notes (default: the function's;
            ``map_async`` for a lambda).

    Example:
        >>> import anyio
        >>> from rxflow import map_async, open_pipe
        >>> async def lookup(user_id):
        ...     await anyio.sleep(0.01 * (3 - user_id))  # later ids answer sooner
        ...     return f"user-{user_id}"
        >>> async def main():
        ...     async with open_pipe([1, 2, 3], map_async(lookup, concurrency=3)) as users:
        ...         print([user async for user in users])
        >>> anyio.run(main)
        ['user-1', 'user-2', 'user-3']
    """
    where = "map_async()"
    concurrency = check_count(where, "concurrency", concurrency)
    function = check_function(where, "function", function, "of the item (async, or plain)")
    strategy = check_strategy(on_error, where)
    stage = name or stage_name(function, "map_async")
    return MapAsync(function, concurrency, ordered, strategy, StageMetrics(stage, "map_async"))
