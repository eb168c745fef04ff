"""Operators that move work to other threads: their emissions come back to the loop.

``observe_on(ThreadPoolScheduler())`` and ``subscribe_on(...)`` make items reach a pipe's
edges from a pool thread. rxflow hands them to the event loop's thread in order, so the
pipe gives reactivex's results; a time-based operator after ``observe_on`` would read the
loop's clock from the pool thread, and fails the pipe with a clear error instead of hanging.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import anyio
import pytest
import reactivex
from reactivex import operators as ops
from reactivex.scheduler import ThreadPoolScheduler

from rxflow import open_pipe
from rxflow.errors import WrongThreadError

pytestmark = pytest.mark.anyio


@pytest.fixture
def pool() -> Iterator[ThreadPoolScheduler]:
    scheduler = ThreadPoolScheduler(2)
    yield scheduler
    executor: ThreadPoolExecutor = scheduler.executor
    executor.shutdown(wait=True)  # no thread outlives the test


async def read_all(source: Any, *operators: Any, **options: Any) -> list[Any]:
    with anyio.fail_after(10):  # a regression here used to hang forever
        async with open_pipe(source, *operators, **options) as pipe:
            return [item async for item in pipe]


async def test_observe_on_a_thread_pool_delivers_everything(pool: ThreadPoolScheduler) -> None:
    doubled = await read_all(list(range(100)), ops.observe_on(pool), ops.map(lambda x: 2 * x))
    assert doubled == [2 * x for x in range(100)]


async def test_subscribe_on_a_thread_pool_delivers_everything(pool: ThreadPoolScheduler) -> None:
    source = reactivex.from_iterable(range(100)).pipe(ops.subscribe_on(pool))
    assert await read_all(source, overflow="error", max_buffer_size=1000) == list(range(100))


async def test_an_error_from_a_pool_thread_reaches_the_reader(pool: ThreadPoolScheduler) -> None:
    failing = reactivex.concat(reactivex.of(1, 2), reactivex.throw(ValueError("pool error")))
    with pytest.raises(ValueError, match="pool error"):
        await read_all(failing.pipe(ops.subscribe_on(pool)), overflow="error")


async def test_a_timer_asked_for_from_a_pool_thread_fails_the_pipe(
    pool: ThreadPoolScheduler,
) -> None:
    with pytest.raises(WrongThreadError, match="before observe_on"):
        await read_all([1, 2, 3], ops.observe_on(pool), ops.delay(0.01))
