"""The core bridge: throughput against a hand-written pump, and memory under a slow consumer.

``throughput``: ``open_pipe(numbers, ops.map(f))`` against the pump one would write by hand,
a task that applies ``f`` and sends each item on an anyio memory object stream of the same
size as the pipe's buffer.

``memory``: a fast source and a consumer that yields to the loop twice per item. Peak RSS
growth and the largest count of items admitted from the source but not yet received, which
must stay within ``max_buffer_size``, against the same consumer reading the source directly
(no bridge: the floor). Each run is its own process, so each peak RSS is its own.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import AsyncIterator, Iterator
from functools import partial
from typing import Any

import anyio
import anyio.lowlevel
from reactivex import operators as ops

from benchmarks._measure import BACKENDS, best_rate, in_subprocess, peak_rss_mb, row
from rxflow import open_pipe

BUFFER = 128


def double(n: int) -> int:
    return n * 2


async def numbers(count: int) -> AsyncIterator[int]:
    for n in range(count):
        yield n


async def through_rxflow(count: int) -> int:
    total = 0
    async with open_pipe(numbers(count), ops.map(double), max_buffer_size=BUFFER) as pipe:
        async for n in pipe:
            total += n
    return total


async def through_raw_stream(count: int) -> int:
    send, receive = anyio.create_memory_object_stream[int](BUFFER)

    async def pump() -> None:
        async with send:
            async for n in numbers(count):
                await send.send(double(n))

    total = 0
    async with anyio.create_task_group() as tg, receive:
        tg.start_soon(pump)
        async for n in receive:
            total += n
    return total


def throughput(quick: bool) -> Iterator[dict[str, Any]]:
    count = 100_000 if quick else 1_000_000
    expected = count * (count - 1)
    for backend in BACKENDS:
        for run in (through_rxflow, through_raw_stream):  # warm up, and check the output
            result = anyio.run(run, count, backend=backend)
            if result != expected:
                raise AssertionError(f"{run.__name__} on {backend}: {result} != {expected}")
        repeats = 2 if quick else 3
        rxflow = best_rate(
            count, partial(anyio.run, through_rxflow, count, backend=backend), repeats
        )
        raw = best_rate(
            count, partial(anyio.run, through_raw_stream, count, backend=backend), repeats
        )
        yield row("pipe_map_throughput", backend, count, rxflow, "raw_memory_stream_pump", raw)


# -- memory: one process per run ---------------------------------------------------------


class CountingSource:
    """``range(count)`` as an async iterable that counts what it handed out."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.produced = 0

    async def __aiter__(self) -> AsyncIterator[int]:
        for n in range(self.count):
            self.produced += 1
            yield n


async def slow_consumer(items: AsyncIterator[int] | Any, source: CountingSource) -> int:
    received = most_in_flight = 0
    async for _ in items:
        received += 1
        most_in_flight = max(most_in_flight, source.produced - received)
        await anyio.lowlevel.checkpoint()
        await anyio.lowlevel.checkpoint()
    return most_in_flight


async def memory_run(how: str, count: int) -> dict[str, Any]:
    source = CountingSource(count)
    rss_before = peak_rss_mb()
    started = time.perf_counter()
    if how == "rxflow":
        async with open_pipe(source, ops.map(double), max_buffer_size=BUFFER) as pipe:
            most_in_flight = await slow_consumer(pipe, source)
    else:
        most_in_flight = await slow_consumer(aiter(source), source)
    elapsed = time.perf_counter() - started
    return {
        "per_s": count / elapsed,
        "rss_growth_mb": round(peak_rss_mb() - rss_before, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "most_in_flight": most_in_flight,
    }


def memory(quick: bool) -> Iterator[dict[str, Any]]:
    count = 500_000 if quick else 5_000_000
    for backend in BACKENDS:
        runs = {
            how: in_subprocess("benchmarks.core", "memory", how, backend, str(count))
            for how in ("rxflow", "direct")
        }
        rxflow, direct = runs["rxflow"], runs["direct"]
        yield row(
            "slow_consumer_memory",
            backend,
            count,
            rxflow["per_s"],
            "same_consumer_reading_the_source_directly",
            direct["per_s"],
            peak_rss_mb=rxflow["peak_rss_mb"],
            rss_growth_mb=rxflow["rss_growth_mb"],
            baseline_peak_rss_mb=direct["peak_rss_mb"],
            baseline_rss_growth_mb=direct["rss_growth_mb"],
            most_admitted_not_received=rxflow["most_in_flight"],
            bound=BUFFER,
            within_bound=rxflow["most_in_flight"] <= BUFFER,
        )


CASES = {"throughput": throughput, "memory": memory}

if __name__ == "__main__":
    # python -m benchmarks.core memory rxflow|direct BACKEND COUNT  (one run, one process)
    _, _, how, backend, count = sys.argv
    print(json.dumps(anyio.run(memory_run, how, int(count), backend=backend)))
