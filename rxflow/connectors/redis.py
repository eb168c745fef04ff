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
:meth:`RedisStreamSource._release`), and only what was taken and not acknowledged stays
pending on the consumer.

The sink appends entries with ``XADD``, a batch per pipelined round trip.

Under trio, every client call runs on an asyncio loop in a worker thread
(:class:`~rxflow.connectors._asyncio_host.AsyncioHost`); the API is the same.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections import deque
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Mapping,
    Sequence,
)
from typing import Any, Final

import anyio

from rxflow._checks import check_count, check_name
from rxflow.connectors._asyncio_host import AsyncioHost
from rxflow.connectors._extras import requires_extra
from rxflow.connectors._message import InFlightLimit, Message, Settlement, describe
from rxflow.connectors.codecs import (
    SKIPPED,
    Codec,
    CodecName,
    DecodeFailure,
    DecodePolicy,
    Decoder,
    RecordRejected,
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
takes them at once (see :meth:`RedisStreamSource._release`); it never reads itself."""
RELEASE_PAGE: Final = 1000
RELEASE_TIMEOUT_S: Final = 5.0
DEFAULT_CLAIM_IDLE_MS: Final = 60_000

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


class _StreamAck(Settlement):
    """``XACK`` of one entry; a nack leaves it pending, to be re-read or claimed."""

    __slots__ = ("_entry_id", "_source")

    def __init__(self, source: RedisStreamSource, entry_id: EntryId) -> None:
        super().__init__(identity=entry_id)  # the entry id: the same when claimed again
        self._source = source
        self._entry_id = entry_id

    @property
    def batch_acker(self) -> RedisStreamSource:
        return self._source  # its ack_many() XACKs many entries at once

    async def _ack(self) -> None:
        await self._source._settle(self._entry_id, ack=True)

    async def _nack(self, requeue: bool) -> None:
        # Requeued, the entry stays pending and the source's next read re-reads it. Without
        # requeue the group is done with it: XACK (it stays in the stream).
        await self._source._settle(self._entry_id, ack=not requeue)


class RedisStreamSource:
    """The async iterable :func:`redis_stream_source` yields: the group's entries as
    :class:`~rxflow.connectors.Message` records.

    Attributes:
        decoder: the :class:`~rxflow.connectors.Decoder`, with its counts (``decoded``,
            ``skipped``, ``dead_lettered``).
        name: ``"redis:<stream>"``, the messages' ``source``.
        released: entries handed back to the group when the source closed: read ahead (or
            re-read) and never handed out (see :meth:`_release`).

    It is its own iterator: a second ``async for`` goes on where the first stopped. It holds
    at most one read's worth (``batch``) of entries that it has not handed out yet.

    Example:
        With a Redis server running::

            async with redis_stream_source("redis://localhost", "orders", "billing", "w1") as src:
                async for message in src:
                    print(message.key, message.value)
                    await message.ack()
    """

    def __init__(
        self,
        *,
        host: AsyncioHost,
        reader: Any,
        commands: Any,
        stream: str,
        group: str,
        consumer: str,
        decoder: Decoder,
        field: str | None,
        batch: int,
        block_ms: int,
        claim_idle_ms: int | None,
    ) -> None:
        self._host = host
        self._reader = reader  # reads and claims, without redis-py's retries
        self._commands = commands  # acks, with redis-py's retries (XACK is idempotent)
        self.stream = stream
        self.group = group
        self.consumer = consumer
        self.decoder = decoder
        self._field = field.encode() if field is not None else None
        self._batch = batch
        self._block_ms = block_ms
        self._claim_idle_ms = claim_idle_ms
        self.name = decoder.source
        # Redis delivers to a consumer group without a limit on unacknowledged entries.
        self.in_flight_limit: InFlightLimit | None = None
        # Entries yielded and not settled yet: a re-read of the pending list after a lost
        # connection, or a claim, must not deliver them a second time while they are in hand.
        self._in_hand: set[EntryId] = set()
        # Entries yielded, then nacked, and not yielded again yet: taken, so not handed
        # back to the group at close (see _release).
        self._nacked_ids: set[EntryId] = set()
        self._closed = False
        # What was read and not handed out yet: at most one read's worth (`batch`).
        self._entries: deque[Entry] = deque()
        # Our own pending entries are read first (those of a previous run that were never
        # acked), from this id on; None once they are all re-read and new entries come next.
        self._pending_after: bytes | None = b"0"
        self._nacked = False  # an entry was nacked: re-read the pending list to redeliver it
        self._claim_cursor = b"0-0"
        self._next_claim = 0.0  # claim at once: a dead consumer's entries may be waiting
        self.released = 0  # entries handed back to the group when the source closed

    def __aiter__(self) -> RedisStreamSource:
        return self

    async def __anext__(self) -> Message[Any]:
        while True:
            if self._closed:  # what is left unread stays pending, for the next run
                raise StopAsyncIteration
            if not self._entries:
                self._entries.extend(await self._fetch())
                continue
            message = await self._message(*self._entries.popleft())
            if message is not None:
                return message

    async def _fetch(self) -> list[Entry]:
        """One read (or claim) of at most ``batch`` entries, reconnecting if need be."""
        failures = 0
        while True:
            try:
                return await self._read_or_claim()
            except CONNECTION_ERRORS as error:
                failures += 1
                if failures > len(RECONNECT_BACKOFF_S):
                    raise ServiceUnavailableError(
                        f"{self.name}: lost the connection to redis at "
                        f"{_address(self._reader)} and could not get it back in "
                        f"{sum(RECONNECT_BACKOFF_S):.0f} s ({error})"
                    ) from error
                await anyio.sleep(RECONNECT_BACKOFF_S[failures - 1])

    async def _read_or_claim(self) -> list[Entry]:
        if self._nacked:
            self._nacked, self._pending_after = False, b"0"
        try:
            if self._pending_after is not None:
                entries = await self._read(self._pending_after, block_ms=None)
                self._pending_after = entries[-1][0] if entries else None
                return entries
            if self._claim_idle_ms is not None and time.monotonic() >= self._next_claim:
                self._claim_cursor, entries = await self._claim(self._claim_cursor)
                if self._claim_cursor == b"0-0":  # scanned the whole pending list: rest
                    self._next_claim = time.monotonic() + self._claim_idle_ms / 2000
                return entries
            block_ms = self._block_ms
            if self._claim_idle_ms is not None:  # wake up in time for the next claim
                wait_ms = math.ceil((self._next_claim - time.monotonic()) * 1000)
                block_ms = max(1, min(block_ms, wait_ms))
            return await self._read(b">", block_ms=block_ms)
        except BaseException:
            # A reply lost with the connection, or to a cancellation, may have handed
            # entries to this consumer: they are pending on it now, so re-read that list.
            self._pending_after = b"0"
            raise

    async def _read(self, after: bytes, *, block_ms: int | None) -> list[Entry]:
        reply = await self._host.call(
            self._reader.xreadgroup,
            self.group,
            self.consumer,
            {self.stream: after},
            self._batch,
            block_ms,
        )
        # RESP2: [[stream, entries]], or [] when a blocking read timed out.
        return list(reply[0][1]) if reply else []

    async def _claim(self, cursor: bytes) -> tuple[bytes, list[Entry]]:
        reply = await self._host.call(
            self._reader.xautoclaim,
            self.stream,
            self.group,
            self.consumer,
            self._claim_idle_ms,
            cursor,
            self._batch,
        )
        # [next cursor, claimed entries, ids no longer in the stream (Redis dropped them)]
        return reply[0], list(reply[1])

    async def _message(self, entry_id: EntryId, fields: dict[bytes, bytes]) -> Message[Any] | None:
        """The entry as a message, or None when it is in hand already or was set aside."""
        if entry_id in self._in_hand:
            return None
        key = entry_id.decode()
        if not fields:  # deleted or trimmed from the stream while pending: nothing to do
            await self._xack(entry_id)
            return None
        headers: dict[str, str] = {}
        if self._field is None:
            value: Any = {}
            for name, data in fields.items():
                decoded = await self.decoder.decode(data, key=key)
                if decoded is SKIPPED:
                    await self._xack(entry_id)
                    return None
                value[name.decode(errors="backslashreplace")] = decoded
        else:
            payload = fields.get(self._field)
            if payload is None:
                # The decode policy applies: a record without its payload cannot be decoded.
                value = await self.decoder.reject(b"", self._missing(key, fields), key=key)
            else:
                value = await self.decoder.decode(payload, key=key)
            if value is SKIPPED:
                await self._xack(entry_id)
                return None
            headers = {
                name.decode(errors="backslashreplace"): data.decode(errors="backslashreplace")
                for name, data in fields.items()
                if name != self._field
            }
        self._in_hand.add(entry_id)
        self._nacked_ids.discard(entry_id)
        milliseconds = int(key.partition("-")[0])
        return Message(
            value,
            key=key,
            headers=headers,
            timestamp=milliseconds / 1000,
            source=self.name,
            settlement=_StreamAck(self, entry_id),
        )

    def _missing(self, key: str, fields: dict[bytes, bytes]) -> RecordRejected:
        assert self._field is not None
        names = ", ".join(repr(name.decode(errors="backslashreplace")) for name in sorted(fields))
        return RecordRejected(
            f"entry {key} has no field {self._field.decode(errors='backslashreplace')!r} "
            f"(fields: {names}); set field= to the field that holds the payload, or "
            "field=None for the whole entry"
        )

    async def ack_many(self, messages: Iterable[Message[Any]]) -> None:
        """Acknowledge messages of this source with one ``XACK``: one round trip (and,
        under trio, one hop to the client's thread) instead of one per message. Messages
        settled already are left out.

        Example:
            With a Redis server running::

                batch = []
                async for message in source:
                    batch.append(message)
                    if len(batch) == 100:
                        await store(batch)
                        await source.ack_many(batch)
                        batch.clear()
        """
        settlements = []
        for message in messages:
            settlement = message.settlement
            if not isinstance(settlement, _StreamAck) or settlement._source is not self:
                raise ValueError(
                    f"{self.name}: ack_many() takes messages of this source only, got "
                    f"{describe(message)}; ack others with their own source, or message.ack()"
                )
            settlements.append(settlement)
        entry_ids = []
        for settlement in settlements:
            if settlement.settled is None:
                settlement.settled = "ack"
                self._in_hand.discard(settlement._entry_id)
                entry_ids.append(settlement._entry_id)
        if entry_ids:
            await self._xack(*entry_ids)

    async def _release(self) -> None:
        """Hand back to the group, as the source closes, the entries this consumer was given
        and never handed out: what it read ahead (at most a ``batch``), a read whose reply
        was lost to a cancellation, an entry whose decoding failed. Entries yielded and
        not acknowledged (in hand, or nacked) stay pending on this consumer: they were
        taken.

        Redis has no "unclaim", and XACK would lose them. So they are moved (``XCLAIM ...
        JUSTID``, which leaves their delivery count as it is) to the group's consumer
        :data:`RELEASED_CONSUMER`, which never reads, with their idle time set to "since
        the epoch" (``TIME 0``): every worker's next ``XAUTOCLAIM`` finds them idle for
        longer than its ``claim_idle_ms``, and takes them at once. Without
        ``claim_idle_ms`` nobody claims, so they stay here, to be re-read on restart.
        Shielded, and bounded in time: a close that cannot reach Redis leaves them pending
        on this consumer, claimed after ``claim_idle_ms``.
        """
        self._entries.clear()
        if self._claim_idle_ms is None:
            return
        held = frozenset(self._in_hand | self._nacked_ids)
        with anyio.CancelScope(shield=True, deadline=anyio.current_time() + RELEASE_TIMEOUT_S):
            # ResponseError: the stream or its group was deleted meanwhile, nothing to give.
            with contextlib.suppress(*CONNECTION_ERRORS, ResponseError):
                self.released += await self._host.call(self._release_on_host, held)

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

    async def _settle(self, entry_id: EntryId, *, ack: bool) -> None:
        self._in_hand.discard(entry_id)
        if ack:
            await self._xack(entry_id)
        else:
            self._nacked = True
            self._nacked_ids.add(entry_id)

    async def _xack(self, *entry_ids: EntryId) -> None:
        if self._closed:
            raise RuntimeError(
                f"{self.name}: message {entry_ids[0].decode()!r} settled after its "
                "redis_stream_source was closed; settle messages inside the source's "
                "`async with` block (the entry stays pending and will be delivered again)"
            )
        await self._host.call(self._commands.xack, self.stream, self.group, *entry_ids)


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
        ``timestamp``: the id's time). ``await message.ack()`` sends ``XACK``;
        ``nack()`` leaves the entry pending and the next read delivers it again
        (``nack(requeue=False)`` acks it: the group is done with it). Settle messages
        before the ``async with`` block ends; what is left unsettled stays pending on
        this consumer, and what was read ahead (or nacked) is handed back to the group.

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
    for name, value in (("url", url), ("stream", stream), ("group", group)):
        check_name(where, name, value)
    check_name(where, "consumer", consumer)
    check_count(where, "batch", batch)
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
        _connected(host, url, retry=False, socket_timeout=read_timeout) as reader,
        _connected(host, url, retry=True) as commands,
    ):
        await _prepare_group(host, commands, stream, group, create=create_group, start_id=start_id)
        source = RedisStreamSource(
            host=host,
            reader=reader,
            commands=commands,
            stream=stream,
            group=group,
            consumer=consumer,
            decoder=decoder,
            field=field,
            batch=batch,
            block_ms=block_ms,
            claim_idle_ms=claim_idle_ms,
        )
        try:
            yield source
        finally:
            source._closed = True
            await source._release()


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


class RedisStreamSink:
    """What :func:`redis_stream_sink` yields: ``send``/``send_batch`` append entries.

    Attributes:
        batch_size: how many entries a :class:`rxflow.Flow` should hand to ``send_batch``.

    Example:
        With a Redis server running::

            async with redis_stream_sink("redis://localhost", "totals", encoder=json.dumps) as out:
                entry_id = await out.send({"total": 3})
                await out.send_batch([{"total": 4}, {"total": 5}])
    """

    def __init__(
        self,
        *,
        host: AsyncioHost,
        client: Any,
        stream: str,
        field: str | None,
        encoder: Callable[[Any], Any] | None,
        maxlen: int | None,
        batch_size: int,
    ) -> None:
        self._host = host
        self._client = client
        self.stream = stream
        self._field = field
        self._encoder = encoder
        self._maxlen = maxlen
        self.batch_size = batch_size

    async def send(self, item: Any) -> str:
        """Append one entry; returns its id once Redis replied."""
        (entry_id,) = await self.send_batch([item])
        return entry_id

    async def send_batch(self, items: Sequence[Any]) -> list[str]:
        """Append one entry per item, pipelined in one round trip; returns their ids once
        Redis replied to every ``XADD``."""
        # Encode everything first, so that a bad item fails before anything is written.
        entries = [self._fields(item) for item in items]
        if not entries:
            return []
        ids: list[bytes] = await self._host.call(self._xadd_all, entries)
        return [entry_id.decode() for entry_id in ids]

    async def _xadd_all(self, entries: list[Mapping[Any, FieldValue]]) -> list[bytes]:
        async with self._client.pipeline(transaction=False) as pipe:
            for fields in entries:
                pipe.xadd(self.stream, fields, maxlen=self._maxlen, approximate=True)
            ids: list[bytes] = await pipe.execute()
        return ids

    def _fields(self, item: Any) -> Mapping[Any, FieldValue]:
        value = self._encoder(item) if self._encoder is not None else item
        if self._field is None:
            if isinstance(value, Mapping) and value:
                return value
            raise TypeError(
                f"redis_stream_sink({self.stream!r}) with field=None writes mappings of field "
                f"names to values, got {type(value).__name__}; pass an encoder= that returns "
                "such a dict, or field='data' to write the item as one field"
            )
        if isinstance(value, FieldValue) and not isinstance(value, bool):
            return {self._field: value}
        raise TypeError(
            f"redis_stream_sink({self.stream!r}) cannot write a {type(value).__name__} as field "
            f"{self._field!r}: Redis stores bytes, str and numbers; pass an encoder= that "
            "returns one (json.dumps, for instance)"
        )


@contextlib.asynccontextmanager
async def redis_stream_sink(
    url: str,
    stream: str,
    *,
    field: str | None = "data",
    encoder: Callable[[Any], Any] | None = None,
    maxlen: int | None = None,
    batch_size: int = 100,
) -> AsyncIterator[RedisStreamSink]:
    """Append items to a Redis stream with ``XADD``.

    Args:
        url: the server, as ``redis://[user:password@]host[:port][/db]``.
        stream: the stream's key (created by the first write).
        field: the entry field the encoded item goes to; ``None``: the encoder returns the
            entry's fields as a dict.
        encoder: turns an item into bytes, str or a number (or a dict, with ``field=None``);
            by default items must already be one.
        maxlen: keep the stream at about this many entries (``MAXLEN ~``, which trims
            whole blocks and is cheap); ``None`` keeps everything.
        batch_size: the batch size a :class:`rxflow.Flow` uses with this sink.

    A write that fails with the connection is retried by redis-py; if its reply was what got
    lost, the entry is written twice (at-least-once).

    Example:
        With a Redis server running::

            async with redis_stream_sink("redis://localhost", "orders", encoder=json.dumps) as sink:
                await sink.send_batch([{"n": 1}, {"n": 2}])
    """
    where = f"redis_stream_sink({stream!r})"
    check_name(where, "url", url)
    check_name(where, "stream", stream)
    if field is not None:
        check_name(where, "field", field)
    if encoder is not None and not callable(encoder):
        raise TypeError(f"{where}: encoder must be a function item -> bytes/str, got {encoder!r}")
    check_count(where, "maxlen", maxlen, optional=True)
    check_count(where, "batch_size", batch_size)
    async with AsyncioHost() as host, _connected(host, url, retry=True) as client:
        yield RedisStreamSink(
            host=host,
            client=client,
            stream=stream,
            field=field,
            encoder=encoder,
            maxlen=maxlen,
            batch_size=batch_size,
        )
