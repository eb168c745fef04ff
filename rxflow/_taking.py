"""What a pipe's consumer end takes from the buffer it shares with the pump: one item, or a
run of them (``Pipe.receive_batch``, ``Pipe.batches``), and what an empty buffer means.

Taking a run frees its room in the bound at once: ``state.items`` is the count of outputs
waiting, which is what the pump checks before each pull, so the bound stays counted in items
whether the consumer takes them one at a time or many at once. Items the consumer holds in a
batch it took are no longer the pipe's (as an item returned by ``receive()`` is not).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Generic, TypeVar

import anyio

from rxflow._handoff import PipeState

__all__ = [
    "PipeBatches",
    "checked_max_items",
    "empty_read_error",
    "receive_batch",
    "take_batch",
]

T = TypeVar("T")


def checked_max_items(max_items: int | None, caller: str) -> int | None:
    """``max_items`` if it is None or an int of at least 1; a TypeError or ValueError
    saying so otherwise."""
    if max_items is None:
        return None
    if isinstance(max_items, bool) or not isinstance(max_items, int):
        raise TypeError(f"{caller}: max_items must be an int or None, got {max_items!r}")
    if max_items < 1:
        raise ValueError(
            f"{caller}: max_items must be 1 or more (None takes every buffered item), "
            f"got {max_items}"
        )
    return max_items


def empty_read_error(state: PipeState[Any]) -> BaseException:
    """What a read of an empty buffer raises: ``ClosedResourceError`` once the consumer
    closed its end, the pipe's error (once) then ``EndOfStream`` once it ended, else
    ``WouldBlock`` (after waking a pump that waits for room: with ``max_buffer_size=0`` it
    pulls only for a consumer that is about to wait)."""
    if state.closed:
        return anyio.ClosedResourceError()
    if state.ended:
        error, state.error = state.error, None
        return anyio.EndOfStream() if error is None else error
    if state.producer_waiting is not None:
        state.wake_producer()
    return anyio.WouldBlock()


def take_batch(state: PipeState[T], max_items: int | None) -> list[T]:
    """Every buffered item, oldest first, up to ``max_items`` (None: no limit); at least
    one must be buffered."""
    items = state.items
    count = len(items)
    if max_items is None or count <= max_items:
        batch = list(items)
        items.clear()
    else:
        popleft = items.popleft
        batch = [popleft() for _ in range(max_items)]
        count = max_items
    state.taken += count
    # As for one item (Pipe.receive_nowait): the pump, if it waits for room, resumes once at
    # most half the buffer is left, to refill many items per task switch.
    if state.producer_waiting is not None and len(items) <= state.low_water:
        state.wake_producer()
    return batch


async def receive_batch(state: PipeState[T], max_items: int | None) -> list[T]:
    """:func:`take_batch`, waiting for the pump while nothing is buffered (a cancellation
    point then, and only then, as ``Pipe.receive``)."""
    while not state.items:  # (no WouldBlock raised and caught per wait)
        error = empty_read_error(state)  # this wakes a pump that waits for room
        if not isinstance(error, anyio.WouldBlock):
            raise error
        await state.consumer_wakeup().wait()
    return take_batch(state, max_items)


class PipeBatches(AsyncIterator[list[T]], Generic[T]):
    """``Pipe.batches()``: an async iterator of the lists ``Pipe.receive_batch`` returns,
    ending when the pipe completes (its error, if it failed, comes after the last items).

    A class, not an async generator: one left early (``break``) holds no suspended frame,
    so nothing is left for an event loop to finalize (trio warns about such generators).
    """

    __slots__ = ("_max_items", "_state")

    def __init__(self, state: PipeState[T], max_items: int | None) -> None:
        self._state = state
        self._max_items = max_items

    def __aiter__(self) -> PipeBatches[T]:
        return self

    async def __anext__(self) -> list[T]:
        try:
            return await receive_batch(self._state, self._max_items)
        except anyio.EndOfStream:
            raise StopAsyncIteration from None
