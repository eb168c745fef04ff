"""Async sources as observables, and observables read with ``async for``."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
import reactivex
from reactivex import operators as ops
from support import TrackedSource, running_tasks

from rxflow import AnyioScheduler, from_async_iterable, from_stream, open_pipe, to_async_iterable
from rxflow.errors import NoTaskGroupError

pytestmark = pytest.mark.anyio


async def test_subscribed_outside_a_task_group_the_observer_gets_a_clear_error() -> None:
    errors: list[Exception] = []
    from_async_iterable(TrackedSource(3)).subscribe(on_error=errors.append)
    assert len(errors) == 1
    assert isinstance(errors[0], NoTaskGroupError)
    assert "inside rxflow.open_pipe" in str(errors[0])


async def test_with_a_task_group_it_pushes_every_item_then_completes() -> None:
    received: list[Any] = []
    source = TrackedSource(5)
    async with anyio.create_task_group() as tg:
        from_async_iterable(source, task_group=tg).subscribe(
            received.append, on_completed=lambda: received.append("done")
        )
    assert received == [0, 1, 2, 3, 4, "done"]
    assert source.closed


async def test_with_an_anyio_scheduler_it_runs_in_the_schedulers_task_group() -> None:
    received: list[int] = []
    async with anyio.create_task_group() as tg:
        from_async_iterable(TrackedSource(3)).subscribe(
            received.append, scheduler=AnyioScheduler(tg)
        )
    assert received == [0, 1, 2]


async def test_a_source_error_goes_to_on_error_after_the_items_before_it() -> None:
    async def failing() -> Any:
        yield 1
        raise KeyError("bad record")

    received: list[Any] = []
    async with anyio.create_task_group() as tg:
        from_async_iterable(failing(), task_group=tg).subscribe(
            received.append, on_error=received.append
        )
    assert received[0] == 1
    assert isinstance(received[1], KeyError)


async def test_disposing_cancels_the_task_and_closes_the_iterator() -> None:
    source = TrackedSource(delay=1.0)  # would run forever
    tasks_before = running_tasks()
    async with anyio.create_task_group() as tg:
        subscription = from_async_iterable(source, task_group=tg).subscribe()
        await anyio.lowlevel.checkpoint()
        assert running_tasks() > tasks_before
        subscription.dispose()
    assert source.closed
    assert running_tasks() == tasks_before


async def test_inner_async_sources_are_paced_by_the_pipes_consumer() -> None:
    sources = [TrackedSource(), TrackedSource()]  # endless
    async with open_pipe(
        [0, 1], ops.flat_map(lambda i: from_async_iterable(sources[i])), max_buffer_size=4
    ) as pipe:
        for _ in range(10):
            await pipe.receive()
            for _ in range(5):
                await anyio.lowlevel.checkpoint()
            # Each inner source pushes one item, then waits for room before the next.
            assert sum(s.pulled for s in sources) <= pipe.stats().delivered + 4 + len(sources)
    assert all(s.closed for s in sources)


async def test_from_stream_completes_when_the_stream_ends() -> None:
    send, receive = anyio.create_memory_object_stream[int](5)
    async with send:
        for n in range(3):
            await send.send(n)
    async with open_pipe([None], ops.flat_map(lambda _: from_stream(receive))) as pipe:
        assert [item async for item in pipe] == [0, 1, 2]


async def test_from_stream_refuses_other_iterables_with_advice() -> None:
    with pytest.raises(TypeError, match="from_async_iterable"):
        from_stream(TrackedSource(1))  # type: ignore[arg-type]


async def test_to_async_iterable_reads_an_observable() -> None:
    async with to_async_iterable(reactivex.of(1, 2, 3), overflow="error") as items:
        assert [item async for item in items] == [1, 2, 3]


async def test_to_async_iterable_refuses_an_async_iterable() -> None:
    with pytest.raises(TypeError, match="an async iterable is one already"):
        to_async_iterable(TrackedSource(1), overflow="error")  # type: ignore[arg-type]
