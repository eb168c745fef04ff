"""The Kafka sink: :func:`kafka_sink` produces items to a topic, each batch confirmed by the
broker (``acks="all"``), on the connector kit's :class:`~rxflow.connectors._kit.BrokerSink`."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any, Final, Literal

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
from rxflow.connectors.kafka._producer import (
    HeadersSpec,
    KeySpec,
    Outcome,
    PartitionSpec,
    Producing,
    TimestampSpec,
    Written,
)
from rxflow.errors import RecordsRefusedError

with requires_extra("kafka"):
    import aiokafka  # type: ignore[import-untyped]  # no py.typed
    import aiokafka.errors  # type: ignore[import-untyped]

__all__ = ["DEFAULT_SINK_BATCH", "KafkaSink", "Written", "kafka_sink"]

DEFAULT_SINK_BATCH: Final = 500
DEFAULT_MAX_BATCH_BYTES: Final = 1024 * 1024
# A record whose broker could not be reached fails with one of these (NodeNotReadyError:
# the producer had no connection to the partition's leader until the record expired).
UNREACHABLE: Final = (*CONNECTION_ERRORS, aiokafka.errors.NodeNotReadyError)


class KafkaSink(BrokerSink[Any, Outcome]):
    """What :func:`kafka_sink` yields: ``send``/``send_batch`` produce records to a topic
    and return once the broker acknowledged every one.

    A batch is sent together: every record goes into the producer's per-partition batches
    first, then the call waits for the broker's acknowledgements, so a batch costs about
    one round trip per partition leader, not one per record.

    **Records the broker refuses.** Kafka stores or refuses each record on its own. When
    some records of a batch fail, the others are stored all the same, and ``send_batch``
    raises once every record has its answer: :class:`~rxflow.errors.RecordsRefusedError`,
    whose ``refused`` lists each failed item with its cause (a record that was not
    confirmed because the cluster could not be reached has a
    :class:`~rxflow.errors.ServiceUnavailableError` as its cause; one the broker refused,
    aiokafka's error; one sent to a partition the topic lacks, a ``ValueError``). A
    :class:`rxflow.Flow` sink's ``on_error`` then acts on the failed items only: ``Retry``
    sends only them again (when every cause is one of its ``on``), ``Skip`` leaves out
    only them, ``DeadLetter`` hands over a :class:`~rxflow.strategies.Failure` whose
    ``item`` is the list of them; the stored records are neither sent twice nor lost.
    When no record of the batch was confirmed because the cluster could not be reached,
    ``send_batch`` raises :class:`~rxflow.errors.ServiceUnavailableError` itself.

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
        producing: Producing,
        encoder: Callable[[Any], bytes],
        *,
        options: ClientOptions,
        topic: str,
        batch_size: int,
        name: str,
    ) -> None:
        super().__init__(producing, encoder, batch_size=batch_size, name=name)
        self._producing = producing
        self._options = options
        self.topic = topic
        self.sent = 0

    async def send(self, item: Any) -> Written:  # type: ignore[override]
        """Produce one record; returns where the broker stored it."""
        (written,) = await self.send_batch([item])
        return written

    async def send_batch(self, items: Sequence[Any]) -> list[Written]:  # type: ignore[override]
        """Produce one record per item; return where each was stored, once the broker
        acknowledged all of them. If some failed, the others are stored and the error says
        which failed and why (see the class's docstring)."""
        options = self._options
        try:
            # The kit's send_batch, without its (payload, item) pairs: one list of each.
            encode = self._encode
            written, failures = await self._producing.produce([encode(i) for i in items], items)
        except UNREACHABLE as error:  # the whole batch: the topic's metadata
            raise unavailable(options, error, "did not answer") from error
        stored = len(written) - len(failures)
        self.sent += stored
        if not failures:
            return written  # type: ignore[return-value]  # every one is Written
        failed = sorted(failures.items())
        if not stored and all(isinstance(error, UNREACHABLE) for _, error in failed):
            what = f"did not confirm any of {len(written)} records"
            raise unavailable(options, failed[0][1], what) from failed[0][1]
        refused = [
            (items[at], _cause(options, error, "did not confirm it")) for at, error in failed
        ]
        raise RecordsRefusedError(
            f"{self.name}: {len(failed)} of {len(written)} records failed ({stored} stored); "
            f"the first: {refused[0][1]!r}",
            refused=refused,
            stored=stored,
        ) from failed[0][1]


def _cause(options: ClientOptions, error: BaseException, what: str) -> BaseException:
    """A record's failure as the sink reports it: a lost cluster as ServiceUnavailableError."""
    if isinstance(error, UNREACHABLE):
        return unavailable(options, error, what)
    return error


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
    once every record has its answer, with
    :class:`~rxflow.errors.RecordsRefusedError` naming the failed ones (see
    :class:`KafkaSink`: a flow's ``on_error`` then acts on those only).

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
        producing = Producing(where, host, producer, topic, key, partition, headers, timestamp)
        yield KafkaSink(
            producing, encode, options=options, topic=topic, batch_size=batch_size, name=where
        )
