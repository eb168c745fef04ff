"""python -m rxflow run: loading a flow, progress, first interrupt drains, second aborts."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import anyio
import pytest
from anyio.abc import Process

FLOWS = """
import anyio
from reactivex import operators as ops
from rxflow import Flow

written = []

async def ticks():
    n = 0
    while True:
        await anyio.sleep(0.001)
        yield n
        n += 1

async def save(item):
    written.append(item)

def endless():
    return (Flow("endless").source(ticks(), name="ticks").pipe(ops.map(lambda n: n * 2))
            .sink(save, name="save"))

async def stubborn_sink(item):
    await anyio.sleep(3600)  # a drain would wait for this write forever

def stuck():
    return Flow("stuck").source(ticks()).sink(stubborn_sink)

def finite():
    return Flow("finite").source(range(5)).sink(save, name="save")

def failing():
    def explode(item):
        raise RuntimeError("sink exploded")
    return Flow("failing").source(range(5)).sink(explode)

not_a_flow = 42
"""

pytestmark = pytest.mark.parametrize("backend", ["asyncio", "trio"])


@pytest.fixture
def anyio_backend() -> str:
    """The tests drive a child process; the flow's backend is the child's ``--backend``."""
    return "asyncio"


async def start(tmp_path: Path, target: str, backend: str) -> Process:
    (tmp_path / "flows.py").write_text(FLOWS)
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    return await anyio.open_process(
        [sys.executable, "-m", "rxflow", "run", target, "--backend", backend,
         "--progress-every", "0.01"],
        env=env,
    )  # fmt: skip


async def read_until(process: Process, text: str) -> str:
    """stderr up to and including the first line that contains ``text``."""
    assert process.stderr is not None
    seen = ""
    async for chunk in process.stderr:
        seen += chunk.decode()
        if text in seen:
            return seen
    raise AssertionError(f"the process ended without printing {text!r}; it printed:\n{seen}")


@pytest.mark.anyio
async def test_first_interrupt_drains_the_flow(tmp_path: Path, backend: str) -> None:
    with anyio.fail_after(60):  # a guard against a hung child, not a timing assertion
        async with await start(tmp_path, "flows:endless", backend) as process:
            await read_until(process, "endless: ticks")  # a progress line: it runs
            process.send_signal(signal.SIGINT)
            rest = await read_until(process, "flow ended")
            assert await process.wait() == 0
    assert "stopping: draining the flow" in rest
    final = rest.rsplit("flow ended: ", 1)[1]
    # Everything the source handed over was written: "ticks N | pipe N | save N".
    ticks = int(final.split("ticks ")[1].split()[0])
    saved = int(final.split("save ")[1].split()[0])
    assert saved == ticks > 0


@pytest.mark.anyio
async def test_second_interrupt_aborts(tmp_path: Path, backend: str) -> None:
    with anyio.fail_after(60):
        async with await start(tmp_path, "flows:stuck", backend) as process:
            await read_until(process, "stuck:")
            process.send_signal(signal.SIGINT)
            await read_until(process, "draining")
            process.send_signal(signal.SIGINT)
            await read_until(process, "flow aborted")
            assert await process.wait() == 130


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("target", "status", "message"),
    [
        ("flows:finite", 0, "flow ended: finite: source1 5 | pipe 5 | save 5"),
        ("flows:failing", 1, "flow 'failing' failed: RuntimeError('sink exploded')"),
        ("flows:not_a_flow", 2, "gave 42, not an rxflow.Flow"),
        ("flows:missing", 2, "module 'flows' has no attribute 'missing'"),
        ("no_such_module:flow", 2, "cannot import 'no_such_module'"),
        ("flows", 2, "expected module:attribute"),
    ],
)
async def test_exit_status_and_message(
    tmp_path: Path, backend: str, target: str, status: int, message: str
) -> None:
    with anyio.fail_after(60):
        async with await start(tmp_path, target, backend) as process:
            assert process.stderr is not None
            output = b"".join([chunk async for chunk in process.stderr]).decode()
            assert await process.wait() == status
    assert message in output
