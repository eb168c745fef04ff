"""Redis Streams connector against raw redis-py, on a local server.

``consume_ack``: entries per second read from a stream as a consumer group and acknowledged
one by one, through ``open_pipe(redis_stream_source(...), ops.map(...))``, against the loop
one writes with redis-py (``XREADGROUP COUNT`` then one ``XACK`` per entry). Both read
``BATCH`` entries per ``XREADGROUP``; each run reads the same stream with a fresh group.

``consume_ack_many``: the same, acknowledging ``BATCH`` messages at a time with
``source.ack_many`` against one ``XACK`` of every id of a read.

``sink_xadd``: entries per second appended with ``redis_stream_sink(...).send_batch`` against
a redis-py pipeline of ``XADD`` (``transaction=False``), ``BATCH`` entries per round trip.

Under trio, rxflow hosts redis-py on an asyncio loop in a worker thread; the raw baseline
always runs on asyncio (redis-py's async client runs nowhere else), so the trio rows show
the hosting cost. Needs Redis at ``RXFLOW_REDIS_URL`` (default ``redis://127.0.0.1:6379``).

Figures (full size, ``--repeat 3`` medians, 2 shared cores), ``consume_ack`` before and
after hosted calls stopped blocking the trio thread until the asyncio loop took them (one
wake-up of each thread per call, not two round trips): trio 4.8k -> 5.2k entries/s (0.35x
-> 0.44x raw redis-py at 11-13k/s), asyncio 0.83x -> 0.89x (noise: it hosts nothing). A
hosted ``XACK`` costs ~130-170 us against ~70 us on asyncio (was ~190-220 us): each ack
still waits for two thread wake-ups, which on this machine cost more than Redis's answer.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from typing import Any

import anyio
import redis
import redis.asyncio as aioredis
from reactivex import operators as ops

from benchmarks._measure import BACKENDS, best_rate, row
from rxflow import open_pipe
from rxflow.connectors import Message
from rxflow.connectors.redis import redis_stream_sink, redis_stream_source

URL = os.environ.get("RXFLOW_REDIS_URL", "redis://127.0.0.1:6379")
BATCH = 100
PAYLOAD = b'{"sensor": "s-1", "value": 21.5}'


def fill(stream: str, count: int) -> None:
    client = redis.Redis.from_url(URL)
    with client.pipeline(transaction=False) as pipe:
        for _ in range(count):
            pipe.xadd(stream, {"data": PAYLOAD})
        pipe.execute()
    client.close()


def drop(stream: str) -> None:
    client = redis.Redis.from_url(URL)
    client.delete(stream)
    client.close()


def new_group(stream: str) -> str:
    group = f"g-{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(URL)
    client.xgroup_create(stream, group, "0")
    client.close()
    return group


# -- consume and ack ----------------------------------------------------------------------


def size(message: Message[bytes]) -> Message[int]:
    return message.with_value(len(message.value))


async def consume_rxflow(stream: str, group: str, count: int, ack_every: int) -> int:
    total = 0
    source = redis_stream_source(URL, stream, group, "bench", batch=BATCH, create_group=False)
    async with source as entries, open_pipe(entries, ops.map(size)) as sizes:
        done: list[Message[int]] = []
        async for message in sizes:
            total += message.value
            count -= 1
            if ack_every == 1:
                await message.ack()
            else:
                done.append(message)
                if len(done) == ack_every or count == 0:
                    await entries.ack_many(done)
                    done.clear()
            if count == 0:
                break
    return total


async def consume_raw(stream: str, group: str, count: int, ack_every: int) -> int:
    client = aioredis.from_url(URL)
    total = 0
    try:
        while count > 0:
            reply: Any = await client.xreadgroup(group, "bench", {stream: ">"}, BATCH, 2000)
            entries = reply[0][1]
            for entry_id, fields in entries:
                total += len(fields[b"data"])
                if ack_every == 1:
                    await client.xack(stream, group, entry_id)
                count -= 1
            if ack_every != 1:  # BATCH entries per read: one XACK per read
                await client.xack(stream, group, *(entry_id for entry_id, _ in entries))
    finally:
        await client.aclose()
    return total


def run_rxflow(stream: str, count: int, ack_every: int, backend: str) -> int:
    group = new_group(stream)
    return anyio.run(consume_rxflow, stream, group, count, ack_every, backend=backend)


def run_raw(stream: str, count: int, ack_every: int) -> int:
    return asyncio.run(consume_raw(stream, new_group(stream), count, ack_every))


def consume(quick: bool, ack_every: int) -> Iterator[dict[str, Any]]:
    count = (1_000 if quick else 20_000) if ack_every == 1 else (5_000 if quick else 100_000)
    stream = f"rxflow-bench-{uuid.uuid4().hex[:8]}"
    fill(stream, count)
    try:
        runs = [partial(run_rxflow, stream, count, ack_every, backend) for backend in BACKENDS]
        raw_run = partial(run_raw, stream, count, ack_every)
        expected = count * len(PAYLOAD)
        for run in (*runs, raw_run):  # warm up, and check the output
            if (result := run()) != expected:
                raise AssertionError(
                    f"redis consume, ack every {ack_every}: {result} != {expected}"
                )
        repeats = 2 if quick else 3
        raw = best_rate(count, raw_run, repeats)
        name, baseline = "redis_stream_consume_ack", "raw_redis_py_xreadgroup_xack"
        if ack_every != 1:
            name, baseline = f"{name}_many", f"{baseline}_many"
        for backend, run in zip(BACKENDS, runs, strict=True):
            yield row(name, backend, count, best_rate(count, run, repeats), baseline, raw)
    finally:
        drop(stream)


def consume_ack(quick: bool) -> Iterator[dict[str, Any]]:
    """One XACK per message, as a Flow acknowledges them."""
    return consume(quick, ack_every=1)


def consume_ack_many(quick: bool) -> Iterator[dict[str, Any]]:
    """One XACK per ``BATCH`` messages (``source.ack_many``)."""
    return consume(quick, ack_every=BATCH)


# -- sink ---------------------------------------------------------------------------------


async def sink_rxflow(stream: str, batches: list[list[bytes]]) -> None:
    async with redis_stream_sink(URL, stream, batch_size=BATCH) as sink:
        for batch in batches:
            await sink.send_batch(batch)


async def sink_raw(stream: str, batches: list[list[bytes]]) -> None:
    client = aioredis.from_url(URL)
    try:
        for batch in batches:
            async with client.pipeline(transaction=False) as pipe:
                for payload in batch:
                    pipe.xadd(stream, {"data": payload})
                await pipe.execute()
    finally:
        await client.aclose()


def sink_xadd(quick: bool) -> Iterator[dict[str, Any]]:
    count = 10_000 if quick else 200_000
    batches = [[PAYLOAD] * BATCH for _ in range(count // BATCH)]
    stream = f"rxflow-bench-{uuid.uuid4().hex[:8]}"
    try:
        repeats = 2 if quick else 3
        raw = best_rate(count, lambda: asyncio.run(sink_raw(stream, batches)), repeats)
        for backend in BACKENDS:
            rxflow = best_rate(
                count, partial(anyio.run, sink_rxflow, stream, batches, backend=backend), repeats
            )
            yield row(
                "redis_stream_sink_xadd", backend, count, rxflow, "raw_redis_py_pipeline", raw
            )
    finally:
        drop(stream)


CASES: dict[str, Callable[[bool], Iterable[dict[str, Any]]]] = {
    "redis_consume_ack": consume_ack,
    "redis_consume_ack_many": consume_ack_many,
    "redis_sink_xadd": sink_xadd,
}

if __name__ == "__main__":
    import json
    import sys

    for case in CASES.values():
        for result in case("--quick" in sys.argv):
            print(json.dumps(result), flush=True)
