"""The record every window operator emits."""

from __future__ import annotations

from typing import Any, Generic

import attrs

from rxflow._typevars import ItemT


@attrs.frozen
class Window(Generic[ItemT]):
    """One window's contents; ``Window[Click]`` holds ``Click`` items.

    Attributes:
        key: the key the items share (``None`` for windows without ``key=``).
        start, end: the window's bounds, ``start <= t < end``, in seconds. In event time
            (``timestamp=``) they are on the timestamps' own scale. In processing time
            they are wall-clock times, seconds since the epoch as ``time.time()`` gives
            (``datetime.fromtimestamp(window.start)`` reads them), measured on the pipe's
            clock from a wall-clock reading taken once per subscription: a window's
            ``duration`` is exact, and under trio's ``MockClock`` it is virtual time.
        items: the items, in arrival order.
        update: ``True`` when this is a window emitted again because late items arrived
            (``late="update"``); it carries all items, the late ones included.

    Example:
        >>> from rxflow import Window
        >>> window = Window(key="ann", start=0.0, end=10.0, items=("a", "b"))
        >>> len(window), window.duration
        (2, 10.0)
    """

    key: Any
    start: float
    end: float
    items: tuple[ItemT, ...]
    update: bool = False

    def __len__(self) -> int:
        return len(self.items)

    @property
    def duration(self) -> float:
        """``end - start``, in seconds."""
        return self.end - self.start
