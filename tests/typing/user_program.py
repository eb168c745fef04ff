"""A program that uses rxflow's public API the way a user would, for ``mypy --strict``.

tests/test_typing.py type-checks this file and fails on any error. Each ``assert_type``
states what a user's type checker must infer: had a name come out as ``Any``, the
assertion would fail, and so would a ``type: ignore`` that no longer catches a mistake
(``warn_unused_ignores`` is part of ``--strict``). It is also a real program: running it
runs every pipeline in it.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, assert_type

import anyio
import anyio.lowlevel
import attrs
from reactivex import Observable
from reactivex import operators as ops

from rxflow import (
    DeadLetter,
    Failure,
    Flow,
    FlowHandle,
    Pipe,
    Retry,
    Skip,
    Window,
    map_async,
    open_pipe,
    session,
    sliding,
    tumbling,
)
from rxflow.connectors import (
    Message,
    file_sink,
    jetstream_source,
    postgres_sink,
    read_file,
    redis_stream_source,
    tcp_source,
)
from rxflow.flow.metrics import FlowSnapshot, StageMetrics, StageSnapshot
from rxflow.map_async import MapAsync
from rxflow.testing import MarbleContext
from rxflow.windows import EventTimeWindows, ProcessingTimeWindows


@attrs.frozen
class Click:
    user: str
    at: float


def click_time(click: Click) -> float:
    return click.at


async def clicks() -> AsyncIterator[Click]:
    for n in range(6):
        yield Click(user=f"user{n % 2}", at=float(n))


async def lookup(user_id: int) -> str:
    await anyio.lowlevel.checkpoint()
    return f"user-{user_id}"


def double(n: int) -> int:
    return n * 2


def user_of(click: Click) -> str:
    return click.user


def is_big(n: int) -> bool:
    return n > 1


def tenfold(n: int) -> int:
    return n * 10


# -- open_pipe with operators ------------------------------------------------------------


async def operators() -> None:
    # reactivex's operators are generic functions: a typed function tells mypy their item
    # types (a lambda, checked before it knows the source, would not).
    async with open_pipe(clicks(), ops.map(user_of)) as users:
        assert_type(users, Pipe[str])
        async for user in users:
            assert_type(user, str)
    async with open_pipe([1, 2, 3], ops.filter(is_big), ops.map(double)) as big:
        assert_type(await big.receive(), int)
    async with open_pipe(
        clicks(), ops.map(user_of), ops.map(len), ops.filter(is_big), ops.map(double), ops.map(str)
    ) as longer:
        assert_type(longer, Pipe[str])
        assert [length async for length in longer] == ["10"] * 6


# -- windows -----------------------------------------------------------------------------


async def windows() -> None:
    minutes = tumbling(60.0)
    assert_type(minutes, ProcessingTimeWindows)
    assert_type(minutes.metrics, StageMetrics)
    async with open_pipe(clicks(), minutes) as pipe:
        async for window in pipe:
            assert_type(window, Window[Click])
            assert_type(window.items, tuple[Click, ...])
            assert_type(window.start, float)

    # Event time with a typed timestamp function: the operator knows its items.
    by_time = tumbling(2.0, timestamp=click_time, late="side")
    assert_type(by_time, EventTimeWindows[Click])
    late: Observable[Click] = by_time.late_items
    late.subscribe(lambda click: print("late", click.user))
    assert_type(by_time.late_dropped, int)
    async with open_pipe(clicks(), by_time) as pipe:
        async for window in pipe:
            assert_type(window, Window[Click])

    # Lambdas say nothing of the items: the windows are still typed by the source, and
    # late_items still takes any subscriber.
    recent = sliding(4.0, 2.0, timestamp=lambda c: c.at, key=lambda c: c.user, late="side")
    recent.late_items.subscribe(lambda click: print("late", click))
    async with open_pipe(clicks(), recent) as pipe:
        async for window in pipe:
            assert_type(window, Window[Click])

    visits = session(lambda c: c.user, 30.0)
    assert_type(visits, ProcessingTimeWindows)
    event_visits = session(lambda c: c.user, 30.0, timestamp=click_time, idle_timeout=5.0)
    assert_type(event_visits, EventTimeWindows[Click])

    if TYPE_CHECKING:  # what the call refuses, the type checker refuses too
        tumbling(1.0, max_count=10, timestamp=click_time)  # type: ignore[call-overload]
        tumbling(1.0, out_of_orderness=2.0)  # type: ignore[call-overload]
        tumbling("1s")  # type: ignore[call-overload]

    bare: Window = Window(key=None, start=0.0, end=1.0, items=(1, 2))  # no parameter needed
    assert_type(Window(key=None, start=0.0, end=1.0, items=(1, 2)), Window[int])
    assert len(bare) == 2


# -- map_async, async and plain ------------------------------------------------------------


async def calls() -> None:
    names = map_async(lookup, concurrency=4)
    assert_type(names, MapAsync[int, str])
    doubled = map_async(double, on_error=Retry(attempts=3, then=Skip()))
    assert_type(doubled, MapAsync[int, int])
    async with open_pipe([1, 2, 3], names) as pipe:
        async for name in pipe:
            assert_type(name, str)
    async with open_pipe([1, 2, 3], doubled, ops.map(str)) as strings:
        assert_type(strings, Pipe[str])
        assert [s async for s in strings] == ["2", "4", "6"]
    if TYPE_CHECKING:
        map_async(lookup, concurrency="4")  # type: ignore[call-overload]


# -- Flow ------------------------------------------------------------------------------------


async def count_users(window: Window[Click]) -> int:
    return len({click.user for click in window.items})


async def flows() -> None:
    counts: list[int] = []
    failures: list[Failure] = []

    async def save(count: int) -> None:
        counts.append(count)

    flow = (
        Flow("clicks")
        .source(clicks(), name="clicks")
        .pipe(tumbling(2.0, timestamp=click_time), map_async(count_users))
        .sink(save, on_error=DeadLetter(failures.append))
    )
    assert_type(flow, Flow)
    snapshot = await flow.run()
    assert_type(snapshot, FlowSnapshot)
    assert_type(snapshot["save"], StageSnapshot)
    assert_type(snapshot["save"].emitted, int)
    assert counts == [2, 2, 2]
    assert snapshot["tumbling"].received == 6

    async with anyio.create_task_group() as tg:
        handle = Flow().source(range(3)).sink(counts.append).start(tg)
        assert_type(handle, FlowHandle)
        assert_type(await handle.wait(), FlowSnapshot)


# -- connectors (typed, though only the file ones run here) -----------------------------------


async def connectors(path: str) -> None:
    async with file_sink(path, encoder="json") as sink:
        await sink.send_batch([{"n": 1}, {"n": 2}])
    source: AbstractAsyncContextManager[AsyncIterable[Message[Any]]] = read_file(path)
    async with source as lines:
        async for line in lines:
            assert_type(line, Message[Any])
            assert_type(line.key, str | bytes | None)
            await line.ack()
    async with open_pipe(read_file(path, codec="json"), ops.map(value_of)) as values:
        assert [value async for value in values] == [{"n": 1}, {"n": 2}]
    if TYPE_CHECKING:  # the lazily imported names are the real, typed functions
        tcp_source("127.0.0.1", "9000")  # type: ignore[arg-type]
        jetstream_source("nats://localhost:4222", "S", "s.>", durable=1)  # type: ignore[arg-type]
        redis_stream_source(stream="s")  # type: ignore[call-arg]
        postgres_sink(42, "t", ["id"])  # type: ignore[arg-type]
    message: Message[bytes] = Message(b"raw", key="k")
    assert_type(message.with_value(message.value.decode()), Message[str])


# -- marbles ---------------------------------------------------------------------------------


def marbles() -> None:
    with MarbleContext() as m:
        source = m.cold("-a-b-|", {"a": 1, "b": 2})
        m.expect(source.pipe(ops.map(tenfold))).to_be("-a-b-|", {"a": 10, "b": 20})


def value_of(message: Message[Any]) -> Any:
    return message.value


async def main(path: str) -> None:
    await operators()
    await windows()
    await calls()
    await flows()
    await connectors(path)
    marbles()
