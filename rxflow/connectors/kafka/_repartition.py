"""Re-keying into a Kafka topic (:func:`kafka_repartition`): what Kafka Streams does with
its repartition topics, when windows are keyed by something other than the message key."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any, Final

import anyio

from rxflow._checks import check_count, check_name
from rxflow.connectors._message import Message
from rxflow.connectors.codecs import (
    CodecSpec,
    DecodeFailure,
    DecodePolicy,
    EncoderSpec,
    sink_encoder,
)
from rxflow.connectors.kafka._client import Bootstrap
from rxflow.connectors.kafka._producer import Key
from rxflow.connectors.kafka.sink import kafka_sink
from rxflow.connectors.kafka.source import kafka_source

__all__ = ["Repartition", "kafka_repartition"]

DEFAULT_REPARTITION_BATCH: Final = 500
_ENCODER_NAMES: Final = ("bytes", "text", "json")


class Repartition:
    """A running re-keying, made by :func:`kafka_repartition`: :meth:`run` it (or
    ``task_group.start_soon(repartition.run)``) and :meth:`stop` it.

    Each turn takes what one fetch of the source brought, writes it to the target topic
    keyed by the new key, and acknowledges it only once the broker acknowledged every
    record (at-least-once: after a crash, what was written and not yet acknowledged is
    written again).

    Attributes:
        name: how logs and errors name it (``"kafka_repartition(clicks -> clicks-by-user)"``).
        written: records written to the target topic and acknowledged at the source.

    Example:
        With a Kafka broker running::

            repartition = kafka_repartition(
                "localhost:9092", "clicks", "clicks-by-user", key=lambda click: click["user"]
            )
            async with anyio.create_task_group() as tg:
                tg.start_soon(repartition.run)
                ...
                repartition.stop()  # returns from run() once the batch in hand is written
    """

    def __init__(
        self,
        name: str,
        source: AbstractAsyncContextManager[Any],
        sink: AbstractAsyncContextManager[Any],
    ) -> None:
        self.name = name
        self.written = 0
        self._source, self._sink = source, sink
        self._started = False
        self._stopping = False
        self._waiting: anyio.CancelScope | None = None

    def __repr__(self) -> str:
        return f"<Repartition {self.name}: {self.written} written>"

    def stop(self) -> None:
        """Stop after the batch in hand is written and acknowledged; :meth:`run` returns
        then, with the source closed (a Kafka source commits what was acknowledged)."""
        self._stopping = True
        if self._waiting is not None:
            self._waiting.cancel()

    async def run(self) -> None:
        """Re-key until :meth:`stop`, cancellation, or the end of a finite source. An
        error of the source, of the sink or of the key function ends it, with what was
        not written left unacknowledged (it comes again to the next run)."""
        if self._started:
            raise ValueError(f"{self.name}: run() was called already; make another")
        self._started = True
        async with self._source as messages, self._sink as sink:
            take = _taker(messages)
            ack_many: Callable[[list[Message[Any]]], Awaitable[None]] | None = getattr(
                messages, "ack_many", None
            )
            while not self._stopping:
                with anyio.CancelScope() as waiting:
                    self._waiting = waiting
                    run = await take()
                self._waiting = None
                if waiting.cancelled_caught or run is None:
                    return  # stopped while waiting for records, or a finite source ended
                await sink.send_batch(run)
                if ack_many is not None:
                    await ack_many(run)
                else:
                    for message in run:
                        await message.ack()
                self.written += len(run)


def _taker(messages: Any) -> Callable[[], Awaitable[list[Message[Any]] | None]]:
    """The next messages of a source: one fetch's run where the source gives runs (every
    broker source of the connector kit), else one message; ``None`` at its end."""
    next_run: Callable[[], Awaitable[list[Message[Any]]]] | None = getattr(
        messages, "next_run", None
    )
    iterator: AsyncIterator[Message[Any]] = aiter(messages)

    async def take() -> list[Message[Any]] | None:
        try:
            if next_run is not None:
                return await next_run()
            return [await anext(iterator)]
        except StopAsyncIteration:
            return None

    return take


def kafka_repartition(
    bootstrap: Bootstrap,
    source: str | AbstractAsyncContextManager[Any],
    to_topic: str,
    key: Callable[[Any], Key],
    *,
    group_id: str | None = None,
    codec: CodecSpec = "json",
    encoder: EncoderSpec | None = None,
    on_decode_error: DecodePolicy = "raise",
    dead_letter: Callable[[DecodeFailure], Awaitable[object] | object] | None = None,
    batch: int = DEFAULT_REPARTITION_BATCH,
    client_id: str | None = None,
    security_protocol: str = "PLAINTEXT",
    sasl_mechanism: str | None = None,
    sasl_plain_username: str | None = None,
    sasl_plain_password: str | None = None,
    ssl_context: Any = None,
) -> Repartition:
    """Write a topic's records (or any source's messages) to ``to_topic`` keyed by
    ``key(value)``: the first of the two steps of keyed work whose key is not the Kafka
    message key.

    A partition holds every record of one *message* key. Windows keyed by something else
    (a user id inside click events keyed by session) would see a key's records spread over
    partitions, and so over workers. As Kafka Streams does with its repartition topics,
    write the records to a topic keyed by the window key, then window that topic: every
    record of a window key is then in one partition, read by one worker.

    The value is written as it was decoded, encoded again (``encoder``), with the record's
    headers and timestamp (event-time windows downstream see the same times). Delivery is
    at-least-once: a source message is acknowledged (a Kafka source commits it) only once
    the broker acknowledged its re-keyed record, so a crash may write a record twice.

    Args:
        bootstrap: the Kafka cluster of ``to_topic`` (and of ``source`` if it is a topic).
        source: a topic of that cluster, read as consumer group ``group_id``; or an rxflow
            source (``jetstream_source(...)``, ``redis_stream_source(...)``, a
            ``kafka_source`` of another cluster), whose messages are re-keyed.
        to_topic: the topic written to. Give it as many partitions as workers may run the
            keyed step.
        key: the new key of a value (``str``, ``bytes``, or ``None``: any partition).
        group_id: the consumer group reading ``source`` (a topic); default
            ``"rxflow-repartition-<to_topic>"``, so that a restarted re-keying resumes.
        codec: how a topic's values are decoded for ``key`` (:mod:`rxflow.connectors.codecs`).
        encoder: how values are written; default: as ``codec`` for ``"bytes"``, ``"text"``,
            ``"json"`` or a record class, else ``"auto"``.
        on_decode_error: what a topic's record that fails to decode does (``"raise"``,
            ``"skip"`` or ``"dead_letter"``), as for :func:`kafka_source`.
        dead_letter: the function given such records, with ``"dead_letter"``.
        batch: the most records read (and written) at once.
        client_id: the clients' name in the brokers' logs.
        security_protocol: the connection's protocol, as for :func:`kafka_sink`.
        sasl_mechanism: as for :func:`kafka_sink`.
        sasl_plain_username: the SASL user.
        sasl_plain_password: the SASL password (never shown in errors or logs).
        ssl_context: as for :func:`kafka_sink`.

    Returns:
        a :class:`Repartition`; nothing is opened until its :meth:`~Repartition.run`.

    Example:
        Clicks arrive keyed by session; count them per user in 1-minute event-time windows,
        on any number of workers (with a Kafka broker running)::

            rekey = kafka_repartition(
                "localhost:9092", "clicks", "clicks-by-user", key=lambda c: c["user"]
            )
            per_user = (
                Flow("clicks per user")
                .source(kafka_source("localhost:9092", "clicks-by-user", "per-user",
                                     codec="json"))
                .pipe(tumbling(60.0, key=lambda m: m.value["user"],
                               timestamp=lambda m: m.timestamp))
                .sink(store)
            )
            async with anyio.create_task_group() as tg:
                tg.start_soon(rekey.run)  # step 1: re-keys (one worker is enough)
                per_user.start(tg)  # step 2: keyed windows, on every worker
    """
    where = "kafka_repartition()"
    check_name(where, "to_topic", to_topic)
    check_count(where, "batch", batch)
    if not callable(key):
        raise TypeError(f"{where}: key must be a function of the value, got {key!r}")
    security: dict[str, Any] = {
        "client_id": client_id,
        "security_protocol": security_protocol,
        "sasl_mechanism": sasl_mechanism,
        "sasl_plain_username": sasl_plain_username,
        "sasl_plain_password": sasl_plain_password,
        "ssl_context": ssl_context,
    }
    if isinstance(source, str):
        check_name(where, "source", source)
        group = f"rxflow-repartition-{to_topic}" if group_id is None else group_id
        opened: AbstractAsyncContextManager[Any] = kafka_source(
            bootstrap,
            source,
            group,
            codec=codec,
            on_decode_error=on_decode_error,
            dead_letter=dead_letter,
            batch=batch,
            **security,
        )
        origin = source
        if encoder is None and (codec in _ENCODER_NAMES or isinstance(codec, type)):
            encoder = codec  # a name or a record class: an encoder spec too
    elif isinstance(source, AbstractAsyncContextManager) or hasattr(source, "__aenter__"):
        if group_id is not None:
            raise ValueError(f"{where}: group_id is for a topic source; the source has its own")
        opened, origin = source, getattr(source, "name", "source")
    else:
        raise TypeError(
            f"{where}: source must be a topic's name or an rxflow source (such as "
            f"jetstream_source(...)), got {source!r}"
        )
    encode = sink_encoder(where, encoder)

    def value_of(message: Message[Any]) -> bytes:
        return encode(message.value)

    def key_of(message: Message[Any]) -> Key:
        return key(message.value)

    def headers_of(message: Message[Any]) -> Mapping[str, str] | None:
        return message.headers or None

    def timestamp_of(message: Message[Any]) -> float | None:
        return message.timestamp

    sink = kafka_sink(
        bootstrap,
        to_topic,
        key=key_of,
        headers=headers_of,
        timestamp=timestamp_of,
        encoder=value_of,
        batch_size=batch,
        **security,
    )
    return Repartition(f"kafka_repartition({origin} -> {to_topic})", opened, sink)
