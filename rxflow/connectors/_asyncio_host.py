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
from concurrent.futures import Future
from types import TracebackType
from typing import Any, Protocol, TypeVar, cast

import anyio
import anyio.abc
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
        self._calls: _Calls | None = None  # where hosted calls run, on the portal's loop
        self._serving: Future[None] | None = None  # the task that holds _calls open

    @property
    def hosted(self) -> bool:
        """Whether calls go to an asyncio loop in another thread (the caller runs trio)."""
        return self._portal is not None

    async def __aenter__(self) -> AsyncioHost:
        if sniffio.current_async_library() != "asyncio":
            import trio

            self._trio_token = token = trio.lowlevel.current_trio_token()
            portal_cm = start_blocking_portal("asyncio", name="rxflow asyncio host")
            calls = _Calls(token)

            def start() -> tuple[BlockingPortal, asyncio.AbstractEventLoop, Future[None]]:
                portal = portal_cm.__enter__()
                serving, loop = portal.start_task(calls.serve, name="rxflow hosted calls")
                return portal, loop, serving

            # Not abandoned when cancelled (anyio's default): the portal is always kept, to
            # be stopped by __aexit__.
            self._portal_cm = portal_cm
            self._portal, self._loop, self._serving = await anyio.to_thread.run_sync(start)
            self._calls = calls
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._portal_cm is not None:
            portal_cm, self._portal_cm, self._portal = self._portal_cm, None, None
            loop, calls, serving = self._loop, self._calls, self._serving
            self._loop = self._calls = self._serving = None
            assert loop is not None
            assert calls is not None
            assert serving is not None

            def stop() -> None:
                # Every call was awaited to its end by its caller: the task group is empty.
                loop.call_soon_threadsafe(calls.close)
                with contextlib.suppress(Exception):
                    serving.result()
                portal_cm.__exit__(None, None, None)

            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(stop)

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
        if self._calls is None:
            return await function(*args)
        import trio

        loop = self._loop
        assert loop is not None
        # Handed over without waiting for the client's loop to take it (the portal's
        # start_task_soon blocks this thread until that loop has started the task): one
        # wake-up of each thread per call, not two round trips.
        call: _Call = _Call(function, args)
        call.done = done = trio.Event()
        loop.call_soon_threadsafe(self._calls.start, call)
        try:
            await done.wait()
        except trio.Cancelled:
            loop.call_soon_threadsafe(call.cancel)
            with trio.CancelScope(shield=True):
                await done.wait()
                if call.completed and close_if_cancelled is not None:
                    with contextlib.suppress(Exception):  # the cancellation matters
                        await self.call(close_if_cancelled, cast(T, call.value))
            raise
        return cast(T, call.outcome())

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


class _Call:
    """One hosted call. ``done`` is set (on the caller's loop) once its task has ended;
    every other field is written on the client's loop before that, and read after it."""

    __slots__ = (
        "args",
        "cancel_requested",
        "completed",
        "done",
        "error",
        "function",
        "scope",
        "value",
    )

    def __init__(self, function: Callable[..., Awaitable[Any]], args: tuple[Any, ...]) -> None:
        self.function, self.args = function, args
        self.done: Any = None  # a trio.Event
        self.value: Any = None
        self.completed = False  # the function returned (even if cancelled as it did)
        self.error: BaseException | None = None
        self.cancel_requested = False
        self.scope: anyio.CancelScope | None = None  # while it runs

    def cancel(self) -> None:
        """On the client's loop: the caller was cancelled."""
        self.cancel_requested = True
        if self.scope is not None:
            self.scope.cancel()

    def outcome(self) -> Any:
        """The result, or the error, of a call that ended (and was not cancelled)."""
        if self.error is not None:
            error, self.error = self.error, None  # no cycle through its traceback
            if isinstance(error, asyncio.CancelledError):  # the host closed under it
                raise RuntimeError(
                    "a call to the asyncio client was cancelled because the client's loop "
                    "stopped; make every call inside the AsyncioHost block"
                ) from error
            raise error
        assert self.completed  # only ever cancelled by its caller, who does not ask
        return self.value


class _Calls:
    """The task group, on the client's loop, that hosted calls run in (so that none
    outlives the host: it is closed, and waited for, when the host exits)."""

    def __init__(self, token: Any) -> None:
        self._token = token  # the caller's trio loop
        self._tasks: asyncio.TaskGroup | None = None
        self._closed: asyncio.Event | None = None

    async def serve(self, *, task_status: anyio.abc.TaskStatus[Any]) -> None:
        self._closed = asyncio.Event()
        async with asyncio.TaskGroup() as tasks:
            self._tasks = tasks
            task_status.started(asyncio.get_running_loop())
            await self._closed.wait()
        self._tasks = None

    def close(self) -> None:
        assert self._closed is not None
        self._closed.set()

    def start(self, call: _Call) -> None:
        """On the client's loop (from ``call_soon_threadsafe``): run the call."""
        if self._tasks is None:
            call.error = RuntimeError("the asyncio host is closed; make calls inside its block")
            self._token.run_sync_soon(call.done.set)
            return
        self._tasks.create_task(self._run(call))

    async def _run(self, call: _Call) -> None:
        # The task's context is a copy of the caller's (call_soon_threadsafe took it), so
        # contextvars set there are seen here; but the library running here is asyncio.
        sniffio.current_async_library_cvar.set("asyncio")
        try:
            with anyio.CancelScope() as scope:
                call.scope = scope
                if call.cancel_requested:  # before the task started
                    scope.cancel()
                call.value = await call.function(*call.args)
                call.completed = True
        except BaseException as error:  # handed to the caller, who raises it
            call.error = error
        finally:
            call.scope = None
            self._token.run_sync_soon(call.done.set)


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
