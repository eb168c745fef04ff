"""MQTT: a topic subscription as a source with manual acks, a topic as a confirmed sink.

The client is aiomqtt on paho-mqtt (asyncio only); under trio it runs on an
:class:`AsyncioHost`. The connection speaks MQTT 5.

Source: subscribes at QoS 1 (default) and acks each message by hand (``PUBACK``, sent when
the message is settled rather than on arrival). At most ``receive_maximum`` messages are held
unacked: the client announces that *Receive Maximum* to the broker, and keeps it itself too
(mosquitto 2.0 sends a new window per ack, eclipse-mosquitto/mosquitto#2301), by not reading
its socket while that many are unacked, so that TCP flow control holds the rest at the
broker. A slow consumer means fewer deliveries, and the local buffer never holds more. While
the client does not read, a dropped connection is noticed at the next ack; and a window held
unacked for about two ``keepalive`` periods ends the connection (paho misses the broker's
ping answers), after which the messages come again. With a ``client_id`` the session
is persistent: messages that were not acked when the connection closed or dropped, and those
published meanwhile, are delivered when a source with the same ``client_id`` connects again
(within ``session_expiry`` seconds).

What a closing source had received and not handed out (its read-ahead, at most
``receive_maximum`` with what is in hand) is not acked either: MQTT has no way to hand a
message back, so with a ``client_id`` the session keeps it and delivers it again on the
next connection, and without one it ends with the session (QoS 1 without a persistent
session is at-least-once only while the connection lasts).

Both take the broker as a URL: ``mqtt://[user:password@]host[:port]`` (port 1883 by
default) or ``mqtts://`` for TLS (port 8883, the system's trusted CAs unless you pass
``tls_context=``). The older ``mqtt_source(host, port, topic)`` still works in this
release, with a ``DeprecationWarning``.

Sink: publishes at QoS 1; ``send`` and ``send_batch`` return once the broker acknowledged
every message (``PUBACK``).

Example (needs an MQTT broker)::

    async with mqtt_source("mqtt://127.0.0.1:1883", "sensors/#", client_id="ingest") as readings:
        async for message in readings:
            print(message.key, message.value)  # topic, payload
            await message.ack()
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import threading
import urllib.parse
import uuid
import warnings
import weakref
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, NamedTuple

import anyio

from rxflow._checks import check_count, check_host, check_int_range, check_port
from rxflow.connectors._asyncio_host import AsyncioHost, open_on_host
from rxflow.connectors._extras import requires_extra
from rxflow.connectors._kit import (
    DEFAULT_READ_AHEAD_BYTES,
    AddressedPublisher,
    BrokerSettlement,
    BrokerSink,
    BrokerSource,
    Incoming,
    Verb,
)
from rxflow.connectors._message import InFlightLimit
from rxflow.connectors._redact import mask_url
from rxflow.connectors.codecs import (
    Codec,
    CodecName,
    DecodeFailure,
    DecodePolicy,
    Decoder,
    encode_auto,
)
from rxflow.errors import ServiceUnavailableError

with requires_extra("mqtt"):
    import aiomqtt
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties
    from paho.mqtt.subscribeoptions import SubscribeOptions

CLOSE_TIMEOUT = 5.0  # seconds a close may take before the connection is abandoned


def _connect_properties(receive_maximum: int | None, session_expiry: int | None) -> Properties:
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    if receive_maximum is not None:
        properties.ReceiveMaximum = receive_maximum
    if session_expiry is not None:
        properties.SessionExpiryInterval = session_expiry
    return properties


def _client(
    host: str,
    port: int,
    client_id: str | None,
    *,
    persistent: bool,
    properties: Properties,
    username: str | None,
    password: str | None,
    keepalive: int = 60,
    tls_context: ssl.SSLContext | None = None,
) -> aiomqtt.Client:
    """An MQTT 5 client; built on the client's loop (aiomqtt binds to the running loop)."""
    return aiomqtt.Client(
        host,
        port,
        identifier=client_id or f"rxflow-{uuid.uuid4().hex}",
        protocol=aiomqtt.ProtocolVersion.V5,
        clean_start=not persistent,
        properties=properties,
        username=username,
        password=password,
        keepalive=keepalive,
        tls_context=tls_context,
    )


DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}


class _Broker(NamedTuple):
    """Where to connect and as whom, from a URL (or the deprecated host and port)."""

    host: str
    port: int
    username: str | None
    password: str | None
    tls_context: ssl.SSLContext | None


def _broker(
    function: str,
    url: object,
    topic: Any,
    legacy_topic: Any,
    *,
    username: str | None,
    password: str | None,
    tls_context: ssl.SSLContext | None,
) -> tuple[_Broker, Any]:
    """The broker and the topic a source's or sink's first arguments name: ``(url, topic)``,
    or the form before URLs, ``(host, port, topic)``, with a DeprecationWarning."""
    if legacy_topic is not None or (isinstance(topic, int) and not isinstance(topic, bool)):
        warnings.warn(
            f"{function}(host, port, topic) is deprecated and goes in the next release: pass "
            f"a URL, {function}('mqtt://{url}:{topic}', topic) ('mqtts://' for TLS)",
            DeprecationWarning,
            stacklevel=4,  # the caller's `async with`, past contextlib's __aenter__
        )
        where = f"{function}({legacy_topic!r})"
        host = check_host(where, "host", url)
        port = check_port(where, "port", topic)
        return _Broker(host, port, username, password, tls_context), legacy_topic
    where = f"{function}({topic!r})"
    shown = mask_url(url)
    if not isinstance(url, str) or "://" not in url:
        raise TypeError(
            f"{where}: the first argument must be the broker's URL, such as "
            f"'mqtt://user:password@broker.local:1883' ('mqtts://' for TLS), got {shown!r}"
        )
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise ValueError(
            f"{where}: {shown!r} is not an MQTT URL; it starts with mqtt:// (port 1883 by "
            "default) or mqtts:// (TLS, port 8883)"
        )
    try:
        port = parts.port or DEFAULT_PORTS[scheme]
    except ValueError:
        raise ValueError(f"{where}: the port of {shown!r} is not a number") from None
    if not parts.hostname:
        raise ValueError(f"{where}: {shown!r} names no host; use mqtt://host:1883")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(
            f"{where}: {shown!r} has a path or a query, which MQTT has no use for; pass the "
            "topic as the second argument and settings (client_id=, qos=...) as arguments"
        )
    if parts.username is not None:
        if username is not None or password is not None:
            raise ValueError(
                f"{where}: credentials given twice, in the URL and as username=/password=; "
                "pass them once"
            )
        username = urllib.parse.unquote(parts.username)
        password = None if parts.password is None else urllib.parse.unquote(parts.password)
    if scheme == "mqtts":
        # The system's trusted CAs and hostname checks, unless the caller brings a context.
        tls_context = tls_context or ssl.create_default_context()
    elif tls_context is not None:
        raise ValueError(f"{where}: tls_context= is for TLS: use an mqtts:// URL")
    return _Broker(parts.hostname, port, username, password, tls_context), topic


class _ThreadStep:
    """aiomqtt's part of a connect, which it runs in a worker thread: it runs whole, or not
    at all once the connect is given up (a cancelled executor job may still start).

    :meth:`end` (on the loop) returns once it ran, or will not, and the loop has run what it
    handed over (the reader, the housekeeping task).
    """

    def __init__(self, step: Callable[[], None], tcp: socket.socket) -> None:
        self._step = step
        self.tcp = tcp  # the connection handed to paho; closed by end() if paho never took it
        self._loop = asyncio.get_running_loop()
        self._done: asyncio.Future[None] = self._loop.create_future()
        self._lock = threading.Lock()
        self._state = "pending"  # then "running", or "abandoned"

    def run(self) -> None:
        """In the worker thread."""
        with self._lock:
            if self._state == "abandoned":
                return
            self._state = "running"
        try:
            self._step()
        finally:
            self._loop.call_soon_threadsafe(self._finished)

    def _finished(self) -> None:
        if not self._done.done():
            self._done.set_result(None)

    async def end(self) -> None:
        with self._lock:
            if self._state == "pending":
                self._state = "abandoned"
                return
        await asyncio.wait({self._done}, timeout=CLOSE_TIMEOUT)


_THREAD_STEPS: weakref.WeakKeyDictionary[aiomqtt.Client, _ThreadStep] = weakref.WeakKeyDictionary()


async def _tcp_connection(host: str, port: int, within: float) -> socket.socket:
    """A connected, non-blocking TCP socket, made on the loop: a cancel stops and closes it."""
    loop = asyncio.get_running_loop()
    failure: OSError | None = None
    with anyio.fail_after(within):
        addresses = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        for family, kind, protocol, _, address in addresses:
            tcp = socket.socket(family, kind, protocol)
            try:
                tcp.setblocking(False)
                await loop.sock_connect(tcp, address)
            except BaseException as error:
                tcp.close()
                if not isinstance(error, OSError):
                    raise
                failure = error
            else:
                return tcp
    raise failure or OSError(f"{host} has no address")


async def _connect(client: aiomqtt.Client, host: str, port: int) -> None:
    """Connect ``client`` (CONNECT, then CONNACK).

    aiomqtt runs paho's blocking connect in a worker thread, which a cancel cannot stop: the
    thread would go on to open a connection and register it with the loop after the caller
    gave up, leaving a socket, a reader and a task behind (and errors logged once closed
    under them). So the TCP connection is made here, on the loop, and handed to paho; what
    is left for the thread (sending CONNECT; with TLS, the handshake) is short, and
    :func:`_disconnect` waits for it.
    """
    paho = client._client
    try:
        tcp = await _tcp_connection(host, port, paho.connect_timeout)
    except OSError as error:
        raise ServiceUnavailableError(
            f"mqtt: cannot connect to {host}:{port} ({error!r}); check that the broker is "
            "running there"
        ) from error
    step = _THREAD_STEPS[client] = _ThreadStep(client._client_connect, tcp)
    # paho 2.x and aiomqtt 2.x internals (paho's socket factory, aiomqtt's thread step).
    paho._create_socket_connection = lambda: tcp  # type: ignore[method-assign]
    client._client_connect = step.run  # type: ignore[method-assign]
    _drop_answers_to_cancelled_calls(client)
    try:
        await client.__aenter__()
    except aiomqtt.MqttError as error:
        raise ServiceUnavailableError(
            f"mqtt: cannot connect to {host}:{port} ({error}); check that the broker is "
            "running there and accepts this client (user, password, client id)"
        ) from error


def _drop_answers_to_cancelled_calls(client: aiomqtt.Client) -> None:
    """A SUBACK or UNSUBACK for a call that was cancelled (or timed out) finds no pending
    call, and aiomqtt logs a KeyError traceback: nobody waits for it, so drop it."""
    paho = client._client
    on_subscribe, on_unsubscribe = paho.on_subscribe, paho.on_unsubscribe

    def subscribed(paho_client: Any, userdata: Any, mid: int, *answer: Any) -> None:
        if on_subscribe is not None and mid in client._pending_subscribes:
            on_subscribe(paho_client, userdata, mid, *answer)

    def unsubscribed(paho_client: Any, userdata: Any, mid: int, *answer: Any) -> None:
        if on_unsubscribe is not None and mid in client._pending_unsubscribes:
            on_unsubscribe(paho_client, userdata, mid, *answer)

    paho.on_subscribe, paho.on_unsubscribe = subscribed, unsubscribed


async def _disconnect(client: aiomqtt.Client) -> None:
    """Disconnect, then wait for aiomqtt's housekeeping task, which the socket-close
    callback only schedules to cancel: none outlives the connector."""
    step = _THREAD_STEPS.pop(client, None)
    if step is not None:  # so that nothing it hands to the loop comes after the close
        await step.end()
    connected = client._connected
    if connected.done() and not connected.cancelled() and connected.exception() is None:
        with contextlib.suppress(aiomqtt.MqttError):
            await client.__aexit__(None, None, None)
    # A connect that failed or was cancelled before CONNACK: aiomqtt leaves it open. First
    # run the calls aiomqtt has queued for the loop (it adds writers that way): one that
    # came after the socket's close would watch a closed (or reused) descriptor.
    await asyncio.sleep(0)
    client._client._sock_close()
    if step is not None:
        step.tcp.close()  # if the connect was cancelled before paho took it
    misc = client._misc_task
    if misc is not None:
        misc.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await misc


# -- source --------------------------------------------------------------------------------


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
        await _connect(client, self.host, self.port)
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
        await _disconnect(self.client)


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


class _Reader:
    """The kit's view of the subscriber (see :class:`~rxflow.connectors._kit.Reader`)."""

    def __init__(self, host: AsyncioHost, subscriber: _Subscriber, name: str) -> None:
        self._host, self.subscriber, self.name = host, subscriber, name
        # No more than `receive_maximum` unacked messages: the client stops reading there.
        self.in_flight_limit: InFlightLimit | None = InFlightLimit(
            subscriber.limit, "receive_maximum"
        )
        # Under trio each call is a hop to the client's thread, and the broker does not
        # answer acks: settlements are queued and written in runs.
        self.queues_settlements = host.hosted

    async def fetch(self, count: int, max_bytes: int) -> list[Incoming[aiomqtt.Message]]:
        received = await self._host.call(self.subscriber.take, count, max_bytes)
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

    async def settle(self, settlements: Sequence[tuple[aiomqtt.Message, Verb]]) -> None:
        if self._host.hosted:
            await self._host.call(_settle_on_loop, self.subscriber, settlements)
        else:
            self.subscriber.settle(settlements)

    async def release(self, unhanded: Sequence[aiomqtt.Message]) -> int:
        # MQTT cannot hand a message back: a persistent session delivers it again on the
        # next connection; without one it ends with the session.
        return 0

    async def held_back(self) -> bool:
        return False  # the broker pushes: an empty fetch never happens


async def _settle_on_loop(
    subscriber: _Subscriber, settlements: Sequence[tuple[aiomqtt.Message, Verb]]
) -> None:
    subscriber.settle(settlements)


class MQTTSource(BrokerSource[Any, "aiomqtt.Message"]):
    """The messages of one subscription; iterate it (see :func:`mqtt_source`).

    Attributes:
        decoder: its :class:`~rxflow.connectors.Decoder`, with the counts ``decoded``,
            ``skipped`` and ``dead_lettered``.

    Example (needs an MQTT broker)::

        async with mqtt_source(url, "logs/#", on_decode_error="skip") as logs:
            async for message in logs:
                await message.ack()
            print(logs.decoder.skipped, logs.unacked)
    """

    def __init__(self, reader: _Reader, decoder: Decoder, **bounds: int) -> None:
        super().__init__(reader, decoder, **bounds)
        self._subscriber = reader.subscriber

    @property
    def unacked(self) -> int:
        """Messages received and not acked yet (at most ``receive_maximum``). Under trio an
        ack reaches the client's loop, and this count, a moment after ``ack()`` returns."""
        return self._subscriber.unacked


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
    codec: Codec | CodecName = "bytes",
    on_decode_error: DecodePolicy = "raise",
    dead_letter: Callable[[DecodeFailure], object] | None = None,
    username: str | None = None,
    password: str | None = None,
    keepalive: int = 60,
    tls_context: ssl.SSLContext | None = None,
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
    broker, topic = _broker(
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
    decoder = Decoder(
        codec, on_decode_error=on_decode_error, dead_letter=dead_letter, source=f"mqtt:{topic}"
    )
    persistent = client_id is not None
    properties = _connect_properties(receive_maximum, session_expiry if persistent else None)

    def client() -> aiomqtt.Client:
        return _client(
            broker.host,
            broker.port,
            client_id,
            persistent=persistent,
            properties=properties,
            username=broker.username,
            password=broker.password,
            keepalive=keepalive,
            tls_context=broker.tls_context,
        )

    subscriber = _Subscriber(
        broker.host, broker.port, topic, qos, receive_maximum, read_ahead_bytes, client
    )
    async with open_on_host(subscriber, close_timeout=CLOSE_TIMEOUT) as asyncio_host:
        reader = _Reader(asyncio_host, subscriber, decoder.source)
        async with MQTTSource(
            reader, decoder, read_ahead=receive_maximum, read_ahead_bytes=read_ahead_bytes
        ) as source:
            yield source


# -- sink ----------------------------------------------------------------------------------


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
        await _connect(self.client, self.host, self.port)

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
            await _disconnect(client)


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
    encode: Callable[[Any], bytes] = encode_auto,
    batch_size: int = 100,
    client_id: str | None = None,
    username: str | None = None,
    password: str | None = None,
    tls_context: ssl.SSLContext | None = None,
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
        encode: item -> bytes; by default bytes as they are, text as UTF-8, else JSON.
        batch_size: how many items a :class:`rxflow.Flow` hands to ``send_batch`` at once.
        client_id: the sink connection's client id.
        username: the user name, if the broker wants credentials and the URL has none.
        password: the password, likewise.
        tls_context: the ``ssl.SSLContext`` of an ``mqtts://`` connection.

    If the connection is lost, ``send_batch`` raises
    :class:`~rxflow.errors.ServiceUnavailableError` (part of the batch may have been
    published: at-least-once) and the next call connects again.

    Example (needs an MQTT broker)::

        async with mqtt_sink("mqtt://127.0.0.1:1883", "orders/new") as orders:
            await orders.send({"id": 1})
            await orders.send_batch([{"id": 2}, {"id": 3}])
    """
    broker, topic = _broker(
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

    def client() -> aiomqtt.Client:
        return _client(
            broker.host,
            broker.port,
            client_id,
            persistent=False,
            properties=_connect_properties(None, None),
            username=broker.username,
            password=broker.password,
            tls_context=broker.tls_context,
        )

    publisher = _Publisher(broker.host, broker.port, client, qos, retain)
    async with open_on_host(publisher, close_timeout=CLOSE_TIMEOUT) as asyncio_host:
        publishing = AddressedPublisher(asyncio_host, publisher.publish, topic)
        yield MQTTSink(publishing, encode, batch_size=batch_size, name=where)


__all__ = ["MQTTSettlement", "MQTTSink", "MQTTSource", "mqtt_sink", "mqtt_source"]
