"""NATS JetStream: a durable pull-consumer source and a publish-and-confirm sink, on nats-py.

The source reads a stream through a *durable pull consumer*. It asks JetStream for messages
only when its own consumer wants the next one and its last fetch is used up, at most
``batch`` at a time, so a slow consumer means fewer fetches and the messages it does not
take stay on the server for other workers. Several processes that open the same durable
share its messages: JetStream hands each one to one of them.

Each message is settled with ``msg.ack()`` (a nack is ``msg.nak()``, or ``msg.term()``
without requeue). A message that is not acknowledged within the consumer's ``ack_wait`` is
delivered again, to this or to another worker: that is what makes delivery at-least-once
when a worker dies or its connection drops.

The sink publishes to a subject and waits for JetStream's ``PubAck``: when ``send`` returns,
the message is stored in a stream.

Under trio, every client call runs on an asyncio loop in a worker thread
(:class:`~rxflow.connectors._asyncio_host.AsyncioHost`); the API is the same. The source
loop, read-ahead bounds and ack batching are the connector kit's
(:mod:`rxflow.connectors._kit`); this module holds JetStream's own calls.
"""

from __future__ import annotations

from rxflow.connectors.nats.sink import JetStreamSink, jetstream_sink
from rxflow.connectors.nats.source import JetStreamSource, jetstream_source

__all__ = ["JetStreamSink", "JetStreamSource", "jetstream_sink", "jetstream_source"]
