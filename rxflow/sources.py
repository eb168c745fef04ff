"""Async sources as observables, and observables as async iterables.

An observable made from an async iterable needs a task to iterate it. rxflow never starts a
task outside a task group: the task runs in the group of the :class:`~rxflow.AnyioScheduler`
it is subscribed with (every subscription inside :func:`rxflow.open_pipe` has one), or in
the ``task_group`` given explicitly. Subscribed with neither, it fails with
:class:`~rxflow.errors.NoTaskGroupError`, delivered to the observer's ``on_error`` as Rx
delivers any subscription failure.
"""

from __future__ import annotations

import weakref
from collections.abc import AsyncIterable, AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeVar

import anyio
import anyio.abc
import anyio.lowlevel
import reactivex
from anyio.abc import ObjectReceiveStream
from reactivex import Observable, abc
from reactivex.disposable import Disposable

from rxflow._overflow import OverflowPolicy
from rxflow.errors import NoTaskGroupError
from rxflow.pipe import DEFAULT_MAX_BUFFER_SIZE, Pipe, open_pipe
from rxflow.scheduler import AnyioScheduler

__all__ = ["INNER_SOURCES_BEYOND_BUFFER", "from_async_iterable", "from_stream", "to_async_iterable"]

T = TypeVar("T")

# An iterating task yields to the event loop at least this often, whatever its source does.
_ITEMS_PER_CHECKPOINT = 64

INNER_SOURCES_BEYOND_BUFFER = 16
"""Inside a pipe, at most ``max_buffer_size`` + this many async sources subscribed with its
scheduler (the inner sources of ``flat_map`` or ``merge``) are live at once: subscribed and
not yet finished. The pipe reads its own source no further until one of them ends."""


class _LiveSources:
    """The async sources a pipe's scheduler iterates now. At the limit the pipe's source is
    held (:meth:`AnyioScheduler.hold_source`), so that no item is pulled that would start
    one more: every one is a task, and each may hold items of its own."""

    __slots__ = ("_limit", "_live", "_scheduler")

    def __init__(self, scheduler: AnyioScheduler, limit: int) -> None:
        self._scheduler = scheduler
        self._limit = limit
        self._live = 0

    def started(self) -> None:
        self._live += 1
        if self._live == self._limit:
            self._scheduler.hold_source(inner_sources=False)

    def ended(self) -> None:
        if self._live == self._limit:
            self._scheduler.release_source(inner_sources=False)
        self._live -= 1


_LIVE_SOURCES: weakref.WeakKeyDictionary[AnyioScheduler, _LiveSources] = weakref.WeakKeyDictionary()


def _live_sources(scheduler: AnyioScheduler) -> _LiveSources | None:
    """The count of a pipe's live async sources; None outside a pipe (no limit)."""
    if scheduler.max_buffer_size is None:
        return None
    live = _LIVE_SOURCES.get(scheduler)
    if live is None:
        limit = scheduler.max_buffer_size + INNER_SOURCES_BEYOND_BUFFER
        live = _LIVE_SOURCES[scheduler] = _LiveSources(scheduler, limit)
    return live


def from_async_iterable(
    source: AsyncIterable[T], *, task_group: anyio.abc.TaskGroup | None = None
) -> Observable[T]:
    """An observable that iterates ``source`` in a task and pushes each item.

    Between items the task awaits the scheduler's ``pace()``: inside :func:`rxflow.open_pipe`
    that waits until the pipe's consumer has room, so the source is paced by the consumer
    even though it enters the chain as an inner observable (``merge``, ``flat_map``).
    Disposing the subscription cancels the task and closes the iterator (``aclose()``).
    Inside a pipe, at most ``max_buffer_size`` + :data:`INNER_SOURCES_BEYOND_BUFFER` such
    sources run at once; at that many, the pipe reads its own source no further until one
    of them ends.

    Each subscription iterates ``source`` anew; an iterator (such as an async generator
    object) can be iterated only once, so subscribe to such an observable once.

    Args:
        source: the async iterable to read.
        task_group: where the iterating task runs when the subscription scheduler is not an
            :class:`~rxflow.AnyioScheduler`.

    Example:
        >>> import anyio
        >>> from reactivex import operators as ops
        >>> from rxflow import from_async_iterable, open_pipe
        >>> async def letters():
        ...     for letter in "ab":
        ...         yield letter
        >>> async def main():
        ...     async with open_pipe([1, 2], ops.flat_map(
        ...         lambda n: from_async_iterable(letters()).pipe(ops.map(lambda c: c * n))
        ...     )) as pipe:
        ...         print(sorted([x async for x in pipe]))
        >>> anyio.run(main)
        ['a', 'aa', 'b', 'bb']
    """

    def subscribe(
        observer: abc.ObserverBase[T], scheduler: abc.SchedulerBase | None = None
    ) -> abc.DisposableBase:
        live: _LiveSources | None = None
        if isinstance(scheduler, AnyioScheduler):
            group = task_group or scheduler.task_group
            pace: Callable[[], Any] = scheduler.pace
            live = _live_sources(scheduler)
        elif task_group is not None:
            group, pace = task_group, anyio.lowlevel.checkpoint
        else:
            raise NoTaskGroupError(
                f"from_async_iterable({source!r}) was subscribed without a task group to "
                "iterate it in: subscribe it inside rxflow.open_pipe(...), or with "
                "scheduler=rxflow.AnyioScheduler(task_group), or pass task_group= to "
                "from_async_iterable()"
            )
        scope = anyio.CancelScope()

        async def iterate() -> None:
            try:
                with scope:
                    await read(aiter(source))
            finally:
                if live is not None:
                    live.ended()

        async def read(iterator: AsyncIterator[T]) -> None:
            items_until_checkpoint = _ITEMS_PER_CHECKPOINT
            try:
                async for item in iterator:
                    observer.on_next(item)
                    await pace()
                    items_until_checkpoint -= 1
                    if not items_until_checkpoint:
                        # pace() returns at once while there is room; a source that
                        # never awaits would otherwise keep the loop to itself.
                        items_until_checkpoint = _ITEMS_PER_CHECKPOINT
                        await anyio.lowlevel.checkpoint()
            except Exception as error:
                observer.on_error(error)
                return
            finally:
                aclose = getattr(iterator, "aclose", None)
                if aclose is not None:
                    with anyio.CancelScope(shield=True):
                        await aclose()
            observer.on_completed()

        if live is not None:
            live.started()  # now: the pump checks its holds before its next pull
        try:
            group.start_soon(iterate, name=f"rxflow from_async_iterable({source!r})")
        except BaseException:
            if live is not None:
                live.ended()
            raise
        return Disposable(scope.cancel)

    return reactivex.create(subscribe)


def from_stream(stream: ObjectReceiveStream[T], **kwargs: Any) -> Observable[T]:
    """An observable of the items of an anyio receive stream (a memory object stream, a
    connector's stream); the stream's end completes it. Same rules as
    :func:`from_async_iterable`, whose keyword arguments it takes; disposing the
    subscription closes the stream.

    Example:
        >>> import anyio
        >>> from rxflow import from_stream
        >>> async def main():
        ...     send, receive = anyio.create_memory_object_stream[int](3)
        ...     async with anyio.create_task_group() as tg, send:
        ...         from_stream(receive, task_group=tg).subscribe(print)
        ...         await send.send(7)
        >>> anyio.run(main)
        7
    """
    if not isinstance(stream, ObjectReceiveStream):
        raise TypeError(
            f"from_stream() takes an anyio ObjectReceiveStream, got {type(stream).__name__}; "
            "for other async iterables use from_async_iterable()"
        )
    return from_async_iterable(stream, **kwargs)


def to_async_iterable(
    observable: Observable[T],
    *,
    overflow: OverflowPolicy,
    max_buffer_size: int = DEFAULT_MAX_BUFFER_SIZE,
    on_drop: Callable[[T], object] | None = None,
) -> AbstractAsyncContextManager[Pipe[T]]:
    """Subscribe ``observable`` and read what it pushes with ``async for``.

    An observable pushes and cannot be paused, so ``overflow`` says what happens when it
    pushes ``max_buffer_size`` items the reader has not taken (see
    :data:`rxflow.OverflowPolicy`). This is :func:`rxflow.open_pipe` with no operators:
    leaving the block disposes the subscription.

    Example:
        >>> import anyio, reactivex
        >>> from rxflow import to_async_iterable
        >>> async def main():
        ...     async with to_async_iterable(reactivex.of(1, 2, 3), overflow="error") as items:
        ...         print([x async for x in items])
        >>> anyio.run(main)
        [1, 2, 3]
    """
    if not isinstance(observable, Observable):
        raise TypeError(
            "to_async_iterable() takes a reactivex Observable, got "
            f"{type(observable).__name__}; an async iterable is one already"
        )
    return open_pipe(
        observable, max_buffer_size=max_buffer_size, overflow=overflow, on_drop=on_drop
    )
