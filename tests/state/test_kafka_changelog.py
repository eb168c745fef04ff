"""KafkaChangelogStore against the tests' Kafka broker (tansu, or ``RXFLOW_KAFKA_BOOTSTRAP``),
on asyncio and trio: what a commit stores comes back from a load (a second store object's
too), scopes and namespaces stay apart, a changelog partition follows its source partition,
a commit cut short (records without their marker, a refused record, a cancellation) is
never half applied, expired entries are not loaded, and a lost or unreachable cluster is
ServiceUnavailableError without credentials.

The test side talks to Kafka with aiokafka on an asyncio loop of its own in a worker thread
(the same under both backends).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import anyio
import pytest

from rxflow.errors import RecordsRefusedError, ServiceUnavailableError
from rxflow.state import ScopeChanges, ScopeSnapshot, StoredEntry
from rxflow.state._kafka import KafkaChangelogStore
from rxflow.state._kafka_records import ENTRY_HEADER, MARKER_HEADER, commit_records
from tests.connectors.conftest import require_service
from tests.connectors.kafka_broker import TansuBroker
from tests.connectors.support import (
    PASSWORD,
    after,
    assert_no_secret,
    leftovers_of,
    nothing_printed,
    random_delays,
    refused_port,
)

pytestmark = pytest.mark.anyio

T = TypeVar("T")


def bootstrap() -> str:
    host, port = require_service("kafka")
    return f"{host}:{port}"


def unique(what: str) -> str:
    return f"rxflow-{what}-{uuid.uuid4().hex[:10]}"


async def on_own_loop(function: Callable[..., Awaitable[T]], *args: Any) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(function(*args), 30)

    return await anyio.to_thread.run_sync(lambda: asyncio.run(bounded()))


async def create_topic(name: str, partitions: int) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    async def create() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap())
        await admin.start()
        try:
            await admin.create_topics([NewTopic(name, partitions, 1)])
        finally:
            await admin.close()

    await on_own_loop(create)


async def partition_counts(topic: str) -> list[int]:
    """How many records each partition of ``topic`` holds."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    async def count() -> list[int]:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap(), enable_auto_commit=False)
        await consumer.start()
        try:
            partitions = sorted(await consumer._client._wait_on_metadata(topic))
            places = [TopicPartition(topic, p) for p in partitions]
            starts = await consumer.beginning_offsets(places)
            ends = await consumer.end_offsets(places)
            return [ends[p] - starts[p] for p in places]
        finally:
            await consumer.stop()

    return await on_own_loop(count)


async def records_in(topic: str) -> int:
    """How many records partition 0 of ``topic`` holds, read to its end (tansu's end offsets
    (ListOffsets) can lag far behind after a burst of batches: 5,002 for 10,001 records)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    async def count() -> int:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap(), enable_auto_commit=False)
        await consumer.start()
        try:
            place = TopicPartition(topic, 0)
            consumer.assign([place])
            await consumer.seek_to_beginning(place)
            read = 0
            while batch := (await consumer.getmany(place, timeout_ms=1000)).get(place):
                read += len(batch)
            return read
        finally:
            await consumer.stop()

    return await on_own_loop(count)


async def produce(topic: str, partition: int, records: list[tuple[Any, Any, str, bytes]]) -> None:
    """Records ``(key, value, header name, header value)``, as another writer would."""
    from aiokafka import AIOKafkaProducer

    async def send() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap(), acks="all")
        await producer.start()
        try:
            for key, value, name, header in records:
                await producer.send_and_wait(
                    topic, value, key=key, partition=partition, headers=[(name, header)]
                )
        finally:
            await producer.stop()

    await on_own_loop(send)


def change(
    scope: str,
    puts: Mapping[str, Mapping[bytes, bytes | StoredEntry]] | None = None,
    deletes: Mapping[str, list[bytes]] | None = None,
    meta: bytes = b"meta",
) -> ScopeChanges:
    return ScopeChanges(
        scope,
        puts={
            table: {k: v if isinstance(v, StoredEntry) else StoredEntry(v) for k, v in kv.items()}
            for table, kv in (puts or {}).items()
        },
        deletes=deletes or {},
        meta=meta,
    )


def values(snapshot: ScopeSnapshot) -> dict[str, dict[bytes, bytes]]:
    return {
        table: {key: entry.value for key, entry in entries.items()}
        for table, entries in snapshot.tables.items()
    }


@contextlib.asynccontextmanager
async def store(**options: Any) -> AsyncIterator[KafkaChangelogStore]:
    with anyio.fail_after(60):
        async with KafkaChangelogStore(bootstrap(), **options) as opened:
            yield opened


async def test_a_commit_round_trips_and_the_next_commit_applies_on_top() -> None:
    namespace = unique("ns")
    async with store() as kept:
        assert await kept.load(namespace, "") == ScopeSnapshot(tables={}, meta=None)
        await kept.commit(
            namespace,
            [change("", {"totals": {b"ann": b"3", b"bob": b"4"}, "seen": {b"x": b""}}, meta=b"1")],
        )
        first = await kept.load(namespace, "")
        assert values(first) == {"totals": {b"ann": b"3", b"bob": b"4"}, "seen": {b"x": b""}}
        assert first.meta == b"1"
        await kept.commit(
            namespace,
            [change("", {"totals": {b"ann": b"5", b"cid": b"1"}}, {"seen": [b"x"]}, meta=b"2")],
        )
        second = await kept.load(namespace, "")
    assert values(second) == {"totals": {b"ann": b"5", b"bob": b"4", b"cid": b"1"}}
    assert second.meta == b"2"


async def test_an_empty_commit_keeps_the_state_and_sets_the_meta() -> None:
    namespace = unique("ns")
    async with store() as kept:
        await kept.commit(namespace, [])
        await kept.commit(namespace, [change("", {"t": {b"k": b"v"}}, meta=b"a")])
        await kept.commit(namespace, [change("", meta=b"b")])
        loaded = await kept.load(namespace, "")
    assert (values(loaded), loaded.meta) == ({"t": {b"k": b"v"}}, b"b")


async def test_scopes_and_namespaces_are_independent_and_partitions_follow_the_source() -> None:
    source = unique("orders")
    await create_topic(source, 3)
    one, other = unique("ns"), unique("ns")
    async with store() as kept:
        await kept.commit(
            one,
            [
                change(f"{source}/0", {"t": {b"k": b"one-0"}}, meta=b"m0"),
                change(f"{source}/2", {"t": {b"k": b"one-2"}}, meta=b"m2"),
                change("", {"t": {b"k": b"one-unpartitioned"}}, meta=b"m"),
            ],
        )
        await kept.commit(other, [change(f"{source}/0", {"t": {b"k": b"other-0"}}, meta=b"o")])
        await kept.commit(one, [change(f"{source}/0", {"t": {b"j": b"later"}}, meta=b"m0b")])
        loads = {
            (namespace, scope): await kept.load(namespace, scope)
            for namespace in (one, other)
            for scope in (f"{source}/0", f"{source}/1", f"{source}/2", "")
        }
    assert {key: (values(s), s.meta) for key, s in loads.items()} == {
        (one, f"{source}/0"): ({"t": {b"k": b"one-0", b"j": b"later"}}, b"m0b"),
        (one, f"{source}/1"): ({}, None),
        (one, f"{source}/2"): ({"t": {b"k": b"one-2"}}, b"m2"),
        (one, ""): ({"t": {b"k": b"one-unpartitioned"}}, b"m"),
        (other, f"{source}/0"): ({"t": {b"k": b"other-0"}}, b"o"),
        (other, f"{source}/1"): ({}, None),
        (other, f"{source}/2"): ({}, None),
        (other, ""): ({}, None),
    }
    # One changelog topic per source topic, with its partitions; each record and marker
    # of scope "<source>/<n>" in partition n.
    assert await partition_counts(f"{one}-{source}-changelog") == [4, 0, 2]
    assert await partition_counts(f"{one}-changelog") == [2]


async def test_a_fixed_topic_keeps_scopes_and_namespaces_that_share_a_partition_apart() -> None:
    topic = unique("changelog")
    one, other = unique("ns"), unique("ns")
    async with store(topic=topic, partitions=1) as kept:
        await kept.commit(one, [change("a/0", {"t": {b"k": b"one-a"}}), change("b/0", {})])
        await kept.commit(other, [change("a/0", {"t": {b"k": b"other-a"}}, {"t": [b"j"]})])
        await kept.commit(one, [change("b/0", {"t": {b"k": b"one-b"}}, {"t": [b"gone"]})])
        loaded = [values(await kept.load(n, s)) for n in (one, other) for s in ("a/0", "b/0")]
    assert loaded == [
        {"t": {b"k": b"one-a"}},
        {"t": {b"k": b"one-b"}},
        {"t": {b"k": b"other-a"}},
        {},
    ]
    assert await partition_counts(topic) == [9]  # 6 entries, 3 scopes' markers


async def test_records_without_their_marker_are_ignored_even_before_a_later_commit() -> None:
    namespace = unique("ns")
    topic = f"{namespace}-changelog"
    async with store() as kept:
        await kept.commit(namespace, [change("", {"t": {b"a": b"1", b"b": b"1"}}, meta=b"one")])
        # A commit whose writer died after producing its records, before its marker: it
        # overwrites a, deletes b and adds c.
        cut, _ = commit_records(
            os.urandom(8), namespace, change("", {"t": {b"a": b"2", b"c": b"2"}}, {"t": [b"b"]})
        )
        await produce(topic, 0, [(k, v, ENTRY_HEADER, h) for k, v, h in cut])
        assert values(await kept.load(namespace, "")) == {"t": {b"a": b"1", b"b": b"1"}}
        # A commit one of whose records was lost (its marker counts one more than came).
        commit_id = os.urandom(8)
        lossy, (meta, marker) = commit_records(
            commit_id, namespace, change("", {"t": {b"a": b"3", b"d": b"3"}}, meta=b"lossy")
        )
        await produce(
            topic,
            0,
            [(k, v, ENTRY_HEADER, h) for k, v, h in lossy[1:]]
            + [(None, meta, MARKER_HEADER, marker)],
        )
        after_lossy = await kept.load(namespace, "")
        assert (values(after_lossy), after_lossy.meta) == ({"t": {b"a": b"1", b"b": b"1"}}, b"one")
        # A later complete commit does not bring the cut ones in.
        await kept.commit(namespace, [change("", {"t": {b"e": b"4"}}, meta=b"four")])
        final = await kept.load(namespace, "")
    assert (values(final), final.meta) == ({"t": {b"a": b"1", b"b": b"1", b"e": b"4"}}, b"four")


async def test_a_record_sent_twice_counts_once() -> None:
    namespace = unique("ns")
    commit_id = os.urandom(8)
    entries, (meta, marker) = commit_records(
        commit_id, namespace, change("", {"t": {b"a": b"1", b"b": b"2"}}, meta=b"m")
    )
    records = [(k, v, ENTRY_HEADER, h) for k, v, h in entries]
    # A producer's retry: the first record again, after the second.
    await create_topic(f"{namespace}-changelog", 1)
    await produce(
        f"{namespace}-changelog", 0, [*records, records[0], (None, meta, MARKER_HEADER, marker)]
    )
    async with store() as kept:
        loaded = await kept.load(namespace, "")
    assert (values(loaded), loaded.meta) == ({"t": {b"a": b"1", b"b": b"2"}}, b"m")


async def test_a_refused_record_leaves_its_scope_as_it_was_and_commits_the_others() -> None:
    namespace = unique("ns")
    async with store(partitions=2) as kept:
        await kept.commit(namespace, [change("s/0", {"t": {b"a": b"1"}}, meta=b"before")])
        too_large = b"x" * (2 * 1024 * 1024)  # over the producer's 1 MiB request bound
        with pytest.raises(RecordsRefusedError, match="1 of 2 scopes failed") as refused:
            await kept.commit(
                namespace,
                [
                    change("s/0", {"t": {b"a": b"2", b"b": b"2", b"big": too_large}}, meta=b"no"),
                    change("s/1", {"t": {b"a": b"ok"}}, meta=b"yes"),
                ],
            )
        assert [scope for scope, _ in refused.value.refused] == ["s/0"]
        assert refused.value.stored == 1
        kept_back = await kept.load(namespace, "s/0")
        other = await kept.load(namespace, "s/1")
    assert (values(kept_back), kept_back.meta) == ({"t": {b"a": b"1"}}, b"before")
    assert (values(other), other.meta) == ({"t": {b"a": b"ok"}}, b"yes")


async def test_a_value_that_is_not_bytes_refuses_the_whole_commit_before_anything_is_sent() -> None:
    namespace = unique("ns")
    async with store(partitions=1) as kept:
        await kept.commit(namespace, [change("", {"t": {b"a": b"1"}}, meta=b"before")])
        bad = StoredEntry({"not": "bytes"})  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="must be bytes"):
            await kept.commit(
                namespace,
                [change("p/0", {"t": {b"fine": b"2"}}), change("", {"t": {b"a": b"2", b"b": bad}})],
            )
        loaded = await kept.load(namespace, "")
        untouched = await kept.load(namespace, "p/0")
    assert (values(loaded), loaded.meta) == ({"t": {b"a": b"1"}}, b"before")
    assert untouched == ScopeSnapshot(tables={}, meta=None)
    assert await partition_counts(f"{namespace}-changelog") == [2]


async def test_loads_of_several_scopes_at_once_each_get_their_own() -> None:
    """A worker given several partitions at once restores them concurrently."""
    source, namespace = unique("orders"), unique("ns")
    await create_topic(source, 4)
    async with store() as kept:
        await kept.commit(
            namespace,
            [change(f"{source}/{n}", {"t": {b"n": b"%d" % n}}, meta=b"%d" % n) for n in range(4)],
        )
        loaded: dict[int, ScopeSnapshot] = {}

        async def load(n: int) -> None:
            loaded[n] = await kept.load(namespace, f"{source}/{n}")

        async with anyio.create_task_group() as tg:
            for n in range(4):
                tg.start_soon(load, n)
    assert {n: (values(s), s.meta) for n, s in loaded.items()} == {
        n: ({"t": {b"n": b"%d" % n}}, b"%d" % n) for n in range(4)
    }


async def test_cancelled_commits_and_loads_are_all_or_nothing_and_leave_nothing_running(
    capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """Commits of 2,000 keys, each setting every key to its own number, cancelled at random
    points: every load sees one whole commit, nothing is left running or open, and nothing
    is printed or logged."""
    namespace = unique("ns")
    keys = [f"key-{n}".encode() for n in range(2000)]
    outcomes: set[str] = set()
    async with store(partitions=1) as kept:
        await kept.commit(namespace, [change("", {"t": dict.fromkeys(keys, b"0")}, meta=b"0")])
        number = 0

        async def cancels(delays: list[float | int]) -> None:
            nonlocal number
            for delay in delays:
                number += 1
                puts = dict.fromkeys(keys, str(number).encode())
                committed = await cancelled_after(
                    delay, kept.commit, namespace, [change("", {"t": puts}, meta=b"%d" % number)]
                )
                await cancelled_after(delay, kept.load, namespace, "")
                loaded = await kept.load(namespace, "")
                assert loaded.meta is not None
                assert set(values(loaded)["t"].values()) == {loaded.meta}, "a commit half applied"
                assert len(values(loaded)["t"]) == len(keys)
                outcomes.add("done" if committed else "cancelled")

        with nothing_printed(capfd, caplog) as noise:
            left = await leftovers_of(cancels, random_delays(15, longest=0.1), within=120)
    assert noise == []
    assert left.nothing, left.describe("cancelled commits")
    assert "cancelled" in outcomes


async def cancelled_after(
    delay: float | int, work: Callable[..., Awaitable[object]], *args: Any
) -> bool:
    """Run ``work(*args)``, cancelled after ``delay`` (seconds, or loop turns for an int);
    whether it completed."""
    completed = False

    async def run() -> None:
        nonlocal completed
        await work(*args)
        completed = True

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        await after(delay)
        tg.cancel_scope.cancel()
    return completed


# A process that commits every key again and again, each commit its number, and says so.
# With "hold", its second commit stops once its records are acknowledged, before its marker
# is sent, and says "holding": a kill then cuts that commit short for certain.
COMMIT_UNTIL_KILLED = """
import asyncio, sys, anyio
import rxflow.state._kafka as kafka_store
from rxflow.state._store import ScopeChanges, StoredEntry

produce_commit = kafka_store.produce_commit

async def produce_then_hold(send, plans):
    async def send_or_hold(topic, value, **options):
        if "key" not in options:  # the marker: every record before it is acknowledged
            print("holding", flush=True)
            await asyncio.sleep(3600)
        return await send(topic, value, **options)
    return await produce_commit(send_or_hold, plans)

async def main():
    async with kafka_store.KafkaChangelogStore(sys.argv[1], partitions=1) as store:
        for number in range(1, 10_000):
            if number == 2 and sys.argv[3] == "hold":
                kafka_store.produce_commit = produce_then_hold
            value = StoredEntry(b"%d" % number)
            puts = {"t": {b"key-%d" % n: value for n in range(5000)}}
            await store.commit(sys.argv[2], [ScopeChanges("", puts, {}, b"%d" % number)])
            print(number, flush=True)

anyio.run(main)
"""


async def test_a_process_killed_while_committing_leaves_its_last_whole_commit() -> None:
    """SIGKILL of a commit loop, first once a commit's records are acknowledged and its
    marker not sent (that commit cut short for certain), then at random points: each time
    the next load has one whole commit, the last one the process finished or the one it
    was in."""
    namespace = unique("ns")
    root = Path(__file__).parents[2]
    rng = random.Random(14)
    for kill in range(4):
        hold = kill == 0
        argv = [sys.executable, "-c", COMMIT_UNTIL_KILLED, bootstrap(), namespace]
        argv.append("hold" if hold else "run")
        with anyio.fail_after(60):
            async with await anyio.open_process(argv, cwd=root) as process:
                assert process.stdout is not None
                said = b""
                async for chunk in process.stdout:
                    said += chunk
                    if said.endswith(b"holding\n" if hold else b"\n"):
                        break  # one commit done, the next under way (or held)
                if not hold:
                    await anyio.sleep(rng.uniform(0.0, 0.2))
                process.kill()  # SIGKILL: no close, maybe mid-commit
                await process.wait()
                async for chunk in process.stdout:
                    said += chunk
        finished = int(said.replace(b"holding", b"").split()[-1])
        async with store() as kept:
            loaded = await kept.load(namespace, "")
        assert loaded.meta is not None
        assert int(loaded.meta) in (finished, finished + 1)
        assert set(values(loaded)["t"].values()) == {loaded.meta}, "a commit half applied"
        assert len(values(loaded)["t"]) == 5000
        if hold:  # commit 1 whole (5,000 records and a marker), commit 2's records only
            assert loaded.meta == b"1"
            assert await records_in(f"{namespace}-changelog") == 5001 + 5000


async def test_expired_entries_are_not_loaded() -> None:
    namespace = unique("ns")
    now = time.time()
    async with store() as kept:
        await kept.commit(
            namespace,
            [
                change(
                    "",
                    {
                        "t": {
                            b"gone": StoredEntry(b"1", expires_at=now - 1),
                            b"later": StoredEntry(b"2", expires_at=now + 3600),
                            b"never": StoredEntry(b"3"),
                        },
                        "only-expired": {b"x": StoredEntry(b"", expires_at=now - 5)},
                    },
                )
            ],
        )
        loaded = await kept.load(namespace, "")
    assert loaded.tables == {
        "t": {b"later": StoredEntry(b"2", expires_at=now + 3600), b"never": StoredEntry(b"3")}
    }


async def test_a_second_store_object_sees_what_the_first_committed() -> None:
    source = unique("orders")
    await create_topic(source, 2)
    namespace = unique("ns")
    async with store(client_id="worker-1") as first:
        await first.commit(namespace, [change(f"{source}/1", {"t": {b"k": b"v"}}, meta=b"at-7")])
    async with store(client_id="worker-2") as second:
        loaded = await second.load(namespace, f"{source}/1")
        untouched = await second.load(namespace, f"{source}/0")
    assert (values(loaded), loaded.meta) == ({"t": {b"k": b"v"}}, b"at-7")
    assert untouched == ScopeSnapshot(tables={}, meta=None)


async def test_ten_thousand_keys_commit_and_load(anyio_backend: str) -> None:
    namespace = unique("ns")
    puts = {"t": {f"key-{n:05d}".encode(): os.urandom(50).hex().encode() for n in range(10_000)}}
    async with store() as kept:
        started = time.perf_counter()
        await kept.commit(namespace, [change("", puts, meta=b"big")])
        committed = time.perf_counter() - started
        started = time.perf_counter()
        loaded = await kept.load(namespace, "")
        load_time = time.perf_counter() - started
    assert values(loaded) == puts
    print(
        f"\n[{anyio_backend}] 10,000 keys of 100 B: commit {committed * 1000:.0f} ms, "
        f"load {load_time * 1000:.0f} ms"
    )


async def test_a_changelog_of_a_source_topic_elsewhere_needs_partitions() -> None:
    namespace, missing = unique("ns"), unique("elsewhere")
    async with store() as kept:
        with pytest.raises(ValueError, match=r"give KafkaChangelogStore\(partitions="):
            await kept.load(namespace, f"{missing}/2")
    async with store(partitions=4) as kept:
        await kept.commit(namespace, [change(f"{missing}/2", {"t": {b"k": b"v"}})])
        assert values(await kept.load(namespace, f"{missing}/2")) == {"t": {b"k": b"v"}}
    assert await partition_counts(f"{namespace}-{missing}-changelog") == [0, 0, 2, 0]


async def test_an_unreachable_cluster_is_unavailable_without_credentials(
    caplog: pytest.LogCaptureFixture,
) -> None:
    address = f"127.0.0.1:{refused_port()}"
    secured = KafkaChangelogStore(
        address,
        connect_timeout=2,
        security_protocol="SASL_PLAINTEXT",
        sasl_plain_username="user",
        sasl_plain_password=PASSWORD,
    )
    assert PASSWORD not in repr(secured)
    assert PASSWORD not in secured.description
    with pytest.raises(ServiceUnavailableError, match=address) as failed:
        with anyio.fail_after(20):
            async with secured:
                pass  # pragma: no cover
    assert secured.description in str(failed.value)
    assert_no_secret(failed.value, caplog)
    await secured.close()  # after a failed open: nothing to do


async def test_a_lost_cluster_is_unavailable() -> None:
    require_service("kafka")
    with TansuBroker() as broker:
        async with KafkaChangelogStore(broker.bootstrap, request_timeout=2) as kept:
            namespace = unique("ns")
            await kept.commit(namespace, [change("", {"t": {b"k": b"v"}})])
            broker.stop()
            with anyio.fail_after(30):
                with pytest.raises(ServiceUnavailableError, match=broker.bootstrap):
                    await kept.commit(namespace, [change("", {"t": {b"k": b"w"}})])
                with pytest.raises(ServiceUnavailableError, match=broker.bootstrap):
                    await kept.load(namespace, "")


async def test_misuse_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="topic must be a Kafka topic name"):
        KafkaChangelogStore("localhost:9092", topic="my topic")
    with pytest.raises(ValueError, match="partitions"):
        KafkaChangelogStore("localhost:9092", partitions=0)
    with pytest.raises(ValueError, match="host:port"):
        KafkaChangelogStore("kafka://localhost:9092")
    unopened = KafkaChangelogStore("localhost:9092")
    with pytest.raises(RuntimeError, match="not open"):
        await unopened.load("ns", "")
