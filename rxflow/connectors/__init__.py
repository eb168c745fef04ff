"""Connectors: real systems as rxflow sources and sinks.

The contract every connector keeps:

* A **source** is an async context manager that yields an async iterable of
  :class:`Message` records. Pass it as it is to :func:`rxflow.open_pipe` or
  :class:`rxflow.Flow` (they enter it for as long as they run), or enter it yourself and
  read what it yields with ``async for``, or as an observable through
  :func:`rxflow.from_async_iterable`. It is pulled: a slow consumer means
  fewer reads or fetches from the system, never an unbounded local buffer (sources that
  cannot be paused, UDP and PostgreSQL NOTIFY, say what they do instead).
* A source takes a ``codec`` (``"bytes"``, ``"text"``, ``"json"`` or a function) and an
  ``on_decode_error`` policy (:mod:`rxflow.connectors.codecs`).
* A **sink** is an async context manager yielding an object with ``send(item)`` and
  ``send_batch(items)``; each returns once the system confirmed the write.
* Delivery is **at-least-once** where the system can acknowledge: a message is
  acknowledged after what was derived from it was confirmed (automatically in a
  :class:`rxflow.Flow`), and one that is not is delivered again by its system.

Each connector lives in its own module, and its client library is an optional extra
(``pip install 'rxflow[redis]'``). The names below import their module on first use, so
``import rxflow.connectors`` needs none of the clients.

Example:
    >>> from rxflow.connectors import Message
    >>> Message("hello").value
    'hello'
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from rxflow.connectors._message import BatchAcker, InFlightLimit, Message, Settlement
from rxflow.connectors.codecs import SKIPPED, DecodeFailure, Decoder

_LAZY = {
    "files": ("read_file", "follow_file", "file_sink"),
    "sockets": ("tcp_source", "tcp_server_source", "udp_source", "tcp_sink"),
    "process": ("process_source", "process_sink", "stdin_source", "stdout_sink"),
    "http": ("sse_source", "poll_source", "http_post_sink"),
    "nats": ("jetstream_source", "jetstream_sink"),
    "redis": ("redis_stream_source", "redis_stream_sink"),
    "mqtt": ("mqtt_source", "mqtt_sink"),
    "rabbitmq": ("rabbitmq_source", "rabbitmq_sink"),
    "postgres": ("postgres_listen_source", "postgres_table_source", "postgres_sink"),
    "kafka": ("kafka_source", "kafka_sink", "kafka_repartition"),
}
_MODULE_OF = {name: module for module, names in _LAZY.items() for name in names}

if TYPE_CHECKING:
    # What type checkers see: the real functions, with their signatures. At run time each
    # name imports its module on first use (below), so a missing extra fails only there.
    from rxflow.connectors.files import file_sink, follow_file, read_file
    from rxflow.connectors.http import http_post_sink, poll_source, sse_source
    from rxflow.connectors.kafka import kafka_repartition, kafka_sink, kafka_source
    from rxflow.connectors.mqtt import mqtt_sink, mqtt_source
    from rxflow.connectors.nats import jetstream_sink, jetstream_source
    from rxflow.connectors.postgres import (
        postgres_listen_source,
        postgres_sink,
        postgres_table_source,
    )
    from rxflow.connectors.process import process_sink, process_source, stdin_source, stdout_sink
    from rxflow.connectors.rabbitmq import rabbitmq_sink, rabbitmq_source
    from rxflow.connectors.redis import redis_stream_sink, redis_stream_source
    from rxflow.connectors.sockets import tcp_server_source, tcp_sink, tcp_source, udp_source


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'rxflow.connectors' has no attribute {name!r}")
    # A connector whose client is not installed raises MissingExtraError here, which
    # names the extra to install.
    imported = importlib.import_module(f"rxflow.connectors.{module}")
    return getattr(imported, name)


# Spelled out, not built from _LAZY: type checkers read __all__ to know what is exported.
__all__ = [
    "SKIPPED",
    "BatchAcker",
    "DecodeFailure",
    "Decoder",
    "InFlightLimit",
    "Message",
    "Settlement",
    "file_sink",
    "follow_file",
    "http_post_sink",
    "jetstream_sink",
    "jetstream_source",
    "kafka_repartition",
    "kafka_sink",
    "kafka_source",
    "mqtt_sink",
    "mqtt_source",
    "poll_source",
    "postgres_listen_source",
    "postgres_sink",
    "postgres_table_source",
    "process_sink",
    "process_source",
    "rabbitmq_sink",
    "rabbitmq_source",
    "read_file",
    "redis_stream_sink",
    "redis_stream_source",
    "sse_source",
    "stdin_source",
    "stdout_sink",
    "tcp_server_source",
    "tcp_sink",
    "tcp_source",
    "udp_source",
]
