"""Keyed state: the tables stateful operators keep their state in, and the scope that hands
them out.

A stateful operator (``rxflow.state.aggregate``, ``deduplicate``, a join, an event-time
window) asks :func:`current_state` for a :class:`StateTable` when it is subscribed, by a
name of its own, and keeps everything it must remember there: get, put, delete, scan by key
prefix, entries that expire after a TTL. Where the table's contents live is not the
operator's business:

* outside a checkpointed flow (``open_pipe``, a marble test, a Flow without
  ``.checkpoint(...)``) the scope is :data:`IN_MEMORY`: each subscription gets a fresh table
  that is a dict and nothing more, so an operator costs what a hand-written dict costs;
* inside a :class:`rxflow.Flow` with checkpoints, the table is *durable*: it records which
  keys changed, and the flow's checkpoints write those changes to a store (SQLite, Redis,
  PostgreSQL, a Kafka changelog) together with the source positions they cover. After a
  crash the flow loads the tables back before it reads its sources again. Over a partitioned
  source each partition has a scope of its own (:meth:`StateScope.for_partition`), which the
  partition's next owner restores.

The core defines the protocol so that it never imports the flow or the stores: imports run
one way, as with :mod:`rxflow._holds`.

Example:
    >>> from rxflow._state import current_state
    >>> totals = current_state().table("totals", owner=None)
    >>> totals.put("ann", 3)
    >>> totals.put("bob", 4, ttl=60.0)
    >>> totals.get("ann"), totals.get("cid", 0), len(totals)
    (3, 0, 2)
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Hashable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Generic, Protocol, TypeVar

__all__ = [
    "DELETED",
    "IN_MEMORY",
    "InMemoryState",
    "StateScope",
    "StateTable",
    "TableChange",
    "current_state",
    "state_activated",
]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class _Deleted:
    """The value of a change that deleted its key (see :meth:`StateTable.take_changes`)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "DELETED"

    def __reduce__(self) -> str:
        return "DELETED"  # unpickled as the one DELETED of this module


DELETED: Any = _Deleted()
"""Marks a deleted key in :meth:`StateTable.take_changes`."""

_MISSING: Any = object()

TableChange = tuple[Any, Any, float | None]
"""``(key, value or DELETED, seconds until it expires or None)``: one key's change since the
last checkpoint, as :meth:`StateTable.take_changes` returns it."""


class StateTable(Generic[K, V]):
    """One stateful operator's keyed state in one scope: a dict with expiring entries that,
    when durable, records what changed for the flow's next checkpoint.

    Keys are hashable values (a customer id, a ``(key, window start)`` tuple); values are
    any picklable objects. A value changed in place must be :meth:`put` again (or
    :meth:`touch`-ed) for a checkpoint to see it.

    TTLs count on :attr:`clock` (the operator's scheduler clock, so virtual time in tests);
    an expired entry is gone for :meth:`get`, ``in`` and :meth:`scan` at once, and its memory
    is freed by :meth:`expire` (which operators call as time passes) or when it is next read.

    Example:
        >>> table = StateTable("seen", clock=lambda: now)
        >>> now = 0.0
        >>> table.put(("eu", "ann"), 1, ttl=10.0)
        >>> table.put(("us", "bob"), 2)
        >>> [key for key, _ in table.scan(("eu",))]
        [('eu', 'ann')]
        >>> now = 10.0
        >>> table.expire(), table.get(("eu", "ann")), len(table)
        (1, None, 1)
    """

    __slots__ = (
        "_changed",
        "_clock",
        "_deadlines",
        "_expires",
        "_scheduled",
        "_values",
        "name",
        "scope",
    )

    def __init__(
        self,
        name: str,
        scope: str = "",
        *,
        durable: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.scope = scope
        self._clock = clock
        self._values: dict[K, V] = {}
        # Keys with a TTL: when each expires, on `clock`. Invariant: a key is here only
        # while it is in _values.
        self._expires: dict[K, float] = {}
        # A heap of (time, id, key): when to look at a key's TTL again. Invariant: each key
        # with a TTL has one live entry, at its time in _scheduled, no later than when it
        # expires (a TTL extended by a later put keeps its entry, which is pushed again for
        # the rest when it comes due), so the heap grows with the keys, not with the puts.
        # Entries whose time is not the key's _scheduled time are stale, and skipped.
        self._deadlines: list[tuple[float, int, K]] = []
        self._scheduled: dict[K, float] = {}
        # Keys put or deleted since the last take_changes(); None when the table is not
        # durable, so that a table in memory records nothing.
        self._changed: set[K] | None = set() if durable else None

    @property
    def clock(self) -> Callable[[], float]:
        """The clock TTLs count on (seconds). An operator sets its scheduler's clock here
        when it is subscribed; setting it keeps every entry's remaining time to live."""
        return self._clock

    @clock.setter
    def clock(self, clock: Callable[[], float]) -> None:
        if self._expires:  # rebase: each entry keeps the time it has left
            shift = clock() - self._clock()
            self._expires = {key: expires + shift for key, expires in self._expires.items()}
            self._reschedule()
        self._clock = clock

    @property
    def durable(self) -> bool:
        """Whether a checkpoint persists this table (it records changes)."""
        return self._changed is not None

    def get(self, key: K, default: Any = None) -> Any:
        """The value of ``key``, or ``default`` if it has none (or it expired)."""
        value = self._values.get(key, _MISSING)
        if value is _MISSING:
            return default
        if self._expires and key in self._expires and self._expires[key] <= self._clock():
            self._remove(key)
            return default
        return value

    def __contains__(self, key: object) -> bool:
        return self.get(key, _MISSING) is not _MISSING  # type: ignore[arg-type]

    def __len__(self) -> int:
        """Entries held, including expired ones not freed yet (see :meth:`expire`)."""
        return len(self._values)

    def put(self, key: K, value: V, *, ttl: float | None = None) -> None:
        """Set ``key`` to ``value``; with ``ttl``, it expires that many seconds from now
        (on :attr:`clock`). Without ``ttl`` an earlier TTL of the key is cleared."""
        self._values[key] = value
        if ttl is not None:
            expires = self._clock() + ttl
            self._expires[key] = expires
            scheduled = self._scheduled.get(key)
            if scheduled is None or expires < scheduled:
                self._schedule(key, expires)
        elif self._expires:
            self._expires.pop(key, None)
        if self._changed is not None:
            self._changed.add(key)

    def touch(self, key: K) -> None:
        """``key``'s value was changed in place: the next checkpoint writes it."""
        if self._changed is not None and key in self._values:
            self._changed.add(key)

    def delete(self, key: K) -> None:
        """Remove ``key`` (nothing happens if it has no value)."""
        if key in self._values:
            self._remove(key)

    def pop(self, key: K, default: Any = None) -> Any:
        """Remove ``key`` and return its value, or ``default``."""
        value = self.get(key, _MISSING)
        if value is _MISSING:
            return default
        self._remove(key)
        return value

    def scan(self, prefix: Any = None) -> Iterator[tuple[K, V]]:
        """Entries whose key starts with ``prefix``, in the order they were first put: a
        tuple prefix of tuple keys, a ``str`` or ``bytes`` prefix of such keys; ``None``
        scans every entry. Expired entries are left out."""
        now = self._clock() if self._expires else 0.0
        expires = self._expires
        for key, value in list(self._values.items()):
            if prefix is not None and not _starts_with(key, prefix):
                continue
            if expires and key in expires and expires[key] <= now:
                continue
            yield key, value

    def keys(self) -> list[K]:
        """Every key held (expired ones not freed yet included)."""
        return list(self._values)

    def expire(self) -> int:
        """Free every entry whose TTL has passed; return how many."""
        deadlines = self._deadlines
        if not deadlines:
            return 0
        now = self._clock()
        freed = 0
        while deadlines and deadlines[0][0] <= now:
            key = self._due()
            if key is not None and self._expires[key] <= now:
                self._remove(key)
                freed += 1
        return freed

    def next_expiry(self) -> float | None:
        """When (on :attr:`clock`) the next entry expires, or None if none has a TTL."""
        deadlines = self._deadlines
        while deadlines:
            time, _, key = deadlines[0]
            if self._scheduled.get(key) == time and self._expires.get(key) == time:
                return time
            self._due()  # stale, or due later than scheduled: look again
        return None

    def _schedule(self, key: K, time: float) -> None:
        self._scheduled[key] = time
        heapq.heappush(self._deadlines, (time, id(key), key))

    def _due(self) -> K | None:
        """Pop the heap's first entry: its key if its TTL is still set, else None. A key
        whose TTL was extended meanwhile is scheduled again, at its expiry."""
        time, _, key = heapq.heappop(self._deadlines)
        if self._scheduled.get(key) != time:
            return None  # stale: scheduled again earlier
        del self._scheduled[key]
        expires = self._expires.get(key)
        if expires is None:
            return None  # deleted, or put again without a TTL
        if expires > time:
            self._schedule(key, expires)
        return key

    def _remove(self, key: K) -> None:
        del self._values[key]
        self._expires.pop(key, None)
        if self._changed is not None:
            self._changed.add(key)

    # -- the checkpoint's side -----------------------------------------------------------

    def take_changes(self) -> list[TableChange]:
        """What changed since the last call: ``(key, value or DELETED, seconds until it
        expires or None)`` per key. The values are the live objects: serialize them before
        anything else runs. Only a durable table records changes."""
        changed = self._changed
        if not changed:
            return []
        self._changed = set()
        now = self._clock() if self._expires else 0.0
        changes: list[TableChange] = []
        for key in changed:
            value = self._values.get(key, DELETED)
            expires = self._expires.get(key)
            changes.append((key, value, None if expires is None else expires - now))
        return changes

    def restore(self, entries: Iterable[tuple[K, V, float | None]]) -> None:
        """Load entries a checkpoint stored: ``(key, value, seconds until it expires or
        None)``. Restored entries are not changes."""
        now = self._clock()
        for key, value, expires_in in entries:
            self._values[key] = value
            if expires_in is not None:
                self._expires[key] = now + expires_in
            else:
                self._expires.pop(key, None)
        self._reschedule()

    def _reschedule(self) -> None:
        """One heap entry per key with a TTL, at its expiry."""
        self._scheduled = dict(self._expires)
        self._deadlines = [(expires, id(key), key) for key, expires in self._expires.items()]
        heapq.heapify(self._deadlines)


def _starts_with(key: object, prefix: object) -> bool:
    if isinstance(prefix, tuple):
        return isinstance(key, tuple) and key[: len(prefix)] == prefix
    if isinstance(prefix, str):
        return isinstance(key, str) and key.startswith(prefix)
    if isinstance(prefix, bytes):
        return isinstance(key, bytes) and key.startswith(prefix)
    return key == prefix


class StateScope(Protocol):
    """Where the stateful operators subscribed in a context get their tables."""

    @property
    def durable(self) -> bool:
        """Whether tables handed out here are persisted by checkpoints."""
        ...

    def table(self, name: str, owner: object) -> StateTable[Any, Any]:
        """The table named ``name`` for the operator ``owner`` (the operator object that
        the user placed in the pipeline; chains of the same operators per partition pass
        the same object). A durable scope hands the same name the same table each time,
        restored from the last checkpoint, and refuses one name for two operators."""
        ...

    def for_partition(self, partition: object) -> StateScope:
        """The scope of one partition's chain (see :func:`rxflow.per_partition`)."""
        ...


class InMemoryState:
    """The scope outside a checkpointed flow: every call to :meth:`table` is a fresh
    in-memory table, so each subscription of an operator starts empty, as reactivex's own
    stateful operators (``scan``, ``distinct``) do."""

    __slots__ = ()

    @property
    def durable(self) -> bool:
        return False

    def table(self, name: str, owner: object) -> StateTable[Any, Any]:
        return StateTable(name)

    def for_partition(self, partition: object) -> StateScope:
        return self


IN_MEMORY: StateScope = InMemoryState()
"""The scope outside a checkpointed flow."""

_current: ContextVar[StateScope] = ContextVar("rxflow_state", default=IN_MEMORY)


def current_state() -> StateScope:
    """The state scope of the flow this code runs in, or :data:`IN_MEMORY`. Operators read
    it when they are subscribed."""
    return _current.get()


@contextmanager
def state_activated(scope: StateScope) -> Iterator[StateScope]:
    """Make ``scope`` what :func:`current_state` returns in this context (a checkpointed
    flow does this around subscribing its operators; :func:`rxflow.per_partition` around
    each partition's chain)."""
    token = _current.set(scope)
    try:
        yield scope
    finally:
        _current.reset(token)
