"""NATS JetStream connector against raw nats-py, on a local server.

``consume_ack``: messages per second read through a durable pull consumer and acknowledged
one by one, through ``open_pipe(jetstream_source(...), ops.map(...))``, against the loop one
writes with nats-py (``sub.fetch(BATCH)``, then ``msg.ack()`` per message). Both fetch
``BATCH`` messages at a time and decode each as JSON; each run reads the same stream with a
fresh durable consumer, created (and the connection opened) before the clock starts.

``publish``: messages per second published with ``jetstream_sink(...).send_batch`` against
``asyncio.gather`` of nats-py's ``js.publish`` over the same batches, each waiting for every
``PubAck``.

Under trio, rxflow hosts nats-py on an asyncio loop in a worker thread; the raw baseline
always runs on asyncio (nats-py runs nowhere else), so the trio rows show the hosting cost.
Needs NATS with JetStream at ``RXFLOW_NATS_URL`` (default ``nats://127.0.0.1:4222``).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

import anyio
import nats
from reactivex import operators as ops

from benchmarks._connectors import PAYLOAD, seconds_to_ack, seconds_to_send, value_of
from benchmarks._measure import BACKENDS, row
from rxflow import open_pipe
from rxflow.connectors.nats import jetstream_sink, jetstream_source

URL = os.environ.get("RXFLOW_NATS_URL", "nats://127.0.0.1:4222")
BATCH = 100


async def _admin(stream: str, create: bool) -> None:
    client = await nats.connect(URL)
    try:
        js = client.jetstream()
        if create:
            await js.add_stream(name=stream, subjects=[f"{stream}.>"])
        else:
            await js.delete_stream(stream)
    finally:
        await client.close()


async def _fill(stream: str, count: int) -> None:
    async with jetstream_sink(URL, f"{stream}.readings", stream=stream) as sink:
        for first in range(0, count, 1000):
            await sink.send_batch([PAYLOAD] * min(1000, count - first))


async def consume_rxflow(stream: str, count: int) -> float:
    """Seconds to read and ack ``count`` messages through a pipe."""
    durable = f"bench_{uuid.uuid4().hex[:8]}"
    async with (
        jetstream_source(URL, stream, f"{stream}.>", durable, codec="json", batch=BATCH) as src,
        open_pipe(src, ops.map(value_of)) as pipe,
    ):
        return await seconds_to_ack(pipe, count)


async def consume_raw(stream: str, count: int) -> float:
    """Seconds for the same with nats-py by hand (asyncio only)."""
    client = await nats.connect(URL)
    try:
        js = client.jetstream()
        sub = await js.pull_subscribe(
            f"{stream}.>", durable=f"bench_{uuid.uuid4().hex[:8]}", stream=stream
        )
        started = time.perf_counter()
        seen = 0
        total = 0.0
        while seen < count:
            for msg in await sub.fetch(BATCH, timeout=5):
                total += json.loads(msg.data)["value"]
                await msg.ack()
                seen += 1
        return time.perf_counter() - started
    finally:
        await client.close()


def best_rates(count: int, runs: dict[str, Callable[[], float]], repeats: int) -> dict[str, float]:
    """Messages per second of each run's fastest repeat. The runs take turns, so that a
    machine busy for a while slows them all, not one."""
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(repeats):
        for name, run in runs.items():
            best[name] = min(best[name], run())
    return {name: count / seconds for name, seconds in best.items()}


def compare(
    name: str,
    baseline: str,
    count: int,
    repeats: int,
    raw: Callable[[], float],
    rxflow: Callable[[str], float],
) -> Iterator[dict[str, Any]]:
    """One row per backend: ``rxflow(backend)`` against ``raw()`` (asyncio), in seconds."""
    runs: dict[str, Callable[[], float]] = {"raw": raw}
    runs.update({backend: partial(rxflow, backend) for backend in BACKENDS})
    rates = best_rates(count, runs, repeats)
    for backend in BACKENDS:
        yield row(name, backend, count, rates[backend], baseline, rates["raw"])


@contextmanager
def scratch_stream() -> Iterator[str]:
    """A new stream capturing ``<name>.>``, deleted afterwards."""
    stream = f"bench_{uuid.uuid4().hex[:8]}"
    asyncio.run(_admin(stream, create=True))
    try:
        yield stream
    finally:
        asyncio.run(_admin(stream, create=False))


def sizes(quick: bool) -> tuple[int, int]:
    """Messages per run and repeats."""
    return (3_000, 2) if quick else (50_000, 3)


def consume_ack(quick: bool) -> Iterator[dict[str, Any]]:
    count, repeats = sizes(quick)
    with scratch_stream() as stream:
        anyio.run(_fill, stream, count)
        yield from compare(
            "nats_jetstream_consume_ack",
            "raw_nats_py_fetch_ack",
            count,
            repeats,
            lambda: asyncio.run(consume_raw(stream, count)),
            lambda backend: anyio.run(consume_rxflow, stream, count, backend=backend),
        )


async def publish_rxflow(stream: str, batches: list[list[dict[str, Any]]]) -> float:
    async with jetstream_sink(URL, f"{stream}.readings", stream=stream) as sink:
        return await seconds_to_send(sink, batches)


async def publish_raw(stream: str, batches: list[list[dict[str, Any]]]) -> float:
    client = await nats.connect(URL)
    try:
        js = client.jetstream()
        subject = f"{stream}.readings"
        started = time.perf_counter()
        for batch in batches:
            payloads = [json.dumps(item).encode() for item in batch]
            await asyncio.gather(*(js.publish(subject, p, stream=stream) for p in payloads))
        return time.perf_counter() - started
    finally:
        await client.close()


def publish(quick: bool) -> Iterator[dict[str, Any]]:
    count, repeats = sizes(quick)
    batches = [[PAYLOAD] * BATCH for _ in range(count // BATCH)]
    with scratch_stream() as stream:
        yield from compare(
            "nats_jetstream_publish",
            "raw_nats_py_gather",
            count,
            repeats,
            lambda: asyncio.run(publish_raw(stream, batches)),
            lambda backend: anyio.run(publish_rxflow, stream, batches, backend=backend),
        )


CASES: dict[str, Callable[[bool], Iterable[dict[str, Any]]]] = {
    "nats_consume_ack": consume_ack,
    "nats_publish": publish,
}

if __name__ == "__main__":
    import sys

    quick = "--full" not in sys.argv
    for case in CASES.values():
        for result in case(quick):
            print(json.dumps(result))
