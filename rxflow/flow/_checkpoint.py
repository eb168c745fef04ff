"""Checkpoints: a flow's keyed state and the source messages it covers, stored together;
acknowledgements follow the checkpoints.

With ``Flow.checkpoint(store)``, every stateful operator keeps its state in durable
:class:`~rxflow.StateTable` objects (:mod:`rxflow._state`), and a flow acknowledges a
source message only once a stored checkpoint covers it, as Flink does. A checkpoint:

1. takes a *barrier* between two pushes: it admits nothing more until the operators that
   are not checkpointed and hold messages (``map_async``'s calls in flight) have emitted
   what they hold, so that every message admitted so far has reached the stateful
   operators; then it serializes the tables' changes, and every message admitted before
   the barrier is covered by this checkpoint (the operators go on working, and messages
   are admitted again, while the checkpoint is stored);
2. waits until every message admitted before the barrier is settled: its outputs have been
   confirmed by the sinks, so the stored state never says "emitted" about an output that a
   crash could still lose;
3. commits, per scope (the flow, or one partition of a partitioned source), the changes and
   the identities of the messages covered (:class:`~rxflow.flow._covered.Covered`), in one
   atomic write of the store;
4. acknowledges those messages.

Fencing: a flow claims each scope before it loads it (:meth:`Store.claim`: the scope's owner
epoch, raised) and every commit carries that epoch, so a store refuses the commit of a flow
that lost the scope to a newer owner (a worker that lost a Kafka partition without noticing,
and still checkpoints it). The flow then lets the partition go as a revocation does: its
operators are dropped without emitting, its state and its messages are let go (the source
commits no offset of a revoked partition), and the new owner's state stays as it stored it.
A fenced scope that is no partition (two runs of one flow name share its state) and a
checkpoint that carried exactly-once rows (they mix every scope's outputs, so the store
wrote none) fail the flow with :class:`~rxflow.errors.ScopeFencedError` instead: nothing of
that checkpoint was acknowledged, and whoever owns the scopes now redoes it.

After a crash, the flow loads each scope's tables before it pushes a message of that scope,
and a message that the last checkpoint covered but whose ack did not reach its system
(a crash between 3 and 4) is acknowledged again without being pushed: the stored state holds
it already. So what a flow redoes after SIGKILL is exactly what came after its last
checkpoint, and the state an operator sees is the state of an uninterrupted run.

Because operators' state is stored, windows need not hold their messages unacknowledged
until they close: a broker's in-flight limit bounds only what is not yet checkpointed, and a
checkpoint is taken early when any source has half its limit unacknowledged.
"""

from __future__ import annotations

import logging
import pickle
import time
from collections.abc import AsyncIterable, AsyncIterator, Hashable, Mapping, Sequence
from typing import Any

import anyio

from rxflow._state import DELETED, StateScope, StateTable
from rxflow.errors import ScopeFencedError, StateNameError
from rxflow.flow._accounts import SourceAccount
from rxflow.flow._acker import Acker
from rxflow.flow._covered import Covered
from rxflow.flow._delivery import Delivery
from rxflow.flow._fencing import fencing_failure
from rxflow.partitions import partition_of
from rxflow.state._store import (
    ScopeChanges,
    ScopeSnapshot,
    Store,
    StoredEntry,
    TransactionalSink,
)

__all__ = ["Checkpointer", "scope_of"]

logger = logging.getLogger("rxflow")

# How long identities of messages whose acknowledgement may not have reached their system
# (covered by the checkpoint a crashed run stored last, or whose ack failed) are still
# recognised. A system delivers such a message again soon after a restart, or after its own
# ack timeout (JetStream's ack_wait, Redis's claim idle time); ten minutes is well past both
# defaults, and keeps every checkpoint's record of them bounded.
REDELIVERY_HORIZON = 600.0

_META_VERSION = 1


def scope_of(partition: object) -> str:
    """The store's scope for a partition (``"orders/3"``), or ``""`` for no partition."""
    if partition is None:
        return ""
    return f"{getattr(partition, 'topic', '')}/{getattr(partition, 'index', '')}"


class _Assignment:
    """One scope's state as this worker holds it, from its restore until it is revoked."""

    __slots__ = (
        "carried",
        "carried_until",
        "epoch",
        "partition",
        "restored",
        "scope",
        "tables",
        "unstored",
    )

    def __init__(self, partition: object, snapshot: ScopeSnapshot, epoch: int) -> None:
        self.partition = partition
        self.scope = scope_of(partition)
        self.epoch = epoch  # the owner epoch this worker claimed the scope with
        # Operators' tables by name, with the operator object that owns each name.
        self.tables: dict[str, tuple[object, StateTable[Any, Any]]] = {}
        # Stored tables not asked for yet (an operator asks when it is subscribed).
        self.restored: dict[str, Mapping[bytes, StoredEntry]] = dict(snapshot.tables)
        # Changes taken from the tables that no commit stored yet, per table and key (None:
        # deleted). Invariant: emptied only by a successful commit, so a checkpoint that
        # failed or was cancelled loses nothing; the next one stores it.
        self.unstored: dict[str, dict[bytes, StoredEntry | None]] = {}
        # Messages that may be delivered again although the stored state holds them: those
        # the last stored checkpoint covered (restored) and those whose ack failed. Kept,
        # and stored with every checkpoint, until `carried_until`.
        self.carried = _read_meta(snapshot.meta)
        self.carried_until = time.monotonic() + REDELIVERY_HORIZON

    @property
    def revoked(self) -> bool:
        return bool(getattr(self.partition, "revoked", False))


class _View:
    """The durable state scope that operators of one assignment see."""

    __slots__ = ("_assignment", "_checkpointer")

    def __init__(self, checkpointer: Checkpointer, assignment: _Assignment) -> None:
        self._checkpointer = checkpointer
        self._assignment = assignment

    @property
    def durable(self) -> bool:
        return True

    def table(self, name: str, owner: object) -> StateTable[Any, Any]:
        return self._checkpointer.table(self._assignment, name, owner)

    def for_partition(self, partition: object) -> StateScope:
        return self._checkpointer.view(partition)


class Checkpointer:
    """A flow's checkpoints (see the module docstring): its durable state scopes, the
    periodic checkpoint, and the recognition of messages a stored checkpoint covers."""

    def __init__(
        self,
        store: Store,
        namespace: str,
        every: float,
        delivery: Delivery,
        acker: Acker,
        sinks: Sequence[TransactionalSink] = (),
    ) -> None:
        self._store = store
        self._sinks = sinks  # exactly-once sinks: their staged outputs go into the commit
        self._namespace = namespace
        self._every = every
        self._delivery = delivery
        self._acker = acker
        # Assignments by partition object (None: the scope of unpartitioned sources).
        self._assignments: dict[object, _Assignment] = {}
        self._lock = anyio.Lock()  # one checkpoint at a time
        # While a checkpoint aligns (waits for operators that hold messages and are not
        # checkpointed, such as map_async, to emit), no message is admitted; _aligned is
        # set when it is done.
        self._aligning = False
        self._aligned = anyio.Event()
        self._wake = anyio.Event()
        self._closing = False
        # Messages a stored checkpoint covered whose acks are not done yet (handed to the
        # acker, or sent and not yet durable in their system), by id: they may be delivered
        # again, so every checkpoint's record keeps them covered until their acks are done.
        self._unconfirmed: dict[int, tuple[_Assignment, Hashable]] = {}
        self.stored = 0  # checkpoints stored
        self.last_duration = 0.0  # seconds the last stored checkpoint took, barrier to ack
        delivery.on_pressure = self._soon
        acker.on_failed = self._ack_failed
        acker.durable_acks = True
        forget = acker.on_done

        def acks_done(messages: list[Any]) -> None:
            forget(messages)
            for message in messages:
                self._unconfirmed.pop(id(message), None)

        acker.on_done = acks_done

    def add_sinks(self, sinks: Sequence[TransactionalSink]) -> None:
        """Exactly-once sinks whose staged outputs each checkpoint writes."""
        self._sinks = [*self._sinks, *sinks]

    # -- restoring -----------------------------------------------------------------------

    async def prepare(self, partition: object = None) -> None:
        """Claim and load the scope of ``partition`` (None: the unpartitioned scope) unless
        it is loaded; its operators find their tables restored when they are subscribed.
        The claim comes first: a former owner can store nothing after it, so what is loaded
        is the scope's last state."""
        if partition in self._assignments:
            return
        scope = scope_of(partition)
        epoch = await self._store.claim(self._namespace, scope)
        snapshot = await self._store.load(self._namespace, scope)
        if partition not in self._assignments:
            self._assignments[partition] = _Assignment(partition, snapshot, epoch)
            logger.debug(
                "flow %s: restored state scope %r (%d tables)",
                self._namespace,
                scope_of(partition),
                len(snapshot.tables),
            )

    def view(self, partition: object = None) -> StateScope:
        """The durable scope for the operators of ``partition``'s chain."""
        assignment = self._assignments.get(partition)
        if assignment is None:
            raise RuntimeError(
                f"rxflow: the state of {scope_of(partition)!r} was not restored before its "
                "operators were subscribed (Checkpointer.prepare); please report this"
            )
        return _View(self, assignment)

    def table(self, assignment: _Assignment, name: str, owner: object) -> StateTable[Any, Any]:
        held = assignment.tables.get(name)
        if held is not None:
            if held[0] is not owner:
                raise StateNameError(
                    f"flow {self._namespace!r}: two stateful operators keep state under the "
                    f"name {name!r}; give each its own name= (state is stored by name, so a "
                    "name must stay the same across restarts)"
                )
            return held[1]
        table: StateTable[Any, Any] = StateTable(name, assignment.scope, durable=True)
        stored = assignment.restored.pop(name, None)
        if stored:
            now = time.time()
            table.restore(
                (
                    pickle.loads(key),  # the flow's own stored state
                    pickle.loads(entry.value),
                    None if entry.expires_at is None else entry.expires_at - now,
                )
                for key, entry in stored.items()
            )
        assignment.tables[name] = (owner, table)
        return table

    async def restoring(
        self, items: AsyncIterable[tuple[SourceAccount, Any]]
    ) -> AsyncIterator[tuple[SourceAccount, Any]]:
        """The flow's merged source, with each partition's state loaded before its first
        message goes on, and messages that a stored checkpoint covers acknowledged instead
        of pushed again."""
        assignments = self._assignments
        async for account, item in items:
            partition = partition_of(item)
            assignment = assignments.get(partition)
            if assignment is None:
                if partition is not None and partition.revoked:
                    # Not claimed: the scope is its new owner's (a claim would fence it). The
                    # operators drop the record, as any of a revoked partition.
                    yield account, item
                    continue
                await self.prepare(partition)
                assignment = assignments[partition]
            if assignment.carried and _recorded_as(item) in assignment.carried:
                account.redelivered += 1
                self._acker.put(item)  # the stored state holds it already
                continue
            while self._aligning:  # a checkpoint admits nothing until its barrier is taken
                await self._aligned.wait()
            yield account, item

    # -- checkpointing -------------------------------------------------------------------

    async def run(self) -> None:
        """Checkpoint every ``every`` seconds, or sooner under in-flight pressure, until
        :meth:`close`."""
        while not self._closing:
            with anyio.move_on_after(self._every):
                await self._wake.wait()
            self._wake = anyio.Event()
            if not self._closing:
                await self.checkpoint()

    def close(self) -> None:
        """Stop :meth:`run` after the checkpoint in progress, if any."""
        self._closing = True
        self._wake.set()

    async def checkpoint(self) -> None:
        """Take one checkpoint (see the module docstring); nothing if nothing happened."""
        async with self._lock:
            started = anyio.current_time()
            delivery = self._delivery
            barrier, epoch = await self._align()
            assignments = list(self._assignments.values())
            await delivery.settled_before(barrier, epoch)
            entries = delivery.covered_by(barrier)
            writes = [(sink, sink.take(epoch)) for sink in self._sinks]
            try:
                changes = self._changes(assignments, entries)
                staged = [write for _, write in writes if write]
                if changes or staged:
                    try:
                        await self._store.commit(self._namespace, changes, staged)
                    except ScopeFencedError as error:
                        self._let_go_fenced(error, assignments, changes, bool(staged))
            except BaseException:
                delivery.uncover(entries)  # the next checkpoint covers them
                for sink, write in writes:
                    sink.restage(write)
                raise
            for assignment in assignments:
                assignment.unstored = {}
            self._track_acks(entries)
            delivery.acknowledge(entries)
            if changes or staged:
                self.stored += 1
                self.last_duration = anyio.current_time() - started

    async def _align(self) -> tuple[int, int]:
        """Take the barrier: admit nothing more, wait until no operator that is not
        checkpointed holds a message (so every message admitted so far has reached the
        stateful operators: a map_async call's result emitted after the barrier would
        otherwise be in no checkpoint, although its message is covered), then serialize
        the tables' changes and end the output epoch. Returns (barrier, epoch)."""
        self._aligning = True
        try:
            await self._delivery.unheld()
            for partition, assignment in list(self._assignments.items()):
                if assignment.revoked:  # its state is the partition's next owner's now
                    del self._assignments[partition]
            for assignment in self._assignments.values():
                _take_changes(assignment)
            return self._delivery.barrier, self._delivery.end_epoch()
        finally:
            self._aligning = False
            self._aligned.set()
            self._aligned = anyio.Event()

    def _changes(self, assignments: list[_Assignment], entries: list[Any]) -> list[ScopeChanges]:
        by_partition = {id(a.partition): a for a in assignments}
        cuts: dict[int, Covered] = {}
        for entry in entries:
            message = Delivery.message_of(entry)
            identity = _recorded_as(message)
            assignment = by_partition.get(id(partition_of(message)))
            if identity is not None and assignment is not None:
                cut = cuts.get(id(assignment))
                if cut is None:
                    cut = cuts[id(assignment)] = Covered()
                cut.add(identity)
        for assignment, identity in self._unconfirmed.values():
            cut = cuts.get(id(assignment))
            if cut is None:
                cut = cuts[id(assignment)] = Covered()
            cut.add(identity)
        now = time.monotonic()
        changes = []
        for assignment in assignments:
            if assignment.revoked:
                continue
            if assignment.carried and now > assignment.carried_until:
                assignment.carried = Covered()
            cut = cuts.get(id(assignment))
            if cut is None and not assignment.unstored:
                continue  # nothing of this scope changed
            covered = cut if cut is not None else Covered()
            covered.update_from(assignment.carried)
            puts: dict[str, dict[bytes, StoredEntry]] = {}
            deletes: dict[str, list[bytes]] = {}
            for name, keys in assignment.unstored.items():
                for key, entry in keys.items():
                    if entry is None:
                        deletes.setdefault(name, []).append(key)
                    else:
                        puts.setdefault(name, {})[key] = entry
            changes.append(
                ScopeChanges(assignment.scope, puts, deletes, _meta(covered), assignment.epoch)
            )
        return changes

    def _let_go_fenced(
        self,
        error: ScopeFencedError,
        assignments: list[_Assignment],
        changes: list[ScopeChanges],
        staged: bool,
    ) -> None:
        """The store refused the scopes in ``error.fenced``: a newer owner claimed them.
        Let each go as a revocation does (see the module docstring); raise when that is not
        enough (the scope is no partition, exactly-once rows were in the commit, or some
        other scope was not committed either)."""
        fenced = set(error.fenced)
        lost = [a for a in assignments if a.scope in fenced]
        failure = fencing_failure(
            self._namespace,
            error,
            [a.partition for a in lost],
            [change.scope for change in changes],
            staged,
        )
        if failure is not None:
            raise failure from error
        for assignment in lost:
            logger.warning(
                "flow %s: state scope %r was claimed by a newer owner (this worker lost the "
                "partition without being told); letting it go as a revoked partition",
                self._namespace,
                assignment.scope,
            )
            assignment.partition.revoke()  # type: ignore[attr-defined]  # revocable, above
            if self._assignments.get(assignment.partition) is assignment:
                del self._assignments[assignment.partition]
        gone = {id(assignment) for assignment in lost}
        self._unconfirmed = {
            key: held for key, held in self._unconfirmed.items() if id(held[0]) not in gone
        }

    def _track_acks(self, entries: list[Any]) -> None:
        assignments = self._assignments
        for entry in entries:
            message = Delivery.message_of(entry)
            identity = _recorded_as(message)
            assignment = assignments.get(partition_of(message))
            if identity is not None and assignment is not None:
                self._unconfirmed[id(message)] = (assignment, identity)

    def _soon(self) -> None:
        self._wake.set()

    def _ack_failed(self, messages: list[Any]) -> None:
        """Messages a stored checkpoint covers whose ack failed will come again: recognise
        them then, and keep them in the next checkpoints' records for the horizon."""
        until = time.monotonic() + REDELIVERY_HORIZON
        for message in messages:
            assignment = self._assignments.get(partition_of(message))
            identity = _recorded_as(message)
            if assignment is not None and identity is not None:
                assignment.carried.add(identity)
                assignment.carried_until = until


def _recorded_as(message: Any) -> Hashable | None:
    """How a checkpoint records a message: its identity within its source (the message's
    ``source``, its connector's name), since two sources' identities may coincide (two
    JetStream streams both count from 1, two queues' publishers may number alike). A
    tuple identity is spread into the record, so that runs of Kafka offsets stay ranges."""
    identity = getattr(message, "identity", None)
    if identity is None:
        return None
    source = getattr(message, "source", "")
    if type(identity) is tuple:
        return (source, *identity)
    return (source, identity)


def _take_changes(assignment: _Assignment) -> None:
    """Serialize the tables' changes now, at the barrier, into ``unstored``."""
    now = time.time()
    for name, (_, table) in assignment.tables.items():
        changes = table.take_changes()
        if not changes:
            continue
        unstored = assignment.unstored.setdefault(name, {})
        for key, value, expires_in in changes:
            encoded = pickle.dumps(key, protocol=pickle.HIGHEST_PROTOCOL)
            if value is DELETED:
                unstored[encoded] = None
            else:
                unstored[encoded] = StoredEntry(
                    pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL),
                    None if expires_in is None else now + expires_in,
                )


def _meta(covered: Covered) -> bytes:
    return pickle.dumps({"version": _META_VERSION, "covered": covered.to_bytes()})


def _read_meta(meta: bytes | None) -> Covered:
    if meta is None:
        return Covered()
    record = pickle.loads(meta)  # the flow's own record
    return Covered.from_bytes(record["covered"])
