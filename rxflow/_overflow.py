"""The overflow policy, written once: a bounded buffer for a source that cannot be paused.

A pushed source (a ``Subject``, ``NOTIFY``, a sink that falls behind a flow) cannot be told
to wait, so when its buffer is full something must give: the buffer raises, or drops the
newest item, or the oldest. :class:`OverflowBuffer` applies that choice, counts what it
drops and hands each dropped item to ``on_drop``, so nothing is lost silently. Its consumer
side (``receive``) waits for items and raises a failure after the items buffered before it.

Example:
    >>> buffer = OverflowBuffer("drop_oldest", 2, overflow_message="too many")
    >>> for n in range(4):
    ...     buffer.add(n)
    >>> list(buffer.items), buffer.dropped
    ([2, 3], 2)
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Generic, Literal, TypeVar

import anyio
from anyio.abc import ObjectReceiveStream

from rxflow._receiving import receive_when_ready
from rxflow.errors import SourceOverflowError

__all__ = ["OVERFLOW_POLICIES", "OverflowBuffer", "OverflowPolicy"]

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


class OverflowBuffer(ObjectReceiveStream[T], Generic[T]):
    """A bounded FIFO that applies an :data:`OverflowPolicy` when a pushed item does not fit.

    Producer side, synchronous: :meth:`add`, :meth:`fail`, :meth:`close`. Consumer side:
    :meth:`receive` (waits), :meth:`receive_nowait`, ``async for``. A pipe uses only
    :meth:`add` over its own waiting (it also paces pulled sources); a source or a flow's
    sink that is just a buffer uses the rest too.

    Args:
        policy: what to do with an item that does not fit.
        max_buffer_size: items held at most (``"latest"`` holds one); at least 1.
        on_drop: called with each dropped item, after it was counted.
        overflow_message: the :class:`~rxflow.errors.SourceOverflowError`'s message under
            ``"error"``: say who overflowed and what to do.
    """

    def __init__(
        self,
        policy: OverflowPolicy,
        max_buffer_size: int,
        *,
        on_drop: Callable[[T], object] | None = None,
        overflow_message: str,
    ) -> None:
        if policy not in OVERFLOW_POLICIES:
            raise ValueError(
                f"overflow must be one of {', '.join(map(repr, OVERFLOW_POLICIES))}, got {policy!r}"
            )
        self.policy: OverflowPolicy = policy
        # Never more than this many items are in `items`: "latest" is "drop_oldest" with
        # room for one, so the consumer gets the newest item.
        self.capacity = 1 if policy == "latest" else max(1, max_buffer_size)
        # Oldest first. The same deque for the buffer's whole life (a pipe reads it as its
        # own): cleared, never replaced.
        self.items: deque[T] = deque()
        self.dropped = 0  # items the policy dropped, each also passed to on_drop
        self._on_drop = on_drop
        self._overflow_message = overflow_message
        # Set by fail() or close(): what the consumer gets once `items` is empty (the
        # failure once, then the end). Items added after it are ignored.
        self._ended = False
        self._failure: BaseException | None = None
        self._arrived: anyio.Event | None = None  # a consumer waits in receive()

    def __len__(self) -> int:
        return len(self.items)

    # -- producer side -----------------------------------------------------------------

    def add(self, item: T) -> None:
        """Buffer ``item``, or apply the policy if the buffer is full.

        Raises:
            SourceOverflowError: under ``"error"``, when the buffer is full (``item`` is
                not buffered; the caller decides whether that ends the stream: see
                :meth:`fail`).
        """
        if self._ended:
            return
        items = self.items
        if len(items) >= self.capacity:
            if self.policy == "error":
                raise SourceOverflowError(self._overflow_message)
            if self.policy == "drop_newest":
                self._drop(item)
                return
            self._drop(items.popleft())  # drop_oldest, and latest
        items.append(item)
        if self._arrived is not None:
            self._wake()

    def _drop(self, item: T) -> None:
        self.dropped += 1
        if self._on_drop is not None:
            self._on_drop(item)

    def fail(self, error: BaseException) -> None:
        """End the stream with ``error``: the consumer gets the buffered items, then it."""
        if not self._ended:
            self._ended, self._failure = True, error
            self._wake()

    def close(self) -> None:
        """End the stream: the consumer gets the buffered items, then the end."""
        if not self._ended:
            self._ended = True
            self._wake()

    # -- consumer side -----------------------------------------------------------------

    def receive_nowait(self) -> T:
        """The oldest item; ``anyio.WouldBlock`` if none is buffered yet; after the end,
        the failure (once) and then ``anyio.EndOfStream``."""
        if self.items:
            return self.items.popleft()
        if self._ended:
            failure, self._failure = self._failure, None
            if failure is not None:
                raise failure
            raise anyio.EndOfStream
        raise anyio.WouldBlock

    async def receive(self) -> T:
        if self.items:  # the common case under load: no wait, no second coroutine
            return self.items.popleft()
        return await receive_when_ready(self.receive_nowait, self.arrival)

    def arrival(self) -> anyio.Event:
        """The event set when an item is added or the stream ends (made for a waiting consumer)."""
        if self._arrived is None:
            self._arrived = anyio.Event()
        return self._arrived

    async def aclose(self) -> None:
        """The consumer leaves: buffered items are discarded, later ones ignored."""
        self.items.clear()
        self.close()

    def _wake(self) -> None:
        if self._arrived is not None:
            self._arrived.set()
            self._arrived = None
