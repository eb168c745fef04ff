"""Keyed stateful operators: :func:`aggregate`, :func:`stateful_map`, :func:`deduplicate`.

Each keeps everything it remembers in one :class:`~rxflow.state.StateTable` per
subscription, which it asks :func:`rxflow._state.current_state` for when it is subscribed.
So the same operator is a dict in memory in ``open_pipe`` or a marble test, and durable in
a checkpointed :class:`rxflow.Flow` (restored after a restart, its changes written at each
checkpoint) without knowing which.

TTLs count on the subscription's scheduler: inside a pipe the event loop's clock (virtual
under trio's ``MockClock``), in a marble test the ``TestScheduler``'s. Expired keys are
freed as items arrive: each item first frees what has expired since the last one, which
costs one comparison when nothing is due.

Each operator object counts what passes in ``metrics`` (kind ``"state"``), which a Flow
shows in its snapshots, and says it is ``keyed``: all of a key's items must reach the
same worker (a Flow over a source that shares work among workers refuses to run it).
"""

from __future__ import annotations

import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable
from typing import Any, Generic

import anyio
import attrs
import reactivex
from reactivex import Observable, abc
from reactivex.disposable import CompositeDisposable, Disposable

from rxflow._checks import check_function, check_name, check_seconds
from rxflow._stage_metrics import StageMetrics
from rxflow._state import StateTable, current_state
from rxflow._typevars import ItemT, ResultT
from rxflow.scheduler import AnyioScheduler
from rxflow.windows.processing import clock_of

if sys.version_info >= (3, 13):
    from typing import TypeVar
else:  # TypeVar defaults (PEP 696) came with Python 3.13
    from typing_extensions import TypeVar

__all__ = [
    "Aggregate",
    "Deduplicate",
    "Keyed",
    "KeyedStage",
    "StatefulMap",
    "aggregate",
    "deduplicate",
    "stateful_map",
]

KeyT = TypeVar("KeyT", bound=Hashable, default=Any)
StateT = TypeVar("StateT", default=Any)

_MISSING: Any = object()


@attrs.frozen
class Keyed(Generic[KeyT, StateT]):
    """A key's new value, as :func:`aggregate` emits it for every item (a changelog of a
    table: the last ``Keyed`` of a key is its current value).

    Example:
        >>> Keyed("ann", 7)
        Keyed(key='ann', value=7)
    """

    key: KeyT
    value: StateT


def _seconds_clock(scheduler: abc.SchedulerBase | None) -> Callable[[], float]:
    """The subscription scheduler's time in seconds, as cheap to read as it can be."""
    if scheduler is None:
        return time.monotonic  # what reactivex's default TimeoutScheduler counts on
    if isinstance(scheduler, AnyioScheduler):
        return anyio.current_time  # what its `now` is made of, without the datetime
    return clock_of(scheduler)


OnNext = Callable[[Any], None]


class KeyedStage(ABC):
    """What the keyed stateful operators share: a name, ``metrics``, a TTL, and the tables
    of the subscriptions alive now (for :meth:`state_size`).

    A subclass says what one item does to its table and its observer in :meth:`_on_next`;
    this class does the subscribing, so that every subscription asks the current state
    scope for its table again (an operator object can be subscribed many times, and in a
    checkpointed flow each time gets the table restored from the last checkpoint).
    """

    keyed = True
    """All of a key's items must go through the same worker (see
    :mod:`rxflow.flow._shared_work`)."""

    def __init__(self, name: str, ttl: float | None) -> None:
        self.name = name
        self.ttl = ttl
        self.metrics = StageMetrics(name, "state")
        # One entry per live subscription (a durable scope may hand two subscriptions the
        # same table, so this is a list: each subscription removes its own entry).
        self._tables: list[StateTable[Any, Any]] = []

    def state_size(self) -> int:
        """Keys held now over every live subscription (expired ones not freed yet
        included)."""
        return sum(len(table) for table in self._tables)

    def __call__(self, source: Observable[Any]) -> Observable[Any]:
        def subscribe(
            observer: abc.ObserverBase[Any], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            table = current_state().table(self.name, owner=self)
            table.clock = _seconds_clock(scheduler)
            self._tables.append(table)
            subscription = source.subscribe(
                self._on_next(table, observer),
                observer.on_error,
                observer.on_completed,
                scheduler=scheduler,
            )
            return CompositeDisposable(subscription, Disposable(lambda: self._forget(table)))

        return reactivex.create(subscribe)

    def _forget(self, table: StateTable[Any, Any]) -> None:
        if table in self._tables:
            self._tables.remove(table)

    @abstractmethod
    def _on_next(self, table: StateTable[Any, Any], observer: abc.ObserverBase[Any]) -> OnNext:
        """The ``on_next`` of one subscription: what an item does to ``table`` and what
        it sends ``observer``."""

    def _failed(self, observer: abc.ObserverBase[Any], error: Exception) -> None:
        self.metrics.errors += 1
        observer.on_error(error)


class Aggregate(KeyedStage, Generic[ItemT, KeyT, StateT]):
    """The operator :func:`aggregate` returns: ``Observable[ItemT]`` to
    ``Observable[Keyed[KeyT, StateT]]``."""

    def __init__(
        self,
        key: Callable[[ItemT], KeyT],
        fold: Callable[[StateT, ItemT], StateT],
        initial: Callable[[], StateT],
        ttl: float | None,
        name: str,
    ) -> None:
        super().__init__(name, ttl)
        self.key = key
        self.fold = fold
        self.initial = initial

    def __call__(self, source: Observable[ItemT]) -> Observable[Keyed[KeyT, StateT]]:
        return super().__call__(source)

    def _on_next(self, table: StateTable[Any, Any], observer: abc.ObserverBase[Any]) -> OnNext:
        key, fold, initial, ttl, metrics = self.key, self.fold, self.initial, self.ttl, self.metrics
        get, put, expire = table.get, table.put, table.expire

        def on_next(item: ItemT) -> None:
            metrics.received += 1
            if ttl is not None:
                expire()
            try:
                item_key = key(item)
                state = get(item_key, _MISSING)
                state = fold(initial() if state is _MISSING else state, item)
            except Exception as error:  # as reactivex's map: the stream fails with it
                self._failed(observer, error)
                return
            put(item_key, state, ttl=ttl)
            metrics.emitted += 1
            observer.on_next(Keyed(item_key, state))

        return on_next


class StatefulMap(KeyedStage, Generic[ItemT, KeyT, StateT, ResultT]):
    """The operator :func:`stateful_map` returns: ``Observable[ItemT]`` to
    ``Observable[ResultT]``."""

    def __init__(
        self,
        key: Callable[[ItemT], KeyT],
        step: Callable[[StateT | None, ItemT], tuple[StateT | None, ResultT]],
        ttl: float | None,
        name: str,
    ) -> None:
        super().__init__(name, ttl)
        self.key = key
        self.step = step

    def __call__(self, source: Observable[ItemT]) -> Observable[ResultT]:
        return super().__call__(source)

    def _on_next(self, table: StateTable[Any, Any], observer: abc.ObserverBase[Any]) -> OnNext:
        key, step, ttl, metrics = self.key, self.step, self.ttl, self.metrics
        get, put, delete, expire = table.get, table.put, table.delete, table.expire

        def on_next(item: ItemT) -> None:
            metrics.received += 1
            if ttl is not None:
                expire()
            try:
                item_key = key(item)
                result = step(get(item_key), item)
            except Exception as error:
                self._failed(observer, error)
                return
            try:
                state, output = result
            except (TypeError, ValueError):
                self._failed(observer, _not_a_pair(self.name, result))
                return
            if state is None:
                delete(item_key)
            else:
                put(item_key, state, ttl=ttl)
            metrics.emitted += 1
            observer.on_next(output)

        return on_next


def _not_a_pair(name: str, result: object) -> TypeError:
    return TypeError(
        f"stateful_map() {name!r}: step must return a pair (new state or None, output), "
        f"got {result!r}"
    )


class Deduplicate(KeyedStage, Generic[ItemT]):
    """The operator :func:`deduplicate` returns: ``Observable[ItemT]`` to itself, minus
    repeats (counted in ``metrics.dropped``)."""

    def __init__(self, key: Callable[[ItemT], Hashable], ttl: float, name: str) -> None:
        super().__init__(name, ttl)
        self.key = key

    def __call__(self, source: Observable[ItemT]) -> Observable[ItemT]:
        return super().__call__(source)

    def _on_next(self, table: StateTable[Any, Any], observer: abc.ObserverBase[Any]) -> OnNext:
        key, ttl, metrics = self.key, self.ttl, self.metrics
        put, expire = table.put, table.expire

        def on_next(item: ItemT) -> None:
            metrics.received += 1
            expire()
            try:
                item_key = key(item)
                seen = item_key in table
            except Exception as error:
                self._failed(observer, error)
                return
            if seen:
                metrics.dropped += 1
                return
            # The TTL runs from the first pass: repeats do not extend it.
            put(item_key, True, ttl=ttl)
            metrics.emitted += 1
            observer.on_next(item)

        return on_next


def aggregate(
    key: Callable[[ItemT], KeyT],
    fold: Callable[[StateT, ItemT], StateT],
    initial: Callable[[], StateT],
    *,
    ttl: float | None = None,
    name: str = "aggregate",
) -> Aggregate[ItemT, KeyT, StateT]:
    """Fold each key's items into a value, and emit the key's new value for every item.

    For each item, its key's value becomes ``fold(value, item)``, where ``value`` is the
    key's last one, or ``initial()`` for a key seen for the first time (or whose value
    expired); the operator emits ``Keyed(key, new value)``. The output is a table's update
    stream (Kafka Streams' KTable): the last output of a key is its current value.

    Args:
        key: the key of an item (hashable; picklable in a checkpointed flow).
        fold: the new value from the key's value and the item. It may change the value in
            place and return it.
        initial: makes a key's first value; a function, so that a mutable value (a list,
            a dict) is a new one per key.
        ttl: seconds after its last update when a key's value expires (the key then starts
            again from ``initial()``), on the subscription's scheduler clock; ``None``: keep
            every key.
        name: the stage's name (in ``metrics``, and the name of its state in a
            checkpointed flow: two stateful operators of a flow need different names).

    Raises:
        TypeError, ValueError: at the call, for a ``key``, ``fold`` or ``initial`` that is
            not callable, a ``ttl`` that is not a positive number of seconds, or an empty
            ``name``. While running, an exception raised by ``key``, ``fold`` or
            ``initial`` fails the stream with that exception (as ``reactivex``'s ``map``).

    Example:
        >>> import reactivex
        >>> orders = [("ann", 3), ("bob", 5), ("ann", 4)]
        >>> totals = aggregate(lambda o: o[0], lambda total, o: total + o[1], int)
        >>> _ = reactivex.from_iterable(orders).pipe(totals).subscribe(print)
        Keyed(key='ann', value=3)
        Keyed(key='bob', value=5)
        Keyed(key='ann', value=7)
    """
    where = "aggregate()"
    return Aggregate(
        check_function(where, "key", key, "of an item, returning its key"),
        check_function(where, "fold", fold, "of (value, item), returning the new value"),
        check_function(where, "initial", initial, "of no argument, returning a key's first value"),
        check_seconds(where, "ttl", ttl, optional=True),
        check_name(where, "name", name),
    )


def stateful_map(
    key: Callable[[ItemT], KeyT],
    step: Callable[[StateT | None, ItemT], tuple[StateT | None, ResultT]],
    *,
    ttl: float | None = None,
    name: str = "stateful_map",
) -> StatefulMap[ItemT, KeyT, StateT, ResultT]:
    """Map each item with its key's state: ``step(state, item)`` returns ``(new state,
    output)``, and the operator emits the output (bytewax's ``stateful_map``).

    ``state`` is ``None`` for a key without state (first seen, deleted, or expired). A
    new state of ``None`` deletes the key's state, so a key whose work is done costs no
    memory.

    Args:
        key: the key of an item (hashable; picklable in a checkpointed flow).
        step: ``(state or None, item) -> (new state or None, output)``.
        ttl: seconds after its last update when a key's state expires, on the
            subscription's scheduler clock; ``None``: keep it until ``step`` deletes it.
        name: the stage's name (in ``metrics``, and the name of its state in a
            checkpointed flow: two stateful operators of a flow need different names).

    Raises:
        TypeError, ValueError: at the call, for a ``key`` or ``step`` that is not callable,
            a ``ttl`` that is not a positive number of seconds, or an empty ``name``. While
            running, an exception raised by ``key`` or ``step`` fails the stream with that
            exception, and a ``step`` that returns something other than a pair fails it
            with a :class:`TypeError`.

    Example:
        Number each user's clicks, and start again after a logout:

        >>> import reactivex
        >>> def number(count, click):
        ...     user, action = click
        ...     if action == "logout":
        ...         return None, f"{user} out"
        ...     count = (count or 0) + 1
        ...     return count, f"{user} #{count}"
        >>> clicks = [("ann", "view"), ("ann", "view"), ("ann", "logout"), ("ann", "view")]
        >>> numbered = stateful_map(lambda click: click[0], number)
        >>> _ = reactivex.from_iterable(clicks).pipe(numbered).subscribe(print)
        ann #1
        ann #2
        ann out
        ann #1
    """
    where = "stateful_map()"
    return StatefulMap(
        check_function(where, "key", key, "of an item, returning its key"),
        check_function(where, "step", step, "of (state or None, item), returning (state, output)"),
        check_seconds(where, "ttl", ttl, optional=True),
        check_name(where, "name", name),
    )


def deduplicate(
    key: Callable[[ItemT], Hashable],
    ttl: float,
    *,
    name: str = "deduplicate",
) -> Deduplicate[ItemT]:
    """Pass the first item of each key and drop the items of that key that follow within
    ``ttl`` seconds of it; after that the key may pass again.

    Dropped items are counted in ``metrics.dropped``. The TTL counts from the item that
    passed (repeats do not extend it), on the subscription's scheduler clock, so the
    operator remembers each key for ``ttl`` seconds and no longer.

    Args:
        key: the key that makes two items the same (an id; picklable in a checkpointed
            flow).
        ttl: how many seconds a key is remembered after its item passed.
        name: the stage's name (in ``metrics``, and the name of its state in a
            checkpointed flow: two stateful operators of a flow need different names).

    Raises:
        TypeError, ValueError: at the call, for a ``key`` that is not callable, a ``ttl``
            that is not a positive number of seconds, or an empty ``name``. While running,
            an exception raised by ``key`` fails the stream with that exception.

    Example:
        >>> import reactivex
        >>> once = deduplicate(lambda event: event["id"], ttl=3600)
        >>> events = [{"id": 1}, {"id": 2}, {"id": 1}]
        >>> _ = reactivex.from_iterable(events).pipe(once).subscribe(print)
        {'id': 1}
        {'id': 2}
        >>> once.metrics.dropped
        1
    """
    where = "deduplicate()"
    return Deduplicate(
        check_function(where, "key", key, "of an item, returning its key"),
        check_seconds(where, "ttl", ttl),
        check_name(where, "name", name),
    )
