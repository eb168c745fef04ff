"""KafkaChangelogStore's snapshots against the tests' Kafka broker (tansu, or
``RXFLOW_KAFKA_BOOTSTRAP``), on asyncio and trio: a scope committed many times (keys
overwritten, deleted, expiring) loads as a store that never snapshotted would, and as
MemoryStore does; a load after a snapshot reads only the records since it; a snapshot cut
short leaves the previous state; a former owner's commit after the new owner's snapshot is
never restored; a partition that two scopes share is never read from past the other's
records.
"""

from __future__ import annotations

import os
import random
import time
from typing import Any

import attrs
import pytest

from rxflow.state import MemoryStore, ScopeChanges, ScopeSnapshot, StoredEntry
from rxflow.state._kafka_index import index_group
from rxflow.state._kafka_records import (
    ENTRY_HEADER,
    EPOCH_HEADER,
    MARKER_HEADER,
    SNAPSHOT_HEADER,
    commit_records,
    epoch_header,
)
from tests.state.test_kafka_changelog import (
    bootstrap,
    change,
    on_own_loop,
    partition_counts,
    store,
    unique,
    values,
)

pytestmark = pytest.mark.anyio

NOW = time.time()


def workload(seed: int, commits: int) -> list[ScopeChanges]:
    """Commits of scope ``""`` over a few keys of two tables: overwrites, deletes, entries
    that expired long ago and entries that expire in an hour. (No commit puts and deletes
    one key: ScopeChanges refuses that.)"""
    rng = random.Random(seed)
    out = []
    for n in range(commits):
        puts: dict[str, dict[bytes, StoredEntry]] = {}
        for _ in range(rng.randint(1, 6)):
            table = rng.choice(("totals", "seen"))
            key = b"k%d" % rng.randrange(25)
            expires = rng.choice((None, None, None, NOW - 60, NOW + 3600))
            puts.setdefault(table, {})[key] = StoredEntry(
                b"v%d-%d" % (n, rng.random() * 9), expires
            )
        deleted = {b"k%d" % rng.randrange(25) for _ in range(rng.randint(0, 2))}
        deletes = {"totals": [key for key in deleted if key not in puts.get("totals", {})]}
        out.append(ScopeChanges("", puts=puts, deletes=deletes, meta=b"m%d" % n))
    return out


def whole(snapshot: ScopeSnapshot) -> tuple[Any, bytes | None]:
    """Everything a load returned, expiry times too."""
    return (
        {
            table: {key: (e.value, e.expires_at) for key, e in entries.items()}
            for table, entries in snapshot.tables.items()
        },
        snapshot.meta,
    )


async def memory_load(changes: list[ScopeChanges]) -> ScopeSnapshot:
    async with MemoryStore() as memory:
        for one in changes:
            await memory.commit("ns", [one])
        return await memory.load("ns", "")


async def recorded_start(namespace: str, topic: str) -> int | None:
    """The offset the namespace's index group committed for partition 0 of ``topic``."""
    from aiokafka import TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient

    async def fetch() -> int | None:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap())
        await admin.start()
        try:
            where = TopicPartition(topic, 0)
            offsets = await admin.list_consumer_group_offsets(
                index_group(namespace), partitions=[where]
            )
            found = offsets.get(where)
            return None if found is None or found.offset < 0 else int(found.offset)
        finally:
            await admin.close()

    return await on_own_loop(fetch)


async def produce_raw(topic: str, records: list[tuple[Any, Any, list[tuple[str, bytes]]]]) -> None:
    """Records ``(key, value, headers)`` into partition 0, as a writer that crashed would."""
    from aiokafka import AIOKafkaProducer

    async def send() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap(), acks="all")
        await producer.start()
        try:
            for key, value, headers in records:
                await producer.send_and_wait(topic, value, key=key, partition=0, headers=headers)
        finally:
            await producer.stop()

    await on_own_loop(send)


def snapshot_records(
    namespace: str, tables: dict[str, dict[bytes, bytes]], meta: bytes, epoch: int
) -> tuple[list[tuple[Any, Any, list[tuple[str, bytes]]]], tuple[Any, Any, list[Any]]]:
    """A snapshot of scope ``""`` as records: its entries, and its marker."""
    changes = change("", tables, meta=meta)
    entries, (value, header) = commit_records(os.urandom(8), namespace, changes)
    marker_headers = [(MARKER_HEADER, header), (EPOCH_HEADER, epoch_header(epoch))]
    marker_headers.append((SNAPSHOT_HEADER, b""))
    return [(k, v, [(ENTRY_HEADER, h)]) for k, v, h in entries], (None, value, marker_headers)


async def test_many_commits_with_snapshots_load_as_without_them_and_as_memory() -> None:
    namespace = unique("ns")
    changes = workload(seed=7, commits=120)
    async with store(snapshot_after=10) as writer:
        epoch = await writer.claim(namespace, "")
        assert await writer.load(namespace, "") == ScopeSnapshot(tables={}, meta=None)
        for one in changes:
            await writer.commit(namespace, [attrs.evolve(one, epoch=epoch)])
        assert writer.snapshots >= 3  # written as the log grew, by commits
        own = await writer.load(namespace, "")
    expected = whole(await memory_load(changes))
    assert expected[0]["seen"]  # the workload leaves some of each table
    assert expected[0]["totals"]
    async with store(snapshot_after=None) as plain:  # reads all, meets each snapshot
        assert whole(await plain.load(namespace, "")) == expected
        everything = plain.records_read
    async with store() as fresh:  # starts at the newest snapshot recorded
        assert whole(await fresh.load(namespace, "")) == expected
        assert fresh.records_read < everything / 3
    assert whole(own) == expected


async def test_a_load_after_a_snapshot_reads_only_the_records_since_it() -> None:
    namespace = unique("ns")
    topic = f"{namespace}-changelog"

    def put(n: int, epoch: int | None = None) -> ScopeChanges:
        return attrs.evolve(change("", {"t": {b"k": b"%d" % n}}, meta=b"%d" % n), epoch=epoch)

    async with store(snapshot_after=None) as writer:  # never snapshots
        for n in range(30):  # one key, overwritten: the log grows, the state does not
            await writer.commit(namespace, [put(n)])
    async with store(snapshot_after=10) as owner:
        epoch = await owner.claim(namespace, "")
        loaded = await owner.load(namespace, "")  # 61 records: over 2 * 1 + 10
        # and the snapshot's entry, read back to check that nothing came before its marker
        assert owner.records_read == 61 + 1
        assert owner.snapshots == 1
        for n in range(30, 33):
            await owner.commit(namespace, [put(n, epoch)])
        assert owner.snapshots == 1  # 2 + 6 records since it: not over 12 yet
    assert (values(loaded), loaded.meta) == ({"t": {b"k": b"29"}}, b"29")
    start = await recorded_start(namespace, topic)
    assert start == 61  # after the 60 records of the commits and the claim
    async with store() as fresh:
        again = await fresh.load(namespace, "")
        # The snapshot (its entry and marker) and the 3 commits since, nothing before it.
        assert fresh.records_read == 2 + 3 * 2
        assert fresh.snapshots == 0
    assert (values(again), again.meta) == ({"t": {b"k": b"32"}}, b"32")
    # What came before the snapshot is deleted where the brokers offer DeleteRecords
    # (Kafka), and kept where they do not (tansu).
    assert await partition_counts(topic) in ([8], [61 + 8])


async def test_a_snapshot_cut_short_leaves_the_state_before_it() -> None:
    namespace = unique("ns")
    topic = f"{namespace}-changelog"
    async with store() as kept:
        epoch = await kept.claim(namespace, "")
        await kept.commit(namespace, [change("", {"t": {b"a": b"1", b"b": b"2"}}, meta=b"m1")])
        entries, marker = snapshot_records(namespace, {"t": {b"a": b"9"}}, b"snap", epoch)
        await produce_raw(topic, entries)  # no marker: the writer died before it
        assert (values(await kept.load(namespace, "")), ...) == (
            {"t": {b"a": b"1", b"b": b"2"}},
            ...,
        )
        # A marker that counts an entry the log does not hold: not whole, not applied.
        entries, marker = snapshot_records(
            namespace, {"t": {b"a": b"9", b"c": b"3"}}, b"snap", epoch
        )
        await produce_raw(topic, [*entries[1:], marker])
        partial = await kept.load(namespace, "")
        assert (values(partial), partial.meta) == ({"t": {b"a": b"1", b"b": b"2"}}, b"m1")
        # A whole one replaces the state: b goes, though no commit deleted it.
        entries, marker = snapshot_records(namespace, {"t": {b"a": b"9"}}, b"snap", epoch)
        await produce_raw(topic, [*entries, marker])
        applied = await kept.load(namespace, "")
        assert (values(applied), applied.meta) == ({"t": {b"a": b"9"}}, b"snap")


async def test_a_former_owners_commit_after_the_new_owners_snapshot_is_never_restored() -> None:
    namespace = unique("ns")
    topic = f"{namespace}-changelog"
    async with store(snapshot_after=4) as zombie, store(snapshot_after=4) as owner:
        old = await zombie.claim(namespace, "")
        await zombie.load(namespace, "")
        await zombie.commit(namespace, [attrs.evolve(change("", {"t": {b"k": b"old"}}), epoch=old)])
        new = await owner.claim(namespace, "")
        assert values(await owner.load(namespace, "")) == {"t": {b"k": b"old"}}
        for n in range(12):
            await owner.commit(
                namespace, [attrs.evolve(change("", {"t": {b"k": b"new%d" % n}}), epoch=new)]
            )
        assert owner.snapshots >= 1
        snapshot_start = await recorded_start(namespace, topic)
        assert snapshot_start is not None
        # The zombie goes on committing, with its older epoch, enough for a snapshot of
        # its own: each commit is written, and ignored; its reads find the newer claim.
        for n in range(12):
            await zombie.commit(
                namespace,
                [attrs.evolve(change("", {"t": {b"k": b"zombie", b"z": b"%d" % n}}), epoch=old)],
            )
        assert zombie.snapshots == 0
        # A snapshot the zombie would write after the new owner's: fenced like a commit.
        entries, marker = snapshot_records(namespace, {"t": {b"z": b"snap"}}, b"zs", old)
        await produce_raw(topic, [*entries, marker])
    assert await recorded_start(namespace, topic) == snapshot_start
    async with store() as fresh, store(snapshot_after=None) as plain:
        for reader in (fresh, plain):  # from the snapshot, and from the log's beginning
            assert values(await reader.load(namespace, "")) == {"t": {b"k": b"new11"}}
        assert fresh.records_read < plain.records_read


async def test_a_partition_two_scopes_share_is_read_whole() -> None:
    topic = unique("shared")
    one, other = unique("ns"), unique("ns")
    async with store(topic=topic, partitions=1, snapshot_after=3) as kept:
        first = await kept.claim(one, "")
        await kept.load(one, "")
        for n in range(10):  # alone so far: snapshotted, and recorded
            await kept.commit(
                one, [attrs.evolve(change("", {"t": {b"k": b"%d" % n}}), epoch=first)]
            )
        assert kept.snapshots >= 1
        recorded = await recorded_start(one, topic)
        assert recorded is not None
        second = await kept.claim(other, "")
        await kept.load(other, "")
        shared_from = kept.snapshots
        for n in range(10):  # both now: no more snapshots, nothing recorded past the other
            await kept.commit(
                one, [attrs.evolve(change("", {"t": {b"k": b"one%d" % n}}), epoch=first)]
            )
            await kept.commit(
                other, [attrs.evolve(change("", {"t": {b"j": b"other%d" % n}}), epoch=second)]
            )
        assert kept.snapshots == shared_from
    assert await recorded_start(one, topic) == recorded
    assert await recorded_start(other, topic) is None
    async with store(topic=topic) as fresh:
        assert values(await fresh.load(one, "")) == {"t": {b"k": b"one9"}}
        assert values(await fresh.load(other, "")) == {"t": {b"j": b"other9"}}
        assert fresh.snapshots == 0  # a load claims nothing, so it writes no snapshot


async def test_a_snapshot_something_came_before_is_not_where_loads_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Between the end of the log a snapshot was made of and its marker, another scope's
    claim lands: the snapshot is written, but loads go on reading from the beginning
    (starting at it would skip the claim)."""
    from rxflow.state import _kafka_snapshots
    from rxflow.state._kafka_produce import produce_claim

    namespace, other = unique("ns"), unique("ns")
    topic = unique("changelog")
    real = _kafka_snapshots.produce_commit

    async def claim_first(send: Any, plans: Any) -> Any:
        await produce_claim(send, topic, 0, other, "")
        return await real(send, plans)

    async with store(topic=topic, snapshot_after=None) as writer:
        for n in range(20):
            await writer.commit(namespace, [change("", {"t": {b"k": b"%d" % n}})])
    monkeypatch.setattr(_kafka_snapshots, "produce_commit", claim_first)
    async with store(topic=topic, snapshot_after=3) as owner:
        await owner.claim(namespace, "")
        assert values(await owner.load(namespace, "")) == {"t": {b"k": b"19"}}
        assert owner.snapshots == 1
    assert await recorded_start(namespace, topic) is None
    async with store(topic=topic) as fresh:
        assert values(await fresh.load(namespace, "")) == {"t": {b"k": b"19"}}
        assert fresh.records_read == 20 * 2 + 1 + 1 + 2  # all: commits, claims, snapshot
