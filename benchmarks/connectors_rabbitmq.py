"""RabbitMQ connector against raw aio-pika, on a local broker.

``consume_ack``: messages per second consumed and acknowledged one by one, through
``open_pipe(rabbitmq_source(...), ops.map(...))``, against the loop one writes with aio-pika
(``queue.iterator()``, ``json.loads``, ``await message.ack()``). Both consume with the same
prefetch and decode each body as JSON; before each run the queue is filled (not timed), and
the clock starts once the consumer's connection is open.

``publish``: messages per second published with ``rabbitmq_sink(...).send_batch`` against
``asyncio.gather`` of aio-pika's ``exchange.publish`` over the same batches, on a channel in
confirm mode: each batch waits for every broker confirm. Both publish persistent messages
to a durable queue, as the sink does.

Under trio, rxflow hosts aio-pika on an asyncio loop in a worker thread; the raw baseline
always runs on asyncio (aio-pika runs nowhere else), so the trio rows show the hosting cost.
Needs RabbitMQ at ``RXFLOW_RABBITMQ_URL`` (default ``amqp://guest:guest@127.0.0.1:5672/``).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import aio_pika
import anyio
from reactivex import operators as ops

from benchmarks._connectors import PAYLOAD, seconds_to_ack, seconds_to_send, value_of
from benchmarks._measure import BACKENDS, row
from rxflow import open_pipe
from rxflow.connectors.rabbitmq import rabbitmq_sink, rabbitmq_source

URL = os.environ.get("RXFLOW_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")
BATCH = 100
PREFETCH = 100


async def _on_channel(action: Callable[[Any], Any]) -> Any:
    connection = await aio_pika.connect(URL)
    try:
        return await action(await connection.channel(publisher_confirms=True))
    finally:
        await connection.close()


async def _fill(queue: str, count: int) -> None:
    async def fill(channel: Any) -> None:
        await channel.declare_queue(queue, durable=True)
        body = json.dumps(PAYLOAD).encode()
        for first in range(0, count, 1000):
            await asyncio.gather(
                *(
                    channel.default_exchange.publish(aio_pika.Message(body), routing_key=queue)
                    for _ in range(min(1000, count - first))
                )
            )

    await _on_channel(fill)


async def _delete(queue: str) -> None:
    await _on_channel(lambda channel: channel.queue_delete(queue))


async def consume_rxflow(queue: str, count: int) -> float:
    """Seconds to consume and ack ``count`` messages through a pipe."""
    async with (
        rabbitmq_source(URL, queue, codec="json", prefetch=PREFETCH) as source,
        open_pipe(source, ops.map(value_of)) as pipe,
    ):
        return await seconds_to_ack(pipe, count)


async def consume_raw(queue: str, count: int) -> float:
    """Seconds for the same with aio-pika by hand (asyncio only)."""
    connection = await aio_pika.connect(URL)
    try:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=PREFETCH)
        declared = await channel.declare_queue(queue, durable=True)
        started = time.perf_counter()
        seen = 0
        total = 0.0
        async with declared.iterator() as messages:
            async for message in messages:
                total += json.loads(message.body)["value"]
                await message.ack()
                seen += 1
                if seen == count:
                    break
        return time.perf_counter() - started
    finally:
        await connection.close()


def consume_ack(quick: bool) -> Iterator[dict[str, Any]]:
    count = 2_000 if quick else 20_000
    repeats = 2 if quick else 3
    queue = f"bench-{uuid.uuid4().hex[:8]}"

    def timed(run: Callable[[], float]) -> float:
        asyncio.run(_fill(queue, count))
        return run()

    try:
        raw = count / min(
            timed(lambda: asyncio.run(consume_raw(queue, count))) for _ in range(repeats)
        )
        for backend in BACKENDS:
            seconds = min(
                timed(lambda: anyio.run(consume_rxflow, queue, count, backend=backend))
                for _ in range(repeats)
            )
            yield row(
                "rabbitmq_consume_ack",
                backend,
                count,
                count / seconds,
                "raw_aio_pika_iterator_ack",
                raw,
                prefetch=PREFETCH,
            )
    finally:
        asyncio.run(_delete(queue))


async def publish_rxflow(queue: str, batches: list[list[dict[str, Any]]]) -> float:
    async with rabbitmq_sink(URL, routing_key=queue) as sink:
        return await seconds_to_send(sink, batches)


def persistent(body: bytes) -> aio_pika.Message:
    return aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT)


async def publish_raw(queue: str, batches: list[list[dict[str, Any]]]) -> float:
    connection = await aio_pika.connect(URL)
    try:
        channel = await connection.channel(publisher_confirms=True)
        exchange = channel.default_exchange
        started = time.perf_counter()
        for batch in batches:
            bodies = [json.dumps(item).encode() for item in batch]
            await asyncio.gather(
                *(exchange.publish(persistent(body), routing_key=queue) for body in bodies)
            )
        return time.perf_counter() - started
    finally:
        await connection.close()


def publish(quick: bool) -> Iterator[dict[str, Any]]:
    count = 2_000 if quick else 20_000
    repeats = 2 if quick else 3
    batches = [[PAYLOAD] * BATCH for _ in range(count // BATCH)]
    queue = f"bench-{uuid.uuid4().hex[:8]}"
    asyncio.run(_fill(queue, 0))  # declares it: the sink publishes mandatory
    try:
        raw = count / min(asyncio.run(publish_raw(queue, batches)) for _ in range(repeats))
        for backend in BACKENDS:
            seconds = min(
                anyio.run(publish_rxflow, queue, batches, backend=backend) for _ in range(repeats)
            )
            yield row(
                "rabbitmq_publish", backend, count, count / seconds, "raw_aio_pika_gather", raw
            )
    finally:
        asyncio.run(_delete(queue))


CASES: dict[str, Callable[[bool], Iterable[dict[str, Any]]]] = {
    "rabbitmq_consume_ack": consume_ack,
    "rabbitmq_publish": publish,
}

if __name__ == "__main__":
    import sys

    quick = "--full" not in sys.argv
    for case in CASES.values():
        for result in case(quick):
            print(json.dumps(result))
