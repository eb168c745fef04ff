"""Redis Streams: a consumer-group source and an ``XADD`` sink, on redis-py's asyncio client.

The source reads a stream as one consumer of a consumer group (``XREADGROUP``), so several
workers running the same pipeline share the stream: Redis hands each entry to one of them.
It reads only when its consumer asks for more, at most ``batch`` entries at a time, so a slow
consumer means fewer reads and the group's other consumers get the rest. Each message is
settled with ``XACK``; an entry that is not acknowledged stays pending in the group and is
delivered again:

* to the same consumer, when it restarts (it first re-reads its own pending entries);
* to any consumer of the group, once the entry has been pending ``claim_idle_ms`` (default
  60 s) on a consumer that stopped (``XAUTOCLAIM``).

What a source read ahead and never handed out is handed back when it closes, even on a
graceful stop in the middle of a backlog: any worker's next claim takes it at once (it is
moved to the group's consumer :data:`RELEASED_CONSUMER`), and only what was taken and not
acknowledged stays pending on the consumer.

The sink appends entries with ``XADD``, a batch per pipelined round trip.

One idea per module: :func:`redis_stream_source` (:mod:`~rxflow.connectors.redis.source`)
is the connector kit's :class:`~rxflow.connectors._kit.BrokerSource` over a reader of the
group (``_group``: the reads and claims, the entries in hand, the release at close);
:func:`redis_stream_sink` (:mod:`~rxflow.connectors.redis.sink`) is the kit's
:class:`~rxflow.connectors._kit.BrokerSink` over pipelined ``XADD``; ``_client`` connects.

Under trio, every client call runs on an asyncio loop in a worker thread
(:class:`~rxflow.connectors._asyncio_host.AsyncioHost`); the API is the same.
"""

from __future__ import annotations

from rxflow.connectors.redis._group import RELEASED_CONSUMER
from rxflow.connectors.redis.sink import RedisStreamSink, redis_stream_sink
from rxflow.connectors.redis.source import (
    DEFAULT_CLAIM_IDLE_MS,
    RedisStreamSource,
    redis_stream_source,
)

__all__ = [
    "DEFAULT_CLAIM_IDLE_MS",
    "RELEASED_CONSUMER",
    "RedisStreamSink",
    "RedisStreamSource",
    "redis_stream_sink",
    "redis_stream_source",
]
