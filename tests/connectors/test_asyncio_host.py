"""AsyncioHost: asyncio-only coroutines run on both backends, and cancel cleanly."""

from __future__ import annotations

import asyncio
import threading

import anyio
import pytest

from rxflow.connectors._asyncio_host import AsyncioHost


async def asyncio_only(value: int) -> tuple[int, int]:
    asyncio.get_running_loop()  # raises outside an asyncio loop
    await asyncio.sleep(0)
    return value, threading.get_ident()


@pytest.mark.anyio
async def test_calls_run_on_an_asyncio_loop_whatever_the_backend(anyio_backend: str) -> None:
    async with AsyncioHost() as host:
        value, thread = await host.call(asyncio_only, 7)
        assert value == 7
        assert host.hosted == (anyio_backend == "trio")
        assert (thread != threading.get_ident()) == host.hosted


@pytest.mark.anyio
async def test_a_cancelled_call_cancels_the_client_task_and_waits_for_it() -> None:
    cleaned_up = []
    started = anyio.Event()

    async with AsyncioHost() as host:

        async def long_call() -> None:
            host.call_soon_here(started.set)
            try:
                await asyncio.Event().wait()  # never set: only cancellation ends it
            finally:
                cleaned_up.append(True)

        async with anyio.create_task_group() as tg:
            tg.start_soon(host.call, long_call)
            await started.wait()
            tg.cancel_scope.cancel()
        assert cleaned_up == [True]


@pytest.mark.anyio
async def test_client_errors_come_out_as_themselves() -> None:
    async def failing() -> None:
        raise ConnectionResetError("peer went away")

    async with AsyncioHost() as host:
        with pytest.raises(ConnectionResetError, match="peer went away"):
            await host.call(failing)


@pytest.mark.anyio
async def test_iterate_reads_a_client_async_iterator() -> None:
    async def numbers():  # type: ignore[no-untyped-def]
        for n in range(3):
            await asyncio.sleep(0)
            yield n

    async with AsyncioHost() as host:
        assert [n async for n in host.iterate(numbers())] == [0, 1, 2]
