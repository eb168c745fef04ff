"""Event-time sessions and sliding windows over many keys, against hand-written dict code.

1 million click events (timestamps in order, 100 per event-time second) over 10,000 users:
``session(user, gap=30 s)`` and ``sliding(60 s, every 10 s, key=user)``, each through
``open_pipe``, against a hand-written dict-of-lists doing the same work. Outputs are
checked equal. Each run is its own process (peak RSS is its own); after the stream, one
event far in the future makes every key idle, and the run reports how many items the
windows still hold and how many allocated blocks remain above the start (memory returns).
"""

from __future__ import annotations

import gc
import heapq
import json
import random
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import anyio

from benchmarks._measure import in_subprocess, peak_rss_mb, row
from rxflow import open_pipe, session, sliding

KEYS = 10_000
GAP = 30.0
SPAN, EVERY = 60.0, 10.0

Click = tuple[int, float]  # user, event time


def clicks(count: int) -> list[Click]:
    rng = random.Random(42)
    return [(rng.randrange(KEYS), n / 100) for n in range(count)]


def user(click: Click) -> int:
    return click[0]


def event_time(click: Click) -> float:
    return click[1]


async def rxflow_run(case: str, events: list[Click]) -> tuple[int, int, Any]:
    operator = (
        session(user, GAP, timestamp=event_time)
        if case == "sessions"
        else sliding(SPAN, EVERY, key=user, timestamp=event_time)
    )
    windows = items = 0
    async with open_pipe(events, operator) as pipe:
        async for window in pipe:
            windows += 1
            items += len(window)
    return windows, items, operator


def handwritten_sessions(events: list[Click]) -> tuple[int, int]:
    open_sessions: dict[int, list[Any]] = {}  # user -> [last time, items]
    windows = items = 0
    for click in events:
        key, t = click
        current = open_sessions.get(key)
        if current is not None and t >= current[0] + GAP:
            windows += 1
            items += len(current[1])
            current = None
        if current is None:
            open_sessions[key] = [t, [click]]
        else:
            current[0] = t
            current[1].append(click)
    for _, held in open_sessions.values():
        windows += 1
        items += len(held)
    return windows, items


def handwritten_sliding(events: list[Click]) -> tuple[int, int]:
    open_windows: dict[tuple[int, float], list[Click]] = defaultdict(list)
    closing: list[tuple[float, tuple[int, float]]] = []
    windows = items = 0
    per_window = int(SPAN // EVERY)
    for click in events:
        key, t = click
        last_start = t - t % EVERY
        for k in range(per_window):
            start = last_start - k * EVERY
            bucket = open_windows[(key, start)]
            if not bucket:
                heapq.heappush(closing, (start + SPAN, (key, start)))
            bucket.append(click)
        # In-order input: windows ending at or before t are complete.
        while closing and closing[0][0] <= t:
            _, window = heapq.heappop(closing)
            windows += 1
            items += len(open_windows.pop(window))
    windows += len(open_windows)
    items += sum(map(len, open_windows.values()))
    return windows, items


def measure(case: str, how: str, count: int) -> dict[str, Any]:
    events = clicks(count)
    if how == "rxflow":  # a small run first, so lazy imports do not count as state left
        anyio.run(rxflow_run, case, events[:1000])
    gc.collect()
    blocks_before = sys.getallocatedblocks()
    rss_before = peak_rss_mb()
    started = time.perf_counter()
    if how == "rxflow":
        windows, items, operator = anyio.run(rxflow_run, case, events)
        held_after_idle = operator.state_size()
    else:
        run = handwritten_sessions if case == "sessions" else handwritten_sliding
        windows, items = run(events)
        held_after_idle = 0
    elapsed = time.perf_counter() - started
    operator = None
    gc.collect()
    return {
        "per_s": count / elapsed,
        "windows": windows,
        "items": items,
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "rss_growth_mb": round(peak_rss_mb() - rss_before, 1),
        "held_items_after": held_after_idle,
        "blocks_left_after": sys.getallocatedblocks() - blocks_before,
    }


def windows_case(quick: bool) -> Iterator[dict[str, Any]]:
    count = 100_000 if quick else 1_000_000
    for case in ("sessions", "sliding"):
        rxflow = in_subprocess("benchmarks.windows", case, "rxflow", str(count))
        baseline = in_subprocess("benchmarks.windows", case, "handwritten", str(count))
        if (rxflow["windows"], rxflow["items"]) != (baseline["windows"], baseline["items"]):
            raise AssertionError(f"{case}: rxflow {rxflow} != hand-written {baseline}")
        yield row(
            f"event_time_{case}_{KEYS}_keys",
            "asyncio",
            count,
            rxflow["per_s"],
            f"handwritten_dict_{case}",
            baseline["per_s"],
            windows=rxflow["windows"],
            peak_rss_mb=rxflow["peak_rss_mb"],
            rss_growth_mb=rxflow["rss_growth_mb"],
            baseline_peak_rss_mb=baseline["peak_rss_mb"],
            held_items_after_stream=rxflow["held_items_after"],
            allocated_blocks_left=rxflow["blocks_left_after"],
        )


CASES = {"windows": windows_case}

if __name__ == "__main__":
    # python -m benchmarks.windows sessions|sliding rxflow|handwritten COUNT
    _, case, how, count = sys.argv
    print(json.dumps(measure(case, how, int(count))))
