"""How window operators keep their state in a durable table, inside a checkpointed flow.

Outside one, :func:`durable_table` is None and window operators keep their state in plain
fields, exactly as fast as if durability did not exist. Inside one (:mod:`rxflow._state`),
each window operator keeps its open windows in the table named after the stage (its
``name=``), and the flow's checkpoints store the table's changes together with the source
messages they cover, which are then acknowledged: a window holds no ack on its items.

What an item costs there is marking what it changed (a set add in the table), never a
serialization, and what a checkpoint costs grows with what arrived since the last one, not
with what the windows hold: the items of a window (or of all open windows) are an
:class:`ItemLog`, stored in chunks, each chunk the items appended between two checkpoints.
A one-hour window is written once, a chunk per checkpoint, not once per checkpoint whole.

Example (a checkpoint stores each chunk as ``(position of its first item, items)``):
    >>> import pickle
    >>> from rxflow._state import StateTable
    >>> table = StateTable("tumbling", durable=True)
    >>> def checkpoint():
    ...     changes = table.take_changes()
    ...     return [pickle.loads(pickle.dumps(value)) for key, value, _ in changes
    ...             if isinstance(key, ChunkKey)]
    >>> items = OpenItems(table)
    >>> items.add("a"); items.add("b")
    >>> checkpoint()
    [(0, ['a', 'b'])]
    >>> items.add("c")
    >>> checkpoint()
    [(2, ['c'])]
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterable, Iterator, MutableSequence
from typing import Any, Protocol, cast

import attrs

from rxflow._holds import Hold
from rxflow._state import StateTable, current_state

__all__ = [
    "OPEN",
    "PROGRESS",
    "ChangeMarks",
    "ChunkKey",
    "ItemLog",
    "OpenItems",
    "OpenSessions",
    "Progress",
    "durable_table",
]

PROGRESS = "progress"
"""The key of an event-time operator's watermark and largest timestamp seen."""

OPEN = "open"
"""The key of the open windows' items of processing-time tumbling and sliding windows (the
position of the first item kept; the items are in the chunks of the log of that key)."""


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


# -- item logs: growing lists stored a chunk per checkpoint -------------------------------


@attrs.frozen
class ChunkKey:
    """The table key of chunk ``number`` of the item log of key ``log`` (a class of its own,
    so that it never equals a key of the operator's, such as a user's tuple key)."""

    log: Any
    number: int


class _Chunk:
    """The items a log gained from position ``start`` until the checkpoint that stores them.

    Invariant: ``end`` is None until a checkpoint serializes the chunk, and from then on the
    position where it ends; items appended after that go to the log's next chunk. So a
    chunk is written once, with exactly the items that arrived before its checkpoint."""

    __slots__ = ("end", "log", "number", "start")

    def __init__(self, log: ItemLog, number: int, start: int, end: int | None = None) -> None:
        self.log = log
        self.number = number
        self.start = start
        self.end = end

    def items(self) -> list[Any]:
        """The chunk's items that the log still holds (those trimmed off are not)."""
        log = self.log
        end = log.position + len(log.items) if self.end is None else self.end
        first = max(self.start - log.position, 0)
        return list(itertools.islice(log.items, first, max(end - log.position, first)))

    def __reduce__(self) -> tuple[Any, ...]:
        # Called by the checkpoint (in rxflow.flow's _take_changes) at its barrier: this is
        # where the chunk ends.
        if self.end is None:
            self.end = self.log.position + len(self.log.items)
        return (tuple, ((max(self.start, self.log.position), self.items()),))


def _stored_chunk(value: object) -> tuple[int, list[Any]]:
    """``(start, items)`` of a chunk as a checkpoint stored it, or (within one process, a
    resubscription) as the live chunk of an earlier subscription holds it."""
    if isinstance(value, _Chunk):
        return (max(value.start, value.log.position), value.items())
    start, items = cast("tuple[int, list[Any]]", value)
    return (start, list(items))


@attrs.define
class StoredLog:
    """A log as the last checkpoint left it: its chunks' numbers and ends, and its items
    from ``position`` on (the start of its first chunk)."""

    position: int = 0
    items: list[Any] = attrs.field(factory=list)
    chunks: list[tuple[int, int]] = attrs.field(factory=list)  # (number, end), in order

    @staticmethod
    def all_in(table: StateTable[Any, Any]) -> dict[Any, StoredLog]:
        """Every log stored in ``table``, by its key."""
        by_log: dict[Any, list[tuple[int, int, list[Any]]]] = {}
        for key, value in table.scan():
            if isinstance(key, ChunkKey):
                start, items = _stored_chunk(value)
                by_log.setdefault(key.log, []).append((key.number, start, items))
        logs = {}
        for log_key, chunks in by_log.items():
            chunks.sort(key=lambda chunk: chunk[0])
            log = logs[log_key] = StoredLog(position=chunks[0][1])
            for number, start, items in chunks:
                log.items.extend(items)
                log.chunks.append((number, start + len(items)))
        return logs


class ItemLog:
    """A list of items that grows at its end (and, for :class:`OpenItems`, is trimmed at its
    start), kept in a durable table as chunks under :class:`ChunkKey` ``(key, n)``.

    ``items`` is the owner's live list (the log never copies it until a checkpoint
    serializes a chunk); the owner appends to it and calls :meth:`grew`. Positions count
    items from the first one the log ever held: ``items[0]`` is at ``position``."""

    __slots__ = ("chunks", "items", "key", "next_number", "position", "table")

    def __init__(
        self,
        table: StateTable[Any, Any],
        key: Any,
        items: MutableSequence[Any],
        stored: StoredLog | None = None,
    ) -> None:
        self.table = table
        self.key = key
        self.items = items
        self.position = 0 if stored is None else stored.position
        # The chunks whose items the log may still hold, oldest first. Invariant: only the
        # last may be open (end None).
        self.chunks: deque[_Chunk] = deque()
        if stored is not None:
            start = stored.position
            for number, end in stored.chunks:
                self.chunks.append(_Chunk(self, number, start, end))
                start = end
        self.next_number = self.chunks[-1].number + 1 if self.chunks else 0

    def grew(self) -> None:
        """Items were appended: the open chunk has them, or a new chunk from where the last
        stored one ended (so a merge that appended many items at once needs one call)."""
        chunks = self.chunks
        last = chunks[-1] if chunks else None
        if last is not None and last.end is None:
            return
        start = self.position if last is None else last.end
        assert start is not None
        chunk = _Chunk(self, self.next_number, start)
        self.next_number += 1
        chunks.append(chunk)
        self.table.put(ChunkKey(self.key, chunk.number), chunk)

    def trimmed_to(self, position: int) -> None:
        """The owner dropped the items before ``position`` from the start of ``items``:
        chunks that held only those are deleted."""
        self.position = position
        chunks = self.chunks
        while chunks and chunks[0].end is not None and chunks[0].end <= position:
            self.table.delete(ChunkKey(self.key, chunks.popleft().number))

    def delete(self) -> None:
        """The items are no longer needed: delete every chunk."""
        for chunk in self.chunks:
            self.table.delete(ChunkKey(self.key, chunk.number))
        self.chunks.clear()


# -- event-time windows -------------------------------------------------------------------


class ChangeMarks(ItemLog):
    """Stands, in a durable scope, where an open event-time window keeps the holds on its
    items (none are taken there: the checkpoint covers the items). What adds an item to the
    window appends its hold, as it does in memory; here that adds the item to the window's
    log and marks the window's header, and the operator's progress, changed for the next
    checkpoint. So the per-item code is the same in both modes, with no test of the mode in
    it."""

    __slots__ = ("bounds_move",)

    def __init__(
        self,
        table: StateTable[Any, Any],
        key: Any,
        items: MutableSequence[Any],
        stored: StoredLog | None = None,
        *,
        bounds_move: bool,
    ) -> None:
        super().__init__(table, key, items, stored)
        # Sessions: the window's bounds move with its items, so its header (the table's
        # entry at `key`) changes too. An aligned window's header changes only when it is
        # emitted, which marks it then.
        self.bounds_move = bounds_move

    def append(self, hold: Hold) -> None:
        self.grew()
        table = self.table
        if self.bounds_move:
            table.touch(self.key)
        table.touch(PROGRESS)  # the item may move the watermark too

    def extend(self, holds: Iterable[Hold]) -> None:
        """A session merged others into this window."""
        self.grew()
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


# -- processing-time windows ----------------------------------------------------------------


def _forget_logs(table: StateTable[Any, Any]) -> None:
    """Delete every stored chunk: the restored items enter again, and are logged anew."""
    for key, _ in list(table.scan()):
        if isinstance(key, ChunkKey):
            table.delete(key)


class OpenItems:
    """Processing-time tumbling and sliding windows in a durable scope: the items of every
    window still open, in arrival order (windows open and close in order, so those are the
    items since the oldest open window opened), in a log whose positions are arrival
    numbers. The table's :data:`OPEN` entry is the arrival number of the first item kept.

    ``base`` is the arrival number of the first item kept; :meth:`keep_from` drops the items
    that arrived before a given number."""

    __slots__ = ("base", "items", "log", "table")

    def __init__(self, table: StateTable[Any, Any]) -> None:
        self.table = table
        self.items: deque[Any] = deque()
        self.base = 0
        self.log = ItemLog(table, OPEN, self.items)
        table.put(OPEN, 0)

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[Any]:
        return iter(self.items)

    @staticmethod
    def restored(table: StateTable[Any, Any]) -> list[Any]:
        """The items a checkpoint stored in ``table``, which are then forgotten there: read
        them before an :class:`OpenItems` takes the table over, and add them to it again."""
        log = StoredLog.all_in(table).get(OPEN)
        base = table.get(OPEN, 0)
        _forget_logs(table)
        if log is None:
            return []
        return log.items[max(base - log.position, 0) :]

    @property
    def arrived(self) -> int:
        """How many items arrived so far (the number the next one gets)."""
        return self.base + len(self.items)

    def add(self, item: Any) -> None:
        self.items.append(item)
        self.log.grew()

    def keep_from(self, arrival: int) -> None:
        """Forget the items that arrived before number ``arrival``: no open window has them."""
        items = self.items
        if self.base >= arrival:
            return
        while items and self.base < arrival:
            items.popleft()
            self.base += 1
        self.log.trimmed_to(self.base)
        self.table.put(OPEN, self.base)


class OpenSessions:
    """Processing-time sessions in a durable scope: the items of each key's open session,
    in arrival order, a log per key, deleted when the session closes."""

    __slots__ = ("logs", "table")

    def __init__(self, table: StateTable[Any, Any]) -> None:
        self.table = table
        self.logs: dict[Any, ItemLog] = {}

    def restored(self) -> list[Any]:
        """The items of the sessions a checkpoint stored, key after key, which are then
        forgotten there: read them before :meth:`add` starts logging, and add them again."""
        logs = StoredLog.all_in(self.table)
        _forget_logs(self.table)
        return [item for log in logs.values() for item in log.items]

    def add(self, key: Any, item: Any) -> None:
        log = self.logs.get(key)
        if log is None:
            log = self.logs[key] = ItemLog(self.table, key, [])
        log.items.append(item)
        log.grew()

    def closed(self, key: Any) -> None:
        """``key``'s session was emitted."""
        self.logs.pop(key).delete()
