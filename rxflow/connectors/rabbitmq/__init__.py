"""RabbitMQ: a queue as a source with manual acks, an exchange as a sink with publisher confirms.

The client is aio-pika (asyncio only); under trio it runs on an :class:`AsyncioHost`.

Source: the broker pushes deliveries to a consumer, at most ``prefetch`` of them unacked at a
time (``basic.qos``). That window is the backpressure: while the pipeline holds ``prefetch``
unsettled messages the broker sends nothing more, so the local buffer never grows past it.
Each message is acked (``basic.ack``) or rejected (``basic.nack``) through its settlement;
whatever is unsettled when the source closes, or when its connection drops, goes back to the
queue and is delivered again, marked ``redelivered``. A message's ``identity`` is its AMQP
``message_id`` (the same on every redelivery), or what the source's ``identity=`` function
reads from it; a checkpointed :class:`rxflow.Flow` recognises by it a redelivered message
it has counted already. A message whose publisher set no ``message_id`` has none, and after
a crash may be counted twice: pass ``identity=`` if the id is elsewhere.

Sink: publishes on a channel in confirm mode, ``mandatory`` so that a message no queue would
take is an error rather than silently dropped; ``send`` and ``send_batch`` return once the
broker confirmed every message. Each message has a ``message_id``: the item's own with
``message_id=``, else a random UUID.

Example (needs a RabbitMQ server)::

    async with rabbitmq_source(
        "amqp://guest:guest@127.0.0.1:5672/", "orders", codec="json", prefetch=50
    ) as orders:
        async for message in orders:
            print(message.value)
            await message.ack()
"""

from __future__ import annotations

from rxflow.connectors.rabbitmq.sink import RabbitMQSink, rabbitmq_sink
from rxflow.connectors.rabbitmq.source import RabbitMQSettlement, RabbitMQSource, rabbitmq_source

__all__ = [
    "RabbitMQSettlement",
    "RabbitMQSink",
    "RabbitMQSource",
    "rabbitmq_sink",
    "rabbitmq_source",
]
