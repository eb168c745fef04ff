"""Kafka: a consumer-group source and a producer sink, on aiokafka (the ``[kafka]`` extra).

(Being written: the source and the sink land in this package's ``source`` and ``sink``
modules; ``_client`` holds what they share.)
"""

from __future__ import annotations

from rxflow.connectors.kafka.sink import KafkaSink, kafka_sink

__all__ = ["KafkaSink", "kafka_sink"]
