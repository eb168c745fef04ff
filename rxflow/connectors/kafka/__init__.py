"""Kafka: a consumer-group source and a producer sink, on aiokafka (the ``[kafka]`` extra).

The source (:func:`kafka_source`) reads topics as one member of a consumer group: Kafka
gives each partition to one member, so workers that share a ``group_id`` share the topics,
and every record of a key goes to one worker. Messages carry their
:class:`~rxflow.partitions.Partition` (one object per assignment, ``revoked`` once the
partition moves to another worker) and offset. It reads only when its consumer asks for
more, at most ``batch`` records at a time, and keeps its partitions paused between fetches,
so a slow consumer means fewer fetches, never a growing buffer. Offsets are committed per
partition, in batches, never past a record that was not acknowledged: at-least-once.

The sink (:func:`kafka_sink`) produces records and confirms a batch once the brokers
acknowledged every record of it (``acks=all``).

One idea per module: ``source`` (the kit's
:class:`~rxflow.connectors._kit.BrokerSource` over a group member), ``_reader`` (the group
member: fetching, settling, committing, the rebalance listener), ``_offsets`` (which offset
may be committed), ``sink``, and ``_client`` (options, start and stop, errors). Under trio,
every client call runs on an asyncio loop in a worker thread
(:class:`~rxflow.connectors._asyncio_host.AsyncioHost`); the API is the same.
"""

from __future__ import annotations

from rxflow.connectors.kafka._repartition import Repartition, kafka_repartition
from rxflow.connectors.kafka.sink import KafkaSink, kafka_sink
from rxflow.connectors.kafka.source import KafkaSource, kafka_source

__all__ = [
    "KafkaSink",
    "KafkaSource",
    "Repartition",
    "kafka_repartition",
    "kafka_sink",
    "kafka_source",
]
