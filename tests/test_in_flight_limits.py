"""Windows in a flow against a broker's in-flight limit: nothing lost, nothing counted twice.

A broker that delivers at most ``limit`` unacknowledged messages (JetStream's
``max_ack_pending``, RabbitMQ's ``prefetch``) stops a flow whose windows hold that many:
only new messages could close those windows. Before rxflow knew of the limit, an
``idle_timeout`` read the stall as a quiet source, moved the watermark on, and dropped and
*acknowledged* what came next as late; without it, the broker's redeliveries of the held
messages entered the windows a second time. ``FakeBroker`` behaves like such a broker, in
virtual time; tests/connectors/test_in_flight_brokers.py runs the same story on the real ones.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Hashable
from typing import Any

import anyio
import anyio.lowlevel
import attrs
import pytest
import trio.testing

from rxflow import Flow, open_pipe, tumbling
from rxflow._source_time import SourceTime
from rxflow.connectors import InFlightLimit
from rxflow.errors import InFlightLimitError
from rxflow.windows import Window

VIRTUAL_TRIO = pytest.param(
    ("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)}), id="trio-virtual"
)


@attrs.define(eq=False)
class Delivered:
    """One delivery of a broker message: ``identity`` is the same on every delivery."""

    value: dict[str, Any]
    identity: Hashable
    broker: FakeBroker

    async def ack(self) -> None:
        self.broker.ack(self)


class FakeBroker:
    """A queue that hands out at most ``limit`` unacknowledged messages, waits while it is
    at the limit, and (with ``redeliver_after``) delivers a message again when it has not
    been acknowledged that long after its delivery, like JetStream's ``ack_wait``."""

    def __init__(
        self,
        values: list[dict[str, Any]],
        *,
        limit: int,
        every: float = 0.001,
        redeliver_after: float | None = None,
    ) -> None:
        self.values = values
        self.limit = limit
        self.every = every
        self.redeliver_after = redeliver_after
        self.in_flight_limit = InFlightLimit(limit, "max_ack_pending")
        self.unacked: dict[int, float] = {}  # position -> when last delivered
        self.acked: list[int] = []  # positions, in the order their acks came
        self.deliveries = 0
        self._freed = anyio.Event()

    def ack(self, delivered: Delivered) -> None:
        position = int(str(delivered.identity))
        if position in self.unacked:  # a second ack of the same message is a no-op
            del self.unacked[position]
            self.acked.append(position)
            self._freed.set()

    def __aiter__(self) -> AsyncIterator[Delivered]:
        return self._deliver()

    async def _deliver(self) -> AsyncIterator[Delivered]:
        next_position = 0
        while True:
            due = self._due_for_redelivery()
            if due is not None:
                position = due
            elif next_position < len(self.values) and len(self.unacked) < self.limit:
                position, next_position = next_position, next_position + 1
            elif next_position >= len(self.values):
                return  # every message delivered once: the stream (for now) ends here
            else:
                # At the limit: nothing to deliver until an ack frees a place or a
                # redelivery falls due.
                self._freed = anyio.Event()
                with anyio.move_on_after(self.redeliver_after or 3600.0):
                    await self._freed.wait()
                continue
            # New messages come at the broker's pace; redeliveries go out at once.
            await (anyio.sleep(self.every) if due is None else anyio.lowlevel.checkpoint())
            self.unacked[position] = anyio.current_time()
            self.deliveries += 1
            yield Delivered(self.values[position], str(position), self)

    def _due_for_redelivery(self) -> int | None:
        if self.redeliver_after is None:
            return None
        now = anyio.current_time()
        for position, delivered_at in self.unacked.items():
            if now - delivered_at >= self.redeliver_after:
                return position
        return None


def events(count: int, per_second: float) -> list[dict[str, Any]]:
    return [{"n": n, "t": n / per_second} for n in range(count)]


def count_in(windows: list[Window]) -> dict[int, int]:
    """How many times each event was counted in the written windows."""
    counted: dict[int, int] = {}
    for window in windows:
        for message in window.items:
            counted[message.value["n"]] = counted.get(message.value["n"], 0) + 1
    return counted


def one_second_windows() -> Any:
    return tumbling(1.0, timestamp=lambda m: m.value["t"], idle_timeout=1.5)


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", [VIRTUAL_TRIO])
async def test_windows_at_the_in_flight_limit_fail_the_flow_and_lose_nothing(
    anyio_backend: Any,
) -> None:
    # 100 events a second in 1-second windows: a window holds 100, the broker allows 60.
    broker = FakeBroker(events(500, per_second=100), limit=60)
    written: list[Window] = []
    flow = Flow("counts").source(broker).pipe(one_second_windows()).sink(written.append)

    with pytest.raises(InFlightLimitError) as raised:
        await flow.run()

    message = str(raised.value)
    assert "60 unacknowledged messages" in message
    assert "max_ack_pending=60" in message
    assert "raise max_ack_pending" in message
    assert ".checkpoint(store)" in message
    # Nothing was acknowledged that was not written in a window: the held messages come again.
    counted = count_in(written)
    assert set(broker.acked) <= set(counted)
    assert all(times == 1 for times in counted.values())


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", [VIRTUAL_TRIO])
async def test_with_room_for_a_window_every_event_is_counted_once(anyio_backend: Any) -> None:
    broker = FakeBroker(events(500, per_second=100), limit=250)
    written: list[Window] = []
    flow = Flow("counts").source(broker).pipe(one_second_windows()).sink(written.append)

    await flow.run()

    assert count_in(written) == dict.fromkeys(range(500), 1)
    assert sorted(broker.acked) == list(range(500))
    assert flow.snapshot()["tumbling"].dropped == 0  # nothing was taken for late


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", [VIRTUAL_TRIO])
async def test_a_redelivery_of_a_held_message_is_not_counted_twice(anyio_backend: Any) -> None:
    # The broker redelivers what is not acked within 0.3 s; windows hold items for a second.
    broker = FakeBroker(events(300, per_second=100), limit=1000, every=0.01, redeliver_after=0.3)
    written: list[Window] = []
    handle = (
        Flow("counts")
        .source(broker)
        .pipe(tumbling(1.0, timestamp=lambda m: m.value["t"]))
        .sink(written.append)
        .prepare()
    )

    await handle.run()

    assert broker.deliveries > 300  # the broker did deliver again...
    assert handle.redelivered_while_held == broker.deliveries - 300
    assert count_in(written) == dict.fromkeys(range(300), 1)  # ...and nothing counted twice
    assert sorted(broker.acked) == list(range(300))


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", [VIRTUAL_TRIO])
async def test_idleness_does_not_count_while_the_source_is_at_its_limit(
    anyio_backend: Any,
) -> None:
    # The sink is slow (2 s a window), so written windows' messages stay unacked for long
    # and the broker (limit 150) stops delivering: held back, not idle. An idle_timeout of
    # 0.5 s must not move event time on meanwhile, or the next events would be late.
    broker = FakeBroker(events(600, per_second=100), limit=150)
    written: list[Window] = []

    async def slow_write(window: Window) -> None:
        await anyio.sleep(2.0)
        written.append(window)

    flow = (
        Flow("counts")
        .source(broker)
        .pipe(tumbling(1.0, timestamp=lambda m: m.value["t"], idle_timeout=0.5))
        .sink(slow_write)
    )

    snapshot = await flow.run()

    assert snapshot["tumbling"].dropped == 0
    assert count_in(written) == dict.fromkeys(range(600), 1)
    assert [len(window) for window in written] == [100] * 6


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", [VIRTUAL_TRIO])
async def test_idleness_does_not_count_while_the_consumer_holds_the_pipe_back(
    anyio_backend: Any,
) -> None:
    # Events every 0.1 s of event time and of processing time; the consumer takes 3 s per
    # window. Waiting for the consumer is not a quiet source: no event may be late.
    async def steady() -> AsyncIterator[float]:
        for n in range(40):
            await anyio.sleep(0.1)
            yield n / 10

    windows = tumbling(1.0, timestamp=float, idle_timeout=0.5)
    received: list[Window] = []
    async with open_pipe(steady(), windows, max_buffer_size=0) as pipe:
        async for window in pipe:
            received.append(window)
            await anyio.sleep(3.0)

    assert windows.late_dropped == 0
    assert sum(len(window) for window in received) == 40


def test_source_time_stands_still_while_paused_and_pauses_nest() -> None:
    ticks = iter([0.0, 1.0, 2.0, 5.0, 6.0, 10.0])
    clock = SourceTime(lambda: next(ticks))
    clock.pause()  # 0.0
    clock.pause()  # (nested: no reading)
    clock.resume()  # (still paused)
    assert clock.paused
    assert clock.now() == 0.0  # frozen where the pause began
    clock.resume()  # 1.0: one second paused
    assert clock.now() == 1.0  # 2.0 - 1.0
    clock.pause()  # 5.0
    clock.resume()  # 6.0: two seconds paused in all
    assert clock.now() == 8.0  # 10.0 - 2.0
