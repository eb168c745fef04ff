"""Pushed sources (Observables, Subjects): each overflow policy, drop counts, threads."""

from __future__ import annotations

import anyio
import anyio.lowlevel
import pytest
import reactivex
from reactivex import operators as ops
from reactivex.scheduler import ImmediateScheduler
from reactivex.subject import Subject

from rxflow import open_pipe, to_async_iterable
from rxflow._overflow import OverflowBuffer
from rxflow.errors import SourceOverflowError

pytestmark = pytest.mark.anyio

IMMEDIATE = ImmediateScheduler()


async def push_ten_then_read(
    overflow: str, max_buffer_size: int = 3
) -> tuple[list[int], list[int], int, Subject[int]]:
    """Push 1..10 and complete while the consumer is not reading; then read everything."""
    subject: Subject[int] = Subject()
    dropped: list[int] = []
    async with open_pipe(
        subject,
        max_buffer_size=max_buffer_size,
        overflow=overflow,  # type: ignore[arg-type]
        on_drop=dropped.append,
    ) as pipe:
        for n in range(1, 11):
            subject.on_next(n)
        subject.on_completed()
        received = [item async for item in pipe]
        dropped_count = pipe.stats().dropped
    return received, dropped, dropped_count, subject


async def test_drop_newest_keeps_the_buffered_items_and_drops_what_does_not_fit() -> None:
    received, dropped, count, _ = await push_ten_then_read("drop_newest")
    assert received == [1, 2, 3]
    assert dropped == [4, 5, 6, 7, 8, 9, 10]
    assert count == 7


async def test_drop_oldest_keeps_the_newest_items() -> None:
    received, dropped, count, _ = await push_ten_then_read("drop_oldest")
    assert received == [8, 9, 10]
    assert dropped == [1, 2, 3, 4, 5, 6, 7]
    assert count == 7


async def test_latest_keeps_only_the_most_recent_item() -> None:
    received, dropped, count, _ = await push_ten_then_read("latest")
    assert received == [10]
    assert dropped == list(range(1, 10))
    assert count == 9


async def test_nothing_is_dropped_while_the_consumer_keeps_up() -> None:
    subject: Subject[int] = Subject()
    async with open_pipe(subject, max_buffer_size=1, overflow="drop_newest") as pipe:
        received = []
        for n in range(20):
            subject.on_next(n)
            received.append(await pipe.receive())
        assert received == list(range(20))
        assert pipe.stats().dropped == 0


async def test_error_policy_delivers_the_buffered_items_then_fails_and_unsubscribes() -> None:
    received, dropped, count, subject = await push_ten_then_read_error()
    assert received == [1, 2, 3]
    assert dropped == []
    assert count == 0
    assert not subject.observers


async def push_ten_then_read_error() -> tuple[list[int], list[int], int, Subject[int]]:
    subject: Subject[int] = Subject()
    dropped: list[int] = []
    received: list[int] = []
    async with open_pipe(
        subject, max_buffer_size=3, overflow="error", on_drop=dropped.append
    ) as pipe:
        for n in range(1, 11):
            subject.on_next(n)
        with pytest.raises(SourceOverflowError, match="max_buffer_size=3"):
            async for item in pipe:
                received.append(item)
        # Pushes after the failure are ignored, not buffered for a reader that has left.
        subject.on_next(99)
        assert pipe.stats().buffered == 0
        count = pipe.stats().dropped
    return received, dropped, count, subject


async def test_overflow_applies_to_the_operators_outputs() -> None:
    subject: Subject[int] = Subject()
    async with open_pipe(
        subject,
        ops.flat_map(lambda n: reactivex.from_iterable([n, n], scheduler=IMMEDIATE)),
        max_buffer_size=4,
        overflow="drop_newest",
    ) as pipe:
        for n in range(5):
            subject.on_next(n)
        subject.on_completed()
        assert [item async for item in pipe] == [0, 0, 1, 1]
        assert pipe.stats() == pipe.stats().__class__(
            admitted=5, delivered=4, buffered=0, dropped=6
        )


async def test_leaving_the_block_unsubscribes_from_the_subject() -> None:
    subject: Subject[int] = Subject()
    async with to_async_iterable(subject, overflow="latest") as items:
        assert subject.observers
        subject.on_next(1)
        assert await items.receive() == 1
    assert not subject.observers


async def test_pushes_from_another_thread_are_handed_to_the_loop_in_order() -> None:
    subject: Subject[int] = Subject()
    async with open_pipe(subject, overflow="error") as pipe:

        def push_from_a_worker_thread() -> None:
            for item in range(5):
                subject.on_next(item)  # not on the loop's thread: rxflow hands it over
            subject.on_completed()

        await anyio.to_thread.run_sync(push_from_a_worker_thread)
        assert [item async for item in pipe] == [0, 1, 2, 3, 4]


async def test_an_observable_source_without_a_policy_is_refused() -> None:
    with pytest.raises(ValueError, match="overflow='error'"):
        open_pipe(reactivex.of(1))


async def test_an_unknown_policy_is_refused() -> None:
    with pytest.raises(ValueError, match="'drop_newest'"):
        open_pipe(reactivex.of(1), overflow="block")  # type: ignore[arg-type]


# -- the policy itself: rxflow._overflow.OverflowBuffer, shared by pipes, flow sinks and
# -- sources that cannot be paused


def overflow_buffer(policy: str, size: int = 2) -> tuple[OverflowBuffer[int], list[int]]:
    dropped: list[int] = []
    buffer: OverflowBuffer[int] = OverflowBuffer(
        policy,  # type: ignore[arg-type]
        size,
        on_drop=dropped.append,
        overflow_message="sink 'x' fell behind; raise its buffer",
    )
    return buffer, dropped


@pytest.mark.parametrize(
    ("policy", "kept", "dropped_items"),
    [
        ("drop_newest", [0, 1], [2, 3, 4]),
        ("drop_oldest", [3, 4], [0, 1, 2]),
        ("latest", [4], [0, 1, 2, 3]),
    ],
)
def test_the_buffer_applies_each_dropping_policy(
    policy: str, kept: list[int], dropped_items: list[int]
) -> None:
    buffer, dropped = overflow_buffer(policy)
    for n in range(5):
        buffer.add(n)
    assert list(buffer.items) == kept
    assert dropped == dropped_items
    assert buffer.dropped == len(dropped_items)
    assert len(buffer) == len(kept)


def test_the_error_policy_refuses_the_item_that_does_not_fit() -> None:
    buffer, dropped = overflow_buffer("error")
    buffer.add(1)
    buffer.add(2)
    with pytest.raises(SourceOverflowError, match="sink 'x' fell behind"):
        buffer.add(3)
    assert list(buffer.items) == [1, 2]
    assert (dropped, buffer.dropped) == ([], 0)


def test_an_unknown_policy_is_refused_by_the_buffer() -> None:
    with pytest.raises(ValueError, match="overflow must be one of"):
        OverflowBuffer("block", 3, overflow_message="")  # type: ignore[arg-type]


async def test_the_buffer_delivers_what_it_holds_then_its_failure_once_then_the_end() -> None:
    buffer, _ = overflow_buffer("error", 3)

    async def produce() -> None:
        await anyio.lowlevel.checkpoint()
        buffer.add(1)
        buffer.add(2)
        buffer.fail(ConnectionError("lost"))
        buffer.add(3)  # after the end: ignored

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(produce)
        assert await buffer.receive() == 1  # waits for it
    assert await buffer.receive() == 2
    with pytest.raises(ConnectionError, match="lost"):
        await buffer.receive()
    with pytest.raises(anyio.EndOfStream):
        buffer.receive_nowait()


async def test_a_closed_buffer_ends_after_its_items_and_aclose_discards_them() -> None:
    buffer, _ = overflow_buffer("drop_oldest", 3)
    buffer.add(1)
    with pytest.raises(anyio.WouldBlock):
        OverflowBuffer("error", 1, overflow_message="").receive_nowait()
    buffer.close()
    assert [item async for item in buffer] == [1]

    other, _ = overflow_buffer("drop_oldest", 3)
    other.add(1)
    await other.aclose()
    other.add(2)
    with pytest.raises(anyio.EndOfStream):
        other.receive_nowait()


async def test_an_on_drop_that_raises_fails_the_pipe_with_its_error() -> None:
    subject: Subject[int] = Subject()

    def refuse(item: int) -> None:
        raise LookupError(f"cannot drop {item}")

    with pytest.raises(LookupError, match="cannot drop 1"):
        async with open_pipe(
            subject, max_buffer_size=1, overflow="drop_oldest", on_drop=refuse
        ) as pipe:
            subject.on_next(1)
            subject.on_next(2)
            async for _ in pipe:
                pass
