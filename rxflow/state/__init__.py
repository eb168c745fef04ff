"""Durable keyed state: stores, keyed stateful operators, joins.

Stateful operators keep what they must remember in :class:`StateTable` objects. Outside a
checkpointed :class:`rxflow.Flow` a table is a plain dict in memory; inside one
(``Flow.checkpoint(store)``), the flow's checkpoints write every table's changes to a
:class:`Store` together with the source messages they cover, and a flow that starts again
loads them back. See the guide "State and recovery".

Operators: :func:`aggregate`, :func:`stateful_map`, :func:`deduplicate`,
:func:`interval_join`, :func:`lookup_join` (rxflow's windows keep their state the same way).

Stores: :class:`SQLiteStore` (a local file, no server: the default choice),
:class:`RedisStore`, :class:`PostgresStore`, :class:`KafkaChangelogStore`, and
:class:`MemoryStore` (this process only, for tests). Each server's store needs its
connector's extra (``rxflow[redis]``, ``rxflow[postgres]``, ``rxflow[kafka]``); it is
imported on first use, so a missing extra fails only there, naming what to install.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from rxflow._state import StateTable
from rxflow.state._joins import (
    Enriched,
    IntervalJoin,
    Joined,
    LookupJoin,
    MissingPolicy,
    Tombstone,
    interval_join,
    lookup_join,
)
from rxflow.state._memory import MemoryStore
from rxflow.state._operators import (
    Aggregate,
    Deduplicate,
    Keyed,
    StatefulMap,
    aggregate,
    deduplicate,
    stateful_map,
)
from rxflow.state._sqlite import SQLiteStore
from rxflow.state._store import ScopeChanges, ScopeSnapshot, Store, StoredEntry, TransactionalSink

_LAZY = {
    "RedisStore": "_redis",
    "PostgresStore": "_postgres",
    "KafkaChangelogStore": "_kafka",
}

if TYPE_CHECKING:
    from rxflow.state._kafka import KafkaChangelogStore
    from rxflow.state._postgres import PostgresStore
    from rxflow.state._redis import RedisStore

__all__ = [
    "Aggregate",
    "Deduplicate",
    "Enriched",
    "IntervalJoin",
    "Joined",
    "KafkaChangelogStore",
    "Keyed",
    "LookupJoin",
    "MemoryStore",
    "MissingPolicy",
    "PostgresStore",
    "RedisStore",
    "SQLiteStore",
    "ScopeChanges",
    "ScopeSnapshot",
    "StateTable",
    "StatefulMap",
    "Store",
    "StoredEntry",
    "Tombstone",
    "TransactionalSink",
    "aggregate",
    "deduplicate",
    "interval_join",
    "lookup_join",
    "stateful_map",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'rxflow.state' has no attribute {name!r}")
    return getattr(importlib.import_module(f"rxflow.state.{module}"), name)
