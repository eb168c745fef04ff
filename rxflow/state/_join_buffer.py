"""One side of an interval join (:mod:`rxflow.state._joins`): its items buffered per key in
a state table, sorted by event time, and freed as the watermark passes their last chance of
a match."""

from __future__ import annotations

import bisect
import heapq
import itertools
import math
import operator
from collections.abc import Callable, Hashable
from typing import Any

from rxflow._holds import AckHolds, Hold
from rxflow._state import StateTable

__all__ = ["Side", "timestamp_of"]


timestamp_of: Callable[[tuple[float, Any, Hold]], float] = operator.itemgetter(0)
"""An entry's timestamp: what a bucket is sorted by (in C, for bisect's key)."""


class Side:
    """One side's buffer in one subscription: a table of key -> the side's items of that
    key as ``(timestamp, item, hold)``, sorted by timestamp (equal ones in arrival order),
    and a heap that says which keys to look at as the watermark passes.

    An item of this side at ``t`` matches the other side's items whose timestamps are in
    ``[t + low, t + high]`` (left: ``[lower, upper]``; right: ``[-upper, -lower]``). Items of
    the other side still to come are at the watermark or later, so an item is kept while
    ``t + high`` is not below the watermark, and freed once it is.
    """

    def __init__(
        self,
        table: StateTable[Hashable, list[tuple[float, Any, Hold]]],
        *,
        key: Callable[[Any], Hashable],
        timestamp: Callable[[Any], float],
        low: float,
        high: float,
        is_left: bool,
    ) -> None:
        self.table = table
        self.key = key
        self.timestamp = timestamp
        self.low = low
        self.high = high
        self.is_left = is_left
        self.name = "left" if is_left else "right"
        self.max_seen = -math.inf  # the largest timestamp of the side (restored from state)
        self.done = False  # it completed
        # With an idle timeout: when it last sent an item (on the run's quiet clock), and
        # whether it has been quiet so long that it holds the watermark back no longer.
        self.last_arrival = 0.0
        self.idle = False
        # (time from which the key's first item may go, tie-breaker, key). Invariant: every
        # key of the table has an entry here at its first item's time (entries for items
        # freed or displaced since are stale and looked at for nothing). Derived from the
        # table, so rebuilt after a restore rather than stored.
        self.due: list[tuple[float, int, Hashable]] = []
        self.order = itertools.count()
        self.held = 0
        for key_, bucket in table.scan():
            self.held += len(bucket)
            self._due(bucket[0][0], key_)

    def _due(self, t: float, key: Hashable) -> None:
        heapq.heappush(self.due, (t + self.high, next(self.order), key))

    def add(self, key: Hashable, t: float, item: Any, hold: Hold) -> None:
        entry = (t, item, hold)
        table = self.table
        bucket = table.get(key)
        if bucket is None:
            table.put(key, [entry])
            self._due(t, key)
        else:
            if t >= bucket[-1][0]:  # in order, the usual case
                bucket.append(entry)
            else:
                at = bisect.bisect_right(bucket, t, key=timestamp_of)
                bucket.insert(at, entry)
                if at == 0:
                    self._due(t, key)
            table.touch(key)
        self.held += 1

    def free_before(self, watermark: float, holds: AckHolds | None) -> None:
        """Drop the items that no item of the other side at ``watermark`` or later can
        match, and release their holds (``holds``: None when nothing is held)."""
        due, table, high = self.due, self.table, self.high
        while due and due[0][0] < watermark:
            key = heapq.heappop(due)[2]
            bucket = table.get(key)
            if bucket is None:
                continue
            size = len(bucket)
            count = 0
            while count < size and bucket[count][0] + high < watermark:
                count += 1
            if not count:
                continue  # stale: the key's first item is due later, and has its entry
            if holds is not None:
                holds.release([hold for _, _, hold in bucket[:count] if hold is not None])
            if count == size:
                table.delete(key)  # an idle key costs nothing
            else:
                del bucket[:count]
                table.touch(key)
                self._due(bucket[0][0], key)
            self.held -= count

    def release_all(self, holds: AckHolds) -> None:
        """Let go of every buffered item's message (the join completed)."""
        released = [hold for _, bucket in self.table.scan() for _, _, hold in bucket]
        holds.release(hold for hold in released if hold is not None)
