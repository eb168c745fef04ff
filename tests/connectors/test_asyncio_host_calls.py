"""AsyncioHost's hosted calls (trio): each runs as a task of the client's loop, handed over
without a blocking round trip; what a call sees there, and many at once."""

from __future__ import annotations

import asyncio
import contextvars

import anyio
import anyio.lowlevel
import pytest
import sniffio

from rxflow.connectors._asyncio_host import AsyncioHost

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "trio"  # under asyncio there is no host thread: calls run in place


request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")


async def test_a_call_runs_as_asyncio_and_sees_the_callers_context_variables() -> None:
    async def where() -> tuple[str, str]:
        await anyio.lowlevel.checkpoint()  # anyio inside a call picks asyncio
        return sniffio.current_async_library(), request_id.get()

    async with AsyncioHost() as host:
        request_id.set("r-1")
        assert await host.call(where) == ("asyncio", "r-1")
        assert sniffio.current_async_library() == "trio"  # the caller's side is untouched


async def test_calls_at_once_each_get_their_own_result_whatever_order_they_end_in() -> None:
    count = 50
    async with AsyncioHost() as host:
        gates: list[asyncio.Event] = []
        arrived = anyio.Event()

        async def wait_for_gate(n: int) -> int:
            gate = asyncio.Event()
            gates.append(gate)
            if len(gates) == count:
                host.call_soon_here(arrived.set)
            await gate.wait()
            return n * n

        async def open_gates() -> None:
            for gate in reversed(gates):  # the last call started ends first
                gate.set()
                await asyncio.sleep(0)

        results: dict[int, int] = {}

        async def one(n: int) -> None:
            results[n] = await host.call(wait_for_gate, n)

        async with anyio.create_task_group() as tg:
            for n in range(count):
                tg.start_soon(one, n)
            await arrived.wait()
            await host.call(open_gates)
        assert results == {n: n * n for n in range(count)}


async def test_a_call_cancelled_as_it_is_handed_over_ends_before_the_caller_goes_on() -> None:
    steps: list[str] = []

    async def forever() -> None:
        steps.append("started")
        try:
            await asyncio.Event().wait()  # never set: only the cancellation ends it
        finally:
            steps.append("ended")

    async with AsyncioHost() as host:
        for _ in range(20):
            steps.clear()
            with anyio.CancelScope() as scope:
                scope.cancel()  # before the client's loop has the call, or as it starts it
                await host.call(forever)
            assert scope.cancelled_caught
            assert steps in ([], ["started", "ended"])  # never left running
        assert await host.call(asyncio.sleep, 0, 5) == 5  # the host goes on
