"""rxflow against the tools a user would pick instead, on the same work, outputs checked equal.

The operator chain against them is in :mod:`benchmarks.core` (``chain``).

* ``windows``: event-time tumbling (1 s) and sliding (5 s every 1 s) windows over N
  timestamped events, counted per window.
* ``sessions``: event-time sessions (gap 30 s) over 10,000 keys, against bytewax's
  session windower when bytewax is installed.
* ``memory``: 5 M items, a fast producer and a slow consumer, peak RSS: rxflow, reactivex
  with ``observe_on`` (its queue is unbounded), aiostream.
* ``latency``: one item at a time, time from the source to the consumer, p50 and p99.

The tools are optional (``pip install -e '.[bench]'``); a missing one is reported in a row
with ``"skipped"`` instead of a figure.
"""

from __future__ import annotations

import heapq
import json
import statistics
import sys
import threading
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import anyio.lowlevel
import reactivex
from reactivex import operators as ops

from benchmarks._measure import BACKENDS, in_subprocess, measured, peak_rss_mb, row
from rxflow import open_pipe, session, sliding, tumbling


def triple(n: int) -> int:
    return n * 3


async def numbers(count: int) -> AsyncIterator[int]:
    for n in range(count):
        yield n


# -- windows ----------------------------------------------------------------------------------

Event = tuple[int, float]  # key, event time in seconds


def events(count: int, keys: int = 100, per_second: int = 1000) -> list[Event]:
    return [((n * 7919) % keys, n / per_second) for n in range(count)]


def event_time(event: Event) -> float:
    return event[1]


async def windows_rxflow(kind: str, data: list[Event]) -> list[tuple[float, int]]:
    operator = (
        tumbling(1.0, timestamp=event_time)
        if kind == "tumbling"
        else sliding(5.0, 1.0, timestamp=event_time)
    )
    out: list[tuple[float, int]] = []
    async with open_pipe(data, operator) as pipe:
        async for window in pipe:
            out.append((window.start, len(window)))
    return out


def windows_handwritten(kind: str, data: list[Event]) -> list[tuple[float, int]]:
    span, every = (1.0, 1.0) if kind == "tumbling" else (5.0, 1.0)
    windows: dict[float, list[Event]] = defaultdict(list)
    closing: list[float] = []
    out: list[tuple[float, int]] = []
    for event in data:
        t = event[1]
        start = t // every * every
        while start > t - span:
            if start not in windows:
                heapq.heappush(closing, start)
            windows[start].append(event)
            start -= every
        while closing and closing[0] + span <= t:  # in-order events: the watermark is t
            done = heapq.heappop(closing)
            out.append((done, len(windows.pop(done))))
    while closing:
        done = heapq.heappop(closing)
        out.append((done, len(windows.pop(done))))
    return out


async def windows_aiostream(kind: str, data: list[Event]) -> list[tuple[float, int]]:
    """The same event-time windows as an aiostream operator (aiostream has count-based
    chunks but no time windows, so the windowing is written as an aiostream operator)."""
    from aiostream import operator, stream

    @operator(pipable=True)  # type: ignore[untyped-decorator]
    async def windowed(source: AsyncIterator[Event]) -> AsyncIterator[tuple[float, int]]:
        span, every = (1.0, 1.0) if kind == "tumbling" else (5.0, 1.0)
        windows: dict[float, list[Event]] = defaultdict(list)
        async with stream.iterate(source).stream() as items:
            async for event in items:
                t = event[1]
                start = t // every * every
                while start > t - span:
                    windows[start].append(event)
                    start -= every
                for done in sorted(s for s in windows if s + span <= t):
                    yield done, len(windows.pop(done))
        for done in sorted(windows):
            yield done, len(windows.pop(done))

    async def source() -> AsyncIterator[Event]:
        for event in data:
            yield event

    out = []
    async with (stream.iterate(source()) | windowed.pipe()).stream() as windows:
        async for window in windows:
            out.append(window)
    return out


def windows_case(quick: bool) -> Iterator[dict[str, Any]]:
    count = 100_000 if quick else 1_000_000
    data = events(count)
    for kind in ("tumbling", "sliding"):
        expected = windows_handwritten(kind, data)
        repeats = 1 if quick else 2
        rxflow = measured(count, lambda: anyio.run(windows_rxflow, kind, data), expected, repeats)
        for name, run in {
            "handwritten_dict": lambda: windows_handwritten(kind, data),
            "aiostream_operator": lambda: anyio.run(windows_aiostream, kind, data),
        }.items():
            yield row(f"event_time_{kind}", "asyncio", count, rxflow, name,
                      measured(count, run, expected, repeats))  # fmt: skip


# -- sessions -------------------------------------------------------------------------------


async def sessions_rxflow(data: list[Event]) -> list[tuple[int, float, int]]:
    out = []
    async with open_pipe(data, session(lambda e: e[0], 30.0, timestamp=event_time)) as pipe:
        async for window in pipe:
            out.append((window.key, window.start, len(window)))
    return sorted(out)


def sessions_bytewax(data: list[Event]) -> list[tuple[int, float, int]]:
    import bytewax.operators as op
    import bytewax.operators.windowing as win
    from bytewax.dataflow import Dataflow
    from bytewax.testing import TestingSink, TestingSource, run_main

    epoch = datetime(2026, 1, 1, tzinfo=UTC)
    flow = Dataflow("sessions")
    stream = op.input("in", flow, TestingSource(data, batch_size=10_000))
    keyed = op.key_on("key", stream, lambda e: str(e[0]))
    clock = win.EventClock(
        lambda e: epoch + timedelta(seconds=e[1]), wait_for_system_duration=timedelta(0)
    )
    windows = win.collect_window(
        "sessions", keyed, clock, win.SessionWindower(timedelta(seconds=30))
    )
    out: list[Any] = []
    op.output("out", windows.down, TestingSink(out))
    run_main(flow)
    return sorted((int(key), items[0][1], len(items)) for key, (_, items) in out)


def sessions_handwritten(data: list[Event]) -> list[tuple[int, float, int]]:
    open_sessions: dict[int, list[Any]] = {}
    out = []
    for key, t in data:
        current = open_sessions.get(key)
        if current is not None and t >= current[1] + 30.0:
            out.append((key, current[0], current[2]))
            current = None
        if current is None:
            open_sessions[key] = [t, t, 1]
        else:
            current[1] = t
            current[2] += 1
    out.extend((key, first, n) for key, (first, _, n) in open_sessions.items())
    return sorted(out)


def sessions_case(quick: bool) -> Iterator[dict[str, Any]]:
    count = 100_000 if quick else 1_000_000
    data = events(count, keys=10_000, per_second=1000)
    expected = sessions_handwritten(data)
    rxflow = measured(count, lambda: anyio.run(sessions_rxflow, data), expected, 1)
    yield row("event_time_sessions_10000_keys", "asyncio", count, rxflow, "handwritten_dict",
              measured(count, lambda: sessions_handwritten(data), expected, 1))  # fmt: skip
    try:
        bytewax = measured(count, lambda: sessions_bytewax(data), expected, 1)
    except ImportError:
        yield {"name": "event_time_sessions_10000_keys", "baseline": "bytewax",
               "skipped": "bytewax is not installed"}  # fmt: skip
        return
    yield row(
        "event_time_sessions_10000_keys", "bytewax_runtime", count, rxflow, "bytewax", bytewax
    )


# -- memory under a slow consumer ------------------------------------------------------------


async def slow(items: AsyncIterator[int]) -> int:
    received = 0
    async for _ in items:
        received += 1
        await anyio.lowlevel.checkpoint()
        await anyio.lowlevel.checkpoint()
    return received


async def memory_rxflow(count: int) -> int:
    async with open_pipe(numbers(count), ops.map(triple)) as pipe:
        return await slow(pipe)


async def memory_aiostream(count: int) -> int:
    from aiostream import pipe, stream

    async with (stream.iterate(numbers(count)) | pipe.map(triple)).stream() as items:
        return await slow(items)


# reactivex's scheduler queue slows down as it grows: with 5 M items, producing takes it
# about 10 minutes on a 2-core machine and draining much longer. The memory is spent once
# the producer is done, so past this the drain is cut short, and the row says how many
# items the consumer got by then.
OBSERVE_ON_DRAIN_LIMIT_S = 120.0


def memory_observe_on(count: int) -> int:
    """reactivex's way to put a consumer on its own thread: observe_on, whose queue has
    no bound, so a slow consumer lets the producer fill memory. Returns the items the
    consumer got: all of them, unless the drain ran past ``OBSERVE_ON_DRAIN_LIMIT_S``."""
    from reactivex.scheduler import EventLoopScheduler

    finished = threading.Event()
    received = [0]

    def on_next(_: int) -> None:
        received[0] += 1
        for _ in range(20):  # the slow consumer
            pass

    consumer = EventLoopScheduler()
    reactivex.from_iterable(range(count)).pipe(ops.map(triple), ops.observe_on(consumer)).subscribe(
        on_next, on_completed=finished.set
    )  # returns once the producer has pushed every item: memory is at its peak
    finished.wait(OBSERVE_ON_DRAIN_LIMIT_S)
    consumer.dispose()
    return received[0]


def memory_run(how: str, count: int) -> dict[str, Any]:
    before = peak_rss_mb()
    started = time.perf_counter()
    if how == "observe_on":
        received = memory_observe_on(count)
    else:
        received = anyio.run(memory_rxflow if how == "rxflow" else memory_aiostream, count)
    if received != count and how != "observe_on":
        raise AssertionError(f"{how}: received {received} of {count}")
    return {
        "per_s": received / (time.perf_counter() - started),
        "received": received,
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "rss_growth_mb": round(peak_rss_mb() - before, 1),
    }


def memory_case(quick: bool) -> Iterator[dict[str, Any]]:
    count = 500_000 if quick else 5_000_000
    rxflow = in_subprocess("benchmarks.peers", "memory", "rxflow", str(count))
    for name in ("observe_on", "aiostream"):
        try:
            peer = in_subprocess("benchmarks.peers", "memory", name, str(count))
        except Exception as error:  # aiostream missing: the child fails to import it
            yield {"name": "slow_consumer_memory", "baseline": name, "skipped": repr(error)}
            continue
        yield row(
            "slow_consumer_memory", "asyncio", count, rxflow["per_s"], f"reactivex_{name}"
            if name == "observe_on" else name, peer["per_s"],
            peak_rss_mb=rxflow["peak_rss_mb"], rss_growth_mb=rxflow["rss_growth_mb"],
            baseline_peak_rss_mb=peer["peak_rss_mb"],
            baseline_rss_growth_mb=peer["rss_growth_mb"],
            baseline_received=peer["received"],  # < items: its drain was cut short
        )  # fmt: skip


# -- latency at a low rate --------------------------------------------------------------------


async def latency_run(through_rxflow: bool, count: int) -> list[float]:
    """Send one item, wait for the consumer to get it, repeat: source-to-consumer times."""
    send, receive = anyio.create_memory_object_stream[float](1)
    delays: list[float] = []

    async def produce() -> None:
        async with send:
            for _ in range(count):
                await send.send(time.perf_counter())
                await got.wait()
                got.clear()

    class Flag:
        def __init__(self) -> None:
            self.event = anyio.Event()

        async def wait(self) -> None:
            await self.event.wait()

        def set(self) -> None:
            self.event.set()

        def clear(self) -> None:
            self.event = anyio.Event()

    got = Flag()
    async with anyio.create_task_group() as tg:
        tg.start_soon(produce)
        if through_rxflow:
            async with open_pipe(receive, ops.map(lambda stamp: stamp)) as pipe:
                async for stamp in pipe:
                    delays.append(time.perf_counter() - stamp)
                    got.set()
        else:
            out_send, out_receive = anyio.create_memory_object_stream[float](1)

            async def pump() -> None:
                async with out_send, receive:
                    async for stamp in receive:
                        await out_send.send(stamp)

            tg.start_soon(pump)
            async with out_receive:
                async for stamp in out_receive:
                    delays.append(time.perf_counter() - stamp)
                    got.set()
    return delays


def latency_case(quick: bool) -> Iterator[dict[str, Any]]:
    count = 2_000 if quick else 20_000
    for backend in BACKENDS:
        rxflow = anyio.run(latency_run, True, count, backend=backend)
        raw = anyio.run(latency_run, False, count, backend=backend)
        p = {name: statistics.quantiles(d, n=100) for name, d in (("rxflow", rxflow), ("raw", raw))}
        yield {
            "name": "latency_one_item_at_a_time",
            "backend": backend,
            "items": count,
            "baseline": "raw_memory_stream_pump",
            "rxflow_p50_us": round(p["rxflow"][49] * 1e6, 1),
            "rxflow_p99_us": round(p["rxflow"][98] * 1e6, 1),
            "baseline_p50_us": round(p["raw"][49] * 1e6, 1),
            "baseline_p99_us": round(p["raw"][98] * 1e6, 1),
            "ratio_p50": round(p["raw"][49] / p["rxflow"][49], 3),
        }


CASES = {
    "windows_vs_peers": windows_case,
    "sessions_vs_peers": sessions_case,
    "memory_vs_peers": memory_case,
    "latency": latency_case,
}

if __name__ == "__main__":
    # python -m benchmarks.peers memory rxflow|observe_on|aiostream COUNT
    _, _, how, count = sys.argv
    print(json.dumps(memory_run(how, int(count))))
