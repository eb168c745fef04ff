"""The connector kit's source loop and sink, over an in-memory reader: what every broker
source built on it guarantees (the contract suite checks the same against real systems)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from rxflow import open_pipe
from rxflow._source_time import SourceTime
from rxflow.connectors import InFlightLimit, Message
from rxflow.connectors._kit import BrokerSink, BrokerSource, Decoded, Incoming, Verb
from rxflow.connectors.codecs import Decoder, RecordRejected
from rxflow.errors import DecodeError, SettledAfterCloseError

pytestmark = pytest.mark.anyio


class ListReader:
    """A system that holds records in a list; records its fetches and settlements."""

    name = "memory:test"

    def __init__(
        self,
        records: Sequence[bytes],
        *,
        limit: int | None = None,
        queued: bool = False,
    ) -> None:
        self.records = list(enumerate(records))
        self.in_flight_limit = InFlightLimit(limit, "max_unacked") if limit else None
        self.queues_settlements = queued
        self.asked: list[tuple[int, int]] = []  # (count, max_bytes) of each fetch
        self.settle_calls: list[list[tuple[int, Verb]]] = []
        self.released: list[int] = []
        self.empty_fetches = 0
        self.arrived = anyio.Event()

    @property
    def settled(self) -> list[tuple[int, Verb]]:
        return [settlement for call in self.settle_calls for settlement in call]

    async def fetch(self, count: int, max_bytes: int) -> list[Incoming[int]]:
        self.asked.append((count, max_bytes))
        if not self.records:
            self.empty_fetches += 1
            await self.arrived.wait()  # a system's poll that returns empty when it ends
            self.arrived = anyio.Event()
            return []
        taken, self.records = self.records[:count], self.records[count:]
        return [
            Incoming(data, handle=n, key=str(n), identity=n, size=len(data)) for n, data in taken
        ]

    async def settle(self, settlements: Sequence[tuple[int, Verb]]) -> None:
        await anyio.lowlevel.checkpoint()
        self.settle_calls.append(list(settlements))

    async def release(self, unhanded: Sequence[int]) -> int:
        self.released.extend(unhanded)
        return len(unhanded)

    async def held_back(self) -> bool:
        return False


def source_over(reader: ListReader, codec: Any = "bytes", **options: Any) -> BrokerSource[Any, int]:
    policy = options.pop("on_decode_error", "raise")
    decoder = Decoder(codec, on_decode_error=policy, source=reader.name)
    return BrokerSource(reader, decoder, **options)


async def test_messages_carry_what_the_reader_described() -> None:
    reader = ListReader([b"a", b"b"])
    async with source_over(reader, "text") as source:
        first = await anext(source)
        second = await anext(source)
        await first.ack()
        await second.nack(requeue=False)
    assert (first.value, first.key, first.source, first.identity) == ("a", "0", "memory:test", 0)
    assert second.value == "b"
    assert reader.settled == [(0, "ack"), (1, "reject")]


async def test_the_first_fetch_asks_for_one_record_then_as_many_as_the_bytes_allow() -> None:
    reader = ListReader([b"x" * 1000] * 40)
    async with source_over(reader, read_ahead=10, read_ahead_bytes=3500) as source:
        for _ in range(40):
            await anext(source)
            # Fetched and not handed out: within the byte budget, plus at most one record.
            assert source.buffered_bytes <= 3500 + 1000
            assert source.buffered <= 10
    assert reader.asked[0] == (1, 3500)
    assert {count for count, _ in reader.asked[1:]} == {3}


async def test_an_expected_size_sizes_the_first_fetch_until_records_are_seen() -> None:
    reader = ListReader([b"x" * 1000] * 40)
    # The system said 1,200 bytes (its own overhead included); the records are 1,000.
    options = {"read_ahead": 10, "read_ahead_bytes": 3500, "expected_size": 1200}
    async with source_over(reader, **options) as source:
        for _ in range(40):
            await anext(source)
            assert source.buffered_bytes <= 3500 + 1000
    assert reader.asked[0] == (2, 3500)
    assert {count for count, _ in reader.asked[1:]} == {3}


async def test_read_ahead_counts_records_when_they_are_small() -> None:
    reader = ListReader([b"x"] * 50)
    async with source_over(reader, read_ahead=8) as source:
        for _ in range(50):
            await anext(source)
            assert source.buffered <= 8
    assert max(count for count, _ in reader.asked) == 8


async def test_at_the_in_flight_limit_it_waits_for_a_settlement_with_source_time_paused() -> None:
    reader = ListReader([b"r"] * 10, limit=3)
    source_time = SourceTime()
    taken: list[Message[Any]] = []
    with source_time.activated():
        async with source_over(reader, read_ahead=10) as source, anyio.create_task_group() as tg:

            async def take(count: int) -> None:
                for _ in range(count):
                    taken.append(await anext(source))

            tg.start_soon(take, 4)
            await anyio.wait_all_tasks_blocked()
            assert len(taken) == 3  # the fourth waits: three unsettled fill the limit
            assert source_time.paused
            await taken[0].ack()
            await anyio.wait_all_tasks_blocked()
            assert len(taken) == 4
            assert not source_time.paused
            await source.ack_many(taken)
    assert reader.settled == [(0, "ack"), (1, "ack"), (2, "ack"), (3, "ack")]
    assert all(count <= 3 for count, _ in reader.asked)


async def test_settling_after_the_source_closed_is_an_error_not_a_silent_loss() -> None:
    reader = ListReader([b"a"])
    async with source_over(reader) as source:
        message = await anext(source)
    with pytest.raises(SettledAfterCloseError, match=r"memory:test.*after its source closed"):
        await message.ack()
    assert reader.settled == []


async def test_queued_settlements_are_written_in_runs_and_all_by_close() -> None:
    reader = ListReader([b"m"] * 20, queued=True)
    async with source_over(reader, read_ahead=20) as source:
        messages = [await anext(source) for _ in range(20)]
        for message in messages:
            await message.ack()  # queued: returns before the system has it
    assert reader.settled == [(n, "ack") for n in range(20)]
    assert len(reader.settle_calls) < 20


async def test_a_run_ends_before_a_record_that_fails_to_decode_and_the_next_call_raises() -> None:
    reader = ListReader([b"1", b"2", b"{oops", b"4"])
    async with source_over(reader, "json", read_ahead=4) as source:
        await anext(source)  # the first fetch takes one record
        run = await source.next_run()
        assert [message.value for message in run] == [2]
        with pytest.raises(DecodeError, match="memory:test: record '2'"):
            await source.next_run()
        assert source.buffered == 2  # the bad record stays, unacknowledged
    assert reader.released == [2, 3]  # given back at close
    assert source.released == 2


async def test_skipped_records_are_acked_counted_and_left_out_of_runs() -> None:
    reader = ListReader([b"1", b"nope", b"3"])
    async with source_over(reader, "json", on_decode_error="skip") as source:
        values = [message.value for message in [await anext(source)] + await source.next_run()]
    assert values == [1, 3]
    assert source.decoder.skipped == 1
    assert (1, "ack") in reader.settled


async def test_a_record_the_reader_rejected_follows_the_decode_policy() -> None:
    reader = ListReader([])
    reader.records = [(0, b"ok")]
    source = source_over(reader, on_decode_error="skip")
    rejected = Incoming(RecordRejected("entry 7 has no field 'data'"), handle=7, key="7")
    async with source:
        source._fetched.append(rejected)
        message = await anext(source)
    assert message.value == b"ok"
    assert source.decoder.skipped == 1
    assert reader.settled[0] == (7, "ack")


async def test_fields_are_decoded_one_by_one() -> None:
    reader = ListReader([])
    source = source_over(reader, "json")
    async with source:
        source._fetched.append(Incoming({"a": b"1", "b": b"[2]"}, handle=0, key="0-1"))
        message = await anext(source)
        await message.ack()
    assert message.value == {"a": 1, "b": [2]}


async def test_a_source_without_a_decoder_hands_out_decoded_values_as_they_are() -> None:
    reader = ListReader([])
    async with BrokerSource(reader, None) as source:
        source._fetched.append(Incoming(Decoded({"id": 1}), handle=0, key="1", identity=1))
        message = await anext(source)
        source._fetched.append(Incoming(b"raw", handle=1))
        with pytest.raises(TypeError, match="Decoded values only"):
            await anext(source)
    assert (message.value, message.identity) == ({"id": 1}, 1)


class InOrderSource(BrokerSource[Any, int]):
    requeue_rereads = True


async def test_a_requeue_gives_back_the_read_ahead_when_the_system_rereads_in_order() -> None:
    reader = ListReader([b"a", b"b", b"c", b"d"])
    decoder = Decoder("text", source=reader.name)
    async with InOrderSource(reader, decoder, expected_size=1) as source:
        a, b = await anext(source), await anext(source)
        assert (source.buffered, source.unsettled) == (2, 4)
        await a.ack()
        await b.nack()  # comes again before c and d: what was read ahead goes back
        assert (source.buffered, source.buffered_bytes, source.unsettled) == (0, 0, 0)
        assert reader.released == [2, 3]
    assert source.released == 0  # given back on the requeue, not at close
    async with source_over(ListReader([b"a", b"b", b"c"]), expected_size=1) as plain:
        await (await anext(plain)).nack()
        assert plain.buffered == 2  # a system that requeues at the back keeps its read-ahead


async def test_ack_many_takes_only_its_own_messages() -> None:
    async with source_over(ListReader([b"a"])) as one, source_over(ListReader([b"b"])) as other:
        mine, theirs = await anext(one), await anext(other)
        with pytest.raises(ValueError, match="ack_many\\(\\) takes messages of this source"):
            await one.ack_many([mine, theirs])
        await one.ack_many([mine, mine])
    assert mine.settled == "ack"


async def test_a_pipe_over_a_kit_source_reads_it_and_leaves_it_open() -> None:
    reader = ListReader([b"%d" % n for n in range(30)])
    async with source_over(reader, "json", read_ahead=8) as source:
        async with open_pipe(source, max_buffer_size=4) as messages:
            values = []
            async for message in messages:
                values.append(message.value)
                await message.ack()
                if len(values) == 30:
                    break
        # The pipe is done with the source; the source is not closed yet.
        assert source.unsettled == 0
    assert values == list(range(30))


async def test_cancelling_a_waiting_fetch_leaves_no_task_behind() -> None:
    reader = ListReader([], queued=True)
    source = source_over(reader)

    async def read() -> None:
        async with source:
            await anext(source)

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(read)
        await anyio.wait_all_tasks_blocked()  # the fetch waits for records that never come
        tasks.cancel_scope.cancel()
    assert reader.empty_fetches == 1
    assert source.buffered == 0
    assert source._settler.closed  # the settler task ended with the source's block


class RecordingPublisher:
    def __init__(self) -> None:
        self.published: list[list[tuple[bytes, Any]]] = []

    async def publish(self, records: Sequence[tuple[bytes, Any]]) -> int:
        self.published.append(list(records))
        return len(records)


async def test_a_sink_encodes_every_item_and_publishes_one_batch() -> None:
    publisher = RecordingPublisher()
    sink: BrokerSink[Any, int] = BrokerSink(
        publisher, lambda item: str(item).encode(), batch_size=10, name="sink"
    )
    assert await sink.send_batch([1, 2]) == 2
    await sink.send(3)
    assert publisher.published == [[(b"1", 1), (b"2", 2)], [(b"3", 3)]]
