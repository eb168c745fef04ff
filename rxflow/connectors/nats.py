"""NATS JetStream: a durable pull-consumer source and a publish-and-confirm sink, on nats-py.

The source reads a stream through a *durable pull consumer*. It asks JetStream for messages
only when its own consumer wants the next one and its last fetch is used up, at most
``batch`` at a time, so a slow consumer means fewer fetches and the messages it does not
take stay on the server for other workers. Several processes that open the same durable
share its messages: JetStream hands each one to one of them.

Each message is settled with ``msg.ack()`` (a nack is ``msg.nak()``, or ``msg.term()``
without requeue). A message that is not acknowledged within the consumer's ``ack_wait`` is
delivered again, to this or to another worker: that is what makes delivery at-least-once
when a worker dies or its connection drops.

The sink publishes to a subject and waits for JetStream's ``PubAck``: when ``send`` returns,
the message is stored in a stream.

Under trio, every client call runs on an asyncio loop in a worker thread
(:class:`~rxflow.connectors._asyncio_host.AsyncioHost`); the API is the same. There, acks
are queued and a task of the source hands them over in batches, since a round trip to that
thread per ack would cost more than the rest of a message's way.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, Final, Literal

import anyio

from rxflow._checks import check_count, check_name, check_seconds
from rxflow._source_time import current_source_time
from rxflow.connectors._asyncio_host import AsyncioHost, closed_on_failure
from rxflow.connectors._extras import requires_extra
from rxflow.connectors._message import InFlightLimit, Message, Settlement
from rxflow.connectors._redact import mask_url, mask_urls_in
from rxflow.connectors.codecs import (
    SKIPPED,
    Codec,
    CodecName,
    DecodeFailure,
    DecodePolicy,
    Decoder,
    Encoder,
    encode_auto,
)
from rxflow.errors import ServiceUnavailableError

with requires_extra("nats"):
    import nats
    import nats.aio.client
    import nats.errors
    import nats.js.api
    import nats.js.errors

__all__ = ["JetStreamSink", "JetStreamSource", "jetstream_sink", "jetstream_source"]

CONNECT_TIMEOUT_S: Final = 5.0
DEFAULT_BATCH: Final = 32
DEFAULT_FETCH_TIMEOUT_S: Final = 5.0
DEFAULT_SINK_BATCH: Final = 256

EncoderName = Literal["auto", "bytes", "text", "json"]


# -- connections ------------------------------------------------------------------------


async def _connect(url: str, within: float, options: Mapping[str, Any]) -> Any:
    """A nats-py client (on the client's loop), or ServiceUnavailableError after ``within`` s.

    nats-py retries a refused first connection forever when reconnects are allowed, and
    reports each failure only to ``error_cb``: the last one is kept for the error message.
    Reconnects stay on for the connection's life, so a server restart does not end a stream.
    """
    failures: list[BaseException] = []

    async def remember(error: BaseException) -> None:
        failures.append(error)

    settings: dict[str, Any] = {"connect_timeout": within, "error_cb": remember}
    settings.update(options)
    # nats.connect() would drop a client whose connect was cancelled half-way, with its
    # reader, flusher and pinger tasks running and its socket open: keep hold of it. And
    # no asyncio.wait_for, whose task (Python 3.11) may finish the connect after a cancel.
    client = nats.aio.client.Client()
    try:
        async with closed_on_failure(client.close, close_timeout=within):
            with anyio.fail_after(within):
                await client.connect(url, **settings)
    except (TimeoutError, OSError, nats.errors.Error) as error:
        cause = failures[-1] if failures else error
        raise ServiceUnavailableError(
            f"nats at {mask_url(url)} is not reachable ({mask_urls_in(repr(cause))}); start it "
            "(with JetStream: nats-server -js), or check the URL"
        ) from error
    return client


async def _close_client(client: Any) -> None:
    await client.close()


@contextlib.asynccontextmanager
async def _connected(
    host: AsyncioHost, url: str, within: float, options: Mapping[str, Any] | None
) -> AsyncIterator[Any]:
    """A connected nats-py client, closed on exit (even when cancelled)."""
    client = await host.call(
        _connect, url, within, dict(options or {}), close_if_cancelled=_close_client
    )
    try:
        yield client
    finally:
        with anyio.CancelScope(shield=True):
            await host.call(client.close)


def _check_jetstream_name(where: str, name: str, value: object) -> None:
    """Stream and consumer names: JetStream refuses these characters, with a vaguer error."""
    check_name(where, name, value)
    if isinstance(value, str) and any(c in value for c in ".*> /\\\t\n"):
        raise ValueError(
            f"{where}: {name} {value!r} may not contain '.', '*', '>', '/', '\\' or spaces "
            "(JetStream names are single tokens, such as 'ORDERS' or 'billing-worker')"
        )


# -- source -----------------------------------------------------------------------------


SettleVerb = Literal["ack", "nak", "term"]


async def _settle_all(settlements: Sequence[tuple[Any, SettleVerb]]) -> None:
    for msg, verb in settlements:
        await getattr(msg, verb)()


class _Settler:
    """How a source's acks and nacks reach the client.

    Under asyncio, ``msg.ack()`` is awaited at once: it only appends to the connection's
    buffer. Under trio, a call to the client's thread and back costs more than everything
    else on a message's way, so unconfirmed settlements are queued instead, and one task
    (:meth:`run`) hands every queued one over per call while the consumer goes on. A
    settlement waits at most one such call; the queue is handed over before the connection
    closes, even when the source is cancelled.
    """

    def __init__(self, host: AsyncioHost, *, confirm_acks: bool, name: str) -> None:
        self._host = host
        self._confirm_acks = confirm_acks
        self._name = name
        self.queued = host.hosted
        self._queue: list[tuple[Any, SettleVerb]] = []
        self._wake = anyio.Event()
        self._closing = False
        self._failure: Exception | None = None
        # Messages fetched and not settled yet: what this source adds to the durable's
        # num_ack_pending. A settlement wakes a fetch waiting for room under the limit.
        self.outstanding = 0
        self._settled_one = anyio.Event()

    def fetched(self, count: int) -> None:
        self.outstanding += count

    async def wait_for_a_settlement(self) -> None:
        self._settled_one = anyio.Event()
        await self._settled_one.wait()

    async def settle(self, msg: Any, verb: SettleVerb) -> None:
        self.outstanding -= 1
        self._settled_one.set()
        if self._closing:
            raise ServiceUnavailableError(
                f"{self._name}: the source is closed; settle its messages inside its block "
                "(JetStream delivers this one again after ack_wait)"
            )
        self.check()
        confirm = verb == "ack" and self._confirm_acks
        if self.queued and not confirm:
            self._queue.append((msg, verb))
            self._wake.set()
            return
        try:
            # ack_sync waits for the server's reply; the others only reach the connection.
            await self._host.call(msg.ack_sync if confirm else getattr(msg, verb))
        except nats.errors.ConnectionClosedError as error:
            raise ServiceUnavailableError(
                f"{self._name}: the connection to nats is closed; JetStream delivers the "
                "message again after ack_wait"
            ) from error

    def check(self) -> None:
        """Raise what went wrong handing queued settlements over, if anything did."""
        if self._failure is not None:
            raise ServiceUnavailableError(
                f"{self._name}: acknowledgements could not be sent ({self._failure!r}); "
                "the unacknowledged messages will be delivered again"
            ) from self._failure

    async def run(self) -> None:
        """Hand queued settlements over until :meth:`close` (under trio only)."""
        try:
            while True:
                if not self._queue:
                    if self._closing:
                        return
                    self._wake = anyio.Event()
                    await self._wake.wait()
                    continue
                await self._hand_over()
        finally:
            await self._hand_over()  # what was queued when cancelled

    def close(self) -> None:
        self._closing = True
        self._wake.set()

    async def _hand_over(self) -> None:
        queue, self._queue = self._queue, []
        if not queue or self._failure is not None:
            return
        try:
            # Shielded: a cancelled source still acks what its consumer acked.
            with anyio.CancelScope(shield=True):
                await self._host.call(_settle_all, queue)
        except Exception as error:  # reported by the next settlement or fetch
            self._failure = error


class _JetStreamAck(Settlement):
    """``msg.ack()`` of one message; a nack is ``nak`` (deliver again now) or ``term``."""

    __slots__ = ("_msg", "_settler")

    def __init__(self, settler: _Settler, msg: Any) -> None:
        # The stream sequence: the same on every delivery of the message.
        super().__init__(identity=msg.metadata.sequence.stream)
        self._settler = settler
        self._msg = msg

    async def _ack(self) -> None:
        await self._settler.settle(self._msg, "ack")

    async def _nack(self, requeue: bool) -> None:
        await self._settler.settle(self._msg, "nak" if requeue else "term")


async def _ensure_stream(js: Any, stream: str, subject: str, create: bool) -> None:
    """Check that the stream exists; with ``create``, make it (capturing ``subject``)."""
    try:
        await js.stream_info(stream)
    except nats.errors.NoRespondersError as error:  # nobody answers JetStream's API
        raise ServiceUnavailableError(
            "nats: the server does not run JetStream; start it with JetStream enabled "
            "(nats-server -js)"
        ) from error
    except nats.js.errors.NotFoundError:
        if not create:
            raise ValueError(
                f"nats: JetStream has no stream {stream!r}; create it, or pass create=True to "
                f"create it capturing {subject!r}"
            ) from None
        await js.add_stream(name=stream, subjects=[subject])


async def _subscribe(
    client: Any, stream: str, subject: str, durable: str, config: Any, create: bool
) -> Any:
    """The pull subscription of the durable consumer, creating what is missing."""
    js = client.jetstream()
    await _ensure_stream(js, stream, subject, create)
    # pull_subscribe creates the durable consumer with ``config`` unless it exists already.
    return await js.pull_subscribe(subject, durable=durable, stream=stream, config=config)


class JetStreamSource:
    """The async iterable :func:`jetstream_source` yields: the consumer's messages as
    :class:`~rxflow.connectors.Message` records (key: the subject).

    Attributes:
        decoder: the :class:`~rxflow.connectors.Decoder`, with its counts (``decoded``,
            ``skipped``, ``dead_lettered``).
        name: ``"nats:<stream>/<durable>"``, the messages' ``source``.
        fetches: fetch requests that returned messages so far.
        released: messages fetched and never handed out, nakked when the source closed so
            that JetStream delivers them again at once.
        connection: the nats-py client (on :attr:`host`'s loop), for what this API lacks.
        in_flight_limit: the durable's ``max_ack_pending`` (an
            :class:`~rxflow.connectors.InFlightLimit`; None if unlimited). It counts the
            unacknowledged messages of every worker sharing the durable. A
            :class:`rxflow.Flow` fails with :class:`~rxflow.errors.InFlightLimitError`
            when its windows hold that many. Messages are identified by their stream
            sequence, so a flow never counts a redelivery (after ``ack_wait``) twice.

    Example (needs a NATS server with JetStream)::

        async with jetstream_source(
            "nats://localhost:4222", "ORDERS", "orders.>", "billing", codec="json"
        ) as orders:
            async for message in orders:
                print(message.key, message.value)
                await message.ack()
    """

    def __init__(
        self,
        *,
        host: AsyncioHost,
        connection: Any,
        subscription: Any,
        decoder: Decoder,
        batch: int,
        fetch_timeout: float,
        settler: _Settler,
        in_flight_limit: InFlightLimit | None,
    ) -> None:
        self.host = host
        self.in_flight_limit = in_flight_limit
        self.connection = connection
        self._subscription = subscription
        self.decoder = decoder
        self.name = decoder.source
        self._batch = batch
        self._fetch_timeout = fetch_timeout
        self._settler = settler
        self.fetches = 0
        self.released = 0  # fetched, never taken, and nakked when the source closed
        # What the last fetch returned and the consumer has not taken yet (at most a batch):
        # kept here, not in an iterator, so that a loop that breaks and starts again
        # continues where it stopped.
        self._fetched: deque[Any] = deque()
        self._fetching = anyio.Lock()

    async def consumer_info(self) -> Any:
        """The durable consumer's state as JetStream reports it (``num_ack_pending``,
        ``num_pending``, ``delivered``...): a ``nats.js.api.ConsumerInfo``."""
        return await self.host.call(self._subscription.consumer_info)

    def __aiter__(self) -> JetStreamSource:
        return self

    async def __anext__(self) -> Message[Any]:
        while True:
            if not self._fetched:
                async with self._fetching:  # one fetch at a time on the subscription
                    if not self._fetched:
                        self._fetched.extend(await self._fetch())
                continue
            msg = self._fetched.popleft()
            try:
                value = await self.decoder.decode(msg.data, key=msg.subject)
            except BaseException:
                # Not handed out (a DecodeError, a cancelled dead letter): still ours to
                # give back at close, and the next call meets it again.
                self._fetched.appendleft(msg)
                raise
            if value is SKIPPED:
                await self._settler.settle(msg, "ack")  # set aside by the policy: handled
                continue
            return Message(
                value,
                msg.subject,
                dict(msg.headers or {}),
                msg.metadata.timestamp.timestamp(),
                self.name,
                _JetStreamAck(self._settler, msg),
            )

    async def _release(self) -> None:
        """Nak, as the source closes, what the last fetch returned and the consumer never
        took: JetStream delivers it again at once, to any worker of the durable, instead
        of after ``ack_wait``. Shielded (a cancelled source hands it back too); a nak that
        cannot be sent leaves the message to ``ack_wait``."""
        fetched, self._fetched = list(self._fetched), deque()
        with anyio.CancelScope(shield=True):
            for msg in fetched:
                with contextlib.suppress(ServiceUnavailableError, nats.errors.Error):
                    await self._settler.settle(msg, "nak")
                    self.released += 1

    async def _fetch(self) -> list[Any]:
        """The next batch: asked for only now, when the consumer wants another message.

        Messages fetched and never taken (the consumer stopped reading) are nakked when the
        source closes (:meth:`_release`), so JetStream delivers them again at once.

        An empty fetch while the consumer is at ``max_ack_pending`` with messages waiting
        (its workers hold that many unacknowledged) means held back, not idle: the pipe's
        source time stands still until messages come, so windows do not let event time
        pass over the messages that wait.
        """
        source_time = current_source_time()
        held_back = False
        settler = self._settler
        limit = self.in_flight_limit.count if self.in_flight_limit is not None else None
        try:
            while True:
                settler.check()
                want = self._batch
                if limit is not None:
                    if settler.outstanding >= limit:
                        # Our own unsettled messages fill max_ack_pending: JetStream sends
                        # nothing until one is settled. Held back, not idle.
                        if source_time is not None and not held_back:
                            held_back = True
                            source_time.pause()
                        await settler.wait_for_a_settlement()
                        continue
                    # No more than fits: a pull for more waits out fetch_timeout at the
                    # server before it returns what it could deliver.
                    want = min(want, limit - settler.outstanding)
                try:
                    messages: list[Any] = await self.host.call(
                        self._subscription.fetch, want, self._fetch_timeout
                    )
                except TimeoutError:  # nats-py's timeouts subclass it
                    # Nothing arrived within fetch_timeout: ask again.
                    if source_time is not None and not held_back:
                        held_back = await self._held_back()
                        if held_back:
                            source_time.pause()
                    continue
                except nats.errors.ConnectionClosedError as error:
                    raise ServiceUnavailableError(
                        f"{self.name}: the connection to nats was closed while reading"
                    ) from error
                self.fetches += 1
                settler.fetched(len(messages))
                return messages
        finally:
            if held_back:
                assert source_time is not None
                source_time.resume()

    async def _held_back(self) -> bool:
        """Whether the consumer has messages to deliver but may not: at max_ack_pending."""
        info = await self.consumer_info()
        limit = info.config.max_ack_pending or 0
        return bool(info.num_pending) and limit > 0 and info.num_ack_pending >= limit


@contextlib.asynccontextmanager
async def jetstream_source(
    url: str,
    stream: str,
    subject: str,
    durable: str,
    *,
    codec: Codec | CodecName = "bytes",
    on_decode_error: DecodePolicy = "raise",
    dead_letter: Callable[[DecodeFailure], Awaitable[object] | object] | None = None,
    batch: int = DEFAULT_BATCH,
    fetch_timeout: float = DEFAULT_FETCH_TIMEOUT_S,
    ack_wait: float | None = None,
    max_ack_pending: int | None = None,
    confirm_acks: bool = False,
    create: bool = False,
    connect_timeout: float = CONNECT_TIMEOUT_S,
    connect_options: Mapping[str, Any] | None = None,
) -> AsyncIterator[JetStreamSource]:
    """Read a JetStream stream through a durable pull consumer, as ``Message`` records.

    Args:
        url: the server, ``"nats://host:4222"``.
        stream: the JetStream stream to read.
        subject: the consumer's filter subject (wildcards allowed, ``"orders.>"``).
        durable: the durable consumer's name. Workers that use the same name share the
            messages; the consumer, and what it has acknowledged, outlives the connection.
        codec: ``"bytes"``, ``"text"``, ``"json"`` or a function ``bytes -> value``.
        on_decode_error: the decode policy, ``"raise"``, ``"skip"`` or ``"dead_letter"``
            (:mod:`rxflow.connectors.codecs`).
        dead_letter: the function given what fails to decode, with ``"dead_letter"``.
        batch: the most messages one fetch asks for. A fetch happens only when the consumer
            wants a message and the previous fetch is used up.
        fetch_timeout: how long one fetch waits for messages on the server before asking
            again (the iteration itself waits as long as it takes).
        ack_wait: seconds JetStream waits for an ack before delivering the message again
            (server default 30). Used when the consumer is created, like ``max_ack_pending``
            (the most messages delivered and not yet acknowledged, across all workers;
            server default 1,000). In a :class:`rxflow.Flow` a window keeps its messages
            unacknowledged until it is written: a flow whose windows hold
            ``max_ack_pending`` messages fails with :class:`~rxflow.errors.InFlightLimitError`
            (size it above what your open windows hold), and keep ``ack_wait`` above the
            window length (a redelivery of a held message is recognised by its stream
            sequence and not counted twice, but costs a round trip).
        confirm_acks: make ``message.ack()`` wait for the server's confirmation (a round
            trip per ack) instead of returning once the ack is handed to the connection. An
            unconfirmed ack lost with its connection only means one more delivery.
        create: create the stream (capturing ``subject``) if it does not exist.
        connect_timeout: seconds to reach the server before ``ServiceUnavailableError``.
        connect_options: more keyword arguments for ``nats.connect`` (credentials, TLS...).

    Leaving the block closes the connection. Messages fetched and never handed out are
    nakked first, so they are delivered again at once; messages handed out and not
    acknowledged by then are delivered again after ``ack_wait``.

    Raises:
        ServiceUnavailableError: the server cannot be reached.
        ValueError: the stream does not exist and ``create`` is false; a bad argument.

    Example (needs a NATS server with JetStream)::

        async with jetstream_source(
            "nats://localhost:4222", "ORDERS", "orders.>", "billing", codec="json"
        ) as orders:
            async with rxflow.open_pipe(orders, ops.filter(is_big)) as big:
                async for message in big:
                    await handle(message.value)
                    await message.ack()
    """
    where = "jetstream_source()"
    check_name(where, "url", url)
    check_name(where, "subject", subject)
    _check_jetstream_name(where, "stream", stream)
    _check_jetstream_name(where, "durable", durable)
    check_count(where, "batch", batch)
    check_count(where, "max_ack_pending", max_ack_pending, optional=True)
    check_seconds(where, "fetch_timeout", fetch_timeout)
    check_seconds(where, "ack_wait", ack_wait, optional=True)
    check_seconds(where, "connect_timeout", connect_timeout)
    decoder = Decoder(
        codec,
        on_decode_error=on_decode_error,
        dead_letter=dead_letter,
        source=f"nats:{stream}/{durable}",
    )
    config = nats.js.api.ConsumerConfig(
        ack_policy=nats.js.api.AckPolicy.EXPLICIT,
        ack_wait=ack_wait,
        max_ack_pending=max_ack_pending,
    )
    async with (
        AsyncioHost() as host,
        _connected(host, url, connect_timeout, connect_options) as client,
    ):
        subscription = await host.call(_subscribe, client, stream, subject, durable, config, create)
        # The durable's own setting, which an existing consumer may have set differently.
        info = await host.call(subscription.consumer_info)
        pending_limit = info.config.max_ack_pending or 0
        settler = _Settler(host, confirm_acks=confirm_acks, name=decoder.source)
        source = JetStreamSource(
            host=host,
            connection=client,
            subscription=subscription,
            decoder=decoder,
            batch=batch,
            fetch_timeout=fetch_timeout,
            settler=settler,
            in_flight_limit=(
                InFlightLimit(pending_limit, "max_ack_pending") if pending_limit > 0 else None
            ),
        )
        body_error: Exception | None = None
        try:
            async with anyio.create_task_group() as task_group:
                if settler.queued:
                    task_group.start_soon(settler.run)
                try:
                    yield source
                except Exception as error:
                    # Raised below, outside the task group, as itself (not in a group).
                    body_error = error
                finally:
                    await source._release()
                    settler.close()
        finally:
            with anyio.CancelScope(shield=True), contextlib.suppress(nats.errors.Error):
                await host.call(subscription.unsubscribe)
        if body_error is not None:
            raise body_error


# -- sink -------------------------------------------------------------------------------


def _encode_bytes(value: Any) -> bytes:
    if not isinstance(value, bytes | bytearray | memoryview):
        raise TypeError(
            f"jetstream_sink(encoder='bytes') takes bytes, got {type(value).__name__}: use "
            "encoder='auto', 'text' or 'json', or a function value -> bytes"
        )
    return bytes(value)


def _encode_text(value: Any) -> bytes:
    return str(value).encode("utf-8")


def _encode_json(value: Any) -> bytes:
    return json.dumps(value).encode("utf-8")


ENCODERS: Final[dict[str, Encoder]] = {
    "auto": encode_auto,
    "bytes": _encode_bytes,
    "text": _encode_text,
    "json": _encode_json,
}


def _resolve_encoder(encoder: Encoder | EncoderName) -> Encoder:
    if isinstance(encoder, str):
        try:
            return ENCODERS[encoder]
        except KeyError:
            raise ValueError(
                f"jetstream_sink(): unknown encoder {encoder!r}; use one of "
                f"{', '.join(map(repr, ENCODERS))} or a function value -> bytes"
            ) from None
    if not callable(encoder):
        raise TypeError(
            f"jetstream_sink(): encoder must be a name or a function value -> bytes, got "
            f"{encoder!r}"
        )
    return encoder


async def _publish(js: Any, subject: str, stream: str | None, payload: bytes) -> None:
    try:
        await js.publish(subject, payload, stream=stream)
    except nats.js.errors.NoStreamResponseError:
        raise ValueError(
            f"nats: no JetStream stream captures subject {subject!r}; create one whose "
            "subjects match it (jetstream_source(create=True) does)"
        ) from None


async def _publish_all(
    js: Any, subject: str, stream: str | None, payloads: Sequence[bytes]
) -> None:
    """Publish every payload at once and wait for all their PubAcks (on the client's loop).

    ``gather`` waits for every publish even when one fails (and cancels them all when it is
    cancelled), so no publish outlives the call; the first failure is raised as itself.
    """
    outcomes = await asyncio.gather(
        *(_publish(js, subject, stream, payload) for payload in payloads), return_exceptions=True
    )
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome


class JetStreamSink:
    """The sink :func:`jetstream_sink` yields: publishes values to a subject and returns
    once JetStream stored them.

    Attributes:
        batch_size: how many items a flow should hand to :meth:`send_batch` at once.
        sent: messages confirmed so far.

    Example (needs a NATS server with JetStream)::

        async with jetstream_sink("nats://localhost:4222", "orders.new") as orders:
            await orders.send({"id": 1})
            await orders.send_batch([{"id": 2}, {"id": 3}])
    """

    def __init__(
        self,
        *,
        host: AsyncioHost,
        js: Any,
        subject: str,
        stream: str | None,
        encoder: Encoder,
        batch_size: int,
    ) -> None:
        self._host = host
        self._js = js
        self.subject = subject
        self.stream = stream
        self._encode = encoder
        self.batch_size = batch_size
        self.sent = 0

    async def send(self, item: Any) -> None:
        """Publish one item; return once JetStream acknowledged it."""
        await self._host.call(_publish, self._js, self.subject, self.stream, self._encode(item))
        self.sent += 1

    async def send_batch(self, items: Sequence[Any]) -> None:
        """Publish the items concurrently; return once JetStream acknowledged every one.

        If one fails, the error is raised after the others finished (some may be stored:
        delivery is at-least-once).
        """
        payloads = [self._encode(item) for item in items]
        if payloads:
            await self._host.call(_publish_all, self._js, self.subject, self.stream, payloads)
            self.sent += len(payloads)


@contextlib.asynccontextmanager
async def jetstream_sink(
    url: str,
    subject: str,
    *,
    encoder: Encoder | EncoderName = "auto",
    batch_size: int = DEFAULT_SINK_BATCH,
    stream: str | None = None,
    create: bool = False,
    connect_timeout: float = CONNECT_TIMEOUT_S,
    connect_options: Mapping[str, Any] | None = None,
) -> AsyncIterator[JetStreamSink]:
    """Publish values to a JetStream subject, each confirmed by the server's ``PubAck``.

    Args:
        url: the server, ``"nats://host:4222"``.
        subject: where to publish; a stream must capture it.
        encoder: how a value becomes the payload: ``"auto"`` (bytes as they are, ``str`` as
            UTF-8, anything else as JSON), ``"bytes"``, ``"text"``, ``"json"``, or a
            function ``value -> bytes``.
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
        _check_jetstream_name(where, "stream", stream)
    elif create:
        raise ValueError(f"{where}: create=True needs the stream's name: pass stream=")
    encode = _resolve_encoder(encoder)
    async with (
        AsyncioHost() as host,
        _connected(host, url, connect_timeout, connect_options) as client,
    ):
        js = client.jetstream()
        if stream is not None:
            await host.call(_ensure_stream, js, stream, subject, create)
        yield JetStreamSink(
            host=host,
            js=js,
            subject=subject,
            stream=stream,
            encoder=encode,
            batch_size=batch_size,
        )
