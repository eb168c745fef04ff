"""Windows in a flow over real brokers with in-flight limits: 0 lost, 0 counted twice.

The scenario of the first-hour report: event-time tumbling windows of about 100 events,
``idle_timeout`` set, over a source whose broker delivers at most fewer unacknowledged
messages than a window holds. Before rxflow knew of in-flight limits the flow stalled at
the limit, read the stall as idleness, and dropped *and acknowledged* what came next as late.
Now the first run fails at once with InFlightLimitError, having acknowledged nothing it did
not write, and a second run with room for a window counts every event exactly once.
tests/test_in_flight_limits.py tells the same story in virtual time.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import anyio
import pytest

from rxflow import Flow, tumbling
from rxflow.errors import InFlightLimitError
from rxflow.windows import Window
from tests.connectors.conftest import require_service

pytestmark = pytest.mark.anyio

EVENTS = 300  # 100 a second of event time: 1-second windows of 100
SourceFactory = Callable[[int], AbstractAsyncContextManager[Any]]


def events() -> list[dict[str, float]]:
    return [{"n": n, "t": n / 100} for n in range(EVENTS)]


def windows() -> Any:
    return tumbling(1.0, timestamp=lambda m: m.value["t"], idle_timeout=0.5)


def counted(written: list[Window]) -> dict[int, int]:
    counts: dict[int, int] = {}
    for window in written:
        for message in window.items:
            counts[int(message.value["n"])] = counts.get(int(message.value["n"]), 0) + 1
    return counts


async def fails_at_the_limit(source: AbstractAsyncContextManager[Any]) -> list[Window]:
    """Run 1: a window needs 100 messages in flight, the broker allows 40."""
    written: list[Window] = []
    flow = Flow("too-small").source(source).pipe(windows()).sink(written.append)
    with anyio.fail_after(30), pytest.raises(InFlightLimitError, match="40 unacknowledged"):
        await flow.run()
    return written


async def counts_every_event_once(source: AbstractAsyncContextManager[Any]) -> dict[int, int]:
    """Run 2: room for a window; runs until every event is written, then stops."""
    written: list[Window] = []
    all_written = anyio.Event()

    def write(window: Window) -> None:
        written.append(window)
        if sum(len(w) for w in written) >= EVENTS:
            all_written.set()

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            handle = Flow("roomy").source(source).pipe(windows()).sink(write).start(tg)
            await all_written.wait()
            handle.stop()
    snapshot = handle.snapshot()
    assert snapshot["tumbling"].dropped == 0  # nothing was taken for late
    return counted(written)


async def test_jetstream(anyio_backend: str) -> None:
    from rxflow.connectors.nats import jetstream_sink, jetstream_source

    host, port = require_service("nats")
    url = f"nats://{host}:{port}"
    name = f"INFLIGHT{uuid.uuid4().hex[:8]}"
    subject = f"{name.lower()}.events"
    async with jetstream_sink(url, subject, stream=name, create=True) as sink:
        await sink.send_batch(events())

    def source(max_ack_pending: int, durable: str) -> AbstractAsyncContextManager[Any]:
        return jetstream_source(
            url, name, subject, durable, codec="json", max_ack_pending=max_ack_pending
        )

    async with source(40, "small") as probe:
        assert probe.in_flight_limit.count == 40
    written = await fails_at_the_limit(source(40, "small"))
    assert written == []
    async with source(40, "small") as again:
        info = await again.consumer_info()
    assert info.ack_floor.stream_seq == 0  # acknowledged nothing: every event comes again
    assert await counts_every_event_once(source(1000, "roomy")) == dict.fromkeys(range(EVENTS), 1)


async def test_rabbitmq(anyio_backend: str) -> None:
    from rxflow.connectors.rabbitmq import rabbitmq_sink, rabbitmq_source

    host, port = require_service("rabbitmq")
    url = f"amqp://guest:guest@{host}:{port}/"
    queue = f"rxflow-inflight-{uuid.uuid4().hex[:8]}"

    def source(prefetch: int) -> AbstractAsyncContextManager[Any]:
        return rabbitmq_source(url, queue, codec="json", prefetch=prefetch, durable=False)

    async with source(40):  # declares the queue
        pass
    async with rabbitmq_sink(url, routing_key=queue) as sink:
        await sink.send_batch(events())
    assert await fails_at_the_limit(source(40)) == []
    # Nothing was acknowledged: the broker has every event to deliver again.
    assert await counts_every_event_once(source(1000)) == dict.fromkeys(range(EVENTS), 1)


async def test_mqtt(anyio_backend: str) -> None:
    from rxflow.connectors.mqtt import mqtt_sink, mqtt_source

    host, port = require_service("mqtt")
    url = f"mqtt://{host}:{port}"
    topic = f"rxflow/inflight/{uuid.uuid4().hex[:8]}"
    client_id = f"rxflow-inflight-{uuid.uuid4().hex[:8]}"  # a persistent session

    def source(receive_maximum: int) -> AbstractAsyncContextManager[Any]:
        return mqtt_source(
            url, topic, client_id=client_id, receive_maximum=receive_maximum, codec="json"
        )

    async with source(40):  # the session subscribes; the broker keeps what comes for it
        pass
    async with mqtt_sink(url, topic) as sink:
        await sink.send_batch(events())
    assert await fails_at_the_limit(source(40)) == []
    # Unacked messages stay with the session: the next connection gets every event.
    assert await counts_every_event_once(source(1000)) == dict.fromkeys(range(EVENTS), 1)


async def test_redis_streams_have_no_limit_and_reclaim_nothing_in_hand(
    anyio_backend: str,
) -> None:
    # Redis sets no in-flight limit, but claim_idle_ms re-delivers entries pending longer
    # than that: windows hold theirs for about a second, far longer than 100 ms.
    import redis

    from rxflow.connectors.redis import redis_stream_source

    host, port = require_service("redis")
    client = redis.Redis(host=host, port=port)
    name = f"rxflow-inflight-{uuid.uuid4().hex[:8]}"
    try:
        for event in events():
            client.xadd(name, {"data": json.dumps(event)})
        source = redis_stream_source(
            f"redis://{host}:{port}/0", name, "g", "w1", codec="json", claim_idle_ms=100
        )
        assert await counts_every_event_once(source) == dict.fromkeys(range(EVENTS), 1)
        assert int(client.xpending(name, "g")["pending"]) == 0
    finally:
        client.delete(name)
        client.close()


async def test_postgres_outbox_has_no_limit(anyio_backend: str) -> None:
    from rxflow.connectors.postgres import postgres_table_source
    from tests.connectors.test_postgres import admin_connection

    host, port = require_service("postgresql")
    dsn = f"postgresql://postgres@{host}:{port}/test"
    table = f"rxflow_inflight_{uuid.uuid4().hex[:8]}"
    async with admin_connection(dsn) as admin:
        await admin.execute(f'CREATE TABLE "{table}" (id bigserial PRIMARY KEY, payload text)')
        try:
            values = ", ".join(f"('{json.dumps(event)}')" for event in events())
            await admin.execute(f'INSERT INTO "{table}" (payload) VALUES {values}')
            source = postgres_table_source(
                dsn, table, id_column="id", value_column="payload", codec="json",
                poll_interval=0.05,
            )  # fmt: skip
            assert await counts_every_event_once(source) == dict.fromkeys(range(EVENTS), 1)
            assert await admin.fetchval(f'SELECT count(*) FROM "{table}"') == 0  # all acked
        finally:
            with anyio.CancelScope(shield=True):
                await admin.execute(f'DROP TABLE "{table}"')
