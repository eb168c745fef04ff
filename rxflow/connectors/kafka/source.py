"""The Kafka source: :func:`kafka_source` reads topics as one member of a consumer group, on
the connector kit's :class:`~rxflow.connectors._kit.BrokerSource`."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, ClassVar, Final, Literal

import anyio

from rxflow._checks import check_count, check_name, check_seconds
from rxflow._task_groups import background_tasks
from rxflow.connectors._asyncio_host import AsyncioHost
from rxflow.connectors._extras import requires_extra
from rxflow.connectors._kit import DEFAULT_READ_AHEAD_BYTES, BrokerSource
from rxflow.connectors.codecs import CodecSpec, DecodeFailure, DecodePolicy, Decoder
from rxflow.connectors.kafka._client import (
    CLOSE_TIMEOUT_S,
    CONNECT_TIMEOUT_S,
    Bootstrap,
    client_options,
    started,
)
from rxflow.connectors.kafka._reader import GroupMember, Handle
from rxflow.errors import ServiceUnavailableError
from rxflow.partitions import Partition

with requires_extra("kafka"):
    import aiokafka  # type: ignore[import-untyped]

__all__ = ["DEFAULT_BATCH", "DEFAULT_RECONNECT_TIMEOUT_S", "KafkaSource", "kafka_source"]

DEFAULT_BATCH: Final = 500
DEFAULT_RECONNECT_TIMEOUT_S: Final = 30.0
MAX_PARTITION_FETCH_BYTES: Final = 1024 * 1024  # aiokafka's default, capped by read-ahead
OFFSET_RESETS: Final = ("earliest", "latest", "none")


class KafkaSource(BrokerSource[Any, Handle]):
    """The async iterable :func:`kafka_source` yields: the group member's records as
    :class:`~rxflow.connectors.Message` records (the kit's
    :class:`~rxflow.connectors._kit.BrokerSource`: ``buffered``, ``buffered_bytes``,
    ``next_run()``, ``ack_many()``, ``link_many()``).

    Attributes:
        partitioned: True: a :class:`rxflow.Flow` runs keyed operators per partition
            (:func:`rxflow.partitions.per_partition`).
        topics, group_id: what it reads, and in which group.
        host: the :class:`~rxflow.connectors._asyncio_host.AsyncioHost` the client runs on.
        consumer: the aiokafka consumer (on :attr:`host`'s loop), for what this API lacks.

    Example (needs a Kafka broker)::

        async with kafka_source("localhost:9092", "orders", "billing") as orders:
            message = await anext(aiter(orders))
            print(message.partition, message.offset, message.key, message.value)
            await message.ack()
            print(orders.assignment, await orders.committed_offsets())
    """

    partitioned: ClassVar[bool] = True
    # A requeued record is read again in its place (its partition is sought back to it):
    # what was read ahead is given back, so that the next fetch reads in Kafka's order.
    requeue_rereads: ClassVar[bool] = True

    def __init__(
        self,
        member: GroupMember,
        decoder: Decoder,
        *,
        topics: tuple[str, ...],
        group_id: str,
        host: AsyncioHost,
        **bounds: Any,
    ) -> None:
        super().__init__(member, decoder, **bounds)
        self.member = member
        self.topics, self.group_id = topics, group_id
        self.host = host
        self.consumer = member.consumer

    @property
    def assignment(self) -> list[Partition]:
        """The partitions the group assigned to this member now: one
        :class:`~rxflow.partitions.Partition` per assignment (a partition assigned again
        after a rebalance is a new object; the old one is ``revoked``)."""
        return self.member.assignment

    @property
    def commit_failures(self) -> int:
        """Periodic commits the group refused (while rebalancing), tried again later."""
        return self.member.commit_failures

    async def commit(self) -> None:
        """Commit now what is committable (the source also does every
        ``commit_interval`` seconds, on revocation and at close)."""
        await self.member.commit()

    async def flush_acks(self) -> None:
        """Commit now what is committable, and raise
        :class:`~rxflow.errors.ServiceUnavailableError` if the group did not take the commit
        (it is rebalancing): a checkpointed :class:`rxflow.Flow` calls this after its acks,
        to know that the records a checkpoint covered will not be read again."""
        failures = self.member.commit_failures
        await self.member.commit()
        if self.member.commit_failures != failures:
            raise ServiceUnavailableError(
                f"{self.name}: the consumer group did not take the offset commit (it is "
                "rebalancing); the records stay uncommitted and the commit is tried again"
            )

    async def committed_offsets(self) -> dict[tuple[str, int], int]:
        """The offsets this member committed so far, by (topic, partition index): where
        the group's next reader of each partition starts."""
        return dict(self.member.committed)


async def _commit_every(member: GroupMember, interval: float) -> None:
    while True:
        await anyio.sleep(interval)
        await member.commit()


def _topics(where: str, topics: str | Sequence[str]) -> tuple[str, ...]:
    if isinstance(topics, str):
        check_name(where, "topics", topics)
        return (topics,)
    if not isinstance(topics, Sequence) or not topics:
        raise ValueError(
            f"{where}: topics must be a topic name or a non-empty list of them, got {topics!r}"
        )
    for topic in topics:
        check_name(where, "topic", topic)
    return tuple(topics)


@contextlib.asynccontextmanager
async def kafka_source(
    bootstrap: Bootstrap,
    topics: str | Sequence[str],
    group_id: str,
    *,
    codec: CodecSpec = "bytes",
    key_codec: Literal["text", "bytes"] = "text",
    on_decode_error: DecodePolicy = "raise",
    dead_letter: Callable[[DecodeFailure], Awaitable[object] | object] | None = None,
    batch: int = DEFAULT_BATCH,
    read_ahead_bytes: int = DEFAULT_READ_AHEAD_BYTES,
    commit_interval: float = 1.0,
    auto_offset_reset: Literal["earliest", "latest", "none"] = "earliest",
    client_id: str | None = None,
    session_timeout_ms: int = 10_000,
    heartbeat_interval_ms: int = 3_000,
    max_poll_interval_ms: int = 300_000,
    connect_timeout: float = CONNECT_TIMEOUT_S,
    reconnect_timeout: float = DEFAULT_RECONNECT_TIMEOUT_S,
    security_protocol: str = "PLAINTEXT",
    sasl_mechanism: str | None = None,
    sasl_plain_username: str | None = None,
    sasl_plain_password: str | None = None,
    ssl_context: Any = None,
) -> AsyncIterator[KafkaSource]:
    """Read Kafka topics as one member of consumer group ``group_id``.

    Workers that share ``group_id`` share the topics' partitions: Kafka gives each
    partition to one of them, and moves partitions when a worker joins or leaves (a
    rebalance). Every record of a key is in one partition, so keyed work done per partition
    is right on any number of workers: a :class:`rxflow.Flow` over this source runs its
    keyed operators and windows per partition by itself.

    Delivery is at-least-once. Offsets are committed per partition, in batches (every
    ``commit_interval`` seconds while something was settled, when a partition is revoked,
    and at close), each at the highest offset below which every record of the partition
    was acknowledged (acks may come in any order), and never inside the records of one
    output (see :meth:`~rxflow.connectors._kit.BrokerSource.link_many`). Records above it
    are read again by the partition's next reader. When a partition is revoked, its
    :class:`~rxflow.partitions.Partition` object is marked ``revoked``, records of it read
    ahead are not handed out, and later acks of its records are ignored (the new owner
    reads them again).

    Kafka has no per-record redelivery: ``nack()`` (a requeue) seeks the record's
    partition back to it, so it and every record after it in that partition are read
    again. ``nack(requeue=False)`` settles the record like an ack.

    Args:
        bootstrap: the brokers to start from, ``"host:port"`` (several separated by commas,
            or a list).
        topics: a topic, or a list of topics.
        group_id: the consumer group.
        codec: decodes the record's value: ``"bytes"``, ``"text"``, ``"json"``, a record
            class, an Avro reader or a function (:mod:`rxflow.connectors.codecs`). A record
            without a value (a tombstone) is handed out with value ``None``.
        key_codec: the record key as ``"text"`` (UTF-8) or ``"bytes"``; no key is ``None``.
        on_decode_error: ``"raise"``, ``"skip"`` or ``"dead_letter"``.
        dead_letter: the function given what fails to decode, with ``"dead_letter"``.
        batch: the most records one fetch takes, and held fetched and not handed out.
        read_ahead_bytes: at most this many value bytes fetched and not handed out, plus
            one record. The client's own fetches (``fetch_max_bytes``) are bounded by it
            too, as far as Kafka can (by whole record batches: what one brought past the
            bound is read again later), and between fetches the partitions are paused, so
            the client fetches nothing ahead.
        commit_interval: seconds between periodic commits.
        auto_offset_reset: where a partition without a committed offset starts:
            ``"earliest"``, ``"latest"``, or ``"none"`` (an error).
        client_id: the client's name in the brokers' logs.
        session_timeout_ms: a member silent for this long loses its partitions (Kafka's
            consumer setting of that name, as the next two).
        heartbeat_interval_ms: how often the member tells the group it is alive.
        max_poll_interval_ms: the longest a member may go between fetches and stay in.
        connect_timeout: seconds to reach the cluster at start.
        reconnect_timeout: seconds the source goes on without an answer from the cluster
            (the client reconnects meanwhile, and reading goes on where it stopped)
            before it raises ServiceUnavailableError.
        security_protocol: ``"PLAINTEXT"``, ``"SSL"``, ``"SASL_PLAINTEXT"`` or ``"SASL_SSL"``.
        sasl_mechanism: ``"PLAIN"``, ``"SCRAM-SHA-256"`` or ``"SCRAM-SHA-512"``.
        sasl_plain_username: the SASL user.
        sasl_plain_password: the SASL password (never shown in errors or logs).
        ssl_context: an ``ssl.SSLContext`` for ``SSL``/``SASL_SSL`` (default: the
            system's trusted CAs).

    Yields:
        a :class:`KafkaSource`: :class:`~rxflow.connectors.Message` records with ``key``,
        ``headers`` (text), ``timestamp`` (seconds), ``partition`` (the
        :class:`~rxflow.partitions.Partition`), ``offset``, ``identity`` ``(topic,
        partition, offset)`` and ``source`` ``"kafka:<topics>"``. Settle messages inside
        the block (after it, :class:`~rxflow.errors.SettledAfterCloseError`).

    Raises:
        ServiceUnavailableError: the cluster cannot be reached at start (within
            ``connect_timeout``) or refuses the credentials; or it was lost while reading
            and did not answer again within ``reconnect_timeout``. It names the bootstrap
            servers, never credentials.
        ValueError, TypeError: a bad argument.

    Example (needs a Kafka broker)::

        async with kafka_source(
            "localhost:9092", "clicks", "sessions", codec="json"
        ) as clicks:
            async with rxflow.open_pipe(clicks, ops.filter(lambda m: m.value["ok"])) as ok:
                async for message in ok:
                    await handle(message.value)
                    await message.ack()
    """
    where = "kafka_source()"
    names = _topics(where, topics)
    check_name(where, "group_id", group_id)
    for name, count in (
        ("batch", batch),
        ("read_ahead_bytes", read_ahead_bytes),
        ("session_timeout_ms", session_timeout_ms),
        ("heartbeat_interval_ms", heartbeat_interval_ms),
        ("max_poll_interval_ms", max_poll_interval_ms),
    ):
        check_count(where, name, count)
    check_seconds(where, "commit_interval", commit_interval)
    check_seconds(where, "connect_timeout", connect_timeout)
    check_seconds(where, "reconnect_timeout", reconnect_timeout)
    if key_codec not in ("text", "bytes"):
        raise ValueError(f"{where}: key_codec must be 'text' or 'bytes', not {key_codec!r}")
    if auto_offset_reset not in OFFSET_RESETS:
        raise ValueError(
            f"{where}: auto_offset_reset must be 'earliest', 'latest' or 'none', not "
            f"{auto_offset_reset!r}"
        )
    options = client_options(
        where,
        bootstrap,
        client_id=client_id,
        security_protocol=security_protocol,
        sasl_mechanism=sasl_mechanism,
        sasl_plain_username=sasl_plain_username,
        sasl_plain_password=sasl_plain_password,
        ssl_context=ssl_context,
    )
    decoder = Decoder(
        codec,
        on_decode_error=on_decode_error,
        dead_letter=dead_letter,
        source=f"kafka:{','.join(names)}",
    )
    async with AsyncioHost() as host:
        member = GroupMember(
            host,
            options,
            decoder.source,
            key_codec=key_codec,
            reconnect_timeout=reconnect_timeout,
        )

        def make_consumer() -> Any:
            consumer = aiokafka.AIOKafkaConsumer(
                group_id=group_id,
                enable_auto_commit=False,
                auto_offset_reset=auto_offset_reset,
                session_timeout_ms=session_timeout_ms,
                heartbeat_interval_ms=heartbeat_interval_ms,
                max_poll_interval_ms=max_poll_interval_ms,
                max_poll_records=batch,
                fetch_max_bytes=read_ahead_bytes,
                max_partition_fetch_bytes=min(MAX_PARTITION_FETCH_BYTES, read_ahead_bytes),
                **options,
            )
            member.consumer = consumer
            return consumer

        async def subscribe() -> None:
            # After start: start() would wait for the group's first assignment, which may
            # take a whole rebalance (the broker waits for the other members).
            member.consumer.subscribe(list(names), listener=member.listener())

        async with (
            started(host, make_consumer, options, within=connect_timeout),
            background_tasks() as tasks,
        ):
            await host.call(subscribe)
            try:
                async with KafkaSource(
                    member,
                    decoder,
                    topics=names,
                    group_id=group_id,
                    host=host,
                    read_ahead=batch,
                    read_ahead_bytes=read_ahead_bytes,
                    # The reader bounds each fetch's bytes itself (by read_ahead_bytes):
                    # the first fetch may ask for a whole batch, as the later ones do.
                    expected_size=max(1, read_ahead_bytes // batch),
                ) as source:
                    tasks.start_soon(_commit_every, member, commit_interval)
                    yield source
            finally:
                tasks.cancel_scope.cancel()
                # What was settled until the block ended, committed before the consumer
                # leaves the group (bounded: a lost cluster cannot hold the close).
                with anyio.move_on_after(CLOSE_TIMEOUT_S, shield=True):
                    await member.commit()
                    await member.prepare_to_leave()
