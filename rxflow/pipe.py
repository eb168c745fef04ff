"""``open_pipe``: run Rx operators over a source and read the results as an anyio stream.

The pipe has two ends sharing one state (:mod:`rxflow._handoff`): :class:`Pipe`, the
consumer end you read, and a producer end that the pump (:mod:`rxflow._pump`) and the
operator chain write into. The pump pulls the source only while the consumer has room, so a
slow consumer slows the source; a source that cannot be paused (a ``reactivex.Observable``)
is subscribed instead, and its outputs follow the chosen overflow policy.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import Any, TypeAlias, TypeVar, cast, overload

import anyio
import attrs
from anyio.abc import ObjectReceiveStream
from reactivex import Observable

from rxflow._fusion import PipeStage
from rxflow._handoff import PipeProducer, PipeState
from rxflow._overflow import OVERFLOW_POLICIES, OverflowPolicy
from rxflow._pump import Operator, Pump, Readable, SourceFactory, is_context_manager
from rxflow._receiving import receive_when_ready
from rxflow._runs import RunSource
from rxflow._taking import PipeBatches, checked_max_items, empty_read_error, receive_batch
from rxflow._task_groups import background_tasks

__all__ = [
    "DEFAULT_MAX_BUFFER_SIZE",
    "Operator",
    "Pipe",
    "PipeStage",
    "PipeStats",
    "Source",
    "SourceFactory",
    "open_pipe",
]

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
    | RunSource[T]
    | Observable[T]
    | AbstractAsyncContextManager[AsyncIterable[T] | Iterable[T] | RunSource[T]]
    | Callable[[], AsyncIterable[T] | Iterable[T] | AbstractAsyncContextManager[Any]]
)
"""What ``open_pipe`` reads: an async iterable (an async generator, an anyio receive stream),
a plain iterable, a source that hands over runs (``async def next_run()``), a
``reactivex.Observable``, an async context manager that yields an iterable (a connector's
source, entered for the life of the pipe), or a function that makes any of these, called for
each run of the source (``retry``, ``repeat``)."""

DEFAULT_MAX_BUFFER_SIZE = 128


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


class Pipe(ObjectReceiveStream[T]):
    """The consumer end of :func:`open_pipe`: an anyio ``ObjectReceiveStream`` of outputs.

    Read it with ``async for item in pipe`` or ``await pipe.receive()``, or many items at a
    time with :meth:`batches` and :meth:`receive_batch`. An error raised by
    the source or an operator comes out of the read as the original exception (with a note
    naming the pipe) after every item emitted before it; completion ends the iteration.

    ``receive()`` returns the next item without a checkpoint while items are buffered; it
    blocks (and is then cancellable) only when none is.

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

    def __init__(self, state: PipeState[T], pump: Pump[T]) -> None:
        self._state = state
        # The state's deque, never replaced: read on every item without a second lookup.
        self._items = state.items
        self._pump = pump

    async def receive(self) -> T:
        """Return the next item; raise ``anyio.EndOfStream`` when the pipe has completed.

        If the pipe failed, the original exception is raised once, after every item
        emitted before it.
        """
        if self._items:
            return self.receive_nowait()
        return await self._receive_when_ready()

    async def __anext__(self) -> T:
        # receive_nowait() inlined: this is the per-item path of `async for`. No checkpoint
        # while items are buffered: the pump, the pipe's timers and other tasks that push
        # refill the buffer only while this task is suspended, so a consumer that awaits
        # nothing else (and pushes nothing itself) still finds it empty, and blocks (a
        # cancellation point), at least once per max_buffer_size items plus what operators
        # emit on their own. A checkpoint
        # every N items would add a pass of the event loop each time for no fairness
        # gained. What is left per item is this coroutine: an async generator returned by
        # __aiter__ measured ~20 ns/item less (of ~400 through the chain benchmark), but an
        # iterator held across a cancellation would then end silently instead of going
        # on; batches() skips the per-item await altogether.
        items = self._items
        if items:
            item = items.popleft()
            state = self._state
            state.taken += 1
            if state.producer_waiting is not None and len(items) <= state.low_water:
                state.wake_producer()
            return item
        try:
            return await self._receive_when_ready()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    def receive_nowait(self) -> T:
        """Return a buffered item at once; raise ``anyio.WouldBlock`` if none is buffered.

        After the last item it raises like :meth:`receive` (the error, then the end).
        """
        items, state = self._items, self._state
        if items:
            item = items.popleft()
            state.taken += 1
            if state.producer_waiting is not None and len(items) <= state.low_water:
                state.wake_producer()
            return item
        raise empty_read_error(state)

    async def _receive_when_ready(self) -> T:
        return await receive_when_ready(self.receive_nowait, self._state.consumer_wakeup)

    async def receive_batch(self, max_items: int | None = None) -> list[T]:
        """Every buffered item, oldest first, up to ``max_items`` (None: no limit), waiting
        until there is at least one; raise ``anyio.EndOfStream`` when the pipe has completed.

        The items taken leave the pipe's bound at once: the source is pulled again as if
        they had been received one by one, so a slow consumer of batches still slows the
        source, and a batch never holds more than the buffer did. As :meth:`receive`, it
        returns without a checkpoint while items are buffered and blocks (cancellably) only
        when none is; if the pipe failed, its error is raised after every item emitted
        before it. The batch is a new list, the caller's to keep.

        Example:
            >>> import anyio
            >>> from rxflow import open_pipe
            >>> async def main():
            ...     async with open_pipe(range(5), max_buffer_size=4) as pipe:
            ...         await anyio.sleep(0)  # the pump fills the buffer meanwhile
            ...         print(await pipe.receive_batch(max_items=3))
            ...         print(await pipe.receive())
            >>> anyio.run(main)
            [0, 1, 2]
            3
        """
        return await receive_batch(self._state, checked_max_items(max_items, "receive_batch()"))

    def batches(self, max_items: int | None = None) -> AsyncIterator[list[T]]:
        """Iterate over the outputs in lists, each what :meth:`receive_batch` returns.

        The iteration ends when the pipe completes, and raises the pipe's error after the
        last items if it failed; ``async for item in pipe`` may go on where a ``break`` from
        it left off. Reading in batches skips the per-item ``await`` of ``async for``, which
        matters when the pipe moves millions of small items.

        Example:
            >>> import anyio
            >>> from reactivex import operators as ops
            >>> from rxflow import open_pipe
            >>> async def main():
            ...     async with open_pipe(range(10), ops.map(lambda n: n * n)) as pipe:
            ...         total = 0
            ...         async for batch in pipe.batches(max_items=256):
            ...             total += sum(batch)
            ...         print(total)
            >>> anyio.run(main)
            285
        """
        return PipeBatches(self._state, checked_max_items(max_items, "batches()"))

    def stop(self) -> None:
        """Stop taking items from the source, gracefully.

        The operators see the source complete, so open windows and buffers are flushed;
        the consumer then receives those last outputs and the end of the stream.
        """
        self._pump.stop()

    def stats(self) -> PipeStats:
        """A snapshot of this pipe's counters."""
        state = self._state
        return PipeStats(
            admitted=self._pump.inlet.admitted,
            delivered=state.taken,
            buffered=len(state.items),
            dropped=state.dropped,
        )

    def plan(self) -> tuple[PipeStage, ...]:
        """The stages this pipe's operators run as, in order, saying which were fused.

        Consecutive simple operators (``map``, ``filter``, ``scan``, ``take``, ``skip``,
        ``take_while``, ``skip_while``, ``distinct_until_changed``, ``pluck``,
        ``pluck_attr``, ``starmap``) run as one fused stage: one function per item instead
        of one observer per operator, with the same behaviour. Any other operator is a stage
        of its own, run by reactivex as it is. ``RXFLOW_FUSION=0`` in the environment turns
        fusion off.

        Example:
            >>> import anyio
            >>> from reactivex import operators as ops
            >>> from rxflow import open_pipe
            >>> def double(n):
            ...     return n * 2
            >>> async def main():
            ...     async with open_pipe(
            ...         range(3), ops.map(double), ops.filter(bool), ops.delay(0.0)
            ...     ) as pipe:
            ...         print([str(stage) for stage in pipe.plan()])
            >>> anyio.run(main)
            ['fused(map(double) -> filter(bool))', 'ops.delay']
        """
        return self._pump.plan

    async def aclose(self) -> None:
        """Stop reading: buffered outputs are discarded and the pipe's work is cancelled."""
        self._pump.shut_down()
        self._pump.cancel()


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
    elif not isinstance(
        source, AsyncIterable | Iterable | RunSource | AbstractAsyncContextManager
    ) and (not callable(source)):
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
    return _running(source, operators, lambda: PipeState(max_buffer_size, overflow, on_drop))


@asynccontextmanager
async def _running(
    source: Source[Any], operators: tuple[Operator, ...], build: Callable[[], PipeState[T]]
) -> AsyncIterator[Pipe[T]]:
    async with AsyncExitStack() as stack:
        if is_context_manager(source):
            # A connector's source: open for as long as the pipe runs, closed after it.
            source = await stack.enter_async_context(source)
            if not isinstance(source, AsyncIterable | Iterable | RunSource):
                raise TypeError(
                    "open_pipe(): the source context manager yielded "
                    f"{type(source).__name__}, not an async iterable or an iterable"
                )
        state = build()
        pump = Pump(PipeProducer(state), _readable(source), operators)
        async with background_tasks() as tasks:
            await tasks.start(pump.run)
            try:
                yield Pipe(state, pump)
            finally:
                pump.shut_down()


def _readable(source: object) -> Readable:
    """``source`` once a context manager was entered (TypeGuard cannot narrow it so)."""
    assert not is_context_manager(source)
    return cast(Readable, source)
