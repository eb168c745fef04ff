"""MQTT connector against raw aiomqtt, on a local broker.

``consume_ack``: messages per second received at QoS 1 and acknowledged one by one, through
``open_pipe(mqtt_source(...), ops.map(...))``, against the loop one writes with aiomqtt and
paho's manual acks (``async for message in client.messages``, ``json.loads``,
``client._client.ack(mid, qos)``). Both use a persistent session with the same Receive
Maximum; before each run the session's queue is filled while it is offline (not timed), and
the clock starts once the connection and subscription are up. mosquitto keeps at most
``max_queued_messages`` (1000 by default) per offline session, so each run reads ``ROUND``
messages, several rounds per row.

``publish``: messages per second published at QoS 1 with ``mqtt_sink(...).send_batch``
against ``asyncio.gather`` of aiomqtt's ``publish`` over the same batches, each waiting for
every ``PUBACK``.

Under trio, rxflow hosts aiomqtt on an asyncio loop in a worker thread; the raw baseline
always runs on asyncio (aiomqtt runs nowhere else), so the trio rows show the hosting cost.
Needs an MQTT broker at ``RXFLOW_MQTT_HOST``:``RXFLOW_MQTT_PORT`` (default 127.0.0.1:1883).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import aiomqtt
import anyio
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from reactivex import operators as ops

from benchmarks._connectors import PAYLOAD, seconds_to_ack, seconds_to_send, value_of
from benchmarks._measure import BACKENDS, row
from rxflow import open_pipe
from rxflow.connectors.mqtt import mqtt_sink, mqtt_source

HOST = os.environ.get("RXFLOW_MQTT_HOST", "127.0.0.1")
PORT = int(os.environ.get("RXFLOW_MQTT_PORT", "1883"))
URL = f"mqtt://{HOST}:{PORT}"
BATCH = 100
RECEIVE_MAXIMUM = 100
ROUND = 900  # messages a run reads: below mosquitto's default max_queued_messages


def _raw_client(client_id: str, *, persistent: bool) -> aiomqtt.Client:
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    properties.ReceiveMaximum = RECEIVE_MAXIMUM
    if persistent:
        properties.SessionExpiryInterval = 600
    return aiomqtt.Client(
        HOST,
        PORT,
        identifier=client_id,
        protocol=aiomqtt.ProtocolVersion.V5,
        clean_start=not persistent,
        properties=properties,
    )


async def _subscribe_offline(topic: str, client_id: str) -> None:
    """Create the persistent session and its subscription, then leave it offline."""
    async with _raw_client(client_id, persistent=True) as client:
        await client.subscribe(topic, qos=1)


async def _fill(topic: str, count: int) -> None:
    async with mqtt_sink(URL, topic) as sink:
        for first in range(0, count, BATCH):
            await sink.send_batch([PAYLOAD] * min(BATCH, count - first))


async def _forget(client_id: str) -> None:
    async with _raw_client(client_id, persistent=False):
        pass  # a clean start without expiry ends the session


async def consume_rxflow(topic: str, client_id: str, count: int) -> float:
    """Seconds to receive and ack ``count`` messages through a pipe."""
    async with (
        mqtt_source(
            URL,
            topic,
            client_id=client_id,
            codec="json",
            receive_maximum=RECEIVE_MAXIMUM,
            session_expiry=600,
        ) as source,
        open_pipe(source, ops.map(value_of)) as pipe,
    ):
        return await seconds_to_ack(pipe, count)


async def consume_raw(topic: str, client_id: str, count: int) -> float:
    """Seconds for the same with aiomqtt and paho's manual acks (asyncio only)."""
    client = _raw_client(client_id, persistent=True)
    client._client.manual_ack_set(True)
    async with client:
        await client.subscribe(topic, qos=1)
        started = time.perf_counter()
        seen = 0
        total = 0.0
        async for message in client.messages:
            total += json.loads(message.payload)["value"]
            client._client.ack(message.mid, message.qos)
            seen += 1
            if seen == count:
                break
        return time.perf_counter() - started


def consume_ack(quick: bool) -> Iterator[dict[str, Any]]:
    rounds = 1 if quick else 5
    repeats = 2 if quick else 3
    topic = f"bench/{uuid.uuid4().hex[:8]}"
    client_id = f"bench-{uuid.uuid4().hex[:8]}"

    def seconds(run: Callable[[], float]) -> float:
        """Best of ``repeats`` totals over ``rounds`` filled rounds."""
        totals = []
        for _ in range(repeats):
            total = 0.0
            for _ in range(rounds):
                asyncio.run(_fill(topic, ROUND))
                total += run()
            totals.append(total)
        return min(totals)

    asyncio.run(_subscribe_offline(topic, client_id))
    try:
        count = rounds * ROUND
        raw = count / seconds(lambda: asyncio.run(consume_raw(topic, client_id, ROUND)))
        for backend in BACKENDS:
            rxflow = count / seconds(
                lambda: anyio.run(consume_rxflow, topic, client_id, ROUND, backend=backend)
            )
            yield row(
                "mqtt_consume_ack",
                backend,
                count,
                rxflow,
                "raw_aiomqtt_manual_ack",
                raw,
                receive_maximum=RECEIVE_MAXIMUM,
            )
    finally:
        asyncio.run(_forget(client_id))


async def publish_rxflow(topic: str, batches: list[list[dict[str, Any]]]) -> float:
    async with mqtt_sink(URL, topic) as sink:
        return await seconds_to_send(sink, batches)


async def publish_raw(topic: str, batches: list[list[dict[str, Any]]]) -> float:
    async with _raw_client(f"bench-{uuid.uuid4().hex[:8]}", persistent=False) as client:
        client.pending_calls_threshold = BATCH
        started = time.perf_counter()
        for batch in batches:
            payloads = [json.dumps(item).encode() for item in batch]
            await asyncio.gather(*(client.publish(topic, p, qos=1) for p in payloads))
        return time.perf_counter() - started


def publish(quick: bool) -> Iterator[dict[str, Any]]:
    count = 2_000 if quick else 20_000
    repeats = 2 if quick else 3
    batches = [[PAYLOAD] * BATCH for _ in range(count // BATCH)]
    topic = f"bench/{uuid.uuid4().hex[:8]}"  # no subscriber: the broker acks and drops
    raw = count / min(asyncio.run(publish_raw(topic, batches)) for _ in range(repeats))
    for backend in BACKENDS:
        seconds = min(
            anyio.run(publish_rxflow, topic, batches, backend=backend) for _ in range(repeats)
        )
        yield row("mqtt_publish", backend, count, count / seconds, "raw_aiomqtt_gather", raw)


CASES: dict[str, Callable[[bool], Iterable[dict[str, Any]]]] = {
    "mqtt_consume_ack": consume_ack,
    "mqtt_publish": publish,
}

if __name__ == "__main__":
    import sys

    quick = "--full" not in sys.argv
    for case in CASES.values():
        for result in case(quick):
            print(json.dumps(result))
