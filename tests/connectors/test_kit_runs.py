"""The connector kit's runs (``BrokerSource.next_run``): what one fetch brought is decoded
and made into messages in one go, and each message is the one the record-by-record path
(``anext``) makes; a record that fails to decode inside a run is handled by the decode
policy exactly as when read alone."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from rxflow.connectors import Message
from rxflow.connectors._kit import BrokerSource, Decoded, Incoming, Verb
from rxflow.connectors.codecs import DecodeFailure, Decoder
from rxflow.errors import DecodeError
from rxflow.partitions import Partition

pytestmark = pytest.mark.anyio


class RunReader:
    """Hands out given Incoming records, ``per_fetch`` at a time; records settlements."""

    name = "memory:runs"
    in_flight_limit = None
    queues_settlements = False

    def __init__(self, records: Sequence[Incoming[int]], per_fetch: int = 1000) -> None:
        self.records = list(records)
        self.per_fetch = per_fetch
        self.settled: list[tuple[int, Verb]] = []
        self.released: list[int] = []

    async def fetch(self, count: int, max_bytes: int) -> list[Incoming[int]]:
        count = min(count, self.per_fetch)
        taken, self.records = self.records[:count], self.records[count:]
        return taken

    async def settle(self, settlements: Sequence[tuple[int, Verb]]) -> None:
        self.settled.extend(settlements)

    async def release(self, unhanded: Sequence[int]) -> int:
        self.released.extend(unhanded)
        return len(unhanded)

    async def held_back(self) -> bool:
        return False


def records(payloads: Sequence[Any], partition: Partition | None = None) -> list[Incoming[int]]:
    """Records with every field set, each differently."""
    return [
        Incoming(
            payload,
            handle=n,
            key=f"k{n}" if n % 2 else b"k%d" % n,
            headers={"n": str(n)} if n % 3 else {},
            timestamp=1700000000.0 + n,
            identity=("topic", 0, n),
            size=len(payload) if isinstance(payload, bytes) else 0,
            redelivered=bool(n % 2),
            partition=partition,
            offset=100 + n if partition is not None else None,
        )
        for n, payload in enumerate(payloads)
    ]


def fields(message: Message[Any]) -> tuple[Any, ...]:
    settlement: Any = message.settlement
    return (
        type(message),
        message.value,
        message.key,
        dict(message.headers),
        message.timestamp,
        message.source,
        message.partition,
        message.offset,
        message.identity,
        message.settled,
        settlement.redelivered,
        settlement._handle,
    )


def source_over(
    reader: RunReader, codec: Any, policy: Any = "raise", **options: Any
) -> BrokerSource[Any, int]:
    dead: list[DecodeFailure] = []
    decoder = Decoder(
        codec,
        on_decode_error=policy,
        dead_letter=dead.append if policy == "dead_letter" else None,
        source=reader.name,
    )
    source: BrokerSource[Any, int] = BrokerSource(reader, decoder, expected_size=1, **options)
    source.dead = dead  # type: ignore[attr-defined]
    return source


async def read_one_by_one(source: BrokerSource[Any, int], count: int) -> list[Message[Any]]:
    return [await anext(source) for _ in range(count)]


def upper(data: bytes) -> str:
    """A codec that is a plain function (no run form): decoded one by one."""
    if data.startswith(b"!"):
        raise ValueError("a bang")
    return data.decode().upper()


@pytest.mark.parametrize("codec", ["bytes", "text", "json", upper])
async def test_a_run_makes_the_messages_the_record_by_record_path_makes(codec: Any) -> None:
    payloads = [b'"%d"' % n for n in range(12)]
    partition = Partition("topic", 0)
    run_reader = RunReader(records(payloads, partition), per_fetch=5)
    one_reader = RunReader(records(payloads, partition), per_fetch=5)
    async with source_over(run_reader, codec) as by_runs, source_over(one_reader, codec) as alone:
        runs = [await by_runs.next_run() for _ in range(3)]
        singles = await read_one_by_one(alone, 12)
        assert [len(run) for run in runs] == [5, 5, 2]  # a run is what one fetch brought
        assert [fields(m) for run in runs for m in run] == [fields(m) for m in singles]
        assert by_runs.decoder.decoded == alone.decoder.decoded == 12
        assert (by_runs.buffered, by_runs.buffered_bytes) == (0, 0)
        await by_runs.ack_many([m for run in runs for m in run])
    assert run_reader.settled == [(n, "ack") for n in range(12)]


@pytest.mark.parametrize("codec", ["json", upper])
async def test_a_failing_record_inside_a_run_raises_after_the_records_before_it(codec: Any) -> None:
    payloads = [b'"a"', b'"b"', b"!{bad", b'"d"']
    reader = RunReader(records(payloads))
    async with source_over(reader, codec, "raise") as source:
        run = await source.next_run()
        assert [m.key for m in run] == [b"k0", "k1"]
        with pytest.raises(DecodeError, match="memory:runs"):
            await source.next_run()
        assert source.buffered == 2  # the bad record stays at the head, unsettled
        assert source.buffered_bytes == len(b"!{bad") + len(b'"d"')
        assert source.decoder.decoded == 2
        await source.ack_many(run)
    assert reader.settled == [(0, "ack"), (1, "ack")]
    assert reader.released == [2, 3]  # given back at close, never handed out


@pytest.mark.parametrize("codec", ["json", upper])
@pytest.mark.parametrize("policy", ["skip", "dead_letter"])
async def test_a_failing_record_inside_a_run_is_set_aside_and_the_run_goes_on(
    codec: Any, policy: str
) -> None:
    payloads = [b'"a"', b"!{bad", b'"c"', b"!{worse", b'"e"']
    reader = RunReader(records(payloads))
    async with source_over(reader, codec, policy) as source:
        run = await source.next_run()
        assert [m.identity for m in run] == [("topic", 0, n) for n in (0, 2, 4)]
        assert [m.offset for m in run] == [None] * 3
        assert source.decoder.decoded == 3
        assert (source.decoder.skipped, source.decoder.dead_lettered) == (
            (2, 0) if policy == "skip" else (0, 2)
        )
        assert [failure.data for failure in source.dead] == (  # type: ignore[attr-defined]
            [] if policy == "skip" else [b"!{bad", b"!{worse"]
        )
        assert (source.buffered, source.buffered_bytes, source.unsettled) == (0, 0, 3)
    # Set aside: acked at once (handled), the others never settled here.
    assert reader.settled == [(1, "ack"), (3, "ack")]


async def test_records_of_a_revoked_partition_end_the_run_and_are_dropped() -> None:
    kept, revoked = Partition("topic", 0), Partition("topic", 1)
    batch = records([b"a", b"b"], kept) + records([b"c", b"d"], revoked)
    batch += records([b"e"], kept)
    reader = RunReader([r._replace(handle=n) for n, r in enumerate(batch)])
    async with source_over(reader, "bytes") as source:
        revoked.revoke()
        run = await source.next_run()
        assert [m.value for m in run] == [b"a", b"b", b"e"]
        assert [m.partition for m in run] == [kept, kept, kept]
        assert (source.buffered, source.unsettled) == (0, 3)


async def test_tombstones_and_identity_functions_take_the_record_by_record_path() -> None:
    reader = RunReader([*records([b"1", b"2"]), Incoming(Decoded(None), handle=9, key="t")])
    source = source_over(reader, "json", identity_of=lambda m: m.value and m.value * 10)
    async with source:
        run = await source.next_run()
    assert [(m.value, m.identity) for m in run] == [(1, 10), (2, 20), (None, None)]
