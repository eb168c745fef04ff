"""serve_health: /metrics, /health/live and /health/ready over real HTTP, on both backends,
and nothing left listening or running once it is cancelled."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest
from support import running_tasks

from rxflow import Flow, FlowHandle, serve_health


class Connecting:
    """A connector-like source: entered (connected) when ``connected`` is set; then one
    item, and more never come."""

    def __init__(self) -> None:
        self.connected = anyio.Event()

    async def __aenter__(self) -> AsyncIterator[int]:
        await self.connected.wait()
        return self.items()

    async def __aexit__(self, *exc_info: object) -> None:
        pass

    async def items(self) -> AsyncIterator[int]:
        yield 1
        await anyio.sleep_forever()


async def until_ready(handle: FlowHandle) -> None:
    for _ in range(10_000):
        if handle.ready:
            return
        await anyio.sleep(0.001)
    raise AssertionError("the flow never became ready")


@pytest.mark.anyio
async def test_probes_follow_the_flow_and_metrics_are_scraped() -> None:
    source = Connecting()
    written: list[int] = []
    async with anyio.create_task_group() as tg:
        handle = Flow("probed").source(source, name="events").sink(written.append).start(tg)
        port = await tg.start(serve_health, handle, "127.0.0.1", 0)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            live = await client.get("/health/live")
            assert (live.status_code, live.json()) == (200, {"live": True})
            ready = await client.get("/health/ready")
            assert ready.status_code == 503
            assert ready.json() == {
                "ready": False,
                "reason": "the flow's sources are not connected yet",
            }

            source.connected.set()
            await until_ready(handle)
            ready = await client.get("/health/ready")  # the same connection, kept alive
            assert (ready.status_code, ready.json()) == (200, {"ready": True})

            metrics = await client.get("/metrics")
            assert metrics.status_code == 200
            assert metrics.headers["content-type"].startswith("text/plain; version=")
            assert (
                'rxflow_stage_items_emitted_total{flow="probed",kind="source",stage="events"} 1.0'
                in metrics.text
            )

            handle.stop()
            ready = await client.get("/health/ready")
            assert (ready.status_code, ready.json()["reason"]) == (
                503,
                "the flow is draining (it was asked to stop)",
            )
            await handle.wait()
            live = await client.get("/health/live")
            assert (live.status_code, live.json()) == (
                503,
                {"live": False, "reason": "the flow has ended"},
            )
        tg.cancel_scope.cancel()
    assert written == [1]


@pytest.mark.anyio
async def test_other_paths_and_methods_are_refused() -> None:
    async with anyio.create_task_group() as tg:
        handle = Flow("f").source(Connecting()).sink(print).start(tg)
        port = await tg.start(serve_health, handle, "127.0.0.1", 0)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            missing = await client.get("/healthz")
            assert missing.status_code == 404
            assert "/metrics, /health/live, /health/ready" in missing.text
            posted = await client.post("/metrics", content=b"x")
            assert (posted.status_code, posted.headers["allow"]) == (405, "GET, HEAD")
            head = await client.head("/health/live")
            assert (head.status_code, head.content) == (200, b"")
            query = await client.get("/health/live?verbose=1")
            assert query.status_code == 200
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_a_malformed_request_gets_400_and_the_server_goes_on() -> None:
    async with anyio.create_task_group() as tg:
        handle = Flow("f").source(Connecting()).sink(print).start(tg)
        port = await tg.start(serve_health, handle, "127.0.0.1", 0)
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            await stream.send(b"NOT HTTP AT ALL\r\n\r\n")
            answer = b""
            try:
                while True:
                    answer += await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                pass
        assert answer.startswith(b"HTTP/1.1 400 ")
        async with httpx.AsyncClient() as client:
            live = await client.get(f"http://127.0.0.1:{port}/health/live")
        assert live.status_code == 200
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_cancelling_it_closes_the_port_and_every_connection() -> None:
    tasks_before = running_tasks()
    async with anyio.create_task_group() as flow_tg:
        handle = Flow("f").source(Connecting()).sink(print).start(flow_tg)
        async with anyio.create_task_group() as tg:
            port = await tg.start(serve_health, handle, "127.0.0.1", 0)
            # An idle keep-alive connection, and one that sent half a request.
            idle = await anyio.connect_tcp("127.0.0.1", port)
            half = await anyio.connect_tcp("127.0.0.1", port)
            await half.send(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            async with httpx.AsyncClient() as client:
                assert (await client.get(f"http://127.0.0.1:{port}/metrics")).status_code == 200
            tg.cancel_scope.cancel()
        for stream in (idle, half):
            with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
                await stream.receive()  # the server closed its end
            await stream.aclose()
        with pytest.raises(OSError, match="All connection attempts failed"):  # refused
            await anyio.connect_tcp("127.0.0.1", port)
        flow_tg.cancel_scope.cancel()
    assert running_tasks() == tasks_before


@pytest.mark.anyio
async def test_a_taken_port_and_bad_arguments_are_refused_at_the_call() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        async with anyio.create_task_group() as tg:
            handle = Flow("f").source(Connecting()).sink(print).start(tg)
            with pytest.raises(OSError, match="in use"):
                await tg.start(serve_health, handle, "127.0.0.1", port)
            bad: list[tuple[Any, Any, type[Exception], str]] = [
                ("127.0.0.1", 70000, ValueError, r"serve_health\(\): port must be a port number"),
                ("127.0.0.1", "9100", TypeError, r"serve_health\(\): port must be a port number"),
                ("", 9100, TypeError, r"serve_health\(\): host must be a host name"),
            ]
            for host, bad_port, error, message in bad:
                with pytest.raises(error, match=message):
                    await serve_health(handle, host, bad_port)
            tg.cancel_scope.cancel()
