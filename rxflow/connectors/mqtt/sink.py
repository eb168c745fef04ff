"""The MQTT sink: publishes confirmed by the broker (PUBACK), on the connector kit."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import anyio

from rxflow._checks import check_int_range
from rxflow.connectors._asyncio_host import open_on_host
from rxflow.connectors._extras import requires_extra
from rxflow.connectors._kit import AddressedPublisher, BrokerSink
from rxflow.connectors.codecs import EncoderSpec, sink_encoder
from rxflow.connectors.mqtt import _client
from rxflow.errors import ServiceUnavailableError

with requires_extra("mqtt"):
    import aiomqtt

__all__ = ["MQTTSink", "mqtt_sink"]


class _Publisher:
    """The publishing connection on the client's loop. A lost connection fails the batch in
    flight; the next batch connects again."""

    def __init__(
        self, host: str, port: int, client: Callable[[], aiomqtt.Client], qos: int, retain: bool
    ) -> None:
        self.host, self.port, self.make_client = host, port, client
        self.qos, self.retain = qos, retain
        self.client: aiomqtt.Client | None = None
        self.lost = False

    async def open(self) -> None:
        self.client = self.make_client()  # from here on, close() cleans up after it
        self.lost = False
        await _client.connect(self.client, self.host, self.port)

    async def publish(self, messages: Sequence[tuple[bytes, str]]) -> None:
        """Publish ``(payload, topic)`` pairs all at once, then wait for every PUBACK."""
        if self.lost:
            await self.close()
            await self.open()
        assert self.client is not None
        client = self.client
        # aiomqtt logs a warning past this many pending calls; a batch is expected to be.
        client.pending_calls_threshold = max(client.pending_calls_threshold, len(messages))
        publishing = asyncio.gather(
            *(
                client.publish(topic, body, qos=self.qos, retain=self.retain)
                for body, topic in messages
            ),
            return_exceptions=True,  # every publish finished, whatever the first failure
        )
        # aiomqtt leaves publishes waiting for their PUBACK when the connection drops, until
        # its timeout: stop them at the disconnection instead.
        disconnected = client._disconnected
        either: set[asyncio.Future[Any]] = {publishing, disconnected}
        try:
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        finally:  # cancelled too: no publish may outlive the call
            if not publishing.done():
                publishing.cancel()
                with anyio.CancelScope(shield=True):
                    await asyncio.wait({publishing})
                # Seen, or asyncio logs "exception was never retrieved" when it is collected.
                with contextlib.suppress(asyncio.CancelledError):
                    publishing.exception()
        if disconnected.done():
            self.lost = True
            cause = None if disconnected.cancelled() else disconnected.exception()
            raise ServiceUnavailableError(
                f"mqtt: the connection to {self.host}:{self.port} was lost while publishing "
                f"({cause!r}); part of the batch may have reached the broker, send it again "
                "(the next send connects again)"
            ) from cause
        for outcome in publishing.result():
            if isinstance(outcome, BaseException):
                raise outcome

    async def close(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            await _client.disconnect(client)


class MQTTSink(BrokerSink[Any, None]):
    """Publishes to MQTT and returns once the broker acknowledged (see :func:`mqtt_sink`).

    Example (needs an MQTT broker)::

        async with mqtt_sink(url, lambda r: f"sensors/{r['id']}") as readings:
            await readings.send_batch([{"id": "a", "t": 21.5}, {"id": "b", "t": 19.0}])
    """


@contextlib.asynccontextmanager
async def mqtt_sink(
    url: str,
    topic: str | Callable[[Any], str] | int,
    _deprecated_topic: str | Callable[[Any], str] | None = None,
    *,
    qos: int = 1,
    retain: bool = False,
    encoder: EncoderSpec | None = None,
    batch_size: int = 100,
    client_id: str | None = None,
    username: str | None = None,
    password: str | None = None,
    tls_context: ssl.SSLContext | None = None,
    encode: EncoderSpec | None = None,
) -> AsyncIterator[MQTTSink]:
    """Publish items to MQTT, each confirmed by the broker.

    Args:
        url: the broker, ``mqtt://[user:password@]host[:port]`` or ``mqtts://...`` for
            TLS, as for :func:`mqtt_source` (``mqtt_sink(host, port, topic)`` is
            deprecated, and works for one more release).
        topic: the topic, or a function of the item that returns it.
        qos: 1 (the default: ``send`` returns on ``PUBACK``), 2 (on ``PUBCOMP``) or 0 (no
            confirmation: returns once written).
        retain: publish retained messages.
        encoder: how items become payloads (:mod:`rxflow.connectors.codecs`): the default
            ``"auto"`` sends bytes as they are, text as UTF-8 and anything else as JSON; or
            ``"bytes"``, ``"text"``, ``"json"``, a record class, a function.
        batch_size: how many items a :class:`rxflow.Flow` hands to ``send_batch`` at once.
        client_id: the sink connection's client id.
        username: the user name, if the broker wants credentials and the URL has none.
        password: the password, likewise.
        tls_context: the ``ssl.SSLContext`` of an ``mqtts://`` connection.
        encode: the old name of ``encoder`` (deprecated, works for one more release).

    If the connection is lost, ``send_batch`` raises
    :class:`~rxflow.errors.ServiceUnavailableError` (part of the batch may have been
    published: at-least-once) and the next call connects again.

    Example (needs an MQTT broker)::

        async with mqtt_sink("mqtt://127.0.0.1:1883", "orders/new") as orders:
            await orders.send({"id": 1})
            await orders.send_batch([{"id": 2}, {"id": 3}])
    """
    broker, topic = _client.broker_of(
        "mqtt_sink",
        url,
        topic,
        _deprecated_topic,
        username=username,
        password=password,
        tls_context=tls_context,
    )
    where = f"mqtt_sink({topic!r})"
    if not callable(topic) and (not isinstance(topic, str) or not topic):
        raise ValueError(f"{where}: topic must be a non-empty topic or a function, got {topic!r}")
    check_int_range(where, "qos", qos, 0, 2)
    check_int_range(where, "batch_size", batch_size, 1, 2**31)
    encode_item = sink_encoder(where, encoder, encode=encode)

    properties = _client.connect_properties(None, None)
    client = broker.clients(client_id, persistent=False, properties=properties)

    publisher = _Publisher(broker.host, broker.port, client, qos, retain)
    async with open_on_host(publisher, close_timeout=_client.CLOSE_TIMEOUT) as asyncio_host:
        publishing = AddressedPublisher(asyncio_host, publisher.publish, topic)
        yield MQTTSink(publishing, encode_item, batch_size=batch_size, name=where)
