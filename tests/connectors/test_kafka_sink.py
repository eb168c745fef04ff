"""The Kafka sink and the re-keying helper against the tests' broker (tansu, or
``RXFLOW_KAFKA_BOOTSTRAP``), on asyncio and trio: what the sink confirmed is stored,
addressed by key, partition, headers and timestamp; a record the broker refuses fails only
itself, and a flow's ``on_error`` acts on the failed records only; ``kafka_repartition``
puts every record in the partition of its new key, at least once.

The test side talks to Kafka with aiokafka on an asyncio loop of its own in a worker thread
(the same under both backends).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import anyio
import attrs
import pytest
from reactivex import operators as ops

from rxflow import Flow
from rxflow.connectors import Message
from rxflow.connectors.kafka import Repartition, kafka_repartition
from rxflow.connectors.kafka.sink import KafkaSink, Written, kafka_sink
from rxflow.errors import RecordsRefusedError, ServiceUnavailableError
from rxflow.strategies import DeadLetter, Failure, Retry, Skip
from tests.connectors.conftest import require_service
from tests.connectors.support import refused_port, wait_until

pytestmark = pytest.mark.anyio

T = TypeVar("T")
PARTITIONS = 3


@attrs.frozen
class Stored:
    """A record as a plain consumer reads it back."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...]
    timestamp_ms: int


async def on_own_loop(function: Callable[..., Awaitable[T]], *args: Any) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(function(*args), 20)

    return await anyio.to_thread.run_sync(lambda: asyncio.run(bounded()))


class Topic:
    """One test's topic, made with the admin client, read back with a plain consumer."""

    def __init__(self, partitions: int = PARTITIONS) -> None:
        host, port = require_service("kafka")
        self.bootstrap = f"{host}:{port}"
        self.name = f"rxflow-sink-{uuid.uuid4().hex[:12]}"
        self.partitions = partitions

    async def create(self) -> None:
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic

        async def create() -> None:
            admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
            await admin.start()
            try:
                await admin.create_topics([NewTopic(self.name, self.partitions, 1)])
            finally:
                await admin.close()

        await on_own_loop(create)

    async def delete(self) -> None:
        from aiokafka.admin import AIOKafkaAdminClient

        async def delete() -> None:
            admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
            await admin.start()
            try:
                await admin.delete_topics([self.name])
            except Exception:  # a broker without deletes keeps it; names are unique
                pass
            finally:
                await admin.close()

        await on_own_loop(delete)

    async def stored(self, count: int) -> list[Stored]:
        """The first ``count`` records (all partitions; fewer if there are fewer), in
        (partition, offset) order."""
        from aiokafka import AIOKafkaConsumer, TopicPartition

        async def read() -> list[Stored]:
            consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
            await consumer.start()
            try:
                partitions = [TopicPartition(self.name, n) for n in range(self.partitions)]
                consumer.assign(partitions)
                await consumer.seek_to_beginning(*partitions)
                ends = await consumer.end_offsets(partitions)
                expected = min(count, sum(ends.values()))
                records: list[Stored] = []
                while len(records) < expected:
                    for batch in (await consumer.getmany(timeout_ms=500)).values():
                        records += [
                            Stored(
                                r.partition,
                                r.offset,
                                r.key,
                                r.value,
                                tuple(r.headers),
                                r.timestamp,
                            )
                            for r in batch
                        ]
                return sorted(records, key=lambda r: (r.partition, r.offset))
            finally:
                await consumer.stop()

        return await on_own_loop(read)


@pytest.fixture
async def topic(anyio_backend: str) -> Any:
    made = Topic()
    await made.create()
    try:
        yield made
    finally:
        with anyio.CancelScope(shield=True):
            await made.delete()


async def test_a_confirmed_batch_is_stored_with_its_keys_headers_and_timestamps(
    topic: Topic,
) -> None:
    when = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    items = [{"user": f"u{n % 4}", "n": n} for n in range(40)]
    async with kafka_sink(
        topic.bootstrap,
        topic.name,
        key=lambda item: item["user"],
        headers=lambda item: {"n": str(item["n"]), "raw": b"\x00"},
        timestamp=lambda item: when,
        encoder="json",
    ) as sink:
        assert isinstance(sink, KafkaSink)
        written = await sink.send_batch(items)
        one = await sink.send({"user": "u0", "n": 40})
        assert sink.sent == 41
    assert all(isinstance(place, Written) for place in written)
    stored = await topic.stored(41)
    assert len(stored) == 41
    assert {(r.partition, r.offset) for r in stored} == {*written, one}
    by_n = {int(dict(r.headers)["n"]): r for r in stored}
    for n, item in enumerate([*items, {"user": "u0", "n": 40}]):
        record = by_n[n]
        assert record.key == item["user"].encode()
        assert record.value == f'{{"user":"{item["user"]}","n":{n}}}'.encode()
        assert dict(record.headers)["raw"] == b"\x00"
        assert record.timestamp_ms == int(when.timestamp() * 1000)
    # A key's records all land in one partition, in the order they were sent.
    for user in {item["user"] for item in items}:
        mine = [r for r in stored if r.key == user.encode()]
        assert len({r.partition for r in mine}) == 1
        assert [int(dict(r.headers)["n"]) for r in mine] == sorted(
            int(dict(r.headers)["n"]) for r in mine
        )


async def test_a_fixed_key_partition_and_headers_apply_to_every_record(topic: Topic) -> None:
    async with kafka_sink(
        topic.bootstrap, topic.name, key="k", partition=2, headers={"h": "v"}
    ) as sink:
        written = await sink.send_batch([b"a", "b"])
    assert [place.partition for place in written] == [2, 2]
    stored = await topic.stored(2)
    assert [(r.partition, r.key, r.value, r.headers) for r in stored] == [
        (2, b"k", b"a", (("h", b"v"),)),
        (2, b"k", b"b", (("h", b"v"),)),
    ]


async def test_a_partition_function_places_each_record(topic: Topic) -> None:
    async with kafka_sink(topic.bootstrap, topic.name, partition=lambda v: int(v) % 3) as sink:
        written = await sink.send_batch([b"%d" % n for n in range(9)])
    assert [place.partition for place in written] == [n % 3 for n in range(9)]
    assert sorted(r.value for r in await topic.stored(9) if r.partition == 1) == [
        b"1",
        b"4",
        b"7",
    ]


async def test_a_refused_record_fails_alone_and_the_error_names_it(topic: Topic) -> None:
    items = [b"a", b"b", b"bad", b"c"]
    async with kafka_sink(
        topic.bootstrap, topic.name, partition=lambda v: 99 if v == b"bad" else 0
    ) as sink:
        with pytest.raises(RecordsRefusedError) as raised:
            await sink.send_batch(items)
        assert sink.sent == 3
    error = raised.value
    assert [item for item, _ in error.refused] == [b"bad"]
    assert error.stored == 3
    assert "has no partition 99" in str(error.refused[0][1])
    assert "1 of 4 records failed (3 stored)" in str(error)
    assert [r.value for r in await topic.stored(4)] == [b"a", b"b", b"c"]


async def test_a_record_over_the_size_limit_is_refused_and_the_others_stored(topic: Topic) -> None:
    async with kafka_sink(topic.bootstrap, topic.name, max_batch_bytes=16 * 1024) as sink:
        big = b"x" * (2 * 1024 * 1024)
        with pytest.raises(RecordsRefusedError, match="1 of 3 records failed") as raised:
            await sink.send_batch([b"a", big, b"b"])
    assert [item for item, _ in raised.value.refused] == [big]
    assert sorted(r.value for r in await topic.stored(3)) == [b"a", b"b"]


def flaky_partition(fail: set[bytes]) -> Callable[[bytes], int]:
    """A partition function that sends the items in ``fail`` nowhere the first time."""
    failed: set[bytes] = set()

    def partition(value: bytes) -> int:
        if value in fail and value not in failed:
            failed.add(value)
            return 99
        return 0

    return partition


async def run_flow_into(sink: Any, values: list[bytes], **sink_options: Any) -> None:
    """A flow of ``values`` into ``sink``, run to its end."""
    await Flow("into-kafka").source(values).sink(sink, name="out", **sink_options).run()


async def test_a_flow_retry_sends_again_only_the_refused_records(topic: Topic) -> None:
    values = [b"%d" % n for n in range(10)]
    sink = kafka_sink(topic.bootstrap, topic.name, partition=flaky_partition({b"3", b"7"}))
    retry = Retry(attempts=2, base=0.0, cap=0.0, on=(ValueError,))
    await run_flow_into(sink, values, on_error=retry, batch_size=10)
    stored = await topic.stored(20)
    assert sorted(r.value for r in stored) == sorted(values)  # each once


async def test_a_flow_skip_leaves_out_only_the_refused_records(topic: Topic) -> None:
    values = [b"%d" % n for n in range(10)]
    sink = kafka_sink(topic.bootstrap, topic.name, partition=flaky_partition({b"3"}))
    await run_flow_into(sink, values, on_error=Skip(), batch_size=10)
    stored = await topic.stored(20)
    assert sorted(r.value for r in stored) == sorted(set(values) - {b"3"})


async def test_a_flow_dead_letter_gets_only_the_refused_records(topic: Topic) -> None:
    values = [b"%d" % n for n in range(10)]
    failures: list[Failure] = []
    sink = kafka_sink(topic.bootstrap, topic.name, partition=flaky_partition({b"2", b"5"}))
    await run_flow_into(sink, values, on_error=DeadLetter(failures.append), batch_size=10)
    # The flow's batches are what the source gave at once: the two may come in one or two.
    assert sorted(value for failure in failures for value in failure.item) == [b"2", b"5"]
    assert all(isinstance(failure.error, RecordsRefusedError) for failure in failures)
    stored = await topic.stored(20)
    assert sorted(r.value for r in stored) == sorted(set(values) - {b"2", b"5"})


async def test_a_flow_from_values_to_kafka_writes_them_all(topic: Topic) -> None:
    values = [{"n": n} for n in range(1000)]
    async with anyio.create_task_group() as tg:
        flow = (
            Flow("to-kafka")
            .source(values)
            .pipe(ops.map(lambda v: v))
            .sink(kafka_sink(topic.bootstrap, topic.name, key=lambda v: str(v["n"] % 7)))
        )
        handle = flow.start(tg)
        await handle.wait()
    assert len(await topic.stored(1000)) == 1000


async def test_a_broker_that_is_not_there_is_named(anyio_backend: str) -> None:
    port = refused_port()
    with pytest.raises(ServiceUnavailableError, match=f"127.0.0.1:{port}"):
        async with kafka_sink(f"127.0.0.1:{port}", "t"):
            pass


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"key": 3}, TypeError, "key must be a value or a function"),
        ({"partition": "0"}, TypeError, "partition must be"),
        ({"headers": ["h"]}, TypeError, "headers must be"),
        ({"timestamp": 3.0}, TypeError, "timestamp must be a function"),
        ({"acks": 0}, ValueError, "acks must be 'all' or 1"),
        ({"batch_size": 0}, ValueError, "batch_size"),
        ({"linger_ms": -1}, ValueError, "linger_ms"),
    ],
)
async def test_wrong_options_are_refused_before_connecting(
    anyio_backend: str, options: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        async with kafka_sink(f"127.0.0.1:{refused_port()}", "t", **options):
            pass


async def test_a_bad_key_from_the_key_function_fails_the_batch_before_sending(
    topic: Topic,
) -> None:
    async with kafka_sink(topic.bootstrap, topic.name, key=lambda v: 7) as sink:
        with pytest.raises(TypeError, match="key must be str, bytes or None, got int"):
            await sink.send_batch([b"a"])
    assert await topic.stored(1) == []


# -- kafka_repartition ----------------------------------------------------------------------

USERS = ["ada", "bob", "cy", "dee", "eve"]
EVENT_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z


async def publish_clicks(topic: Topic, first: int, count: int) -> None:
    """Clicks ``first..first+count-1`` into ``topic``, keyed by click number (so a user's
    clicks are spread over partitions), each with an event time and a header."""
    from aiokafka import AIOKafkaProducer

    async def publish() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=topic.bootstrap, acks="all")
        await producer.start()
        try:
            for n in range(first, first + count):
                click = json.dumps({"user": USERS[n % len(USERS)], "n": n}).encode()
                await producer.send(
                    topic.name,
                    click,
                    key=b"%d" % n,
                    timestamp_ms=EVENT_MS + n * 1000,
                    headers=[("trace", b"t%d" % n)],
                )
            await producer.flush()
        finally:
            await producer.stop()

    await on_own_loop(publish)


@pytest.fixture
async def rekeyed(topic: Topic) -> Any:
    """The target topic of a re-keying, with another number of partitions."""
    made = Topic(partitions=4)
    await made.create()
    try:
        yield made
    finally:
        with anyio.CancelScope(shield=True):
            await made.delete()


async def rekey_until(repartition: Repartition, target: Topic, count: int) -> None:
    """Run ``repartition`` until ``target`` holds ``count`` records, then stop it."""
    async with anyio.create_task_group() as tg:
        tg.start_soon(repartition.run)
        await wait_until(lambda: _holds(target, count))
        repartition.stop()


async def _holds(target: Topic, count: int) -> bool:
    return len(await target.stored(count)) >= count


def user_partition(user: str, partitions: int) -> int:
    """The partition every Kafka client's default partitioner gives the key ``user``."""
    from aiokafka.partitioner import murmur2

    return (murmur2(user.encode()) & 0x7FFFFFFF) % partitions


async def test_repartition_keys_every_record_by_the_new_key(topic: Topic, rekeyed: Topic) -> None:
    await publish_clicks(topic, 0, 60)
    group = f"rekey-{uuid.uuid4().hex[:8]}"
    repartition = kafka_repartition(
        topic.bootstrap, topic.name, rekeyed.name, lambda click: click["user"], group_id=group
    )
    await rekey_until(repartition, rekeyed, 60)
    assert repartition.written == 60
    stored = await rekeyed.stored(100)
    clicks = [json.loads(record.value) for record in stored]
    assert sorted(click["n"] for click in clicks) == list(range(60))  # each once
    for record, click in zip(stored, clicks, strict=True):
        # Every record of a user in the partition its key hashes to, as it was sent.
        assert record.key == click["user"].encode()
        assert record.partition == user_partition(click["user"], rekeyed.partitions)
        assert record.timestamp_ms == EVENT_MS + click["n"] * 1000
        assert dict(record.headers) == {"trace": b"t%d" % click["n"]}
    # A user's clicks from one source partition keep their order (stored is in offset order).
    for user in USERS:
        for source_partition in range(topic.partitions):
            numbers = [
                c["n"]
                for c in clicks
                if c["user"] == user
                and user_partition(str(c["n"]), topic.partitions) == source_partition
            ]
            assert numbers == sorted(numbers)


async def test_a_stopped_repartition_resumes_where_it_committed(
    topic: Topic, rekeyed: Topic
) -> None:
    await publish_clicks(topic, 0, 30)
    group = f"rekey-{uuid.uuid4().hex[:8]}"

    def repartition() -> Repartition:
        return kafka_repartition(
            topic.bootstrap, topic.name, rekeyed.name, lambda c: c["user"], group_id=group
        )

    await rekey_until(repartition(), rekeyed, 30)
    await publish_clicks(topic, 30, 10)
    again = repartition()
    await rekey_until(again, rekeyed, 40)
    # A graceful stop committed all it wrote: the second run wrote only the new ones.
    assert again.written == 10
    assert sorted(json.loads(r.value)["n"] for r in await rekeyed.stored(100)) == list(range(40))


async def test_an_aborted_repartition_loses_nothing(topic: Topic, rekeyed: Topic) -> None:
    await publish_clicks(topic, 0, 200)
    group = f"rekey-{uuid.uuid4().hex[:8]}"

    def repartition() -> Repartition:
        return kafka_repartition(
            topic.bootstrap, topic.name, rekeyed.name, lambda c: c["user"], group_id=group, batch=7
        )

    first = repartition()
    async with anyio.create_task_group() as tg:
        tg.start_soon(first.run)
        await wait_until(lambda: first.written >= 20)
        tg.cancel_scope.cancel()  # abort: what was written and not committed comes again
    await rekey_until(repartition(), rekeyed, 200)
    numbers = {json.loads(r.value)["n"] for r in await rekeyed.stored(1000)}
    assert numbers == set(range(200))  # at-least-once: some may be there twice


async def test_repartition_re_keys_any_source(rekeyed: Topic) -> None:
    async def clicks() -> AsyncIterator[Message[Any]]:
        for n in range(10):
            yield Message({"user": USERS[n % 3], "n": n}, timestamp=1_000.0 + n)

    @contextlib.asynccontextmanager
    async def source() -> AsyncIterator[AsyncIterator[Message[Any]]]:
        yield clicks()

    repartition = kafka_repartition(rekeyed.bootstrap, source(), rekeyed.name, lambda c: c["user"])
    await repartition.run()  # the source ends: so does the re-keying
    stored = await rekeyed.stored(10)
    assert sorted(json.loads(r.value)["n"] for r in stored) == list(range(10))
    assert {r.timestamp_ms for r in stored} == {1_000_000 + n * 1000 for n in range(10)}


@pytest.mark.parametrize(
    ("arguments", "options", "error", "match"),
    [
        (("t", "u", "not a function"), {}, TypeError, "key must be a function"),
        ((3, "u", str), {}, TypeError, "source must be a topic's name"),
        (("t", "", str), {}, ValueError, "to_topic"),
        (("t", "u", str), {"batch": 0}, ValueError, "batch"),
    ],
)
def test_repartition_arguments_are_checked(
    arguments: tuple[Any, ...], options: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        kafka_repartition("127.0.0.1:9", *arguments, **options)


async def test_a_broker_lost_fails_the_batch_as_unavailable_and_a_new_one_is_used(
    anyio_backend: str,
) -> None:
    from tests.connectors.kafka_broker import TansuBroker

    if os.environ.get("RXFLOW_KAFKA_BOOTSTRAP"):
        pytest.skip("stops and starts a broker of its own (tansu)")
    broker = TansuBroker().start()
    try:
        async with kafka_sink(broker.bootstrap, "lost", request_timeout_ms=1500) as sink:
            await sink.send_batch([b"before"])
            broker.stop()
            with pytest.raises(ServiceUnavailableError, match=broker.bootstrap) as raised:
                await sink.send_batch([b"a", b"b"])
            assert "did not confirm any of 2 records" in str(raised.value)
            broker = TansuBroker(broker.port).start()  # back, on the same address
            await wait_until(lambda: _sends(sink, b"after"))
    finally:
        broker.stop()


async def _sends(sink: KafkaSink, value: bytes) -> bool:
    try:
        await sink.send_batch([value])
    except ServiceUnavailableError:
        return False
    return True
