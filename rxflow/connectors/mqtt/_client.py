"""The aiomqtt client shared by the MQTT source and sink: the broker's URL, connecting
without leaving a thread or socket behind when cancelled, and a disconnect that loses no ack."""

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
from collections.abc import Callable
from typing import Any, NamedTuple

import anyio

from rxflow._checks import check_host, check_port
from rxflow.connectors._extras import requires_extra
from rxflow.connectors._redact import mask_url
from rxflow.errors import ServiceUnavailableError

with requires_extra("mqtt"):
    import aiomqtt
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

__all__ = [
    "CLOSE_TIMEOUT",
    "Broker",
    "broker_of",
    "connect",
    "connect_properties",
    "disconnect",
]

CLOSE_TIMEOUT = 5.0  # seconds a close may take before the connection is abandoned


def connect_properties(receive_maximum: int | None, session_expiry: int | None) -> Properties:
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    if receive_maximum is not None:
        properties.ReceiveMaximum = receive_maximum
    if session_expiry is not None:
        properties.SessionExpiryInterval = session_expiry
    return properties


DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}


class Broker(NamedTuple):
    """Where to connect and as whom, from a URL (or the deprecated host and port)."""

    host: str
    port: int
    username: str | None
    password: str | None
    tls_context: ssl.SSLContext | None

    def clients(
        self,
        client_id: str | None,
        *,
        persistent: bool,
        properties: Properties,
        keepalive: int = 60,
    ) -> Callable[[], aiomqtt.Client]:
        """What makes this broker's MQTT 5 clients, called on the client's loop (aiomqtt
        binds a client to the loop it is made on)."""

        def client() -> aiomqtt.Client:
            return aiomqtt.Client(
                self.host,
                self.port,
                identifier=client_id or f"rxflow-{uuid.uuid4().hex}",
                protocol=aiomqtt.ProtocolVersion.V5,
                clean_start=not persistent,
                properties=properties,
                username=self.username,
                password=self.password,
                keepalive=keepalive,
                tls_context=self.tls_context,
            )

        return client


def broker_of(
    function: str,
    url: object,
    topic: Any,
    legacy_topic: Any,
    *,
    username: str | None,
    password: str | None,
    tls_context: ssl.SSLContext | None,
) -> tuple[Broker, Any]:
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
        return Broker(host, port, username, password, tls_context), legacy_topic
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
    return Broker(parts.hostname, port, username, password, tls_context), topic


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


async def connect(client: aiomqtt.Client, host: str, port: int) -> None:
    """Connect ``client`` (CONNECT, then CONNACK).

    aiomqtt runs paho's blocking connect in a worker thread, which a cancel cannot stop: the
    thread would go on to open a connection and register it with the loop after the caller
    gave up, leaving a socket, a reader and a task behind (and errors logged once closed
    under them). So the TCP connection is made here, on the loop, and handed to paho; what
    is left for the thread (sending CONNECT; with TLS, the handshake) is short, and
    :func:`disconnect` waits for it.
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


async def disconnect(client: aiomqtt.Client) -> None:
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
