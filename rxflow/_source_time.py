"""Source time: the processing time during which a pipe's source was free to deliver.

An event-time window with ``idle_timeout`` lets event time pass when its source has been
quiet for that long. "Quiet" must mean *the source had nothing to give*, not *nobody asked
it*: while the pump waits for the consumer (backpressure), or while a broker withholds
messages because the flow still holds as many unacknowledged ones as the broker allows
(JetStream's ``max_ack_pending``, RabbitMQ's ``prefetch``), the source is held back, and
moving the watermark on would turn the data that is merely waiting into "late" data.

So the pipe keeps a :class:`SourceTime`: a clock that stands still while anything holds the
source back. Windows measure idleness on it. The pump pauses it while it waits for room;
a :class:`rxflow.Flow` pauses it while a source is at its in-flight limit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import anyio

__all__ = ["SourceTime", "current_source_time"]

_current: ContextVar[SourceTime | None] = ContextVar("rxflow_source_time", default=None)


def current_source_time() -> SourceTime | None:
    """The source time of the pipe whose operators are being subscribed, if any."""
    return _current.get()


class SourceTime:
    """Processing time (``anyio.current_time()``) that stops while the source is held back.

    Pauses nest: the clock runs again once every :meth:`pause` has had its :meth:`resume`.

    Example:
        >>> ticks = iter([0.0, 1.0, 3.0, 4.0])
        >>> clock = SourceTime(lambda: next(ticks))
        >>> clock.pause()     # at 0.0
        >>> clock.resume()    # at 1.0: one second held back
        >>> clock.now()       # at 3.0
        2.0
    """

    def __init__(self, now: Callable[[], float] = anyio.current_time) -> None:
        self._clock = now
        self._pauses = 0  # holders of the source right now; the clock stands while > 0
        self._paused_at = 0.0  # when the current pause began (meaningful while _pauses > 0)
        self._paused_total = 0.0  # seconds paused before the current pause

    @property
    def paused(self) -> bool:
        """Whether something holds the source back now."""
        return self._pauses > 0

    def pause(self) -> None:
        if not self._pauses:
            self._paused_at = self._clock()
        self._pauses += 1

    def resume(self) -> None:
        assert self._pauses > 0, "resume() without a pause"
        self._pauses -= 1
        if not self._pauses:
            self._paused_total += self._clock() - self._paused_at

    @contextmanager
    def paused_while(self) -> Iterator[None]:
        """Pause for the duration of a ``with`` block."""
        self.pause()
        try:
            yield
        finally:
            self.resume()

    def now(self) -> float:
        """Seconds of processing time, less every second the source was held back."""
        if self._pauses:
            return self._paused_at - self._paused_total
        return self._clock() - self._paused_total

    @contextmanager
    def activated(self) -> Iterator[SourceTime]:
        """Make this the source time that operators subscribed in this context see."""
        token = _current.set(self)
        try:
            yield self
        finally:
            _current.reset(token)
