"""A checkpointed Flow: state restored across runs, acknowledgements after the checkpoint
that covers them, and messages a stored checkpoint covers recognised when they come again."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import attrs
import pytest
import reactivex
from reactivex import Observable, abc

from rxflow import Flow
from rxflow._state import current_state
from rxflow.connectors import Message, Settlement
from rxflow.errors import StateNameError
from rxflow.state import MemoryStore

pytestmark = pytest.mark.anyio


class Logged(Settlement):
    """Acks land in a log, each with how many checkpoints the store had stored by then."""

    def __init__(self, log: list[tuple[Any, int]], store: MemoryStore, identity: int) -> None:
        super().__init__(identity)
        self.log, self.store = log, store
        self.fail = False

    async def _ack(self) -> None:
        if self.fail:
            raise ConnectionError("the broker went away before the ack")
        self.log.append((self.identity, self.store.commits))


def messages(
    log: list[tuple[Any, int]], store: MemoryStore, values: list[str], first: int = 0
) -> list[Message[str]]:
    return [
        Message(value, settlement=Logged(log, store, first + n)) for n, value in enumerate(values)
    ]


def counting(name: str = "count") -> Callable[[Observable[Any]], Observable[tuple[str, int]]]:
    """A keyed count kept in the flow's state: each message's value is its key."""

    def operator(source: Observable[Any]) -> Observable[tuple[str, int]]:
        def subscribe(
            observer: abc.ObserverBase[tuple[str, int]], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            table = current_state().table(name, owner=operator)

            def on_next(message: Message[str]) -> None:
                count = table.get(message.value, 0) + 1
                table.put(message.value, count)
                observer.on_next((message.value, count))

            return source.subscribe(
                on_next, observer.on_error, observer.on_completed, scheduler=scheduler
            )

        return reactivex.create(subscribe)

    return operator


async def run(store: MemoryStore, items: list[Message[str]], name: str = "counts") -> list[Any]:
    written: list[Any] = []
    await Flow(name).source(items).pipe(counting()).sink(written.append).checkpoint(store).run()
    return written


async def test_state_goes_on_from_the_last_run() -> None:
    store, log = MemoryStore(), []
    first = await run(store, messages(log, store, ["a", "b", "a"]))
    second = await run(store, messages(log, store, ["a", "c"], first=3))
    assert first == [("a", 1), ("b", 1), ("a", 2)]
    assert second == [("a", 3), ("c", 1)]


async def test_another_flow_name_has_state_of_its_own() -> None:
    store, log = MemoryStore(), []
    await run(store, messages(log, store, ["a"]))
    assert await run(store, messages(log, store, ["a"], first=1), name="other") == [("a", 1)]


async def test_messages_are_acknowledged_after_the_checkpoint_that_covers_them() -> None:
    store, log = MemoryStore(), []
    await run(store, messages(log, store, ["a", "b", "a"]))
    assert sorted(identity for identity, _ in log) == [0, 1, 2]
    assert all(commits >= 1 for _, commits in log)  # never before a stored checkpoint


async def test_a_covered_message_that_comes_again_is_acknowledged_not_counted_again() -> None:
    # The checkpoint was stored, but the acks never reached the broker (it went away): the
    # broker delivers the same messages again; the stored counts hold them already.
    store, log = MemoryStore(), []
    lost = messages(log, store, ["a", "b"])
    for message in lost:
        assert isinstance(message.settlement, Logged)
        message.settlement.fail = True
    assert await run(store, lost) == [("a", 1), ("b", 1)]
    again = messages(log, store, ["a", "b", "a"])  # identities 0, 1 again, then 2
    assert await run(store, again) == [("a", 2)]
    assert sorted(identity for identity, _ in log) == [0, 1, 2]


async def test_a_graceful_stop_stores_a_last_checkpoint() -> None:
    store, log = MemoryStore(), []
    sent = anyio.Event()

    async def endless() -> Any:
        for message in messages(log, store, ["a", "b"]):
            yield message
        sent.set()
        await anyio.sleep_forever()

    written: list[Any] = []
    flow = Flow("stopped").source(endless()).pipe(counting()).sink(written.append)
    async with anyio.create_task_group() as tg:
        handle = flow.checkpoint(store, every=3600).start(tg)
        await sent.wait()
        await anyio.wait_all_tasks_blocked()
        handle.stop()
    assert written == [("a", 1), ("b", 1)]
    assert sorted(identity for identity, _ in log) == [0, 1]  # by the stop's checkpoint
    assert await run(store, messages(log, store, ["a"], first=2), name="stopped") == [("a", 2)]


async def test_two_stateful_operators_may_not_share_a_name() -> None:
    store, log = MemoryStore(), []
    flow = (
        Flow("twice")
        .source(messages(log, store, ["a"]))
        .pipe(counting(), reactivex.operators.map(lambda pair: Message(pair[0])), counting())
        .sink(lambda item: None)
        .checkpoint(store)
    )
    with pytest.raises(StateNameError, match="name 'count'"):
        await flow.run()
    assert log == []  # nothing acknowledged


async def test_an_aborted_flow_acknowledges_nothing_after_its_last_checkpoint() -> None:
    store, log = MemoryStore(), []
    sent = anyio.Event()

    async def endless() -> Any:
        for message in messages(log, store, ["a", "b"]):
            yield message
        sent.set()
        await anyio.sleep_forever()

    flow = Flow("aborted").source(endless()).pipe(counting()).sink(lambda item: None)
    async with anyio.create_task_group() as tg:
        handle = flow.checkpoint(store, every=3600).start(tg)
        await sent.wait()
        await anyio.wait_all_tasks_blocked()
        handle.abort()
    assert log == []
    assert store.commits == 0
    # Delivered again after the abort: counted once, as if the first run never happened.
    assert await run(store, messages(log, store, ["a", "b"]), name="aborted") == [
        ("a", 1),
        ("b", 1),
    ]


def test_checkpoint_refuses_what_is_not_a_store() -> None:
    with pytest.raises(TypeError, match=r"expected a store from rxflow\.state"):
        Flow("f").checkpoint("state.db")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="every"):
        Flow("f").checkpoint(MemoryStore(), every=0)


def test_a_message_pickles_as_a_record_without_its_connection() -> None:
    import pickle

    from rxflow.partitions import Partition

    message = Message(
        {"n": 1},
        key="k",
        headers={"h": "v"},
        timestamp=1.5,
        source="redis:x",
        settlement=Logged([], MemoryStore(), 7),
        partition=Partition("orders", 3),
        offset=5,
    )
    loaded = pickle.loads(pickle.dumps(message))
    # value, key, headers, timestamp, source and offset; not the assignment
    assert loaded == attrs.evolve(message, partition=None)
    assert loaded.identity == 7
    assert type(loaded.settlement) is Settlement


async def test_a_lineage_sink_gets_the_positions_of_each_output() -> None:
    from rxflow import SourcePosition, Traced

    store, log = MemoryStore(), []
    written: list[Traced[Any]] = []
    await (
        Flow("traced")
        .source(messages(log, store, ["a", "b"]), name="letters")
        .pipe(counting())
        .sink(written.append, lineage=True)
        .run()
    )
    assert [(traced.value, traced.sources) for traced in written] == [
        (("a", 1), (SourcePosition("source 'letters'", "", 0),)),
        (("b", 1), (SourcePosition("source 'letters'", "", 1),)),
    ]


async def test_an_exactly_once_sink_needs_a_checkpoint() -> None:
    from rxflow.errors import FlowStateError

    class Staging:
        transactional = True

        def __call__(self, item: object) -> None:
            raise AssertionError("an exactly-once sink is never called directly")

    flow = Flow("eo").source([1]).sink(Staging())
    with pytest.raises(FlowStateError, match="checkpoint"):
        await flow.run()
    flow = Flow("eo2").source([1]).sink(Staging()).checkpoint(MemoryStore())
    with pytest.raises(FlowStateError, match="PostgresStore on the sink's database, not memory"):
        await flow.run()


class Redelivering:
    """A source that, like every broker connector, delivers unacknowledged messages again
    (it says so by linking outputs: ``link_many``)."""

    name = "broker:clicks"

    def __init__(self, items: list[Message[Any]]) -> None:
        self.items = items

    def link_many(self, messages: object) -> None:
        return None

    async def __aiter__(self) -> Any:
        for item in self.items:
            yield item


async def test_sliding_event_time_windows_over_redelivery_need_checkpoints() -> None:
    from rxflow import sliding
    from rxflow.errors import FlowStateError

    store, log = MemoryStore(), []
    windows = sliding(10.0, 5.0, timestamp=lambda message: float(message.identity or 0))
    flow = Flow("slides").source(Redelivering(messages(log, store, ["a"]))).pipe(windows)
    with pytest.raises(FlowStateError, match=r"sliding.*\.checkpoint\(store\)"):
        await flow.sink(lambda window: None).run()
    windows = sliding(10.0, 5.0, timestamp=lambda message: float(message.identity or 0))
    flow = Flow("slides").source(Redelivering(messages(log, store, ["a"]))).pipe(windows)
    await flow.sink(lambda window: None).checkpoint(store).run()  # with checkpoints: runs


async def test_sliding_windows_inside_group_by_are_refused_where_they_cannot_recover() -> None:
    # Windows nested in a flat_map are not among the flow's operators: they are checked when
    # they are subscribed (the first group), and the flow fails before it acknowledges
    # anything. Over a redelivering source without checkpoints, overlapping windows cannot
    # be rebuilt; with checkpoints, the groups' subscriptions would share one stored state.
    # Over a source that does not deliver again, they run.
    import reactivex
    from reactivex import operators as ops

    from rxflow import sliding
    from rxflow.errors import FlowStateError, StateNameError

    def per_value() -> Callable[[Observable[Any]], Observable[Any]]:
        windows = sliding(10.0, 5.0, timestamp=lambda message: 1.0, name="inner")
        return reactivex.compose(
            ops.group_by(lambda message: message.value),
            ops.flat_map(lambda group: group.pipe(windows)),
        )

    store, log = MemoryStore(), []
    source = Redelivering(messages(log, store, ["a", "b"]))
    flow = Flow("nested").source(source).pipe(per_value()).sink(lambda window: None)
    with pytest.raises(FlowStateError, match=r"sliding windows 'inner' overlap.*broker:clicks"):
        await flow.run()
    source = Redelivering(messages(log, store, ["a", "b"]))
    flow = Flow("nested").source(source).pipe(per_value()).sink(lambda window: None)
    with pytest.raises(StateNameError, match=r"'inner' is subscribed again.*key="):
        await flow.checkpoint(store).run()
    assert log == []  # nothing was acknowledged
    written: list[Any] = []
    plain = Flow("plain").source(messages(log, store, ["a", "b"])).pipe(per_value())
    await plain.sink(written.append).run()
    assert sorted((window.key, len(window)) for window in written) == [(None, 1)] * 4


async def test_a_checkpoint_waits_for_map_async_before_its_barrier() -> None:
    # A message inside map_async when a checkpoint starts reaches the counter after it: the
    # checkpoint admits nothing and waits for the call, so the message it covers (and acks)
    # is counted in the state it stores. An abort right after must not lose the count.
    from rxflow import map_async

    store, log = MemoryStore(), []
    release = anyio.Event()

    async def slow(message: Message[str]) -> Message[str]:
        await release.wait()
        return message

    async def first() -> AsyncIterator[Message[str]]:
        yield messages(log, store, ["a"])[0]
        await anyio.sleep_forever()

    flow = Flow("slow").source(first()).pipe(map_async(slow), counting()).sink(lambda _: None)
    async with anyio.create_task_group() as tg:
        handle = flow.checkpoint(store, every=3600).start(tg)
        await anyio.wait_all_tasks_blocked()
        checkpointer = handle._checkpointer
        assert checkpointer is not None
        tg.start_soon(checkpointer.checkpoint)
        await anyio.wait_all_tasks_blocked()
        assert checkpointer._aligning  # waiting for map_async
        release.set()
        await anyio.wait_all_tasks_blocked()  # the checkpoint stored, the message acked
        assert [identity for identity, _ in log] == [0]
        handle.abort()
    again = messages(log, store, ["a"], first=1)
    written: list[Any] = []
    await Flow("slow").source(again).pipe(counting()).sink(written.append).checkpoint(store).run()
    assert written == [("a", 2)]
