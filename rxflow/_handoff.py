"""The bounded hand-off between a pipe's Rx side (which pushes) and its consumer (which pulls).

Why not a memory object stream of single items: every ``send``/``receive`` on one is a
checkpoint, and two task switches per item cap a bridge at ~0.1-0.2 M items/s. Here both
sides live on the event-loop thread and share one deque: the Rx side appends synchronously,
the consumer pops synchronously, and a side only awaits when it must block (the consumer on
an empty deque, the pump on a full one). So items cross in whole runs between task switches,
which is what batching through a channel buys, without batches for the consumer to unpack
and with the bound counted in items.

Two ways in:

* A *pumped* source (an async iterable) asks :meth:`Handoff.wait_for_room` before each pull,
  so the deque holds at most ``max_buffer_size`` items the consumer has not taken, plus
  whatever operators emit on their own (a window closing on a timer).
* A *pushed* source (an Observable) cannot be paused, so :meth:`Handoff.put` applies the
  overflow policy when the deque is full.
"""

from __future__ import annotations

import sys
from collections import deque
from collections.abc import Callable
from typing import Generic, Literal, TypeVar

import anyio
from anyio.abc import ObjectReceiveStream

from rxflow.errors import SourceOverflowError

T = TypeVar("T")

OverflowPolicy = Literal["error", "drop_newest", "drop_oldest", "latest"]
"""What a pipe does when a source that cannot be paused outpaces its consumer.

* ``"error"``: buffer up to ``max_buffer_size`` items, then fail the pipe with
  :class:`rxflow.errors.SourceOverflowError` (after delivering what was buffered);
* ``"drop_newest"``: keep the buffered items, drop the item that does not fit;
* ``"drop_oldest"``: drop the oldest buffered item to make room;
* ``"latest"``: keep only the newest item; the consumer always gets the most recent value.

Dropped items are counted in ``Pipe.stats().dropped`` and passed to ``on_drop`` if given.
"""

OVERFLOW_POLICIES: tuple[OverflowPolicy, ...] = ("error", "drop_newest", "drop_oldest", "latest")


class Handoff(ObjectReceiveStream[T], Generic[T]):
    """Consumer end of a pipe, plus the producer methods the pipe's Rx side calls.

    ``receive()`` returns the next item without a checkpoint while items are buffered; it
    blocks (and is then cancellable) only when none is.
    """

    def __init__(
        self,
        max_buffer_size: int,
        overflow: OverflowPolicy | None = None,
        on_drop: Callable[[T], object] | None = None,
    ) -> None:
        self._items: deque[T] = deque()
        self._limit = max_buffer_size
        # The pump is woken once the consumer has taken half the buffer, so that it then
        # refills many items in one run instead of one item per task switch.
        self._low_water = max_buffer_size // 2
        # Only pushed sources need a capacity check in put(); for pumped ones it can never
        # trigger, which keeps put() to one comparison.
        self._capacity = sys.maxsize
        if overflow == "latest":
            self._capacity = 1
        elif overflow is not None:
            self._capacity = max(1, max_buffer_size)
        self._overflow = overflow
        self._on_drop = on_drop
        self._consumer_waiting: anyio.Event | None = None
        self._producer_waiting: anyio.Event | None = None
        self._ended = False
        self._error: BaseException | None = None
        self._closed = False
        self._taken = 0
        self._dropped = 0
        self._holds = 0
        # Of those, the holds of the pipe's own source only (the async sources inside the
        # chain are at their limit: they are what the pump waits for, so they go on).
        self._pump_only_holds = 0

    # -- consumer side ---------------------------------------------------------------

    async def receive(self) -> T:
        """Return the next item; raise ``anyio.EndOfStream`` when the pipe has completed.

        If the pipe failed, the original exception is raised once, after every item
        emitted before it.
        """
        if self._items:
            return self.receive_nowait()
        return await self._receive_when_ready()

    async def __anext__(self) -> T:
        # receive_nowait() inlined: this is the per-item path of `async for`.
        items = self._items
        if items:
            item = items.popleft()
            self._taken += 1
            if self._producer_waiting is not None and len(items) <= self._low_water:
                self._wake_producer()
            return item
        try:
            return await self._receive_when_ready()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    def receive_nowait(self) -> T:
        """Return a buffered item at once; raise ``anyio.WouldBlock`` if none is buffered.

        After the last item it raises like :meth:`receive` (the error, then the end).
        """
        items = self._items
        if items:
            item = items.popleft()
            self._taken += 1
            if self._producer_waiting is not None and len(items) <= self._low_water:
                self._wake_producer()
            return item
        if self._closed:
            raise anyio.ClosedResourceError
        if self._ended:
            error, self._error = self._error, None
            if error is not None:
                raise error
            raise anyio.EndOfStream
        if self._producer_waiting is not None:
            self._wake_producer()
        raise anyio.WouldBlock

    async def _receive_when_ready(self) -> T:
        while True:
            try:
                return self.receive_nowait()
            except anyio.WouldBlock:
                pass
            if self._consumer_waiting is None:
                self._consumer_waiting = anyio.Event()
            await self._consumer_waiting.wait()

    async def aclose(self) -> None:
        """Stop receiving: buffered items are discarded and the producer is told to stop."""
        self._close()

    def _close(self) -> None:
        self._closed = True
        self._capacity = 0  # later puts are ignored (see finish())
        self._items.clear()
        self._wake_producer()

    # -- producer side ---------------------------------------------------------------

    def put(self, item: T) -> None:
        """Hand ``item`` to the consumer (called synchronously by the Rx side)."""
        items = self._items
        if len(items) >= self._capacity:
            self._put_overflowing(item)
            return
        items.append(item)
        if self._consumer_waiting is not None:
            self._wake_consumer()

    def _put_overflowing(self, item: T) -> None:
        if self._ended or self._closed:
            return
        if self._overflow == "error":
            self._fail(
                SourceOverflowError(
                    f"the source pushed more than max_buffer_size={self._limit} items that "
                    "the consumer had not taken yet. Consume faster, raise max_buffer_size, "
                    "or choose overflow='drop_newest', 'drop_oldest' or 'latest' to drop items "
                    "(counted in stats().dropped); a source that can be paused (an async "
                    "iterable) gets backpressure instead"
                )
            )
            return
        if self._overflow == "drop_newest":
            self._drop(item)
            return
        # drop_oldest, and latest (which is drop_oldest with room for one item)
        self._drop(self._items.popleft())
        self._items.append(item)

    def _drop(self, item: T) -> None:
        self._dropped += 1
        if self._on_drop is not None:
            self._on_drop(item)

    def hold_source(self, *, inner_sources: bool = True) -> None:
        """An operator has as much work in hand as it may (``map_async`` at its concurrency):
        pull nothing more until it calls :meth:`release_source`. ``inner_sources=False``
        holds the pipe's own source only, not the async sources inside the chain."""
        self._holds += 1
        if not inner_sources:
            self._pump_only_holds += 1

    def release_source(self, *, inner_sources: bool = True) -> None:
        """Undo one :meth:`hold_source`; the source is pulled again once no hold is left."""
        self._holds -= 1
        if not inner_sources:
            self._pump_only_holds -= 1
        if self._holds == self._pump_only_holds:  # none left, or none for inner sources
            self._wake_producer()

    def has_room(self, *, inner_source: bool = False) -> bool:
        """Whether a pumped source (or, with ``inner_source``, an async source inside the
        chain) may pull another item now."""
        if self._holds and (not inner_source or self._holds > self._pump_only_holds):
            return False
        buffered = len(self._items)
        if buffered < self._limit:
            return True
        # With max_buffer_size=0 the pump pulls only for a consumer that is already waiting.
        return buffered == 0 and self._consumer_waiting is not None

    async def wait_for_room(self, *, inner_source: bool = False) -> None:
        """Block until the consumer has room; return at once if it closed or the pipe ended."""
        while not (self._closed or self._ended or self.has_room(inner_source=inner_source)):
            if self._producer_waiting is None:
                self._producer_waiting = anyio.Event()
            await self._producer_waiting.wait()

    @property
    def is_open(self) -> bool:
        """False once the pipe ended or the consumer closed its end."""
        return not (self._ended or self._closed)

    def _fail(self, error: Exception) -> None:
        """The producer side failed (here: overflow); a pipe also stops its work."""
        self.finish(error)

    def finish(self, error: BaseException | None = None) -> None:
        """End the stream: the consumer gets the buffered items, then ``error`` or the end."""
        if self._ended:
            return
        self._ended = True
        # Every later put() now takes the overflow path, which ignores items after the end.
        self._capacity = 0
        self._error = error
        self._wake_consumer()
        self._wake_producer()

    def _wake_consumer(self) -> None:
        if self._consumer_waiting is not None:
            self._consumer_waiting.set()
            self._consumer_waiting = None

    def _wake_producer(self) -> None:
        if self._producer_waiting is not None:
            self._producer_waiting.set()
            self._producer_waiting = None
