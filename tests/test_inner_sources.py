"""Inner async sources (``flat_map(from_async_iterable)``) keep the pipe's bound.

Each inner source is an async generator that counts itself live from its first step to its
``finally``. With a slow consumer (virtual time, both backends) the pipe may have at most
``max_buffer_size + rxflow.sources.INNER_SOURCES_BEYOND_BUFFER`` of them live at once, and
every item still arrives.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from reactivex import operators as ops

from rxflow import from_async_iterable, open_pipe
from rxflow.sources import INNER_SOURCES_BEYOND_BUFFER
from rxflow.testing import virtual_anyio_backends

pytestmark = pytest.mark.anyio


@pytest.fixture(params=virtual_anyio_backends())
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    return request.param


class LiveCount:
    """How many inner sources are live now, and the most that were at once."""

    def __init__(self) -> None:
        self.live = 0
        self.most = 0
        self.started = 0

    async def inner(self, n: int, items: int, delay: float) -> AsyncIterator[int]:
        self.live += 1
        self.started += 1
        self.most = max(self.most, self.live)
        try:
            for k in range(items):
                if delay:
                    await anyio.sleep(delay)
                yield n * 100 + k
        finally:
            self.live -= 1


async def read_slowly(pipe: Any, pause: float) -> list[int]:
    received = []
    async for item in pipe:
        received.append(item)
        await anyio.sleep(pause)  # a slow consumer: virtual time
    return received


@pytest.mark.parametrize("max_buffer_size", [0, 1, 8, 128])
@pytest.mark.parametrize(("items", "delay"), [(3, 0.0), (3, 0.01), (1, 0.0)])
async def test_live_inner_sources_stay_within_the_bound(
    max_buffer_size: int, items: int, delay: float
) -> None:
    count = LiveCount()
    outer = 600  # far more than the bound, so that an unbounded pipe shows
    async with open_pipe(
        range(outer),
        ops.flat_map(lambda n: from_async_iterable(count.inner(n, items, delay))),
        max_buffer_size=max_buffer_size,
    ) as pipe:
        received = await read_slowly(pipe, 0.1)
    assert sorted(received) == sorted(n * 100 + k for n in range(outer) for k in range(items))
    assert count.started == outer
    assert count.live == 0
    assert count.most <= max_buffer_size + INNER_SOURCES_BEYOND_BUFFER, count.most


async def test_inner_sources_never_ending_up_to_the_bound_are_all_read() -> None:
    """Endless inner sources hold the outer source once the bound is reached; below it,
    each one is read."""
    count = LiveCount()
    wanted = INNER_SOURCES_BEYOND_BUFFER  # endless inner sources, as many as may be live
    async with open_pipe(
        range(wanted),
        ops.flat_map(lambda n: from_async_iterable(count.inner(n, 10**9, 0.01))),
        max_buffer_size=0,
    ) as pipe:
        seen: set[int] = set()
        async for item in pipe:
            seen.add(item // 100)
            if len(seen) == wanted:
                break
    assert count.live == 0
