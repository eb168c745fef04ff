"""The keyed stateful operators: aggregate, stateful_map, deduplicate.

Semantics as marble diagrams (virtual time on reactivex's TestScheduler), TTL expiry and
the memory it frees, errors, disposal, re-subscription; the same operators in open_pipe
and a Flow on both anyio backends in virtual time; and durability: a run interrupted after
a checkpoint and resumed from it (state pickled in between) emits what one uninterrupted
run emits.
"""

from __future__ import annotations

import pickle
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import anyio
import pytest
import reactivex
from hypothesis import given, settings
from hypothesis import strategies as st
from reactivex import Observable
from reactivex import operators as ops
from reactivex.subject import Subject
from reactivex.testing import TestScheduler

from rxflow import Flow, open_pipe
from rxflow._state import DELETED, StateTable, state_activated
from rxflow.connectors import Message, Settlement
from rxflow.state import MemoryStore
from rxflow.state._operators import Keyed, aggregate, deduplicate, stateful_map
from rxflow.testing import MarbleContext, virtual_anyio_backends
from rxflow.windows.processing import clock_of

Pair = tuple[str, int]


def first(pair: Pair) -> str:
    return pair[0]


def add(total: int, pair: Pair) -> int:
    return total + pair[1]


# -- semantics, as marble diagrams ---------------------------------------------------------


def test_aggregate_emits_each_keys_new_value(marbles: MarbleContext) -> None:
    values = {"a": ("x", 1), "b": ("y", 10), "c": ("x", 2), "d": ("y", 20)}
    source = marbles.hot("-a-b-c-d-|", values)
    totals = {"p": Keyed("x", 1), "q": Keyed("y", 10), "r": Keyed("x", 3), "s": Keyed("y", 30)}
    marbles.expect(source.pipe(aggregate(first, add, int))).to_be("-p-q-r-s-|", totals)


def test_aggregate_gives_each_key_its_own_initial_value() -> None:
    # `initial` is called per key: a mutable initial value is never shared.
    out: list[Keyed[str, list[int]]] = []
    collect = aggregate(first, lambda items, pair: [*items, pair[1]], list)
    reactivex.of(("x", 1), ("y", 2), ("x", 3)).pipe(collect).subscribe(out.append)
    assert out == [Keyed("x", [1]), Keyed("y", [2]), Keyed("x", [1, 3])]

    in_place: list[list[int]] = []

    def append(items: list[int], pair: Pair) -> list[int]:
        items.append(pair[1])
        return items

    reactivex.of(("x", 1), ("y", 2)).pipe(aggregate(first, append, list)).subscribe(
        lambda keyed: in_place.append(keyed.value)
    )
    assert in_place == [[1], [2]]


def test_aggregate_ttl_restarts_an_idle_key(marbles: MarbleContext) -> None:
    values = {"a": ("x", 1)}
    source = marbles.hot("a-a-----a-a|", values)
    # ttl 4 frames after the last update: the third item comes 6 frames after the second.
    counts = aggregate(first, add, int, ttl=0.004)
    expected = {"1": Keyed("x", 1), "2": Keyed("x", 2)}
    marbles.expect(source.pipe(counts)).to_be("1-2-----1-2|", expected)


def test_stateful_map_emits_outputs_and_none_deletes_the_state(marbles: MarbleContext) -> None:
    def running(state: int | None, pair: Pair) -> tuple[int | None, str]:
        total = (state or 0) + pair[1]
        # A negative amount closes the key's account: its state is deleted.
        return (None if pair[1] < 0 else total), f"{pair[0]}={total}"

    values = {"a": ("x", 1), "b": ("x", 2), "c": ("x", -3), "d": ("x", 5)}
    source = marbles.hot("-a-b-c-d|", values)
    operator = stateful_map(first, running)
    marbles.expect(source.pipe(operator)).to_be(
        "-p-q-r-s|", {"p": "x=1", "q": "x=3", "r": "x=0", "s": "x=5"}
    )
    marbles.flush()
    assert operator.state_size() == 0  # unsubscribed at completion


def test_stateful_map_ttl_counts_from_the_last_update(marbles: MarbleContext) -> None:
    def count(state: int | None, pair: Pair) -> tuple[int, int]:
        return (state or 0) + 1, (state or 0) + 1

    source = marbles.hot("a--a--a------a|", {"a": ("x", 0)})
    # Each update renews the 5-frame TTL; only the 7-frame silence lets it expire.
    marbles.expect(source.pipe(stateful_map(first, count, ttl=0.005))).to_be(
        "1--2--3------1|", {"1": 1, "2": 2, "3": 3}
    )


def test_deduplicate_passes_a_key_again_after_the_ttl(marbles: MarbleContext) -> None:
    values = {"a": ("x", 1), "b": ("x", 2), "c": ("y", 3), "d": ("x", 4), "e": ("x", 5)}
    source = marbles.hot("a-b-c---d-e|", values)
    # x passes at 0; its repeat at 2 is dropped (ttl 5 frames from 0, not renewed by the
    # drop), passes again at 8, and is dropped at 10.
    once = deduplicate(first, ttl=0.005)
    marbles.expect(source.pipe(once)).to_be("a---c---d--|", values)
    marbles.flush()
    assert (once.metrics.received, once.metrics.emitted, once.metrics.dropped) == (5, 3, 2)


def test_idle_keys_are_freed_as_time_passes() -> None:
    scheduler = TestScheduler()
    for make in (
        lambda: aggregate(first, add, int, ttl=10.0),
        lambda: stateful_map(first, lambda state, pair: ((state or 0) + 1, None), ttl=10.0),
        lambda: deduplicate(first, ttl=10.0),
    ):
        operator = make()
        subject: Subject[Pair] = Subject()
        subject.pipe(operator).subscribe(lambda _: None, scheduler=scheduler)
        for key in range(1000):
            subject.on_next((f"k{key}", 1))
        assert operator.state_size() == 1000
        scheduler.advance_by(9.0)
        subject.on_next(("k0", 1))  # k0 updated (or seen) again, the others idle
        assert operator.state_size() == 1000
        scheduler.advance_by(1.0)  # 10 s after the first items: they are freed
        subject.on_next(("late", 1))
        # Held now: "late", and k0 unless deduplicate dropped it (its TTL runs from the
        # first pass, so k0 is freed too).
        expected = 1 if operator.name == "deduplicate" else 2
        assert operator.state_size() == expected


# -- errors ----------------------------------------------------------------------------------


class Boom(Exception):
    pass


BOOM = Boom("boom")


def fail(*_: object) -> Any:
    raise BOOM


@pytest.mark.parametrize(
    "operator",
    [
        pytest.param(lambda: aggregate(fail, add, int), id="aggregate-key"),
        pytest.param(lambda: aggregate(first, fail, int), id="aggregate-fold"),
        pytest.param(lambda: aggregate(first, add, fail), id="aggregate-initial"),
        pytest.param(lambda: stateful_map(fail, lambda s, i: (s, i)), id="stateful_map-key"),
        pytest.param(lambda: stateful_map(first, fail), id="stateful_map-step"),
        pytest.param(lambda: deduplicate(fail, 1.0), id="deduplicate-key"),
    ],
)
def test_a_raising_function_fails_the_stream_with_its_exception(
    marbles: MarbleContext, operator: Callable[[], Any]
) -> None:
    source = marbles.hot("-a-b|", {"a": ("x", 1), "b": ("y", 2)})
    stage = operator()
    errors: list[Exception] = []
    failing = source.pipe(stage, ops.do_action(on_error=errors.append))
    marbles.expect(failing).to_be("-#", error=BOOM)
    marbles.expect_subscriptions(source.subscriptions).to_be("^!")  # upstream let go at once
    marbles.flush()
    assert errors == [BOOM]
    assert errors[0] is BOOM  # the original exception, as reactivex's map
    assert stage.metrics.errors == 1


def test_a_step_that_does_not_return_a_pair_fails_clearly() -> None:
    errors: list[Exception] = []
    reactivex.of(("x", 1)).pipe(stateful_map(first, lambda s, i: i[1], name="scores")).subscribe(
        on_error=errors.append
    )
    [error] = errors
    assert isinstance(error, TypeError)
    assert str(error) == (
        "stateful_map() 'scores': step must return a pair (new state or None, output), got 1"
    )


def test_an_unhashable_key_fails_the_stream() -> None:
    errors: list[Exception] = []
    reactivex.of([1]).pipe(aggregate(lambda item: item, add, int)).subscribe(on_error=errors.append)
    assert [type(error) for error in errors] == [TypeError]


@pytest.mark.parametrize(
    ("call", "kind", "message"),
    [
        (lambda: aggregate("x", add, int), TypeError, "aggregate(): key must be a function"),
        (lambda: aggregate(first, None, int), TypeError, "aggregate(): fold must be a function"),
        (lambda: aggregate(first, add, 0), TypeError, "aggregate(): initial must be a function"),
        (lambda: aggregate(first, add, int, ttl=0), ValueError, "aggregate(): ttl must be more"),
        (lambda: aggregate(first, add, int, ttl="1"), TypeError, "aggregate(): ttl must be"),
        (lambda: aggregate(first, add, int, name=""), ValueError, "aggregate(): name must be"),
        (lambda: stateful_map(first, 3), TypeError, "stateful_map(): step must be a function"),
        (lambda: stateful_map(first, add, ttl=-1), ValueError, "stateful_map(): ttl must be"),
        (lambda: deduplicate(first, 0), ValueError, "deduplicate(): ttl must be more than 0"),
        (lambda: deduplicate(first, None), TypeError, "deduplicate(): ttl must be seconds"),
        (lambda: deduplicate(1, 5), TypeError, "deduplicate(): key must be a function"),
    ],
)
def test_bad_arguments_are_refused_at_the_call(
    call: Callable[[], object], kind: type[Exception], message: str
) -> None:
    with pytest.raises(kind, match=r"^" + message.replace("(", r"\(").replace(")", r"\)")):
        call()


# -- subscriptions ---------------------------------------------------------------------------


def test_disposal_unsubscribes_upstream_and_lets_the_state_go(marbles: MarbleContext) -> None:
    source = marbles.hot("-a-b-c-d|", {"a": ("x", 1), "b": ("y", 1), "c": ("z", 1), "d": ("w", 1)})
    totals = aggregate(first, add, int)
    marbles.expect(source.pipe(totals), "^----!").to_be(
        "-a-b-", {"a": Keyed("x", 1), "b": Keyed("y", 1)}
    )
    marbles.expect_subscriptions(source.subscriptions).to_be("^----!")
    marbles.flush()
    assert totals.state_size() == 0
    assert totals.metrics.received == 2  # c and d came after the unsubscription


def test_each_subscription_starts_with_a_fresh_state_outside_a_flow() -> None:
    totals = aggregate(first, add, int)
    items = reactivex.of(("x", 1), ("x", 2))
    runs: list[list[int]] = [[], []]
    items.pipe(totals).subscribe(lambda keyed: runs[0].append(keyed.value))
    items.pipe(totals).subscribe(lambda keyed: runs[1].append(keyed.value))
    assert runs == [[1, 3], [1, 3]]
    assert totals.metrics.received == 4


def test_a_resubscription_asks_the_scope_again_and_continues_a_durable_table() -> None:
    scope = DurableScope()
    totals = aggregate(first, add, int, name="totals")
    outputs: list[int] = []
    for _ in range(2):
        with state_activated(scope):
            reactivex.of(("x", 1), ("x", 2)).pipe(totals).subscribe(
                lambda keyed: outputs.append(keyed.value)
            )
    assert outputs == [1, 3, 4, 6]
    assert scope.owners == {"totals": totals}


# -- in a pipe and a flow, both backends, virtual time ---------------------------------------


@pytest.fixture(params=virtual_anyio_backends())
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    return request.param


async def at_times(events: Iterable[tuple[float, Pair]]) -> AsyncIterator[Pair]:
    """Yield each item at its (virtual) time, counted from the first pull."""
    start = anyio.current_time()
    for at, item in events:
        await anyio.sleep(max(0.0, start + at - anyio.current_time()))
        yield item


@pytest.mark.anyio
async def test_ttls_count_on_the_pipes_clock() -> None:
    events = [(0.0, ("x", 1)), (30.0, ("x", 2)), (100.0, ("x", 4)), (159.0, ("x", 8))]
    totals = aggregate(first, add, int, ttl=60.0)
    async with open_pipe(at_times(events), totals) as pipe:
        values = [keyed.value async for keyed in pipe]
    # 70 virtual seconds separate the second and third items: the key started again.
    assert values == [1, 3, 4, 12]

    once = deduplicate(first, ttl=60.0)
    async with open_pipe(at_times(events), once) as pipe:
        passed = [item async for item in pipe]
    assert passed == [("x", 1), ("x", 4)]
    assert once.metrics.dropped == 2


@pytest.mark.anyio
async def test_a_flows_snapshot_shows_the_stages() -> None:
    written: list[Any] = []

    async def save(item: Any) -> None:
        written.append(item)

    items = [("x", 1), ("y", 2), ("x", 3), ("y", 4), ("x", 5)]
    snapshot = await (
        Flow("orders")
        .source(items, name="orders")
        .pipe(
            deduplicate(lambda pair: pair[1] % 2, ttl=3600, name="one-per-parity"),
            aggregate(first, add, int, name="totals"),
        )
        .sink(save, name="save")
        .run()
    )
    assert written == [Keyed("x", 1), Keyed("y", 2)]
    assert snapshot["one-per-parity"].kind == "state"
    assert (snapshot["one-per-parity"].received, snapshot["one-per-parity"].dropped) == (5, 3)
    assert snapshot["totals"].emitted == 2


# -- durability ------------------------------------------------------------------------------


Stored = dict[str, dict[Any, tuple[Any, float | None]]]
"""What a store keeps: per table, per key, (value, when it expires or None). As a real
store keeps the time of expiry (not the time left when the entry was written, which a
later checkpoint that leaves the key alone would not bring up to date), on the clock that
goes on across restarts: here the virtual time of the test's timeline."""


class DurableScope:
    """A checkpointed flow's scope, as small as a test needs: one durable table per name,
    restored from ``stored`` when it is first asked for, as at time ``now``. The table is
    on ``clock`` when it is restored, or (None) on its own default clock until the operator
    sets its scheduler's, as when a flow restores its tables before subscribing."""

    def __init__(
        self,
        stored: Stored | None = None,
        now: float = 0.0,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.stored = stored or {}
        self.now = now
        self.clock = clock
        self.tables: dict[str, StateTable[Any, Any]] = {}
        self.owners: dict[str, object] = {}

    @property
    def durable(self) -> bool:
        return True

    def table(self, name: str, owner: object) -> StateTable[Any, Any]:
        if self.owners.setdefault(name, owner) is not owner:
            raise ValueError(f"two operators want the state named {name!r}")
        if name not in self.tables:
            table: StateTable[Any, Any] = StateTable(name, durable=True)
            if self.clock is not None:
                table.clock = self.clock
            table.restore(
                (key, value, None if expires_at is None else expires_at - self.now)
                for key, (value, expires_at) in self.stored.get(name, {}).items()
            )
            self.tables[name] = table
        return self.tables[name]

    def for_partition(self, partition: object) -> DurableScope:
        return self


def checkpoint(scope: DurableScope, store: Stored, now: float) -> None:
    """Write the changes of every table of ``scope`` into ``store``, at time ``now``."""
    for name, table in scope.tables.items():
        entries = store.setdefault(name, {})
        for key, value, expires_in in table.take_changes():
            if value is DELETED:
                entries.pop(key, None)
            else:
                # Serialized at once, as a real checkpoint must (values are live objects).
                expires_at = None if expires_in is None else now + expires_in
                entries[key] = (pickle.loads(pickle.dumps(value)), expires_at)


Timed = list[tuple[float, Pair]]


def run(
    operators: list[Any],
    events: Timed,
    scope: DurableScope,
    scheduler: TestScheduler,
    *,
    checkpoint_every: int | None = None,
    store: Stored | None = None,
) -> tuple[list[Any], list[tuple[int, int]]]:
    """Push ``events`` (absolute virtual times) through ``operators`` subscribed in
    ``scope``; every ``checkpoint_every`` items, checkpoint into ``store``. Returns the
    outputs and, per checkpoint, (items pushed, outputs emitted) when it was taken."""
    subject: Subject[Pair] = Subject()
    outputs: list[Any] = []
    with state_activated(scope):
        subject.pipe(*operators).subscribe(outputs.append, scheduler=scheduler)
    marks: list[tuple[int, int]] = []
    for pushed, (at, item) in enumerate(events, 1):
        scheduler.advance_to(max(at, scheduler.clock))
        subject.on_next(item)
        if checkpoint_every is not None and store is not None and pushed % checkpoint_every == 0:
            checkpoint(scope, store, scheduler.clock)
            marks.append((pushed, len(outputs)))
    return outputs, marks


def count_step(state: list[int] | None, pair: Pair) -> tuple[list[int] | None, tuple[str, int]]:
    """Counts a key's items in a list changed in place; the third item closes the key."""
    seen = state if state is not None else []
    seen.append(pair[1])
    return (None if len(seen) == 3 else seen), (pair[0], sum(seen))


def stateful_operators(ttl: float | None) -> list[Any]:
    """A chain of all three operators, made anew per run (a restarted process makes its
    operators again; they find their state by name)."""

    def collect(items: list[int], pair: Pair) -> list[int]:
        items.append(pair[1])  # in place: the operator puts it again, so it is saved
        return items

    dedup_ttl = ttl if ttl is not None else 1e9
    return [
        deduplicate(lambda pair: pair, ttl=dedup_ttl, name="dedup"),
        ops.map(lambda pair: pair),
        stateful_map(first, count_step, ttl=ttl, name="counts"),
        ops.map(lambda out: (out[0], out[1] % 7)),
        aggregate(first, collect, list, ttl=ttl, name="collected"),
        ops.map(lambda keyed: (keyed.key, tuple(keyed.value))),
    ]


def interrupted_equals_uninterrupted(
    events: Timed,
    ttl: float | None,
    checkpoint_every: int,
    crash_after: int,
    *,
    restore_on_own_clock: bool = False,
) -> None:
    whole, _ = run(stateful_operators(ttl), events, DurableScope(), TestScheduler())

    store: Stored = {}
    first_scheduler = TestScheduler()
    before, marks = run(
        stateful_operators(ttl),
        events[:crash_after],
        DurableScope(),
        first_scheduler,
        checkpoint_every=checkpoint_every,
        store=store,
    )
    # The crash loses what came after the last checkpoint: the restarted flow reads the
    # source again from that checkpoint's position, with the state it stored.
    resume_at, emitted_by_then = marks[-1] if marks else (0, 0)
    restored: Stored = pickle.loads(pickle.dumps(store))
    second_scheduler = TestScheduler()
    # The restarted flow reads the items after the checkpoint at the times they came in
    # the first place: TTLs count in processing time, so a run that reads them later would
    # rightly expire more.
    restart = events[resume_at - 1][0] if resume_at else 0.0
    second_scheduler.advance_to(restart)
    clock = None if restore_on_own_clock else clock_of(second_scheduler)
    scope = DurableScope(restored, now=restart, clock=clock)
    after, _ = run(stateful_operators(ttl), events[resume_at:], scope, second_scheduler)

    assert before[:emitted_by_then] + after == whole


# Four keys' items, one a second; each pair comes again 20 items later (deduplicate drops it
# unless its TTL ran out), and stateful_map closes each key at its third item.
EVENTS: Timed = [(float(n), ("abac"[n % 4], (n * 7) % 5)) for n in range(26)]


@pytest.mark.parametrize("ttl", [None, 3.5])
@pytest.mark.parametrize("crash_after", [5, 12, 17, 22, 26])
def test_a_restart_from_a_checkpoint_emits_what_one_run_emits(
    ttl: float | None, crash_after: int
) -> None:
    interrupted_equals_uninterrupted(EVENTS, ttl, checkpoint_every=4, crash_after=crash_after)


@pytest.mark.parametrize("crash_after", [5, 12, 17, 22, 26])
def test_ttls_restored_before_the_subscription_keep_their_time_left(crash_after: int) -> None:
    # A flow restores its tables before it subscribes the operators, which then set their
    # scheduler's clock on the table: each entry keeps the time it had left.
    interrupted_equals_uninterrupted(
        EVENTS, 3.5, checkpoint_every=4, crash_after=crash_after, restore_on_own_clock=True
    )


def test_the_durable_state_is_what_a_checkpoint_restores() -> None:
    # The check above is only worth something if state lost at the restart shows: resumed
    # with an empty store, the outputs differ.
    whole, _ = run(stateful_operators(None), EVENTS, DurableScope(), TestScheduler())
    store: Stored = {}
    _, [(pushed, emitted)] = run(stateful_operators(None), EVENTS[:8], DurableScope(),
        TestScheduler(), store=store, checkpoint_every=8)  # fmt: skip
    assert set(store) == {"dedup", "counts", "collected"}
    forgotten, _ = run(stateful_operators(None), EVENTS[pushed:], DurableScope(), TestScheduler())
    assert forgotten != whole[emitted:]


timed_events = st.lists(
    st.tuples(
        st.sampled_from([0.0, 0.5, 1.0, 2.0, 4.0]),  # gap since the previous item
        st.tuples(st.sampled_from("abc"), st.integers(0, 4)),
    ),
    min_size=1,
    max_size=40,
).map(lambda gaps: [(sum(g for g, _ in gaps[: n + 1]), pair) for n, (_, pair) in enumerate(gaps)])


@settings(max_examples=200, deadline=None)
@given(
    events=timed_events,
    ttl=st.sampled_from([None, 1.0, 2.5, 6.0]),
    checkpoint_every=st.integers(1, 6),
    data=st.data(),
)
def test_any_interruption_after_a_checkpoint_is_invisible(
    events: Timed, ttl: float | None, checkpoint_every: int, data: st.DataObject
) -> None:
    crash_after = data.draw(st.integers(0, len(events)), label="crash_after")
    interrupted_equals_uninterrupted(events, ttl, checkpoint_every, crash_after)


def test_expired_keys_are_freed_from_a_durable_table_and_the_checkpoint_deletes_them() -> None:
    scope = DurableScope()
    scheduler = TestScheduler()
    store: Stored = {}
    events: Timed = [(float(n), (f"k{n}", 1)) for n in range(10)] + [(100.0, ("late", 1))]
    run([aggregate(first, add, int, ttl=5.0, name="t")], events, scope, scheduler,
        checkpoint_every=1, store=store)  # fmt: skip
    assert len(scope.tables["t"]) == 1
    assert list(store["t"]) == ["late"]


def test_observable_type_is_kept(marbles: MarbleContext) -> None:
    # The operators are plain reactivex operators: usable in .pipe of any Observable.
    source: Observable[Pair] = marbles.cold("a|", {"a": ("x", 1)})
    marbles.expect(source.pipe(deduplicate(first, 1.0), ops.map(first))).to_be("x|")


# -- in a checkpointed Flow ------------------------------------------------------------------


class Acked(Settlement):
    async def _ack(self) -> None:
        return None


def orders(pairs: list[Pair], first: int = 0) -> list[Message[Pair]]:
    return [Message(pair, settlement=Acked(first + n)) for n, pair in enumerate(pairs)]


async def checkpointed(store: MemoryStore, items: list[Message[Pair]]) -> list[Any]:
    """One run of a flow whose three stateful stages keep their state in ``store``."""

    def value(message: Message[Pair]) -> Pair:
        return message.value

    def count(state: int | None, pair: Pair) -> tuple[int, tuple[str, int]]:
        return (state or 0) + 1, (pair[0], (state or 0) + 1)

    written: list[Any] = []
    await (
        Flow("orders")
        .source(items)
        .pipe(
            ops.map(value),
            deduplicate(lambda pair: pair, ttl=3600, name="once"),
            stateful_map(first, count, name="numbered"),
            aggregate(first, lambda total, numbered: total + numbered[1], int, name="totals"),
        )
        .sink(written.append)
        .checkpoint(store)
        .run()
    )
    return written


@pytest.mark.anyio
async def test_a_checkpointed_flow_goes_on_where_its_last_run_stopped() -> None:
    pairs = [("a", 1), ("b", 1), ("a", 2), ("a", 1), ("b", 2), ("a", 3), ("b", 1), ("c", 1)]
    whole = await checkpointed(MemoryStore(), orders(pairs))
    store = MemoryStore()
    before = await checkpointed(store, orders(pairs[:4]))
    after = await checkpointed(store, orders(pairs[4:], first=4))
    assert before + after == whole
    # ("a", 1) and ("b", 1) came twice: the second run's deduplicate remembered ("b", 1).
    assert [keyed.key for keyed in after] == ["b", "a", "c"]


# -- against a reference model ---------------------------------------------------------------


def model(events: Timed, ttl: float | None) -> tuple[list[Any], list[Any], list[Any]]:
    """What aggregate (a running sum), stateful_map (a count, deleted at 3) and
    deduplicate (by key) emit, written as plainly as possible: a key is live until ``ttl``
    after its last update (deduplicate: after its pass)."""
    sums: dict[str, tuple[int, float]] = {}
    counts: dict[str, tuple[int, float]] = {}
    passed: dict[str, float] = {}
    aggregated, mapped, deduplicated = [], [], []

    def live(entry: tuple[int, float] | None, at: float) -> int | None:
        if entry is None or (ttl is not None and at >= entry[1] + ttl):
            return None
        return entry[0]

    for at, (key, amount) in events:
        total = (live(sums.get(key), at) or 0) + amount
        sums[key] = (total, at)
        aggregated.append(Keyed(key, total))
        count = (live(counts.get(key), at) or 0) + 1
        if count == 3:
            counts.pop(key, None)
        else:
            counts[key] = (count, at)
        mapped.append(count)
        dedup_ttl = ttl if ttl is not None else 1e9
        if key not in passed or at >= passed[key] + dedup_ttl:
            passed[key] = at
            deduplicated.append((key, amount))
    return aggregated, mapped, deduplicated


def count_to_three(state: int | None, pair: Pair) -> tuple[int | None, int]:
    count = (state or 0) + 1
    return (None if count == 3 else count), count


@settings(max_examples=200, deadline=None)
@given(events=timed_events, ttl=st.sampled_from([None, 0.5, 1.0, 2.5, 6.0]))
def test_the_operators_agree_with_a_plain_model(events: Timed, ttl: float | None) -> None:
    dedup_ttl = ttl if ttl is not None else 1e9
    operators = [
        aggregate(first, add, int, ttl=ttl),
        stateful_map(first, count_to_three, ttl=ttl),
        deduplicate(first, ttl=dedup_ttl),
    ]
    outputs = [
        run([operator], events, DurableScope(), TestScheduler())[0] for operator in operators
    ]
    assert outputs == list(model(events, ttl))


@pytest.mark.anyio
async def test_leaving_a_pipe_early_lets_the_state_go() -> None:
    events = [(float(n), (f"k{n}", 1)) for n in range(100)]
    totals = aggregate(first, add, int, ttl=3600.0)
    async with open_pipe(at_times(events), totals) as pipe:
        async for keyed in pipe:
            if keyed.key == "k9":
                assert totals.state_size() == 10
                break
    assert totals.state_size() == 0
    assert totals.metrics.received == 10
