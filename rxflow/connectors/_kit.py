"""The connector kit for brokers: one source loop and one sink shape, for every system.

Every broker source is the same loop: fetch a batch (no more than the pipe, the system's
in-flight limit and the read-ahead bound leave room for), decode each record with the
source's :class:`~rxflow.connectors.codecs.Decoder`, settle at once what the decode policy set
aside, hand out :class:`~rxflow.connectors.Message` records, and settle them (ack, nack) when
the flow or the user says so. :class:`BrokerSource` owns that loop; a broker module supplies
only a :class:`Reader`: its client's fetch, settle and release calls.

What the kit guarantees, for every system:

* **Bounded read-ahead.** Records fetched and not handed out (``buffered``) are at most
  ``read_ahead`` records, and their payloads at most ``read_ahead_bytes`` bytes plus one
  record: a fetch asks for no more records than the byte budget holds at the average size
  seen so far (the first fetch of a source asks for one record, unless the system reported
  its records' size beforehand: ``expected_size``), and a reader whose system can bound a
  fetch in bytes is told the budget too.
* **In-flight limits.** With the system's :class:`~rxflow.connectors.InFlightLimit`, a source
  never fetches past it: at the limit it waits for a settlement, and the pipe's source time
  stands still meanwhile (held back, not idle: event-time windows must not pass over it).
* **Settlements once, in batches.** Acks go through one :class:`_Settler`: under trio a
  hosted client gets each run of queued settlements in one call to its thread, and a flow
  acks many messages with one :meth:`BrokerSource.ack_many`. Settling after the source
  closed raises :class:`~rxflow.errors.SettledAfterCloseError`: the system delivers the
  message again, which the caller must know.
* **Runs.** :meth:`BrokerSource.next_run` hands out what one fetch brought, decoded, as one
  list, so a pipe can move a fetched batch with one await.
* **Closing.** Records fetched and never handed out are given back to the system
  (:meth:`Reader.release`), queued settlements are written, shielded from cancellation.

Sinks: :class:`BrokerSink` encodes every item with the one encoder the sink was given and
hands the batch to a :class:`Publisher`, which returns once the system confirmed it.
"""

from __future__ import annotations

import contextlib
import sys
from collections import deque
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Hashable,
    Iterable,
    Mapping,
    Sequence,
)
from types import MappingProxyType
from typing import Any, ClassVar, Generic, Literal, NamedTuple, Protocol, Self

import anyio

from rxflow._source_time import current_source_time
from rxflow._task_groups import background_tasks
from rxflow.connectors._asyncio_host import AsyncioHost
from rxflow.connectors._message import InFlightLimit, Message, Settlement, describe
from rxflow.connectors.codecs import SKIPPED, Decoder, RecordRejected
from rxflow.errors import SettledAfterCloseError

if sys.version_info >= (3, 13):
    from typing import TypeVar
else:  # TypeVar defaults came with Python 3.13; typing_extensions has them before
    from typing_extensions import TypeVar

__all__ = [
    "DEFAULT_READ_AHEAD_BYTES",
    "Address",
    "AddressedPublisher",
    "NO_HEADERS",
    "BrokerSettlement",
    "BrokerSink",
    "BrokerSource",
    "Decoded",
    "Incoming",
    "Publisher",
    "Reader",
    "Verb",
]

H = TypeVar("H")  # what a reader settles a record by: a delivery, a message, an entry id
R = TypeVar("R")  # what a publisher returns for a batch
R_co = TypeVar("R_co", covariant=True)
T = TypeVar("T")
T_contra = TypeVar("T_contra", contravariant=True)
# What a sink's encoder makes of an item: its bytes, or a record of its own (the named
# fields of a Redis entry).
E = TypeVar("E", default=bytes)
E_contra = TypeVar("E_contra", contravariant=True, default=bytes)

DEFAULT_READ_AHEAD_BYTES = 16 * 1024 * 1024
"""How many payload bytes a source holds fetched and not handed out, by default (16 MiB)."""

Verb = Literal["ack", "requeue", "reject"]
"""How a record is settled: done with; failed, deliver it again; failed, do not."""

NO_HEADERS: Mapping[str, str] = MappingProxyType({})  # shared, so it must not change


class Decoded(NamedTuple):
    """A record's value as the system's client decoded it already (asyncpg's rows): handed
    out as it is, by a source that has no decoder."""

    value: Any


Payload = bytes | Mapping[str, bytes] | RecordRejected | Decoded
"""What a record carries for the codec: its bytes; named fields, each decoded on its own (a
Redis entry read whole); why the reader found it unusable before any codec saw it; or a
value that needs no codec."""


class Incoming(NamedTuple, Generic[H]):
    """One fetched record, as a reader describes it to the kit."""

    payload: Payload
    handle: H  # what the reader settles it by
    key: str | bytes | None = None
    headers: Mapping[str, str] = NO_HEADERS
    timestamp: float | None = None
    identity: Hashable | None = None  # names the record across redeliveries
    size: int = 0  # payload bytes, counted against read_ahead_bytes
    redelivered: bool | None = None  # the system's own flag, where it has one


class Reader(Protocol[H]):
    """A broker module's part of a source: its client's calls, made from the caller's loop
    (a hosted client routes them through its :class:`AsyncioHost`).

    Attributes:
        name: the source's name in messages and errors (``"rabbitmq:orders"``).
        in_flight_limit: how many records the system delivers unsettled, at most (None if
            unlimited); the kit never fetches past it.
        queues_settlements: whether settlements may be queued and written in runs by a
            task of the kit (true when each call costs a thread hop and the system does
            not answer acks); false writes each one before ``ack()`` returns.
    """

    name: str
    in_flight_limit: InFlightLimit | None
    queues_settlements: bool

    async def fetch(self, count: int, max_bytes: int) -> Sequence[Incoming[H]]:
        """At most ``count`` records (at least one), waiting for them; or an empty list when
        none came within the system's poll time (the kit asks again). ``max_bytes`` is the
        read-ahead budget, for systems that can bound a fetch in bytes."""
        ...

    async def settle(self, settlements: Sequence[tuple[H, Verb]]) -> None:
        """Settle records, in order, with as few round trips as the system allows."""
        ...

    async def release(self, unhanded: Sequence[H]) -> int:
        """As the source closes: give back records fetched and never handed out, so the
        system delivers them again soon (nak them, re-queue them), or leave them to its
        redelivery. Returns how many were given back. Called shielded, at every close
        (``unhanded`` may be empty: a system may also give back what a fetch cut off by
        a cancellation took and never returned)."""
        ...

    async def held_back(self) -> bool:
        """After an empty fetch: whether records wait that the system may not deliver
        because this consumer's group is at its in-flight limit (False if unknown)."""
        ...


class _Settler(Generic[H]):
    """Writes settlements through the reader: at once, or queued and written in runs.

    Invariant: ``outstanding`` counts records fetched (handed out or buffered) and not
    settled yet; every settlement decrements it exactly once, when it is accepted.
    """

    def __init__(self, reader: Reader[H]) -> None:
        self._reader = reader
        self.outstanding = 0
        self.closed = False
        self._queue: list[tuple[H, Verb]] = []
        self._wake = anyio.Event()
        # Set by the next settlement while the source waits at its in-flight limit (None
        # otherwise: no event to set per settlement on the hot path).
        self._settled_one: anyio.Event | None = None
        self._failure: Exception | None = None

    def check(self) -> None:
        """Raise what went wrong writing queued settlements, if anything did."""
        if self._failure is not None:
            raise self._failure

    async def settle(self, handle: H, verb: Verb, *, identity: Hashable | None) -> None:
        if self.closed:
            # (The record is named only here: a string per settlement costs on the hot path.)
            what = "a message" if identity is None else f"message {identity!r}"
            raise SettledAfterCloseError(
                f"{self._reader.name}: {what} was settled after its source closed; it was "
                "not, and the system delivers it again. Settle messages inside the source's "
                "`async with` block"
            )
        if self._failure is not None:  # check(), inline: this runs for every message
            raise self._failure
        self._accepted(1)
        if self._reader.queues_settlements:
            self._queue.append((handle, verb))
            self._wake.set()
        else:
            await self._reader.settle(((handle, verb),))

    async def settle_many(self, settlements: list[tuple[H, Verb]]) -> None:
        if self.closed:
            raise SettledAfterCloseError(
                f"{self._reader.name}: {len(settlements)} messages were settled after their "
                "source closed; they were not, and the system delivers them again"
            )
        self.check()
        self._accepted(len(settlements))
        await self._reader.settle(settlements)

    def _accepted(self, count: int) -> None:
        self.outstanding -= count
        settled_one = self._settled_one
        if settled_one is not None:
            self._settled_one = None
            settled_one.set()

    async def wait_for_a_settlement(self) -> None:
        self._settled_one = settled_one = anyio.Event()
        await settled_one.wait()

    async def run(self) -> None:
        """Write queued settlements until closed (only needed when they are queued)."""
        try:
            while not self.closed or self._queue:
                if not self._queue:
                    self._wake = anyio.Event()
                    await self._wake.wait()
                    continue
                await self._write_queued()
        finally:
            await self._write_queued()  # what was queued when cancelled

    def close(self) -> None:
        self.closed = True
        self._wake.set()

    async def _write_queued(self) -> None:
        queue, self._queue = self._queue, []
        if not queue or self._failure is not None:
            return
        try:
            # Shielded: a cancelled source still writes what its consumer settled.
            with anyio.CancelScope(shield=True):
                await self._reader.settle(queue)
        except Exception as error:  # reported by the next settlement or fetch
            self._failure = error


class BrokerSettlement(Settlement, Generic[H]):
    """Settles one record of a :class:`BrokerSource` through its reader; ``nack`` asks the
    system to deliver it again (``requeue=True``) or to drop or dead-letter it.

    ``redelivered`` is the system's own flag where it has one (RabbitMQ), else None.
    """

    __slots__ = ("_handle", "_source", "redelivered")

    def __init__(
        self,
        source: BrokerSource[Any, H],
        handle: H,
        identity: Hashable | None,
        redelivered: bool | None = None,
    ) -> None:
        super().__init__(identity)
        self._source = source
        self._handle = handle
        self.redelivered = redelivered

    @property
    def batch_acker(self) -> BrokerSource[Any, H]:
        return self._source  # its ack_many() settles many records in one call

    def _ack(self) -> Coroutine[Any, Any, None]:
        # The settler's coroutine itself, not one awaiting it: one frame less per ack.
        return self._source._settler.settle(self._handle, "ack", identity=self.identity)

    async def _nack(self, requeue: bool) -> None:
        verb: Verb = "requeue" if requeue else "reject"
        await self._source._settler.settle(self._handle, verb, identity=self.identity)
        if requeue and self._source.requeue_rereads:
            await self._source._give_back_read_ahead()


class BrokerSource(Generic[T, H]):
    """A broker's records as :class:`~rxflow.connectors.Message` records: iterate it, or take
    a fetched batch at a time with :meth:`next_run`.

    It is its own iterator: a loop that breaks and starts again continues where it stopped.
    The connector functions (``rabbitmq_source``, ``jetstream_source``...) open one and
    close it when their block ends; subclasses add what is special to a system.

    Attributes:
        name: the messages' ``source`` (``"rabbitmq:orders"``).
        decoder: the :class:`~rxflow.connectors.Decoder`, with its counts (None for a
            source whose reader hands out :class:`Decoded` values only).
        in_flight_limit: the system's limit on unsettled records (None if unlimited).
        read_ahead: at most this many records fetched and not handed out.
        read_ahead_bytes: at most this many payload bytes fetched and not handed out, plus
            one record.
        expected_size: the records' average size as the system reported it before the
            first fetch (None if unknown); it sizes fetches until records were seen.
        fetches: fetches that returned records so far.
        released: records fetched, never handed out, and given back when the source closed.

    Example (the kit's loop over an in-memory reader; a broker module's reader calls its
    client instead)::

        >>> import anyio
        >>> from rxflow.connectors._kit import BrokerSource, Incoming
        >>> from rxflow.connectors.codecs import Decoder
        >>> class ListReader:
        ...     name, in_flight_limit, queues_settlements = "demo", None, False
        ...     def __init__(self, records): self.records, self.acked = list(records), []
        ...     async def fetch(self, count, max_bytes):
        ...         taken, self.records = self.records[:count], self.records[count:]
        ...         return [Incoming(data, handle=i, size=len(data)) for i, data in taken]
        ...     async def settle(self, settlements): self.acked += [h for h, _ in settlements]
        ...     async def release(self, unhanded): return 0
        ...     async def held_back(self): return False
        >>> async def main():
        ...     reader = ListReader([(1, b"a"), (2, b"b")])
        ...     decoder = Decoder("text", source="demo")
        ...     async with BrokerSource(reader, decoder, expected_size=1) as source:
        ...         run = await source.next_run()  # what one fetch brought
        ...         await source.ack_many(run)
        ...     return [m.value for m in run], reader.acked
        >>> anyio.run(main)
        (['a', 'b'], [1, 2])
    """

    # Whether a requeued record comes again in its place, ahead of the records fetched
    # after it (a table read in id order): a requeue then gives what was read ahead back
    # to the reader (Reader.release), so that the next fetch reads in the system's order.
    # A subclass for such a system sets it.
    requeue_rereads: ClassVar[bool] = False

    def __init__(
        self,
        reader: Reader[H],
        decoder: Decoder | None,
        *,
        read_ahead: int = 100,
        read_ahead_bytes: int = DEFAULT_READ_AHEAD_BYTES,
        expected_size: int | None = None,
    ) -> None:
        self.reader = reader
        self.decoder = decoder
        self.name = reader.name
        self.in_flight_limit = reader.in_flight_limit
        self.read_ahead = read_ahead
        self.read_ahead_bytes = read_ahead_bytes
        self.expected_size = expected_size
        self.fetches = 0
        self.released = 0
        self._settler: _Settler[H] = _Settler(reader)
        # Fetched and not handed out: at most `read_ahead` records; `buffered_bytes` is the
        # sum of their sizes. A record whose decoding raised stays at the head.
        self._fetched: deque[Incoming[H]] = deque()
        self.buffered_bytes = 0
        self._fetching = anyio.Lock()  # one fetch at a time
        self._sizes_seen = 0  # payload bytes and records fetched so far: the average size
        self._records_seen = 0
        self._lifetime = contextlib.AsyncExitStack()

    # -- lifetime ----------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self._lifetime = contextlib.AsyncExitStack()
        await self._lifetime.enter_async_context(self._running())
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self._lifetime.__aexit__(*exc_info)

    @contextlib.asynccontextmanager
    async def _running(self) -> AsyncIterator[None]:
        if not self.reader.queues_settlements:
            try:
                yield
            finally:
                await self._close()
            return
        async with background_tasks() as tasks:
            tasks.start_soon(self._settler.run, name=f"{self.name} settlements")
            try:
                yield
            finally:
                await self._close()  # ends the settler task, once it wrote its queue

    async def _close(self) -> None:
        """Give back what was fetched and never handed out, write queued settlements, and
        refuse later ones. Shielded: a cancelled source closes the same way.

        Not ``aclose``: a pipe that read this source closes its iterator with aclose(),
        and the source outlives one pipe (the connector's block closes it)."""
        with anyio.CancelScope(shield=True):
            # Called with nothing unhanded too: the system may hold records for this
            # consumer that no fetch returned (a reply lost to a cancelled fetch).
            self.released += await self.reader.release(self._take_read_ahead())
        self._settler.close()

    def _take_read_ahead(self) -> list[H]:
        """Empty the read-ahead buffer; the handles of what it held, no longer outstanding."""
        unhanded = [incoming.handle for incoming in self._fetched]
        self._fetched.clear()
        self.buffered_bytes = 0
        self._settler.outstanding -= len(unhanded)
        return unhanded

    async def _give_back_read_ahead(self) -> None:
        """After a requeue, with ``requeue_rereads``: the next fetch reads again."""
        unhanded = self._take_read_ahead()
        if unhanded:
            await self.reader.release(unhanded)

    # -- reading -----------------------------------------------------------------------

    @property
    def buffered(self) -> int:
        """Records fetched and not handed out yet."""
        return len(self._fetched)

    @property
    def unsettled(self) -> int:
        """Records fetched (handed out or not) and not settled yet."""
        return self._settler.outstanding

    def __aiter__(self) -> BrokerSource[T, H]:
        return self

    async def __anext__(self) -> Message[T]:
        while True:
            if not self._fetched:
                await self._fill()
                continue
            message = await self._next_buffered()
            if message is not None:
                return message

    async def next_run(self) -> list[Message[T]]:
        """The messages of the next fetched batch, decoded (at least one; records the
        decode policy set aside are settled and left out). A record whose decoding raises
        ends the run before it; the next call raises for it."""
        while True:
            if not self._fetched:
                await self._fill()
            run: list[Message[T]] = []
            while self._fetched:
                try:
                    message = await self._next_buffered()
                except Exception:
                    if run:
                        return run  # the failure is raised by the next call
                    raise
                if message is not None:
                    run.append(message)
            if run:
                return run

    async def _next_buffered(self) -> Message[T] | None:
        """Decode the record at the head; None if the decode policy set it aside."""
        incoming = self._fetched[0]
        payload, decoder = incoming.payload, self.decoder
        if isinstance(payload, Decoded):
            value = payload.value
        elif decoder is None:
            raise TypeError(f"{self.name}: its reader must hand out Decoded values only")
        elif isinstance(payload, bytes):
            value = await decoder.decode(payload, key=incoming.key)
        elif isinstance(payload, RecordRejected):
            value = await decoder.reject(b"", payload, key=incoming.key)
        else:
            value = await self._decode_fields(decoder, payload, incoming.key)
        # Decoded (or set aside): no longer read ahead. A raise above left it at the head.
        self._fetched.popleft()
        self.buffered_bytes -= incoming.size
        settlement = BrokerSettlement(
            self, incoming.handle, incoming.identity, incoming.redelivered
        )
        if value is SKIPPED:
            await settlement.ack()  # set aside by the decode policy: handled
            return None
        return Message(
            value, incoming.key, incoming.headers, incoming.timestamp, self.name, settlement
        )

    async def _decode_fields(
        self, decoder: Decoder, fields: Mapping[str, bytes], key: str | bytes | None
    ) -> Any:
        value = {}
        for name, data in fields.items():
            decoded = await decoder.decode(data, key=key)
            if decoded is SKIPPED:
                return SKIPPED
            value[name] = decoded
        return value

    async def _fill(self) -> None:
        """Fetch the next batch into the read-ahead buffer, within every bound."""
        async with self._fetching:
            if self._fetched:
                return
            records = await self._fetch()
            self.fetches += 1
            self._settler.outstanding += len(records)
            size = sum(record.size for record in records)
            self._sizes_seen += size
            self._records_seen += len(records)
            self.buffered_bytes += size
            self._fetched.extend(records)

    def _count_to_fetch(self) -> int:
        if self._records_seen:
            average = self._sizes_seen // self._records_seen
        elif self.expected_size is not None:
            average = self.expected_size  # what the system says, until records are seen
        else:
            return 1  # nothing known of record sizes: one, then as many as fit
        return max(1, min(self.read_ahead, self.read_ahead_bytes // max(1, average)))

    async def _fetch(self) -> Sequence[Incoming[H]]:
        source_time = current_source_time()
        held_back = False
        limit = self.in_flight_limit.count if self.in_flight_limit is not None else None
        try:
            while True:
                self._settler.check()
                count = self._count_to_fetch()
                if limit is not None:
                    room = limit - self._settler.outstanding
                    if room <= 0:
                        # Our own unsettled records fill the limit: the system sends
                        # nothing until one is settled. Held back, not idle.
                        if source_time is not None and not held_back:
                            held_back = True
                            source_time.pause()
                        await self._settler.wait_for_a_settlement()
                        continue
                    count = min(count, room)
                records = await self.reader.fetch(count, self.read_ahead_bytes)
                if records:
                    return records
                if source_time is not None and not held_back:
                    held_back = await self.reader.held_back()
                    if held_back:
                        source_time.pause()
        finally:
            if held_back:
                assert source_time is not None
                source_time.resume()

    # -- settling ----------------------------------------------------------------------

    async def ack_many(self, messages: Iterable[Message[Any]]) -> None:
        """Acknowledge messages of this source together: one call to the system (and,
        under trio, one hop to the client's thread) instead of one per message. Messages
        settled already are left out.

        Example (with any broker source)::

            batch = [message async for message in source][:100]
            await store(batch)
            await source.ack_many(batch)
        """
        handles: list[tuple[H, Verb]] = []
        settlements: list[BrokerSettlement[H]] = []
        for message in messages:
            settlement = message.settlement
            if not isinstance(settlement, BrokerSettlement) or settlement._source is not self:
                raise ValueError(
                    f"{self.name}: ack_many() takes messages of this source only, got "
                    f"{describe(message)}; ack others with their own source, or message.ack()"
                )
            settlements.append(settlement)
        for settlement in settlements:
            if settlement.settled is None:
                settlement.settled = "ack"
                handles.append((settlement._handle, "ack"))
        if handles:
            await self._settler.settle_many(handles)


class Publisher(Protocol[T_contra, R_co, E_contra]):
    """A broker module's part of a sink: publish encoded records and return once the
    system confirmed every one (raise if it refused one). A publisher that lost its
    connection raises :class:`~rxflow.errors.ServiceUnavailableError` and connects again on
    its next call."""

    async def publish(self, records: Sequence[tuple[E_contra, T_contra]]) -> R_co:
        """Publish ``(payload, item)`` pairs; the item is there for addressing (a routing
        key, a subject) computed by the module. The payload is what the sink's encoder
        made of the item: bytes, unless the sink encodes into records of another shape."""
        ...


Address = str | Callable[[Any], str]
"""Where a sink sends an item: one name (a topic, a routing key), or a function of the item."""


class AddressedPublisher:
    """A :class:`Publisher` for systems that address each record by one string (an MQTT
    topic, an AMQP routing key): it computes the addresses, then publishes the whole batch
    with one call on the client's loop (``publish`` gets ``(payload, address)`` pairs)."""

    def __init__(
        self,
        host: AsyncioHost,
        publish: Callable[[list[tuple[bytes, str]]], Awaitable[None]],
        address: Address,
    ) -> None:
        self._host, self._publish, self._address = host, publish, address

    async def publish(self, records: Sequence[tuple[bytes, Any]]) -> None:
        address = self._address
        if callable(address):
            addressed = [(payload, address(item)) for payload, item in records]
        else:
            addressed = [(payload, address) for payload, _ in records]
        if addressed:
            await self._host.call(self._publish, addressed)


class BrokerSink(Generic[T, R, E]):
    """Encodes items with the sink's one encoder and publishes them in confirmed batches.

    The encoder makes bytes of an item (``BrokerSink[T, R]``), or the system's record where
    that is not one payload (``BrokerSink[T, R, Mapping[str, bytes]]``: an entry's fields).

    Attributes:
        batch_size: how many items a :class:`rxflow.Flow` hands to :meth:`send_batch` at once.
        name: the sink's name in errors.
    """

    def __init__(
        self,
        publisher: Publisher[T, R, E],
        encoder: Callable[[T], E],
        *,
        batch_size: int,
        name: str,
    ):
        self._publisher = publisher
        self._encode = encoder
        self.batch_size = batch_size
        self.name = name

    async def send(self, item: T) -> None:
        """Publish one item; return once the system confirmed it."""
        await self.send_batch((item,))

    async def send_batch(self, items: Sequence[T]) -> R:
        """Publish the items; return once the system confirmed all of them."""
        encode = self._encode
        return await self._publisher.publish([(encode(item), item) for item in items])
