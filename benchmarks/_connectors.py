"""What the broker benchmarks (NATS, RabbitMQ, MQTT) measure on the rxflow side the same way:
the same payload, mapped the same way, acked or published in the same timed loop."""

from __future__ import annotations

import time
from collections.abc import AsyncIterable, Sequence
from typing import Any, Protocol

from rxflow.connectors import Message

PAYLOAD = {"sensor": "s-1", "value": 21.5}


class BatchSink(Protocol):
    async def send_batch(self, items: Sequence[Any]) -> Any: ...


def value_of(message: Message[Any]) -> Message[Any]:
    """The step of the measured pipe: a message with the reading's value only."""
    return message.with_value(message.value["value"])


async def seconds_to_ack(pipe: AsyncIterable[Message[Any]], count: int) -> float:
    """Seconds to take ``count`` messages out of ``pipe``, acking each; opening and closing
    the source are not timed."""
    started = time.perf_counter()
    seen = 0
    async for message in pipe:
        await message.ack()
        seen += 1
        if seen == count:
            return time.perf_counter() - started
    raise AssertionError("the pipe ended early")


async def seconds_to_send(sink: BatchSink, batches: Sequence[Sequence[Any]]) -> float:
    """Seconds for ``sink`` to send every batch, one after another (opening it not timed)."""
    started = time.perf_counter()
    for batch in batches:
        await sink.send_batch(batch)
    return time.perf_counter() - started
