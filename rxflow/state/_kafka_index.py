"""Where a Kafka changelog scope's newest snapshot starts, and the records before it:
the offset committed for it in the namespace's index group (:class:`Index`), and Kafka's
DeleteRecords where the brokers offer it."""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from rxflow.connectors._asyncio_host import AsyncioHost
from rxflow.connectors._extras import requires_extra
from rxflow.connectors.kafka._client import CONNECTION_ERRORS, ClientOptions, started

with requires_extra("kafka"):
    import aiokafka  # type: ignore[import-untyped]  # no py.typed
    import aiokafka.admin  # type: ignore[import-untyped]
    import aiokafka.errors  # type: ignore[import-untyped]

__all__ = ["Index", "index_group"]

logger = logging.getLogger("rxflow.state")


def index_group(namespace: str) -> str:
    """The consumer group whose committed offset of a changelog partition says where the
    newest snapshot of the scope that holds the partition alone starts."""
    return f"rxflow-changelog-{namespace}"


class Index:
    """An open store's index consumers (one per namespace, made when first needed, closed
    with ``stack``) and its deletions."""

    def __init__(
        self,
        host: AsyncioHost,
        stack: contextlib.AsyncExitStack,
        options: ClientOptions,
        *,
        within: float,
        timeout: float,
        description: str,
    ) -> None:
        self._host, self._stack, self._options = host, stack, options
        self._within, self._timeout, self._description = within, timeout, description
        self._consumers: dict[str, Any] = {}
        self.deletes = True
        """Whether to delete records before a snapshot: until the brokers fail it once."""

    async def consumer(self, namespace: str) -> Any:
        """The consumer of the namespace's index group (made the first time)."""
        consumer = self._consumers.get(namespace)
        if consumer is None:
            options, group = self._options, index_group(namespace)
            timeout_ms = round(self._timeout * 1000)

            def make() -> Any:  # (it commits and fetches offsets, never records)
                kind = aiokafka.AIOKafkaConsumer
                timeouts = {"request_timeout_ms": timeout_ms}
                return kind(**options, group_id=group, enable_auto_commit=False, **timeouts)

            made = started(self._host, make, options, within=self._within)
            consumer = await self._stack.enter_async_context(made)
            self._consumers[namespace] = consumer
        return consumer

    async def delete_before(
        self, admin: Any, lock: Any, topic: str, partition: int, offset: int
    ) -> None:
        """The partition's records before ``offset`` deleted with Kafka's DeleteRecords,
        unless the brokers failed it before; the first failure is logged (INFO), and no
        deletion is tried again."""
        if not self.deletes:
            return
        where = aiokafka.TopicPartition(topic, partition)
        request = {where: aiokafka.admin.RecordsToDelete(before_offset=offset)}
        timeout_ms = round(self._timeout * 1000)
        try:
            # Under the topics' lock: a broker without DeleteRecords (tansu) closes the
            # admin client's connection, which would fail a request on it meanwhile.
            async with lock:
                await self._host.call(admin.delete_records, request, timeout_ms)
        except (aiokafka.errors.KafkaError, *CONNECTION_ERRORS) as error:
            self.deletes = False
            logger.info(
                "%s: the brokers did not delete the records before a snapshot (%s); the "
                "changelog keeps them, and loads start at the newest snapshot",
                self._description,
                self._options.scrub(repr(error)),
            )
