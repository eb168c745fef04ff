"""`Flow.start` runs a flow in a service's own task group: an anyio one or a trio nursery."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
import trio

from rxflow import Flow


async def endless() -> AsyncIterator[int]:
    """A source that never ends by itself, one item per virtual second."""
    n = 0
    while True:
        yield n
        n += 1
        await anyio.sleep(1.0)


@pytest.mark.trio
async def test_a_trio_nursery_runs_a_flow_and_stop_drains_it(autojump_clock: object) -> None:
    written: list[int] = []
    async with trio.open_nursery() as nursery:
        handle = Flow("nursery").source(endless()).sink(written.append).start(nursery)
        await trio.sleep(4.5)  # virtual time: five items are read
        handle.stop()
    # The nursery waited for the flow, which read no more after stop() and wrote what it had.
    assert written == [0, 1, 2, 3, 4]
    assert handle.snapshot()["append"].emitted == 5
    assert not handle.aborted


@pytest.mark.trio
async def test_a_failing_flow_fails_the_trio_nursery(autojump_clock: object) -> None:
    def broken(item: int) -> None:
        raise ValueError(f"cannot write {item}")

    with pytest.raises(BaseExceptionGroup) as caught:
        async with trio.open_nursery() as nursery:
            Flow("broken").source(range(3)).sink(broken).start(nursery)
    assert caught.group_contains(ValueError, match="cannot write 0")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # asyncio.TaskGroup, which has no start_soon, is the case users hit


@pytest.mark.anyio
async def test_start_refuses_what_has_no_start_soon() -> None:
    flow = Flow("orders").source(range(3)).sink(print)
    async with asyncio.TaskGroup() as task_group:  # create_task, not start_soon
        with pytest.raises(TypeError, match=r"TaskGroup; under asyncio.*anyio.create_task_group"):
            flow.start(task_group)  # type: ignore[arg-type]
    # The refused call did not use the flow up: it still runs.
    snapshot = await flow.run()
    assert snapshot["print"].emitted == 3


def test_a_trio_nursery_type_checks(tmp_path: Path) -> None:
    """mypy --strict accepts a trio nursery and an anyio task group for Flow.start."""
    program = tmp_path / "service.py"
    program.write_text(
        textwrap.dedent(
            """
            import anyio
            import trio
            from rxflow import Flow

            async def in_trio() -> None:
                async with trio.open_nursery() as nursery:
                    Flow("a").source(range(3)).sink(print).start(nursery)

            async def in_anyio() -> None:
                async with anyio.create_task_group() as tg:
                    Flow("b").source(range(3)).sink(print).start(tg)
            """
        )
    )
    checked = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(tmp_path / "cache"), "."],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
