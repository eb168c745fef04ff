"""The Kafka changelog's record format and naming: where a scope's records go
(:func:`changelog_of`), how a commit becomes records (:func:`commit_records`), and how a
scope is rebuilt from them (:class:`Replay`), with what makes a commit atomic and what
fences off a former owner's late commits."""

from __future__ import annotations

import hashlib
import math
import re
import struct
from collections.abc import Sequence
from typing import Final

from rxflow.state._store import ScopeChanges, ScopeSnapshot, StoredEntry

__all__ = [
    "CLAIM_HEADER",
    "ENTRY_HEADER",
    "EPOCH_HEADER",
    "MARKER_HEADER",
    "MAX_TOPIC_LENGTH",
    "SNAPSHOT_HEADER",
    "Replay",
    "changelog_of",
    "claim_header",
    "commit_records",
    "epoch_header",
    "topic_name",
]

ENTRY_HEADER: Final = "rxflow-entry"
"""An entry record's header: its commit's id (8 bytes) and its place in the commit (u32)."""
MARKER_HEADER: Final = "rxflow-commit"
"""A commit marker's header: the commit's id, its number of entries (u32), the namespace
(u16 length, UTF-8) and the scope (the rest, UTF-8)."""
CLAIM_HEADER: Final = "rxflow-claim"
"""A claim record's header: the namespace (u16 length, UTF-8) and the scope (the rest).
The claim's epoch is the record's offset in its partition."""
EPOCH_HEADER: Final = "rxflow-epoch"
"""A commit marker's second header, when its writer claimed the scope: that claim's epoch
(signed 64-bit, big-endian). Markers without it (older ones, or written without a claim)
are never fenced."""
SNAPSHOT_HEADER: Final = "rxflow-snapshot"
"""A commit marker's flag header (empty value) when the commit is a snapshot: its entries
are every live entry of the scope, and a load replaces the scope's state with them."""
LEGAL_TOPIC: Final = re.compile(r"[^a-zA-Z0-9._-]")
MAX_TOPIC_LENGTH: Final = 249

_EXPIRY = struct.Struct(">d")
_NEVER: Final = _EXPIRY.pack(math.nan)


def topic_name(*parts: str) -> str:
    """A legal Kafka topic name made of ``parts`` joined by ``-``: characters Kafka refuses
    become ``_``, and a name over 249 characters keeps its start and a hash of the whole.
    Two namespaces may come out the same (``"a b"``, ``"a_b"``): records name their
    namespace, so they share the topic and stay apart."""
    joined = "-".join(parts)
    name = LEGAL_TOPIC.sub("_", joined)
    if len(name) > MAX_TOPIC_LENGTH:
        digest = hashlib.sha256(joined.encode()).hexdigest()[:16]
        name = f"{name[: MAX_TOPIC_LENGTH - 17]}-{digest}"
    return name


def changelog_of(
    namespace: str, scope: str, topic: str | None = None
) -> tuple[str, str | None, int]:
    """Where a scope's changelog is: ``(changelog topic, source topic or None, index)``;
    the scope's records go to partition ``index`` of the changelog topic (modulo its
    number of partitions).

    * ``"<topic>/<index>"`` (a partition of a Kafka source topic): partition ``<index>``
      of ``"<namespace>-<topic>-changelog"``, one changelog topic per source topic, with
      as many partitions as the source topic, so that a worker that takes over source
      partition 3 reads changelog partition 3 and nothing else;
    * ``""`` (an unpartitioned flow), and any other scope: partition 0 of
      ``"<namespace>-changelog"``;
    * with ``topic`` given, every scope goes to that one topic (by the same index).

    Example:
        >>> changelog_of("totals", "orders/3")
        ('totals-orders-changelog', 'orders', 3)
        >>> changelog_of("clicks per user", "")
        ('clicks_per_user-changelog', None, 0)
        >>> changelog_of("totals", "orders/3", topic="state")
        ('state', 'orders', 3)
    """
    source, slash, index = scope.rpartition("/")
    if slash and source and index.isdigit():
        return topic or topic_name(namespace, source, "changelog"), source, int(index)
    return topic or topic_name(namespace, "changelog"), None, 0


# -- records ----------------------------------------------------------------------------


def entry_key(table: str, key: bytes) -> bytes:
    if not isinstance(key, bytes):
        raise TypeError(
            f"KafkaChangelogStore.commit: a key of table {table!r} must be bytes, got "
            f"{type(key).__name__} {key!r:.60}; nothing of the scope's changes was written"
        )
    name = table.encode()
    return len(name).to_bytes(2, "big") + name + key


def entry_value(table: str, key: bytes, entry: StoredEntry) -> bytes:
    value = entry.value
    if not isinstance(value, bytes):  # would be concatenated wrongly, or not at all
        raise TypeError(
            f"KafkaChangelogStore.commit: the value of key {key!r:.60} of table {table!r} "
            f"must be bytes, got {type(value).__name__}; nothing of the scope's changes "
            "was written"
        )
    expires = _NEVER if entry.expires_at is None else _EXPIRY.pack(entry.expires_at)
    return expires + value


def _scope_bytes(namespace: str, scope: str) -> bytes:
    name = namespace.encode()
    return len(name).to_bytes(2, "big") + name + scope.encode()


def _scope_of(data: bytes) -> tuple[str, str]:
    length = int.from_bytes(data[:2], "big")
    return data[2 : 2 + length].decode(), data[2 + length :].decode()


def marker_header(commit_id: bytes, count: int, namespace: str, scope: str) -> bytes:
    return commit_id + count.to_bytes(4, "big") + _scope_bytes(namespace, scope)


def claim_header(namespace: str, scope: str) -> bytes:
    """The header of a claim record of ``scope`` (:data:`CLAIM_HEADER`)."""
    return _scope_bytes(namespace, scope)


def epoch_header(epoch: int) -> bytes:
    """The value of a commit marker's :data:`EPOCH_HEADER`."""
    return epoch.to_bytes(8, "big", signed=True)


def commit_records(
    commit_id: bytes, namespace: str, changes: ScopeChanges
) -> tuple[list[tuple[bytes, bytes | None, bytes]], tuple[bytes, bytes]]:
    """A scope's commit as records: ``(key, value or None for a tombstone, entry header)``
    for each delete then each put, and the marker's ``(value, header)``."""
    entries: list[tuple[bytes, bytes | None, bytes]] = []
    for table, keys in changes.deletes.items():
        for key in keys:
            entries.append(
                (entry_key(table, key), None, commit_id + len(entries).to_bytes(4, "big"))
            )
    for table, puts in changes.puts.items():
        for key, entry in puts.items():
            header = commit_id + len(entries).to_bytes(4, "big")
            entries.append((entry_key(table, key), entry_value(table, key, entry), header))
    if not isinstance(changes.meta, bytes):
        raise TypeError(
            f"KafkaChangelogStore.commit: the meta of scope {changes.scope!r} must be bytes, "
            f"got {type(changes.meta).__name__}; nothing of the scope's changes was written"
        )
    marker = marker_header(commit_id, len(entries), namespace, changes.scope)
    return entries, (changes.meta, marker)


class Replay:
    """A scope rebuilt from its changelog partition, record by record (:meth:`add`), in the
    partition's order.

    A commit's entries are held by commit id until its marker comes; the marker applies
    them if it belongs to this namespace and scope and every entry of the commit (by its
    place in it) was seen. So a commit whose marker never came (a crash while producing,
    a cancelled commit, a refused record) is left out whether later commits follow it or
    not, and a record the producer sent twice (a retry) counts once.

    Fencing: a claim record of the scope sets the fence to its offset (the claim's epoch);
    a marker whose epoch is below the fence is a former owner's commit produced after the
    new owner claimed the scope, and is left out with its entries (counted in
    :attr:`fenced`). A marker before the claim is applied: the new owner loaded it.

    Snapshots: a complete snapshot (a marker flagged :data:`SNAPSHOT_HEADER`, not fenced)
    replaces the scope's tables with its entries, and its epoch fences later commits as a
    claim would; :attr:`snapshot_at` is where it starts, so a load may start there.
    """

    __slots__ = (
        "_entries",
        "_fence",
        "_id",
        "_names",
        "_pending",
        "_scope",
        "_starts",
        "_tables",
        "alone",
        "fenced",
        "meta",
        "records",
        "snapshot_at",
    )

    def __init__(self, namespace: str, scope: str) -> None:
        self._scope = (namespace, scope)
        # Commit id -> place in the commit (4 bytes, big-endian) -> (key, value).
        self._pending: dict[bytes, dict[bytes, tuple[bytes, bytes | None]]] = {}
        self._id = b""  # the commit the last entry was of
        self._entries: dict[bytes, tuple[bytes, bytes | None]] = {}  # and its entries
        self._tables: dict[str, dict[bytes, tuple[bytes, float | None]]] = {}
        self._names: dict[bytes, str] = {}  # a table's name as records spell it
        self.meta: bytes | None = None
        self._fence = -1  # the offset of the scope's newest claim record so far
        self.fenced = 0  # commits left out because a newer claim came before their marker
        self._starts: dict[bytes, int] = {}  # commit id -> the offset of its first record
        self.records = 0  # records added
        self.alone = True  # no record added was of another scope, or of another writer
        self.snapshot_at = -1  # where the last snapshot applied starts (its first record)

    def add(
        self,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes]],
        offset: int = -1,
    ) -> None:
        self.records += 1
        if not headers:
            self.alone = False  # not a record of this store
            return
        kind, data = headers[0]
        if kind == ENTRY_HEADER:
            commit_id = data[:8]
            if commit_id != self._id:  # (a commit's records come one after the other)
                entries = self._pending.get(commit_id)
                if entries is None:
                    entries = self._pending[commit_id] = {}
                    self._starts[commit_id] = offset
                self._id, self._entries = commit_id, entries
            self._entries[data[8:12]] = (key or b"", value)
        elif kind == MARKER_HEADER:
            epoch, snapshot = None, False
            for name, raw in headers[1:]:
                if name == EPOCH_HEADER:
                    epoch = int.from_bytes(raw, "big", signed=True)
                elif name == SNAPSHOT_HEADER:
                    snapshot = True
            self._marker(data, value, epoch, snapshot, offset)
        elif kind == CLAIM_HEADER and _scope_of(data) == self._scope:
            self._fence = offset
        else:
            self.alone = False  # another scope's claim, or not a record of this store

    def _marker(
        self, data: bytes, meta: bytes | None, epoch: int | None, snapshot: bool, offset: int
    ) -> None:
        commit_id, count = data[:8], int.from_bytes(data[8:12], "big")
        entries = self._pending.pop(commit_id, {})
        start = self._starts.pop(commit_id, offset)
        self._id, self._entries = b"", {}
        if _scope_of(data[12:]) != self._scope:
            self.alone = False
            return  # another scope's commit, in a partition they share
        if epoch is not None and epoch < self._fence:
            self.fenced += 1
            return  # a former owner's, produced after the scope was claimed again
        # Places are 4 bytes big-endian: count of them, all below count, is every one.
        if len(entries) != count or (count and max(entries) >= count.to_bytes(4, "big")):
            return  # some entry of it was never stored: not committed
        if snapshot:
            # The scope's whole state: what came before it no longer counts. Its epoch
            # was the newest claim when it was written (else it would be fenced above),
            # so it fences commits after it as those claims did, for a load that
            # starts at it and never sees them.
            self._tables = {}
            self.snapshot_at = start
            if epoch is not None:
                self._fence = max(self._fence, epoch)
        puts = []
        for key, value in entries.values():  # deletes first: a put of the commit wins
            if value is None:
                name, rest = self._split(key)
                self._tables.get(name, {}).pop(rest, None)
            else:
                puts.append((key, value))
        unpack, tables = _EXPIRY.unpack_from, self._tables
        raw, table = b"", {}  # the table of the last put (a commit's puts come by table)
        for key, value in puts:
            length = int.from_bytes(key[:2], "big")
            if key[2 : 2 + length] != raw:
                name, _ = self._split(key)
                raw, table = key[2 : 2 + length], tables.setdefault(name, {})
            (expires,) = unpack(value)
            table[key[2 + length :]] = (value[8:], None if expires != expires else expires)
        self.meta = meta or b""

    @property
    def fence(self) -> int:
        """The newest epoch that fences the scope's commits so far (-1: none)."""
        return self._fence

    def live(self, now: float) -> int:
        """How many entries have not expired at ``now``."""
        return sum(
            1
            for entries in self._tables.values()
            for _, expires in entries.values()
            if expires is None or expires > now
        )

    def _split(self, key: bytes) -> tuple[str, bytes]:
        """A record key's table name and the entry's key."""
        length = int.from_bytes(key[:2], "big")
        raw = key[2 : 2 + length]
        name = self._names.get(raw)
        if name is None:
            name = self._names[raw] = raw.decode()
        return name, key[2 + length :]

    def snapshot(self, now: float) -> ScopeSnapshot:
        """What the last complete commit left, without the entries expired at ``now``."""
        tables = {
            name: {
                key: StoredEntry(value, expires)
                for key, (value, expires) in entries.items()
                if expires is None or expires > now
            }
            for name, entries in self._tables.items()
        }
        return ScopeSnapshot(tables={n: t for n, t in tables.items() if t}, meta=self.meta)
