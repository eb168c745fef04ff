"""The record every window operator emits."""

from __future__ import annotations

from typing import Any

import attrs


@attrs.frozen
class Window:
    """One window's contents.

    Attributes:
        key: the key the items share (``None`` for windows without ``key=``).
        start, end: the window's bounds, ``start <= t < end``: event times for event-time
            windows, the pipe's clock (``anyio.current_time()``) for processing time.
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
    items: tuple[Any, ...]
    update: bool = False

    def __len__(self) -> int:
        return len(self.items)

    @property
    def duration(self) -> float:
        return self.end - self.start
