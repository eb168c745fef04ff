"""Operators that subscribe to the source again (repeat, retry, concat, catch, do_while)
get a new run of it, as from a cold Observable; a source that can be read only once
refuses with a clear error instead of a silent single pass."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import anyio.lowlevel
import pytest
import reactivex
from reactivex import operators as ops

from rxflow import open_pipe
from rxflow.errors import SourceNotRerunnableError

pytestmark = pytest.mark.anyio


async def one_two_three() -> AsyncIterator[int]:
    for item in (1, 2, 3):
        yield item


class ReadableAgain:
    """An async iterable whose every ``async for`` starts anew."""

    def __aiter__(self) -> AsyncIterator[int]:
        return one_two_three()


async def read_all(source: Any, *operators: Any, **options: Any) -> list[Any]:
    with anyio.fail_after(10):
        async with open_pipe(source, *operators, **options) as pipe:
            return [item async for item in pipe]


def reactivex_result(*operators: Callable[[Any], Any]) -> list[Any]:
    return list(reactivex.of(1, 2, 3).pipe(*operators, ops.to_list()).run())


RESUBSCRIBING: dict[str, tuple[Callable[[Any], Any], ...]] = {
    "repeat": (ops.repeat(2),),
    "concat-self": (lambda s: s.pipe(ops.concat(s)),),
    "do_while": (ops.do_while(lambda _: False),),
    "catch-self": (ops.map(lambda x: x), ops.catch(lambda _e, s: s)),
}


@pytest.mark.parametrize("name", list(RESUBSCRIBING))
@pytest.mark.parametrize(
    "source",
    [
        pytest.param(lambda: [1, 2, 3], id="list"),
        pytest.param(ReadableAgain, id="async-iterable"),
        pytest.param(lambda: reactivex.of(1, 2, 3), id="observable"),
        pytest.param(lambda: one_two_three, id="factory"),
    ],
)
async def test_a_second_subscription_reads_the_source_again(
    name: str, source: Callable[[], Any]
) -> None:
    operators = RESUBSCRIBING[name]
    made = source()
    options = {"overflow": "error"} if isinstance(made, reactivex.Observable) else {}
    assert await read_all(made, *operators, **options) == reactivex_result(*operators)


async def test_retry_opens_a_fresh_source_from_a_factory() -> None:
    attempts = 0

    def connect() -> AsyncIterator[str]:
        async def reading() -> AsyncIterator[str]:
            yield f"attempt {attempts}"
            if attempts < 3:
                raise ConnectionError("dropped")

        nonlocal attempts
        attempts += 1
        return reading()

    assert await read_all(connect, ops.retry(5)) == ["attempt 1", "attempt 2", "attempt 3"]


async def test_a_source_readable_once_refuses_a_second_run_by_name() -> None:
    with pytest.raises(SourceNotRerunnableError, match="can be read only once") as raised:
        await read_all(one_two_three(), ops.repeat(2))
    assert "a function that returns a fresh source" in str(raised.value)


async def test_a_graceful_stop_is_not_undone_by_repeat() -> None:
    async def forever() -> AsyncIterator[int]:
        n = 0
        while True:
            n += 1
            yield n
            await anyio.lowlevel.checkpoint()

    with anyio.fail_after(10):
        async with open_pipe(lambda: forever(), ops.repeat()) as pipe:
            seen = [await pipe.receive() for _ in range(3)]
            pipe.stop()
            rest = [item async for item in pipe]
    assert seen == [1, 2, 3]
    assert rest == list(range(4, 4 + len(rest)))  # what was on its way, then the end
