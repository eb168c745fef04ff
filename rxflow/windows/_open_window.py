"""An event-time window's state while it is open (or kept for late updates), and what a
checkpoint stores of it."""

from __future__ import annotations

from typing import Any

import attrs

from rxflow._holds import Hold
from rxflow.windows._durable import ChangeMarks

__all__ = ["OpenWindow"]


@attrs.define(eq=False)
class OpenWindow:
    """An open (or, for updates, recently closed) window's state."""

    key: Any
    start: float
    end: float
    items: list[Any]
    order: int
    emitted: bool = False
    first: float = 0.0  # sessions: the earliest and latest timestamps in it
    last: float = 0.0
    index: int = 0  # aligned windows: start = index * every
    # Emitted windows kept for updates: the end they had when emitted, which with
    # allowed_lateness says when they are forgotten (a session updated later may end later).
    kept_from_end: float = 0.0
    # The holds on the items not emitted yet (in a flow, claims on their source messages:
    # rxflow._holds), one per item placed in this window. In a durable scope no hold is
    # taken and this is the window's ChangeMarks instead.
    holds: list[Hold] | ChangeMarks = attrs.field(factory=list)

    def __reduce__(self) -> tuple[Any, ...]:
        # What a checkpoint stores of the window: its header. Its items are in the chunks
        # of its log (its ChangeMarks), each stored once; holds are taken in no durable scope.
        return (
            OpenWindow,
            (self.key, self.start, self.end, [], self.order, self.emitted,
             self.first, self.last, self.index, self.kept_from_end),
        )  # fmt: skip
