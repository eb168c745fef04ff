"""The JetStream source: a durable pull consumer read on the connector kit."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from functools import partial
from typing import Any, Final, NamedTuple

import anyio

from rxflow._checks import check_count, check_name, check_seconds
from rxflow.connectors._asyncio_host import AsyncioHost
from rxflow.connectors._extras import requires_extra
from rxflow.connectors._kit import (
    DEFAULT_READ_AHEAD_BYTES,
    NO_HEADERS,
    BrokerSource,
    Incoming,
    Verb,
)
from rxflow.connectors._message import InFlightLimit
from rxflow.connectors.codecs import CodecSpec, DecodeFailure, DecodePolicy, Decoder
from rxflow.connectors.nats._client import (
    CONNECT_TIMEOUT_S,
    check_jetstream_name,
    connected,
    ensure_stream,
)
from rxflow.connectors.nats._orphans import NOTHING_PENDING, Recovery, Survey, survey
from rxflow.connectors.nats._reply import delivery_of
from rxflow.connectors.nats._settling import (
    Pulls,
    in_progress_each,
    nak_each,
    settle_all,
    stop_and_nak,
)
from rxflow.connectors.nats._workers import RollCall
from rxflow.errors import ServiceUnavailableError

with requires_extra("nats"):
    import nats.errors
    import nats.js.api
    from nats.aio.msg import Msg

__all__ = ["JetStreamSource", "jetstream_source"]

logger = logging.getLogger("rxflow.connectors")

DEFAULT_BATCH: Final = 32
DEFAULT_FETCH_TIMEOUT_S: Final = 5.0


class _Subscribed(NamedTuple):
    subscription: Any  # nats-py's pull subscription of the durable consumer
    in_flight_limit: InFlightLimit | None  # the durable's own max_ack_pending
    typical_size: int | None  # the stream's average message size (None if it is empty)


async def _subscribe(
    client: Any, stream: str, subject: str, durable: str, config: Any, create: bool
) -> _Subscribed:
    """The durable consumer's pull subscription, creating what is missing."""
    js = client.jetstream()
    stream_info = await ensure_stream(js, stream, subject, create)
    # pull_subscribe creates the durable consumer with ``config`` unless it exists already,
    # so its max_ack_pending may differ from ours: ask.
    subscription = await js.pull_subscribe(subject, durable=durable, stream=stream, config=config)
    pending_limit = (await subscription.consumer_info()).config.max_ack_pending or 0
    # The stream's bytes count subjects, headers and storage overhead too: a little more
    # than the payloads, so a first fetch sized by it stays within the read-ahead bytes.
    state = stream_info.state if stream_info is not None else None
    return _Subscribed(
        subscription,
        InFlightLimit(pending_limit, "max_ack_pending") if pending_limit > 0 else None,
        state.bytes // state.messages if state is not None and state.messages else None,
    )


class _Reader:
    """The kit's view of the durable's pull subscription (see
    :class:`~rxflow.connectors._kit.Reader`): every call goes to the client's loop."""

    def __init__(
        self,
        host: AsyncioHost,
        subscribed: _Subscribed,
        name: str,
        *,
        roll_call: RollCall,
        fetch_timeout: float,
        confirm_acks: bool,
        redeliveries_first: bool,
    ) -> None:
        self._host, self.subscription, self.name = host, subscribed.subscription, name
        self.roll_call = roll_call
        # Whether the first fetch surveys what gone workers left pending (_orphans); the
        # Recovery that fetches while that comes again (plain fetches once it is over).
        self._survey_first = redeliveries_first
        self.recovery: Recovery | None = None
        self.survey = NOTHING_PENDING  # what the first fetch found
        self._fetch_timeout, self._confirm_acks = fetch_timeout, confirm_acks
        # The durable's max_ack_pending: JetStream delivers no more unacknowledged messages.
        self.in_flight_limit = subscribed.in_flight_limit
        # Under trio each call is a hop to the client's thread: settlements are queued and
        # written in runs, unless each ack is to wait for the server's confirmation.
        self.queues_settlements = host.hosted and not confirm_acks
        self.pulls = Pulls()  # see Pulls: given back when the source closes

    async def fetch(self, count: int, max_bytes: int) -> list[Incoming[Msg]]:
        # nats-py's fetch() cannot put max_bytes in the pull request (nats.py issue 413):
        # the kit bounds the bytes by the count it asks for.
        if self._survey_first:  # the first fetch (the kit fetches one at a time)
            self._survey_first = False
            await self._survey()
        if self.recovery is not None and not self.recovery.over:
            return await self.recovery.fetch(count, self._fetch, self._in_progress)
        return await self._fetch(count)

    async def _in_progress(self, msgs: list[Msg]) -> None:
        if msgs:
            await self._host.call(in_progress_each, msgs)

    async def _fetch(self, count: int) -> list[Incoming[Msg]]:
        try:
            return await self._host.call(
                _fetch,
                self.subscription,
                count,
                self._fetch_timeout,
                self.roll_call,
                self.pulls,
            )
        except nats.errors.ConnectionClosedError as error:
            raise ServiceUnavailableError(
                f"{self.name}: the connection to nats was closed while reading"
            ) from error

    async def _survey(self) -> None:
        self.survey = found = await self._host.call(survey, self.subscription, self.roll_call)
        if found.pending:
            logger.info(
                "%s: %d message(s) delivered before this worker started are unacknowledged "
                "and no other worker holds them: they are read first (a crashed worker's "
                "come again within %.1f s; newer messages wait for them)",
                self.name,
                found.pending,
                found.wait,
            )
            self.recovery = Recovery(found)

    async def settle(self, settlements: Sequence[tuple[Msg, Verb]]) -> None:
        try:
            await self._host.call(settle_all, settlements, self._confirm_acks, self.pulls)
        except nats.errors.ConnectionClosedError as error:
            raise ServiceUnavailableError(
                f"{self.name}: acknowledgements could not be sent: the connection to nats is "
                "closed; JetStream delivers the unacknowledged messages again after ack_wait"
            ) from error

    async def release(self, unhanded: Sequence[Msg]) -> int:
        # The kit calls this when the source closes (this reader has no requeue_rereads).
        # A nak, so JetStream delivers them again at once, to any worker of the durable.
        return await self._host.call(stop_and_nak, self.subscription, unhanded, self.pulls)

    async def give_back(self) -> int:
        """Nak every message handed out and never settled (the source is closing, after
        its queued settlements were written), so JetStream delivers them again at once."""
        left = list(self.pulls.unsettled.values())
        return await self._host.call(nak_each, left, self.pulls) if left else 0

    async def held_back(self) -> bool:
        """Whether the consumer has messages to deliver but may not: at max_ack_pending
        (its workers hold that many unacknowledged)."""
        info = await self._host.call(self.subscription.consumer_info)
        limit = info.config.max_ack_pending or 0
        return bool(info.num_pending) and limit > 0 and info.num_ack_pending >= limit


async def _fetch(
    subscription: Any, count: int, poll_s: float, roll_call: RollCall, pulls: Pulls
) -> list[Incoming[Msg]]:
    """The next messages, described for the kit on the client's loop (under trio, its
    thread parses the metadata while the caller's thread goes on); [] if none came."""
    msgs = await pulls.pull(partial(_pull, subscription, count, poll_s, roll_call, pulls))
    return [_incoming(msg) for msg in msgs]


async def _pull(
    subscription: Any, count: int, poll_s: float, roll_call: RollCall, pulls: Pulls
) -> list[Msg]:
    """One nats-py fetch, its messages unsettled from now on (see Pulls.pull)."""
    roll_call.fetching += 1  # a pull request of ours waits at the server meanwhile
    pulls.expires = asyncio.get_running_loop().time() + poll_s
    try:
        msgs: list[Msg] = await subscription.fetch(count, poll_s)
    except TimeoutError:  # nats-py's timeouts subclass it: nothing came, ask again
        return []
    finally:
        # nats-py returns once the batch is full or the request expired: it is done.
        pulls.expires = None
        roll_call.fetching -= 1
    for msg in msgs:
        pulls.unsettled[id(msg)] = msg
    return msgs


def _incoming(msg: Msg) -> Incoming[Msg]:
    delivery = delivery_of(msg)  # not msg.metadata: see _reply
    # Positional: a NamedTuple built from keywords costs a microsecond more, per message.
    return Incoming(
        msg.data,
        msg,
        msg.subject,  # key
        dict(msg.headers) if msg.headers else NO_HEADERS,
        delivery.timestamp,
        delivery.stream_sequence,  # identity: the same on every delivery of the message
        len(msg.data),  # size
        delivery.num_delivered > 1,  # redelivered
    )


class JetStreamSource(BrokerSource[Any, Msg]):
    """The async iterable :func:`jetstream_source` yields: the consumer's messages as
    :class:`~rxflow.connectors.Message` records (key: the subject; identity: the stream
    sequence). Besides the kit's attributes (``decoder``, ``name``, ``fetches``,
    ``buffered``, ``buffered_bytes``, ``next_run()``, ``ack_many()``):

    Attributes:
        released: messages fetched and never handed out, nakked when the source closed so
            that JetStream delivers them again at once.
        given_back: messages handed out and never settled (an aborted flow's
            unacknowledged messages, say), or fetched for a read the close cancelled,
            nakked when the source closed so that JetStream delivers them again at once,
            before any message it has not delivered yet.
        survey: what the first fetch found pending (delivered, not acknowledged) with no
            other worker to settle it, and read first (see ``redeliveries_first``): a
            ``(pending, boundary, wait)`` tuple (how many; the stream sequence of the last
            delivery; the seconds until all are due again, at most).
        waited: seconds the source held newer messages back until a crashed worker's
            messages were due again.
        host: the :class:`~rxflow.connectors._asyncio_host.AsyncioHost` the client runs on.
        connection: the nats-py client (on :attr:`host`'s loop), for what this API lacks.
        in_flight_limit: the durable's ``max_ack_pending`` (an
            :class:`~rxflow.connectors.InFlightLimit`; None if unlimited). It counts the
            unacknowledged messages of every worker sharing the durable. A
            :class:`rxflow.Flow` fails with :class:`~rxflow.errors.InFlightLimitError`
            when its windows hold that many. Messages are identified by their stream
            sequence, so a flow never counts a redelivery (after ``ack_wait``) twice.

    Example (needs a NATS server with JetStream)::

        async with jetstream_source(url, "ORDERS", "orders.>", "billing") as orders:
            print((await orders.consumer_info()).num_pending, orders.in_flight_limit)
    """

    shares_work: Final = True
    """A durable consumer hands each message to any of its workers: a :class:`rxflow.Flow`
    with keyed windows over this source refuses to run while :meth:`other_workers` sees
    others."""

    def __init__(
        self, reader: _Reader, decoder: Decoder, *, connection: Any, **bounds: Any
    ) -> None:
        super().__init__(reader, decoder, **bounds)
        self.host = reader._host
        self.connection = connection
        self._subscription = reader.subscription
        self._roll_call = reader.roll_call
        self._reader = reader
        self.given_back = 0

    @property
    def survey(self) -> Survey:
        return self._reader.survey

    @property
    def waited(self) -> float:
        recovery = self._reader.recovery
        return recovery.waited if recovery is not None else 0.0

    async def other_workers(self) -> int:
        """How many other clients read the durable consumer now (best effort; it takes
        about 0.3 s).

        JetStream does not list a pull consumer's clients, so two signals count, and the
        larger wins. Every open ``jetstream_source`` answers a roll call on the core NATS
        subject ``_RXFLOW.WORKERS.<stream>.<durable>``: this sees every rxflow worker of
        the durable, busy or idle (a user whose permissions forbid that subject gets no
        answers, and only the second signal). And the consumer's ``num_waiting``, the pull
        requests waiting at the server less this source's own: this sees any client, but
        only while it waits for messages (a worker busy with what it fetched has no
        request waiting), so a non-rxflow client may be missed while the stream is busy.

        Example (needs a NATS server with JetStream)::

            async with jetstream_source(url, "CLICKS", "clicks.>", "sessions") as clicks:
                assert await clicks.other_workers() == 0, "this worker must run alone"
        """
        return await self.host.call(self._roll_call.others, self._subscription)

    async def consumer_info(self) -> Any:
        """The durable consumer's state as JetStream reports it (``num_ack_pending``,
        ``num_pending``, ``delivered``...): a ``nats.js.api.ConsumerInfo``."""
        return await self.host.call(self._subscription.consumer_info)


@contextlib.asynccontextmanager
async def jetstream_source(
    url: str,
    stream: str,
    subject: str,
    durable: str,
    *,
    codec: CodecSpec = "bytes",
    on_decode_error: DecodePolicy = "raise",
    dead_letter: Callable[[DecodeFailure], Awaitable[object] | object] | None = None,
    batch: int = DEFAULT_BATCH,
    read_ahead_bytes: int = DEFAULT_READ_AHEAD_BYTES,
    fetch_timeout: float = DEFAULT_FETCH_TIMEOUT_S,
    ack_wait: float | None = None,
    max_ack_pending: int | None = None,
    confirm_acks: bool = False,
    redeliveries_first: bool = True,
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
        codec: ``"bytes"``, ``"text"``, ``"json"``, a record class, an Avro reader or a
            function ``bytes -> value`` (:mod:`rxflow.connectors.codecs`).
        on_decode_error: the decode policy, ``"raise"``, ``"skip"`` or ``"dead_letter"``.
        dead_letter: the function given what fails to decode, with ``"dead_letter"``.
        batch: the most messages one fetch asks for. A fetch happens only when the consumer
            wants a message and the previous fetch is used up.
        read_ahead_bytes: at most this many payload bytes fetched and not handed out yet,
            plus one message: a fetch asks for no more messages than fit at the average
            size seen so far (before the first, the stream's own average).
        fetch_timeout: how long one fetch waits for messages on the server before asking
            again (the iteration itself waits as long as it takes). A source that closes
            with messages to give back (nak) waits until its last pull request expired, up
            to this long, so that the request takes none of them.
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
        redeliveries_first: if the source starts while the durable has messages delivered
            and not acknowledged, and no other worker reads the durable, it reads them
            first: those a closing source nakked at once, and those a crashed worker left
            (JetStream delivers them again only ``ack_wait`` after their delivery) by
            holding newer messages back (one fetch's worth) until they came. A restarted
            flow's event-time windows need that: after newer ones, they would be late.
            False: read on at once, and get them whenever they come.
        create: create the stream (capturing ``subject``) if it does not exist.
        connect_timeout: seconds to reach the server before ``ServiceUnavailableError``.
        connect_options: more keyword arguments for ``nats.connect`` (credentials, TLS...).

    Leaving the block closes the connection. Messages fetched and not settled by then are
    nakked first (those never handed out, and those handed out and never acknowledged), so
    JetStream delivers them again at once, before the messages it has not delivered yet: a
    flow aborted with messages in its windows gets them back in order when it starts again.
    Only a crash (no nak is sent) leaves them to ``ack_wait``; the next source to start on
    the durable then waits for them before it reads newer ones (``redeliveries_first``).

    Each message's ``key`` is its subject and ``identity`` its stream sequence;
    ``message.settlement.redelivered`` says JetStream delivered it before. Settling a message
    after the block ended raises :class:`~rxflow.errors.SettledAfterCloseError`.

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
    check_jetstream_name(where, "stream", stream)
    check_jetstream_name(where, "durable", durable)
    check_count(where, "batch", batch)
    check_count(where, "read_ahead_bytes", read_ahead_bytes)
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
        connected(host, url, connect_timeout, connect_options) as client,
    ):
        subscribed = await host.call(_subscribe, client, stream, subject, durable, config, create)
        roll_call = RollCall(client, stream, durable)
        reader = _Reader(
            host,
            subscribed,
            decoder.source,
            roll_call=roll_call,
            fetch_timeout=fetch_timeout,
            confirm_acks=confirm_acks,
            redeliveries_first=redeliveries_first,
        )
        source: JetStreamSource | None = None
        try:
            await host.call(roll_call.join)
            async with JetStreamSource(
                reader,
                decoder,
                connection=client,
                read_ahead=batch,
                read_ahead_bytes=read_ahead_bytes,
                expected_size=subscribed.typical_size,
            ) as source:
                yield source
        finally:
            with anyio.CancelScope(shield=True):
                if source is not None:  # closed: its queued settlements are written
                    source.given_back = await reader.give_back()
                for leave in (roll_call.leave, subscribed.subscription.unsubscribe):
                    with contextlib.suppress(nats.errors.Error):
                        await host.call(leave)
