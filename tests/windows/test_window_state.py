"""Windows in a checkpointed flow's durable state: restored from any checkpoint, with the
items after it delivered again, they emit what an uninterrupted run emits after it.

A checkpointed flow hands operators durable tables (:mod:`rxflow._state`); ``DurableScope``
below is that as small as a test needs: one table per name, restored from what the last
checkpoint stored. ``checkpoint`` stores the tables' changes as a store would (pickled at
once, since the values are live objects). A "crash" is a subscription disposed without
completing; the restart is a new operator object subscribed in a scope restored from the
stored checkpoint, fed the items after it.
"""

from __future__ import annotations

import pickle
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import anyio
import pytest
import reactivex
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st
from reactivex.subject import Subject
from reactivex.testing import TestScheduler

from rxflow import Window, open_pipe, session, sliding, tumbling
from rxflow._holds import Hold, holds_activated
from rxflow._state import DELETED, StateTable, state_activated
from rxflow.windows._durable import ChunkKey, OpenItems

Stored = dict[str, dict[Any, bytes]]
"""What a store keeps: per table, per key, the pickled value."""


class DurableScope:
    """A checkpointed flow's state scope: one durable table per name, restored from
    ``stored``; a name has one owner (a second operator asking for it is refused, as the
    flow's scope refuses it)."""

    def __init__(self, stored: Stored | None = None) -> None:
        self.stored = stored or {}
        self.tables: dict[str, StateTable[Any, Any]] = {}
        self.owners: dict[str, object] = {}

    @property
    def durable(self) -> bool:
        return True

    def table(self, name: str, owner: object) -> StateTable[Any, Any]:
        if self.owners.setdefault(name, owner) is not owner:
            raise ValueError(f"two stateful operators keep state under the name {name!r}")
        if name not in self.tables:
            table: StateTable[Any, Any] = StateTable(name, durable=True)
            table.restore(
                (key, pickle.loads(value), None) for key, value in self.stored.get(name, {}).items()
            )
            self.tables[name] = table
        return self.tables[name]

    def for_partition(self, partition: object) -> DurableScope:
        return self


def checkpoint(scope: DurableScope, stored: Stored) -> int:
    """Write every table's changes since the last checkpoint into ``stored``; return the
    bytes of the values written."""
    written = 0
    for name, table in scope.tables.items():
        entries = stored.setdefault(name, {})
        for key, value, _ in table.take_changes():
            if value is DELETED:
                entries.pop(key, None)
            else:
                encoded = entries[pickle.loads(pickle.dumps(key))] = pickle.dumps(value)
                written += len(encoded)
    return written


# -- event time: cut anywhere, restore, feed the rest ----------------------------------------

Event = tuple[str, int, int]  # key, timestamp, serial number (tells equal events apart)

events_strategy = st.lists(st.tuples(st.sampled_from("abc"), st.integers(0, 60)), max_size=40).map(
    lambda pairs: [(key, t, n) for n, (key, t) in enumerate(pairs)]
)


def key_of(event: Event) -> str:
    return event[0]


def time_of(event: Event) -> int:
    return event[1]


Output = tuple[str, Any]  # ("window", Window) or ("late", item)


class Subscribed:
    """One subscription of a window operator to a Subject, recording what it emits (and
    its late side output) in order."""

    def __init__(self, operator: Any) -> None:
        self.source: Subject[Any] = Subject()
        self.outputs: list[Output] = []
        self.completed = False
        self.errors: list[Exception] = []
        if hasattr(operator, "late_items"):
            operator.late_items.subscribe(lambda item: self.outputs.append(("late", item)))
        self.subscription = self.source.pipe(operator).subscribe(
            lambda window: self.outputs.append(("window", window)),
            self.errors.append,
            self._complete,
        )

    def _complete(self) -> None:
        self.completed = True

    def push(self, items: list[Any]) -> None:
        for item in items:
            self.source.on_next(item)


def uninterrupted(make: Callable[[], Any], events: list[Event], cut: int) -> list[Output]:
    """What a run that never stops emits after the first ``cut`` events."""
    run = Subscribed(make())
    run.push(events[:cut])
    before = len(run.outputs)
    run.push(events[cut:])
    run.source.on_completed()
    assert run.completed
    return run.outputs[before:]


def restarted(
    make: Callable[[], Any], events: list[Event], checkpoints: list[int], crash: int
) -> list[Output]:
    """Checkpoint after each count of events in ``checkpoints``, crash after ``crash``
    events (at or after the last checkpoint), restart from the last checkpoint and feed
    the events after it: what the restarted run emits."""
    stored: Stored = {}
    scope = DurableScope()
    with state_activated(scope):
        first = Subscribed(make())
    done = 0
    for at in checkpoints:
        first.push(events[done:at])
        checkpoint(scope, stored)
        done = at
    first.push(events[done:crash])
    first.subscription.dispose()  # a crash: nothing completes, nothing more is stored
    with state_activated(DurableScope(stored)):
        second = Subscribed(make())
    second.push(events[done:])
    second.source.on_completed()
    assert second.completed
    assert not second.errors
    return second.outputs


def cuts(events: list[Event]) -> st.SearchStrategy[tuple[list[int], int]]:
    """Sorted checkpoint positions (at least one) and a crash position after the last."""
    positions = st.lists(st.integers(0, len(events)), min_size=1, max_size=8).map(sorted)
    return positions.flatmap(lambda at: st.tuples(st.just(at), st.integers(at[-1], len(events))))


def check_recovery(data: st.DataObject, make: Callable[[], Any], events: list[Event]) -> None:
    checkpoints, crash = data.draw(cuts(events))
    expected = uninterrupted(make, events, checkpoints[-1])
    assert restarted(make, events, checkpoints, crash) == expected


aligned_options = st.fixed_dictionaries(
    {
        "spans": st.sampled_from([(10, 10), (10, 5), (6, 2), (7, 7)]),
        "out_of_orderness": st.integers(0, 30),
        "late": st.sampled_from(["drop", "side", "update"]),
        "allowed_lateness": st.sampled_from([0, 5, 20]),
        "keyed": st.booleans(),
    }
)


def aligned_maker(options: dict[str, Any]) -> Callable[[], Any]:
    span, every = options["spans"]
    late = options["late"]

    def make() -> Any:
        return sliding(
            span,
            every,
            key=key_of if options["keyed"] else None,
            timestamp=time_of,
            out_of_orderness=options["out_of_orderness"],
            late=late,
            allowed_lateness=options["allowed_lateness"] if late == "update" else 0,
        )

    return make


@settings(max_examples=1500, deadline=None)
@given(events=events_strategy, options=aligned_options, data=st.data())
def test_tumbling_and_sliding_windows_recover_exactly(
    events: list[Event], options: dict[str, Any], data: st.DataObject
) -> None:
    check_recovery(data, aligned_maker(options), events)


session_options = st.fixed_dictionaries(
    {
        "gap": st.integers(1, 15),
        "max_duration": st.sampled_from([None, 20, 40]),
        "out_of_orderness": st.integers(0, 30),
        "late": st.sampled_from(["drop", "side", "update"]),
        "allowed_lateness": st.sampled_from([0, 5, 20]),
    }
)


@settings(max_examples=1500, deadline=None)
@given(events=events_strategy, options=session_options, data=st.data())
def test_sessions_with_merges_recover_exactly(
    events: list[Event], options: dict[str, Any], data: st.DataObject
) -> None:
    gap, longest, late = options["gap"], options["max_duration"], options["late"]

    def make() -> Any:
        return session(
            key_of,
            gap,
            max_duration=longest if longest is None or longest >= gap else gap,
            timestamp=time_of,
            out_of_orderness=options["out_of_orderness"],
            late=late,
            allowed_lateness=options["allowed_lateness"] if late == "update" else 0,
        )

    check_recovery(data, make, events)


def test_the_sliding_window_of_the_issue_is_not_emitted_again_with_half_its_items() -> None:
    # Issue 14: sliding(10, every=5) restarted after [0, 10) was written came out again
    # with only the items of [5, 10). Restored from a checkpoint taken after it was
    # emitted, the run emits the windows after it, each whole, and [0, 10) never again.
    events = [("k", t, t) for t in range(20)] + [("k", 30, 30)]
    make = aligned_maker(
        {"spans": (10, 5), "out_of_orderness": 0, "late": "drop", "allowed_lateness": 0,
         "keyed": False}
    )  # fmt: skip
    cut = 11  # t=10 closed [0, 10) (and [-5, 5))
    after = restarted(make, events, [cut], crash=15)
    windows = [w for kind, w in after if kind == "window"]
    assert [(w.start, w.end, len(w)) for w in windows] == [
        (5.0, 15.0, 10), (10.0, 20.0, 10), (15.0, 25.0, 5), (25.0, 35.0, 1), (30.0, 40.0, 1),
    ]  # fmt: skip
    assert after == uninterrupted(make, events, cut)


def test_a_session_updated_after_it_closed_is_forgotten_when_it_would_have_been() -> None:
    # A session kept for updates is forgotten allowed_lateness after the end it had when
    # it closed, even if a late item extended it since: restored, it keeps that time.
    def make() -> Any:
        return session(key_of, 5, timestamp=time_of, late="update", allowed_lateness=10)

    events: list[Event] = [("k", 0, 0), ("k", 8, 1), ("k", 2, 2), ("k", 16, 3), ("k", 3, 4)]
    # t=8 closes [0, 5); t=2 updates it to [0, 7); t=16 forgets it (closed at 5, +10), so
    # t=3 makes a window of its own instead of updating [0, 7) again.
    after = restarted(make, events, [3], crash=3)
    assert after == uninterrupted(make, events, 3)
    assert ("window", Window("k", 3, 8, (("k", 3, 4),), update=True)) in after


def test_the_watermark_is_restored_so_late_items_stay_late() -> None:
    make = aligned_maker(
        {"spans": (10, 10), "out_of_orderness": 0, "late": "side", "allowed_lateness": 0,
         "keyed": False}
    )  # fmt: skip
    events: list[Event] = [("k", 25, 0), ("k", 3, 1), ("k", 26, 2)]
    after = restarted(make, events, [1], crash=1)
    # t=3 is late after t=25 (its window [0, 10) closed), restart or not.
    assert after == [
        ("late", ("k", 3, 1)),
        ("window", Window(None, 20, 30, (events[0], events[2]))),
    ]


def test_windows_emitted_before_the_checkpoint_are_not_kept_in_it() -> None:
    scope = DurableScope()
    with state_activated(scope):
        run = Subscribed(tumbling(10, timestamp=time_of, name="per-ten"))
    run.push([("k", t, t) for t in (1, 2, 11, 12, 25)])
    stored: Stored = {}
    checkpoint(scope, stored)
    windows = {key: pickle.loads(value) for key, value in stored["per-ten"].items()}
    # [0, 10) and [10, 20) were emitted and forgotten: only [20, 30) (its header and the
    # one chunk of its items, from its first) and the progress.
    assert sorted(windows, key=str) == [2, ChunkKey(2, 0), "progress"]
    assert (windows[2].start, windows[2].end) == (20, 30)
    assert windows[ChunkKey(2, 0)] == (0, [("k", 25, 25)])
    assert windows["progress"] == (25, 25)
    run.source.on_completed()  # completion emits every window: none is left to restore
    checkpoint(scope, stored)
    assert list(stored["per-ten"]) == ["progress"]


def test_an_item_costs_a_mark_and_a_checkpoint_stores_only_the_new_items() -> None:
    scope = DurableScope()
    with state_activated(scope):
        run = Subscribed(sliding(10, 5, timestamp=time_of, name="slide"))
    run.push([("k", 1, 0)])
    table = scope.tables["slide"]
    checkpoint(scope, {})  # stores the first chunks: they end there
    window = table.get(0)
    run.push([("k", 2, 1)])
    # The live window (of windows [-5, 5) and [0, 10), orders 0 and 1) has the item; no
    # window's header changed, but each has a new chunk of its items, which a checkpoint
    # stores with the new item only.
    changes = {key: value for key, value, _ in table.take_changes()}
    assert window.items == [("k", 1, 0), ("k", 2, 1)]
    assert set(changes) == {ChunkKey(0, 1), ChunkKey(1, 1), "progress"}
    assert pickle.loads(pickle.dumps(changes[ChunkKey(0, 1)])) == (1, [("k", 2, 1)])


@pytest.mark.parametrize("make", [
    lambda: tumbling(1000, timestamp=time_of, name="long"),
    lambda: sliding(1000, 500, timestamp=time_of, name="long"),
    lambda: session(key=key_of, gap=1000, timestamp=time_of, name="long"),
])  # fmt: skip
def test_what_checkpoints_write_grows_with_the_items_not_with_the_windows(
    make: Callable[[], Any],
) -> None:
    # A long window checkpointed after every item: what the checkpoints write in all (each
    # changed value, pickled) stays within a small factor of the window's own size (a
    # window stored whole each time would write about 500 times that), and a restart
    # restores the window whole.
    scope, stored = DurableScope(), {}
    with state_activated(scope):
        run = Subscribed(make())
    written = 0
    for n in range(1000):
        run.push([("k", n, n)])
        written += checkpoint(scope, stored)
    size = len(pickle.dumps([("k", n, n) for n in range(1000)]))
    assert written < 40 * size
    with state_activated(DurableScope(stored)):
        restarted = Subscribed(make())
    restarted.source.on_completed()
    whole = Subscribed(make())
    whole.push([("k", n, n) for n in range(1000)])
    whole.source.on_completed()
    assert run.outputs + restarted.outputs == whole.outputs
    assert max(len(window.items) for _, window in whole.outputs) == 1000


class RecordingHolds:
    """Ack holds that record every call (a flow's delivery tracking implements them)."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def hold(self) -> Hold:
        self.calls.append("hold")
        return len(self.calls)

    def keep(self, item: Any) -> Any:
        self.calls.append("keep")
        return (item, len(self.calls))

    def item_of(self, entry: Any) -> Any:
        return entry[0]

    def unpack(self, entries: Any) -> tuple[tuple[Any, ...], list[Hold]]:
        return tuple(e[0] for e in entries), [e[1] for e in entries]

    def emitting(self, holds: Any) -> AbstractContextManager[None]:
        self.calls.append("emitting")
        return _nothing()

    def attached(self, holds: Any) -> AbstractContextManager[None]:
        self.calls.append("attached")
        return _nothing()

    def release(self, holds: Any) -> None:
        self.calls.append("release")

    def let_go(self, partition: object) -> None:
        self.calls.append("let_go")


@contextmanager
def _nothing() -> Iterator[None]:
    yield


@pytest.mark.parametrize("durable", [False, True])
def test_durable_windows_take_no_ack_holds(durable: bool) -> None:
    holds = RecordingHolds()
    scheduler = TestScheduler()
    operators: list[Any] = [
        tumbling(10, timestamp=time_of, name="event-time"),
        session(key_of, 5, timestamp=time_of, name="event-sessions"),
        sliding(10.0, 5.0, name="processing"),
        session(key_of, 5.0, name="processing-sessions"),
    ]
    scope = DurableScope() if durable else None
    outputs: list[Any] = []
    with holds_activated(holds), state_activated(scope) if scope else _nothing():
        source: Subject[Event] = Subject()
        for operator in operators:
            source.pipe(operator).subscribe(outputs.append, scheduler=scheduler)
    for t in range(12):
        scheduler.schedule_absolute(float(t), lambda *_, t=t: source.on_next(("k", t, t)))
    scheduler.schedule_absolute(30.0, lambda *_: source.on_completed())
    scheduler.start()
    assert outputs  # windows were emitted either way
    if durable:
        assert holds.calls == []
    else:
        assert {"hold", "keep", "emitting"} <= set(holds.calls)


def test_two_window_stages_with_one_name_are_refused_with_the_scope_error() -> None:
    scope = DurableScope()
    errors: list[Exception] = []
    with state_activated(scope):
        reactivex.never().pipe(tumbling(10, timestamp=time_of)).subscribe(on_error=errors.append)
        reactivex.never().pipe(sliding(10.0, 5.0, name="tumbling")).subscribe(
            on_error=errors.append
        )
    assert [str(e) for e in errors] == [
        "two stateful operators keep state under the name 'tumbling'"
    ]


def test_outside_a_checkpointed_flow_no_table_is_asked_for() -> None:
    class Refusing(DurableScope):
        @property
        def durable(self) -> bool:
            return False

        def table(self, name: str, owner: object) -> StateTable[Any, Any]:
            raise AssertionError("an in-memory scope's table was asked for")

    with state_activated(Refusing()):
        windows: list[Window] = []
        reactivex.of(("k", 1, 0)).pipe(tumbling(10, timestamp=time_of)).subscribe(windows.append)
    assert len(windows) == 1


def test_progress_made_by_idleness_and_late_items_is_stored() -> None:
    scope = DurableScope()
    clock = TestScheduler()
    with state_activated(scope):
        operator = tumbling(
            10, timestamp=time_of, out_of_orderness=10, idle_timeout=5.0, late="side"
        )
        emitted, _ = run_on(
            clock,
            operator,
            [(0.0, ("k", 3, 0)), (0.0, ("k", 15, 1)), (16.0, ("k", 18, 2))],
            end=None,
        )
    stored: Stored = {}
    clock.advance_to(0.5)
    checkpoint(scope, stored)
    assert pickle.loads(stored["tumbling"]["progress"]) == (15, 5)
    # Quiet since 0: event time passes with the clock (15 - 10 + quiet) and closes both
    # windows, the last at 15.
    clock.advance_to(15.5)
    checkpoint(scope, stored)
    assert [w.items for _, w in emitted] == [(("k", 3, 0),), (("k", 15, 1),)]
    assert pickle.loads(stored["tumbling"]["progress"]) == (15, 20.0)
    # t=18 is late for [10, 20), and the largest timestamp seen: stored too.
    clock.advance_to(16.0)
    checkpoint(scope, stored)
    assert pickle.loads(stored["tumbling"]["progress"]) == (18, 20.0)


def test_idle_time_counts_from_the_restart() -> None:
    stored: Stored = {}
    scope = DurableScope()

    def make() -> Any:
        return tumbling(10, timestamp=time_of, idle_timeout=5.0)

    first_clock = TestScheduler()
    with state_activated(scope):
        first = make()
        windows: list[Window] = []
        source: Subject[Event] = Subject()
        source.pipe(first).subscribe(windows.append, scheduler=first_clock)
    source.on_next(("k", 3, 0))
    checkpoint(scope, stored)
    # Restarted on a new clock with no more items: the restored window closes once the
    # source has been quiet for idle_timeout after the restart.
    clock = TestScheduler()
    restored: list[Window] = []
    with state_activated(DurableScope(stored)):
        reactivex.never().pipe(make()).subscribe(restored.append, scheduler=clock)
    clock.advance_to(4.0)
    assert restored == []
    clock.advance_to(12.0)
    assert restored == [Window(None, 0, 10, (("k", 3, 0),))]


# -- processing time ------------------------------------------------------------------------


def run_on(
    clock: TestScheduler, operator: Any, timeline: list[tuple[float, Any]], end: float | None
) -> tuple[list[tuple[float, Window]], Any]:
    """Subscribe ``operator`` at the clock's now; push each (time, item); complete at
    ``end`` (None: never). Returns the (time, window) list it fills and the subscription."""
    source: Subject[Any] = Subject()
    emitted: list[tuple[float, Window]] = []
    subscription = source.pipe(operator).subscribe(
        lambda window: emitted.append((clock.clock, window)), scheduler=clock
    )
    for at, item in timeline:
        clock.schedule_absolute(at, lambda *_, item=item: source.on_next(item))
    if end is not None:
        clock.schedule_absolute(end, lambda *_: source.on_completed())
    return emitted, subscription


def items_of(emitted: list[tuple[float, Window]]) -> list[Any]:
    return [item for _, window in emitted for item in window.items]


def sliding_count(t: float, checkpoint_at: float) -> int:
    """In how many windows of ``sliding(10, 5)`` (opening at 0, 5, 10... on each run's
    clock) the restarted flow emits an item that arrived at ``t``: if it came after the
    checkpoint, its windows in the restarted run; else those that closed before the
    checkpoint, and the first window of the restarted run if one of its windows was still
    open at the checkpoint."""
    starts = range(0, 300, 5)
    if t > checkpoint_at:
        return sum(1 for s in starts if s <= t - checkpoint_at < s + 10)
    windows = [s for s in starts if s <= t < s + 10]
    closed = sum(1 for s in windows if s + 10 < checkpoint_at)
    return closed + any(s + 10 > checkpoint_at for s in windows)


@settings(max_examples=300, deadline=None)
@given(
    # Not at multiples of 5 s, where a window opens or closes: at such an instant whether
    # an item or the window's timer goes first is the scheduler's order.
    times=st.lists(st.integers(0, 99).filter(lambda t: t % 5), max_size=30).map(sorted),
    kind=st.sampled_from(["tumbling", "full", "sliding", "sessions"]),
    data=st.data(),
)
def test_processing_time_windows_lose_nothing_and_emit_nothing_twice(
    times: list[int], kind: str, data: st.DataObject
) -> None:
    # Items at whole seconds, the checkpoint and the crash between them (at .5).
    timeline = [(float(t), (("ab"[n % 2]), n)) for n, t in enumerate(times)]
    checkpoint_at = data.draw(st.integers(0, 100)) + 0.5
    crash_at = data.draw(st.integers(int(checkpoint_at), 100)) + 0.5

    def make() -> Any:
        if kind == "tumbling":
            return tumbling(10.0, key=lambda item: item[0])
        if kind == "full":
            return tumbling(10.0, max_count=3)
        if kind == "sliding":
            return sliding(10.0, 5.0)
        return session(lambda item: item[0], 7.0, max_duration=20.0)

    stored: Stored = {}
    scope = DurableScope()
    clock = TestScheduler()
    with state_activated(scope):
        before, first = run_on(clock, make(), timeline, end=None)
    clock.advance_to(checkpoint_at)
    emitted_by_checkpoint = len(before)
    checkpoint(scope, stored)
    clock.advance_to(crash_at)
    first.dispose()
    # The restart: a new clock (processing time does not carry over), and the items after
    # the checkpoint delivered again.
    again = [(at - checkpoint_at, item) for at, item in timeline if at > checkpoint_at]
    restart_clock = TestScheduler()
    with state_activated(DurableScope(stored)):
        after, _ = run_on(restart_clock, make(), again, end=200.0)
    restart_clock.start()
    emitted = before[:emitted_by_checkpoint] + after
    everything = [item for _, item in timeline]
    if kind == "sliding":
        counts = {item: items_of(emitted).count(item) for item in everything}
        assert counts == {item: sliding_count(at, checkpoint_at) for at, item in timeline}
        assert all(counts.values())  # none is lost
    else:  # every item in exactly one window
        assert sorted(items_of(emitted)) == sorted(everything)


def test_processing_time_tumbling_puts_restored_items_into_the_first_window() -> None:
    stored: Stored = {}
    scope = DurableScope()
    clock = TestScheduler()
    with state_activated(scope):
        before, first = run_on(clock, tumbling(10.0), [(1.0, "a"), (12.0, "b"), (13.0, "c")], None)
    clock.advance_to(14.0)
    checkpoint(scope, stored)
    first.dispose()
    restart = TestScheduler()
    with state_activated(DurableScope(stored)):
        after, _ = run_on(restart, tumbling(10.0), [(2.0, "d"), (11.0, "e")], end=15.0)
    restart.start()
    assert [w.items for _, w in before] == [("a",)]
    assert [(at, w.items) for at, w in after] == [(10.0, ("b", "c", "d")), (15.0, ("e",))]


def test_processing_time_sliding_keeps_exactly_the_items_of_open_windows() -> None:
    scope = DurableScope()
    clock = TestScheduler()
    with state_activated(scope):
        before, _ = run_on(clock, sliding(10.0, 5.0), [(1.0, "a"), (6.0, "b"), (11.0, "c")], None)
    clock.advance_to(11.5)
    # Windows open at subscription and every 5 s after: [0, 10) was emitted with a and b;
    # open are [5, 15) (b, c) and [10, 20) (c), so a is no longer kept.
    assert [w.items for _, w in before] == [("a", "b")]
    assert OpenItems.restored(scope.tables["sliding"]) == ["b", "c"]


def test_processing_time_sessions_continue_with_the_keys_next_items() -> None:
    stored: Stored = {}
    scope = DurableScope()
    clock = TestScheduler()

    def make() -> Any:
        return session(lambda item: item[0], 5.0)

    with state_activated(scope):
        _, first = run_on(clock, make(), [(1.0, ("a", 1)), (2.0, ("b", 2)), (3.0, ("a", 3))], None)
    clock.advance_to(4.0)
    checkpoint(scope, stored)
    first.dispose()
    restart = TestScheduler()
    with state_activated(DurableScope(stored)):
        after, _ = run_on(restart, make(), [(2.0, ("a", 4))], end=None)
    restart.start()
    # a's restored session takes a's next item (2 s after the restart); b's, with none,
    # closes gap seconds after the restart.
    assert [(at, w.key, w.items) for at, w in after] == [
        (5.0, "b", (("b", 2),)),
        (7.0, "a", (("a", 1), ("a", 3), ("a", 4))),
    ]


# -- in a pipe, on both backends ------------------------------------------------------------


async def timed(events: list[tuple[float, Any]], reached: anyio.Event) -> AsyncIterator[Any]:
    """Each value at its (virtual) time from the first pull; then ``reached`` (the last
    was pushed: the pump pulls after a push is done), and nothing more, as a source whose
    process was killed."""
    start = anyio.current_time()
    for at, value in events:
        await anyio.sleep(max(0.0, start + at - anyio.current_time()))
        yield value
    reached.set()
    await anyio.sleep_forever()


@pytest.mark.anyio
@pytest.mark.parametrize("cut", [3, 6, 9])
async def test_a_pipe_restarted_from_a_checkpoint_emits_what_an_uninterrupted_one_does(
    cut: int,
) -> None:
    events: list[Event] = [("k", t, t) for t in (1, 4, 8, 9, 12, 15, 21, 7, 26, 33, 40)]

    def make() -> Any:
        return sliding(10, 5, timestamp=time_of, out_of_orderness=3, late="side")

    stored: Stored = {}
    scope = DurableScope()
    reached = anyio.Event()
    with state_activated(scope):
        source = timed([(0.0, event) for event in events[:cut]], reached)
        async with open_pipe(source, make()) as pipe, anyio.create_task_group() as tasks:
            tasks.start_soon(drain, pipe)
            await reached.wait()
            checkpoint(scope, stored)  # between two pushes, as a flow's barrier is
            tasks.cancel_scope.cancel()
    restarted = make()
    late: list[Event] = []
    restarted.late_items.subscribe(late.append)
    with state_activated(DurableScope(stored)):
        async with open_pipe(events[cut:], restarted) as pipe:
            windows = [("window", window) async for window in pipe]
    expected = uninterrupted(make, events, cut)
    assert windows == [output for output in expected if output[0] == "window"]
    assert late == [item for kind, item in expected if kind == "late"]


async def drain(pipe: Any) -> None:
    async for _ in pipe:
        pass


@pytest.mark.anyio
async def test_two_window_stages_with_one_name_fail_a_checkpointed_pipe() -> None:
    with state_activated(DurableScope()), pytest.raises(ValueError, match="'tumbling'"):
        async with open_pipe(
            [("k", 1, 1)], tumbling(10, timestamp=time_of), tumbling(20, timestamp=time_of)
        ) as pipe:
            await drain(pipe)


@pytest.mark.trio
async def test_a_processing_time_pipe_restarted_puts_open_items_into_its_first_window(
    autojump_clock: trio.testing.MockClock,
) -> None:
    stored: Stored = {}
    scope = DurableScope()
    reached = anyio.Event()
    first: list[Window] = []

    async def collect(pipe: Any) -> None:
        async for window in pipe:
            first.append(window)

    with state_activated(scope):
        source = timed([(0.5, "a"), (1.5, "b")], reached)
        async with open_pipe(source, tumbling(1.0)) as pipe, anyio.create_task_group() as tasks:
            tasks.start_soon(collect, pipe)
            await reached.wait()
            await anyio.sleep(0.2)  # [0, 1) closed at 1.0; b's window is open
            checkpoint(scope, stored)
            tasks.cancel_scope.cancel()
    assert [w.items for w in first] == [("a",)]
    started = anyio.current_time()
    with state_activated(DurableScope(stored)):
        async with open_pipe(timed([(0.5, "c")], anyio.Event()), tumbling(1.0)) as pipe:
            window = await pipe.receive()
    # The restarted pipe's first window, [start, start + 1), has b (restored) and c.
    assert window.items == ("b", "c")
    assert window.duration == 1.0
    assert anyio.current_time() - started == pytest.approx(1.0)
