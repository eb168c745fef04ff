"""The broker source loop (:class:`BrokerSource`), the same for every system."""

from __future__ import annotations

import contextlib
import reprlib
from collections import deque
from collections.abc import AsyncIterator, Callable, Hashable, Iterable, Mapping, Sequence
from typing import Any, ClassVar, Generic, Self, TypeVar

import anyio

from rxflow._source_time import current_source_time
from rxflow._task_groups import background_tasks
from rxflow.connectors._kit._making import decode_run, messages_of
from rxflow.connectors._kit._records import (
    DEFAULT_READ_AHEAD_BYTES,
    Decoded,
    HostedPushReader,
    Incoming,
    Reader,
    Verb,
)
from rxflow.connectors._kit._settle import BrokerSettlement, Settler
from rxflow.connectors._message import Message, describe
from rxflow.connectors.codecs import SKIPPED, Decoder, RecordRejected

__all__ = ["BrokerSource", "IdentityOf", "PushedSource"]

IdentityOf = Callable[[Message[Any]], Hashable | None]
"""A user's function naming a message across redeliveries (a header, a payload field)."""

H = TypeVar("H")
T = TypeVar("T")

LIMIT_CHECK_S = 0.5
"""How often a source waiting at its in-flight limit checks that its connection is there."""


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
        identity_of: the user's function that names each decoded message (its
            ``identity``, in place of the system's), or None. A message it fails on goes to
            the decode policy, as one the codec rejected.

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
        identity_of: IdentityOf | None = None,
    ) -> None:
        self.reader = reader
        self.identity_of = identity_of
        self.decoder = decoder
        self.name = reader.name
        self.in_flight_limit = reader.in_flight_limit
        self.read_ahead = read_ahead
        self.read_ahead_bytes = read_ahead_bytes
        self.expected_size = expected_size
        self.fetches = 0
        self.released = 0
        self._settler: Settler[H] = Settler(reader)
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
                self._decode_at_once(run)
                if not self._fetched:
                    break
                try:  # a record the quick loop left to the full path (or one that raises)
                    message = await self._next_buffered()
                except Exception:
                    if run:
                        return run  # the failure is raised by the next call
                    raise
                if message is not None:
                    run.append(message)
            if run:
                return run

    def _decode_at_once(self, run: list[Message[T]]) -> None:
        """Hand out into ``run`` the buffered records at the head that need nothing but the
        codec (bytes, of a partition still assigned), as one run: decoded in one call where
        the codec is a built-in one (:attr:`Decoder.decode_many`), then made into messages
        in one loop, no await and no function call per record. It stops at the first
        record that needs the full path (:meth:`_next_buffered`): a decode failure, fields,
        a rejection, a :class:`Decoded` value, a revoked partition, an ``identity_of``."""
        decoder, fetched = self.decoder, self._fetched
        if decoder is None or self.identity_of is not None:
            return
        payloads: list[bytes] = []
        checked: Any = None  # the last partition seen not revoked (a run shares one)
        for incoming in fetched:
            payload, partition = incoming[0], incoming[8]
            if type(payload) is not bytes:
                break
            if partition is not checked:
                if partition is not None and partition.revoked:
                    break
                checked = partition
            payloads.append(payload)
        if not payloads:
            return
        values = decode_run(decoder, payloads)
        count = len(values)
        if not count:
            return
        records = [fetched.popleft() for _ in range(count)]
        run.extend(messages_of(self, records, values))
        decoder.decoded += count
        self.buffered_bytes -= sum([incoming[6] for incoming in records])

    async def _next_buffered(self) -> Message[T] | None:
        """Decode the record at the head; None if the decode policy set it aside."""
        incoming = self._fetched[0]
        if incoming.partition is not None and incoming.partition.revoked:
            # Read ahead from a partition given to another worker since: the new owner
            # reads it again; handing it out would only make a duplicate.
            self._fetched.popleft()
            self.buffered_bytes -= incoming.size
            self._settler.outstanding -= 1
            return None
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
        if value is SKIPPED:
            message = self._message(incoming, value, identify=False)
        else:
            try:
                message = self._message(incoming, value)
            except RecordRejected as rejected:  # by identity_of: the decode policy decides
                if decoder is None:
                    raise
                data = payload if isinstance(payload, bytes) else b""
                if isinstance(payload, bytes):
                    decoder.decoded -= 1  # counted by decode(): it is rejected after all
                value = await decoder.reject(data, rejected, key=incoming.key)
                message = self._message(incoming, value, identify=False)
        # Decoded (or set aside): no longer read ahead. A raise above left it at the head.
        self._fetched.popleft()
        self.buffered_bytes -= incoming.size
        if value is SKIPPED:
            await message.ack()  # set aside by the decode policy: handled
            return None
        return message

    def _message(self, incoming: Incoming[H], value: Any, *, identify: bool = True) -> Message[T]:
        """The message of a record taken from the read-ahead buffer, with its settlement.

        With ``identity_of`` (and ``identify``), its identity is what that function says;
        if it fails, this raises an error that says so (its ``__cause__`` is the
        function's), and the record stays at the head of the buffer."""
        (message,) = messages_of(self, (incoming,), (value,))
        if self.identity_of is not None and identify:
            message.settlement.identity = self._identify(message)
        return message

    def _identify(self, message: Message[T]) -> Hashable | None:
        assert self.identity_of is not None
        function = getattr(self.identity_of, "__name__", repr(self.identity_of))
        try:
            identity = self.identity_of(message)
        except Exception as error:
            raise RecordRejected(
                f"identity={function} raised {error!r} on it; make it return None for a "
                "message that has no id, or fix the publisher"
            ) from error
        try:
            hash(identity)  # a checkpoint keeps identities in a set
        except TypeError as error:
            raise RecordRejected(
                f"identity={function} returned {reprlib.repr(identity)}, which is not "
                "hashable; return a str, int, bytes or a tuple of them"
            ) from error
        return identity

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
                        await self._wait_for_a_settlement()
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

    async def _wait_for_a_settlement(self) -> None:
        """At the in-flight limit: wait until a record is settled. A pushing system's lost
        connection would go unseen meanwhile (nothing is fetched), so it is checked now
        and then: the source then fails instead of waiting for ever."""
        check_open = getattr(self.reader, "check_open", None)
        if check_open is None:
            await self._settler.wait_for_a_settlement()
            return
        with anyio.move_on_after(LIMIT_CHECK_S):
            await self._settler.wait_for_a_settlement()
        check_open()

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

    @property
    def links_outputs(self) -> bool:
        """Whether the system needs to know which messages made one output (see
        :meth:`link_many`): true for a reader with ``link`` (Kafka)."""
        return hasattr(self.reader, "link")

    def link_many(self, messages: Iterable[Message[Any]]) -> None:
        """These messages of this source made one output (a window). A system that commits
        positions (Kafka) then never commits into the middle of them: a replay rebuilds the
        output whole. A :class:`rxflow.Flow` calls it; does nothing for other systems."""
        link = getattr(self.reader, "link", None)
        if link is None:
            return
        handles = [
            settlement._handle
            for message in messages
            if isinstance(settlement := message.settlement, BrokerSettlement)
            and settlement._source is self
        ]
        if len(handles) > 1:
            link(handles)


class PushedSource(BrokerSource[T, H]):
    """A :class:`BrokerSource` over a system that pushes deliveries into the client
    (a :class:`~rxflow.connectors._kit.HostedPushReader`)."""

    def __init__(
        self,
        reader: HostedPushReader[H],
        decoder: Decoder,
        *,
        identity_of: IdentityOf | None = None,
        **bounds: int,
    ) -> None:
        super().__init__(reader, decoder, identity_of=identity_of, **bounds)
        self._pushing = reader

    @property
    def unacked(self) -> int:
        """Messages the broker delivered that are not settled yet (at most its in-flight
        limit). Under trio a settlement reaches the client's loop, and this count, a moment
        after ``ack()`` returns."""
        return self._pushing.unacked
