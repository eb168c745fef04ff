"""``open_pipe``: run Rx operators over a source and read the results as an anyio stream.

The pump owns the only loop: it pulls one item from the source, pushes it through the
operator chain synchronously, and the chain's outputs land in the pipe's bounded buffer
(:mod:`rxflow._handoff`). It pulls again only while the consumer has room, so a slow
consumer slows the source. Outputs that operators emit on their own (a window closing on a
timer) land in the same buffer, from the pipe's :class:`~rxflow.AnyioScheduler`.

A source that cannot be paused (a ``reactivex.Observable``) is subscribed instead of pumped,
and the buffer applies the chosen overflow policy to what it pushes.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import Any, TypeAlias, TypeGuard, TypeVar, cast, overload

import anyio
import anyio.lowlevel
import attrs
from anyio.abc import TaskStatus
from reactivex import Observable, abc
from reactivex.disposable import Disposable, SingleAssignmentDisposable

from rxflow._handoff import OVERFLOW_POLICIES, Handoff, OverflowPolicy
from rxflow._loop_thread import LoopThread
from rxflow._source_time import SourceTime, current_source_time
from rxflow.errors import SourceNotRerunnableError, SourceOverflowError
from rxflow.scheduler import AnyioScheduler

T = TypeVar("T")
A = TypeVar("A")
B = TypeVar("B")
C = TypeVar("C")
D = TypeVar("D")
E = TypeVar("E")
F = TypeVar("F")

Source: TypeAlias = (
    AsyncIterable[T]
    | Iterable[T]
    | Observable[T]
    | AbstractAsyncContextManager[AsyncIterable[T] | Iterable[T]]
    | Callable[[], AsyncIterable[T] | Iterable[T] | AbstractAsyncContextManager[Any]]
)
"""What ``open_pipe`` reads: an async iterable (an async generator, an anyio receive stream),
a plain iterable, a ``reactivex.Observable``, an async context manager that yields an
iterable (a connector's source, entered for the life of the pipe), or a function that
makes any of these, called for each run of the source (``retry``, ``repeat``)."""

Operator: TypeAlias = Callable[[Observable[Any]], Observable[Any]]

SourceFactory: TypeAlias = Callable[
    [], AsyncIterable[Any] | Iterable[Any] | AbstractAsyncContextManager[Any]
]
"""A function that makes a fresh source each time it is called: a pipe calls it for each
run of the source (``retry`` around a connector reconnects with a fresh connection)."""

DEFAULT_MAX_BUFFER_SIZE = 128

# The pump yields to the event loop at least this often, whatever the source does.
_PULLS_PER_CHECKPOINT = 128


@attrs.frozen
class PipeStats:
    """Counters of one pipe, read with :meth:`Pipe.stats`.

    Attributes:
        admitted: items the source produced into the pipe (pulled, or pushed).
        delivered: items the consumer has received.
        buffered: outputs waiting for the consumer.
        dropped: outputs the overflow policy dropped (pushed sources only).
    """

    admitted: int
    delivered: int
    buffered: int
    dropped: int


class _Inlet(Observable[T]):
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


class Pipe(Handoff[T]):
    """The consumer end of :func:`open_pipe`: an anyio ``ObjectReceiveStream`` of outputs.

    Read it with ``async for item in pipe`` or ``await pipe.receive()``. An error raised by
    the source or an operator comes out of the read as the original exception (with a note
    naming the pipe) after every item emitted before it; completion ends the iteration.

    Example:
        >>> import anyio
        >>> from reactivex import operators as ops
        >>> from rxflow import open_pipe
        >>> async def main():
        ...     async with open_pipe(range(5), ops.map(lambda x: x * 10)) as pipe:
        ...         print([x async for x in pipe], pipe.stats().delivered)
        >>> anyio.run(main)
        [0, 10, 20, 30, 40] 5
    """

    def __init__(
        self,
        source: AsyncIterable[Any] | Iterable[Any] | Observable[Any] | SourceFactory,
        operators: tuple[Operator, ...],
        max_buffer_size: int,
        overflow: OverflowPolicy | None,
        on_drop: Callable[[T], object] | None,
    ) -> None:
        super().__init__(max_buffer_size, overflow, on_drop)
        pushed = source if isinstance(source, Observable) else None
        self._source = source
        self._loop_thread = LoopThread()  # created on the loop: a pipe opens in async code
        self._inlet: _Inlet[Any] = _Inlet(
            pushed, self._loop_thread, _can_be_read_again(source), _describe(source)
        )
        self._inlet.on_rerun_after_stop = self._end_after_stop
        self._inlet.on_abandon = self._abandon_run
        self._run_scope: anyio.CancelScope | None = None  # the current run's reading
        self._chain: Observable[T] = _chained(self._inlet, operators)
        self._scope: anyio.CancelScope | None = None
        self._pull_scope: anyio.CancelScope | None = None
        self._stop_requested = False
        self._subscription: abc.DisposableBase | None = None
        self._source_error: Exception | None = None
        # Stands still while the pump waits for the consumer: windows measure the source's
        # idleness on it. A Flow passes its own (it also pauses it at in-flight limits).
        self._source_time = current_source_time() or SourceTime()

    def stop(self) -> None:
        """Stop taking items from the source, gracefully.

        The operators see the source complete, so open windows and buffers are flushed;
        the consumer then receives those last outputs and the end of the stream.
        """
        self._stop_requested = True
        self._inlet.stopped = True
        if self._pull_scope is not None:
            self._pull_scope.cancel()
        if isinstance(self._source, Observable):
            self._inlet.stop_pushed()

    def stats(self) -> PipeStats:
        """A snapshot of this pipe's counters."""
        return PipeStats(
            admitted=self._inlet.admitted,
            delivered=self._taken,
            buffered=len(self._items),
            dropped=self._dropped,
        )

    # -- running the pipe --------------------------------------------------------------

    async def _run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        try:
            async with anyio.create_task_group() as task_group:
                self._scope = task_group.cancel_scope
                scheduler = AnyioScheduler(
                    task_group,
                    on_error=self._fail,
                    pace=self._pace,
                    source_gate=self,
                    max_buffer_size=self._limit,
                )
                self._inlet.scheduler = scheduler
                with self._source_time.activated():  # event-time windows read it
                    self._subscription = self._chain.subscribe(
                        self._outputs_from_any_thread(),
                        self._from_any_thread(self._on_chain_error),
                        self._from_any_thread(self._on_chain_completed),
                        scheduler=scheduler,
                    )
                if not isinstance(self._source, Observable):
                    task_group.start_soon(self._pump, name="rxflow pipe pump")
                task_status.started()
                # Hold the subscription until the pipe ends or its consumer leaves: both
                # cancel this task group.
                await anyio.sleep_forever()
        finally:
            if self._subscription is not None:
                self._subscription.dispose()

    def _outputs_from_any_thread(self) -> Callable[[T], None]:
        """The chain's ``on_next``: :meth:`put` on the loop's thread; from another thread
        (after ``observe_on(ThreadPoolScheduler())``) the item is handed to the loop."""
        put, loop_ident = self.put, self._loop_thread.ident
        get_ident, call_soon = threading.get_ident, self._loop_thread.call_soon

        def on_next(item: T) -> None:
            if get_ident() == loop_ident:
                put(item)
            else:
                call_soon(put, item)

        return on_next

    def _from_any_thread(self, callback: Callable[..., None]) -> Callable[..., None]:
        loop_thread = self._loop_thread

        def call(*args: Any) -> None:
            if loop_thread.is_current():
                callback(*args)
            else:
                loop_thread.call_soon(callback, *args)

        return call

    async def _pace(self) -> None:
        """What async sources inside the chain await between items (``scheduler.pace``)."""
        await self.wait_for_room(inner_source=True)
        if not self.is_open:
            # The pipe is over and its tasks are cancelled: let this one see it, instead of
            # returning at once forever to a source that never awaits.
            await anyio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        """Stop reading: buffered outputs are discarded and the pipe's work is cancelled."""
        self._close()
        self._cancel_tasks()

    def _shut_down(self) -> None:
        """The consumer left ``open_pipe``: cancel every task and close the stream."""
        self._close()
        if self._scope is not None:
            self._scope.cancel()

    async def _pump(self) -> None:
        inlet = self._inlet
        with anyio.CancelScope() as self._pull_scope:
            if self._stop_requested:
                self._pull_scope.cancel()
            await inlet.wait_for_observer()
            # One run per pass: another comes when an operator subscribes again after the
            # end (repeat, retry); the pipe's end cancels this task meanwhile.
            while await self._run_source():
                await inlet.wait_for_rerun()
        if self._stop_requested and not (self._ended or self._closed):
            try:  # stop() cancelled the pulling: the chain completes, windows flush
                inlet.on_completed()
            except Exception as error:
                self._fail(error)

    async def _run_source(self) -> bool:
        """Read the source once, passing its end on; False once the pipe is over."""
        self._inlet.run_began()
        async with AsyncExitStack() as run:
            iterable = await self._open_run(run)
            iterator: Any = (
                aiter(iterable) if isinstance(iterable, AsyncIterable) else iter(iterable)
            )
            exhausted = False
            try:
                with anyio.CancelScope() as self._run_scope:  # _abandon_run cancels it
                    if isinstance(iterable, AsyncIterable):
                        exhausted = await self._pump_async(iterator.__anext__)
                    else:
                        exhausted = await self._pump_sync(iterator.__next__)
                if exhausted and not (self._ended or self._closed):
                    try:
                        self._inlet.on_completed()
                    except Exception as error:
                        self._fail(error)
            finally:
                with anyio.CancelScope(shield=True):
                    await _close_iterator(iterator)
        self._inlet.run_due()  # an operator that subscribes again (repeat) does it now
        return not (self._ended or self._closed)

    async def _open_run(self, run: AsyncExitStack) -> AsyncIterable[Any] | Iterable[Any]:
        """What this run reads: the source itself, or what its factory makes (a connector's
        source is entered, and left when the run ends)."""
        source = self._source
        assert not isinstance(source, Observable)  # subscribed, never pumped
        if isinstance(source, AsyncIterable | Iterable):
            return source
        made = source()
        if _is_context_manager(made):
            made = await run.enter_async_context(made)
        if not isinstance(made, AsyncIterable | Iterable) or isinstance(made, str | bytes):
            raise TypeError(
                f"open_pipe(): the source function {_describe(source)} returned "
                f"{type(made).__name__}, not an iterable, an async iterable or an async "
                "context manager yielding one"
            )
        return made

    def _abandon_run(self) -> None:
        """The run's observers all left for a run of their own: stop reading this one
        (at the pump's next await; what it pulls meanwhile reaches no observer)."""
        if self._run_scope is not None:
            self._run_scope.cancel()

    def _end_after_stop(self) -> None:
        """stop() was asked for, and an operator subscribed again (a repeat() around the
        source): there is no new run, so the output ends here."""
        self._on_chain_completed()

    # The two pump loops are the hot path: one pull, one push, a room check per item.
    # They differ only in how they pull; the sync one avoids a coroutine per item. Each
    # returns True when the source is exhausted, False when the pipe ended while pumping
    # or the source failed (its error was passed on).

    async def _pump_async(self, pull: Callable[[], Awaitable[Any]]) -> bool:
        emit, items, limit = self._inlet.on_next, self._items, self._limit
        scheduler = self._inlet.scheduler
        assert scheduler is not None  # set before the pump starts
        countdown = _PULLS_PER_CHECKPOINT
        while True:
            if (len(items) >= limit or self._holds) and not self.has_room():
                await self._wait_for_room_held_back()
                if self._ended or self._closed:
                    return False
                continue
            try:
                item = await pull()
            except StopAsyncIteration:
                return True
            except Exception as error:
                self._source_failed(error)
                return False
            try:
                emit(item)
                if scheduler.due_now:  # e.g. flat_map's inner of(...): its items come now
                    scheduler.run_due()
            except Exception as error:
                self._fail(error)
                return False
            if self._ended or self._closed:
                return False
            countdown -= 1
            if not countdown:
                # A source that never awaits, feeding operators that hold or drop items
                # (filter, delay), would otherwise never let other tasks run.
                countdown = _PULLS_PER_CHECKPOINT
                await anyio.lowlevel.checkpoint()

    async def _pump_sync(self, pull: Callable[[], Any]) -> bool:
        emit, items, limit = self._inlet.on_next, self._items, self._limit
        scheduler = self._inlet.scheduler
        assert scheduler is not None  # set before the pump starts
        countdown = _PULLS_PER_CHECKPOINT
        while True:
            if (len(items) >= limit or self._holds) and not self.has_room():
                await self._wait_for_room_held_back()
                if self._ended or self._closed:
                    return False
                continue
            try:
                item = pull()
            except StopIteration:
                return True
            except Exception as error:
                self._source_failed(error)
                return False
            try:
                emit(item)
                if scheduler.due_now:  # e.g. flat_map's inner of(...): its items come now
                    scheduler.run_due()
            except Exception as error:
                self._fail(error)
                return False
            if self._ended or self._closed:
                return False
            countdown -= 1
            if not countdown:
                countdown = _PULLS_PER_CHECKPOINT
                await anyio.lowlevel.checkpoint()

    async def _wait_for_room_held_back(self) -> None:
        """Wait for the consumer; meanwhile the source is held back, not idle."""
        source_time = self._source_time
        source_time.pause()
        try:
            await self.wait_for_room()
        finally:
            source_time.resume()

    def _source_failed(self, error: Exception) -> None:
        self._source_error = error
        self._inlet.on_error(error)

    # -- the end of the chain ------------------------------------------------------------

    def _on_chain_completed(self) -> None:
        self.finish()
        self._cancel_tasks()

    def _on_chain_error(self, error: Exception) -> None:
        if not isinstance(error, SourceOverflowError):  # rxflow's own message says it all
            origin = "its source" if error is self._source_error else "its operators"
            error.add_note(
                f"rxflow: raised by {origin}, this error ended open_pipe(); the items "
                "emitted before it were delivered"
            )
        self.finish(error)
        self._cancel_tasks()

    def _fail(self, error: Exception) -> None:
        """An exception escaped the Rx chain (a scheduled action, an observer): end the pipe."""
        self._on_chain_error(error)

    def _cancel_tasks(self) -> None:
        if self._scope is not None:
            self._scope.cancel()
        if self._subscription is not None:
            self._subscription.dispose()


def _chained(head: Observable[Any], operators: tuple[Operator, ...]) -> Observable[Any]:
    """``head.pipe(*operators)``, refusing at once a stage that does not return an
    Observable (``ops.to_future()`` ends a chain; a pipe reads observables only)."""
    chain = head
    for position, operator in enumerate(operators, start=1):
        try:
            result = operator(chain)
        except Exception as error:
            error.add_note(
                f"rxflow: raised by operator {position} ({_name_of(operator)}) of open_pipe() "
                "while the chain was built"
            )
            raise
        if not isinstance(result, Observable):
            raise TypeError(
                f"open_pipe(): operator {position} ({_name_of(operator)}) returned a value "
                f"of type {type(result).__name__}, not an Observable, so nothing can follow it in "
                "a pipe. Operators that end a chain (such as ops.to_future()) have no place "
                "in open_pipe: read the pipe instead (async for, or receive())"
            )
        chain = result
    return chain


def _name_of(operator: object) -> str:
    """An operator's name for errors: ``ops.to_future`` for ``ops.to_future()``'s closure."""
    qualname = getattr(operator, "__qualname__", None) or repr(operator)
    module = getattr(operator, "__module__", "") or ""
    name = qualname.rsplit(".", 1)[-1]
    if not module.startswith("reactivex.operators."):
        return qualname
    if name.startswith("_"):  # a curried wrapper: the module says which operator
        name = module.rsplit(".", 1)[-1].lstrip("_")
    return f"ops.{name}"


def _can_be_read_again(source: object) -> bool:
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


def _describe(source: object) -> str:
    kind = type(source).__name__
    name = getattr(source, "__qualname__", None)
    return f"the source {name}()" if callable(source) and name else f"the source (a {kind})"


def _is_context_manager(value: object) -> TypeGuard[AbstractAsyncContextManager[Any]]:
    return isinstance(value, AbstractAsyncContextManager) and not isinstance(
        value, AsyncIterable | Iterable | Observable
    )


async def _close_iterator(iterator: Any) -> None:
    """Close what the pump pulled from: async generators, receive streams, generators."""
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        await aclose()
        return
    close = getattr(iterator, "close", None)
    if close is not None:
        close()


@overload
def open_pipe(
    source: Source[T],
    /,
    *,
    max_buffer_size: int = ...,
    overflow: OverflowPolicy | None = ...,
    on_drop: Callable[[T], object] | None = ...,
) -> AbstractAsyncContextManager[Pipe[T]]: ...
@overload
def open_pipe(
    source: Source[T],
    op1: Callable[[Observable[T]], Observable[A]],
    /,
    *,
    max_buffer_size: int = ...,
    overflow: OverflowPolicy | None = ...,
    on_drop: Callable[[A], object] | None = ...,
) -> AbstractAsyncContextManager[Pipe[A]]: ...
@overload
def open_pipe(
    source: Source[T],
    op1: Callable[[Observable[T]], Observable[A]],
    op2: Callable[[Observable[A]], Observable[B]],
    /,
    *,
    max_buffer_size: int = ...,
    overflow: OverflowPolicy | None = ...,
    on_drop: Callable[[B], object] | None = ...,
) -> AbstractAsyncContextManager[Pipe[B]]: ...
@overload
def open_pipe(
    source: Source[T],
    op1: Callable[[Observable[T]], Observable[A]],
    op2: Callable[[Observable[A]], Observable[B]],
    op3: Callable[[Observable[B]], Observable[C]],
    /,
    *,
    max_buffer_size: int = ...,
    overflow: OverflowPolicy | None = ...,
    on_drop: Callable[[C], object] | None = ...,
) -> AbstractAsyncContextManager[Pipe[C]]: ...
@overload
def open_pipe(
    source: Source[T],
    op1: Callable[[Observable[T]], Observable[A]],
    op2: Callable[[Observable[A]], Observable[B]],
    op3: Callable[[Observable[B]], Observable[C]],
    op4: Callable[[Observable[C]], Observable[D]],
    /,
    *,
    max_buffer_size: int = ...,
    overflow: OverflowPolicy | None = ...,
    on_drop: Callable[[D], object] | None = ...,
) -> AbstractAsyncContextManager[Pipe[D]]: ...
@overload
def open_pipe(
    source: Source[T],
    op1: Callable[[Observable[T]], Observable[A]],
    op2: Callable[[Observable[A]], Observable[B]],
    op3: Callable[[Observable[B]], Observable[C]],
    op4: Callable[[Observable[C]], Observable[D]],
    op5: Callable[[Observable[D]], Observable[E]],
    /,
    *,
    max_buffer_size: int = ...,
    overflow: OverflowPolicy | None = ...,
    on_drop: Callable[[E], object] | None = ...,
) -> AbstractAsyncContextManager[Pipe[E]]: ...
@overload
def open_pipe(
    source: Source[T],
    op1: Callable[[Observable[T]], Observable[A]],
    op2: Callable[[Observable[A]], Observable[B]],
    op3: Callable[[Observable[B]], Observable[C]],
    op4: Callable[[Observable[C]], Observable[D]],
    op5: Callable[[Observable[D]], Observable[E]],
    op6: Callable[[Observable[E]], Observable[F]],
    /,
    *,
    max_buffer_size: int = ...,
    overflow: OverflowPolicy | None = ...,
    on_drop: Callable[[F], object] | None = ...,
) -> AbstractAsyncContextManager[Pipe[F]]: ...
@overload
def open_pipe(
    source: Source[Any],
    /,
    *operators: Operator,
    max_buffer_size: int = ...,
    overflow: OverflowPolicy | None = ...,
    on_drop: Callable[[Any], object] | None = ...,
) -> AbstractAsyncContextManager[Pipe[Any]]: ...
def open_pipe(
    source: Source[Any],
    /,
    *operators: Operator,
    max_buffer_size: int = DEFAULT_MAX_BUFFER_SIZE,
    overflow: OverflowPolicy | None = None,
    on_drop: Callable[[Any], object] | None = None,
) -> AbstractAsyncContextManager[Pipe[Any]]:
    """Run ``operators`` over ``source``; yield a :class:`Pipe` to read the outputs from.

    Args:
        source: an async iterable (async generator, anyio receive stream), a plain
            iterable, a ``reactivex.Observable``, or an async context manager yielding an
            iterable (a connector's source: entered when the pipe opens, left after it
            closed). Iterables are *pulled*: one item at a time, only while the consumer
            has room. The pipe closes the iterator it pulled from when it ends
            (``aclose()``).
        operators: `reactivex` operators, applied in order as by ``Observable.pipe``. Time-
            based ones run on the pipe's :class:`~rxflow.AnyioScheduler` unless they name
            another scheduler.
        max_buffer_size: outputs the consumer has not taken yet, at most, before the source
            is no longer pulled (0: pull only when the consumer is waiting). Operators that
            emit on their own, such as a window closing on a timer, may add to it.
        overflow: required for an Observable source, which pushes and cannot be paused: what
            to do when ``max_buffer_size`` outputs are waiting: ``"error"``,
            ``"drop_newest"``, ``"drop_oldest"`` or ``"latest"``.
        on_drop: called with each output the overflow policy drops.

    Leaving the ``async with`` block, normally, by an error or by cancellation, disposes the
    subscription, cancels every timer and task of the pipe and closes the source.

    Example:
        >>> import anyio
        >>> from reactivex import operators as ops
        >>> from rxflow import open_pipe
        >>> async def numbers():
        ...     for n in range(10):
        ...         yield n
        >>> async def main():
        ...     async with open_pipe(
        ...         numbers(), ops.filter(lambda n: n % 2 == 0), ops.map(lambda n: n * n)
        ...     ) as squares:
        ...         print([square async for square in squares])
        >>> anyio.run(main)
        [0, 4, 16, 36, 64]
    """
    if isinstance(max_buffer_size, bool) or not isinstance(max_buffer_size, int):
        raise TypeError(f"open_pipe(): max_buffer_size must be an int, got {max_buffer_size!r}")
    if max_buffer_size < 0:
        raise ValueError(f"open_pipe(): max_buffer_size must be 0 or more, got {max_buffer_size}")
    if overflow is not None and overflow not in OVERFLOW_POLICIES:
        raise ValueError(
            f"open_pipe(): overflow must be one of {', '.join(map(repr, OVERFLOW_POLICIES))}, "
            f"got {overflow!r}"
        )
    if isinstance(source, Observable):
        if overflow is None:
            raise ValueError(
                "open_pipe(): the source is a reactivex Observable, which pushes items and "
                "cannot be paused, so say what happens when it outpaces the consumer: "
                "overflow='error' (buffer max_buffer_size items, then fail), 'drop_newest', "
                "'drop_oldest' or 'latest'. To get backpressure instead, pass an async "
                "iterable or a plain iterable as the source"
            )
    elif isinstance(source, str | bytes | bytearray):
        raise TypeError(
            f"open_pipe(): the source is a {type(source).__name__}, which would be read one "
            "character at a time; wrap it in a list if that is what you want"
        )
    elif not isinstance(source, AsyncIterable | Iterable | AbstractAsyncContextManager) and (
        not callable(source)
    ):
        raise TypeError(
            "open_pipe(): the source must be an async iterable, an iterable, a reactivex "
            "Observable, an async context manager yielding one, or a function that makes "
            f"one, got {type(source).__name__}"
        )
    elif overflow is not None:
        raise ValueError(
            "open_pipe(): overflow= is for Observable sources, which cannot be paused; this "
            "source is pulled only while the consumer has room, so it never overflows"
        )
    for position, operator in enumerate(operators, start=1):
        if not callable(operator):
            raise TypeError(
                f"open_pipe(): operator {position} is {operator!r}, not an operator; pass "
                "operators such as reactivex.operators.map(f), not their results"
            )
    return _running(
        source, lambda items: Pipe(items, operators, max_buffer_size, overflow, on_drop)
    )


@asynccontextmanager
async def _running(
    source: Source[Any],
    build: Callable[
        [AsyncIterable[Any] | Iterable[Any] | Observable[Any] | SourceFactory], Pipe[T]
    ],
) -> AsyncIterator[Pipe[T]]:
    async with AsyncExitStack() as stack:
        if _is_context_manager(source):
            # A connector's source: open for as long as the pipe runs, closed after it.
            source = await stack.enter_async_context(source)
            if not isinstance(source, AsyncIterable | Iterable):
                raise TypeError(
                    "open_pipe(): the source context manager yielded "
                    f"{type(source).__name__}, not an async iterable or an iterable"
                )
        # (What is left is no context manager; TypeGuard cannot say so to mypy.)
        readable = cast(
            AsyncIterable[Any] | Iterable[Any] | Observable[Any] | SourceFactory, source
        )
        async with _pumping(build(readable)) as pipe:
            yield pipe


@asynccontextmanager
async def _pumping(pipe: Pipe[T]) -> AsyncIterator[Pipe[T]]:
    body_error: Exception | None = None
    async with anyio.create_task_group() as task_group:
        await task_group.start(pipe._run)
        try:
            yield pipe
        except Exception as error:
            # Re-raised below, outside the task group, so that the caller gets its own
            # exception rather than an ExceptionGroup wrapping it.
            body_error = error
        finally:
            pipe._shut_down()
    if body_error is not None:
        raise body_error
