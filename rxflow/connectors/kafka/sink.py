"""The Kafka sink: :func:`kafka_sink` produces items to a topic, each batch confirmed by the
broker (``acks="all"``), on the connector kit's :class:`~rxflow.connectors._kit.BrokerSink`."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any, Final, Literal, NamedTuple

from rxflow._checks import check_count, check_name
from rxflow.connectors._asyncio_host import AsyncioHost
from rxflow.connectors._extras import requires_extra
from rxflow.connectors._kit import BrokerSink
from rxflow.connectors.codecs import EncoderSpec, sink_encoder
from rxflow.connectors.kafka._client import (
    CONNECTION_ERRORS,
    Bootstrap,
    ClientOptions,
    client_options,
    started,
    unavailable,
)
from rxflow.errors import RecordsRefusedError

with requires_extra("kafka"):
    import aiokafka  # type: ignore[import-untyped]  # no py.typed
    import aiokafka.errors  # type: ignore[import-untyped]

__all__ = ["DEFAULT_SINK_BATCH", "KafkaSink", "Written", "kafka_sink"]

DEFAULT_SINK_BATCH: Final = 500
DEFAULT_MAX_BATCH_BYTES: Final = 1024 * 1024

Key = str | bytes | None
KeySpec = Key | Callable[[Any], Key]
"""A record's key: one for every item, or a function of the item (``None``: no key)."""
PartitionSpec = int | Callable[[Any], int | None] | None
"""A record's partition: one for every item, or a function of the item; ``None`` lets the
producer choose (by the key's hash, as every Kafka client does)."""
HeadersSpec = Mapping[str, str | bytes] | Callable[[Any], Mapping[str, str | bytes] | None] | None
"""A record's headers: the same for every item, or a function of the item."""
Timestamp = float | datetime.datetime | None
TimestampSpec = Callable[[Any], Timestamp] | None
"""A record's timestamp (seconds since the epoch, or an aware ``datetime``) as a function
of the item; ``None``: the time it is produced."""


class Written(NamedTuple):
    """Where Kafka stored a record: its partition and offset."""

    partition: int
    offset: int


class _Record(NamedTuple):
    """A record ready for ``producer.send``: everything computed on the caller's side."""

    value: bytes
    key: bytes | None
    partition: int | None
    headers: list[tuple[str, bytes]] | None
    timestamp_ms: int | None


def _key_bytes(where: str, key: object) -> bytes | None:
    if key is None or isinstance(key, bytes):
        return key
    if isinstance(key, str):
        return key.encode("utf-8")
    if isinstance(key, bytearray | memoryview):
        return bytes(key)
    raise TypeError(
        f"{where}: a key must be str, bytes or None, got {type(key).__name__} {key!r:.60}; "
        "make the key function return str(...) of it"
    )


def _header_list(where: str, headers: object) -> list[tuple[str, bytes]] | None:
    if headers is None:
        return None
    if not isinstance(headers, Mapping):
        raise TypeError(
            f"{where}: headers must be a mapping of names to str or bytes, got "
            f"{type(headers).__name__}"
        )
    listed: list[tuple[str, bytes]] = []
    for name, value in headers.items():
        if not isinstance(name, str):
            raise TypeError(f"{where}: a header's name must be str, got {name!r:.60}")
        if isinstance(value, str):
            listed.append((name, value.encode("utf-8")))
        elif isinstance(value, bytes | bytearray | memoryview):
            listed.append((name, bytes(value)))
        else:
            raise TypeError(
                f"{where}: header {name!r} must be str or bytes, got {type(value).__name__}"
            )
    return listed


def _timestamp_ms(where: str, timestamp: object) -> int | None:
    if timestamp is None:
        return None
    if isinstance(timestamp, datetime.datetime):
        if timestamp.tzinfo is None:
            raise ValueError(
                f"{where}: a timestamp datetime must be aware (tzinfo set), got {timestamp!r}"
            )
        return round(timestamp.timestamp() * 1000)
    if isinstance(timestamp, int | float) and not isinstance(timestamp, bool):
        return round(timestamp * 1000)
    raise TypeError(
        f"{where}: a timestamp must be seconds since the epoch or an aware datetime, got "
        f"{type(timestamp).__name__}"
    )


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark a send's outcome as seen (its batch's call was cancelled: nobody else will)."""
    if not future.cancelled():
        future.exception()


class _Producing:
    """The sink's :class:`~rxflow.connectors._kit.Publisher`: computes each record's key,
    partition, headers and timestamp on the caller's side, then hands the whole batch to
    the producer in one call on the client's loop, which appends every record to the
    producer's batches before waiting for the broker's acknowledgements. It returns each
    record's outcome: where it was stored, or why not."""

    def __init__(
        self,
        where: str,
        host: AsyncioHost,
        producer: Any,
        topic: str,
        key: KeySpec,
        partition: PartitionSpec,
        headers: HeadersSpec,
        timestamp: TimestampSpec,
    ) -> None:
        self._where, self._host, self._producer, self._topic = where, host, producer, topic
        self._key, self._partition, self._headers, self._timestamp = (
            key,
            partition,
            headers,
            timestamp,
        )
        # The fixed parts, computed once.
        self._fixed_key = None if callable(key) else _key_bytes(where, key)
        self._fixed_headers = None if callable(headers) else _header_list(where, headers)

    def _record(self, value: bytes, item: Any) -> _Record:
        where = self._where
        key = _key_bytes(where, self._key(item)) if callable(self._key) else self._fixed_key
        partition = self._partition(item) if callable(self._partition) else self._partition
        if partition is not None and (
            not isinstance(partition, int) or isinstance(partition, bool) or partition < 0
        ):
            raise TypeError(
                f"{where}: a partition must be an int >= 0 or None, got {partition!r:.60}"
            )
        if callable(self._headers):
            headers = _header_list(where, self._headers(item))
        else:
            headers = self._fixed_headers
        stamp = None if self._timestamp is None else _timestamp_ms(where, self._timestamp(item))
        return _Record(value, key, partition, headers, stamp)

    async def publish(self, records: Sequence[tuple[bytes, Any]]) -> list[Written | BaseException]:
        if not records:
            return []
        record = self._record
        prepared = [record(value, item) for value, item in records]
        outcomes: list[Written | BaseException] = await self._host.call(self._send_all, prepared)
        return outcomes

    async def _send_all(self, prepared: list[_Record]) -> list[Written | BaseException]:
        """On the client's loop: every record into the producer's batches (``send`` waits
        only when a partition's batch is full), then wait for every acknowledgement."""
        producer, topic = self._producer, self._topic
        partitions = await producer.partitions_for(topic)
        sending: list[asyncio.Future[Any] | BaseException] = []
        for value, key, partition, headers, stamp in prepared:
            if partition is not None and partition not in partitions:
                sending.append(
                    ValueError(
                        f"topic {topic!r} has no partition {partition} (it has "
                        f"{len(partitions)}: 0 to {len(partitions) - 1})"
                    )
                )
                continue
            try:
                future = await producer.send(
                    topic, value, key=key, partition=partition, timestamp_ms=stamp, headers=headers
                )
            except aiokafka.errors.KafkaError as error:  # too large, buffer full
                sending.append(error)
            else:
                sending.append(future)
        futures = [future for future in sending if isinstance(future, asyncio.Future)]
        try:
            if futures:
                await asyncio.wait(futures)
        except asyncio.CancelledError:
            for future in futures:  # sent all the same; nobody will look at them
                future.add_done_callback(_retrieve)
            raise
        outcomes: list[Written | BaseException] = []
        for sent in sending:
            if isinstance(sent, BaseException):
                outcomes.append(sent)
            elif (failure := sent.exception()) is not None:
                outcomes.append(failure)
            else:
                metadata = sent.result()
                outcomes.append(Written(metadata.partition, metadata.offset))
        return outcomes


class KafkaSink(BrokerSink[Any, list[Written | BaseException]]):
    """What :func:`kafka_sink` yields: ``send``/``send_batch`` produce records to a topic
    and return once the broker acknowledged every one.

    A batch is sent together: every record goes into the producer's per-partition batches
    first, then the call waits for the broker's acknowledgements, so a batch costs about
    one round trip per partition leader, not one per record.

    **Records the broker refuses.** Kafka stores or refuses each record on its own. When
    some records of a batch fail, the others are stored all the same, and ``send_batch``
    raises once every record has its answer:
    :class:`~rxflow.errors.ServiceUnavailableError` if a record failed because the cluster
    could not be reached (a timeout, a lost connection), else
    :class:`~rxflow.errors.RecordsRefusedError`, which lists each refused item with its
    cause (``refused``). In both cases, a ``list`` passed to ``send_batch`` is narrowed in
    place to the items that failed, so that a :class:`rxflow.Flow` sink's ``on_error``
    acts on those only: ``Retry`` sends only them again, ``Skip`` leaves out only them,
    ``DeadLetter`` hands over a :class:`~rxflow.strategies.Failure` whose ``item`` is the
    list of them, and the stored records are neither sent twice nor lost.

    Attributes:
        batch_size: how many items a :class:`rxflow.Flow` hands to ``send_batch`` at once.
        topic: where it produces.
        sent: records the broker acknowledged so far.

    Example:
        With a Kafka broker running::

            async with kafka_sink("localhost:9092", "totals", key=lambda t: t["user"]) as out:
                partition, offset = await out.send({"user": "ada", "total": 3})
                await out.send_batch([{"user": "bob", "total": 4}])
    """

    def __init__(
        self,
        producing: _Producing,
        encoder: Callable[[Any], bytes],
        *,
        options: ClientOptions,
        topic: str,
        batch_size: int,
        name: str,
    ) -> None:
        super().__init__(producing, encoder, batch_size=batch_size, name=name)
        self._options = options
        self.topic = topic
        self.sent = 0

    async def send(self, item: Any) -> Written:  # type: ignore[override]
        """Produce one record; returns where the broker stored it."""
        (written,) = await self.send_batch([item])
        return written

    async def send_batch(self, items: Sequence[Any]) -> list[Written]:  # type: ignore[override]
        """Produce one record per item; return where each was stored, once the broker
        acknowledged all of them. On a failure, see the class's docstring: the stored
        records stay stored, a list is narrowed to the failed items, and the error says why
        each failed."""
        try:
            outcomes = await super().send_batch(items)
        except CONNECTION_ERRORS as error:  # the whole batch: the topic's metadata
            raise unavailable(self._options, error, "did not answer") from error
        failed = [(at, o) for at, o in enumerate(outcomes) if isinstance(o, BaseException)]
        self.sent += len(outcomes) - len(failed)
        if not failed:
            return outcomes  # type: ignore[return-value]  # every one is Written
        refused = [(items[at], error) for at, error in failed]
        if isinstance(items, list):
            items[:] = [item for item, _ in refused]
        stored = len(outcomes) - len(failed)
        lost = [error for _, error in failed if isinstance(error, CONNECTION_ERRORS)]
        if lost:
            what = f"did not confirm {len(failed)} of {len(outcomes)} records"
            raise unavailable(self._options, lost[0], what) from lost[0]
        raise RecordsRefusedError(
            f"{self.name}: kafka refused {len(failed)} of {len(outcomes)} records ({stored} "
            f"stored); the first: {failed[0][1]!r}",
            refused=refused,
            stored=stored,
        ) from failed[0][1]


@contextlib.asynccontextmanager
async def kafka_sink(
    bootstrap: Bootstrap,
    topic: str,
    *,
    key: KeySpec = None,
    partition: PartitionSpec = None,
    headers: HeadersSpec = None,
    timestamp: TimestampSpec = None,
    encoder: EncoderSpec = "auto",
    batch_size: int = DEFAULT_SINK_BATCH,
    linger_ms: int = 0,
    max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
    acks: Literal["all", 1] = "all",
    compression: Literal["gzip", "snappy", "lz4", "zstd"] | None = None,
    request_timeout_ms: int = 40_000,
    client_id: str | None = None,
    security_protocol: str = "PLAINTEXT",
    sasl_mechanism: str | None = None,
    sasl_plain_username: str | None = None,
    sasl_plain_password: str | None = None,
    ssl_context: Any = None,
) -> AsyncIterator[KafkaSink]:
    """Produce items to a Kafka topic; each batch returns once the broker acknowledged
    every record (``acks="all"``: every in-sync replica has it).

    Args:
        bootstrap: the cluster, ``"host:port"`` (several separated by commas, or a list).
        topic: where to produce.
        key: each record's key: a ``str`` (UTF-8), ``bytes`` or ``None`` for every item,
            or a function of the item that returns one. Records with the same key go to
            the same partition (the Java client's murmur2 hash), which is what keyed
            processing downstream relies on.
        partition: each record's partition: an ``int`` or a function of the item (``None``
            from it: chosen by the key). A partition the topic does not have refuses
            that record.
        headers: each record's headers, a mapping of names to ``str`` (UTF-8) or
            ``bytes``, or a function of the item that returns one (or ``None``).
        timestamp: a function of the item that returns the record's time (seconds since
            the epoch, or an aware ``datetime``), such as an event time; by default the
            time it is produced.
        encoder: how an item becomes the record's value: ``"auto"`` (bytes as they are,
            ``str`` as UTF-8, anything else as JSON), ``"bytes"``, ``"text"``, ``"json"``,
            a record class, or a function ``item -> bytes`` (:mod:`rxflow.connectors.codecs`).
        batch_size: how many items a :class:`rxflow.Flow` hands to ``send_batch`` at once.
        linger_ms: how long the producer waits for more records before sending a
            partition's batch. A ``send_batch`` hands over its whole batch at once, so 0
            (the default) loses nothing; raise it when many tasks call ``send`` at once.
        max_batch_bytes: the most bytes of one partition's batch in one request.
        acks: ``"all"`` (the default: every in-sync replica stored it) or ``1`` (the
            partition's leader did).
        compression: compress batches with this codec (its library must be installed).
        request_timeout_ms: how long a record may wait for its acknowledgement before it
            fails with :class:`~rxflow.errors.ServiceUnavailableError`.
        client_id: the client's name in the broker's logs.
        security_protocol: ``"PLAINTEXT"``, ``"SSL"``, ``"SASL_PLAINTEXT"`` or ``"SASL_SSL"``.
        sasl_mechanism: ``"PLAIN"`` (the default under SASL), ``"SCRAM-SHA-256"`` or
            ``"SCRAM-SHA-512"``.
        sasl_plain_username: the SASL user.
        sasl_plain_password: the SASL password (never shown in errors or logs).
        ssl_context: an :class:`ssl.SSLContext` for ``SSL``/``SASL_SSL`` (by default, the
            system's trusted CAs).

    Delivery is at-least-once: the producer sends a record again after a lost answer, and
    a flow whose sink failed sends its batch again when it runs again, so a record may be
    stored twice (the idempotent producer is not used: it needs broker support that not
    every Kafka-protocol broker has). A record refused, or not confirmed, fails the batch
    once every record has its answer (see :class:`KafkaSink`: ``on_error`` then acts on
    the failed records only).

    Example:
        With a Kafka broker running::

            async with kafka_sink(
                "localhost:9092", "clicks", key=lambda click: click["user"], encoder="json"
            ) as clicks:
                await clicks.send_batch([{"user": "ada", "page": "/"}])
    """
    where = f"kafka_sink({topic!r})"
    check_name(where, "topic", topic)
    check_count(where, "batch_size", batch_size)
    check_count(where, "linger_ms", linger_ms, minimum=0)
    check_count(where, "max_batch_bytes", max_batch_bytes)
    check_count(where, "request_timeout_ms", request_timeout_ms)
    if acks not in ("all", 1):
        raise ValueError(f"{where}: acks must be 'all' or 1, not {acks!r}")
    for name, spec in (("key", key), ("partition", partition), ("headers", headers)):
        if spec is not None and not callable(spec):
            checks = {"key": str | bytes, "partition": int, "headers": Mapping}
            if not isinstance(spec, checks[name]) or isinstance(spec, bool):
                raise TypeError(
                    f"{where}: {name} must be a value or a function of the item, got {spec!r:.60}"
                )
    if timestamp is not None and not callable(timestamp):
        raise TypeError(f"{where}: timestamp must be a function of the item, got {timestamp!r}")
    encode = sink_encoder(where, encoder)
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

    def make() -> Any:
        return aiokafka.AIOKafkaProducer(
            **options,
            acks=acks,
            linger_ms=linger_ms,
            max_batch_size=max_batch_bytes,
            max_request_size=max(max_batch_bytes, DEFAULT_MAX_BATCH_BYTES),
            compression_type=compression,
            request_timeout_ms=request_timeout_ms,
            enable_idempotence=False,
        )

    async with AsyncioHost() as host, started(host, make, options) as producer:
        producing = _Producing(where, host, producer, topic, key, partition, headers, timestamp)
        yield KafkaSink(
            producing, encode, options=options, topic=topic, batch_size=batch_size, name=where
        )
