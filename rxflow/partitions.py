"""Partitions: keyed work that scales out by partition, as Kafka Streams runs a task per
partition.

A partitioned source (Kafka) hands out records of the partitions its consumer group
assigned to this worker; all of a key's records are in one partition, so a keyed window
needs only that partition's records to be right. Two things make that true in a pipeline:

* :func:`per_partition` runs the operators once per assigned partition: each partition has
  its own windows, its own keyed state and its own event time, so what a worker emits for a
  partition does not depend on which other partitions it owns or how their records
  interleave (a single process reading every partition emits the same windows).
* A :class:`Partition` is one *assignment* of a partition to this worker. When the group
  moves the partition to another worker, the source revokes it: its chain of operators is
  dropped without emitting (its open windows are the new owner's to build, from the
  records it did not commit), and records of it still on their way are not pushed.

A :class:`rxflow.Flow` applies :func:`per_partition` by itself over a source that says it is
``partitioned`` (``kafka_source``); with :func:`rxflow.open_pipe`, write it yourself.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from typing import Any

import attrs
from reactivex import Observable, abc
from reactivex.disposable import CompositeDisposable, Disposable, SingleAssignmentDisposable
from reactivex.subject import Subject

from rxflow._holds import current_holds
from rxflow._pump import Operator
from rxflow._state import current_state, state_activated

__all__ = ["Partition", "per_partition"]

_revocations = 0  # partitions revoked so far, in this process: chains look when it changes


@attrs.define(eq=False)
class Partition:
    """One assignment of a topic's partition to this worker, from assignment to revocation.

    A source makes a new one each time the partition is assigned, and revokes it when the
    partition is taken away; messages carry it (``message.partition``).

    Example:
        >>> partition = Partition("orders", 3)
        >>> partition, partition.revoked
        (Partition(topic='orders', index=3, revoked=False), False)
        >>> partition.revoke()
        >>> partition.revoked
        True
    """

    topic: str
    index: int
    revoked: bool = attrs.field(default=False, init=False)
    """True once the partition was taken from this worker: what remains of it here is
    another worker's to redo."""

    def revoke(self) -> None:
        """The partition was taken from this worker (the source calls this)."""
        global _revocations
        if not self.revoked:
            self.revoked = True
            _revocations += 1


def partition_of(item: object) -> Partition | None:
    """The :class:`Partition` an item was read from (its ``partition`` attribute), or None:
    an item without one, or whose ``partition`` is something else (``str.partition``).

    Example:
        >>> from types import SimpleNamespace as Record
        >>> partition_of(Record(partition=Partition("clicks", 0))), partition_of("a str")
        (Partition(topic='clicks', index=0, revoked=False), None)
    """
    partition = getattr(item, "partition", None)
    return partition if isinstance(partition, Partition) else None


def per_partition(*operators: Operator, flush_at_end: bool | Callable[[], bool] = True) -> Operator:
    """Run ``operators`` once per partition of the items' ``partition`` attribute (items
    without one share a chain): Kafka Streams' task per partition.

    Each partition's chain is subscribed when its first item comes, and has state of its own
    (windows, ``scan``, ``group_by``). A chain whose :class:`Partition` was revoked is
    disposed without completing: its open windows are dropped, not emitted, and its items
    are let go.

    Args:
        operators: the operators to run per partition.
        flush_at_end: when the source completes, complete every chain (open windows are
            emitted). ``False`` disposes them instead, as a revocation does, but without
            letting their items go: what they hold stays unacknowledged, for whoever reads
            the partition next to build whole. A function is asked when the source
            completes (a :class:`rxflow.Flow` over a partitioned source flushes when the
            source ended by itself, not at a graceful stop).

    Example:
        >>> import reactivex
        >>> from reactivex import operators as ops
        >>> from types import SimpleNamespace as Record
        >>> a, b = Partition("clicks", 0), Partition("clicks", 1)
        >>> records = [Record(partition=p, value=n) for p, n in [(a, 1), (b, 10), (a, 2)]]
        >>> running_totals = per_partition(ops.map(lambda r: r.value), ops.scan(lambda s, v: s + v))
        >>> reactivex.from_iterable(records).pipe(running_totals).subscribe(print)
        1
        10
        3
        <reactivex.disposable...>
    """
    operators = tuple(operators)
    for position, operator in enumerate(operators, start=1):
        if not callable(operator):
            raise TypeError(
                f"per_partition(): operator {position} is {operator!r}, not an operator"
            )

    def apply(source: Observable[Any]) -> Observable[Any]:
        def subscribe(
            observer: abc.ObserverBase[Any], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            return _PartitionedRun(operators, flush_at_end, observer, scheduler).start(source)

        return Observable(subscribe)

    return apply


class _Chain:
    """The operators' subscription for one partition."""

    __slots__ = ("input", "partition", "subscription")

    def __init__(self, partition: Partition | None) -> None:
        self.partition = partition
        self.input: Subject[Any] = Subject()
        self.subscription = SingleAssignmentDisposable()


class _PartitionedRun:
    """One subscription of :func:`per_partition`: the chains by partition."""

    def __init__(
        self,
        operators: tuple[Operator, ...],
        flush_at_end: bool | Callable[[], bool],
        observer: abc.ObserverBase[Any],
        scheduler: abc.SchedulerBase | None,
    ) -> None:
        self._operators = operators
        self._flush_at_end = flush_at_end
        self._observer = observer
        self._scheduler = scheduler
        # Invariant: a chain is in _chains from its first item until it completes or its
        # partition is found revoked; none is added once the upstream ended.
        self._chains: dict[Partition | None, _Chain] = {}
        self._upstream = SingleAssignmentDisposable()
        self._upstream_done = False
        self._stopped = False  # an error or a disposal: nothing more goes down
        self._revocations_seen = _revocations
        # Chains subscribe later, in whatever context pushes their first item: they get the
        # context of this subscription (the flow's ack holds and source time).
        self._context = contextvars.copy_context()
        self._holds = current_holds()
        self._state = current_state()  # each chain gets its partition's scope of it

    def start(self, source: Observable[Any]) -> abc.DisposableBase:
        self._upstream.disposable = source.subscribe(
            self._on_next, self._on_error, self._on_completed, scheduler=self._scheduler
        )
        return CompositeDisposable(self._upstream, Disposable(self._dispose))

    # -- from upstream -------------------------------------------------------------------

    def _on_next(self, item: Any) -> None:
        if self._revocations_seen != _revocations:
            self._drop_revoked()
        partition = partition_of(item)
        if partition is not None and partition.revoked:
            return  # a record of a partition given away: its new owner reads it again
        chain = self._chains.get(partition)
        if chain is None:
            chain = self._open(partition)
        chain.input.on_next(item)

    def _on_error(self, error: Exception) -> None:
        self._fail(error)

    def _on_completed(self) -> None:
        self._drop_revoked()
        self._upstream_done = True
        flush = self._flush_at_end() if callable(self._flush_at_end) else self._flush_at_end
        for chain in list(self._chains.values()):
            if flush:
                chain.input.on_completed()  # flushes its windows; it leaves _chains when done
            else:
                del self._chains[chain.partition]
                chain.subscription.dispose()  # what it holds stays unacknowledged
        self._complete_if_done()

    # -- the chains ----------------------------------------------------------------------

    def _open(self, partition: Partition | None) -> _Chain:
        chain = _Chain(partition)
        self._chains[partition] = chain
        output = chain.input.pipe(*self._operators)

        def on_next(value: Any) -> None:
            if partition is not None and partition.revoked:
                self._drop(chain)  # a timer fired after the revocation: not emitted
            elif not self._stopped:
                self._observer.on_next(value)

        def on_completed() -> None:
            if self._chains.get(partition) is chain:
                del self._chains[partition]
                self._complete_if_done()

        def subscribe() -> abc.DisposableBase:
            with state_activated(self._state.for_partition(partition)):
                return output.subscribe(
                    on_next, self._fail, on_completed, scheduler=self._scheduler
                )

        chain.subscription.disposable = self._context.copy().run(subscribe)
        # An operator may subscribe through the scheduler ("now", not at once: merge's
        # sources): a pipe's scheduler runs that here, before the first item is pushed,
        # as it does for the whole pipeline before the source's first item.
        run_due = getattr(self._scheduler, "run_due", None)
        if run_due is not None:
            run_due()
        return chain

    def _drop_revoked(self) -> None:
        self._revocations_seen = _revocations
        for chain in list(self._chains.values()):
            if chain.partition is not None and chain.partition.revoked:
                self._drop(chain)

    def _drop(self, chain: _Chain) -> None:
        """Dispose a revoked partition's chain: nothing it holds is emitted; its items are
        let go (their source ignores acknowledgements of a revoked partition)."""
        if self._chains.get(chain.partition) is chain:
            del self._chains[chain.partition]
        chain.subscription.dispose()
        self._holds.let_go(chain.partition)
        self._complete_if_done()

    def _complete_if_done(self) -> None:
        if self._upstream_done and not self._chains and not self._stopped:
            self._stopped = True
            self._observer.on_completed()

    def _fail(self, error: Exception) -> None:
        if not self._stopped:
            self._stopped = True
            self._dispose()
            self._observer.on_error(error)

    def _dispose(self) -> None:
        self._upstream.dispose()
        chains, self._chains = list(self._chains.values()), {}
        for chain in chains:
            chain.subscription.dispose()
