"""Small async sources and probes shared by the core tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio


class TrackedSource:
    """An async iterable of ``range(count)`` that records what happened to it.

    ``pulled`` counts items handed out; ``closed`` tells whether its iterator was closed
    (by ``aclose()`` or by finishing), which is how the tests see that a pipe released it.
    ``delay`` makes each item take that long (virtual time in MockClock tests).
    """

    def __init__(self, count: int | None = None, *, delay: float = 0.0) -> None:
        self.count = count
        self.delay = delay
        self.pulled = 0
        self.closed = False

    def __aiter__(self) -> AsyncIterator[int]:
        return self._items()

    async def _items(self) -> AsyncIterator[int]:
        try:
            n = 0
            while self.count is None or n < self.count:
                if self.delay:
                    await anyio.sleep(self.delay)
                self.pulled += 1
                yield n
                n += 1
        finally:
            self.closed = True


def running_tasks() -> int:
    """How many tasks the event loop runs now (the test's own task included)."""
    return len(anyio.get_running_tasks())
