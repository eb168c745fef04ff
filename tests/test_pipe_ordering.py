"""A pipeline's output does not depend on the order the event loop runs tasks in.

What an operator schedules to run "now" (a subscription ``concat`` defers, an inner
``of(...)`` of ``flat_map``) runs before the pump pulls the next item or pushes the
source's end, as reactivex's current-thread scheduler runs it. Under trio, which shuffles
ready tasks, these pipelines gave different results from run to run; each case here runs
ten times and must give reactivex's own result every time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import reactivex
from reactivex import operators as ops

from rxflow import open_pipe

pytestmark = pytest.mark.anyio


async def then_fail(items: list[int]) -> AsyncIterator[int]:
    for item in items:
        yield item
    raise ValueError("source failed")


def reference(source: list[int], *operators: Callable[[Any], Any], error: bool) -> list[Any]:
    """What plain reactivex gives for the same chain, the items pushed one at a time (as a
    pulled source delivers them: each on its own turn of the loop, not inside one call)."""
    out: list[Any] = []
    subject: reactivex.subject.Subject[int] = reactivex.subject.Subject()
    subject.pipe(*operators).subscribe(
        out.append, lambda e: out.append(f"error: {e}"), lambda: out.append("completed")
    )
    for item in source:
        subject.on_next(item)
    if error:
        subject.on_error(ValueError("source failed"))
    else:
        subject.on_completed()
    return out


async def through_pipe(source: Any, *operators: Callable[[Any], Any]) -> list[Any]:
    out: list[Any] = []
    try:
        async with open_pipe(source, *operators) as pipe:
            async for item in pipe:
                out.append(item)
    except ValueError as error:
        out.append(f"error: {error}")
    else:
        out.append("completed")
    return out


CASES: dict[str, tuple[Callable[[Any], Any], ...]] = {
    "publish-merge": (ops.publish(lambda s: reactivex.merge(s, s.pipe(ops.map(lambda x: -x)))),),
    "with_latest_from": (ops.with_latest_from(reactivex.of(10)),),
    "zip": (ops.zip(reactivex.of(4, 5, 6)),),
    "sequence_equal": (ops.sequence_equal(reactivex.of(1, 2, 3)),),
    "multicast": (
        ops.multicast(
            subject_factory=lambda _: reactivex.subject.Subject(),
            mapper=lambda s: reactivex.merge(s, s.pipe(ops.map(lambda x: x * 100))),
        ),
    ),
    "flat_map": (ops.flat_map(lambda x: reactivex.of(x, 10 * x)),),
    "concat_map": (ops.concat_map(lambda x: reactivex.of(x, 10 * x)),),
}


@pytest.mark.parametrize("name", list(CASES))
async def test_every_run_gives_reactivex_result(name: str) -> None:
    operators = CASES[name]
    expected = reference([1, 2, 3], *operators, error=False)
    for _ in range(10):
        assert await through_pipe([1, 2, 3], *operators) == expected


@pytest.mark.parametrize("name", ["flat_map", "concat_map", "with_latest_from"])
async def test_inner_outputs_come_before_a_source_error(name: str) -> None:
    operators = CASES[name]
    expected = reference([1, 2, 3], *operators, error=True)
    assert expected[-1] == "error: source failed"
    assert len(expected) > 1
    for _ in range(10):
        assert await through_pipe(then_fail([1, 2, 3]), *operators) == expected


async def test_a_stage_that_is_not_an_operator_is_refused_by_name(anyio_backend: str) -> None:
    # ops.to_future() needs an asyncio loop to make its Future (under trio, asyncio would
    # make one and leave it open), so it runs on asyncio; any stage that returns something
    # other than an Observable is refused the same way.
    stage = ops.to_future() if anyio_backend == "asyncio" else (lambda _source: 42)
    name = "ops.to_future" if anyio_backend == "asyncio" else "<lambda>"
    with pytest.raises(TypeError, match="returned a value of type") as raised:
        async with open_pipe([1, 2], ops.map(lambda x: x), stage):
            pass  # pragma: no cover - refused on entry
    assert "operator 2 (" in str(raised.value)
    assert f"{name})" in str(raised.value)
