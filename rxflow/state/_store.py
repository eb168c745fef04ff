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
* one ``meta`` record per scope, written with every commit of that scope.
"""

from __future__ import annotations

import abc
from collections.abc import Collection, Mapping, Sequence
from types import TracebackType
from typing import Any, Protocol, Self

import attrs

__all__ = ["ScopeChanges", "ScopeSnapshot", "Store", "StoredEntry", "TransactionalSink"]


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
    * namespaces and scopes are independent: a commit or a load of one never touches another.
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
    async def load(self, namespace: str, scope: str) -> ScopeSnapshot:
        """Everything the last commit of ``scope`` left."""

    @abc.abstractmethod
    async def commit(
        self, namespace: str, changes: Sequence[ScopeChanges], writes: Sequence[object] = ()
    ) -> None:
        """Apply each scope's puts, deletes and meta, each scope atomically; and ``writes``,
        what exactly-once sinks staged for this checkpoint (only a store whose
        :meth:`can_write` accepted those sinks gets any), in the same transaction."""

    def can_write(self, sink: TransactionalSink) -> bool:
        """Whether :meth:`commit` can apply ``sink``'s staged writes in its own transaction
        (an exactly-once PostgreSQL sink into the database of a ``PostgresStore``)."""
        return False

    @property
    @abc.abstractmethod
    def description(self) -> str:
        """Where the state goes, for logs and errors, without credentials
        (``"sqlite:/var/lib/app/state.db"``, ``"redis://cache:6379/0"``)."""
