"""Joins: interval_join (event time, Flink's semantics) and lookup_join (stream-table).

Semantics as marble diagrams on reactivex's TestScheduler; state freed as the watermark
passes; late items dropped and counted; errors and disposal of both subscriptions; ack holds
outside a checkpointed flow; both joins in open_pipe on both anyio backends in virtual
time; durability: a run cut at a checkpoint (tables pickled, restored into a fresh scope and
a fresh operator) continues as one uninterrupted run; and a hypothesis property test of
interval_join against a brute-force oracle.
"""

from __future__ import annotations

import math
import pickle
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import anyio
import pytest
import reactivex
from hypothesis import given, settings
from hypothesis import strategies as st
from reactivex import Observable
from reactivex.subject import Subject
from reactivex.testing import TestScheduler

from rxflow import Flow, from_async_iterable, open_pipe
from rxflow._holds import NoHolds, holds_activated
from rxflow._state import DELETED, StateTable, TableChange, state_activated
from rxflow.state._joins import (
    Enriched,
    IntervalJoin,
    Joined,
    Tombstone,
    interval_join,
    lookup_join,
)
from rxflow.testing import MarbleContext, virtual_anyio_backends

Event = tuple[str, float]  # (key, event time)


def key_of(event: Event) -> str:
    return event[0]


def time_of(event: Event) -> float:
    return event[1]


def join_on(other: Observable[Event], **options: Any) -> IntervalJoin[Event, Event]:
    return interval_join(other, key=key_of, timestamp=time_of, **options)


class Scope:
    """A state scope kept in a dict, as a checkpointed flow's is: the same name gets the
    same table each time; ``durable`` says whether tables record changes."""

    def __init__(self, durable: bool = True, stored: dict[str, list[Any]] | None = None) -> None:
        self._durable = durable
        self.tables: dict[str, StateTable[Any, Any]] = {}
        for name, entries in (stored or {}).items():
            self.table(name, owner=None).restore(entries)

    @property
    def durable(self) -> bool:
        return self._durable

    def table(self, name: str, owner: object) -> StateTable[Any, Any]:
        if name not in self.tables:
            self.tables[name] = StateTable(name, durable=self._durable)
        return self.tables[name]

    def for_partition(self, partition: object) -> Scope:
        return self

    def sizes(self) -> dict[str, int]:
        return {name: len(table) for name, table in self.tables.items()}


def checkpoint(scope: Scope, stored: dict[str, dict[Any, Any]]) -> dict[str, list[Any]]:
    """Apply each table's changes to ``stored`` (a store's contents), as bytes and back:
    the entries a restarted flow restores."""
    changes: dict[str, list[TableChange]] = {
        name: table.take_changes() for name, table in scope.tables.items()
    }
    for name, table_changes in changes.items():
        contents = stored.setdefault(name, {})
        for key, value, _ in table_changes:
            if value is DELETED:
                contents.pop(key, None)
            else:
                contents[key] = value
    copied: dict[str, dict[Any, Any]] = pickle.loads(pickle.dumps(stored))
    return {name: [(k, v, None) for k, v in c.items()] for name, c in copied.items()}


# -- interval_join: semantics as marble diagrams -----------------------------------------


def test_pairs_whose_right_time_is_in_the_interval(marbles: MarbleContext) -> None:
    lefts = {"a": ("k", 10.0), "b": ("k", 30.0)}
    rights = {"x": ("k", 12.0), "y": ("k", 25.0), "z": ("k", 40.0), "w": ("j", 12.0)}
    left = marbles.hot("-a----b-----|", lefts)
    right = marbles.hot("--x-w---y-z--|", rights)
    joined = left.pipe(join_on(right, lower=-5, upper=10))
    # a(10) matches x(12) when x arrives; w has another key; b(30) matches y(25) when y
    # arrives (-5) and z(40) when z arrives (+10). Completion waits for both sides.
    expected = {
        "p": Joined(lefts["a"], rights["x"]),
        "q": Joined(lefts["b"], rights["y"]),
        "r": Joined(lefts["b"], rights["z"]),
    }
    marbles.expect(joined).to_be("--p-----q-r--|", expected)


def test_a_pair_is_emitted_when_its_later_item_arrives(marbles: MarbleContext) -> None:
    lefts = {"a": ("k", 5.0), "b": ("k", 6.0)}
    rights = {"x": ("k", 7.0)}
    left = marbles.hot("---a--b|", lefts)
    right = marbles.hot("-x-----|", rights)
    joined = left.pipe(join_on(right, lower=0, upper=2, out_of_orderness=10))
    pairs = {"p": Joined(lefts["a"], rights["x"]), "q": Joined(lefts["b"], rights["x"])}
    marbles.expect(joined).to_be("---p--q|", pairs)


def test_matches_come_in_event_time_order_then_arrival(marbles: MarbleContext) -> None:
    rights = {"x": ("k", 9.0, "x"), "y": ("k", 3.0, "y"), "z": ("k", 9.0, "z")}
    lefts = {"a": ("k", 0.0)}
    right = marbles.hot("xyz---|", rights)
    left = marbles.hot("----a-----|", lefts)
    joined = left.pipe(join_on(right, lower=0, upper=10, out_of_orderness=10))
    pairs = {c: Joined(lefts["a"], rights[c]) for c in "xyz"}
    marbles.expect(joined).to_be("----(yxz)-|", pairs)


def test_other_key_and_other_timestamp_read_the_right_items() -> None:
    orders: Subject[Event] = Subject()
    payments: Subject[dict[str, Any]] = Subject()
    join = interval_join(
        payments,
        key=key_of,
        timestamp=time_of,
        other_key=lambda p: p["order"],
        other_timestamp=lambda p: p["at"],
        lower=0,
        upper=60,
    )
    out: list[Joined[Event, dict[str, Any]]] = []
    orders.pipe(join).subscribe(out.append)
    orders.on_next(("o1", 100.0))
    payments.on_next({"order": "o1", "at": 130.0})
    payments.on_next({"order": "o1", "at": 170.0})  # 70 s after: no pair
    assert out == [Joined(("o1", 100.0), {"order": "o1", "at": 130.0})]


# -- interval_join: the watermark, late items, state -------------------------------------


def test_late_items_are_dropped_and_counted(marbles: MarbleContext) -> None:
    lefts = {"a": ("k", 20.0), "b": ("k", 4.0), "c": ("k", 16.0)}
    rights = {"x": ("k", 18.0), "y": ("k", 2.0)}
    left = marbles.hot("a---b-c--|", lefts)
    right = marbles.hot("-x----y-|", rights)
    join = join_on(right, lower=-5, upper=5, out_of_orderness=3)
    # After x the watermark is min(20, 18) - 3 = 15: b (4) and y (2) are late, c (16) is not.
    expected = {"p": Joined(lefts["a"], rights["x"]), "q": Joined(lefts["c"], rights["x"])}
    marbles.expect(left.pipe(join)).to_be("-p----q--|", expected)
    marbles.flush()
    assert join.late_dropped == 2  # b (4) and y (2), both before the watermark 15
    snapshot = join.metrics.snapshot()
    assert (snapshot.kind, snapshot.received, snapshot.emitted, snapshot.dropped) == (
        "join",
        5,
        2,
        2,
    )


def test_buffers_follow_the_watermark_and_idle_keys_cost_nothing() -> None:
    scope = Scope(durable=False)
    left: Subject[Event] = Subject()
    right: Subject[Event] = Subject()
    join = join_on(right, lower=0, upper=10)
    with state_activated(scope):
        left.pipe(join).subscribe(lambda _: None)
    for n in range(100):
        left.on_next((f"k{n}", 0.0))
        right.on_next((f"k{n}", 5.0))
    # Watermark min(0, 5) = 0: lefts at 0 may still meet rights up to 10; rights at 5
    # may meet lefts from -5 to 5.
    assert scope.sizes() == {
        "interval_join.time": 3,
        "interval_join.left": 100,
        "interval_join.right": 100,
    }
    assert join.state_size() == 200
    left.on_next(("hot", 8.0))  # watermark 5: nothing is past its last chance yet
    assert join.state_size() == 201
    right.on_next(("hot", 10.5))  # watermark 8: the rights at 5 can meet no left now
    assert scope.sizes()["interval_join.right"] == 1
    assert scope.sizes()["interval_join.left"] == 101
    left.on_next(("hot", 20.0))  # watermark 10.5: the lefts at 0 are past 0 + 10
    assert scope.sizes()["interval_join.left"] == 1
    right.on_next(("hot", 20.0))  # watermark 20: only the items at 20 may still match
    assert scope.sizes()["interval_join.right"] == 1
    assert join.state_size() == 2


def test_a_side_that_completes_holds_the_watermark_back_no_longer() -> None:
    scope = Scope(durable=False)
    left: Subject[Event] = Subject()
    right: Subject[Event] = Subject()
    join = join_on(right, lower=0, upper=1)
    out: list[Joined[Event, Event]] = []
    done: list[bool] = []
    with state_activated(scope):
        left.pipe(join).subscribe(out.append, on_completed=lambda: done.append(True))
    right.on_next(("k", 1.0))
    right.on_completed()
    for t in range(100):  # no right will come: the lefts are not kept
        left.on_next(("k", float(t)))
    assert out == [Joined(("k", 0.0), ("k", 1.0)), Joined(("k", 1.0), ("k", 1.0))]
    assert scope.sizes()["interval_join.left"] == 0
    assert scope.sizes()["interval_join.right"] == 0  # freed as the left's time passed
    assert done == []
    left.on_completed()
    assert done == [True]


def test_an_idle_side_holds_the_watermark_back_no_longer() -> None:
    scheduler = TestScheduler()
    for idle_timeout in (None, 5.0):
        scope = Scope(durable=False)
        left: Subject[Event] = Subject()
        right: Subject[Event] = Subject()
        join = join_on(right, lower=0, upper=1, idle_timeout=idle_timeout, scheduler=scheduler)
        out: list[Joined[Event, Event]] = []
        with state_activated(scope):
            subscription = left.pipe(join).subscribe(out.append)
        start = scheduler.clock
        right.on_next(("k", 0.0))
        for t in (1.0, 2.0, 3.0):
            scheduler.advance_by(1.0)
            left.on_next(("k", t))
        assert join.state_size() == 4  # the watermark is min(3, 0) = 0
        scheduler.advance_to(start + 5.0)  # the right has sent nothing for 5 s
        right.on_next(("k", 2.5))  # late once the idle right no longer holds it at 0
        right.on_next(("k", 3.5))
        if idle_timeout is None:
            assert out == [Joined(("k", 2.0), ("k", 2.5)), Joined(("k", 3.0), ("k", 3.5))]
            assert join.late_dropped == 0
        else:
            assert out == [Joined(("k", 3.0), ("k", 3.5))]
            assert join.late_dropped == 1
            assert scope.tables["interval_join.time"].get("watermark") == 3.0
        subscription.dispose()


def test_the_watermark_stays_while_both_sides_are_idle() -> None:
    scheduler = TestScheduler()
    left: Subject[Event] = Subject()
    right: Subject[Event] = Subject()
    join = join_on(right, lower=0, upper=1, idle_timeout=2.0, scheduler=scheduler)
    out: list[Joined[Event, Event]] = []
    left.pipe(join).subscribe(out.append)
    left.on_next(("k", 10.0))
    right.on_next(("k", 4.0))
    scheduler.advance_by(100.0)  # both idle: neither sets the time, nothing is freed
    assert join.state_size() == 2
    right.on_next(("k", 10.5))  # not late: the watermark is still min(10, 4) = 4
    assert out == [Joined(("k", 10.0), ("k", 10.5))]


def test_a_timestamp_that_is_not_a_number_fails_the_join() -> None:
    errors: list[Exception] = []
    right: Subject[Any] = Subject()
    reactivex.of(("k", 1.0)).pipe(join_on(right, lower=0, upper=1)).subscribe(
        on_error=errors.append
    )
    right.on_next(("k", "noon"))
    assert [str(error) for error in errors] == [
        "interval_join: the right timestamp function returned 'noon' for item ('k', 'noon'); "
        "it must return a number (seconds, in event time)"
    ]


def test_other_real_numbers_are_timestamps() -> None:
    from decimal import Decimal

    out: list[Joined[Any, Any]] = []
    right: Subject[Any] = Subject()
    reactivex.of(("k", Decimal("1.5"))).pipe(join_on(right, lower=0, upper=1)).subscribe(out.append)
    right.on_next(("k", 2))
    assert out == [Joined(("k", Decimal("1.5")), ("k", 2))]


# -- interval_join: completion, errors, disposal -----------------------------------------


def test_completion_waits_for_both_sides(marbles: MarbleContext) -> None:
    left = marbles.hot("-a|", {"a": ("k", 1.0)})
    right = marbles.hot("-----b----|", {"b": ("k", 1.0)})
    joined = left.pipe(join_on(right, lower=0, upper=0))
    pair = Joined(("k", 1.0), ("k", 1.0))
    marbles.expect(joined).to_be("-----p----|", {"p": pair})
    marbles.expect_subscriptions(left.subscriptions).to_be("^-!")
    marbles.expect_subscriptions(right.subscriptions).to_be("^---------!")


def test_an_error_of_either_side_is_passed_on_and_ends_both(marbles: MarbleContext) -> None:
    boom = RuntimeError("boom")
    left = marbles.hot("-a-----|", {"a": ("k", 1.0)})
    right = marbles.hot("---#", error=boom)
    marbles.expect(left.pipe(join_on(right, lower=0, upper=1))).to_be("---#", error=boom)
    marbles.expect_subscriptions(left.subscriptions).to_be("^--!")
    marbles.expect_subscriptions(right.subscriptions).to_be("^--!")

    left2 = marbles.hot("--#", error=boom)
    right2 = marbles.hot("-a-----|", {"a": ("k", 1.0)})
    marbles.expect(left2.pipe(join_on(right2, lower=0, upper=1))).to_be("--#", error=boom)
    marbles.expect_subscriptions(right2.subscriptions).to_be("^-!")


def test_a_key_function_that_raises_fails_the_join() -> None:
    boom = KeyError("no key")

    def bad_key(event: Event) -> str:
        raise boom

    errors: list[Exception] = []
    right: Subject[Event] = Subject()
    join = interval_join(right, key=key_of, timestamp=time_of, other_key=bad_key, lower=0, upper=1)
    reactivex.never().pipe(join).subscribe(on_error=errors.append)
    right.on_next(("k", 1.0))
    assert errors == [boom]
    assert not right.observers  # the right side was unsubscribed


def test_disposal_unsubscribes_both_sides(marbles: MarbleContext) -> None:
    left = marbles.hot("-a-----b-|", {"a": ("k", 1.0), "b": ("k", 2.0)})
    right = marbles.hot("--x-----y-|", {"x": ("k", 1.5), "y": ("k", 2.0)})
    join = join_on(right, lower=0, upper=1)
    marbles.expect(left.pipe(join), "^----!").to_be("--p--", {"p": Joined(("k", 1.0), ("k", 1.5))})
    marbles.expect_subscriptions(left.subscriptions).to_be("^----!")
    marbles.expect_subscriptions(right.subscriptions).to_be("^----!")
    marbles.flush()
    assert join.state_size() == 0  # no subscription holds anything now
    assert join.metrics.received == 2  # b and y came after the unsubscription


class RecordingHolds(NoHolds):
    """Ack holds that hand out numbers and record what is attached and released."""

    def __init__(self) -> None:
        self.next = 0
        self.live: set[int] = set()
        self.attached_to: list[tuple[int | None, ...]] = []

    def hold(self) -> int:
        self.next += 1
        self.live.add(self.next)
        return self.next

    def attached(self, holds: Iterable[int | None]) -> Any:
        self.attached_to.append(tuple(holds))
        return super().attached(holds)

    def release(self, holds: Iterable[int | None]) -> None:
        for hold in holds:
            assert hold in self.live, f"released {hold} twice or never held"
            self.live.discard(hold)  # type: ignore[arg-type]


def test_outside_a_checkpointed_flow_buffered_items_hold_their_messages() -> None:
    holds = RecordingHolds()
    left: Subject[Event] = Subject()
    right: Subject[Event] = Subject()
    with holds_activated(holds):
        left.pipe(join_on(right, lower=0, upper=5)).subscribe(lambda _: None)
    left.on_next(("k", 0.0))  # hold 1
    right.on_next(("k", 3.0))  # matches left 1: the pair carries hold 1; kept as hold 2
    assert holds.attached_to == [(1,)]
    assert holds.live == {1, 2}
    right.on_next(("k", 6.0))  # hold 3; the watermark stays at min(0, 6) = 0
    left.on_next(("k", 10.0))  # hold 4; watermark 6: the left at 0 (last chance 5) and
    assert holds.live == {3, 4}  # the right at 3 (lefts from 3 on could match it) go
    left.on_completed()
    right.on_completed()
    assert holds.live == set()  # every buffered item had its chance


def test_in_a_durable_scope_nothing_is_held() -> None:
    holds = RecordingHolds()
    left: Subject[Event] = Subject()
    right: Subject[Event] = Subject()
    with holds_activated(holds), state_activated(Scope()):
        left.pipe(join_on(right, lower=0, upper=5)).subscribe(lambda _: None)
    left.on_next(("k", 0.0))
    right.on_next(("k", 3.0))
    assert holds.next == 0  # a checkpoint covers the buffered items


# -- arguments -----------------------------------------------------------------------------


NEVER: Observable[Any] = reactivex.never()


@pytest.mark.parametrize(
    ("call", "kind", "message"),
    [
        (
            lambda: interval_join([], key=key_of, timestamp=time_of, lower=0, upper=1),
            TypeError,
            "interval_join(): other must be an Observable",
        ),
        (
            lambda: interval_join(NEVER, key="k", timestamp=time_of, lower=0, upper=1),
            TypeError,
            "interval_join(): key must be a function",
        ),
        (
            lambda: interval_join(NEVER, key=key_of, timestamp=1, lower=0, upper=1),
            TypeError,
            "interval_join(): timestamp must be a function",
        ),
        (
            lambda: interval_join(
                NEVER, key=key_of, timestamp=time_of, other_key=3, lower=0, upper=1
            ),
            TypeError,
            "interval_join(): other_key must be",
        ),
        (
            lambda: interval_join(NEVER, key=key_of, timestamp=time_of, lower=2, upper=1),
            ValueError,
            "interval_join(): lower (2.0) must not be more than upper (1.0)",
        ),
        (
            lambda: interval_join(NEVER, key=key_of, timestamp=time_of, lower=math.nan, upper=1),
            ValueError,
            "interval_join(): lower must be a finite number",
        ),
        (
            lambda: interval_join(NEVER, key=key_of, timestamp=time_of, lower="0", upper=1),
            TypeError,
            "interval_join(): lower must be seconds",
        ),
        (
            lambda: interval_join(
                NEVER, key=key_of, timestamp=time_of, lower=0, upper=1, out_of_orderness=-1
            ),
            ValueError,
            "interval_join(): out_of_orderness must be 0 or more",
        ),
        (
            lambda: interval_join(NEVER, key=key_of, timestamp=time_of, lower=0, upper=1, name=""),
            ValueError,
            "interval_join(): name must be a non-empty str",
        ),
        (
            lambda: join_on(NEVER, lower=0, upper=1, idle_timeout=0),
            ValueError,
            "interval_join(): idle_timeout must be more than 0 seconds",
        ),
        (
            lambda: lookup_join([], key=key_of, table_key=key_of),
            TypeError,
            "lookup_join(): table must be an Observable",
        ),
        (
            lambda: lookup_join(NEVER, key=None, table_key=key_of),
            TypeError,
            "lookup_join(): key must be a function",
        ),
        (
            lambda: lookup_join(NEVER, key=key_of, table_key=key_of, value=2),
            TypeError,
            "lookup_join(): value must be a function",
        ),
        (
            lambda: lookup_join(NEVER, key=key_of, table_key=key_of, missing="skip"),
            ValueError,
            "lookup_join(): missing must be 'drop'",
        ),
    ],
)
def test_bad_arguments_are_refused_at_the_call(
    call: Callable[[], object], kind: type[Exception], message: str
) -> None:
    with pytest.raises(kind) as raised:
        call()
    assert str(raised.value).startswith(message)


def test_bounds_may_be_timedeltas() -> None:
    from datetime import timedelta

    join = join_on(NEVER, lower=timedelta(minutes=-1), upper=timedelta(0), out_of_orderness=2)
    assert (join.lower, join.upper, join.out_of_orderness) == (-60.0, 0.0, 2.0)


# -- lookup_join ---------------------------------------------------------------------------


Row = tuple[str, str | None]  # (customer, city or None)


def row_value(row: Row) -> str | None:
    return row[1]


def test_items_see_the_latest_value_of_their_key(marbles: MarbleContext) -> None:
    rows = {"A": ("ann", "Paris"), "B": ("bob", "Rome"), "C": ("ann", "Lyon")}
    orders = {"a": ("ann", 1.0), "b": ("bob", 2.0), "c": ("cid", 3.0), "d": ("ann", 4.0)}
    table = marbles.hot("A-B---C-----", rows)
    stream = marbles.hot("-a--b-cd-|", orders)
    join = lookup_join(table, key=key_of, table_key=key_of, value=row_value)
    expected = {
        "p": Enriched(orders["a"], "Paris"),
        "q": Enriched(orders["b"], "Rome"),
        "r": Enriched(orders["d"], "Lyon"),
    }
    # c has no row: dropped and counted. The join ends with the stream, not the table.
    marbles.expect(stream.pipe(join)).to_be("-p--q--r-|", expected)
    marbles.expect_subscriptions(table.subscriptions).to_be("^--------!")
    marbles.flush()
    assert join.missing_dropped == 1
    snapshot = join.metrics.snapshot()
    assert (snapshot.received, snapshot.emitted, snapshot.dropped) == (4, 3, 1)


def test_none_values_and_tombstones_delete(marbles: MarbleContext) -> None:
    rows = {"A": ("ann", "Paris"), "X": ("ann", None), "B": ("bob", "Rome"), "T": Tombstone("bob")}
    orders = {"a": ("ann", 1.0), "b": ("bob", 2.0)}
    table = marbles.hot("AB--X-T----|", rows)
    stream = marbles.hot("--ab--ab--|", orders)
    join = lookup_join(table, key=key_of, table_key=key_of, value=row_value, missing="emit")
    expected = {
        "p": Enriched(orders["a"], "Paris"),
        "q": Enriched(orders["b"], "Rome"),
        "r": Enriched(orders["a"], None),
        "s": Enriched(orders["b"], None),
    }
    marbles.expect(stream.pipe(join)).to_be("--pq--rs--|", expected)
    marbles.flush()
    assert join.missing_dropped == 0


def test_without_value_the_update_itself_is_the_value() -> None:
    table = reactivex.of(("ann", "Paris"), ("bob", "Rome"))
    out: list[Enriched[Event, Row]] = []
    join = lookup_join(table, key=key_of, table_key=key_of)
    reactivex.of(("bob", 1.0)).pipe(join).subscribe(out.append)
    # The table stream is subscribed first: what it has at hand is in before the items.
    assert out == [Enriched(("bob", 1.0), ("bob", "Rome"))]


def test_an_error_of_the_table_ends_the_join(marbles: MarbleContext) -> None:
    boom = RuntimeError("changelog gone")
    table = marbles.hot("A--#", {"A": ("ann", "Paris")}, error=boom)
    stream = marbles.hot("-a---a-|", {"a": ("ann", 1.0)})
    join = lookup_join(table, key=key_of, table_key=key_of, value=row_value)
    marbles.expect(stream.pipe(join)).to_be("-p-#", {"p": Enriched(("ann", 1.0), "Paris")}, boom)
    marbles.expect_subscriptions(stream.subscriptions).to_be("^--!")


def test_a_table_that_completes_keeps_its_contents(marbles: MarbleContext) -> None:
    table = marbles.hot("A|", {"A": ("ann", "Paris")})
    stream = marbles.hot("---a-|", {"a": ("ann", 1.0)})
    join = lookup_join(table, key=key_of, table_key=key_of, value=row_value)
    marbles.expect(stream.pipe(join)).to_be("---p-|", {"p": Enriched(("ann", 1.0), "Paris")})


def test_a_table_key_function_that_raises_fails_the_join() -> None:
    errors: list[Exception] = []
    table: Subject[Any] = Subject()
    join = lookup_join(table, key=key_of, table_key=lambda row: row["customer"])
    reactivex.never().pipe(join).subscribe(on_error=errors.append)
    table.on_next(("ann", "Paris"))
    assert [type(error) for error in errors] == [TypeError]
    assert not table.observers
    assert join.state_size() == 0


def test_disposal_unsubscribes_the_table(marbles: MarbleContext) -> None:
    table = marbles.hot("A-----B-|", {"A": ("ann", "Paris"), "B": ("bob", "Rome")})
    stream = marbles.hot("-a-----|", {"a": ("ann", 1.0)})
    join = lookup_join(table, key=key_of, table_key=key_of, value=row_value)
    marbles.expect(stream.pipe(join), "^--!").to_be("-p-", {"p": Enriched(("ann", 1.0), "Paris")})
    marbles.expect_subscriptions(table.subscriptions).to_be("^--!")


# -- in a pipe, both backends, virtual time ------------------------------------------------


@pytest.fixture(params=virtual_anyio_backends())
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    return request.param


async def at_times(events: Iterable[tuple[float, Any]]) -> AsyncIterator[Any]:
    """Yield each item at its (virtual) time, counted from the first pull."""
    start = anyio.current_time()
    for at, item in events:
        await anyio.sleep(max(0.0, start + at - anyio.current_time()))
        yield item


@pytest.mark.anyio
async def test_an_interval_join_in_a_pipe() -> None:
    clicks = [(0.0, ("ann", 100.0)), (1.0, ("bob", 101.0)), (5.0, ("ann", 160.0))]
    views = [(0.5, ("ann", 95.0)), (2.0, ("bob", 130.0)), (3.0, ("ann", 99.0)), (6.0, ("x", 170))]
    join = join_on(from_async_iterable(at_times(views)), lower=-10, upper=0, out_of_orderness=2)
    async with open_pipe(at_times(clicks), join) as pipe:
        pairs = [(p.left, p.right, anyio.current_time()) async for p in pipe]
    start = pairs[0][2] - 0.5
    assert [(left, right, round(t - start, 6)) for left, right, t in pairs] == [
        (("ann", 100.0), ("ann", 95.0), 0.5),
        # ann's view at 99 is not late: the watermark is min(101, 130) - 2 = 99
        (("ann", 100.0), ("ann", 99.0), 3.0),
    ]
    assert join.late_dropped == 0
    assert join.metrics.received == 7


@pytest.mark.anyio
async def test_idleness_counts_on_the_pipes_clock() -> None:
    clicks = [(0.0, ("k", 100.0)), (20.0, ("k", 105.0))]
    views = [(1.0, ("k", 100.5)), (2.0, ("k", 110.0)), (12.0, ("k", 120.0))]
    join = join_on(from_async_iterable(at_times(views)), lower=0, upper=1, idle_timeout=5)
    async with open_pipe(at_times(clicks), join) as pipe:
        pairs = [pair async for pair in pipe]
    assert pairs == [Joined(("k", 100.0), ("k", 100.5))]
    # The clicks went quiet from 0 to 20: at 5 the views alone set the watermark (110,
    # then 120), so the click at 105 came late. Without idle_timeout it would have been
    # min(100, 120) = 100.
    assert join.late_dropped == 1


@pytest.mark.anyio
async def test_a_lookup_join_in_a_pipe() -> None:
    rows = [(0.0, ("ann", "Paris")), (2.0, ("ann", "Lyon")), (4.0, ("ann", None))]
    orders = [(1.0, ("ann", 1.0)), (3.0, ("ann", 2.0)), (5.0, ("ann", 3.0))]
    join = lookup_join(
        from_async_iterable(at_times(rows)),
        key=key_of,
        table_key=key_of,
        value=row_value,
        missing="emit",
    )
    async with open_pipe(at_times(orders), join) as pipe:
        enriched = [item async for item in pipe]
    assert enriched == [
        Enriched(("ann", 1.0), "Paris"),
        Enriched(("ann", 2.0), "Lyon"),
        Enriched(("ann", 3.0), None),
    ]


@pytest.mark.anyio
async def test_joins_in_a_flow() -> None:
    written: list[Any] = []

    async def save(item: Any) -> None:
        written.append(item)

    # The payments come after the orders: the orders wait in the join (with the flow's holds).
    payments = from_async_iterable(at_times([(1.0, ("o1", 5.0)), (2.0, ("o2", 50.0))]))
    cities = reactivex.of(("o1", "Paris"))
    with anyio.fail_after(60):  # virtual seconds
        snapshot = await (
            Flow("orders")
            .source([("o1", 0.0), ("o2", 10.0)], name="orders")
            .pipe(
                join_on(payments, lower=0, upper=30, name="paid"),
                lookup_join(cities, key=lambda pair: pair.left[0], table_key=key_of),
            )
            .sink(save, name="save")
            .run()
        )
    assert written == [Enriched(Joined(("o1", 0.0), ("o1", 5.0)), ("o1", "Paris"))]
    paid = snapshot["paid"]
    assert (paid.kind, paid.received, paid.emitted, paid.dropped) == ("join", 4, 1, 0)
    assert (snapshot["lookup_join"].received, snapshot["lookup_join"].emitted) == (1, 1)


# -- durability: cut at a checkpoint, restore, continue ------------------------------------


Step = tuple[str, Event]  # ("L" or "R", event)


def run_join(
    steps: list[Step],
    *,
    lower: float,
    upper: float,
    out_of_orderness: float,
    cuts: Iterable[int] = (),
    complete: bool = True,
) -> tuple[list[Joined[Event, Event]], IntervalJoin[Event, Event], Scope]:
    """Feed ``steps`` to an interval join; at each cut, checkpoint the tables, drop the
    subscription and start a fresh operator in a fresh scope restored from the checkpoint
    (a restarted flow). The pairs emitted, the last operator and its scope."""
    out: list[Joined[Event, Event]] = []
    stored: dict[str, dict[Any, Any]] = {}
    restore: dict[str, list[Any]] = {}
    boundaries = [*sorted(set(cuts)), len(steps)]
    begin = 0
    for end in boundaries:
        scope = Scope(stored=restore)
        left: Subject[Event] = Subject()
        right: Subject[Event] = Subject()
        join = join_on(right, lower=lower, upper=upper, out_of_orderness=out_of_orderness)
        with state_activated(scope):
            subscription = left.pipe(join).subscribe(out.append)
        for side, event in steps[begin:end]:
            (left if side == "L" else right).on_next(event)
        if end == len(steps):
            if complete:
                left.on_completed()
                right.on_completed()
            return out, join, scope
        restore = checkpoint(scope, stored)
        subscription.dispose()
        begin = end
    raise AssertionError("unreachable")


STEPS: list[Step] = [
    ("L", ("a", 1.0)),
    ("R", ("a", 2.0)),
    ("R", ("b", 3.0)),
    ("L", ("b", 4.0)),
    ("L", ("a", 9.0)),
    ("R", ("a", 10.0)),
    ("R", ("a", 0.5)),  # late once the watermark is past it
    ("L", ("b", 12.0)),
    ("R", ("b", 14.0)),
    ("L", ("a", 15.0)),
    ("R", ("a", 16.0)),
]


@pytest.mark.parametrize("cut", range(len(STEPS) + 1))
def test_a_restored_join_continues_as_one_uninterrupted_run(cut: int) -> None:
    options = {"lower": -2.0, "upper": 3.0, "out_of_orderness": 1.0}
    whole, whole_join, _ = run_join(STEPS, **options)
    resumed, _, _ = run_join(STEPS, cuts=[cut], **options)
    expected, late = oracle(STEPS, **options)
    assert whole == expected
    assert len(whole) == 5
    assert late == whole_join.late_dropped == 1
    assert resumed == whole


def test_a_restored_lookup_join_continues_as_one_uninterrupted_run() -> None:
    steps: list[tuple[str, Any]] = [
        ("T", ("ann", "Paris")),
        ("S", ("ann", 1.0)),
        ("T", ("bob", "Rome")),
        ("T", ("ann", "Lyon")),
        ("S", ("bob", 2.0)),
        ("T", ("bob", None)),
        ("S", ("ann", 3.0)),
        ("S", ("bob", 4.0)),
    ]

    def run(cut: int | None) -> list[Enriched[Event, str]]:
        out: list[Enriched[Event, str]] = []
        stored: dict[str, dict[Any, Any]] = {}
        restore: dict[str, list[Any]] = {}
        for part in [steps] if cut is None else [steps[:cut], steps[cut:]]:
            scope = Scope(stored=restore)
            table: Subject[Row] = Subject()
            stream: Subject[Event] = Subject()
            join = lookup_join(
                table, key=key_of, table_key=key_of, value=row_value, missing="emit", name="cities"
            )
            with state_activated(scope):
                subscription = stream.pipe(join).subscribe(out.append)
            for kind, record in part:
                (table if kind == "T" else stream).on_next(record)
            restore = checkpoint(scope, stored)
            subscription.dispose()
        return out

    whole = run(None)
    assert whole == [
        Enriched(("ann", 1.0), "Paris"),
        Enriched(("bob", 2.0), "Rome"),
        Enriched(("ann", 3.0), "Lyon"),
        Enriched(("bob", 4.0), None),
    ]
    for cut in range(len(steps) + 1):
        assert run(cut) == whole


# -- property: against a brute-force oracle ------------------------------------------------


def oracle(
    steps: list[Step], lower: float, upper: float, out_of_orderness: float
) -> tuple[list[Joined[Event, Event]], int]:
    """The pairs in the order the join must emit them, and the number of late items: an
    item is late if its time is below the watermark when it arrives; every pair of
    punctual items of one key within the interval is emitted when its later item arrives,
    that item's partners in (time, arrival) order."""
    watermark = -math.inf
    seen = {"L": -math.inf, "R": -math.inf}
    punctual: list[tuple[int, str, Event]] = []
    pairs: list[Joined[Event, Event]] = []
    late = 0
    for index, (side, event) in enumerate(steps):
        if event[1] < watermark:
            late += 1
            continue
        partners = sorted(
            (other[1], earlier, other)
            for earlier, other_side, other in punctual
            if other_side != side
            and other[0] == event[0]
            and (
                event[1] + lower <= other[1] <= event[1] + upper
                if side == "L"
                else other[1] + lower <= event[1] <= other[1] + upper
            )
        )
        for _, _, other in partners:
            pairs.append(Joined(event, other) if side == "L" else Joined(other, event))
        punctual.append((index, side, event))
        seen[side] = max(seen[side], event[1])
        watermark = max(watermark, min(seen.values()) - out_of_orderness)
    return pairs, late


steps_strategy = st.lists(
    st.tuples(
        st.sampled_from(["L", "R"]),
        st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(0, 40).map(float)),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(
    steps=steps_strategy,
    lower=st.integers(-6, 6),
    width=st.integers(0, 8),
    out_of_orderness=st.integers(0, 6),
    cuts=st.lists(st.integers(0, 40), max_size=3),
)
def test_interval_join_matches_the_oracle(
    steps: list[Step], lower: int, width: int, out_of_orderness: int, cuts: list[int]
) -> None:
    options = {"lower": float(lower), "upper": float(lower + width)}
    expected, late = oracle(steps, out_of_orderness=out_of_orderness, **options)
    pairs, join, scope = run_join(
        steps, out_of_orderness=out_of_orderness, complete=False, **options
    )
    assert pairs == expected
    assert join.late_dropped == late
    # Nothing is kept past its last chance: the state follows the watermark.
    watermark = scope.tables["interval_join.time"].get("watermark", -math.inf)
    for side, keep_for in (("left", lower + width), ("right", -lower)):
        for _, bucket in scope.tables[f"interval_join.{side}"].scan():
            assert bucket  # an empty bucket is deleted
            assert all(t + keep_for >= watermark for t, _, _ in bucket)
    # And a run cut anywhere (checkpointed, restored, continued) emits the same.
    resumed, _, _ = run_join(
        steps,
        out_of_orderness=out_of_orderness,
        cuts=[min(cut, len(steps)) for cut in cuts],
        **options,
    )
    assert resumed == expected


updates_and_items = st.lists(
    st.one_of(
        st.tuples(st.just("T"), st.tuples(st.sampled_from("ab"), st.sampled_from([None, 1, 2]))),
        st.tuples(st.just("S"), st.tuples(st.sampled_from("abc"), st.integers(0, 9))),
    ),
    max_size=30,
)


@settings(max_examples=200, deadline=None)
@given(steps=updates_and_items, missing=st.sampled_from(["drop", "emit"]), cut=st.integers(0, 30))
def test_lookup_join_matches_a_dict(steps: list[tuple[str, Any]], missing: Any, cut: int) -> None:
    table: dict[str, Any] = {}
    expected: list[Enriched[Any, Any]] = []
    for kind, (key, value) in steps:
        if kind == "T":
            if value is None:
                table.pop(key, None)
            else:
                table[key] = value
        elif key in table or missing == "emit":
            expected.append(Enriched((key, value), table.get(key)))

    out: list[Enriched[Any, Any]] = []
    stored: dict[str, dict[Any, Any]] = {}
    restore: dict[str, list[Any]] = {}
    cut = min(cut, len(steps))
    for part in (steps[:cut], steps[cut:]):
        scope = Scope(stored=restore)
        updates: Subject[Any] = Subject()
        items: Subject[Any] = Subject()
        join = lookup_join(
            updates, key=key_of, table_key=key_of, value=lambda r: r[1], missing=missing
        )
        with state_activated(scope):
            subscription = items.pipe(join).subscribe(out.append)
        for kind, record in part:
            (updates if kind == "T" else items).on_next(record)
        restore = checkpoint(scope, stored)
        subscription.dispose()
    assert out == expected
