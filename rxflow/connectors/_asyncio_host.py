"""Running an asyncio-only client on both anyio backends.

Most broker clients (nats-py, redis-py's asyncio API, aiomqtt, aio-pika, asyncpg) only run on
asyncio. Under asyncio a connector calls them directly. Under trio, :class:`AsyncioHost`
starts an asyncio event loop in a worker thread (anyio's blocking portal) and runs each call
there, so the connector's API is the same on both backends.

A call cancelled on the trio side cancels its task on the asyncio loop and waits for it to
finish, so no client coroutine outlives the call that started it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType
from typing import Any, Protocol, TypeVar

import anyio
import sniffio
from anyio.from_thread import BlockingPortal, start_blocking_portal

T = TypeVar("T")


class AsyncioHost:
    """Where a connector runs its asyncio-only client: the caller's loop or a portal's.

    Use it as an async context manager around everything that touches the client, and
    route every client coroutine through :meth:`call`.

    Example:
        >>> import anyio, asyncio
        >>> async def client_call(n):
        ...     await asyncio.sleep(0)  # asyncio-only code
        ...     return n + 1
        >>> async def main():
        ...     async with AsyncioHost() as host:
        ...         return await host.call(client_call, 1)
        >>> anyio.run(main, backend="trio")
        2
    """

    def __init__(self) -> None:
        self._portal_cm: contextlib.AbstractContextManager[BlockingPortal] | None = None
        self._portal: BlockingPortal | None = None
        self._trio_token: Any = None

    @property
    def hosted(self) -> bool:
        """Whether calls go to an asyncio loop in another thread (the caller runs trio)."""
        return self._portal is not None

    async def __aenter__(self) -> AsyncioHost:
        if sniffio.current_async_library() != "asyncio":
            import trio

            self._trio_token = trio.lowlevel.current_trio_token()
            self._portal_cm = start_blocking_portal("asyncio", name="rxflow asyncio host")
            self._portal = await anyio.to_thread.run_sync(self._portal_cm.__enter__)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._portal_cm is not None:
            portal_cm, self._portal_cm, self._portal = self._portal_cm, None, None
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(portal_cm.__exit__, None, None, None)

    async def call(self, function: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Await ``function(*args)`` on the client's loop and return its result."""
        if self._portal is None:
            return await function(*args)
        import trio

        token = self._trio_token
        ended = trio.Event()  # the coroutine returned, raised or was cancelled

        async def run_there() -> T:
            try:
                return await function(*args)
            finally:
                token.run_sync_soon(ended.set)

        future = self._portal.start_task_soon(run_there)
        done = trio.Event()  # the future holds the result
        future.add_done_callback(lambda _: token.run_sync_soon(done.set))
        try:
            await done.wait()
        except trio.Cancelled:
            # A cancelled future is done at once, before the task has unwound: wait for
            # the coroutine itself, so that nothing of this call runs on afterwards.
            future.cancel()
            with trio.CancelScope(shield=True):
                await ended.wait()
            raise
        return future.result()

    def call_soon_here(self, function: Callable[..., object], *args: Any) -> None:
        """From a client callback (on the client's loop), run ``function`` on the caller's
        loop. Under asyncio that is the same loop: it runs at once."""
        if self._portal is None:
            function(*args)
        else:
            self._trio_token.run_sync_soon(function, *args)

    async def iterate(self, iterator: AsyncIterator[T]) -> AsyncIterator[T]:
        """Iterate a client's async iterator from the caller's loop."""
        while True:
            try:
                item = await self.call(iterator.__anext__)
            except StopAsyncIteration:
                return
            yield item


class ClientPart(Protocol):
    """A consumer, subscriber or publisher of an asyncio-only client: it is opened and
    closed on the client's loop."""

    async def open(self) -> None: ...
    async def close(self) -> None: ...


@contextlib.asynccontextmanager
async def open_on_host(part: ClientPart, *, close_timeout: float) -> AsyncIterator[AsyncioHost]:
    """Open ``part`` on the client's loop for the block, and close it there however the
    block ends (shielded: a cancelled block still closes its connection; a close that takes
    more than ``close_timeout`` seconds is abandoned)."""
    async with AsyncioHost() as host:
        try:
            await host.call(part.open)
            yield host
        finally:
            with anyio.move_on_after(close_timeout, shield=True):
                await host.call(part.close)
