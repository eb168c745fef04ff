"""The engines that keep a flow's state durable: the :class:`Store` interface.

A checkpointed :class:`rxflow.Flow` keeps its operators' state in :class:`rxflow.StateTable`
objects in memory; each checkpoint writes what changed to a store, with the record of what
the checkpoint covers (``meta``: which source messages it acknowledges), and a flow that
starts again (or a worker that takes over a partition) loads it back. rxflow never builds
its own database: each store is an existing engine (SQLite, Redis, PostgreSQL, a Kafka
changelog topic) behind this one small interface.

What a store keeps, in its own terms:

* a *namespace*: one flow (its name);
* *scopes* inside it: ``""`` for a flow over unpartitioned sources, ``"<topic>/<index>"``
  for each partition of a partitioned one; a scope is the unit of restore and of atomicity;
* *tables* inside a scope: one per stateful operator, keys and values as ``bytes``, each
  entry with an optional expiry time;
* one ``meta`` record per scope, written with every commit of that scope;
* one *owner epoch* per scope (see :meth:`Store.claim`), which fences off a scope's former
  owner.

Fencing: the flow that takes a scope (at its start, or when a Kafka partition is assigned
to it) claims it before it loads it, and every commit of the scope carries the epoch it
claimed (:attr:`ScopeChanges.epoch`). A store refuses the changes of a scope that was
claimed again since (its stored epoch is newer), in the same atomic write as the commit,
and reports them with :class:`~rxflow.errors.ScopeFencedError`; so a worker that lost a
partition and still checkpoints it never overwrites its new owner's state. (The Kafka
changelog store, which cannot compare and set, fences at read instead: see
:class:`~rxflow.state.KafkaChangelogStore`.)
"""

from __future__ import annotations

import abc
from collections.abc import Collection, Mapping, Sequence
from types import TracebackType
from typing import Any, Protocol, Self

import attrs

from rxflow.errors import ScopeFencedError

__all__ = [
    "ScopeChanges",
    "ScopeSnapshot",
    "Store",
    "StoredEntry",
    "TransactionalSink",
    "fenced_error",
]


@attrs.frozen
class StoredEntry:
    """One table entry as a store keeps it."""

    value: bytes
    expires_at: float | None = None
    """When it expires, in seconds since the epoch (``time.time()``); ``None``: never."""


@attrs.frozen
class ScopeSnapshot:
    """A scope as its last commit left it (what :meth:`Store.load` returns)."""

    tables: Mapping[str, Mapping[bytes, StoredEntry]]
    """Table name → key → entry, without entries that had expired when loaded."""
    meta: bytes | None
    """The meta of the last commit of the scope; ``None`` if it was never committed."""


@attrs.frozen
class ScopeChanges:
    """What one checkpoint changes in one scope (see :meth:`Store.commit`)."""

    scope: str
    puts: Mapping[str, Mapping[bytes, StoredEntry]]
    """Table name → key → the entry's new value."""
    deletes: Mapping[str, Collection[bytes]]
    """Table name → keys to remove (a key absent from the store is no error)."""
    meta: bytes
    """Replaces the scope's meta."""
    epoch: int | None = None
    """The owner epoch the writer claimed the scope with (:meth:`Store.claim`): the store
    refuses these changes if the scope was claimed again since. ``None`` commits whoever
    owns the scope (tools and tests; a flow always gives its epoch)."""

    def __attrs_post_init__(self) -> None:
        # A key both put and deleted has no one meaning: stores would differ on which wins.
        for table, keys in self.deletes.items():
            put = self.puts.get(table)
            both = put.keys() & set(keys) if put else ()
            if both:
                raise ValueError(
                    f"ScopeChanges for scope {self.scope!r}: key {min(both)!r} of table "
                    f"{table!r} is both put and deleted; give each key one change (the "
                    "last one)"
                )


class TransactionalSink(Protocol):
    """A sink that writes exactly once by writing in the flow's checkpoints: what a flow
    asks of a sink whose ``transactional`` attribute is True (``postgres_sink(...,
    exactly_once=True)``). The flow hands it outputs as they come; a checkpoint takes those
    of its epoch and earlier and its store writes them in the transaction that stores the
    state and the source positions, so a row is written exactly when its inputs are
    covered."""

    transactional: bool

    def stage(self, outputs: Sequence[tuple[int, Any]]) -> None:
        """Keep ``(epoch, value)`` outputs for the checkpoint of their epoch."""
        ...

    def take(self, epoch: int) -> Any:
        """Remove and return what was staged for ``epoch`` and earlier, as the write object
        the store applies (falsy if nothing was staged)."""
        ...

    def restage(self, write: Any) -> None:
        """A commit that had taken ``write`` failed: keep it for the next checkpoint."""
        ...


class Store(abc.ABC):
    """A durable engine for a flow's state. Use it as an async context manager (the flow
    enters it when it starts); every method runs on the flow's event loop and may be
    cancelled.

    Guarantees every store gives, which the contract tests check:

    * :meth:`commit` is atomic per scope: after any crash, a scope holds all of a commit's
      changes and its meta, or none of them;
    * :meth:`load` returns what the last commit of the scope left, whichever process wrote
      it, without the entries that have expired;
    * namespaces and scopes are independent: a commit or a load of one never touches another;
    * fencing: :meth:`claim` raises a scope's owner epoch durably, and a commit of a scope
      whose :attr:`ScopeChanges.epoch` is older than the scope's stored epoch leaves the
      scope as it is and is reported with :class:`~rxflow.errors.ScopeFencedError` (a
      Kafka changelog instead leaves it out of every later load).
    """

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect (create what is missing: a file, a table, a topic)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections; safe to call after a failed :meth:`open`."""

    @abc.abstractmethod
    async def claim(self, namespace: str, scope: str) -> int:
        """Take ownership of ``scope``: raise its owner epoch, durably and atomically, and
        return the new epoch. Commits that carry an older epoch of the scope are refused
        from now on. Claim before :meth:`load`, so that what is loaded is the last state a
        former owner could store."""

    @abc.abstractmethod
    async def load(self, namespace: str, scope: str) -> ScopeSnapshot:
        """Everything the last commit of ``scope`` left."""

    @abc.abstractmethod
    async def commit(
        self, namespace: str, changes: Sequence[ScopeChanges], writes: Sequence[object] = ()
    ) -> None:
        """Apply each scope's puts, deletes and meta, each scope atomically; and ``writes``,
        what exactly-once sinks staged for this checkpoint (only a store whose
        :meth:`can_write` accepted those sinks gets any), in the same transaction.

        Raises:
            ScopeFencedError: some scopes were claimed by a newer owner than the epoch
                their changes carry; those were left as they are, the others committed
                (none, and none of ``writes``, if ``writes`` were given)."""

    def can_write(self, sink: TransactionalSink) -> bool:
        """Whether :meth:`commit` can apply ``sink``'s staged writes in its own transaction
        (an exactly-once PostgreSQL sink into the database of a ``PostgresStore``)."""
        return False

    @property
    @abc.abstractmethod
    def description(self) -> str:
        """Where the state goes, for logs and errors, without credentials
        (``"sqlite:/var/lib/app/state.db"``, ``"redis://cache:6379/0"``)."""


def fenced_error(
    store: str,
    namespace: str,
    fenced: Sequence[tuple[str, int, int]],
    committed: Sequence[str],
    writes: bool = False,
) -> ScopeFencedError:
    """The error a store raises for the scopes it refused: ``fenced`` holds ``(scope,
    stored epoch, the commit's epoch)``."""
    scope, stored, epoch = fenced[0]
    scopes = ", ".join(repr(scope) for scope, _, _ in fenced)
    if writes:
        outcome = "nothing of the commit was written, nor any exactly-once row"
    else:
        outcome = f"those scopes were left as their new owner keeps them ({len(committed)} "
        outcome += "other scopes were committed)"
    return ScopeFencedError(
        f"{store}: flow {namespace!r} lost scope(s) {scopes} to a newer owner (scope "
        f"{scope!r} was claimed with epoch {stored}, this commit carries epoch {epoch}); "
        f"{outcome}. The state is the new owner's now: stop writing it (a worker that lost "
        "a partition lets it go; two runs of one flow must not share its name)",
        fenced=[scope for scope, _, _ in fenced],
        committed=committed,
    )
