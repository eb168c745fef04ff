"""Chaos: a flaky sink, and a flow stopped, aborted or cancelled at random points, many times.

Under a graceful stop every item the source handed over must be written or dead-lettered;
after any ending nothing may keep running.
"""

from __future__ import annotations

import random

import anyio
import pytest
from reactivex import operators as ops
from support import TrackedSource, running_tasks

from rxflow import DeadLetter, Failure, Flow, Retry, map_async

pytestmark = pytest.mark.anyio

RUNS = 1000


async def one_run(rng: random.Random) -> None:
    source = TrackedSource(rng.randrange(0, 300))
    written: list[int] = []
    dead: list[Failure] = []
    failure_rate = rng.choice([0.0, 0.1, 0.5])

    async def flaky_sink(batch: list[int]) -> None:
        await anyio.lowlevel.checkpoint()
        if rng.random() < failure_rate:
            raise ConnectionError("sink hiccup")
        written.extend(batch)

    flow = (
        Flow(max_buffer_size=rng.choice([0, 1, 16]))
        .source(source)
        .pipe(ops.map(lambda n: n), map_async(lambda n: n, concurrency=rng.choice([1, 4])))
        .sink(
            flaky_sink,
            batch_size=rng.choice([1, 7]),
            on_error=Retry(attempts=3, base=0.0, cap=0.0, then=DeadLetter(dead.append)),
        )
    )
    ending = rng.choice(["stop", "abort", "cancel", "run to the end"])
    tasks_before = running_tasks()
    with anyio.CancelScope() as outer:
        async with anyio.create_task_group() as tg:
            handle = flow.start(tg)
            for _ in range(rng.randrange(0, 60)):
                await anyio.lowlevel.checkpoint()
            if ending == "stop":
                handle.stop()
            elif ending == "abort":
                handle.abort()
            elif ending == "cancel":
                outer.cancel()
    assert running_tasks() == tasks_before, ending
    assert source.closed or source.pulled == 0, ending
    if ending in ("stop", "run to the end"):
        delivered = sorted(written + [n for failure in dead for n in failure.item])
        assert delivered == list(range(source.pulled)), ending


async def test_no_item_is_lost_under_drain_and_nothing_leaks(anyio_backend: str) -> None:
    rng = random.Random(f"rxflow chaos {anyio_backend}")
    for _ in range(RUNS):
        await one_run(rng)
