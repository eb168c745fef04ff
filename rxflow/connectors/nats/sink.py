"""The JetStream sink: publishes to a subject and returns once JetStream stored every item."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Final

from rxflow._checks import check_count, check_name, check_seconds
from rxflow.connectors._asyncio_host import AsyncioHost
from rxflow.connectors._extras import requires_extra
from rxflow.connectors._kit import AddressedPublisher, BrokerSink
from rxflow.connectors.codecs import Encoder, EncoderSpec, sink_encoder
from rxflow.connectors.nats import _client

with requires_extra("nats"):
    import nats.js.errors

__all__ = ["JetStreamSink", "jetstream_sink"]

DEFAULT_SINK_BATCH: Final = 256


async def _publish(js: Any, subject: str, stream: str | None, payload: bytes) -> None:
    try:
        await js.publish(subject, payload, stream=stream)
    except nats.js.errors.NoStreamResponseError:
        raise ValueError(
            f"nats: no JetStream stream captures subject {subject!r}; create one whose "
            "subjects match it (jetstream_source(create=True) does)"
        ) from None


class _Publishing:
    """Publishes on the client's loop: every payload of a batch at once, then waits for all
    their PubAcks."""

    def __init__(self, js: Any, stream: str | None) -> None:
        self._js, self._stream = js, stream

    async def publish(self, records: Sequence[tuple[bytes, str]]) -> None:
        """``gather`` waits for every publish even when one fails (and cancels them all when
        it is cancelled), so no publish outlives the call; the first failure is raised as
        itself."""
        js, stream = self._js, self._stream
        outcomes = await asyncio.gather(
            *(_publish(js, subject, stream, payload) for payload, subject in records),
            return_exceptions=True,
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome


class JetStreamSink(BrokerSink[Any, None]):
    """The sink :func:`jetstream_sink` yields: publishes values to a subject and returns
    once JetStream stored them. ``send_batch`` publishes the items concurrently; if one
    fails, the error is raised after the others finished (some may be stored: delivery is
    at-least-once).

    Attributes:
        batch_size: how many items a flow should hand to :meth:`send_batch` at once.
        subject: where it publishes.
        stream: the stream that must store the messages (None: any that captures them).
        sent: messages confirmed so far.

    Example (needs a NATS server with JetStream)::

        async with jetstream_sink("nats://localhost:4222", "orders.new") as orders:
            await orders.send({"id": 1})
            await orders.send_batch([{"id": 2}, {"id": 3}])
    """

    def __init__(
        self,
        publisher: AddressedPublisher,
        encoder: Encoder,
        *,
        subject: str,
        stream: str | None,
        batch_size: int,
        name: str,
    ) -> None:
        super().__init__(publisher, encoder, batch_size=batch_size, name=name)
        self.subject = subject
        self.stream = stream
        self.sent = 0

    async def send_batch(self, items: Sequence[Any]) -> None:
        """Publish the items; return once JetStream acknowledged every one."""
        await super().send_batch(items)
        self.sent += len(items)


@contextlib.asynccontextmanager
async def jetstream_sink(
    url: str,
    subject: str,
    *,
    encoder: EncoderSpec = "auto",
    batch_size: int = DEFAULT_SINK_BATCH,
    stream: str | None = None,
    create: bool = False,
    connect_timeout: float = _client.CONNECT_TIMEOUT_S,
    connect_options: Mapping[str, Any] | None = None,
) -> AsyncIterator[JetStreamSink]:
    """Publish values to a JetStream subject, each confirmed by the server's ``PubAck``.

    Args:
        url: the server, ``"nats://host:4222"``.
        subject: where to publish; a stream must capture it.
        encoder: how a value becomes the payload: ``"auto"`` (bytes as they are, ``str`` as
            UTF-8, anything else as JSON), ``"bytes"``, ``"text"``, ``"json"``, a record
            class, or a function ``value -> bytes`` (:mod:`rxflow.connectors.codecs`).
        batch_size: the batch size a flow should use with this sink.
        stream: the stream that must store the messages: a publish that another stream (or
            none) would capture is refused by the server.
        create: create ``stream`` capturing ``subject`` if it does not exist.
        connect_timeout: seconds to reach the server before ``ServiceUnavailableError``.
        connect_options: more keyword arguments for ``nats.connect``.

    Example (needs a NATS server with JetStream)::

        async with jetstream_sink("nats://localhost:4222", "orders.new") as orders:
            await orders.send_batch([{"id": n} for n in range(100)])
    """
    where = "jetstream_sink()"
    check_name(where, "url", url)
    check_name(where, "subject", subject)
    check_count(where, "batch_size", batch_size)
    check_seconds(where, "connect_timeout", connect_timeout)
    if stream is not None:
        _client.check_jetstream_name(where, "stream", stream)
    elif create:
        raise ValueError(f"{where}: create=True needs the stream's name: pass stream=")
    encode = sink_encoder(where, encoder)
    async with (
        AsyncioHost() as host,
        _client.connected(host, url, connect_timeout, connect_options) as client,
    ):
        js = client.jetstream()
        if stream is not None:
            await host.call(_client.ensure_stream, js, stream, subject, create)
        publishing = AddressedPublisher(host, _Publishing(js, stream).publish, subject)
        yield JetStreamSink(
            publishing, encode, subject=subject, stream=stream, batch_size=batch_size, name=where
        )
