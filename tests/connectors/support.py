"""Helpers the broker tests share: reading a few messages, polling a condition, faults (a TCP
proxy that drops its links, a server that never answers), what cancelling left behind
(tasks, threads, file descriptors, noise), and the checks that credentials never show."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import importlib.util
import inspect
import logging
import os
import random
import socket
import sys
import threading
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel
import attrs
import pytest

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


# -- what cancelling leaves behind (tests/connectors/test_cancellation.py, the contract) -----


def open_fds() -> collections.Counter[str]:
    """The open file descriptors, by kind (``socket``, ``pipe``, ``anon_inode:[eventpoll]``)."""
    kinds: collections.Counter[str] = collections.Counter()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listing's own, closed since
            kinds[os.readlink(f"/proc/self/fd/{fd}").partition(":[")[0]] += 1
    return kinds


def running_tasks(ignore: tuple[str, ...] = ()) -> collections.Counter[str]:
    """The tasks running now, by what they run, other than those whose name starts with one
    of ``ignore`` (servers the test runs itself: a server's connection task ends when it sees
    the client's close, a loop turn or so later)."""
    try:
        tasks = [_describe(task.get_coro()) for task in asyncio.all_tasks()]
    except RuntimeError:  # trio
        tasks = [task.name for task in anyio.get_running_tasks()]
    return collections.Counter(name for name in tasks if not name.startswith(ignore))


def _describe(coroutine: Any) -> str:
    frame = getattr(coroutine, "cr_frame", None)
    if frame is None:
        return repr(coroutine)
    return f"{frame.f_globals.get('__name__')}.{frame.f_code.co_qualname}"


@attrs.define
class Leftovers:
    """What a run of cancels left running or open, compared with before."""

    tasks: collections.Counter[str]
    threads: list[str]
    fds: dict[str, int]

    def describe(self, what: str) -> str:
        return (
            f"{what} left {sum(self.tasks.values())} tasks ({dict(self.tasks)}), threads "
            f"{self.threads} and file descriptors {self.fds}"
        )

    @property
    def nothing(self) -> bool:
        return (sum(self.tasks.values()), self.threads, self.fds) == (0, [], {})


async def leftovers_of(
    cancels: Callable[[list[float | int]], Awaitable[None]],
    delays: list[float | int],
    *,
    within: float,
    ignore_tasks: tuple[str, ...] = (),
) -> Leftovers:
    """Run ``cancels(delays)``; what it left running or open compared with before (after
    ``cancels`` of the first three delays as a warm-up, so that lazily made pools and loops
    are not counted)."""
    with anyio.fail_after(within):
        await cancels(delays[:3])
        gc.collect()  # no garbage of the warm-up is closed during the count
        threads = set(threading.enumerate())
        tasks, fds = running_tasks(ignore_tasks), open_fds()
        await cancels(delays)
        # A thread that ends on its own (asyncio's waitpid thread of a reaped child returns
        # just after handing the exit status over) is not left behind; one that does not
        # end within seconds is.
        for thread in set(threading.enumerate()) - threads:
            if not thread.name.startswith(POOL_THREADS):
                await anyio.to_thread.run_sync(thread.join, 5.0)
        # An in-process test server closes its end of a connection when its handler task
        # next runs after the client's close: let every task run until all wait, so that
        # only what stays open for good is counted.
        await anyio.wait_all_tasks_blocked()
        return Leftovers(
            tasks=running_tasks(ignore_tasks) - tasks,
            threads=leftover_threads(threads),
            fds=dict(open_fds() - fds),
        )


def random_delays(count: int, *, longest: float, seed: int = 11) -> list[float | int]:
    """A mix of cancel points: after a few loop turns (the first steps of what is
    cancelled), and at random times up to ``longest`` seconds."""
    rng = random.Random(seed)
    return [rng.randrange(12) if n % 3 == 0 else rng.uniform(0, longest) for n in range(count)]


async def after(delay: float | int) -> None:
    """Wait ``delay`` seconds (a float) or event-loop turns (an int)."""
    if isinstance(delay, int):
        for _ in range(delay):
            await anyio.lowlevel.checkpoint()
    else:
        await anyio.sleep(delay)


@contextlib.contextmanager
def nothing_printed(
    capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> Iterator[list[str]]:
    """Collect everything the block prints or reports: stderr, log records of warning level
    and up, unraisable exceptions, exceptions in threads, asyncio exception-handler calls
    (gc runs at the end, so that what is reported when an object is collected shows)."""
    noise: list[str] = []
    capfd.readouterr()
    caplog.clear()
    previous_unraisable, previous_excepthook = sys.unraisablehook, threading.excepthook
    sys.unraisablehook = lambda u: noise.append(f"unraisable: {u.exc_value!r} in {u.object!r}")
    threading.excepthook = lambda a: noise.append(f"thread {a.thread}: {a.exc_value!r}")
    try:
        with caplog.at_level(logging.WARNING), asyncio_handler_reports(noise):
            yield noise
            gc.collect()
    finally:
        sys.unraisablehook, threading.excepthook = previous_unraisable, previous_excepthook
    noise += [f"log {r.name} {r.levelname}: {r.getMessage()}" for r in caplog.records]
    if err := capfd.readouterr().err:
        noise.append(f"stderr: {err}")


@contextlib.contextmanager
def asyncio_handler_reports(noise: list[str]) -> Iterator[None]:
    """Under asyncio, report the loop's exception-handler calls (futures whose exception
    was never retrieved, tasks destroyed while pending, callback errors) as noise. (Hosted
    loops, under trio, have the default handler, which logs.)"""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # trio
        yield
        return
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _, context: noise.append(f"asyncio: {context}"))
    try:
        yield
    finally:
        gc.collect()  # what is reported when collected is reported now
        loop.set_exception_handler(previous)


# -- credentials never shown (tests/connectors/test_credentials.py, the contract) -----------

PASSWORD = "pw-Zq81xK"
TOKEN = "tok-Hh27vR"


def refused_port() -> int:
    """A loopback port nothing listens on (bound, then closed: connections are refused)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def texts_of(error: BaseException) -> list[str]:
    """``str`` and ``repr`` of the error, of every cause and context, and of a URL it
    carries."""
    texts: list[str] = []
    seen: set[int] = set()
    pending: list[BaseException] = [error]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        texts += [str(current), repr(current), repr(getattr(current, "url", None))]
        if isinstance(current, BaseExceptionGroup):
            pending += current.exceptions
        pending += [e for e in (current.__cause__, current.__context__) if e is not None]
    return texts


async def failure_of(
    opened: Callable[[], AbstractAsyncContextManager[Any]], item: Any = "x"
) -> BaseException:
    """What opening (and, for a sink, sending ``item`` to) the connector raised."""
    try:
        with anyio.fail_after(20):
            async with opened() as connector:
                if hasattr(connector, "send"):
                    await connector.send(item)
                else:
                    await anext(aiter(connector))
    except Exception as error:
        return error
    raise AssertionError("expected the connector to fail")


def assert_no_secret(error: BaseException, caplog: pytest.LogCaptureFixture) -> None:
    """Neither :data:`PASSWORD` nor :data:`TOKEN` in the error (its causes, their URLs) or in
    any log record."""
    for text in texts_of(error):
        assert PASSWORD not in text, text
        assert TOKEN not in text, text
    logged = caplog.text + "".join(record.getMessage() for record in caplog.records)
    assert PASSWORD not in logged
    assert TOKEN not in logged


async def runs_of(source: Any) -> list[list[Message[Any]]]:
    """Every run a source's ``next_run()`` hands over, until it ends."""
    runs: list[list[Message[Any]]] = []
    while True:
        try:
            runs.append(list(await source.next_run()))
        except StopAsyncIteration:
            return runs


async def values_through_a_bounded_pipe(
    source: Any, *, bound: int, count: int | None = None
) -> list[Any]:
    """The values of ``source`` (all, or the first ``count``) read through
    ``open_pipe(max_buffer_size=bound)`` by a consumer slower than the source, checking at
    every item that the pipe admitted at most ``bound`` items (and the one being pushed)
    ahead of the consumer, whatever the size of the source's runs. (No timeout here: under
    trio's MockClock it would fire while a worker thread reads; the caller guards.)"""
    from reactivex import operators as ops

    import rxflow

    passed = 0

    def counted(message: Message[Any]) -> Any:
        nonlocal passed
        passed += 1
        return message.value

    values = []
    async with rxflow.open_pipe(source, ops.map(counted), max_buffer_size=bound) as pipe:
        async for value in pipe:
            values.append(value)
            await anyio.lowlevel.checkpoint()  # slower than the source
            assert passed - len(values) <= bound + 1, (passed, len(values))
            if len(values) == count:
                break
    return values


EXAMPLES = Path(__file__).parents[2] / "examples"


def load_example(name: str) -> ModuleType:
    """``examples/<name>.py`` as a module (the scale-out tests drive the examples)."""
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # attrs resolves the module's annotations through it
    spec.loader.exec_module(module)
    return module
