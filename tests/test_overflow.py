"""Pushed sources (Observables, Subjects): each overflow policy, drop counts, threads."""

from __future__ import annotations

import anyio
import pytest
import reactivex
from reactivex import operators as ops
from reactivex.scheduler import ImmediateScheduler
from reactivex.subject import Subject

from rxflow import open_pipe, to_async_iterable
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
