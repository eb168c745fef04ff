"""What a source read ahead and never handed out goes back to its system when the source
closes, gracefully or not, so that another worker gets it at once, not after a timeout.

That it comes at once to another worker, on every broker, is the contract suite's
(tests/connectors/contract); here is how Redis does it: it hands the read-ahead to the group
(claimed at once by any worker) and keeps what was taken and not acked on the consumer.
Against the real local Redis, on both backends.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
import redis

from rxflow import Flow
from rxflow.connectors.redis import RELEASED_CONSUMER, redis_stream_source
from tests.connectors.conftest import require_service
from tests.connectors.support import take

pytestmark = pytest.mark.anyio

GROUP = "workers"


# -- Redis Streams ---------------------------------------------------------------------------


class Stream:
    def __init__(self) -> None:
        host, port = require_service("redis")
        self.url = f"redis://{host}:{port}/0"
        self.name = f"rxflow-test-{uuid.uuid4().hex[:12]}"
        self.client = redis.Redis(host=host, port=port)

    def add(self, count: int) -> list[str]:
        with self.client.pipeline() as pipe:
            for n in range(count):
                pipe.xadd(self.name, {"data": b"%d" % n})
            return [entry_id.decode() for entry_id in pipe.execute()]

    def pending_on(self, consumer: str) -> list[str]:
        rows = self.client.xpending_range(self.name, GROUP, "-", "+", 10_000, consumer)
        return [row["message_id"].decode() for row in rows]

    def pending(self) -> int:
        return int(self.client.xpending(self.name, GROUP)["pending"])

    def source(self, consumer: str, **options: Any) -> Any:
        return redis_stream_source(self.url, self.name, GROUP, consumer, **options)


@pytest.fixture
def stream() -> Iterator[Stream]:
    stream = Stream()
    yield stream
    stream.client.delete(stream.name)
    stream.client.close()


async def test_a_closed_redis_source_leaves_pending_only_what_was_taken(stream: Stream) -> None:
    ids = stream.add(100)
    async with stream.source("c1", batch=20) as first:
        taken = await take(aiter(first), 3)
        await taken[0].ack()
        assert stream.pending() == 19  # the rest of a whole read is out with c1
    # Taken and not acked: still c1's. The 17 read ahead are the group's again.
    assert stream.pending_on("c1") == ids[1:3]
    assert stream.pending_on(RELEASED_CONSUMER) == ids[3:20]
    assert first.released == 17

    # Another worker gets them at once (claim_idle_ms is 60 s), then the rest, in order.
    async with stream.source("c2", batch=20) as second:
        with anyio.fail_after(5):
            rest = await take(aiter(second), 97)
        assert [message.key for message in rest] == ids[3:]
        await second.ack_many(rest)
    assert stream.pending_on("c2") == []
    assert stream.pending_on(RELEASED_CONSUMER) == []
    assert stream.pending_on("c1") == ids[1:3]


async def test_a_flow_stopped_during_a_backlog_leaves_nothing_pending(stream: Stream) -> None:
    ids = stream.add(500)
    written: list[str] = []
    async with anyio.create_task_group() as tg:

        async def sink(message: Any) -> None:
            written.append(message.key)
            if len(written) == 30:
                handle.stop()

        handle = Flow("catch-up").source(stream.source("c1", batch=100)).sink(sink).start(tg)
        with anyio.fail_after(20):
            await handle.wait()
    # Everything written was acked; nothing read ahead is left on the stopped consumer.
    assert stream.pending_on("c1") == []
    assert handle.acknowledged == len(written)
    assert stream.pending() == len(stream.pending_on(RELEASED_CONSUMER))

    async with stream.source("c2", batch=100) as other:
        with anyio.fail_after(5):
            rest = await take(aiter(other), len(ids) - len(written))
        await other.ack_many(rest)
    # Between them, every entry once: none lost, none twice.
    assert sorted(written + [str(message.key) for message in rest]) == sorted(ids)
    assert stream.pending() == 0


async def test_without_claims_the_read_ahead_stays_with_the_consumer(stream: Stream) -> None:
    ids = stream.add(10)
    async with stream.source("c1", batch=5, claim_idle_ms=None) as first:
        (message,) = await take(aiter(first), 1)
        await message.ack()
    # Nobody would claim them: they stay c1's, re-read first when it comes back.
    assert stream.pending_on("c1") == ids[1:5]
    async with stream.source("c1", batch=5, claim_idle_ms=None) as again:
        assert [m.key for m in await take(aiter(again), 9)] == ids[1:]


async def test_a_cancelled_redis_source_hands_back_its_read_ahead_too(stream: Stream) -> None:
    ids = stream.add(10)
    with anyio.CancelScope() as scope:
        async with stream.source("c1", batch=5) as first:
            taken = await take(aiter(first), 2)
            scope.cancel()
            await anyio.sleep_forever()
    assert [m.key for m in taken] == ids[:2]
    assert stream.pending_on("c1") == ids[:2]
    assert stream.pending_on(RELEASED_CONSUMER) == ids[2:5]


async def test_a_stream_deleted_under_an_open_source_closes_quietly(stream: Stream) -> None:
    stream.add(10)
    async with stream.source("c1", batch=5) as first:
        await take(aiter(first), 1)
        stream.client.delete(stream.name)  # the group goes with it: nothing to hand back
    assert first.released == 0
