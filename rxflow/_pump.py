"""The pump: a pipe's one loop, pulling its source into the operator chain.

It pulls one item from the source (or one run, from a :class:`~rxflow._runs.RunSource`),
pushes it through the chain synchronously, and the chain's outputs land in the pipe's
bounded buffer through its producer end (:mod:`rxflow._handoff`). It pulls again only while
the consumer has room, so a slow consumer slows the source. Outputs that operators emit on
their own (a window closing on a timer) land in the same buffer, from the pipe's
:class:`~rxflow.AnyioScheduler`.

A source that cannot be paused (a ``reactivex.Observable``) is subscribed by the inlet
instead of pumped, and the producer end applies the overflow policy to what it pushes.
"""

from __future__ import annotations

import threading
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Sequence,
)
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from typing import Any, Generic, TypeAlias, TypeGuard, TypeVar

import anyio
import anyio.lowlevel
from anyio.abc import TaskStatus
from reactivex import Observable, abc

from rxflow._chain import chained
from rxflow._fusion import PULLS_PER_CHECKPOINT, DirectFunctions, DirectSink, FusedOperator
from rxflow._fusion_code import pump_fused_runs
from rxflow._handoff import PipeProducer
from rxflow._inlet import Inlet, can_be_read_again, describe_source
from rxflow._loop_thread import LoopThread
from rxflow._runs import RunSource
from rxflow._source_time import SourceTime, current_source_time
from rxflow.errors import SourceOverflowError
from rxflow.scheduler import AnyioScheduler

__all__ = ["Operator", "Pump", "Readable", "SourceFactory", "is_context_manager"]

T = TypeVar("T")

Operator: TypeAlias = Callable[[Observable[Any]], Observable[Any]]

SourceFactory: TypeAlias = Callable[
    [], AsyncIterable[Any] | Iterable[Any] | RunSource[Any] | AbstractAsyncContextManager[Any]
]
"""A function that makes a fresh source each time it is called: a pipe calls it for each
run of the source (``retry`` around a connector reconnects with a fresh connection)."""

Readable: TypeAlias = (
    AsyncIterable[Any] | Iterable[Any] | RunSource[Any] | Observable[Any] | SourceFactory
)
"""What a pump reads once a source context manager was entered."""


class Pump(Generic[T]):
    """Runs one pipe: subscribes its chain, pulls its source, and ends it.

    The consumer end (:class:`rxflow.Pipe`) asks it to :meth:`stop` (gracefully) or to
    :meth:`cancel` (at once); :func:`rxflow.open_pipe` starts :meth:`run` in a task group
    and calls :meth:`shut_down` when its block is left.
    """

    def __init__(
        self,
        producer: PipeProducer[T],
        source: Readable,
        operators: tuple[Operator, ...],
    ) -> None:
        self._producer = producer
        self._state = producer.state
        producer.on_failure = self._fail
        pushed = source if isinstance(source, Observable) else None
        self._source = source
        self._loop_thread = LoopThread()  # created on the loop: a pipe opens in async code
        self.inlet: Inlet[Any] = Inlet(
            pushed, self._loop_thread, can_be_read_again(source), describe_source(source)
        )
        self.inlet.on_rerun_after_stop = self._end_after_stop
        self.inlet.on_abandon = self._abandon_run
        self._run_scope: anyio.CancelScope | None = None  # the current run's reading
        self._chain: Observable[T]
        self._chain, self.plan, fused = chained(self.inlet, operators)
        # A pulled source whose whole chain is one fused stage: the pump calls the fused
        # function itself, which puts its outputs straight into the buffer (_subscribe_direct).
        self._direct = None if isinstance(source, Observable) else fused
        # A chain that is one fused stage: its on_next, on_run and pump loop (build_direct).
        self._fused_functions: DirectFunctions | None = None
        self._scope: anyio.CancelScope | None = None
        self._pull_scope: anyio.CancelScope | None = None
        self._stop_requested = False
        self._subscription: abc.DisposableBase | None = None
        self._source_error: Exception | None = None
        # Stands still while the pump waits for the consumer: windows measure the source's
        # idleness on it. A Flow passes its own (it also pauses it at in-flight limits).
        self._source_time = current_source_time() or SourceTime()

    def stop(self) -> None:
        """Stop taking items from the source; the chain sees it complete (see Pipe.stop)."""
        self._stop_requested = True
        self.inlet.stopped = True
        if self._pull_scope is not None:
            self._pull_scope.cancel()
        if isinstance(self._source, Observable):
            self.inlet.stop_pushed()

    def cancel(self) -> None:
        """The pipe is over: cancel its tasks and dispose the subscription."""
        if self._scope is not None:
            self._scope.cancel()
        if self._subscription is not None:
            self._subscription.dispose()

    def shut_down(self) -> None:
        """The consumer left ``open_pipe``: close its end and cancel every task."""
        self._close_consumer_end()
        if self._scope is not None:
            self._scope.cancel()

    def _close_consumer_end(self) -> None:
        state = self._state
        state.closed = True
        state.capacity = 0  # later puts are ignored (see PipeProducer.finish)
        state.items.clear()
        state.wake_producer()

    # -- running the pipe --------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        try:
            async with anyio.create_task_group() as task_group:
                self._scope = task_group.cancel_scope
                scheduler = AnyioScheduler(
                    task_group,
                    on_error=self._fail,
                    pace=self._pace,
                    source_gate=self._producer,
                    max_buffer_size=self._state.limit,
                )
                self.inlet.scheduler = scheduler
                with self._source_time.activated():  # event-time windows read it
                    if self._direct is not None:
                        self._subscribe_direct(self._direct, scheduler)
                    else:
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

    def _subscribe_direct(self, fused: FusedOperator, scheduler: AnyioScheduler) -> None:
        """Subscribe a chain that is one fused stage, which the pump then calls itself.

        As subscribing ``self._chain``, without the inlet's dispatch (the fused stage is its
        only observer: nothing in the chain subscribes again) and the outputs' thread check
        (the pump is on the loop's thread); the fused function counts what is admitted and
        puts into the buffer, and the sink ends as reactivex's observers would.
        """
        sink = DirectSink(self._producer.put, self._on_chain_error, self._on_chain_completed)
        functions = self._fused_functions = fused.build_direct(sink, self.inlet, self._state)
        # The inlet's observer is the same on_next (one state): only the end goes through it.
        self._subscription = sink.upstream = self.inlet.subscribe(
            functions[0], sink.on_error, sink.on_completed, scheduler=scheduler
        )

    def _outputs_from_any_thread(self) -> Callable[[T], None]:
        """The chain's ``on_next``: ``put`` on the loop's thread; from another thread
        (after ``observe_on(ThreadPoolScheduler())``) the item is handed to the loop."""
        put, loop_ident = self._producer.put, self._loop_thread.ident
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
        await self._producer.wait_for_room(inner_source=True)
        if not self._producer.is_open:
            # The pipe is over and its tasks are cancelled: let this one see it, instead of
            # returning at once forever to a source that never awaits.
            await anyio.lowlevel.checkpoint()

    def _is_over(self) -> bool:
        return self._state.ended or self._state.closed

    async def _pump(self) -> None:
        inlet = self.inlet
        with anyio.CancelScope() as self._pull_scope:
            if self._stop_requested:
                self._pull_scope.cancel()
            await inlet.wait_for_observer()
            # One run per pass: another comes when an operator subscribes again after the
            # end (repeat, retry); the pipe's end cancels this task meanwhile.
            while await self._run_source():
                await inlet.wait_for_rerun()
        if self._stop_requested and not self._is_over():
            try:  # stop() cancelled the pulling: the chain completes, windows flush
                inlet.on_completed()
            except Exception as error:
                self._fail(error)

    async def _run_source(self) -> bool:
        """Read the source once, passing its end on; False once the pipe is over."""
        self.inlet.run_began()
        async with AsyncExitStack() as run:
            readable = await self._open_run(run)
            iterator: Any = None
            exhausted = False
            try:
                with anyio.CancelScope() as self._run_scope:  # _abandon_run cancels it
                    if isinstance(readable, RunSource):
                        iterator = readable
                        exhausted = await self._pump_runs(readable.next_run)
                    elif isinstance(readable, AsyncIterable):
                        iterator = aiter(readable)
                        exhausted = await self._pump_async(iterator)
                    else:
                        iterator = iter(readable)
                        exhausted = await self._pump_sync(iterator)
                if exhausted and not self._is_over():
                    try:
                        self.inlet.on_completed()
                    except Exception as error:
                        self._fail(error)
            finally:
                if iterator is not None:
                    with anyio.CancelScope(shield=True):
                        await _close_iterator(iterator)
        self.inlet.run_due()  # an operator that subscribes again (repeat) does it now
        return not self._is_over()

    async def _open_run(
        self, run: AsyncExitStack
    ) -> AsyncIterable[Any] | Iterable[Any] | RunSource[Any]:
        """What this run reads: the source itself, or what its factory makes (a connector's
        source is entered, and left when the run ends)."""
        source = self._source
        assert not isinstance(source, Observable)  # subscribed, never pumped
        if _is_readable(source):
            return source
        assert callable(source)  # open_pipe() let nothing else through
        made = source()
        if is_context_manager(made):
            made = await run.enter_async_context(made)
        if not _is_readable(made) or isinstance(made, str | bytes):
            raise TypeError(
                f"open_pipe(): the source function {describe_source(source)} returned "
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
    # They differ only in how they pull; the sync one avoids a coroutine per item (and
    # pushes the items of a run). Each returns True when the source is exhausted, False when the
    # pipe ended while pumping or the source failed (its error was passed on).

    async def _pump_async(self, iterator: AsyncIterator[Any]) -> bool:
        if self._fused_functions is not None:  # this loop, with the fused steps in its body
            return await self._fused_functions[2](iterator, self)
        pull = iterator.__anext__
        emit, state = self.inlet.on_next, self._state
        items, limit = state.items, state.limit
        scheduler = self.inlet.scheduler
        assert scheduler is not None  # set before the pump starts
        countdown = PULLS_PER_CHECKPOINT
        while True:
            if (len(items) >= limit or state.holds) and not self._producer.has_room():
                await self._wait_for_room_held_back()
                if state.ended or state.closed:
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
            if state.ended or state.closed:
                return False
            countdown -= 1
            if not countdown:
                # else a source that never awaits, into filter or delay, starves other tasks
                countdown = PULLS_PER_CHECKPOINT
                await anyio.lowlevel.checkpoint()

    async def _pump_sync(self, iterator: Iterator[Any]) -> bool:
        if self._fused_functions is not None:  # this loop, with the fused steps in its body
            return await self._fused_functions[3](iterator, self)
        pull = iterator.__next__
        emit, state = self.inlet.on_next, self._state
        items, limit = state.items, state.limit
        scheduler = self.inlet.scheduler
        assert scheduler is not None  # set before the pump starts
        countdown = PULLS_PER_CHECKPOINT
        while True:
            if (len(items) >= limit or state.holds) and not self._producer.has_room():
                await self._wait_for_room_held_back()
                if state.ended or state.closed:
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
                if scheduler.due_now:
                    scheduler.run_due()
            except Exception as error:
                self._fail(error)
                return False
            if state.ended or state.closed:
                return False
            countdown -= 1
            if not countdown:
                countdown = PULLS_PER_CHECKPOINT
                await anyio.lowlevel.checkpoint()

    async def _pump_runs(self, next_run: Callable[[], Awaitable[Sequence[Any]]]) -> bool:
        """Pull a run when the consumer has room; push its items one by one as from a plain
        iterable, waiting for room between two of them, so the bound is still counted in
        items."""
        if self._fused_functions is not None:
            return await pump_fused_runs(next_run, self._fused_functions[1], self)
        countdown = PULLS_PER_CHECKPOINT
        run: Sequence[Any] = ()
        # _pump_sync returns True at the end of a run only once there is room to pull again
        # (it checks before every pull), so the next run is pulled with room for it.
        while await self._pump_sync(iter(run)):
            try:
                run = await next_run()
            except StopAsyncIteration:
                return True
            except Exception as error:
                self._source_failed(error)
                return False
            countdown -= len(run) or 1
            if countdown <= 0:  # runs that come without awaiting (see _pump_async)
                countdown = PULLS_PER_CHECKPOINT
                await anyio.lowlevel.checkpoint()
        return False

    async def _wait_for_room_held_back(self) -> None:
        """Wait for the consumer; meanwhile the source is held back, not idle."""
        source_time = self._source_time
        source_time.pause()
        try:
            await self._producer.wait_for_room()
        finally:
            source_time.resume()

    def _source_failed(self, error: Exception) -> None:
        self._source_error = error
        self.inlet.on_error(error)

    # -- the end of the chain ------------------------------------------------------------

    def _on_chain_completed(self) -> None:
        self._producer.finish()
        self.cancel()

    def _on_chain_error(self, error: Exception) -> None:
        if not isinstance(error, SourceOverflowError):  # rxflow's own message says it all
            origin = "its source" if error is self._source_error else "its operators"
            error.add_note(
                f"rxflow: raised by {origin}, this error ended open_pipe(); the items "
                "emitted before it were delivered"
            )
        self._producer.finish(error)
        self.cancel()

    def _fail(self, error: Exception) -> None:
        """An exception escaped the Rx chain (a scheduled action, an observer) or the
        overflow policy failed the pipe: end it."""
        self._on_chain_error(error)


def _is_readable(
    value: object,
) -> TypeGuard[AsyncIterable[Any] | Iterable[Any] | RunSource[Any]]:
    return isinstance(value, AsyncIterable | Iterable | RunSource)


def is_context_manager(value: object) -> TypeGuard[AbstractAsyncContextManager[Any]]:
    """An async context manager that is not itself a source (a connector's source)."""
    return isinstance(value, AbstractAsyncContextManager) and not isinstance(
        value, AsyncIterable | Iterable | RunSource | Observable
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
