"""The MQTT source: a subscription with manual acks, on the connector kit."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from rxflow._checks import check_count, check_int_range
from rxflow.connectors._asyncio_host import AsyncioHost, open_on_host
from rxflow.connectors._extras import requires_extra
from rxflow.connectors._kit import (
    DEFAULT_READ_AHEAD_BYTES,
    BrokerSettlement,
    HostedPushReader,
    IdentityOf,
    Incoming,
    PushedSource,
    Verb,
)
from rxflow.connectors._message import InFlightLimit
from rxflow.connectors.codecs import CodecSpec, DecodeFailure, DecodePolicy, Decoder
from rxflow.connectors.mqtt._client import (
    CLOSE_TIMEOUT,
    broker_of,
    connect,
    connect_properties,
    disconnect,
)
from rxflow.errors import ServiceUnavailableError

with requires_extra("mqtt"):
    import aiomqtt
    from paho.mqtt.properties import Properties
    from paho.mqtt.subscribeoptions import SubscribeOptions

__all__ = ["MQTTSettlement", "MQTTSource", "mqtt_source"]


class _Subscriber:
    """The subscription on the client's loop; messages wait in aiomqtt's queue and are
    acked by hand (paho's ``manual_ack``).

    At most ``limit`` messages are held unacked. The broker is asked for that (Receive
    Maximum), but brokers do not all keep it (mosquitto 2.0 sends a new window per ack), so
    the client keeps it too: with ``limit`` messages unacked it stops reading its socket,
    and TCP flow control holds the rest at the broker until an ack frees a place.
    """

    def __init__(
        self,
        host: str,
        port: int,
        topic: str,
        qos: int,
        limit: int,
        max_bytes: int,
        client: Callable[[], aiomqtt.Client],
    ) -> None:
        self.host, self.port, self.topic, self.qos, self.limit = host, port, topic, qos, limit
        self.max_bytes = max_bytes
        self.make_client = client
        self.client: aiomqtt.Client | None = None
        self.unacked = 0  # received from the broker and not settled yet
        # Payload bytes received and not taken yet: past max_bytes the socket is not read.
        self.queued_bytes = 0
        # Not reading the socket: `limit` messages are unacked, or `max_bytes` wait.
        self.paused = False
        self.subscribed = False
        self.closing = False  # read on to the SUBACK of close(): no more pauses

    async def open(self) -> None:
        client = self.make_client()
        # aiomqtt 2.5 has no manual-ack option; paho's own switch holds back each PUBACK
        # until ack() (set before connecting, so redelivered messages are held back too).
        client._client.manual_ack_set(True)
        client._client.on_message = self._counting(client._on_message)
        self.client = client  # from here on, close() cleans up after it
        await connect(client, self.host, self.port)
        try:
            granted = await client.subscribe(self.topic, qos=self.qos)
        except ValueError as error:  # paho checks the filter's syntax
            raise ValueError(
                f"mqtt: {self.topic!r} is not a valid topic filter ({error}); '+' and '#' "
                "must fill a whole level, and '#' can only be the last"
            ) from error
        if any(code >= 0x80 if isinstance(code, int) else code.is_failure for code in granted):
            raise ValueError(
                f"mqtt: the broker at {self.host}:{self.port} refused the subscription to "
                f"{self.topic!r} ({', '.join(map(str, granted))}); check the topic filter "
                "and this client's permissions"
            )
        # Not before: a persistent session's redeliveries may fill the window before SUBACK.
        self.subscribed = True
        if self._full():
            self._pause()

    def _counting(self, on_message: Callable[..., None]) -> Callable[..., None]:
        def counted(client: Any, userdata: Any, message: Any) -> None:
            self.unacked += 1
            self.queued_bytes += len(message.payload)
            on_message(client, userdata, message)
            if self.subscribed and not self.closing and self._full():
                self._pause()

        return counted

    def _full(self) -> bool:
        return self.unacked >= self.limit or self.queued_bytes > self.max_bytes

    def _socket_fd(self) -> int | None:
        assert self.client is not None
        sock = self.client._client.socket()
        return None if sock is None else sock.fileno()

    def _pause(self) -> None:
        fd = self._socket_fd()
        if not self.paused and fd is not None:
            self.paused = True
            asyncio.get_running_loop().remove_reader(fd)

    def _resume(self) -> None:
        fd = self._socket_fd()
        if self.paused and fd is not None:
            self.paused = False
            asyncio.get_running_loop().add_reader(fd, self._readable)

    def _readable(self) -> None:
        """What aiomqtt's own reader does: read packets; a failure is a disconnection."""
        assert self.client is not None
        paho_client = self.client._client
        try:
            while not self.paused:
                paho_client.loop_read()
                pending = getattr(paho_client.socket(), "pending", None)  # TLS buffers
                if pending is None or pending() == 0:
                    break
        except Exception as error:
            disconnected = self.client._disconnected
            if not disconnected.done():
                disconnected.set_exception(error)

    async def take(self, count: int, max_bytes: int) -> list[aiomqtt.Message]:
        """Messages received so far (at least one, at most ``count`` and, past the first,
        ``max_bytes`` of payloads), waiting for one if there is none."""
        assert self.client is not None
        messages = self.client.messages
        try:
            taken = [await anext(messages)]
            size = len(taken[0].payload)
            while len(messages) and len(taken) < count and size < max_bytes:
                message = await anext(messages)
                size += len(message.payload)
                taken.append(message)
        except aiomqtt.MqttError as error:
            raise ServiceUnavailableError(
                f"mqtt: the connection to {self.host}:{self.port} was lost ({error!r}); with a "
                "client_id the session keeps unacknowledged messages and delivers them again "
                "when you reopen the source"
            ) from error
        self.queued_bytes -= size
        if not self._full():
            self._resume()
        return taken

    def settle(self, settlements: Sequence[tuple[aiomqtt.Message, Verb]]) -> None:
        """PUBACK the acked messages (on the client's loop: paho is not thread-safe). A
        nacked one stays unacked: MQTT has no negative ack, the session delivers it again
        on the next connection, and until then it keeps its place in the window."""
        assert self.client is not None
        for message, verb in settlements:
            if verb != "ack":
                continue
            self.unacked -= 1
            if message.qos > 0:
                # Not connected: the ack is lost, and the session delivers the message again.
                self.client._client.ack(message.mid, message.qos)
        if not self._full():
            self._resume()

    async def close(self) -> None:
        if self.client is None:
            return
        # paho closes its socket right after writing DISCONNECT; a socket closed with input
        # unread is reset, and the reset discards what the broker has not read yet, such as
        # the last acks (they would come again). A SUBSCRIBE round trip (the same
        # subscription, so nothing changes) proves the broker processed every ack before.
        # Its SUBACK may queue behind a full window of messages: read past them (they are
        # not acked, so they come again).
        self.closing = True
        self._resume()
        if self.subscribed:  # (else nothing was received, so nothing acked)
            options = SubscribeOptions(qos=self.qos, retainHandling=1)  # no retained replay
            with contextlib.suppress(aiomqtt.MqttError):
                await self.client.subscribe(self.topic, options=options, timeout=CLOSE_TIMEOUT / 2)
        await disconnect(self.client)


MQTTSettlement = BrokerSettlement
"""Acks one message (``PUBACK``, written on the client's loop without waiting: the broker
does not answer acks). MQTT has no negative ack: ``nack`` leaves the message unacked, and
the broker delivers it again when the session reconnects. Until then it keeps its place in
the ``receive_maximum`` window (the broker counts it too), so a source that nacks that many
stops receiving: close it, and reopen to get them again. (The kit's
:class:`~rxflow.connectors._kit.BrokerSettlement`, under the name it had.)"""


def _headers(properties: Properties | None) -> dict[str, str]:
    """MQTT 5 user properties, the protocol's headers."""
    pairs = getattr(properties, "UserProperty", None) or []
    return {str(name): str(value) for name, value in pairs}


class _Reader(HostedPushReader["aiomqtt.Message"]):
    """The kit's view of the subscriber. MQTT cannot hand a message back: a persistent
    session delivers what was not acked again on the next connection; without one it ends
    with the session."""

    def __init__(self, host: AsyncioHost, subscriber: _Subscriber, name: str) -> None:
        # No more than `receive_maximum` unacked messages: the client stops reading there.
        super().__init__(host, name, InFlightLimit(subscriber.limit, "receive_maximum"))
        self.subscriber = subscriber

    async def fetch(self, count: int, max_bytes: int) -> list[Incoming[aiomqtt.Message]]:
        received = await self.host.call(self.subscriber.take, count, max_bytes)
        return [
            Incoming(
                bytes(message.payload),
                message,
                key=message.topic.value,
                headers=_headers(message.properties),
                size=len(message.payload),
            )
            for message in received
        ]

    @property
    def unacked(self) -> int:
        return self.subscriber.unacked

    async def settle(self, settlements: Sequence[tuple[aiomqtt.Message, Verb]]) -> None:
        if self.host.hosted:
            await self.host.call(_settle_on_loop, self.subscriber, settlements)
        else:
            self.subscriber.settle(settlements)


async def _settle_on_loop(
    subscriber: _Subscriber, settlements: Sequence[tuple[aiomqtt.Message, Verb]]
) -> None:
    subscriber.settle(settlements)


class MQTTSource(PushedSource[Any, "aiomqtt.Message"]):
    """The messages of one subscription (``key``: the topic; ``headers``: MQTT 5 user
    properties); made by :func:`mqtt_source`. ``unacked`` counts messages received and not
    acked yet (at most ``receive_maximum``)."""


@contextlib.asynccontextmanager
async def mqtt_source(
    url: str,
    topic: str | int,
    _deprecated_topic: str | None = None,
    *,
    qos: int = 1,
    client_id: str | None = None,
    session_expiry: int = 3600,
    receive_maximum: int = 100,
    read_ahead_bytes: int = DEFAULT_READ_AHEAD_BYTES,
    codec: CodecSpec = "bytes",
    on_decode_error: DecodePolicy = "raise",
    dead_letter: Callable[[DecodeFailure], object] | None = None,
    username: str | None = None,
    password: str | None = None,
    keepalive: int = 60,
    tls_context: ssl.SSLContext | None = None,
    identity: IdentityOf | None = None,
) -> AsyncIterator[MQTTSource]:
    """Subscribe to an MQTT topic (wildcards allowed) with manual acks; yield its messages.

    Args:
        url: the broker, ``mqtt://[user:password@]host[:port]`` (port 1883 by default), or
            ``mqtts://...`` for TLS (port 8883). The deprecated form ``mqtt_source(host,
            port, topic)`` works for one more release, with a ``DeprecationWarning``.
        topic: the topic filter to subscribe to (``"sensors/+/temperature"``, ``"logs/#"``).
        qos: the subscription's QoS: 1 (at least once, the default), 2, or 0 (no acks and
            no redelivery).
        client_id: the session's name. With one, the session is persistent: it survives
            the connection by ``session_expiry`` seconds, keeping unacked and newly published
            messages for the next source with this ``client_id``. Without, each source has a
            fresh session that ends with it.
        session_expiry: seconds a persistent session outlives its connection.
        receive_maximum: at most this many messages received and not acked; more are
            read only as these are acked, so it bounds the local buffer too. In a
            :class:`rxflow.Flow`, windows keep their messages unacked until written: a flow
            whose windows hold ``receive_maximum`` messages fails with
            :class:`~rxflow.errors.InFlightLimitError`; size it above what they hold.
        read_ahead_bytes: at most this many payload bytes received and not handed out,
            plus one message: past it the client stops reading its socket, and TCP flow
            control holds the rest at the broker.
        codec: how payloads become values: ``"bytes"``, ``"text"``, ``"json"`` or a
            function (:mod:`rxflow.connectors.codecs`).
        on_decode_error: what to do with a payload the codec rejects: ``"raise"``,
            ``"skip"`` or ``"dead_letter"``.
        dead_letter: the function given such payloads, with ``"dead_letter"``.
        username: the user name, if the broker wants credentials and the URL has none.
        password: the password, likewise.
        keepalive: seconds between pings when nothing else is said. While the client holds
            ``receive_maximum`` messages unacked it does not read, so it misses the broker's
            ping answers, and after about two keepalives it drops the connection (the
            messages come again); raise it if a full window can stay unacked that long.
        tls_context: the ``ssl.SSLContext`` of an ``mqtts://`` connection (a private CA,
            client certificates); default: ``ssl.create_default_context()``.
        identity: a function of each decoded message that returns what names it across
            redeliveries, set by the publisher: a payload field (``lambda m:
            m.value["id"]``) or an MQTT 5 user property (``lambda m:
            m.headers.get("message-id")``); None for a message without one. MQTT has no
            message id of its own (the packet id is reused), so without this function
            ``message.identity`` is None, and a checkpointed :class:`rxflow.Flow` cannot
            recognise a redelivered message it has counted already. It must name one
            message of the subscription only. A message the function fails on goes to
            ``on_decode_error``.

    Each message's ``key`` is its topic and ``headers`` its MQTT 5 user properties. Ack each
    with ``await message.ack()``; MQTT has no negative ack, so ``nack()`` leaves it for the
    next connection. A lost connection ends the iteration with
    :class:`~rxflow.errors.ServiceUnavailableError`.

    Example (needs an MQTT broker)::

        async with mqtt_source(
            "mqtt://billing:s3cret@127.0.0.1:1883", "orders/#", client_id="billing", codec="json"
        ) as orders:
            async for message in orders:
                bill(message.value)
                await message.ack()
    """
    broker, topic = broker_of(
        "mqtt_source",
        url,
        topic,
        _deprecated_topic,
        username=username,
        password=password,
        tls_context=tls_context,
    )
    where = f"mqtt_source({topic!r})"
    if not isinstance(topic, str) or not topic:
        raise ValueError(f"{where}: topic must be a non-empty topic filter, got {topic!r}")
    check_int_range(where, "qos", qos, 0, 2)
    check_int_range(where, "receive_maximum", receive_maximum, 1, 65535)
    check_count(where, "read_ahead_bytes", read_ahead_bytes)
    check_int_range(where, "session_expiry", session_expiry, 0, 2**32 - 1)
    check_int_range(where, "keepalive", keepalive, 1, 65535)
    if identity is not None and not callable(identity):
        raise TypeError(
            f"{where}: identity must be a function of the message, such as "
            f"lambda m: m.value['id'], got {identity!r}"
        )
    decoder = Decoder(
        codec, on_decode_error=on_decode_error, dead_letter=dead_letter, source=f"mqtt:{topic}"
    )
    persistent = client_id is not None
    properties = connect_properties(receive_maximum, session_expiry if persistent else None)

    client = broker.clients(
        client_id, persistent=persistent, properties=properties, keepalive=keepalive
    )

    subscriber = _Subscriber(
        broker.host, broker.port, topic, qos, receive_maximum, read_ahead_bytes, client
    )
    async with open_on_host(subscriber, close_timeout=CLOSE_TIMEOUT) as asyncio_host:
        reader = _Reader(asyncio_host, subscriber, decoder.source)
        async with MQTTSource(
            reader,
            decoder,
            identity_of=identity,
            read_ahead=receive_maximum,
            read_ahead_bytes=read_ahead_bytes,
        ) as source:
            yield source
