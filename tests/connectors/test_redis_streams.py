"""Redis Streams connector against the real local Redis, on asyncio and trio.

The test side talks to Redis with redis-py's blocking client: it is backend-neutral, and
each call is one short round trip to a local server.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import anyio
import anyio.abc
import pytest
import redis
import sniffio
from reactivex import operators as ops

import rxflow.connectors.redis
import rxflow.connectors.redis._group
from rxflow import open_pipe
from rxflow.connectors.redis import RedisStreamSource, redis_stream_sink, redis_stream_source
from rxflow.errors import DecodeError, ServiceUnavailableError
from tests.connectors.conftest import require_service
from tests.connectors.support import take, tcp_proxy, wait_until

pytestmark = pytest.mark.anyio

GROUP = "workers"


class Redis:
    """One test's stream, and a blocking client to look at it from outside."""

    def __init__(self) -> None:
        host, port = require_service("redis")
        self.tag = f"rxflow-test-{uuid.uuid4().hex[:12]}"
        self.stream = self.tag
        # Connections of the connector under test carry this name, so the test can find
        # (and kill) them in CLIENT LIST.
        self.url = f"redis://{host}:{port}/0?client_name={self.tag}"
        self.client = redis.Redis(host=host, port=port)

    def add(self, *payloads: bytes, **headers: str) -> list[str]:
        return [self.client.xadd(self.stream, {"data": p, **headers}).decode() for p in payloads]

    def pending(self) -> int:
        return int(self.client.xpending(self.stream, GROUP)["pending"])

    def pending_ids(self, consumer: str) -> list[str]:
        rows = self.client.xpending_range(self.stream, GROUP, "-", "+", 1000, consumer)
        return [row["message_id"].decode() for row in rows]

    def connections(self) -> list[dict[str, Any]]:
        return [c for c in self.client.client_list() if c.get("name") == self.tag]

    def close(self) -> None:
        self.client.delete(self.stream)
        self.client.close()


@pytest.fixture
def rd() -> Iterator[Redis]:
    service = Redis()
    yield service
    service.close()


def source(rd: Redis, consumer: str = "c1", **options: Any) -> Any:
    return redis_stream_source(rd.url, rd.stream, GROUP, consumer, **options)


async def wait_until_blocked(rd: Redis) -> None:
    """Until the source's reader waits in a blocking XREADGROUP on the server."""
    await wait_until(lambda: any("b" in c["flags"] for c in rd.connections()))


async def test_round_trip_with_headers_and_timestamps(rd: Redis) -> None:
    before = time.time()
    async with redis_stream_sink(rd.url, rd.stream, encoder=json.dumps, batch_size=7) as sink:
        assert sink.batch_size == 7
        ids = await sink.send_batch([{"n": n} for n in range(5)])
        ids.append(await sink.send({"n": 5}))
    ids += rd.add(b'{"n": 6}', trace="abc")

    async with source(rd, codec="json", batch=4) as orders:
        messages = await take(aiter(orders), 7)
        assert [m.value for m in messages] == [{"n": n} for n in range(7)]
        assert [m.key for m in messages] == ids
        assert messages[-1].headers == {"trace": "abc"}
        assert messages[0].headers == {}
        assert all(m.source == f"redis:{rd.stream}" for m in messages)
        assert all(before - 1 <= (m.timestamp or 0) <= time.time() + 1 for m in messages)
        assert rd.pending() == 7
        for message in messages:
            await message.ack()
        assert rd.pending() == 0
        assert orders.decoder.decoded == 7


async def test_whole_entries_as_values_with_field_none(rd: Redis) -> None:
    async with redis_stream_sink(rd.url, rd.stream, field=None) as sink:
        await sink.send({"user": "ada", "total": 3})
    async with source(rd, codec="text", field=None) as entries:
        (message,) = await take(aiter(entries), 1)
        assert message.value == {"user": "ada", "total": "3"}
        await message.ack()


async def test_through_a_pipe_acking_what_comes_out(rd: Redis) -> None:
    rd.add(*(b"%d" % n for n in range(30)))
    async with (
        source(rd, codec="json", batch=8) as numbers,
        open_pipe(numbers, ops.map(lambda m: m.with_value(m.value * 2))) as doubled,
    ):
        messages = await take(aiter(doubled), 30)
        assert [m.value for m in messages] == [n * 2 for n in range(30)]
        for message in messages:
            await message.ack()
    assert rd.pending() == 0


async def test_consumers_of_a_group_share_the_stream(rd: Redis) -> None:
    ids = rd.add(*(b"%d" % n for n in range(20)))
    async with source(rd, "c1", batch=5) as one, source(rd, "c2", batch=5) as two:
        firsts, seconds = aiter(one), aiter(two)
        got: dict[str, list[str]] = {"c1": [], "c2": []}
        for _ in range(10):
            for name, messages in (("c1", firsts), ("c2", seconds)):
                (message,) = await take(messages, 1)
                got[name].append(str(message.key))
                await message.ack()
    assert len(got["c1"]) == len(got["c2"]) == 10
    assert sorted(got["c1"] + got["c2"]) == sorted(ids)
    assert rd.pending() == 0


async def test_slow_consumer_means_fewer_reads(rd: Redis) -> None:
    rd.add(*(b"%d" % n for n in range(100)))
    async with source(rd, batch=5) as numbers:
        messages = aiter(numbers)
        await take(messages, 3)
        assert rd.pending() == 5  # one read of `batch` entries, not the whole stream
        await take(messages, 3)
        assert rd.pending() == 10
    # What was read ahead was handed back at close: only the 6 taken stay on c1.
    assert len(rd.pending_ids("c1")) == 6
    # Through a pipe, the pipe's buffer adds to what is read ahead, and no more (c2 claims
    # nothing, so that it reads new entries).
    async with (
        source(rd, "c2", batch=5, claim_idle_ms=None) as numbers,
        open_pipe(numbers, max_buffer_size=4) as pipe,
    ):
        await take(aiter(pipe), 1)
        await wait_until(lambda: rd.pending() > 10)
        assert rd.pending() <= 10 + 5 + 4 + 5


async def test_restart_rereads_own_unacked_entries_first(rd: Redis) -> None:
    ids = rd.add(*(b"%d" % n for n in range(6)))
    async with source(rd, batch=2) as first_run:
        taken = await take(aiter(first_run), 4)
        for message in taken[:2]:
            await message.ack()
        await taken[2].nack()  # left pending, like the one never settled
    assert rd.pending_ids("c1") == ids[2:4]

    async with source(rd, batch=2) as second_run:
        again = await take(aiter(second_run), 4)
        assert [m.key for m in again] == ids[2:]
        for message in again:
            await message.ack()
    assert rd.pending() == 0


async def test_claims_entries_left_pending_by_a_dead_consumer(rd: Redis) -> None:
    ids = rd.add(b"mine", b"theirs", b"also theirs")
    rd.client.xgroup_create(rd.stream, GROUP, "0")
    rd.client.xreadgroup(GROUP, "c1", {rd.stream: ">"}, count=1)  # the source's own, pending
    rd.client.xreadgroup(GROUP, "dead", {rd.stream: ">"}, count=2)  # never acked: it died

    async with source(rd, claim_idle_ms=100) as work:
        messages = aiter(work)
        (mine,) = await take(messages, 1)
        assert mine.key == ids[0]
        # Make the entry in hand look long idle: the claims must not hand it out again.
        rd.client.xclaim(rd.stream, GROUP, "c1", 0, [ids[0]], idle=60_000)
        claimed = await take(messages, 2)  # once idle for 100 ms on the broker's clock
        assert [m.key for m in claimed] == ids[1:]
        assert [m.value for m in claimed] == [b"theirs", b"also theirs"]
        for message in [mine, *claimed]:
            await message.ack()
    assert rd.pending() == 0


async def test_decode_error_ends_the_stream_and_leaves_the_entry_pending(rd: Redis) -> None:
    (bad,) = rd.add(b"{oops")
    async with source(rd, codec="json") as orders:
        with pytest.raises(DecodeError, match=bad):
            await take(aiter(orders), 1)
    # Never handed out, it is handed back to the group at close, for the next claim.
    assert rd.pending_ids("c1") == []
    assert rd.pending_ids(rxflow.connectors.redis.RELEASED_CONSUMER) == [bad]


async def test_skip_acks_undecodable_and_payloadless_entries(rd: Redis) -> None:
    rd.add(b"{oops")
    rd.client.xadd(rd.stream, {"other": "no payload field"})
    (good,) = rd.add(b'{"n": 1}')
    async with source(rd, codec="json", on_decode_error="skip") as orders:
        (message,) = await take(aiter(orders), 1)
        assert (message.key, message.value) == (good, {"n": 1})
        assert orders.decoder.skipped == 2
        assert rd.pending() == 1
        await message.ack()
    assert rd.pending() == 0


@pytest.mark.parametrize("fault", ["connection dropped", "read cancelled"])
async def test_a_read_whose_reply_is_lost_loses_no_entry(rd: Redis, fault: str) -> None:
    ids = rd.add(b"0", b"1", b"2")
    async with source(rd, batch=3, block_ms=60_000) as numbers:
        received = await take(numbers, 3)
        for message in received:
            await message.ack()
        async with anyio.create_task_group() as tg:

            async def read_on() -> None:
                received.extend(await take(numbers, 4))

            tg.start_soon(read_on)
            await wait_until_blocked(rd)
            # Hand two new entries to the source's consumer without telling it, as if the
            # reply carrying them had been lost; then drop the connection, or cancel the read.
            with rd.client.pipeline(transaction=True) as multi:
                multi.xadd(rd.stream, {"data": b"3"}).xadd(rd.stream, {"data": b"4"})
                multi.xreadgroup(GROUP, "c1", {rd.stream: ">"}, count=2)
                ids += [entry_id.decode() for entry_id in multi.execute()[:2]]
            if fault == "connection dropped":
                for connection in rd.connections():
                    rd.client.client_kill_filter(_id=connection["id"])
            else:
                tg.cancel_scope.cancel()
            ids += rd.add(b"5", b"6")
        if fault == "read cancelled":
            received.extend(await take(numbers, 4))
        assert [m.key for m in received] == ids
        for message in received:
            await message.ack()
    assert rd.pending() == 0


async def test_cancelled_while_holding_a_message_leaves_no_task_thread_or_connection(
    rd: Redis,
) -> None:
    # (Cancelled while blocked in a read: the contract suite.)
    rd.add(b"0")
    tasks_before = _asyncio_tasks()
    held = anyio.Event()

    async def consume(messages: RedisStreamSource) -> None:
        async for _ in messages:
            held.set()
            await anyio.sleep_forever()

    async with source(rd, block_ms=60_000) as numbers:
        assert len(rd.connections()) == 2
        async with anyio.create_task_group() as tg:
            tg.start_soon(consume, numbers)
            await held.wait()
            tg.cancel_scope.cancel()
    await wait_until(lambda: rd.connections() == [])  # Redis sees the sockets close soon after
    assert not [t for t in threading.enumerate() if t.name == "rxflow asyncio host"]
    assert _asyncio_tasks() == tasks_before


def _asyncio_tasks() -> set[Any]:
    if sniffio.current_async_library() != "asyncio":
        return set()
    return asyncio.all_tasks()


async def test_what_a_cancelled_read_took_is_handed_back_at_close(rd: Redis) -> None:
    rd.add(b"0")
    async with source(rd, block_ms=60_000) as numbers:
        (first,) = await take(numbers, 1)
        await first.ack()
        async with anyio.create_task_group() as tg:
            tg.start_soon(take, numbers, 1)
            await wait_until_blocked(rd)
            # Hand two new entries to the source's consumer without telling it, as if the
            # reply carrying them had been lost to the cancellation that follows.
            with rd.client.pipeline(transaction=True) as multi:
                multi.xadd(rd.stream, {"data": b"1"}).xadd(rd.stream, {"data": b"2"})
                multi.xreadgroup(GROUP, "c1", {rd.stream: ">"}, count=2)
                lost = [entry_id.decode() for entry_id in multi.execute()[:2]]
            tg.cancel_scope.cancel()
    # Never handed out, so not c1's to keep: any worker's next claim takes them at once.
    assert numbers.released == 2
    assert rd.pending_ids("c1") == []
    assert rd.pending_ids(rxflow.connectors.redis.RELEASED_CONSUMER) == lost


async def test_gives_up_once_redis_stays_away(rd: Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rxflow.connectors.redis._group, "RECONNECT_BACKOFF_S", (0.01, 0.01))
    rd.add(b"0")
    async with tcp_proxy(require_service("redis")[1]) as proxy:
        url = f"redis://127.0.0.1:{proxy.port}"
        async with redis_stream_source(url, rd.stream, GROUP, "c1", block_ms=60_000) as numbers:
            messages = aiter(numbers)
            await take(messages, 1)
            proxy.cut()
            with pytest.raises(
                ServiceUnavailableError,
                match=f"lost the connection to redis at 127.0.0.1:{proxy.port}",
            ):
                await take(messages, 1)
    assert rd.pending() == 1  # still there for whoever reads next


async def test_entries_deleted_while_pending_are_acked_and_skipped(rd: Redis) -> None:
    gone, kept = rd.add(b"gone", b"kept")
    rd.client.xgroup_create(rd.stream, GROUP, "0")
    rd.client.xreadgroup(GROUP, "c1", {rd.stream: ">"})
    rd.client.xdel(rd.stream, gone)
    async with source(rd) as numbers:
        (message,) = await take(aiter(numbers), 1)
        assert message.key == kept
        assert rd.pending_ids("c1") == [kept]
        await message.ack()


async def test_a_group_created_at_dollar_reads_only_new_entries(rd: Redis) -> None:
    rd.add(b"old")
    async with source(rd, start_id="$") as numbers:
        (new,) = rd.add(b"new")
        (message,) = await take(aiter(numbers), 1)
        assert (message.key, message.value) == (new, b"new")
        await message.ack()


async def test_bad_arguments_say_what_to_do(rd: Redis) -> None:
    with pytest.raises(ValueError, match="batch must be an int of 1 or more"):
        async with source(rd, batch=0):
            pass
    with pytest.raises(ValueError, match="unknown codec"):
        async with source(rd, codec="yaml"):
            pass
    with pytest.raises(ValueError, match=r"has no consumer group 'workers'.*create_group=True"):
        async with source(rd, create_group=False):
            pass
    async with redis_stream_sink(rd.url, rd.stream, encoder=lambda item: [item]) as sink:
        with pytest.raises(TypeError, match="made a list of field 'data'; Redis stores bytes"):
            await sink.send_batch([b"fine", b"not"])
    async with redis_stream_sink(rd.url, rd.stream, field=None) as sink:
        with pytest.raises(TypeError, match="field=None writes mappings of field names"):
            await sink.send(b"not a mapping")
    with pytest.raises(ValueError, match="unknown encoder 'yaml'"):
        async with redis_stream_sink(rd.url, rd.stream, encoder="yaml"):  # type: ignore[arg-type]
            pass
    assert rd.client.xlen(rd.stream) == 0  # a bad item fails its batch before any XADD


async def test_the_sink_encodes_with_one_encoder(rd: Redis) -> None:
    async with redis_stream_sink(rd.url, rd.stream) as auto:  # "auto": bytes, text, JSON
        await auto.send_batch([b"raw", "t\u00e9xt", {"n": 1}, 7])
    async with redis_stream_sink(rd.url, rd.stream, encoder="text") as text:
        await text.send("plain")
    async with redis_stream_sink(rd.url, rd.stream, field=None, encoder="json") as whole:
        await whole.send({"user": "ada", "tags": ["a", "b"]})
    entries = [fields for _, fields in rd.client.xrange(rd.stream)]
    assert [e[b"data"] for e in entries[:5]] == [
        b"raw",
        "t\u00e9xt".encode(),
        b'{"n":1}',
        b"7",
        b"plain",
    ]
    assert entries[5] == {b"user": b'"ada"', b"tags": b'["a","b"]'}


async def test_an_encoder_returning_the_whole_entry_is_deprecated(rd: Redis) -> None:
    def entry(order: tuple[str, int]) -> dict[str, Any]:
        return {"user": order[0], "total": order[1]}

    async with redis_stream_sink(rd.url, rd.stream, field=None, encoder=entry) as sink:
        with pytest.warns(DeprecationWarning, match="returns the entry's fields is deprecated"):
            await sink.send(("ada", 3))
    [(_, fields)] = rd.client.xrange(rd.stream)
    assert fields == {b"user": b"ada", b"total": b"3"}
