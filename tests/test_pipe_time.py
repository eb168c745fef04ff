"""open_pipe in trio's virtual time: windows, delays and graceful stop driven by the clock."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
import trio
from reactivex import operators as ops

from rxflow import open_pipe


@pytest.mark.trio
async def test_windows_close_on_time_even_while_the_source_is_silent(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def bursts() -> Any:
        for burst in ([1, 2, 3], [4], [5, 6]):
            for item in burst:
                yield item
            await anyio.sleep(2.25)  # silence: the pipe is waiting on the source

    start = trio.current_time()
    received: list[tuple[float, list[int]]] = []
    async with open_pipe(bursts(), ops.buffer_with_time(1.0)) as pipe:
        async for window in pipe:
            received.append((trio.current_time() - start, window))
    assert received == [
        (pytest.approx(1.0), [1, 2, 3]),
        (pytest.approx(2.0), []),
        (pytest.approx(3.0), [4]),
        (pytest.approx(4.0), []),
        (pytest.approx(5.0), [5, 6]),
        (pytest.approx(6.0), []),
        (pytest.approx(6.75), []),  # the source completed: the open window is flushed
    ]


@pytest.mark.trio
async def test_time_operators_get_the_pipes_scheduler(
    autojump_clock: trio.testing.MockClock,
) -> None:
    start = trio.current_time()
    async with open_pipe(
        [1, 2, 3], ops.delay(5.0), ops.map(lambda n: (n, trio.current_time()))
    ) as pipe:
        received = [(n, at - start) async for n, at in pipe]
    assert received == [(1, pytest.approx(5.0)), (2, pytest.approx(5.0)), (3, pytest.approx(5.0))]


@pytest.mark.trio
async def test_debounce_emits_after_quiet_periods(autojump_clock: trio.testing.MockClock) -> None:
    async def typing() -> Any:
        for word, pause in (("h", 0.1), ("he", 0.1), ("hel", 1.0), ("help", 0.2)):
            yield word
            await anyio.sleep(pause)

    async with open_pipe(typing(), ops.debounce(0.5)) as pipe:
        assert [x async for x in pipe] == ["hel", "help"]


@pytest.mark.trio
async def test_stop_while_the_source_is_silent_flushes_the_open_window(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def then_silence() -> Any:
        yield "a"
        yield "b"
        await anyio.sleep_forever()

    async with open_pipe(then_silence(), ops.buffer_with_time(10.0)) as pipe:
        await anyio.sleep(1.0)
        pipe.stop()
        assert [x async for x in pipe] == [["a", "b"]]
