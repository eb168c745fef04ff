"""At-least-once inside a Flow: a source message is acknowledged only once everything
derived from it was confirmed by every sink (windows and map_async included)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
import reactivex
import trio
import trio.testing
from reactivex import operators as ops

from rxflow import Flow, map_async, session, sliding, tumbling
from rxflow.connectors import Message, Settlement
from rxflow.windows import Window


class Recorded(Settlement):
    """Acknowledgements land in a shared log, so a test sees their order against writes."""

    def __init__(self, log: list[tuple[str, Any]], name: Any) -> None:
        super().__init__()
        self.log, self.name = log, name

    async def _ack(self) -> None:
        self.log.append(("ack", self.name))


def messages(log: list[tuple[str, Any]], values: list[Any]) -> list[Message[Any]]:
    return [Message(value, settlement=Recorded(log, value)) for value in values]


def acked(log: list[tuple[str, Any]]) -> list[Any]:
    return [name for what, name in log if what == "ack"]


def writer(log: list[tuple[str, Any]]) -> Any:
    async def write(item: Any) -> None:
        await anyio.lowlevel.checkpoint()  # a write that takes a turn, as a real one does
        log.append(("write", item))

    return write


@pytest.mark.anyio
async def test_a_message_is_acknowledged_after_its_output_is_written() -> None:
    log: list[tuple[str, Any]] = []
    handle = (
        Flow()
        .source(messages(log, [1, 2, 3]))
        .pipe(ops.map(lambda message: message.value * 10))
        .sink(writer(log))
        .prepare()
    )
    await handle.run()
    for n in (1, 2, 3):
        assert log.index(("write", n * 10)) < log.index(("ack", n))
    assert handle.acknowledged == 3
    assert handle.unacknowledged == 0


@pytest.mark.anyio
async def test_a_filtered_out_message_is_acknowledged_without_output() -> None:
    log: list[tuple[str, Any]] = []
    await (
        Flow()
        .source(messages(log, list(range(6))))
        .pipe(ops.filter(lambda message: message.value % 2 == 0))
        .sink(writer(log))
        .run()
    )
    assert sorted(acked(log)) == list(range(6))


@pytest.mark.anyio
async def test_every_sink_confirms_before_the_acknowledgement() -> None:
    log: list[tuple[str, Any]] = []

    async def slow_write(item: Any) -> None:
        for _ in range(5):
            await anyio.lowlevel.checkpoint()
        log.append(("slow", item))

    await (
        Flow()
        .source(messages(log, [1, 2]))
        .pipe(ops.map(lambda message: message.value))
        .sink(writer(log), name="fast", max_buffer_size=4)
        .sink(slow_write, name="slow", max_buffer_size=4)
        .run()
    )
    for n in (1, 2):
        assert log.index(("slow", n)) < log.index(("ack", n))
        assert log.index(("write", n)) < log.index(("ack", n))


@pytest.mark.anyio
async def test_messages_in_an_event_time_window_wait_for_the_window() -> None:
    log: list[tuple[str, Any]] = []
    windows: list[Window] = []

    async def write(window: Window) -> None:
        # Nothing of this window is acknowledged before it is written...
        assert not set(acked(log)) & {m.value for m in window.items}
        windows.append(window)
        log.append(("write", window.start))

    await (
        Flow()
        .source(messages(log, [0.5, 1.5, 2.5, 3.5, 10.5]))
        .pipe(tumbling(2.0, timestamp=lambda message: message.value))
        .sink(write)
        .run()
    )
    assert [w.start for w in windows] == [0.0, 2.0, 10.0]
    # ... and each is acknowledged after it (0.5 and 1.5 after the first window, ...).
    assert log.index(("write", 0.0)) < log.index(("ack", 0.5))
    assert log.index(("write", 2.0)) < log.index(("ack", 3.5))
    assert log.index(("write", 10.0)) < log.index(("ack", 10.5))
    assert sorted(acked(log)) == [0.5, 1.5, 2.5, 3.5, 10.5]


@pytest.mark.anyio
async def test_a_failed_write_leaves_its_messages_unacknowledged() -> None:
    log: list[tuple[str, Any]] = []

    async def write(window: Window) -> None:
        if window.start == 2.0:
            raise OSError("disk full")
        log.append(("write", window.start))

    with pytest.raises(OSError, match="disk full"):
        await (
            Flow()
            .source(messages(log, [0.5, 1.5, 2.5, 3.5, 4.5]))
            .pipe(tumbling(2.0, timestamp=lambda message: message.value))
            .sink(write)
            .run()
        )
    # The failed window's messages, and the one in the window still open, come back.
    assert sorted(acked(log)) == [0.5, 1.5]


@pytest.mark.anyio
async def test_map_async_results_carry_their_messages() -> None:
    log: list[tuple[str, Any]] = []

    async def enrich(message: Message[int]) -> int:
        for _ in range(3 - message.value % 3):  # finish out of order
            await anyio.lowlevel.checkpoint()
        return message.value

    await (
        Flow()
        .source(messages(log, list(range(9))))
        .pipe(map_async(enrich, concurrency=3, ordered=False))
        .sink(writer(log))
        .run()
    )
    for n in range(9):
        assert log.index(("write", n)) < log.index(("ack", n))


@pytest.mark.trio
async def test_processing_time_sessions_hold_their_messages(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log: list[tuple[str, Any]] = []

    async def clicks() -> AsyncIterator[Message[str]]:
        for message in messages(log, ["a1", "b1", "a2"]):
            yield message
            await trio.sleep(1.0)
        await trio.sleep(30.0)  # every session closes while the source is still open

    async def write(window: Window) -> None:
        assert not set(acked(log)) & {m.value for m in window.items}
        log.append(("write", tuple(m.value for m in window.items)))

    await (
        Flow()
        .source(clicks())
        .pipe(session(lambda message: message.value[0], gap=5.0))
        .sink(write)
        .run()
    )
    assert log.index(("write", ("a1", "a2"))) < log.index(("ack", "a1"))
    assert log.index(("write", ("b1",))) < log.index(("ack", "b1"))
    assert sorted(acked(log)) == ["a1", "a2", "b1"]


@pytest.mark.trio
async def test_processing_time_tumbling_windows_hold_their_messages(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log: list[tuple[str, Any]] = []

    async def ticks() -> AsyncIterator[Message[int]]:
        for message in messages(log, list(range(6))):
            yield message
            await trio.sleep(1.0)

    async def write(window: Window) -> None:
        assert not set(acked(log)) & {m.value for m in window.items}
        log.append(("write", tuple(m.value for m in window.items)))

    await Flow().source(ticks()).pipe(tumbling(2.5)).sink(write).run()
    assert sorted(acked(log)) == list(range(6))


@pytest.mark.trio
async def test_processing_time_sliding_windows_ack_an_item_after_its_last_window(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # An item is in two windows (span 1, every 0.5): its message is acknowledged once,
    # after the last of them was written (this used to fail with a KeyError).
    log: list[tuple[str, Any]] = []

    async def ticks() -> AsyncIterator[Message[int]]:
        for message in messages(log, list(range(10))):
            await trio.sleep(0.3)
            yield message

    async def write(window: Window) -> None:
        log.append(("write", tuple(m.value for m in window.items)))

    await Flow().source(ticks()).pipe(sliding(1.0, 0.5)).sink(write).run()
    assert sorted(acked(log)) == list(range(10))  # each once
    for n in range(10):
        last_write = max(i for i, (what, items) in enumerate(log) if what == "write" and n in items)
        assert log.index(("ack", n)) > last_write
    assert sum(1 for what, items in log if what == "write" and 4 in items) == 2


@pytest.mark.trio
async def test_an_aborted_flow_leaves_open_windows_unacknowledged(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log: list[tuple[str, Any]] = []

    async def endless() -> AsyncIterator[Message[float]]:
        for message in messages(log, [0.5, 1.5, 2.5, 3.5]):
            yield message
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        flow = Flow().source(endless()).pipe(tumbling(2.0, timestamp=lambda m: m.value))
        handle = flow.sink(writer(log)).start(nursery)
        await trio.sleep(1.0)
        handle.abort()
    assert sorted(acked(log)) == [0.5, 1.5]  # the closed window; [2, 4) is delivered again
    assert handle.unacknowledged == 2


@pytest.mark.anyio
async def test_a_graceful_stop_flushes_windows_and_acknowledges_them() -> None:
    log: list[tuple[str, Any]] = []
    admitted = anyio.Event()

    async def endless() -> AsyncIterator[Message[float]]:
        for message in messages(log, [0.5, 1.5, 2.5]):
            yield message
        admitted.set()
        await anyio.sleep_forever()

    async with anyio.create_task_group() as tg:
        flow = Flow().source(endless()).pipe(tumbling(2.0, timestamp=lambda m: m.value))
        handle = flow.sink(writer(log)).start(tg)
        await admitted.wait()
        handle.stop()
    assert sorted(acked(log)) == [0.5, 1.5, 2.5]


@pytest.mark.anyio
async def test_a_context_manager_source_stays_open_until_the_last_acknowledgement() -> None:
    log: list[tuple[str, Any]] = []

    @asynccontextmanager
    async def connector() -> AsyncIterator[list[Message[int]]]:
        log.append(("open", None))
        yield messages(log, [1, 2])
        log.append(("close", None))

    await Flow().source(connector()).sink(writer(log)).run()
    assert log[0] == ("open", None)
    assert log[-1] == ("close", None)
    # 1 and 2 are acknowledged if their writes were confirmed before the flow ended.
    assert set(acked(log)) <= {1, 2}
    assert 3 not in acked(log)


class BatchWriter:
    """A connector-style sink: send_batch returns once the batch is confirmed."""

    batch_size = 3

    def __init__(self, log: list[tuple[str, Any]]) -> None:
        self.log = log

    async def send(self, item: Any) -> None:
        await self.send_batch([item])

    async def send_batch(self, items: Any) -> None:
        await anyio.lowlevel.checkpoint()
        self.log.append(("batch", tuple(items)))


@pytest.mark.anyio
async def test_a_batch_sink_gets_its_batch_size_and_confirms_whole_batches() -> None:
    log: list[tuple[str, Any]] = []
    await (
        Flow(max_buffer_size=8)
        .source(messages(log, list(range(7))))
        .pipe(ops.map(lambda message: message.value))
        .sink(BatchWriter(log), name="batches", max_buffer_size=8)
        .run()
    )
    batches = [items for what, items in log if what == "batch"]
    assert [n for batch in batches for n in batch] == list(range(7))
    assert max(len(batch) for batch in batches) <= 3
    for batch in batches:
        for n in batch:
            assert log.index(("batch", batch)) < log.index(("ack", n))


@pytest.mark.anyio
@pytest.mark.parametrize("fails_at", ["ops.map", "an inner group"])
async def test_the_message_the_operators_fail_on_is_not_acknowledged(fails_at: str) -> None:
    # The flow fails with the operators' error: the message it failed on made nothing, and
    # comes again from its system; the ones before it were written and are acknowledged.
    log: list[tuple[str, Any]] = []

    def check(message: Message[int]) -> int:
        if message.value == 3:
            raise ValueError("bad value 3")
        return message.value

    failing = (
        ops.map(check)
        if fails_at == "ops.map"
        else reactivex.compose(
            ops.group_by(lambda message: message.value % 2),
            ops.flat_map(lambda group: group.pipe(ops.map(check))),
        )
    )
    with pytest.raises(ValueError, match="bad value 3"):
        await Flow().source(messages(log, [1, 2, 3, 4])).pipe(failing).sink(writer(log)).run()
    # 1 and 2 are acknowledged if their writes were confirmed before the flow ended.
    assert set(acked(log)) <= {1, 2}
    assert 3 not in acked(log)


@pytest.mark.anyio
async def test_the_message_that_ends_the_pipe_is_acknowledged_too() -> None:
    log: list[tuple[str, Any]] = []
    await Flow().source(messages(log, [1, 2, 3, 4, 5])).pipe(ops.take(3)).sink(writer(log)).run()
    assert sorted(acked(log)) == [1, 2, 3]  # 4 and 5 were never taken from the source


class Batched(Settlement):
    """A settlement whose source acknowledges many messages in one call."""

    def __init__(self, acker: BatchLog) -> None:
        super().__init__()
        self.acker = acker

    @property
    def batch_acker(self) -> BatchLog:
        return self.acker


class BatchLog:
    def __init__(self) -> None:
        self.calls: list[list[Any]] = []

    async def ack_many(self, batch: Any) -> None:
        for _ in range(5):  # a round trip, during which more messages settle
            await anyio.lowlevel.checkpoint()
        self.calls.append([message.value for message in batch])


@pytest.mark.anyio
async def test_settled_messages_are_acknowledged_in_batches_when_the_source_can() -> None:
    acker = BatchLog()
    source = [Message(n, settlement=Batched(acker)) for n in range(50)]
    handle = Flow().source(source).sink(writer([]), max_buffer_size=50).prepare()
    await handle.run()
    assert sorted(n for call in acker.calls for n in call) == list(range(50))
    assert len(acker.calls) < 50  # several messages per call
    assert handle.acknowledged == 50


@pytest.mark.anyio
async def test_a_source_context_manager_may_run_tasks_while_it_is_open() -> None:
    @asynccontextmanager
    async def with_a_task() -> AsyncIterator[list[int]]:
        async with anyio.create_task_group() as tg:  # such as a connector's reader task
            tg.start_soon(anyio.sleep_forever)
            yield [1, 2, 3]
            tg.cancel_scope.cancel()

    written: list[int] = []
    await Flow().source(with_a_task()).sink(written.append).run()
    assert written == [1, 2, 3]


@pytest.mark.anyio
async def test_a_sink_context_manager_is_entered_and_gets_whole_batches() -> None:
    log: list[tuple[str, Any]] = []

    @asynccontextmanager
    async def batch_writer() -> AsyncIterator[BatchWriter]:
        log.append(("open", None))
        yield BatchWriter(log)
        log.append(("close", None))

    await Flow().source(range(9)).sink(batch_writer()).run()
    batches = [items for what, items in log if what == "batch"]
    assert log[0] == ("open", None)
    assert log[-1] == ("close", None)
    assert [n for batch in batches for n in batch] == list(range(9))
    # Its buffer defaults to its batch size, so a writer that takes a turn finds several
    # items waiting (with no buffer it would get batches of one).
    assert len(batches) < 9
