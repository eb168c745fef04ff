"""At-least-once end to end: a Flow over a real Redis consumer group acknowledges an entry
only once the window holding it was written, and batches its acknowledgements."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
import redis
from reactivex import operators as ops

from rxflow import Flow, tumbling
from rxflow.connectors import Message
from rxflow.connectors.redis import redis_stream_source
from rxflow.windows import Window
from tests.connectors.conftest import require_service

pytestmark = pytest.mark.anyio


@pytest.fixture
def stream() -> Iterator[tuple[str, str, redis.Redis]]:
    host, port = require_service("redis")
    client = redis.Redis(host=host, port=port)
    name = f"rxflow-flow-{uuid.uuid4().hex[:12]}"
    for t in range(20):
        client.xadd(name, {"data": json.dumps({"t": t})})
    yield f"redis://{host}:{port}/0", name, client
    client.delete(name)
    client.close()


def parsed(message: Message[bytes]) -> Message[Any]:
    return message.with_value(json.loads(message.value))


def pending(client: redis.Redis, name: str) -> int:
    return int(client.xpending(name, "g")["pending"])


async def test_entries_are_acknowledged_in_batches_after_their_windows(
    stream: tuple[str, str, redis.Redis],
) -> None:
    url, name, client = stream
    written: list[Window] = []

    async def write(window: Window) -> None:
        # Redis still holds every entry of this window as pending: none acknowledged yet.
        assert pending(client, name) >= len(window.items)
        written.append(window)

    handle = (
        Flow()
        .source(redis_stream_source(url, name, "g", "c1"))
        .pipe(ops.take(20), ops.map(parsed), tumbling(5.0, timestamp=lambda m: m.value["t"]))
        .sink(write)
        .prepare()
    )
    with anyio.fail_after(20):
        await handle.run()
    assert [len(window.items) for window in written] == [5, 5, 5, 5]
    assert handle.acknowledged == 20
    assert pending(client, name) == 0


async def test_an_aborted_flow_leaves_the_open_window_pending_for_redelivery(
    stream: tuple[str, str, redis.Redis],
) -> None:
    url, name, client = stream
    written: list[Window] = []

    async def write(window: Window) -> None:
        written.append(window)

    async with anyio.create_task_group() as tg:
        handle = (
            Flow()
            .source(redis_stream_source(url, name, "g", "c1"))
            .pipe(ops.map(parsed), tumbling(5.0, timestamp=lambda m: m.value["t"]))
            .sink(write)
            .start(tg)
        )
        with anyio.fail_after(20):
            # t=19 closes [0, 5), [5, 10) and [10, 15); their acknowledgements take a round
            # trip to Redis. [15, 20) stays open: the source waits for more entries.
            while handle.acknowledged < 15:  # noqa: ASYNC110 (a counter, no event to wait on)
                await anyio.sleep(0.01)
        handle.abort()
    assert [window.start for window in written] == [0.0, 5.0, 10.0]
    assert handle.acknowledged == 15
    assert pending(client, name) == 5  # read, never confirmed: Redis keeps them for c1
    async with redis_stream_source(url, name, "g", "c1") as again:
        redelivered = []
        with anyio.fail_after(10):
            async for message in again:
                redelivered.append(json.loads(message.value)["t"])
                if len(redelivered) == 5:
                    break
    assert redelivered == list(range(15, 20))
