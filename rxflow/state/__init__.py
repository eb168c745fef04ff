"""Durable keyed state: stores, keyed stateful operators, joins.

Stateful operators keep what they must remember in :class:`StateTable` objects. Outside a
checkpointed :class:`rxflow.Flow` a table is a plain dict in memory; inside one, the flow's
checkpoints write every table's changes to a :class:`Store` together with the source
positions they cover, and a flow that starts again loads them back.
"""

from rxflow._state import StateTable
from rxflow.state._memory import MemoryStore
from rxflow.state._store import ScopeChanges, ScopeSnapshot, Store, StoredEntry

__all__ = ["MemoryStore", "ScopeChanges", "ScopeSnapshot", "StateTable", "Store", "StoredEntry"]
