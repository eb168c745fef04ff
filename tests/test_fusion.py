"""Fused operators behave as reactivex's own: the same tests run against both.

Each marble case runs a chain twice under reactivex's ``TestScheduler``: once with
reactivex's operators, once with the runs of them fused (:func:`rxflow._fusion.fuse`), and
compares what the observer got (values, errors, completion, in virtual time) and when the
hot source was subscribed and disposed. Hypothesis then does the same for random chains
over random inputs; pipes compare ``open_pipe`` with fusion on and off on both backends.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reactivex import Observable
from reactivex import operators as ops
from reactivex.subject import Subject
from reactivex.testing import ReactiveTest, TestScheduler

from rxflow import open_pipe
from rxflow._fusion import FUSABLE, FusedOperator, fuse
from rxflow._fusion_steps import recognise

Operator = Callable[[Observable[Any]], Observable[Any]]

on_next, on_completed, on_error = (
    ReactiveTest.on_next,
    ReactiveTest.on_completed,
    ReactiveTest.on_error,
)


class Boom(Exception):
    """What the test functions raise."""


def raises_at(bad: int, function: Callable[..., Any]) -> Callable[..., Any]:
    def checked(*values: Any) -> Any:
        if bad in values:
            raise Boom(bad)
        return function(*values)

    return checked


def fused(operators: Sequence[Operator]) -> list[Operator]:
    applied, plan = fuse(operators, enabled=True)
    assert any(stage.fused for stage in plan), plan  # recognition still works
    return [operator for _, operator in applied]


def outcome(scheduler_messages: list[Any]) -> list[tuple[Any, ...]]:
    """Messages as comparable tuples (an error by its type and arguments)."""
    out: list[tuple[Any, ...]] = []
    for message in scheduler_messages:
        value = message.value
        if value.kind == "N":
            out.append((message.time, "N", value.value))
        elif value.kind == "E":
            out.append((message.time, "E", type(value.exception), value.exception.args))
        else:
            out.append((message.time, "C"))
    return out


def run_marbles(
    operators: Sequence[Operator], messages: Sequence[Any], dispose_at: int = 1000
) -> tuple[list[tuple[Any, ...]], list[tuple[int, int]]]:
    scheduler = TestScheduler()
    source = scheduler.create_hot_observable(*messages)
    results = scheduler.start(lambda: source.pipe(*operators), disposed=dispose_at)
    subscriptions = [(s.subscribe, s.unsubscribe) for s in source.subscriptions]
    return outcome(results.messages), subscriptions


def items(*values: Any, end: Any = None) -> list[Any]:
    messages = [on_next(210 + 10 * i, v) for i, v in enumerate(values)]
    time = 210 + 10 * len(values)
    messages.append(on_completed(time) if end is None else on_error(time, end))
    return messages


TEN = items(*range(10))
FAILING = items(1, 2, 3, end=Boom("source"))
REPEATS = items(1, 1, 2, 2, 2, 3, 1, 1)

CASES: dict[str, tuple[list[Operator], list[Any]]] = {
    "map": ([ops.map(lambda x: x * 2)], TEN),
    "map identity": ([ops.map()], TEN),
    "map raises": ([ops.map(raises_at(4, lambda x: x))], TEN),
    "map source error": ([ops.map(lambda x: x + 1)], FAILING),
    "filter": ([ops.filter(lambda x: x % 3 == 0)], TEN),
    "filter raises": ([ops.filter(raises_at(5, bool))], TEN),
    "scan seed": ([ops.scan(lambda a, x: a + x, 100)], TEN),
    "scan no seed": ([ops.scan(lambda a, x: a * 10 + x)], TEN),
    "scan raises first": ([ops.scan(raises_at(0, lambda a, x: a + x), 0)], TEN),
    "scan no seed raises": ([ops.scan(raises_at(3, lambda a, x: a + x))], TEN),
    "take": ([ops.take(3)], TEN),
    "take more than there is": ([ops.take(30)], TEN),
    "take before error": ([ops.take(5)], FAILING),
    "skip": ([ops.skip(4)], TEN),
    "skip 0": ([ops.skip(0)], TEN),
    "skip all": ([ops.skip(20)], FAILING),
    "take_while": ([ops.take_while(lambda x: x < 4)], TEN),
    "take_while inclusive": ([ops.take_while(lambda x: x < 4, inclusive=True)], TEN),
    "take_while raises": ([ops.take_while(raises_at(2, lambda x: True))], TEN),
    "skip_while": ([ops.skip_while(lambda x: x < 4)], TEN),
    "skip_while raises": ([ops.skip_while(raises_at(2, lambda x: True))], TEN),
    "distinct_until_changed": ([ops.distinct_until_changed()], REPEATS),
    "distinct key": ([ops.distinct_until_changed(lambda x: x // 2)], TEN),
    "distinct comparer": (
        [ops.distinct_until_changed(comparer=lambda a, b: abs(a - b) <= 1)],
        items(1, 2, 5, 5, 9, 7, 3),
    ),
    "distinct key raises": ([ops.distinct_until_changed(raises_at(2, lambda x: x))], REPEATS),
    "distinct comparer raises": (
        [ops.distinct_until_changed(comparer=raises_at(2, lambda a, b: a == b))],
        REPEATS,
    ),
    "pluck": ([ops.pluck("k")], items({"k": 1}, {"k": 2}, {"j": 3}, {"k": 4})),
    "pluck_attr": ([ops.pluck_attr("real")], items(1, 2.5, "no real", 4)),
    "starmap": ([ops.starmap(lambda a, b: a - b)], items((3, 1), (5, 2), (1,), (9, 9))),
    "starmap identity": ([ops.starmap()], items((3, 1), (5, 2))),
    "map filter scan": (
        [
            ops.map(lambda x: x * 3),
            ops.filter(lambda x: x % 2 == 0),
            ops.scan(lambda a, x: a + x, 0),
        ],
        TEN,
    ),
    "take then filter drops the last": (
        [ops.take(3), ops.filter(lambda x: x != 2)],
        TEN,
    ),
    "take_while inclusive then filter": (
        [ops.take_while(lambda x: x < 3, inclusive=True), ops.filter(lambda x: x != 3)],
        TEN,
    ),
    "take then map raises on the last": ([ops.take(3), ops.map(raises_at(2, str))], TEN),
    "take take": ([ops.take(5), ops.take(2)], TEN),
    "skip take skip": ([ops.skip(2), ops.take(5), ops.skip(1)], TEN),
    "take then skip_while drops": (
        [ops.take(4), ops.skip_while(lambda x: x < 10)],
        TEN,
    ),
    "take then distinct drops": ([ops.take(3), ops.distinct_until_changed()], REPEATS),
    "take then exhausted take_while": (
        [ops.take(6), ops.take_while(lambda x: x < 2), ops.map(str)],
        TEN,
    ),
    "fused around an unfused": (
        [ops.map(lambda x: x + 1), ops.buffer_with_count(2), ops.map(sum), ops.take(3)],
        TEN,
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_marbles_same_as_reactivex(name: str) -> None:
    operators, messages = CASES[name]
    expected = run_marbles(operators, messages)
    assert run_marbles(fused(operators), messages) == expected


@pytest.mark.parametrize("name", ["map filter scan", "skip take skip", "distinct key"])
def test_disposal_stops_delivery(name: str) -> None:
    operators, messages = CASES[name]
    expected = run_marbles(operators, messages, dispose_at=245)
    assert run_marbles(fused(operators), messages, dispose_at=245) == expected
    assert expected[1] == [(200, 245)]


def test_every_fusable_operator_is_recognised() -> None:
    """Fails if a reactivex upgrade changes its closures so that recognition stops."""
    chain = [
        ops.map(abs),
        ops.starmap(max),
        ops.pluck("k"),
        ops.pluck_attr("real"),
        ops.filter(bool),
        ops.scan(max, 0),
        ops.take(3),
        ops.skip(1),
        ops.take_while(bool),
        ops.skip_while(bool),
        ops.distinct_until_changed(),
    ]
    applied, plan = fuse(chain, enabled=True)
    assert len(applied) == 1
    assert isinstance(applied[0][1], FusedOperator)
    assert [step.kind for step in applied[0][1].steps] == list(FUSABLE)
    assert plan[0].operators == (
        "map(abs)", "starmap(max)", "pluck('k')", "pluck_attr('real')", "filter(bool)",
        "scan(max, seed=0)", "take(3)", "skip(1)", "take_while(bool)", "skip_while(bool)",
        "distinct_until_changed()",
    )  # fmt: skip


@pytest.mark.parametrize(
    "operator",
    [
        ops.map_indexed(lambda x, i: x),
        ops.filter_indexed(lambda x, i: True),
        ops.take(0),  # reactivex's empty(): it never subscribes to the source
        ops.delay(1.0),
        ops.compose(ops.map(abs), ops.delay(1.0)),
        lambda source: source,
    ],
)
def test_what_is_not_recognised_stays_reactivex(operator: Operator) -> None:
    assert recognise(operator) is None
    applied, plan = fuse([ops.map(abs), operator, ops.map(abs)], enabled=True)
    assert [stage.fused for stage in plan] == [True, False, True]
    assert applied[1] == (2, operator)


def test_fusion_can_be_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RXFLOW_FUSION", "0")
    chain = [ops.map(abs), ops.filter(bool)]
    applied, plan = fuse(chain)
    assert [operator for _, operator in applied] == chain
    assert not any(stage.fused for stage in plan)


# -- re-entrancy: an observer that pushes into the source while it is handed an item ----------


@pytest.mark.parametrize(
    "operators",
    [
        [ops.take(3), ops.map(lambda x: x * 10)],
        [ops.scan(lambda a, x: a + x, 0), ops.distinct_until_changed()],
        [ops.take_while(lambda x: x < 25, inclusive=True), ops.skip(1)],
    ],
    ids=["take", "scan distinct", "take_while skip"],
)
def test_reentrant_on_next(operators: list[Operator]) -> None:
    def run(chain: Sequence[Operator]) -> list[Any]:
        subject: Subject[int] = Subject()
        seen: list[Any] = []

        def observe(value: Any) -> None:
            seen.append(value)
            if len(seen) < 6:
                subject.on_next(len(seen) * 7)  # synchronously, from inside on_next

        subject.pipe(*chain).subscribe(
            observe, lambda error: seen.append(("error", error)), lambda: seen.append("done")
        )
        for value in (1, 2, 3, 4):
            subject.on_next(value)
        subject.on_completed()
        return seen

    assert run(fused(operators)) == run(operators)


def test_a_raising_observer_propagates_as_in_reactivex() -> None:
    def run(chain: Sequence[Operator]) -> tuple[list[Any], str]:
        got: list[Any] = []

        def observe(value: Any) -> None:
            got.append(value)
            if value == 4:
                raise Boom("observer")

        subject: Subject[int] = Subject()
        subject.pipe(*chain).subscribe(observe, lambda e: got.append(("error", e.args)))
        try:
            for value in range(5):
                subject.on_next(value)
        except Boom as error:
            return got, str(error)
        return got, "nothing raised"

    chain = [ops.map(lambda x: x * 2), ops.scan(lambda a, x: x, 0)]
    assert run(fused(chain)) == run(chain) == ([0, 2, 4], "observer")


# -- random chains ------------------------------------------------------------------------------


def step_strategy() -> st.SearchStrategy[Operator]:
    bad = st.integers(-3, 12)
    return st.one_of(
        st.builds(lambda k: ops.map(lambda x: x * k - 1), st.integers(-2, 3)),
        st.builds(lambda b: ops.map(raises_at(b, lambda x: x + 1)), bad),
        st.builds(lambda m: ops.filter(lambda x: x % m != 0), st.integers(2, 4)),
        st.builds(lambda b: ops.filter(raises_at(b, lambda x: x > 0)), bad),
        st.builds(lambda s: ops.scan(lambda a, x: a + x, s), st.integers(-2, 2)),
        st.just(ops.scan(lambda a, x: max(a, x))),
        st.builds(lambda b: ops.scan(raises_at(b, lambda a, x: a - x)), bad),
        st.builds(ops.take, st.integers(1, 6)),
        st.builds(ops.skip, st.integers(0, 4)),
        st.builds(
            lambda n, inclusive: ops.take_while(lambda x: x < n, inclusive), bad, st.booleans()
        ),
        st.builds(lambda n: ops.skip_while(lambda x: x < n), bad),
        st.builds(lambda b: ops.skip_while(raises_at(b, lambda x: x < 5)), bad),
        st.just(ops.distinct_until_changed()),
        st.builds(lambda m: ops.distinct_until_changed(lambda x: x % m), st.integers(2, 3)),
        st.just(ops.compose(ops.map(lambda x: (x, x + 1)), ops.starmap(lambda a, b: b * a))),
        st.just(ops.compose(ops.map(lambda x: {"v": x}), ops.pluck("v"))),
    )


@settings(max_examples=300, deadline=None)
@given(
    chain=st.lists(step_strategy(), min_size=1, max_size=6),
    values=st.lists(st.integers(-3, 12), max_size=15),
    fails=st.booleans(),
)
def test_random_chains_same_as_reactivex(
    chain: list[Operator], values: list[int], fails: bool
) -> None:
    messages = items(*values, end=Boom("source") if fails else None)
    assert run_marbles(fused(chain), messages) == run_marbles(chain, messages)


# -- pipes ------------------------------------------------------------------------------------


async def numbers(count: int) -> Any:
    for n in range(count):
        yield n


PIPE_CHAINS: dict[str, list[Operator]] = {
    "map filter scan": [
        ops.map(lambda n: n * 3),
        ops.filter(lambda n: n % 2 == 0),
        ops.scan(lambda a, n: a + n, 0),
    ],
    "take ends the source": [ops.skip(3), ops.take(5), ops.map(str)],
    "raises": [ops.map(raises_at(7, lambda n: n)), ops.filter(bool)],
    "around a buffer": [ops.map(abs), ops.buffer_with_count(3), ops.map(len), ops.take(4)],
}


async def read(chain: list[Operator]) -> tuple[list[Any], str | None, list[str]]:
    got: list[Any] = []
    async with open_pipe(numbers(50), *chain, max_buffer_size=4) as pipe:
        plan = [str(stage) for stage in pipe.plan()]
        try:
            async for item in pipe:
                got.append(item)
        except Boom as error:
            return got, repr(error), plan
        stats = pipe.stats()
        got.append(("admitted", stats.admitted, "delivered", stats.delivered))
    return got, None, plan


@pytest.mark.anyio
@pytest.mark.parametrize("name", list(PIPE_CHAINS))
async def test_pipes_same_with_and_without_fusion(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    chain = PIPE_CHAINS[name]
    got, error, plan = await read(chain)
    assert any(stage.startswith("fused(") for stage in plan)
    monkeypatch.setenv("RXFLOW_FUSION", "0")
    plain_got, plain_error, plain_plan = await read(chain)
    assert not any(stage.startswith("fused(") for stage in plain_plan)
    assert (got, error) == (plain_got, plain_error)


@pytest.mark.anyio
@pytest.mark.parametrize("fusion", ["1", "0"])
async def test_leaving_a_fused_pipe_early(fusion: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RXFLOW_FUSION", fusion)
    closed = []

    async def endless() -> Any:
        n = 0
        try:
            while True:
                yield n
                n += 1
        finally:
            closed.append(n)

    async with open_pipe(endless(), ops.map(lambda n: n * 2), ops.skip(1)) as pipe:
        got = [item async for item in _first(pipe, 3)]
    assert got == [2, 4, 6]
    assert closed  # the source was closed when the pipe was left


async def _first(pipe: Any, count: int) -> Any:
    async for item in pipe:
        yield item
        count -= 1
        if not count:
            return


@pytest.mark.anyio
async def test_plan_of_a_pipe() -> None:
    def triple(n: int) -> int:
        return n * 3

    async with open_pipe(
        range(3), ops.map(triple), ops.filter(bool), ops.delay(0.0), ops.take(2)
    ) as pipe:
        plan = pipe.plan()
        assert [str(stage) for stage in plan] == [
            "fused(map(test_plan_of_a_pipe.<locals>.triple) -> filter(bool))",
            "ops.delay",
            "fused(take(2))",
        ]
        assert [stage.fused for stage in plan] == [True, False, True]
        assert [item async for item in pipe] == [3, 6]


# -- runs: a source that hands over runs, pushed through a fused chain a room's worth at once --


class Runs:
    """A RunSource of 0..count-1 in runs of ``size``; records the buffer when it is asked."""

    def __init__(self, count: int, size: int) -> None:
        self.values = list(range(count))
        self.size = size
        self.pipe: Any = None
        self.most_buffered = 0

    async def next_run(self) -> list[int]:
        if self.pipe is not None:
            self.most_buffered = max(self.most_buffered, self.pipe.stats().buffered)
        if not self.values:
            raise StopAsyncIteration
        run, self.values = self.values[: self.size], self.values[self.size :]
        return run


RUN_CHAINS: dict[str, list[Operator]] = {
    "map filter scan": PIPE_CHAINS["map filter scan"],
    "take ends mid-run": [ops.skip(5), ops.take(7), ops.map(lambda n: -n)],
    "take_while ends mid-run": [ops.take_while(lambda n: n < 40, inclusive=True)],
    "raises mid-run": [ops.filter(raises_at(23, lambda n: n % 3 != 0))],
    "distinct": [ops.map(lambda n: n // 4), ops.distinct_until_changed()],
}


async def read_runs(
    chain: list[Operator], size: int, limit: int
) -> tuple[list[Any], str | None, int, int]:
    source = Runs(100, size)
    got: list[Any] = []
    error = None
    async with open_pipe(source, *chain, max_buffer_size=limit) as pipe:
        source.pipe = pipe
        try:
            async for item in pipe:
                got.append(item)
                source.most_buffered = max(source.most_buffered, pipe.stats().buffered)
        except Boom as raised:
            error = repr(raised)
        admitted = pipe.stats().admitted
    return got, error, admitted, source.most_buffered


@pytest.mark.anyio
@pytest.mark.parametrize("size", [1, 7, 64])
@pytest.mark.parametrize("limit", [0, 4, 128])
@pytest.mark.parametrize("name", list(RUN_CHAINS))
async def test_runs_through_a_fused_chain(
    name: str, size: int, limit: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    chain = RUN_CHAINS[name]
    fused_result = await read_runs(chain, size, limit)
    assert fused_result[3] <= limit  # the bound, counted in items, still holds
    monkeypatch.setenv("RXFLOW_FUSION", "0")
    plain = await read_runs(chain, size, limit)
    assert fused_result[:2] == plain[:2]
    if fused_result[1] is None:  # after an error, the unfused pipe may have pulled more
        assert fused_result[2] == plain[2]


@settings(max_examples=150, deadline=None)
@given(
    chain=st.lists(step_strategy(), min_size=1, max_size=4),
    values=st.lists(st.integers(-3, 12), min_size=8, max_size=30),
    size=st.integers(1, 12),
    limit=st.integers(0, 8),
    backend=st.sampled_from(["asyncio", "trio"]),
    failing=st.booleans(),
)
def test_random_chains_in_pipes_same_with_and_without_fusion(
    chain: list[Operator], values: list[int], size: int, limit: int, backend: str, failing: bool
) -> None:
    """Random chains through open_pipe, over a list, over runs and over an async generator:
    the pump's own paths for a chain that is one fused stage (per item, a room's worth of a
    run at once, and its async loop with the steps inline)."""

    class RunsOf:
        def __init__(self) -> None:
            self.left = list(values)

        async def next_run(self) -> list[int]:
            if not self.left:
                raise StopAsyncIteration
            run, self.left = self.left[:size], self.left[size:]
            return run

    async def read(source: Any) -> tuple[list[Any], str | None]:
        got: list[Any] = []
        try:
            async with open_pipe(source, *chain, max_buffer_size=limit) as pipe:
                async for item in pipe:
                    got.append(item)
        except Boom as error:
            return got, repr(error)
        return got, None

    def both(make_source: Callable[[], Any]) -> list[tuple[list[Any], str | None]]:
        results = []
        for fusion in ("1", "0"):
            with pytest.MonkeyPatch.context() as patch:
                patch.setenv("RXFLOW_FUSION", fusion)
                results.append(anyio.run(read, make_source(), backend=backend))
        return results

    async def generated() -> Any:
        for value in values:
            yield value
        if failing:
            raise Boom("source")

    for make_source in (lambda: list(values), RunsOf, generated):
        fused_result, plain_result = both(make_source)
        assert fused_result == plain_result


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["async generator", "iterator", "runs"])
async def test_a_source_that_never_awaits_lets_other_tasks_run(kind: str) -> None:
    """Everything is filtered out and the source never awaits: the fused pump loops still
    let other tasks run (here, the one that stops the pipe)."""

    async def endless_async() -> Any:
        while True:
            yield 1

    def endless() -> Any:
        while True:
            yield 1

    class EndlessRuns:
        async def next_run(self) -> list[int]:
            return [1] * 50

    source = {"async generator": endless_async, "iterator": endless, "runs": EndlessRuns}[kind]()
    with anyio.fail_after(30):  # a guard against a hang, not a measure
        async with open_pipe(source, ops.filter(lambda _: False), ops.map(str)) as pipe:
            assert pipe.plan()[0].fused
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(_stop_soon, pipe)
                assert [item async for item in pipe] == []


async def _stop_soon(pipe: Any) -> None:
    await anyio.lowlevel.checkpoint()
    pipe.stop()


@pytest.mark.anyio
async def test_the_plan_is_logged_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("DEBUG", logger="rxflow.pipe"):
        async with open_pipe(range(3), ops.map(abs), ops.buffer_with_count(2)) as pipe:
            assert [item async for item in pipe] == [[0, 1], [2]]
    assert "open_pipe() runs its operators as: fused(map(abs)), ops.buffer_with_count" in (
        caplog.text
    )
