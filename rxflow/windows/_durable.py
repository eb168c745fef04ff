"""How window operators keep their state in a durable table, inside a checkpointed flow.

Outside one, :func:`durable_table` is None and window operators keep their state in plain
fields, exactly as fast as if durability did not exist. Inside one (:mod:`rxflow._state`),
each window operator keeps its open windows in the table named after the stage (its
``name=``), and the flow's checkpoints store the table's changes together with the source
messages they cover, which are then acknowledged: a window holds no ack on its items.

What an item costs there is marking what it changed (a set add in the table), never a
serialization: a checkpoint pickles the live objects it finds changed. So the values put in
a table are the operator's live objects, and each says in ``__reduce__`` what of it a
checkpoint stores.

Example:
    >>> from rxflow._state import StateTable
    >>> table = StateTable("tumbling", durable=True)
    >>> items = OpenItems(table)
    >>> items.add("a"); items.add("b")
    >>> items.keep_from(1)
    >>> [(key, list(value)) for key, value, _ in table.take_changes()]
    [('open', ['b'])]
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any, Protocol, cast

from rxflow._holds import Hold
from rxflow._state import StateTable, current_state

__all__ = [
    "OPEN",
    "PROGRESS",
    "ChangeMarks",
    "OpenItems",
    "OpenSessions",
    "Progress",
    "durable_table",
]

PROGRESS = "progress"
"""The key of an event-time operator's watermark and largest timestamp seen."""

OPEN = "open"
"""The key of the items in the open windows of processing-time tumbling and sliding windows."""


def durable_table(name: str, owner: object) -> StateTable[Any, Any] | None:
    """The table named ``name`` for the window operator ``owner`` in the current state scope
    if that scope is durable (a checkpointed flow), else None.

    A durable scope refuses one name for two operators (window stages in a checkpointed
    flow need distinct ``name=``): the error it raises goes to the subscriber's
    ``on_error``, as any error raised while subscribing does."""
    scope = current_state()
    if not scope.durable:
        return None
    return scope.table(name, owner)


class ChangeMarks:
    """Stands, in a durable scope, where an open event-time window keeps the holds on its
    items (none are taken there: the checkpoint covers the items). What adds an item to the
    window appends its hold, as it does in memory; here that marks the window, and the
    operator's progress, changed for the next checkpoint. So the per-item code is the same
    in both modes, with no test of the mode in it."""

    __slots__ = ("key", "table")

    def __init__(self, table: StateTable[Any, Any], key: object) -> None:
        self.table = table
        self.key = key

    def append(self, hold: Hold) -> None:
        self.table.touch(self.key)
        self.table.touch(PROGRESS)  # the item may move the watermark too

    def extend(self, holds: Iterable[Hold]) -> None:
        """A session merged others into this window."""
        self.table.touch(self.key)

    def __iter__(self) -> Iterator[Hold]:
        return iter(())


class _Timed(Protocol):
    max_seen: float
    watermark: float


class Progress:
    """An event-time operator's progress as a checkpoint stores it: the largest timestamp
    seen and the watermark, read from the live operator when pickled (they change with
    almost every item, so they are not copied here each time)."""

    __slots__ = ("run",)

    def __init__(self, run: _Timed) -> None:
        self.run = run

    def saved(self) -> tuple[float, float]:
        """``(max_seen, watermark)`` now."""
        return (self.run.max_seen, self.run.watermark)

    def __reduce__(self) -> tuple[Any, ...]:
        return (tuple, (self.saved(),))

    @staticmethod
    def restored(value: object) -> tuple[float, float]:
        """``(max_seen, watermark)`` from what a checkpoint stored (or, within one process,
        the live :class:`Progress` of an earlier subscription)."""
        if isinstance(value, Progress):
            return value.saved()
        max_seen, watermark = cast("tuple[float, float]", value)
        return (max_seen, watermark)


class OpenItems:
    """Processing-time tumbling and sliding windows in a durable scope: the items of every
    window still open, in arrival order (windows open and close in order, so those are the
    items since the oldest open window opened). A checkpoint stores them as a list.

    ``base`` is the arrival number of the first item kept; :meth:`keep_from` drops the items
    that arrived before a given number."""

    __slots__ = ("base", "items", "table")

    def __init__(self, table: StateTable[Any, Any]) -> None:
        self.table = table
        self.items: deque[Any] = deque()
        self.base = 0
        table.put(OPEN, self)

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[Any]:
        return iter(self.items)

    def __reduce__(self) -> tuple[Any, ...]:
        return (list, (list(self.items),))

    @staticmethod
    def restored(table: StateTable[Any, Any]) -> list[Any]:
        """The items a checkpoint stored in ``table`` (read them before an
        :class:`OpenItems` takes the table's entry)."""
        return list(table.get(OPEN, ()))

    @property
    def arrived(self) -> int:
        """How many items arrived so far (the number the next one gets)."""
        return self.base + len(self.items)

    def add(self, item: Any) -> None:
        self.items.append(item)
        self.table.touch(OPEN)

    def keep_from(self, arrival: int) -> None:
        """Forget the items that arrived before number ``arrival``: no open window has them."""
        items = self.items
        if self.base >= arrival:
            return
        while items and self.base < arrival:
            items.popleft()
            self.base += 1
        self.table.touch(OPEN)


class OpenSessions:
    """Processing-time sessions in a durable scope: the items of each key's open session,
    in arrival order, one table entry (a list) per key, deleted when the session closes."""

    __slots__ = ("by_key", "table")

    def __init__(self, table: StateTable[Any, Any]) -> None:
        self.table = table
        self.by_key: dict[Any, list[Any]] = {}

    def restored(self) -> list[Any]:
        """The items of the sessions a checkpoint stored, key after key (read them before
        :meth:`add` takes the keys' entries over)."""
        return [item for _, items in self.table.scan() for item in items]

    def add(self, key: Any, item: Any) -> None:
        items = self.by_key.get(key)
        if items is None:
            items = self.by_key[key] = [item]
            self.table.put(key, items)
            return
        items.append(item)
        self.table.touch(key)

    def closed(self, key: Any) -> None:
        """``key``'s session was emitted."""
        del self.by_key[key]
        self.table.delete(key)
