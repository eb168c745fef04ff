"""``MemoryStore``: a :class:`~rxflow.state.Store` in this process's memory.

It keeps committed state for as long as the store object lives, across the flows that use
it one after another: what a test needs to stop a flow, start another with the same name,
and check what it restored; and a way to try checkpoints without a file or a server. It does
not survive the process: use :class:`~rxflow.state.SQLiteStore` for that.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from rxflow.state._store import ScopeChanges, ScopeSnapshot, Store, StoredEntry, fenced_error

__all__ = ["MemoryStore"]


class MemoryStore(Store):
    """State kept in this process only (see the module docstring).

    Example:
        >>> import anyio
        >>> from rxflow.state import MemoryStore, ScopeChanges, StoredEntry
        >>> async def main():
        ...     async with MemoryStore() as store:
        ...         puts = {"counts": {b"ann": StoredEntry(b"3")}}
        ...         await store.commit("flow", [ScopeChanges("", puts, {}, b"meta")])
        ...         snapshot = await store.load("flow", "")
        ...     return snapshot.tables["counts"][b"ann"].value, snapshot.meta
        >>> anyio.run(main)
        (b'3', b'meta')
    """

    def __init__(self) -> None:
        # (namespace, scope) → table → key → entry; and (namespace, scope) → meta.
        self._tables: dict[tuple[str, str], dict[str, dict[bytes, StoredEntry]]] = {}
        self._meta: dict[tuple[str, str], bytes] = {}
        # (namespace, scope) → its owner epoch, raised by each claim.
        self._epochs: dict[tuple[str, str], int] = {}
        self.commits = 0  # commits stored so far

    @property
    def description(self) -> str:
        return "memory"

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def claim(self, namespace: str, scope: str) -> int:
        epoch = self._epochs.get((namespace, scope), 0) + 1
        self._epochs[(namespace, scope)] = epoch
        return epoch

    async def load(self, namespace: str, scope: str) -> ScopeSnapshot:
        now = time.time()
        tables = {
            name: {
                key: entry
                for key, entry in entries.items()
                if entry.expires_at is None or entry.expires_at > now
            }
            for name, entries in self._tables.get((namespace, scope), {}).items()
        }
        return ScopeSnapshot(tables, self._meta.get((namespace, scope)))

    async def commit(
        self, namespace: str, changes: Sequence[ScopeChanges], writes: Sequence[object] = ()
    ) -> None:
        # Nothing here awaits, so each commit is applied whole: atomic, as the ABC asks, and
        # no claim comes between a scope's epoch check and its changes.
        fenced, committed = [], []
        for change in changes:
            stored = self._epochs.get((namespace, change.scope), 0)
            if change.epoch is not None and stored > change.epoch:
                fenced.append((change.scope, stored, change.epoch))
                continue
            committed.append(change.scope)
            tables = self._tables.setdefault((namespace, change.scope), {})
            for name, puts in change.puts.items():
                tables.setdefault(name, {}).update(puts)
            for name, keys in change.deletes.items():
                table = tables.get(name, {})
                for key in keys:
                    table.pop(key, None)
            self._meta[(namespace, change.scope)] = change.meta
        if committed or not fenced:
            self.commits += 1
        if fenced:
            raise fenced_error(self.description, namespace, fenced, committed)
