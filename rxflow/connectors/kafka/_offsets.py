"""Which offset of a partition may be committed (:class:`PartitionOffsets`), when records are
acknowledged out of order and several records can make one output.

Kafka remembers one number per partition and consumer group: the committed offset, where
the group's next owner of the partition starts reading. A consumer that commits offset ``c``
says two things at once: every record below ``c`` is done with, and reading again from ``c``
rebuilds everything that is not done. Acknowledgements arrive out of order (a filtered record
at once, a windowed one when its window closes), so the first condition is "below the lowest
unacknowledged offset". The second needs more: a window that was written can hold records on
both sides of that offset, and replaying from the middle of it would rebuild the window with
only its later records and write it again as if it were whole. So the records that made one
output are *linked*, and a commit point never falls strictly inside a linked group: it moves
down to the group's first offset, and replaying then rebuilds the whole window (the same
contents, written again: at-least-once, never a different window).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence

__all__ = ["PartitionOffsets"]


class PartitionOffsets:
    """One assigned partition's records between the committed offset and what was fetched.

    Example:
        >>> offsets = PartitionOffsets(start=10)
        >>> for offset in range(10, 14):
        ...     offsets.fetched(offset)
        >>> offsets.settled(11)            # out of order: 10 is not done yet
        >>> offsets.commit_point()
        10
        >>> offsets.link([10, 13])         # 10 and 13 made one window, which was written
        >>> offsets.settled(10); offsets.settled(13)
        >>> offsets.commit_point()         # 12 is not done; from 12, the window lacks 10
        10
        >>> offsets.settled(12)
        >>> offsets.commit_point()
        14
    """

    __slots__ = ("_committed", "_group_high", "_heap", "_next", "_parent", "_unsettled")

    def __init__(self, start: int) -> None:
        # Invariant: every offset in _unsettled is >= _committed, and _next is one past the
        # highest offset fetched (or the start position): the commit point when nothing is
        # unsettled and no group reaches below it.
        self._committed = start
        self._next = start
        # Unsettled offsets: the set says which; the heap finds the lowest (settled ones are
        # removed from the heap lazily, when they reach its top).
        self._unsettled: set[int] = set()
        self._heap: list[int] = []
        # Linked groups as a union-find forest over offsets. Invariant: a group's root is
        # its lowest offset; _group_high maps each root of a group of two or more to its
        # highest offset. Only groups reaching the committed offset or above are kept.
        self._parent: dict[int, int] = {}
        self._group_high: dict[int, int] = {}

    @property
    def unsettled(self) -> int:
        """Records fetched and neither acknowledged nor rejected yet."""
        return len(self._unsettled)

    @property
    def committed_offset(self) -> int:
        """The last offset committed (or the start position)."""
        return self._committed

    def fetched(self, offset: int) -> None:
        """A record was fetched (again, after a :meth:`rewind`: then it is unsettled anew)."""
        if offset < self._committed:
            return  # done with already: a copy from before a commit
        if offset not in self._unsettled:
            self._unsettled.add(offset)
            heapq.heappush(self._heap, offset)
        if offset >= self._next:
            self._next = offset + 1

    def fetched_run(self, offsets: Sequence[int]) -> None:
        """Records fetched in one go, in ascending order (what one fetch brought of this
        partition): the same as :meth:`fetched` of each, in one step when all of them are
        new (past every record fetched before), as they are but after a rewind."""
        if not offsets:
            return
        if offsets[0] < self._next:  # a rewound partition read again: one by one
            for offset in offsets:
                self.fetched(offset)
            return
        # Each is above every offset in the heap (all below _next) and they ascend: so
        # appended in order, they keep it a heap.
        self._unsettled.update(offsets)
        self._heap.extend(offsets)
        self._next = offsets[-1] + 1

    def settled(self, offset: int) -> None:
        """A record was acknowledged, or rejected: done with."""
        self._unsettled.discard(offset)

    def settled_many(self, offsets: Iterable[int]) -> None:
        """Records acknowledged, or rejected: :meth:`settled` of each."""
        self._unsettled.difference_update(offsets)

    def rewind(self, offset: int) -> None:
        """The partition is read again from ``offset`` (a requeued record): it stays
        unsettled until its new copy is settled, so no commit passes it meanwhile."""
        if offset >= self._committed and offset not in self._unsettled:
            self._unsettled.add(offset)
            heapq.heappush(self._heap, offset)

    def link(self, offsets: Iterable[int]) -> None:
        """These records made one output: a commit point never splits them."""
        roots = {self._root(offset) for offset in offsets if offset >= self._committed}
        if len(roots) < 2:
            return  # one record, or one group already
        group_high = self._group_high
        high = max(group_high.pop(root, root) for root in roots)
        low = min(roots)  # each root is its group's lowest offset: so is the union's
        for root in roots:
            if root != low:
                self._parent[root] = low
        group_high[low] = high

    def commit_point(self) -> int:
        """The offset to commit now: at most the lowest unsettled offset, moved down to the
        start of any linked group that it would split; never below the last commit."""
        heap, unsettled = self._heap, self._unsettled
        if len(heap) > 2 * len(unsettled) + 64:
            # Mostly settled records, which would each be popped: a sorted list is a heap.
            self._heap = heap = sorted(unsettled)
        while heap and heap[0] not in unsettled:
            heapq.heappop(heap)
        point = heap[0] if heap else self._next
        moved = True
        while moved:  # a group moved down to may itself start inside another group
            moved = False
            for low, high in self._group_high.items():
                if low < point <= high:
                    point, moved = low, True
        return max(point, self._committed)

    def committed(self, offset: int) -> None:
        """A commit of ``offset`` succeeded: forget what lies wholly below it."""
        if offset <= self._committed:
            return
        self._committed = offset
        below = [root for root, high in self._group_high.items() if high < offset]
        for root in below:
            del self._group_high[root]
        if below:
            self._parent = {
                offset_: parent for offset_, parent in self._parent.items() if offset_ >= offset
            }

    def _root(self, offset: int) -> int:
        parent = self._parent
        root = offset
        while (up := parent.get(root)) is not None:
            root = up
        while offset != root:  # path compression: later finds are short
            parent[offset], offset = root, parent[offset]
        return root
