"""The lookup join: each item of a stream enriched with the latest value of its key in a
table kept from a stream of table updates (a changelog, a compacted topic), as Kafka Streams'
stream-table join does.

The table is a :class:`rxflow.StateTable` from :func:`rxflow._state.current_state`, taken
when the join is subscribed, so inside a checkpointed :class:`rxflow.Flow` it is restored
after a restart; elsewhere it is a plain dict. See :func:`lookup_join`.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any, Generic, Literal, TypeVar, overload

import attrs
import reactivex
from reactivex import Observable, abc
from reactivex.disposable import CompositeDisposable, Disposable

from rxflow._checks import check_function, check_name
from rxflow._stage_metrics import StageMetrics
from rxflow._state import StateTable, current_state

__all__ = [
    "MISSING_POLICIES",
    "Enriched",
    "LookupJoin",
    "MissingPolicy",
    "Tombstone",
    "lookup_join",
]

T = TypeVar("T")
U = TypeVar("U")
V = TypeVar("V")


MissingPolicy = Literal["drop", "emit"]
"""What :func:`lookup_join` does with an item whose key the table has no value for:
``"drop"`` it (counted), or ``"emit"`` it with the value ``None``."""
MISSING_POLICIES: tuple[MissingPolicy, ...] = ("drop", "emit")


@attrs.frozen
class Enriched(Generic[T, V]):
    """An item of the stream and its key's value in the table when the item arrived
    (``None`` if the key had none, with ``missing="emit"``)."""

    item: T
    value: V | None


@attrs.frozen
class Tombstone:
    """A table update that deletes ``key`` (as does an update whose value is ``None``)."""

    key: Hashable


class LookupJoin(Generic[T, V]):
    """The operator that :func:`lookup_join` returns.

    Attributes:
        missing_dropped: items dropped because the table had no value for their key
            (``missing="drop"``).
        metrics: a :class:`rxflow.flow.metrics.StageMetrics` (kind ``"join"``): items of
            the stream received, enriched items emitted, items dropped; its ``backlog`` is
            the number of keys in the table now.
    """

    def __init__(
        self,
        table: Observable[Any],
        *,
        key: Callable[[T], Hashable],
        table_key: Callable[[Any], Hashable],
        value: Callable[[Any], V | None] | None,
        missing: MissingPolicy,
        name: str,
    ) -> None:
        self.table = table
        self.key = key
        self.table_key = table_key
        self.value = value
        self.missing = missing
        self.name = name
        self.missing_dropped = 0
        self.metrics = StageMetrics(name, "join", backlog=self.state_size)
        self._tables: set[StateTable[Hashable, Any]] = set()

    @property
    def keyed(self) -> bool:
        """False: each subscription looks items up in the table its own table stream
        built, so workers that share a source's work each need the whole table stream (or
        the part of it for the keys they get), not the items of one key."""
        return False

    def state_size(self) -> int:
        """Keys in the table now, over all subscriptions."""
        return sum(len(table) for table in self._tables)

    def __call__(self, source: Observable[T]) -> Observable[Enriched[T, V]]:
        def subscribe(
            observer: abc.ObserverBase[Enriched[T, V]], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            state: StateTable[Hashable, Any] = current_state().table(self.name, owner=self)
            self._tables.add(state)
            ended = False

            def on_update(record: Any) -> None:
                if ended:
                    return
                try:
                    if isinstance(record, Tombstone):
                        state.delete(record.key)
                        return
                    table_key = self.table_key(record)
                    value = record if self.value is None else self.value(record)
                except Exception as error:
                    on_error(error)
                    return
                if value is None:
                    state.delete(table_key)
                else:
                    state.put(table_key, value)

            def on_next(item: T) -> None:
                if ended:
                    return
                self.metrics.received += 1
                try:
                    key = self.key(item)
                except Exception as error:
                    on_error(error)
                    return
                value = state.get(key)
                if value is None and self.missing == "drop":
                    self.missing_dropped += 1
                    self.metrics.dropped += 1
                    return
                self.metrics.emitted += 1
                observer.on_next(Enriched(item, value))

            def finish() -> None:
                nonlocal ended
                ended = True
                self._tables.discard(state)

            def on_error(error: Exception) -> None:
                if not ended:
                    finish()
                    observer.on_error(error)

            def on_completed() -> None:
                if not ended:
                    finish()
                    observer.on_completed()

            # The table stream first: updates it has at hand (a replayed changelog, a list)
            # are in the table before the first item asks for them.
            updates = self.table.subscribe(on_update, on_error, scheduler=scheduler)
            if ended:
                return CompositeDisposable(updates, Disposable(finish))
            items = source.subscribe(on_next, on_error, on_completed, scheduler=scheduler)
            return CompositeDisposable(updates, items, Disposable(finish))

        return reactivex.create(subscribe)


@overload
def lookup_join(
    table: Observable[U | Tombstone],
    *,
    key: Callable[[T], Hashable],
    table_key: Callable[[U], Hashable],
    value: None = ...,
    missing: MissingPolicy = ...,
    name: str = ...,
) -> LookupJoin[T, U]: ...
@overload
def lookup_join(
    table: Observable[U | Tombstone],
    *,
    key: Callable[[T], Hashable],
    table_key: Callable[[U], Hashable],
    value: Callable[[U], V | None],
    missing: MissingPolicy = ...,
    name: str = ...,
) -> LookupJoin[T, V]: ...
def lookup_join(
    table: Observable[Any],
    *,
    key: Callable[[T], Hashable],
    table_key: Callable[[Any], Hashable],
    value: Callable[[Any], Any] | None = None,
    missing: MissingPolicy = "drop",
    name: str = "lookup_join",
) -> LookupJoin[T, Any]:
    """Enrich each item of the stream with the latest value of its key in ``table``: emit
    ``Enriched(item, value)``.

    ``table`` is a stream of table updates (a changelog, a compacted topic read from its
    start): the latest update of each ``table_key`` wins. Its value is ``value(update)``
    (without ``value=``: the update itself); a value of ``None``, or a :class:`Tombstone`,
    deletes the key (a Kafka tombstone is a record whose value is ``None``:
    ``value=lambda m: m.value``).

    The two streams are separate subscriptions and are not ordered against each other: an
    item sees the table as it is when the item arrives (processing order), as in Kafka
    Streams' stream-table join, not as of the item's event time. Updates the table stream
    has at hand when subscribed (it is subscribed first) are in before the first item.
    An item whose key has no value is dropped and counted (``missing="drop"``) or emitted
    with ``None`` (``missing="emit"``).

    The join completes when the stream completes (the table stream may be endless); the
    table stream completing changes nothing. An error of either, or of a function given
    here, is passed on and disposes both subscriptions.

    Example:
        >>> from reactivex.subject import Subject
        >>> customers = Subject()
        >>> orders = Subject()
        >>> join = lookup_join(customers, key=lambda o: o["customer"],
        ...                    table_key=lambda c: c[0], value=lambda c: c[1], missing="emit")
        >>> _ = orders.pipe(join).subscribe(lambda e: print(e.item["id"], e.value))
        >>> customers.on_next(("ann", "Paris"))
        >>> orders.on_next({"id": 1, "customer": "ann"})
        1 Paris
        >>> customers.on_next(("ann", "Lyon")); orders.on_next({"id": 2, "customer": "ann"})
        2 Lyon
        >>> customers.on_next(("ann", None)); orders.on_next({"id": 3, "customer": "ann"})
        3 None
    """
    where = "lookup_join()"
    if not isinstance(table, Observable):
        raise TypeError(
            f"{where}: table must be an Observable of table updates (a changelog), got {table!r}"
        )
    check_function(where, "key", key, "of an item, returning the key to look up")
    check_function(where, "table_key", table_key, "of a table update, returning its key")
    check_function(where, "value", value, "of a table update, returning its value", optional=True)
    if missing not in MISSING_POLICIES:
        raise ValueError(
            f"{where}: missing must be 'drop' (leave out items whose key has no value) or "
            f"'emit' (emit them with the value None), got {missing!r}"
        )
    return LookupJoin(
        table,
        key=key,
        table_key=table_key,
        value=value,
        missing=missing,
        name=check_name(where, "name", name),
    )
