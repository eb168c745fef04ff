"""background_tasks(): a body's exception comes out as itself; tasks never outlive it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import anyio.lowlevel
import pytest

from rxflow._task_groups import background_tasks

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def with_a_task(started: list[str], cleaned: list[str]) -> AsyncIterator[None]:
    async def forever() -> None:
        started.append("task")
        try:
            await anyio.sleep_forever()
        finally:
            cleaned.append("task")

    async with background_tasks() as tasks:
        tasks.start_soon(forever)
        await anyio.lowlevel.checkpoint()
        try:
            yield
        finally:
            cleaned.append("body")


async def test_the_body_error_is_raised_unwrapped_and_the_task_cancelled() -> None:
    started: list[str] = []
    cleaned: list[str] = []
    with pytest.raises(KeyError, match="mine") as caught:
        async with with_a_task(started, cleaned):
            raise KeyError("mine")
    assert type(caught.value) is KeyError
    assert started == ["task"]
    assert cleaned == ["body", "task"]


async def test_a_task_error_comes_out_of_the_group() -> None:
    async def failing() -> None:
        raise OSError("task failed")

    with pytest.raises(ExceptionGroup) as caught:
        async with background_tasks() as tasks:
            tasks.start_soon(failing)
            await anyio.sleep_forever()
    assert caught.group_contains(OSError, match="task failed")


async def test_a_normal_exit_waits_for_the_tasks() -> None:
    finished: list[int] = []

    async def short() -> None:
        await anyio.lowlevel.checkpoint()
        finished.append(1)

    async with background_tasks() as tasks:
        tasks.start_soon(short)
    assert finished == [1]


async def test_cancellation_takes_the_usual_path() -> None:
    with anyio.move_on_after(0) as scope:
        async with background_tasks() as tasks:
            tasks.start_soon(anyio.sleep_forever)
            await anyio.sleep_forever()
    assert scope.cancelled_caught


async def test_entered_once() -> None:
    manager = background_tasks()
    async with manager:
        pass
    with pytest.raises(RuntimeError, match="entered once"):
        async with manager:
            pass
