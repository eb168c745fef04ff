"""Helpers the broker tests share: reading a few messages, polling a condition, and faults
(a TCP proxy that drops its links, a server that never answers, leaked threads)."""

from __future__ import annotations

import contextlib
import inspect
import socket
import threading
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import anyio
import anyio.abc

from rxflow.connectors import Message


async def take(messages: AsyncIterable[Message[Any]], count: int) -> list[Message[Any]]:
    """The next ``count`` messages (waiting for the broker up to 10 s)."""
    taken: list[Message[Any]] = []
    with anyio.fail_after(10):
        async for message in messages:
            taken.append(message)
            if len(taken) == count:
                break
    return taken


async def wait_until(condition: Callable[[], Awaitable[bool] | bool]) -> None:
    """Poll ``condition`` until it holds (a broker works at its own pace, and says nothing)."""
    with anyio.fail_after(10):
        while True:
            outcome = condition()
            if await outcome if inspect.isawaitable(outcome) else outcome:
                return
            await anyio.sleep(0.01)


class TcpProxy:
    """Forwards TCP connections to a server until :meth:`cut` drops them all at once
    (:meth:`drop` drops them and keeps listening: the server comes back at once).

    A real network fault for a client that is connected through it: the client's socket
    sees the peer close mid-stream, whatever the client library.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.connections = 0  # accepted so far: a reconnect shows as one more
        self._scope = anyio.CancelScope()
        self._links: set[anyio.CancelScope] = set()

    async def run(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        with self._scope:
            async with await anyio.create_tcp_listener(local_host="127.0.0.1") as listener:
                self.port = listener.extra(anyio.abc.SocketAttribute.local_port)
                task_status.started()
                await listener.serve(self._forward)

    async def _forward(self, client: anyio.abc.SocketStream) -> None:
        self.connections += 1
        server = await anyio.connect_tcp("127.0.0.1", self.target_port)
        async with client, server, anyio.create_task_group() as tg:
            self._links.add(tg.cancel_scope)

            async def pipe(a: anyio.abc.SocketStream, b: anyio.abc.SocketStream) -> None:
                try:
                    async for chunk in a:
                        await b.send(chunk)
                except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                    pass
                finally:
                    tg.cancel_scope.cancel()  # one side ended: end both

            tg.start_soon(pipe, client, server)
            tg.start_soon(pipe, server, client)

    def cut(self) -> None:
        """Drop every forwarded connection and stop listening."""
        self._scope.cancel()

    def drop(self) -> None:
        """Drop every forwarded connection; new ones are forwarded."""
        for link in self._links:
            link.cancel()
        self._links.clear()


@contextlib.asynccontextmanager
async def tcp_proxy(target_port: int) -> AsyncIterator[TcpProxy]:
    """A :class:`TcpProxy` to ``target_port``, listening until the block ends."""
    async with anyio.create_task_group() as tg:
        proxy = TcpProxy(target_port)
        await tg.start(proxy.run)
        yield proxy
        tg.cancel_scope.cancel()


@contextlib.contextmanager
def black_hole() -> Iterator[int]:
    """A port whose server hangs: the kernel completes each connection (up to the backlog)
    and no one ever reads or answers."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        yield server.getsockname()[1]


POOL_THREADS = ("asyncio_", "Trio thread", "AnyIO worker")  # idle pool workers, reused


def leftover_threads(before: set[threading.Thread]) -> list[str]:
    """Threads started since ``before`` that are still alive, other than idle pool workers."""
    return [
        thread.name
        for thread in threading.enumerate()
        if thread not in before and not thread.name.startswith(POOL_THREADS)
    ]


@contextlib.contextmanager
def nothing_left_running() -> Iterator[None]:
    """Check that the block leaves no task of the caller's backend and no thread behind."""
    threads = set(threading.enumerate())
    tasks = len(anyio.get_running_tasks())
    yield
    assert len(anyio.get_running_tasks()) == tasks
    assert leftover_threads(threads) == []
