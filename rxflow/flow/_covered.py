"""``Covered``: the identities of source messages that a checkpoint has made part of the
stored state, kept small.

A checkpoint acknowledges the messages it covers *after* it is stored. A crash between the
two means the system delivers some of them again although the stored state already holds
them; the flow recognises them by their identity in the checkpoint's ``Covered`` set, and
acknowledges them without pushing them through the operators a second time.

Identities are what a connector gives (``message.identity``): a JetStream stream sequence
(an int), a Kafka ``(topic, partition, offset)``, a Redis entry id. Consecutive integers, or
tuples that end with consecutive integers, are kept as ranges: a checkpoint covering a
million Kafka records of one partition costs one range, not a million tuples.

Example:
    >>> covered = Covered()
    >>> for offset in range(1000, 2000):
    ...     covered.add(("orders", 3, offset))
    >>> covered.add(b"1700000000000-0")
    >>> ("orders", 3, 1500) in covered, ("orders", 3, 2000) in covered, len(covered)
    (True, False, 1001)
    >>> Covered.from_bytes(covered.to_bytes()) == covered
    True
"""

from __future__ import annotations

import bisect
import pickle
from collections.abc import Hashable, Iterable
from typing import Any

__all__ = ["Covered"]


class Covered:
    """A set of message identities, with runs of integers kept as ranges."""

    __slots__ = ("_others", "_ranges")

    def __init__(self, identities: Iterable[Hashable] = ()) -> None:
        # Per prefix (the identity without its last integer; () for a bare int): the
        # starts and the stops of sorted, disjoint, non-adjacent half-open ranges.
        self._ranges: dict[tuple[Any, ...], tuple[list[int], list[int]]] = {}
        self._others: set[Hashable] = set()  # identities that end with no integer
        for identity in identities:
            self.add(identity)

    def add(self, identity: Hashable) -> None:
        split = _split(identity)
        if split is None:
            self._others.add(identity)
            return
        prefix, number = split
        ranges = self._ranges.get(prefix)
        if ranges is None:
            ranges = self._ranges[prefix] = ([], [])
        starts, stops = ranges
        if stops and stops[-1] == number:  # the usual case: the next in order
            stops[-1] += 1
            return
        at = bisect.bisect_right(starts, number)  # rare: out of order
        if at and stops[at - 1] > number:
            return  # already in
        if at and stops[at - 1] == number:
            stops[at - 1] += 1
        else:
            starts.insert(at, number)
            stops.insert(at, number + 1)
            at += 1
        if at < len(starts) and starts[at] == stops[at - 1]:  # now touches the next: merge
            stops[at - 1] = stops[at]
            del starts[at], stops[at]

    def update(self, identities: Iterable[Hashable]) -> None:
        for identity in identities:
            self.add(identity)

    def update_from(self, other: Covered) -> None:
        """Add every identity of ``other``, range by range."""
        self._others |= other._others
        for prefix, (starts, stops) in other._ranges.items():
            for start, stop in zip(starts, stops, strict=True):
                self._add_range(prefix, start, stop)

    def _add_range(self, prefix: tuple[Any, ...], start: int, stop: int) -> None:
        ranges = self._ranges.get(prefix)
        if ranges is None:
            ranges = self._ranges[prefix] = ([], [])
        starts, stops = ranges
        # The ranges that touch or overlap [start, stop) are replaced by their union.
        first = bisect.bisect_left(stops, start)
        last = bisect.bisect_right(starts, stop)
        if first < last:
            start = min(start, starts[first])
            stop = max(stop, stops[last - 1])
        starts[first:last] = [start]
        stops[first:last] = [stop]

    def __contains__(self, identity: object) -> bool:
        if not isinstance(identity, Hashable):
            return False
        split = _split(identity)
        if split is None:
            return identity in self._others
        prefix, number = split
        ranges = self._ranges.get(prefix)
        if ranges is None:
            return False
        starts, stops = ranges
        at = bisect.bisect_right(starts, number)
        return at > 0 and number < stops[at - 1]

    def __len__(self) -> int:
        counted = sum(
            stop - start
            for starts, stops in self._ranges.values()
            for start, stop in zip(starts, stops, strict=True)
        )
        return counted + len(self._others)

    def __bool__(self) -> bool:
        return bool(self._others) or any(starts for starts, _ in self._ranges.values())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Covered):
            return NotImplemented
        return self._nonempty() == other._nonempty() and self._others == other._others

    def _nonempty(self) -> dict[tuple[Any, ...], tuple[list[int], list[int]]]:
        return {prefix: ranges for prefix, ranges in self._ranges.items() if ranges[0]}

    __hash__ = None  # type: ignore[assignment]  # mutable

    def to_bytes(self) -> bytes:
        return pickle.dumps((self._nonempty(), self._others), protocol=pickle.HIGHEST_PROTOCOL)

    @classmethod
    def from_bytes(cls, data: bytes) -> Covered:
        covered = cls()
        covered._ranges, covered._others = pickle.loads(data)  # our own record
        return covered


def _split(identity: Hashable) -> tuple[tuple[Any, ...], int] | None:
    """``(prefix, number)`` for an int or a tuple ending in an int; None otherwise."""
    if type(identity) is int:
        return (), identity
    if type(identity) is tuple and identity and type(identity[-1]) is int:
        return identity[:-1], identity[-1]
    return None
