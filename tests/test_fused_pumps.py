"""The pump's loops for a chain that is one fused stage (``rxflow/_fusion_code.py``).

They check the room, the pipe's end and the checkpoint count once per stretch of pulls
and count a run's admitted items once: what they count on an early exit, the bound at
every pull, the consumer woken at each item while the source waits, and the end of the
pipe seen between two items, each the same with fusion on and off, on both backends.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reactivex import Observable
from reactivex import operators as ops

from rxflow import open_pipe
from rxflow._handoff import YIELDS, PipeState

Operator = Callable[[Observable[Any]], Observable[Any]]


class Boom(Exception):
    """What the test functions raise."""


def raises_at(bad: int) -> Callable[[int], int]:
    def checked(value: int) -> int:
        if value == bad:
            raise Boom(bad)
        return value

    return checked


class OneRun:
    """A run source that hands over ``values`` as one run, then ends."""

    def __init__(self, values: list[int]) -> None:
        self.values: list[int] | None = values

    async def next_run(self) -> list[int]:
        values, self.values = self.values, None
        if values is None:
            raise StopAsyncIteration
        return values


# A run of 0..19 and how many of its items the chain reaches (each counts as admitted,
# as the pipe's inlet counts an item before the operators see it).
EARLY_EXITS: dict[str, tuple[list[Operator], int]] = {
    "take ends the run": ([ops.take(5)], 5),
    "take after skip": ([ops.skip(3), ops.take(2)], 5),
    "take then filter drops the last": ([ops.take(6), ops.filter(lambda n: n != 5)], 6),
    "take_while ends the run": ([ops.take_while(lambda n: n < 7)], 8),
    "take_while inclusive": ([ops.take_while(lambda n: n < 7, inclusive=True)], 8),
    "map raises": ([ops.map(raises_at(11))], 12),
    "filter raises after a map": ([ops.map(abs), ops.filter(raises_at(13))], 14),
    "the whole run": ([ops.map(abs), ops.filter(lambda n: n % 2 == 0)], 20),
}


@pytest.mark.anyio
@pytest.mark.parametrize("fusion", ["1", "0"])
@pytest.mark.parametrize("limit", [0, 4, 7, 64])  # 64: the run in one push; others cut it
@pytest.mark.parametrize("name", list(EARLY_EXITS))
async def test_admitted_counts_the_items_a_run_reached(
    name: str, limit: int, fusion: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    chain, reached = EARLY_EXITS[name]
    monkeypatch.setenv("RXFLOW_FUSION", fusion)
    async with open_pipe(OneRun(list(range(20))), *chain, max_buffer_size=limit) as pipe:
        assert pipe.plan()[0].fused is (fusion == "1")
        with contextlib.suppress(Boom):
            async for _ in pipe:
                pass
        assert pipe.stats().admitted == reached


@settings(max_examples=120, deadline=None)
@given(
    limit=st.integers(0, 9),
    kind=st.sampled_from(["async", "sync", "runs"]),
    size=st.integers(1, 12),
    source_awaits=st.lists(st.booleans(), min_size=1, max_size=5),
    consumer_pace=st.lists(st.integers(0, 3), min_size=1, max_size=6),
    keep_every=st.integers(1, 3),
    batches=st.booleans(),
    fusion=st.sampled_from(["1", "0"]),
    backend=st.sampled_from(["asyncio", "trio"]),
)
def test_the_bound_holds_at_every_pull(
    limit: int,
    kind: str,
    size: int,
    source_awaits: list[bool],
    consumer_pace: list[int],
    keep_every: int,
    batches: bool,
    fusion: str,
    backend: str,
) -> None:
    """Whatever the pace of both sides, a source is pulled only while fewer than
    ``max_buffer_size`` outputs wait (one for a waiting consumer when it is 0): counted by
    the source itself against what the consumer received (without the filter, one output
    per item), and by the pipe's own ``buffered``, at every pull and at every receipt."""
    count = 60
    room = max(limit, 1)
    produced = received = 0
    pipe: Any = None
    broken: list[str] = []

    def pulled(n: int) -> None:
        nonlocal produced
        buffered = 0 if pipe is None else pipe.stats().buffered  # the pump may start first
        if (keep_every == 1 and produced - received >= room) or buffered >= room:
            broken.append(f"pull {n}: {produced - received} out, {buffered} buffered")

    async def items() -> AsyncIterator[int]:
        nonlocal produced
        for n in range(count):
            if source_awaits[n % len(source_awaits)]:
                await anyio.lowlevel.checkpoint()  # the consumer may run mid-stretch
            pulled(n)
            produced += 1
            yield n

    def sync_items() -> Iterator[int]:
        nonlocal produced
        for n in range(count):
            pulled(n)
            produced += 1
            yield n

    class Runs:
        def __init__(self) -> None:
            self.next = 0

        async def next_run(self) -> Sequence[int]:
            nonlocal produced
            if source_awaits[self.next % len(source_awaits)]:
                await anyio.lowlevel.checkpoint()
            if self.next >= count:
                raise StopAsyncIteration
            pulled(self.next)
            run = list(range(self.next, min(self.next + size, count)))
            self.next += len(run)
            produced += len(run)
            return run

    async def main() -> list[int]:
        nonlocal pipe, received
        source = {"async": items, "sync": sync_items, "runs": Runs}[kind]()
        chain = [ops.map(lambda n: n * 2)]
        if keep_every > 1:  # outputs the buffer never sees: only `buffered` is checked
            chain.append(ops.filter(lambda v: v // 2 % keep_every == 0))
        out: list[int] = []
        async with open_pipe(source, *chain, max_buffer_size=limit) as pipe:
            if batches:
                async for batch in pipe.batches():
                    if len(batch) > room:
                        broken.append(f"a batch of {len(batch)}")
                    for item in batch:
                        received += 1
                        out.append(item)
                    for _ in range(consumer_pace[received % len(consumer_pace)]):
                        await anyio.lowlevel.checkpoint()
            else:
                async for item in pipe:
                    received += 1
                    out.append(item)
                    # Outputs waiting now, the one just received aside, if a run was
                    # pushed while it was being delivered.
                    if pipe.stats().buffered > room:
                        broken.append(f"{pipe.stats().buffered} buffered at {item}")
                    for _ in range(consumer_pace[received % len(consumer_pace)]):
                        await anyio.lowlevel.checkpoint()
        return out

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RXFLOW_FUSION", fusion)
        out = anyio.run(main, backend=backend)
    assert out == [n * 2 for n in range(count) if n % keep_every == 0]
    assert not broken, broken


@pytest.mark.anyio
@pytest.mark.parametrize("fusion", ["1", "0"])
async def test_each_item_reaches_the_consumer_while_the_source_waits_for_it(
    fusion: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A source that waits for the consumer to get each item before it yields the next:
    the pump, in the middle of a stretch of pulls, wakes the consumer at each item."""
    monkeypatch.setenv("RXFLOW_FUSION", fusion)
    got = [anyio.Event() for _ in range(6)]

    async def lockstep() -> AsyncIterator[int]:
        for n in range(6):
            yield n
            await got[n].wait()

    with anyio.fail_after(30):  # a guard against a hang, not a measure
        async with open_pipe(lockstep(), ops.map(lambda n: n * 10)) as pipe:
            assert pipe.plan()[0].fused is (fusion == "1")
            received = []
            async for item in pipe:
                received.append(item)
                got[item // 10].set()
    assert received == [0, 10, 20, 30, 40, 50]


@pytest.mark.anyio
@pytest.mark.parametrize("fusion", ["1", "0"])
async def test_a_source_that_shields_its_awaits_is_not_read_on_after_the_consumer_left(
    fusion: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pipe's cancellation cannot reach a source that shields its awaits: the pump
    still stops at the next item, which is left out of the closed buffer."""
    monkeypatch.setenv("RXFLOW_FUSION", fusion)
    left = False
    after_leaving: list[int] = []

    async def shielded() -> AsyncIterator[int]:
        n = 0
        while True:
            with anyio.CancelScope(shield=True):
                await anyio.lowlevel.checkpoint()
            if left:
                after_leaving.append(n)
            yield n
            n += 1

    async with open_pipe(shielded(), ops.map(str), max_buffer_size=64) as pipe:
        async for item in pipe:
            if item == "3":
                break
        left = True
    assert len(after_leaving) <= 1
    assert pipe.stats().buffered == 0


class OnlyNext:
    """An iterator with ``__next__`` and no ``__iter__``, as ``iter()`` may return."""

    def __init__(self, count: int) -> None:
        self.left = iter(range(count))

    def __next__(self) -> int:
        return next(self.left)


class OnlyAnext:
    """An async iterator with ``__anext__`` and no ``__aiter__``."""

    def __init__(self, count: int) -> None:
        self.left = iter(range(count))

    async def __anext__(self) -> int:
        await anyio.lowlevel.checkpoint()
        try:
            return next(self.left)
        except StopIteration:
            raise StopAsyncIteration from None


class Iterable:
    def __iter__(self) -> Any:
        return OnlyNext(300)


class AsyncIterable:
    def __aiter__(self) -> Any:
        return OnlyAnext(300)


@pytest.mark.anyio
@pytest.mark.parametrize("source", [Iterable, AsyncIterable])
async def test_iterators_without_iter_are_read_whole(source: type) -> None:
    async with open_pipe(source(), ops.map(lambda n: n + 1), max_buffer_size=8) as pipe:
        assert pipe.plan()[0].fused
        assert [item async for item in pipe] == list(range(1, 301))


@pytest.mark.anyio
@pytest.mark.parametrize("batches", [False, True])
@pytest.mark.parametrize("fusion", ["1", "0"])
async def test_a_side_whose_peer_waits_elsewhere_parks_instead_of_yielding_on(
    batches: bool, fusion: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A side that must wait yields (instead of parking on its event) only while the other
    side is runnable, and at most YIELDS times per wake: a consumer reading a source that
    sleeps between items, and a pump feeding a consumer that sleeps between reads, park
    rather than spin (which would yield hundreds of times during each sleep)."""
    monkeypatch.setenv("RXFLOW_FUSION", fusion)
    consumer_yields = pump_yields = 0
    wakeup = PipeState.consumer_wakeup
    checkpoint = anyio.lowlevel.checkpoint

    def counted_wakeup(state: PipeState[Any]) -> anyio.Event:
        nonlocal consumer_yields
        event = wakeup(state)
        consumer_yields += event.is_set()  # set already: waiting on it is a yield
        return event

    async def counted_checkpoint() -> None:
        nonlocal pump_yields
        pump_yields += sys._getframe(1).f_code.co_name == "wait_for_room"
        await checkpoint()

    monkeypatch.setattr(PipeState, "consumer_wakeup", counted_wakeup)
    monkeypatch.setattr(anyio.lowlevel, "checkpoint", counted_checkpoint)

    async def slow_source() -> AsyncIterator[int]:
        for n in range(20):
            await anyio.sleep(0.001)
            yield n

    async def read(pipe: Any, pause: float) -> list[int]:
        got: list[int] = []
        if batches:
            async for batch in pipe.batches():
                got += batch
                await anyio.sleep(pause)
        else:
            async for item in pipe:
                got.append(item)
                await anyio.sleep(pause)
        return got

    async with open_pipe(slow_source(), ops.map(abs), max_buffer_size=4) as pipe:
        assert await read(pipe, 0) == list(range(20))
    assert consumer_yields <= YIELDS * 20
    async with open_pipe(range(60), ops.map(abs), max_buffer_size=4) as pipe:
        assert await read(pipe, 0.001) == list(range(60))
    assert pump_yields <= YIELDS * 60
