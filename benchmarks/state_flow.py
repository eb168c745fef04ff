"""Keyed state in a checkpointed Flow, against the same Flow keeping a dict of its own.

``checkpointed_aggregate``: 100,000 orders (messages with acks) over 10,000 customers, a
running total per customer, written to a batching sink. rxflow: ``aggregate`` in a Flow with
``.checkpoint(SQLiteStore(...), every=1.0)``: each checkpoint stores the changed totals in
SQLite and then acknowledges the orders it covers. Baseline: the same Flow without
checkpoints, its totals in a dict inside ``ops.map`` (at-least-once, nothing stored). Totals
are checked equal.

``sessions_memory``: 100,000 keys, three events each, in event-time sessions that stay open
until the end, through a checkpointed Flow with the state in SQLite; against the same Flow
without checkpoints (sessions in memory, messages held unacknowledged). Each run is its own
process, so its peak RSS is its own; the row reports the growth of both: what keeping the
sessions durable costs in memory.
"""

from __future__ import annotations

import json
import random
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
from reactivex import operators as ops

from benchmarks._measure import BACKENDS, best_rate, in_subprocess, peak_rss_mb, row
from rxflow import Flow, session
from rxflow.connectors import Message, Settlement
from rxflow.state import SQLiteStore, aggregate

ORDERS = 100_000
CUSTOMERS = 10_000
SESSION_KEYS = 100_000


class _Broker:
    """Acknowledges many messages in one call, as every broker connector does, at no cost:
    the flow's own work is what is measured."""

    async def ack_many(self, messages: list[Message[Any]]) -> None:
        return None


_BROKER = _Broker()


class _Acked(Settlement):
    async def _ack(self) -> None:
        return None

    @property
    def batch_acker(self) -> Any:
        return _BROKER


def orders() -> list[Message[tuple[int, int]]]:
    rng = random.Random(7)
    return [
        Message((rng.randrange(CUSTOMERS), rng.randrange(1, 100)), settlement=_Acked(n))
        for n in range(ORDERS)
    ]


async def with_checkpoints(items: list[Message[tuple[int, int]]], path: str) -> dict[int, int]:
    last: dict[int, int] = {}

    def write(batch: list[Any]) -> None:
        for update in batch:
            last[update.key] = update.value

    totals = aggregate(lambda m: m.value[0], lambda total, m: total + m.value[1], int)
    await (
        Flow("totals")
        .source(items)
        .pipe(totals)
        .sink(write, batch_size=500)
        .checkpoint(SQLiteStore(path), every=1.0)
        .run()
    )
    return last


async def with_dict(items: list[Message[tuple[int, int]]]) -> dict[int, int]:
    totals: dict[int, int] = {}
    last: dict[int, int] = {}

    def running_total(message: Message[tuple[int, int]]) -> tuple[int, int]:
        key, amount = message.value
        value = totals[key] = totals.get(key, 0) + amount
        return key, value

    def write(batch: list[tuple[int, int]]) -> None:
        last.update(batch)

    await (
        Flow("totals").source(items).pipe(ops.map(running_total)).sink(write, batch_size=500).run()
    )
    return last


def checkpointed_aggregate(quick: bool) -> Iterator[dict[str, Any]]:
    repeats = 2 if quick else 3
    for backend in BACKENDS:
        with tempfile.TemporaryDirectory() as directory:
            paths = (str(Path(directory) / f"state{n}.db") for n in range(100))
            ours = anyio.run(with_checkpoints, orders(), next(paths), backend=backend)
            theirs = anyio.run(with_dict, orders(), backend=backend)
            if ours != theirs:
                raise AssertionError(f"checkpointed totals differ from the dict's on {backend}")
            yield row(
                "checkpointed_aggregate_sqlite",
                backend,
                ORDERS,
                best_rate(
                    ORDERS,
                    lambda: anyio.run(with_checkpoints, orders(), next(paths), backend=backend),
                    repeats,
                ),
                "dict_in_map_without_checkpoints",
                best_rate(ORDERS, lambda: anyio.run(with_dict, orders(), backend=backend), repeats),
                customers=CUSTOMERS,
            )


def _clicks() -> list[Message[tuple[int, float]]]:
    return [
        Message((key, float(round_)), settlement=_Acked(round_ * SESSION_KEYS + key))
        for round_ in range(3)
        for key in range(SESSION_KEYS)
    ]


async def sessions_run(how: str) -> dict[str, Any]:
    clicks = _clicks()
    rss_before = peak_rss_mb()
    started = time.perf_counter()
    closed = 0
    if how == "rxflow":
        with tempfile.TemporaryDirectory() as directory:

            def count(window: Any) -> None:
                nonlocal closed
                closed += 1

            sessions = session(lambda m: m.value[0], 60.0, timestamp=lambda m: m.value[1])
            await (
                Flow("sessions")
                .source(clicks)
                .pipe(sessions)
                .sink(count)
                .checkpoint(SQLiteStore(str(Path(directory) / "state.db")), every=1.0)
                .run()
            )
    else:

        def count_in_memory(window: Any) -> None:
            nonlocal closed
            closed += 1

        sessions = session(lambda m: m.value[0], 60.0, timestamp=lambda m: m.value[1])
        await Flow("sessions").source(clicks).pipe(sessions).sink(count_in_memory).run()
    elapsed = time.perf_counter() - started
    return {
        "per_s": len(clicks) / elapsed,
        "rss_growth_mb": round(peak_rss_mb() - rss_before, 1),
        "sessions": closed,
    }


def sessions_memory(quick: bool) -> Iterator[dict[str, Any]]:
    for backend in BACKENDS:
        runs = {
            how: in_subprocess("benchmarks.state_flow", how, backend)
            for how in ("rxflow", "in_memory")
        }
        rxflow, baseline = runs["rxflow"], runs["in_memory"]
        if rxflow["sessions"] != baseline["sessions"]:
            raise AssertionError(f"{rxflow['sessions']} sessions, expected {baseline['sessions']}")
        yield row(
            f"sessions_{SESSION_KEYS}_keys_memory",
            backend,
            3 * SESSION_KEYS,
            rxflow["per_s"],
            "same_flow_without_checkpoints",
            baseline["per_s"],
            rss_growth_mb=rxflow["rss_growth_mb"],
            baseline_rss_growth_mb=baseline["rss_growth_mb"],
            within_100_mb_of_baseline=rxflow["rss_growth_mb"] - baseline["rss_growth_mb"] <= 100,
        )


CASES = {"checkpointed_aggregate": checkpointed_aggregate, "sessions_memory": sessions_memory}

if __name__ == "__main__":
    # python -m benchmarks.state_flow rxflow|in_memory BACKEND  (one run, one process)
    _, how, backend = sys.argv
    print(json.dumps(anyio.run(sessions_run, how, backend=backend)))
