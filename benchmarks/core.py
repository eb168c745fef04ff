"""The core bridge: throughput against a hand-written pump, the operator chain against its
limits and peers, and memory under a slow consumer.

``throughput``: ``open_pipe(numbers, ops.map(f))`` against the pump one would write by hand,
a task that applies ``f`` and sends each item on an anyio memory object stream of the same
size as the pipe's buffer.

``chain``: map -> filter -> scan over N ints from an async generator, through
``open_pipe``, against what a user would write instead (synchronous reactivex over a
``range``, its best case; an async-generator chain; a hand-written anyio pump; aiostream;
streamz) and against the limits in the same run: the three steps fused into one loop body
under an ``async for`` over the async generator (no operators), and that loop fed runs of
256 items (one await per run). Every output is checked equal to reactivex's.

``chain_batches``: the chain's pipe read with ``pipe.batches()`` (the consumer still visits
every item), from the same async generator and from runs of 256 (a run source), against
the same peers and limits, the fused loop fed runs of 256 above all; and the runs read with
``async for``, to tell what reading in batches adds.

``memory``: a fast source and a consumer that yields to the loop twice per item. Peak RSS
growth and the largest count of items admitted from the source but not yet received, which
must stay within ``max_buffer_size``, against the same consumer reading the source directly
(no bridge: the floor). Each run is its own process, so each peak RSS is its own.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from functools import partial
from typing import Any

import anyio
import anyio.lowlevel
import reactivex
from reactivex import operators as ops

from benchmarks._measure import BACKENDS, best_rate, in_subprocess, measured, peak_rss_mb, row
from rxflow import open_pipe

BUFFER = 128

# The size of the runs the fused-runs limit is fed (issue 15 names 256).
RUN = 256


def double(n: int) -> int:
    return n * 2


def triple(n: int) -> int:
    return n * 3


def even(n: int) -> bool:
    return n % 2 == 0


def add(total: int, n: int) -> int:
    return total + n


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


# -- the operator chain, against the tools a user would pick instead ---------------------------


async def chain_rxflow(count: int) -> int:
    last = 0
    async with open_pipe(numbers(count), ops.map(triple), ops.filter(even), ops.scan(add, 0)) as p:
        async for last in p:
            pass
    return last


def chain_reactivex(count: int) -> int:
    out: list[int] = []
    reactivex.from_iterable(range(count)).pipe(
        ops.map(triple), ops.filter(even), ops.scan(add, 0), ops.last()
    ).subscribe(out.append)
    return out[0]


async def chain_generators(count: int) -> int:
    async def mapped(source: AsyncIterator[int]) -> AsyncIterator[int]:
        async for n in source:
            yield triple(n)

    async def filtered(source: AsyncIterator[int]) -> AsyncIterator[int]:
        async for n in source:
            if even(n):
                yield n

    async def scanned(source: AsyncIterator[int]) -> AsyncIterator[int]:
        total = 0
        async for n in source:
            total = add(total, n)
            yield total

    last = 0
    async for last in scanned(filtered(mapped(numbers(count)))):
        pass
    return last


async def chain_raw_stream(count: int) -> int:
    send, receive = anyio.create_memory_object_stream[int](128)

    async def pump() -> None:
        async with send:
            total = 0
            async for n in numbers(count):
                n = triple(n)
                if even(n):
                    total = add(total, n)
                    await send.send(total)

    last = 0
    async with anyio.create_task_group() as tg, receive:
        tg.start_soon(pump)
        async for last in receive:
            pass
    return last


async def chain_aiostream(count: int) -> int:
    from aiostream import pipe, stream

    last = 0
    source = stream.iterate(numbers(count)) | pipe.map(triple) | pipe.filter(even)
    async with (source | pipe.accumulate(add, 0)).stream() as items:
        async for last in items:
            pass
    return last


def chain_streamz(count: int) -> int:
    from streamz import Stream

    source = Stream()
    out: list[int] = []
    source.map(triple).filter(even).accumulate(add, start=0).sink(out.append)
    for n in range(count):
        source.emit(n)
    return out[-1]


def chain(quick: bool) -> Iterator[dict[str, Any]]:
    count = 100_000 if quick else 1_000_000
    repeats = 2 if quick else 3
    expected = chain_reactivex(count)
    for backend in BACKENDS:
        runner = partial(anyio.run, backend=backend)
        rxflow = measured(count, lambda: runner(chain_rxflow, count), expected, repeats)
        peers: dict[str, Callable[[], Any]] = {
            "reactivex_sync": lambda: chain_reactivex(count),
            "async_generators": lambda: runner(chain_generators, count),
            "raw_memory_stream_pump": lambda: runner(chain_raw_stream, count),
            "streamz_sync": lambda: chain_streamz(count),
            "fused_loop_async_for": lambda: runner(chain_fused, count),
            f"fused_loop_runs_of_{RUN}": lambda: runner(chain_fused_runs, count),
        }
        if backend == "asyncio":  # aiostream runs on asyncio only
            peers["aiostream"] = lambda: anyio.run(chain_aiostream, count)
        for name, run in peers.items():
            try:
                rate = measured(count, run, expected, repeats)
            except ImportError as missing:
                yield {"name": "chain_map_filter_scan", "backend": backend, "baseline": name,
                       "skipped": f"not installed: {missing.name}"}  # fmt: skip
                continue
            yield row("chain_map_filter_scan", backend, count, rxflow, name, rate)


# -- the chain read in batches: pipe.batches() --------------------------------------------


class RunsOf:
    """``runs_of(count, RUN)`` as a run source (what a broker source hands over): one
    await per run, for open_pipe as for the fused-runs limit."""

    def __init__(self, count: int) -> None:
        self._runs = runs_of(count, RUN)

    async def next_run(self) -> list[int]:
        return await anext(self._runs)  # StopAsyncIteration at the end, as next_run says

    async def aclose(self) -> None:
        await self._runs.aclose()


async def chain_rxflow_batches(count: int, runs: bool = False) -> int:
    """The chain case's pipe read with ``pipe.batches()``; the consumer still visits every
    item, as the ``async for`` one does."""
    last = 0
    source = RunsOf(count) if runs else numbers(count)
    async with open_pipe(source, ops.map(triple), ops.filter(even), ops.scan(add, 0)) as p:
        async for batch in p.batches():
            for last in batch:
                pass
    return last


async def chain_rxflow_runs(count: int) -> int:
    """The chain over runs of ``RUN``, read with ``async for``."""
    last = 0
    async with open_pipe(RunsOf(count), ops.map(triple), ops.filter(even), ops.scan(add, 0)) as p:
        async for last in p:
            pass
    return last


def chain_batches(quick: bool) -> Iterator[dict[str, Any]]:
    """The chain case's pipe read in batches, from the same async generator and from runs
    of ``RUN``, against the limits and the peers measured in the same run."""
    count = 100_000 if quick else 1_000_000
    repeats = 2 if quick else 3
    expected = chain_reactivex(count)
    for backend in BACKENDS:
        runner = partial(anyio.run, backend=backend)
        rates = {
            name: measured(count, run, expected, repeats)
            for name, run in {
                "batches": lambda: runner(chain_rxflow_batches, count),
                "runs_batches": lambda: runner(chain_rxflow_batches, count, True),
                "runs_async_for": lambda: runner(chain_rxflow_runs, count),
                "reactivex_sync": lambda: chain_reactivex(count),
                "async_generators": lambda: runner(chain_generators, count),
                "fused_loop_async_for": lambda: runner(chain_fused, count),
                f"fused_loop_runs_of_{RUN}": lambda: runner(chain_fused_runs, count),
            }.items()
        }
        runs_limit = f"fused_loop_runs_of_{RUN}"
        for case, mine, baselines in (
            ("chain_map_filter_scan_read_in_batches", "batches",
             ("reactivex_sync", "async_generators", "fused_loop_async_for")),
            (f"chain_map_filter_scan_runs_of_{RUN}_read_in_batches", "runs_batches",
             (runs_limit, "reactivex_sync", "async_generators")),
            (f"chain_map_filter_scan_runs_of_{RUN}_async_for", "runs_async_for",
             (runs_limit, "reactivex_sync")),
        ):  # fmt: skip
            for baseline in baselines:
                yield row(case, backend, count, rates[mine], baseline, rates[baseline])


# -- the limits: the same three steps without operators ------------------------------------


async def chain_fused(count: int) -> int:
    """map, filter and scan fused into one loop body under an ``async for`` over the same
    async generator: an async chain with no per-item machinery but the generator's."""
    total = 0
    async for n in numbers(count):
        n = triple(n)
        if even(n):
            total = add(total, n)
    return total


async def runs_of(count: int, size: int) -> AsyncIterator[list[int]]:
    """``range(count)`` handed over as lists of ``size`` items, as a fetched batch is."""
    for start in range(0, count, size):
        yield list(range(start, min(start + size, count)))


async def chain_fused_runs(count: int) -> int:
    """The fused loop body fed runs of ``RUN`` items: one await per run, not per item."""
    total = 0
    async for run in runs_of(count, RUN):
        for n in run:
            n = triple(n)
            if even(n):
                total = add(total, n)
    return total


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


CASES = {
    "throughput": throughput,
    "chain": chain,
    "chain_batches": chain_batches,
    "memory": memory,
}

if __name__ == "__main__":
    # python -m benchmarks.core memory rxflow|direct BACKEND COUNT  (one run, one process)
    _, _, how, backend, count = sys.argv
    print(json.dumps(anyio.run(memory_run, how, int(count), backend=backend)))
