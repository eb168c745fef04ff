"""Making and describing the Kafka changelog topics (:func:`changelog_partitions`)."""

from __future__ import annotations

import asyncio
from typing import Any, Final, NamedTuple

from rxflow.connectors._extras import requires_extra
from rxflow.errors import ServiceUnavailableError

with requires_extra("kafka"):
    import aiokafka.admin  # type: ignore[import-untyped]  # no py.typed

__all__ = ["TOPIC_CONFIGS", "Changelog", "Creation", "changelog_partitions"]

TOPIC_CONFIGS: Final = {"cleanup.policy": "delete", "retention.ms": "-1", "retention.bytes": "-1"}
"""Changelog topics keep every record (see :class:`~rxflow.state._kafka.KafkaChangelogStore`
for why)."""
DEFAULT_REPLICATION: Final = 3
TOPIC_ALREADY_EXISTS: Final = 36  # Kafka's error codes
UNKNOWN_TOPIC: Final = 3  # for a moment after a topic was made
LEADER_NOT_AVAILABLE: Final = 5  # likewise


class Changelog(NamedTuple):
    """A changelog topic, with the source topic and partition index a scope names."""

    topic: str
    source: str | None
    partition: int


class Creation(NamedTuple):
    """How a store makes changelog topics."""

    description: str
    """The store's, for errors."""
    partitions: int | None
    """As many partitions as this; ``None``: as the source topic (1 without one)."""
    replication: int | None
    """This replication; ``None``: 3, or the number of brokers if fewer."""
    timeout: float
    """Seconds a topic just made may stay unknown to the brokers."""


async def changelog_partitions(admin: Any, changelog: Changelog, creation: Creation) -> int:
    """On the admin client's loop: the changelog topic's number of partitions, made first
    if missing (a topic made meanwhile by another worker is taken as it is).

    Only topics that exist are described: on brokers that make topics on first use,
    describing a missing topic makes it, with their default partitions.
    """
    topic, source, index = changelog.topic, changelog.source, changelog.partition
    existing = set(await admin.list_topics())
    if topic not in existing:
        if creation.partitions is not None:
            count = creation.partitions
        elif source is None:
            count = 1
        elif source in existing:
            count = await partition_count(admin, source, creation)
        else:
            raise ValueError(
                f"{creation.description}: source topic {source!r} is not in this cluster, so "
                f"the changelog topic {topic!r} cannot be made with as many partitions; "
                "give KafkaChangelogStore(partitions=<the source topic's partitions>)"
            )
        replication = creation.replication
        if replication is None:  # (-1, the brokers' default, needs CreateTopics v4+)
            brokers = (await admin.describe_cluster())["brokers"]
            replication = max(1, min(DEFAULT_REPLICATION, len(brokers)))
        new = aiokafka.admin.NewTopic(
            topic, max(count, index + 1), replication, topic_configs=dict(TOPIC_CONFIGS)
        )
        response = await admin.create_topics([new])
        for _, code, message in response.topic_errors:
            if code not in (0, TOPIC_ALREADY_EXISTS):
                raise ServiceUnavailableError(
                    f"{creation.description} could not make the changelog topic {topic!r} "
                    f"(error {code}: {message}); make it yourself with cleanup.policy="
                    "delete and retention.ms=-1, or check the client's permissions"
                )
    return await partition_count(admin, topic, creation)


async def partition_count(admin: Any, topic: str, creation: Creation) -> int:
    """The topic's number of partitions, once the brokers tell it (a topic just made may
    be unknown, or without leaders, for a moment)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + creation.timeout
    while True:
        (described,) = await admin.describe_topics([topic])
        code, partitions = described["error_code"], described["partitions"]
        late = loop.time() > deadline
        if code == 0 and partitions:
            if late or all(p["error_code"] != LEADER_NOT_AVAILABLE for p in partitions):
                return len(partitions)
        elif code not in (UNKNOWN_TOPIC, LEADER_NOT_AVAILABLE) or late:
            raise ServiceUnavailableError(
                f"{creation.description} did not describe topic {topic!r} (error {code}); "
                "check that it exists and that the client may describe it"
            )
        await asyncio.sleep(0.1)
