"""The bounded hand-off between a pipe's Rx side (which pushes) and its consumer (which pulls).

Why not a memory object stream of single items: every ``send``/``receive`` on one is a
checkpoint, and two task switches per item cap a bridge at ~0.1-0.2 M items/s. Here both
sides live on the event-loop thread and share one deque: the Rx side appends synchronously,
the consumer pops synchronously, and a side only awaits when it must block (the consumer on
an empty deque, the pump on a full one). So items cross in whole runs between task switches,
which is what batching through a channel buys, without batches for the consumer to unpack
and with the bound counted in items.

As trio's memory channels share one ``MemoryChannelState``, a pipe's two ends share one
:class:`PipeState`: the consumer end is :class:`rxflow.Pipe`; the producer end,
:class:`PipeProducer`, is what the pump, the operator chain's outputs and the scheduler use.

Two ways in:

* A *pumped* source (an async iterable) asks :meth:`PipeProducer.wait_for_room` before each
  pull, so the deque holds at most ``max_buffer_size`` items the consumer has not taken,
  plus whatever operators emit on their own (a window closing on a timer).
* A *pushed* source (an Observable) cannot be paused, so :meth:`PipeProducer.put` applies
  the overflow policy (:class:`rxflow._overflow.OverflowBuffer`) when the deque is full.
"""

from __future__ import annotations

import sys
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

import anyio
import anyio.lowlevel

from rxflow._overflow import OverflowBuffer, OverflowPolicy

__all__ = ["YIELDS", "PipeProducer", "PipeState"]

T = TypeVar("T")

# How many times a side may yield to the other side, runnable, before it parks on its
# event (see PipeState.consumer_runnable).
YIELDS = 2


class PipeState(Generic[T]):
    """What a pipe's two ends share. Both run on the event loop's thread."""

    __slots__ = (
        "_ready",
        "capacity",
        "closed",
        "consumer_runnable",
        "consumer_waiting",
        "consumer_wakes",
        "ended",
        "error",
        "holds",
        "items",
        "limit",
        "low_water",
        "overflow",
        "producer_runnable",
        "producer_waiting",
        "pump_only_holds",
        "taken",
    )

    def __init__(
        self,
        max_buffer_size: int,
        overflow: OverflowPolicy | None = None,
        on_drop: Callable[[T], object] | None = None,
    ) -> None:
        # max_buffer_size: a pumped source is pulled only while fewer outputs than this wait.
        self.limit = max_buffer_size
        # The pump is woken once the consumer has taken half the buffer, so that it then
        # refills many items in one run instead of one item per task switch.
        self.low_water = max_buffer_size // 2
        # A pushed source's policy, applied by put() when `capacity` items wait; None for a
        # pumped source, which never overflows (the pump waits for room instead).
        self.overflow: OverflowBuffer[T] | None = None
        # Outputs the consumer has not taken, oldest first. Never replaced (both ends keep
        # a reference to it); emptied when the consumer closes.
        self.items: deque[T]
        if overflow is None:
            self.items = deque()
        else:
            self.overflow = OverflowBuffer(
                overflow,
                max_buffer_size,
                on_drop=on_drop,
                overflow_message=(
                    f"the source pushed more than max_buffer_size={max_buffer_size} items "
                    "that the consumer had not taken yet. Consume faster, raise "
                    "max_buffer_size, or choose overflow='drop_newest', 'drop_oldest' or "
                    "'latest' to drop items (counted in stats().dropped); a source that can "
                    "be paused (an async iterable) gets backpressure instead"
                ),
            )
            self.items = self.overflow.items
        # put() appends while len(items) < capacity and takes the slow path otherwise:
        # sys.maxsize for a pumped source (one comparison per item), the overflow buffer's
        # capacity for a pushed one, 0 once the pipe ended or the consumer closed (so that
        # later outputs are ignored on the slow path).
        self.capacity = sys.maxsize if self.overflow is None else self.overflow.capacity
        # Set while the consumer waits on an empty deque; the producer sets and clears it.
        self.consumer_waiting: anyio.Event | None = None
        # Set while the pump waits for room; the consumer sets and clears it.
        self.producer_waiting: anyio.Event | None = None
        # How many times the producer side (the consumer) may still yield to the consumer
        # (the producer side), a checkpoint, instead of parking on its event when it must
        # wait: YIELDS from when the consumer (the producer side) was woken or yielded
        # itself, so that it is runnable, until it runs again here (trio may run the two in
        # either order within one batch: a second yield comes after it). An event round
        # trip costs about twice a pair of checkpoints (9 vs 4 us on asyncio, 10 vs 6 on
        # trio), and each full buffer costs two waits. A side yields only when the other
        # can go on (the pump, to a consumer with items; the consumer, to a pump with room),
        # and each yield uses one, so a side whose peer is busy elsewhere parks after two.
        self.consumer_runnable = 0
        self.producer_runnable = 0
        # Times the consumer was woken from its event: a pump that pulled without waking it
        # is ahead of it, and lets it yield (not park) while the pump itself yields.
        self.consumer_wakes = 0
        self._ready: anyio.Event | None = None  # set at once: waiting on it is a checkpoint
        # The producer finished: the consumer gets `items`, then `error` (once) or the end.
        self.ended = False
        self.error: BaseException | None = None
        self.closed = False  # the consumer left: `items` is empty and stays so
        self.taken = 0  # outputs the consumer received
        # Operators holding the source (map_async at its concurrency): no pull while > 0.
        self.holds = 0
        # Of `holds`, those on the pipe's own source only (the async sources inside the
        # chain are at their limit: they are what the pump waits for, so they go on).
        self.pump_only_holds = 0

    @property
    def dropped(self) -> int:
        """Outputs the overflow policy dropped (always 0 for a pumped source)."""
        return 0 if self.overflow is None else self.overflow.dropped

    def consumer_wakeup(self) -> anyio.Event:
        """What the consumer waits on when it finds no item: the event :meth:`wake_consumer`
        sets (made when the consumer first waits), or, while the producer side is runnable
        (see ``producer_runnable``), one already set: waiting on it yields to the producer,
        which refills the buffer, without parking."""
        self.consumer_runnable = 0  # it runs: a yield to it from now on would be in vain
        if self.producer_runnable and self.limit and not self.holds:
            self.producer_runnable -= 1
            self.consumer_runnable = YIELDS
            ready = self._ready
            if ready is None:
                ready = self._ready = anyio.Event()
                ready.set()
            return ready
        if self.consumer_waiting is None:
            self.consumer_waiting = anyio.Event()
        return self.consumer_waiting

    def wake_consumer(self) -> None:
        waiting = self.consumer_waiting
        if waiting is not None:
            waiting.set()
            self.consumer_waiting = None
            self.consumer_runnable = YIELDS
            self.consumer_wakes += 1

    def wake_producer(self) -> None:
        waiting = self.producer_waiting
        if waiting is not None:
            waiting.set()
            self.producer_waiting = None
            self.producer_runnable = YIELDS


class PipeProducer(Generic[T]):
    """The producer end of a pipe: what its pump, its chain and its scheduler call.

    ``on_failure`` is how the pipe ends when put() must fail it (an overflow under
    ``"error"``); the pump replaces the default, which only ends the stream, with one that
    also stops the pipe's work.
    """

    __slots__ = ("on_failure", "state")

    def __init__(self, state: PipeState[T]) -> None:
        self.state = state
        self.on_failure: Callable[[Exception], None] = self.finish

    def put(self, item: T) -> None:
        """Hand ``item`` to the consumer (called synchronously by the Rx side)."""
        state = self.state
        items = state.items
        if len(items) >= state.capacity:
            self._put_overflowing(item)
            return
        items.append(item)
        if state.consumer_waiting is not None:
            state.wake_consumer()

    def _put_overflowing(self, item: T) -> None:
        state = self.state
        if state.ended or state.closed or state.overflow is None:
            return
        try:
            state.overflow.add(item)
        except Exception as error:  # SourceOverflowError, or on_drop's own
            self.on_failure(error)
            return
        if state.consumer_waiting is not None:
            state.wake_consumer()

    def hold_source(self, *, inner_sources: bool = True) -> None:
        """An operator has as much work in hand as it may (``map_async`` at its concurrency):
        pull nothing more until it calls :meth:`release_source`. ``inner_sources=False``
        holds the pipe's own source only, not the async sources inside the chain."""
        state = self.state
        state.holds += 1
        if not inner_sources:
            state.pump_only_holds += 1

    def release_source(self, *, inner_sources: bool = True) -> None:
        """Undo one :meth:`hold_source`; the source is pulled again once no hold is left."""
        state = self.state
        state.holds -= 1
        if not inner_sources:
            state.pump_only_holds -= 1
        if state.holds == state.pump_only_holds:  # none left, or none for inner sources
            state.wake_producer()

    def has_room(self, *, inner_source: bool = False) -> bool:
        """Whether a pumped source (or, with ``inner_source``, an async source inside the
        chain) may pull another item now."""
        state = self.state
        if state.holds and (not inner_source or state.holds > state.pump_only_holds):
            return False
        buffered = len(state.items)
        if buffered < state.limit:
            return True
        # With max_buffer_size=0 the pump pulls only for a consumer that is already waiting.
        return buffered == 0 and state.consumer_waiting is not None

    async def wait_for_room(self, *, inner_source: bool = False) -> None:
        """Block until the consumer has room; return at once if it closed or the pipe ended."""
        state = self.state
        while not (state.closed or state.ended or self.has_room(inner_source=inner_source)):
            if state.consumer_runnable and state.items:  # it takes items: yield to it
                state.consumer_runnable -= 1
                state.producer_runnable = YIELDS
                await anyio.lowlevel.checkpoint()
            else:
                if state.producer_waiting is None:
                    state.producer_waiting = anyio.Event()
                await state.producer_waiting.wait()
            state.producer_runnable = 0  # it runs

    @property
    def is_open(self) -> bool:
        """False once the pipe ended or the consumer closed its end."""
        state = self.state
        return not (state.ended or state.closed)

    def finish(self, error: BaseException | None = None) -> None:
        """End the stream: the consumer gets the buffered items, then ``error`` or the end."""
        state = self.state
        if state.ended:
            return
        state.ended = True
        # Every later put() now takes the overflow path, which ignores items after the end.
        state.capacity = 0
        state.error = error
        state.wake_consumer()
        state.wake_producer()
