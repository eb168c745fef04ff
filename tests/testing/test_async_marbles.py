"""open_pipe driven by marble diagrams in virtual time: outputs, pulls, backpressure."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from reactivex import operators as ops

from rxflow import map_async, tumbling
from rxflow.testing import MarbleMismatch, NotVirtualTimeError, pipe_marbles

pytestmark = pytest.mark.anyio


async def test_a_fast_consumer_gets_each_item_when_it_is_available() -> None:
    result = await pipe_marbles("-a-b--c|", ops.map(str.upper))
    assert result.output == "-A-B--C|"
    assert result.pulls == "-a-b--c|"


async def test_a_slow_consumer_slows_the_source_down() -> None:
    # Every item is available at once; the consumer takes one every 4 frames. With no
    # buffer, the source is read exactly as fast as the consumer reads.
    result = await pipe_marbles("(abcd|)", pace="a---b---c---d---e", max_buffer_size=0)
    result.expect(output="a---b---c---d---|", pulls="a---b---c---d---|")


async def test_a_buffer_lets_the_source_run_ahead_by_its_size() -> None:
    result = await pipe_marbles(
        "(abcdef|)", pace="a----b----c----d----e----f----g", max_buffer_size=2
    )
    result.expect(output="a----b----c----d----e----f----|", pulls="(abc)d----e----f----|")


async def test_time_operators_run_on_the_loops_virtual_clock() -> None:
    result = await pipe_marbles("-a-b-----c|", ops.debounce(0.003))
    assert result.output == "------b---(c|)"  # b at 3, plus 3 frames of quiet


async def test_windows_close_on_virtual_time(anyio_backend: Any) -> None:
    result = await pipe_marbles(
        "ab-c------d-|", tumbling(0.005), ops.map(lambda w: "".join(w.items))
    )
    # Windows of 5 frames; the last one, empty, is not emitted when the source completes.
    result.expect(output="-----x----y-|", values={"x": "abc", "y": "d"})


async def test_map_async_concurrency_shows_in_the_pulls() -> None:
    async def slow_upper(item: str) -> str:
        await anyio.sleep(0.004)
        return item.upper()

    result = await pipe_marbles("(abcd|)", map_async(slow_upper, concurrency=2))
    # Two calls at a time: c and d are pulled when a and b are done, and the end of the
    # source only when c and d are.
    result.expect(output="----(AB)(CD|)", pulls="(ab)(cd)|")


async def test_an_error_comes_out_after_the_items_before_it() -> None:
    result = await pipe_marbles("-a-#", ops.map(str.upper), error=ValueError("bad"))
    result.expect(output="-A-#")
    assert isinstance(result.received[-1].value, ValueError)


async def test_a_mismatch_shows_both_diagrams() -> None:
    result = await pipe_marbles("-a-b|")
    with pytest.raises(MarbleMismatch, match="output: the observable did not match"):
        result.expect(output="-a--b|")


def test_a_real_clock_is_refused_with_advice() -> None:
    async def main() -> None:
        await pipe_marbles("a|")

    with pytest.raises(NotVirtualTimeError, match="virtual_anyio_backends"):
        anyio.run(main)
    with pytest.raises(NotVirtualTimeError, match="autojump_clock"):
        anyio.run(main, backend="trio")
