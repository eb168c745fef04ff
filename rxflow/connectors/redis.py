"""Redis Streams: a consumer-group source and an ``XADD`` sink, on redis-py's asyncio client.

The source reads a stream as one consumer of a consumer group (``XREADGROUP``), so several
workers running the same pipeline share the stream: Redis hands each entry to one of them.
It reads only when its consumer asks for more, at most ``batch`` entries at a time, so a slow
consumer means fewer reads and the group's other consumers get the rest. Each message is
settled with ``XACK``; an entry that is not acknowledged stays pending in the group and is
delivered again:

* to the same consumer, when it restarts (it first re-reads its own pending entries);
* to any consumer of the group, once the entry has been pending ``claim_idle_ms`` (default
  60 s) on a consumer that stopped (``XAUTOCLAIM``).

What a source read ahead and never handed out is handed back when it closes, even on a
graceful stop in the middle of a backlog: any worker's next claim takes it at once (see
:meth:`_GroupReader.release`), and only what was taken and not acknowledged stays pending
on the consumer.

The source is the connector kit's :class:`~rxflow.connectors._kit.BrokerSource`: this
module supplies what is special to Redis (the reads and claims, the in-hand set, the
release at close); the kit owns decoding, read-ahead bounds and settlements.

The sink appends entries with ``XADD``, a batch per pipelined round trip.

Under trio, every client call runs on an asyncio loop in a worker thread
(:class:`~rxflow.connectors._asyncio_host.AsyncioHost`); the API is the same.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, Final

import anyio

from rxflow._checks import check_count, check_name
from rxflow.connectors._asyncio_host import AsyncioHost
from rxflow.connectors._extras import requires_extra
from rxflow.connectors._kit import (
    DEFAULT_READ_AHEAD_BYTES,
    NO_HEADERS,
    BrokerSink,
    BrokerSource,
    Incoming,
    Verb,
)
from rxflow.connectors._message import InFlightLimit
from rxflow.connectors.codecs import (
    Codec,
    CodecName,
    DecodeFailure,
    DecodePolicy,
    Decoder,
    Encoder,
    EncoderSpec,
    RecordRejected,
    sink_encoder,
)
from rxflow.errors import ServiceUnavailableError

with requires_extra("redis"):
    import redis.asyncio as aioredis
    from redis.asyncio.retry import Retry
    from redis.backoff import ExponentialBackoff, NoBackoff
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import ResponseError
    from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = ["RedisStreamSink", "RedisStreamSource", "redis_stream_sink", "redis_stream_source"]

CONNECTION_ERRORS: Final = (RedisConnectionError, RedisTimeoutError, OSError)
RECONNECT_BACKOFF_S: Final = (0.1, 0.2, 0.5, 1.0, 2.0, 4.0, 8.0, 8.0)
"""The waits before each retry of a read that lost its connection, about 24 s in all (long
enough for a server restart); after the last one the source gives up."""
CONNECT_TIMEOUT_S: Final = 5.0
READ_TIMEOUT_MARGIN_S: Final = 10.0
"""How much longer than its ``BLOCK`` time a read may take before the connection counts as
dead (a silent network failure would otherwise hang the read forever)."""

RELEASED_CONSUMER: Final = "rxflow-released"
"""The consumer a closing source moves its unread entries to, so that any worker's claim
takes them at once (see :meth:`_GroupReader.release`); it never reads itself."""
RELEASE_PAGE: Final = 1000
RELEASE_TIMEOUT_S: Final = 5.0
DEFAULT_CLAIM_IDLE_MS: Final = 60_000
SIZE_SAMPLE: Final = 16  # the newest entries whose size sizes a source's first read

EntryId = bytes
Entry = tuple[EntryId, dict[bytes, bytes]]


# -- connections ------------------------------------------------------------------------


def _address(client: Any) -> str:
    kwargs = client.connection_pool.connection_kwargs
    if "path" in kwargs:
        return str(kwargs["path"])
    return f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"


@contextlib.asynccontextmanager
async def _connected(
    host: AsyncioHost, url: str, *, retry: bool, **options: Any
) -> AsyncIterator[Any]:
    """A redis-py client on the host's loop, checked with ``PING``, closed on exit.

    ``retry=False`` turns off redis-py's own retries, for the source's reads: a read retried
    inside redis-py could hide a reply lost with its connection (entries the server handed to
    this consumer), which the source must know about to re-read them.
    """

    async def open_client() -> Any:
        # from_url does not give its pool redis-py's default retries: say what we want.
        retries = (
            Retry(ExponentialBackoff(cap=1.0, base=0.05), 3) if retry else Retry(NoBackoff(), 0)
        )
        return aioredis.from_url(
            url, socket_connect_timeout=CONNECT_TIMEOUT_S, retry=retries, **options
        )

    client = await host.call(open_client)
    try:
        try:
            await host.call(client.ping)
        except CONNECTION_ERRORS as error:
            raise ServiceUnavailableError(
                f"redis at {_address(client)} is not reachable ({error}); start it, or check "
                "the URL"
            ) from error
        yield client
    finally:
        with anyio.CancelScope(shield=True):
            await host.call(client.aclose)


# -- source -----------------------------------------------------------------------------


class _GroupReader:
    """The kit's reader of one consumer of a group (see :class:`~rxflow.connectors._kit.Reader`).

    A fetch is one ``XREADGROUP`` (or ``XAUTOCLAIM``) of at most ``count`` entries: this
    consumer's own pending entries first (those of a previous run, never acknowledged, and
    nacked ones), then claims of entries idle on any consumer, then new entries. A read that
    loses its connection is retried with backoff, and the pending list is read again: its
    reply may have handed entries to this consumer.
    """

    def __init__(
        self,
        host: AsyncioHost,
        reading: Any,
        commands: Any,
        *,
        stream: str,
        group: str,
        consumer: str,
        name: str,
        field: str | None,
        block_ms: int,
        claim_idle_ms: int | None,
    ) -> None:
        self._host = host
        self._reading = reading  # reads and claims, without redis-py's retries
        self._commands = commands  # acks, with redis-py's retries (XACK is idempotent)
        self.stream, self.group, self.consumer, self.name = stream, group, consumer, name
        self._field = field.encode() if field is not None else None
        self._block_ms = block_ms
        self._claim_idle_ms = claim_idle_ms
        # Redis delivers to a consumer group without a limit on unacknowledged entries.
        self.in_flight_limit: InFlightLimit | None = None
        # XACK is answered: ack() returns once Redis has it, as it always did.
        self.queues_settlements = False
        # Entries fetched (handed out, or read ahead by the kit) and not settled: a re-read
        # of the pending list, or a claim, must not deliver them again while they are held.
        self._in_hand: set[EntryId] = set()
        # Entries nacked (left pending) and not fetched again yet: they were taken, so the
        # close does not hand them back to the group.
        self._nacked: set[EntryId] = set()
        # Our own pending entries are read first, from this id on; None once they are all
        # read again and new entries come next. A nack sets it back to the start.
        self._pending_after: bytes | None = b"0"
        self._claim_cursor = b"0-0"
        self._next_claim = 0.0  # claim at once: a dead consumer's entries may be waiting

    async def fetch(self, count: int, max_bytes: int) -> list[Incoming[EntryId]]:
        """One read or claim; entries held already are left out, deleted ones acked."""
        fetched: list[Incoming[EntryId]] = []
        gone: list[EntryId] = []
        for entry_id, fields in await self._read_reconnecting(count):
            if entry_id in self._in_hand:
                continue
            if not fields:  # deleted or trimmed from the stream while pending: nothing to do
                gone.append(entry_id)
                continue
            self._in_hand.add(entry_id)
            self._nacked.discard(entry_id)
            fetched.append(self._incoming(entry_id, fields))
        if gone:
            await self._xack(gone)
        return fetched

    def _incoming(self, entry_id: EntryId, fields: dict[bytes, bytes]) -> Incoming[EntryId]:
        key = entry_id.decode()
        timestamp = int(key.partition("-")[0]) / 1000  # the id's milliseconds
        payload: bytes | dict[str, bytes] | RecordRejected
        headers: Mapping[str, str] = NO_HEADERS
        if self._field is None:  # the whole entry: every field decoded by the codec
            payload = {_text(name): data for name, data in fields.items()}
        elif (found := fields.get(self._field)) is not None:
            payload = found
            headers = {_text(n): _text(data) for n, data in fields.items() if n != self._field}
        else:  # without its payload field: a record for the decode policy
            payload = self._missing(key, fields)
        size = _size(fields, self._field)
        return Incoming(payload, entry_id, key, headers, timestamp, identity=entry_id, size=size)

    def _missing(self, key: str, fields: dict[bytes, bytes]) -> RecordRejected:
        """An entry without its payload field: the decode policy applies to it."""
        assert self._field is not None
        names = ", ".join(repr(_text(name)) for name in sorted(fields))
        return RecordRejected(
            f"entry {key} has no field {_text(self._field)!r} (fields: {names}); set field= "
            "to the field that holds the payload, or field=None for the whole entry"
        )

    async def _read_reconnecting(self, count: int) -> list[Entry]:
        failures = 0
        while True:
            try:
                return await self._read_or_claim(count)
            except CONNECTION_ERRORS as error:
                failures += 1
                if failures > len(RECONNECT_BACKOFF_S):
                    raise ServiceUnavailableError(
                        f"{self.name}: lost the connection to redis at "
                        f"{_address(self._reading)} and could not get it back in "
                        f"{sum(RECONNECT_BACKOFF_S):.0f} s ({error})"
                    ) from error
                await anyio.sleep(RECONNECT_BACKOFF_S[failures - 1])

    async def _read_or_claim(self, count: int) -> list[Entry]:
        try:
            if self._pending_after is not None:
                entries = await self._read(self._pending_after, count, block_ms=None)
                self._pending_after = entries[-1][0] if entries else None
                return entries
            if self._claim_idle_ms is not None and time.monotonic() >= self._next_claim:
                self._claim_cursor, entries = await self._claim(self._claim_cursor, count)
                if self._claim_cursor == b"0-0":  # scanned the whole pending list: rest
                    self._next_claim = time.monotonic() + self._claim_idle_ms / 2000
                return entries
            block_ms = self._block_ms
            if self._claim_idle_ms is not None:  # wake up in time for the next claim
                wait_ms = math.ceil((self._next_claim - time.monotonic()) * 1000)
                block_ms = max(1, min(block_ms, wait_ms))
            return await self._read(b">", count, block_ms=block_ms)
        except BaseException:
            # A reply lost with the connection, or to a cancellation, may have handed
            # entries to this consumer: they are pending on it now, so re-read that list.
            self._pending_after = b"0"
            raise

    async def _read(self, after: bytes, count: int, *, block_ms: int | None) -> list[Entry]:
        reply = await self._host.call(
            self._reading.xreadgroup,
            self.group,
            self.consumer,
            {self.stream: after},
            count,
            block_ms,
        )
        # RESP2: [[stream, entries]], or [] when a blocking read timed out.
        return list(reply[0][1]) if reply else []

    async def _claim(self, cursor: bytes, count: int) -> tuple[bytes, list[Entry]]:
        reply = await self._host.call(
            self._reading.xautoclaim,
            self.stream,
            self.group,
            self.consumer,
            self._claim_idle_ms,
            cursor,
            count,
        )
        # [next cursor, claimed entries, ids no longer in the stream (Redis dropped them)]
        return reply[0], list(reply[1])

    async def settle(self, settlements: Sequence[tuple[EntryId, Verb]]) -> None:
        """``XACK`` (one for all); ``requeue`` leaves the entry pending, and the next fetch
        reads the pending list again, which delivers it again. ``reject`` acks: the group is
        done with it (it stays in the stream)."""
        acked: list[EntryId] = []
        for entry_id, verb in settlements:
            self._in_hand.discard(entry_id)
            if verb == "requeue":
                self._nacked.add(entry_id)
                self._pending_after = b"0"
            else:
                acked.append(entry_id)
        if acked:
            await self._xack(acked)

    async def _xack(self, entry_ids: list[EntryId]) -> None:
        await self._host.call(self._commands.xack, self.stream, self.group, *entry_ids)

    async def release(self, unhanded: Sequence[EntryId]) -> int:
        """Hand back to the group the entries this consumer was given and never handed out:
        what the kit read ahead, a read whose reply was lost to a cancellation. Entries
        handed out and not acknowledged (held, or nacked) stay pending on this consumer:
        they were taken.

        Redis has no "unclaim", and XACK would lose them. So they are moved (``XCLAIM ...
        JUSTID``, which leaves their delivery count as it is) to the group's consumer
        :data:`RELEASED_CONSUMER`, which never reads, with their idle time set to "since
        the epoch" (``TIME 0``): every worker's next ``XAUTOCLAIM`` finds them idle for
        longer than its ``claim_idle_ms``, and takes them at once. Without
        ``claim_idle_ms`` nobody claims, so they stay here, to be re-read on restart.
        Bounded in time: a close that cannot reach Redis leaves them pending on this
        consumer, claimed after ``claim_idle_ms``.
        """
        if self._claim_idle_ms is None:
            return 0
        held = frozenset(self._in_hand.difference(unhanded) | self._nacked)
        released = 0
        with anyio.CancelScope(shield=True, deadline=anyio.current_time() + RELEASE_TIMEOUT_S):
            # ResponseError: the stream or its group was deleted meanwhile, nothing to give.
            with contextlib.suppress(*CONNECTION_ERRORS, ResponseError):
                released = await self._host.call(self._release_on_host, held)
        return released

    async def _release_on_host(self, held: frozenset[EntryId]) -> int:
        released = 0
        start = "-"
        while True:
            rows = await self._commands.xpending_range(
                self.stream, self.group, start, "+", RELEASE_PAGE, consumername=self.consumer
            )
            ids = [row["message_id"] for row in rows if row["message_id"] not in held]
            if ids:
                await self._commands.xclaim(
                    self.stream, self.group, RELEASED_CONSUMER, 0, ids, time=0, justid=True
                )
                released += len(ids)
            if len(rows) < RELEASE_PAGE:
                return released
            start = "(" + rows[-1]["message_id"].decode()  # after it (Redis 6.2)

    async def held_back(self) -> bool:
        return False  # Redis sets no in-flight limit on a group


def _text(data: bytes) -> str:
    return data.decode(errors="backslashreplace")


def _size(fields: Mapping[bytes, bytes], field: bytes | None) -> int:
    """An entry's payload bytes, counted against ``read_ahead_bytes``: its field's, or
    (whole, or without its field) all of its values'."""
    found = fields.get(field) if field is not None else None
    return len(found) if found is not None else sum(len(data) for data in fields.values())


async def _typical_size(client: Any, stream: str, field: str | None) -> int | None:
    """The average payload size of the stream's newest entries (None if it is empty): it
    sizes the source's first read, before any entry was read."""
    entries = await client.xrevrange(stream, count=SIZE_SAMPLE)
    if not entries:
        return None
    name = field.encode() if field is not None else None
    return sum(_size(fields, name) for _, fields in entries) // len(entries)


class RedisStreamSource(BrokerSource[Any, EntryId]):
    """The async iterable :func:`redis_stream_source` yields: the group's entries as
    :class:`~rxflow.connectors.Message` records (the kit's
    :class:`~rxflow.connectors._kit.BrokerSource`: ``buffered``, ``buffered_bytes``,
    ``next_run()``, ``ack_many()`` with one ``XACK``).

    Attributes:
        decoder: the :class:`~rxflow.connectors.Decoder`, with its counts (``decoded``,
            ``skipped``, ``dead_lettered``).
        name: ``"redis:<stream>"``, the messages' ``source``.
        stream, group, consumer: where it reads, and as whom.
        released: entries handed back to the group when the source closed: read ahead (or
            re-read) and never handed out (see :meth:`_GroupReader.release`).

    It is its own iterator: a second ``async for`` goes on where the first stopped. It holds
    at most ``batch`` entries that it has not handed out yet (and ``read_ahead_bytes``).

    Example:
        With a Redis server running::

            async with redis_stream_source("redis://localhost", "orders", "billing", "w1") as src:
                async for message in src:
                    print(message.key, message.value)
                    await message.ack()
    """

    def __init__(self, reader: _GroupReader, decoder: Decoder, **bounds: Any) -> None:
        super().__init__(reader, decoder, **bounds)
        self.stream, self.group, self.consumer = reader.stream, reader.group, reader.consumer


@contextlib.asynccontextmanager
async def redis_stream_source(
    url: str,
    stream: str,
    group: str,
    consumer: str,
    *,
    codec: Codec | CodecName = "bytes",
    field: str | None = "data",
    on_decode_error: DecodePolicy = "raise",
    dead_letter: Callable[[DecodeFailure], Awaitable[object] | object] | None = None,
    batch: int = 100,
    read_ahead_bytes: int = DEFAULT_READ_AHEAD_BYTES,
    block_ms: int = 2000,
    create_group: bool = True,
    claim_idle_ms: int | None = DEFAULT_CLAIM_IDLE_MS,
    start_id: str = "0",
) -> AsyncIterator[RedisStreamSource]:
    """Read a Redis stream as consumer ``consumer`` of consumer group ``group``.

    Args:
        url: the server, as ``redis://[user:password@]host[:port][/db]``.
        stream: the stream's key.
        group: the consumer group; workers that share it share the stream's entries.
        consumer: this reader's name in the group, stable across restarts: on start it
            first re-reads the entries it was handed before and never acknowledged.
        codec: decodes the payload: ``"bytes"``, ``"text"``, ``"json"`` or a function.
        field: the entry field holding the payload (default ``"data"``, what
            :func:`redis_stream_sink` writes); the other fields become the message's
            ``headers``. An entry without it is a decode failure, handled by
            ``on_decode_error`` (skipped entries are counted and logged with the fields
            they do have). ``None``: the value is the whole entry, a dict of field names
            to decoded field values (the codec's counts then count fields).
        on_decode_error: what to do with an entry the codec rejects (or that lacks
            ``field``): ``"raise"``, ``"skip"`` or ``"dead_letter"``; see
            :mod:`rxflow.connectors.codecs`.
        dead_letter: the function given such entries, with ``"dead_letter"``.
        batch: entries per ``XREADGROUP``/``XAUTOCLAIM``, the most read ahead of the consumer.
        read_ahead_bytes: at most this many bytes of payload (the ``field``'s values; with
            ``field=None`` every value) read and not handed out yet, plus one entry: a read
            asks for no more entries than fit at the average size seen so far (at first,
            that of the stream's newest entries). Default 16 MiB.
        block_ms: how long one read waits for new entries before it asks again.
        create_group: create the group (and the stream) if missing; if ``False`` and the
            group does not exist, opening fails with ``ValueError``.
        claim_idle_ms: entries pending on any consumer of the group for this long (default
            60 000) are claimed (``XAUTOCLAIM``, at start, then about twice per period) and
            delivered here: the work of a consumer that died, and what closed sources
            handed back. Use a period well above your slowest handling time, or live
            consumers lose entries they are still working on to this one; give every
            worker of a group the same. ``None``: never claim, and keep what was read
            ahead pending on this consumer when the source closes (re-read on restart).
        start_id: where a group this call creates starts: ``"0"`` the whole stream, ``"$"``
            only entries added from now on.

    Yields:
        a :class:`RedisStreamSource`: iterate it for :class:`~rxflow.connectors.Message`
        records (``key``: the entry id, ``headers``: the other fields as text,
        ``timestamp``: the id's time, ``identity``: the entry id as bytes).
        ``await message.ack()`` sends ``XACK``; ``nack()`` leaves the entry pending and
        the next read delivers it again (``nack(requeue=False)`` acks it: the group is
        done with it). Settle messages before the ``async with`` block ends (after it,
        settling raises :class:`~rxflow.errors.SettledAfterCloseError`); what is left
        unsettled stays pending on this consumer, and what was read ahead is handed back
        to the group.

    Raises:
        ServiceUnavailableError: Redis cannot be reached at start, or for about 24 s once
            running (the source reconnects, and re-reads its pending entries, after a
            dropped connection).

    Example:
        With a Redis server running::

            async with redis_stream_source(
                "redis://localhost", "orders", "billing", "worker-1", codec="json"
            ) as orders, rxflow.open_pipe(
                orders, ops.filter(lambda m: m.value["total"] > 0)
            ) as large_orders:
                async for message in large_orders:
                    await charge(message.value)
                    await message.ack()
    """
    where = f"redis_stream_source({stream!r})"
    for name, value in (("url", url), ("stream", stream), ("group", group), ("consumer", consumer)):
        check_name(where, name, value)
    for name, count in (("batch", batch), ("read_ahead_bytes", read_ahead_bytes)):
        check_count(where, name, count)
    check_count(where, "block_ms", block_ms)
    check_count(where, "claim_idle_ms", claim_idle_ms, optional=True)
    if field is not None:
        check_name(where, "field", field)
    decoder = Decoder(
        codec, on_decode_error=on_decode_error, dead_letter=dead_letter, source=f"redis:{stream}"
    )
    read_timeout = block_ms / 1000 + READ_TIMEOUT_MARGIN_S
    async with (
        AsyncioHost() as host,
        _connected(host, url, retry=False, socket_timeout=read_timeout) as reading,
        _connected(host, url, retry=True) as commands,
    ):
        await _prepare_group(host, commands, stream, group, create=create_group, start_id=start_id)
        reader = _GroupReader(
            host,
            reading,
            commands,
            stream=stream,
            group=group,
            consumer=consumer,
            name=decoder.source,
            field=field,
            block_ms=block_ms,
            claim_idle_ms=claim_idle_ms,
        )
        async with RedisStreamSource(
            reader,
            decoder,
            read_ahead=batch,
            read_ahead_bytes=read_ahead_bytes,
            expected_size=await host.call(_typical_size, commands, stream, field),
        ) as source:
            yield source


async def _prepare_group(
    host: AsyncioHost, client: Any, stream: str, group: str, *, create: bool, start_id: str
) -> None:
    if create:
        try:
            await host.call(client.xgroup_create, stream, group, start_id, True)
        except ResponseError as error:
            if not str(error).startswith("BUSYGROUP"):  # BUSYGROUP: it exists, as wanted
                raise
        return
    try:
        groups = await host.call(client.xinfo_groups, stream)
    except ResponseError:  # no such stream
        groups = []
    if not any(info["name"] in (group, group.encode()) for info in groups):
        raise ValueError(
            f"redis_stream_source({stream!r}): stream {stream!r} has no consumer group "
            f"{group!r}; create it (XGROUP CREATE {stream} {group} 0 MKSTREAM) or pass "
            "create_group=True"
        )


# -- sink -------------------------------------------------------------------------------

FieldValue = bytes | bytearray | memoryview | str | int | float
"""What Redis stores as a field's value (redis-py writes text and numbers as UTF-8)."""
Fields = Mapping[str | bytes, FieldValue]
"""An entry's fields, as ``XADD`` writes them."""


def _entry_encoder(where: str, field: str | None, encode: Encoder) -> Callable[[Any], Fields]:
    """The sink's encoder as entries: ``{field: encode(item)}``; with ``field=None`` the
    item is the entry (a mapping of field names to values), each value encoded."""

    def value(encoded: object, name: object) -> FieldValue:
        # A function may return text or a number too (json.dumps, as before): Redis stores
        # them as they are.
        if isinstance(encoded, FieldValue) and not isinstance(encoded, bool):
            return encoded
        raise TypeError(
            f"{where}: the encoder made a {type(encoded).__name__} of field {name!r}; Redis "
            "stores bytes, str and numbers: pass encoder='json' (or 'auto', the default), "
            "or a function that returns one"
        )

    if field is not None:
        return lambda item: {field: value(encode(item), field)}

    def fields(item: Any) -> Fields:
        if isinstance(item, Mapping) and item:
            return {name: value(encode(data), name) for name, data in item.items()}
        entry = None if isinstance(item, Mapping) else encode(item)
        if isinstance(entry, Mapping) and entry:  # an encoder that makes the entry: the old way
            warnings.warn(
                f"{where}: with field=None, an encoder= that returns the entry's fields is "
                "deprecated (it goes in the next release); send mappings of field names to "
                "values instead (map the items first), and encoder= encodes each value",
                DeprecationWarning,
                stacklevel=5,  # the caller of send()/send_batch()
            )
            return {name: value(data, name) for name, data in entry.items()}
        raise TypeError(
            f"{where} with field=None writes mappings of field names to values, got "
            f"{type(item).__name__}; send such dicts (map the items first), or pass "
            "field='data' to write each item as one field"
        )

    return fields


class _Appending:
    """The sink's :class:`~rxflow.connectors._kit.Publisher`: ``XADD`` of each entry, a
    batch per pipelined round trip, returning the entries' ids."""

    def __init__(self, host: AsyncioHost, client: Any, stream: str, maxlen: int | None) -> None:
        self._host, self._client, self._stream, self._maxlen = host, client, stream, maxlen

    async def publish(self, records: Sequence[tuple[Fields, Any]]) -> list[str]:
        if not records:
            return []
        ids = await self._host.call(self._xadd_all, [entry for entry, _ in records])
        return [entry_id.decode() for entry_id in ids]

    async def _xadd_all(self, entries: list[Fields]) -> list[bytes]:
        async with self._client.pipeline(transaction=False) as pipe:
            for fields in entries:
                pipe.xadd(self._stream, fields, maxlen=self._maxlen, approximate=True)
            ids: list[bytes] = await pipe.execute()
        return ids


class RedisStreamSink:
    """What :func:`redis_stream_sink` yields: ``send``/``send_batch`` append entries and
    return their ids (the kit's :class:`~rxflow.connectors._kit.BrokerSink` encodes and
    publishes).

    Attributes:
        batch_size: how many entries a :class:`rxflow.Flow` should hand to ``send_batch``.
        stream: the stream's key.

    Example:
        With a Redis server running::

            async with redis_stream_sink("redis://localhost", "totals", encoder="json") as out:
                entry_id = await out.send({"total": 3})
                await out.send_batch([{"total": 4}, {"total": 5}])
    """

    def __init__(self, appending: BrokerSink[Any, list[str], Fields], stream: str) -> None:
        self._appending = appending
        self.stream = stream
        self.batch_size = appending.batch_size
        self.name = appending.name

    async def send(self, item: Any) -> str:
        """Append one entry; returns its id once Redis replied."""
        (entry_id,) = await self._appending.send_batch((item,))
        return entry_id

    async def send_batch(self, items: Sequence[Any]) -> list[str]:
        """Append one entry per item, pipelined in one round trip; returns their ids once
        Redis replied to every ``XADD``. Every item is encoded first, so that a bad one
        fails the batch before anything is written."""
        return await self._appending.send_batch(items)


@contextlib.asynccontextmanager
async def redis_stream_sink(
    url: str,
    stream: str,
    *,
    field: str | None = "data",
    encoder: EncoderSpec | None = None,
    maxlen: int | None = None,
    batch_size: int = 100,
) -> AsyncIterator[RedisStreamSink]:
    """Append items to a Redis stream with ``XADD``.

    Args:
        url: the server, as ``redis://[user:password@]host[:port][/db]``.
        stream: the stream's key (created by the first write).
        field: the entry field the encoded item goes to; ``None``: each item is the
            entry, a mapping of field names to values, and each value is encoded.
        encoder: how an item (or, with ``field=None``, each field's value) becomes bytes:
            ``"auto"`` (default: bytes as they are, ``str`` as UTF-8, anything else as
            JSON), ``"bytes"``, ``"text"``, ``"json"``, a record class, or a function
            that returns bytes (or ``str``, or a number, which Redis stores as text); see
            :mod:`rxflow.connectors.codecs`.
        maxlen: keep the stream at about this many entries (``MAXLEN ~``, which trims
            whole blocks and is cheap); ``None`` keeps everything.
        batch_size: the batch size a :class:`rxflow.Flow` uses with this sink.

    A write that fails with the connection is retried by redis-py; if its reply was what got
    lost, the entry is written twice (at-least-once).

    Example:
        With a Redis server running::

            async with redis_stream_sink("redis://localhost", "orders", encoder="json") as sink:
                await sink.send_batch([{"n": 1}, {"n": 2}])
    """
    where = f"redis_stream_sink({stream!r})"
    check_name(where, "url", url)
    check_name(where, "stream", stream)
    if field is not None:
        check_name(where, "field", field)
    check_count(where, "maxlen", maxlen, optional=True)
    check_count(where, "batch_size", batch_size)
    encode = _entry_encoder(where, field, sink_encoder(where, encoder))
    async with AsyncioHost() as host, _connected(host, url, retry=True) as client:
        appending = BrokerSink(
            _Appending(host, client, stream, maxlen), encode, batch_size=batch_size, name=where
        )
        yield RedisStreamSink(appending, stream)
