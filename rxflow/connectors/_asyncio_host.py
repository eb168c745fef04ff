"""Running an asyncio-only client on both anyio backends.

Most broker clients (nats-py, redis-py's asyncio API, aiomqtt, aio-pika, asyncpg) only run on
asyncio. Under asyncio a connector calls them directly. Under trio, :class:`AsyncioHost`
starts an asyncio event loop in a worker thread (anyio's blocking portal) and runs each call
there, so the connector's API is the same on both backends.

A call cancelled on the trio side cancels its task on the asyncio loop and waits for it to
finish, so no client coroutine outlives the call that started it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType
from typing import Any, Protocol, TypeVar, cast

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
        self._loop: asyncio.AbstractEventLoop | None = None  # the portal's

    @property
    def hosted(self) -> bool:
        """Whether calls go to an asyncio loop in another thread (the caller runs trio)."""
        return self._portal is not None

    async def __aenter__(self) -> AsyncioHost:
        if sniffio.current_async_library() != "asyncio":
            import trio

            self._trio_token = trio.lowlevel.current_trio_token()
            portal_cm = start_blocking_portal("asyncio", name="rxflow asyncio host")

            def start() -> tuple[BlockingPortal, asyncio.AbstractEventLoop]:
                portal = portal_cm.__enter__()
                return portal, portal.call(asyncio.get_running_loop)

            # Not abandoned when cancelled (anyio's default): the portal is always kept, to
            # be stopped by __aexit__.
            self._portal_cm = portal_cm
            self._portal, self._loop = await anyio.to_thread.run_sync(start)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._portal_cm is not None:
            portal_cm, self._portal_cm, self._portal = self._portal_cm, None, None
            self._loop = None
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(portal_cm.__exit__, None, None, None)

    async def call(
        self,
        function: Callable[..., Awaitable[T]],
        *args: Any,
        close_if_cancelled: Callable[[T], Awaitable[object]] | None = None,
    ) -> T:
        """Await ``function(*args)`` on the client's loop and return its result.

        Cancelled on the caller's side, the call is cancelled on the client's loop and
        waited for until it has unwound, then the caller's cancellation goes on. A call
        that completed all the same (its result was on its way) has its result passed to
        ``close_if_cancelled``, on the client's loop, first: give it for a call that opens
        something (a connection), so that a cancelled open leaves nothing open.
        """
        if self._portal is None:
            return await function(*args)
        import trio

        token, loop = self._trio_token, self._loop
        assert loop is not None
        cancel: _Cancel = _Cancel()

        async def run_there() -> T | _Cancel:
            with anyio.CancelScope() as scope:
                cancel.scope = scope
                if cancel.requested:  # before the task started
                    scope.cancel()
                return await function(*args)
            return cancel  # the scope caught the cancellation: the call did not complete

        # The portal's own way to cancel (``future.cancel()``) races with the task's end in
        # anyio 4 (a callback from this thread reads the task's scope after the task has
        # cleared it, and logs an AttributeError): the cancel is handed over on the loop.
        future = self._portal.start_task_soon(run_there)
        done = trio.Event()  # the task has ended: the future holds its outcome
        future.add_done_callback(lambda _: token.run_sync_soon(done.set))
        try:
            await done.wait()
        except trio.Cancelled:
            loop.call_soon_threadsafe(cancel.request)
            with trio.CancelScope(shield=True):
                await done.wait()
                completed = not future.cancelled() and future.exception() is None
                if completed and close_if_cancelled is not None:
                    result = future.result()
                    if result is not cancel:
                        with contextlib.suppress(Exception):  # the cancellation matters
                            await self.call(close_if_cancelled, result)
            raise
        outcome = future.result()
        assert outcome is not cancel  # only ever cancelled from here
        return cast(T, outcome)

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


class _Cancel:
    """A hosted call's cancellation, handed to the client's loop (read and set there only)."""

    __slots__ = ("requested", "scope")

    def __init__(self) -> None:
        self.requested = False
        self.scope: anyio.CancelScope | None = None

    def request(self) -> None:
        self.requested = True
        if self.scope is not None:
            self.scope.cancel()


class ClientPart(Protocol):
    """A consumer, subscriber or publisher of an asyncio-only client: it is opened and
    closed on the client's loop."""

    async def open(self) -> None: ...
    async def close(self) -> None: ...


@contextlib.asynccontextmanager
async def closed_on_failure(
    close: Callable[[], Awaitable[object]], *, close_timeout: float
) -> AsyncIterator[None]:
    """Around a client's connect, on the client's loop: if the block fails or is cancelled,
    ``close()`` the half-made client before the error goes on.

    Client libraries leave a connect that was cancelled half-way as it was: its tasks go
    on running and its socket stays open until the object is collected. The close is
    shielded and abandoned after ``close_timeout`` seconds; its own failure is not reported (the
    connect's error or cancellation is what the caller needs).

    Example:
        >>> import anyio
        >>> class Client:
        ...     async def connect(self): raise ConnectionRefusedError("no server")
        ...     async def close(self): print("closed")
        >>> async def main():
        ...     client = Client()
        ...     async with closed_on_failure(client.close, close_timeout=1.0):
        ...         await client.connect()
        >>> anyio.run(main)
        Traceback (most recent call last):
        ...
        ConnectionRefusedError: no server
    """
    try:
        yield
    except BaseException:
        with anyio.move_on_after(close_timeout, shield=True), contextlib.suppress(Exception):
            await close()
        raise


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
