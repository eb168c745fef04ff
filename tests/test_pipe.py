"""open_pipe with pulled sources: order, the backpressure bound, time, errors, cleanup."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
import reactivex
from reactivex import operators as ops
from support import TrackedSource, running_tasks

from rxflow import open_pipe

pytestmark = pytest.mark.anyio


async def slow_consumer_step() -> None:
    """A consumer that is slower than the pump: it lets the loop run several times per item."""
    for _ in range(3):
        await anyio.lowlevel.checkpoint()


# -- order and content -------------------------------------------------------------------


@pytest.mark.parametrize("max_buffer_size", [0, 1, 2, 7, 128])
async def test_outputs_arrive_complete_and_in_order(max_buffer_size: int) -> None:
    source = TrackedSource(500)
    async with open_pipe(
        source,
        ops.map(lambda n: n * 3),
        ops.filter(lambda n: n % 2 == 0),
        max_buffer_size=max_buffer_size,
    ) as pipe:
        received = [item async for item in pipe]
    assert received == [n * 3 for n in range(500) if (n * 3) % 2 == 0]
    assert pipe.stats().admitted == 500
    assert source.closed


async def test_plain_iterables_and_receive_streams_are_sources() -> None:
    async with open_pipe(iter([3, 1, 2]), ops.to_list()) as pipe:
        assert [x async for x in pipe] == [[3, 1, 2]]

    send, receive = anyio.create_memory_object_stream[str](4)
    async with send:
        for word in ("a", "b"):
            await send.send(word)
    async with open_pipe(receive, ops.map(str.upper)) as pipe:
        assert [x async for x in pipe] == ["A", "B"]


async def test_an_operator_that_emits_many_items_per_input_delivers_them_all() -> None:
    async with open_pipe(
        range(4), ops.flat_map(lambda n: reactivex.from_iterable(range(n * 50))), max_buffer_size=4
    ) as pipe:
        received = [x async for x in pipe]
    assert sorted(received) == sorted(x for n in range(4) for x in range(n * 50))


async def test_receive_reports_the_end_with_end_of_stream() -> None:
    async with open_pipe([1]) as pipe:
        assert await pipe.receive() == 1
        with pytest.raises(anyio.EndOfStream):
            await pipe.receive()


# -- backpressure ------------------------------------------------------------------------


@pytest.mark.parametrize("max_buffer_size", [1, 4, 32])
async def test_a_slow_consumer_holds_the_source_to_the_buffer_bound(max_buffer_size: int) -> None:
    source = TrackedSource()  # endless
    largest_gap = 0
    async with open_pipe(source, ops.map(lambda n: n + 1), max_buffer_size=max_buffer_size) as pipe:
        async for item in pipe:
            await slow_consumer_step()
            largest_gap = max(largest_gap, source.pulled - item)
            if item == 2_000:
                break
    # Items pulled from the source and not yet received never exceed the bound.
    assert 1 <= largest_gap <= max_buffer_size
    assert source.closed


async def test_with_buffer_size_zero_the_source_is_pulled_only_on_demand() -> None:
    source = TrackedSource()
    async with open_pipe(source, max_buffer_size=0) as pipe:
        for expected in range(50):
            assert await pipe.receive() == expected
            await slow_consumer_step()
            assert source.pulled == expected + 1


async def test_stats_count_what_was_admitted_and_delivered() -> None:
    async with open_pipe(TrackedSource(), max_buffer_size=8) as pipe:
        for _ in range(20):
            await pipe.receive()
        await slow_consumer_step()
        stats = pipe.stats()
    assert stats.delivered == 20
    assert stats.admitted - stats.delivered == stats.buffered
    assert 0 < stats.buffered <= 8
    assert stats.dropped == 0


# -- errors ---------------------------------------------------------------------------


async def test_a_source_error_arrives_after_the_items_before_it_as_the_original_exception() -> None:
    async def failing() -> Any:
        yield 1
        yield 2
        raise ConnectionResetError("peer went away")

    received = []
    with pytest.raises(ConnectionResetError, match="peer went away") as caught:
        async with open_pipe(failing(), ops.map(lambda n: n * 10)) as pipe:
            async for item in pipe:
                received.append(item)
    assert received == [10, 20]
    assert any("raised by its source" in note for note in caught.value.__notes__)


async def test_an_operator_error_ends_the_pipe_after_earlier_items() -> None:
    source = TrackedSource()
    received = []
    with pytest.raises(ZeroDivisionError) as caught:
        async with open_pipe(source, ops.map(lambda n: 10 // (3 - n))) as pipe:
            async for item in pipe:
                received.append(item)
    assert received == [3, 5, 10]
    assert any("raised by its operators" in note for note in caught.value.__notes__)
    assert source.closed


async def test_the_error_is_raised_once_then_the_stream_has_ended() -> None:
    async with open_pipe([1, 0], ops.map(lambda n: 1 // n)) as pipe:
        assert await pipe.receive() == 1
        with pytest.raises(ZeroDivisionError):
            await pipe.receive()
        with pytest.raises(anyio.EndOfStream):
            await pipe.receive()


async def test_operators_can_handle_source_errors() -> None:
    async def failing() -> Any:
        yield "a"
        raise ValueError("broken record")

    async with open_pipe(failing(), ops.catch(reactivex.of("fallback"))) as pipe:
        assert [x async for x in pipe] == ["a", "fallback"]


async def test_an_exception_in_the_consumer_body_propagates_unwrapped() -> None:
    source = TrackedSource()
    with pytest.raises(LookupError, match="consumer bug"):
        async with open_pipe(source) as pipe:
            await pipe.receive()
            raise LookupError("consumer bug")
    assert source.closed


# -- cancellation and cleanup ---------------------------------------------------------


async def test_leaving_early_disposes_the_subscription_cancels_timers_and_closes_the_source() -> (
    None
):
    source = TrackedSource()
    disposed: list[str] = []
    tasks_before = running_tasks()
    async with open_pipe(
        source,
        ops.finally_action(lambda: disposed.append("chain")),
        ops.delay(3600.0),  # a timer that would hold the loop for an hour
        ops.timeout(7200.0),
    ) as pipe:
        await slow_consumer_step()
        assert running_tasks() > tasks_before
    assert disposed == ["chain"]
    assert source.closed
    assert running_tasks() == tasks_before
    with pytest.raises(anyio.ClosedResourceError):
        await pipe.receive()


async def test_cancelling_the_consumer_leaves_nothing_running() -> None:
    source = TrackedSource()
    tasks_before = running_tasks()
    with anyio.CancelScope() as scope:
        async with open_pipe(source, ops.map(lambda n: n)) as pipe:
            async for item in pipe:
                if item == 10:
                    scope.cancel()
                await slow_consumer_step()
    assert scope.cancelled_caught
    assert source.closed
    assert running_tasks() == tasks_before


async def test_consumer_blocked_in_receive_is_cancellable() -> None:
    source = TrackedSource(delay=3600.0)
    async with anyio.create_task_group() as tg:
        with anyio.CancelScope() as scope:

            async def cancel_soon() -> None:
                await slow_consumer_step()
                scope.cancel()

            tg.start_soon(cancel_soon)
            async with open_pipe(source) as pipe:
                await pipe.receive()
    assert scope.cancelled_caught
    assert source.closed


async def test_closing_the_source_stream_completes_the_pipe() -> None:
    send, receive = anyio.create_memory_object_stream[int](0)
    received = []
    async with anyio.create_task_group() as tg:

        async def produce() -> None:
            async with send:
                for n in range(5):
                    await send.send(n)

        tg.start_soon(produce)
        async with open_pipe(receive, ops.to_list()) as pipe:
            received = [x async for x in pipe]
    assert received == [[0, 1, 2, 3, 4]]


async def test_a_failing_source_leaves_nothing_running() -> None:
    async def failing() -> Any:
        yield 1
        raise ConnectionResetError("peer went away")

    disposed: list[str] = []
    tasks_before = running_tasks()
    with pytest.raises(ConnectionResetError):
        async with open_pipe(
            failing(),
            ops.finally_action(lambda: disposed.append("chain")),
            ops.buffer_with_time(3600.0),  # a live timer when the source fails
        ) as pipe:
            async for _ in pipe:
                pass
    assert disposed == ["chain"]
    assert running_tasks() == tasks_before


async def test_a_cancelled_producer_ends_the_pipe_with_what_it_sent() -> None:
    send, receive = anyio.create_memory_object_stream[int](0)
    tasks_before = running_tasks()
    async with anyio.create_task_group() as tg:

        async def produce(task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
            with anyio.CancelScope() as scope:
                task_status.started(scope)
                async with send:
                    for n in range(1000):
                        await send.send(n)

        producer_scope = await tg.start(produce)
        async with open_pipe(receive, ops.to_list()) as pipe:
            for _ in range(5):
                await anyio.lowlevel.checkpoint()
            producer_scope.cancel()  # the source side goes away mid-stream
            (received,) = [x async for x in pipe]
    assert received == list(range(len(received)))
    assert 0 < len(received) < 1000
    assert running_tasks() == tasks_before


async def test_the_pipe_closes_a_receive_stream_it_stops_reading() -> None:
    send, receive = anyio.create_memory_object_stream[int](10)
    async with send:
        await send.send(1)
        async with open_pipe(receive, ops.take(1)) as pipe:
            assert [x async for x in pipe] == [1]
        with pytest.raises(anyio.BrokenResourceError):
            await send.send(2)


async def test_a_completing_operator_stops_the_source() -> None:
    source = TrackedSource()
    async with open_pipe(source, ops.take(3)) as pipe:
        assert [x async for x in pipe] == [0, 1, 2]
        await slow_consumer_step()
        assert source.closed
        assert source.pulled == 3


async def test_aclose_stops_the_pipe_while_the_block_goes_on() -> None:
    source = TrackedSource()
    async with open_pipe(source) as pipe:
        await pipe.receive()
        await pipe.aclose()
        await slow_consumer_step()
        assert source.closed
        with pytest.raises(anyio.ClosedResourceError):
            await pipe.receive()


# -- graceful stop ----------------------------------------------------------------------


async def test_stop_flushes_what_the_operators_hold() -> None:
    source = TrackedSource()
    async with open_pipe(source, ops.buffer_with_count(1000)) as pipe:
        await slow_consumer_step()
        pipe.stop()
        windows = [x async for x in pipe]
    assert len(windows) == 1
    assert windows[0] == list(range(source.pulled))
    assert source.closed


# -- bad input ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "kwargs", "error", "message"),
    [
        (reactivex.of(1), {}, ValueError, "overflow="),
        ([1], {"overflow": "drop_oldest"}, ValueError, "never overflows"),
        ([1], {"max_buffer_size": -1}, ValueError, "0 or more"),
        ([1], {"max_buffer_size": 2.5}, TypeError, "must be an int"),
        (reactivex.of(1), {"overflow": "drop"}, ValueError, "'drop_newest'"),
        ("abc", {}, TypeError, "one character at a time"),
        (42, {}, TypeError, "got int"),
    ],
)
async def test_bad_arguments_are_refused_with_advice(
    source: Any, kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        open_pipe(source, **kwargs)


async def test_a_non_operator_is_refused_by_position() -> None:
    with pytest.raises(TypeError, match="operator 2 is 5"):
        open_pipe([1], ops.map(str), 5)  # type: ignore[call-overload]


@pytest.mark.anyio
async def test_a_source_context_manager_is_open_exactly_while_the_pipe_runs() -> None:
    events: list[str] = []

    @asynccontextmanager
    async def connector() -> AsyncIterator[TrackedSource]:
        events.append("open")
        try:
            yield TrackedSource()  # endless
        finally:
            events.append("closed")

    async with open_pipe(connector(), ops.map(lambda n: n * 2)) as doubled:
        assert events == ["open"]
        assert [await doubled.receive() for _ in range(3)] == [0, 2, 4]
    assert events == ["open", "closed"]


@pytest.mark.anyio
async def test_a_source_context_manager_must_yield_an_iterable() -> None:
    @asynccontextmanager
    async def broken() -> AsyncIterator[int]:
        yield 42

    with pytest.raises(TypeError, match="yielded int, not an async iterable"):
        async with open_pipe(broken()):
            pass


# -- the two ends ------------------------------------------------------------------------


async def test_the_consumer_end_offers_nothing_of_the_producer_end() -> None:
    async with open_pipe([1, 2]) as pipe:
        for producer_method in (
            "put",
            "finish",
            "hold_source",
            "release_source",
            "wait_for_room",
            "has_room",
        ):
            assert not hasattr(pipe, producer_method), producer_method
        assert [item async for item in pipe] == [1, 2]


async def test_an_error_in_the_block_comes_out_as_itself() -> None:
    with pytest.raises(KeyError, match="mine") as caught:
        async with open_pipe(numbers_forever()) as pipe:
            await pipe.receive()
            raise KeyError("mine")
    assert type(caught.value) is KeyError


async def numbers_forever() -> AsyncIterator[int]:
    n = 0
    while True:
        yield n
        n += 1
