"""One consumer of a Redis consumer group, as the connector kit's reader: what is special
to Redis Streams (reading the own pending list first, claiming idle entries, the entries in
hand, handing entries back at close)."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any, Final

import anyio

from rxflow.connectors._asyncio_host import AsyncioHost
from rxflow.connectors._kit import NO_HEADERS, Incoming, Verb
from rxflow.connectors._message import InFlightLimit
from rxflow.connectors.codecs import RecordRejected
from rxflow.connectors.redis._client import CONNECTION_ERRORS, ResponseError, address
from rxflow.errors import ServiceUnavailableError

__all__ = ["RELEASED_CONSUMER", "EntryId", "GroupReader", "prepare_group", "typical_size"]

RECONNECT_BACKOFF_S: Final = (0.1, 0.2, 0.5, 1.0, 2.0, 4.0, 8.0, 8.0)
"""The waits before each retry of a read that lost its connection, about 24 s in all (long
enough for a server restart); after the last one the source gives up."""
RELEASED_CONSUMER: Final = "rxflow-released"
"""The consumer a closing source moves its unread entries to, so that any worker's claim
takes them at once (see :meth:`GroupReader.release`); it never reads itself."""
RELEASE_PAGE: Final = 1000
RELEASE_TIMEOUT_S: Final = 5.0
SIZE_SAMPLE: Final = 16  # the newest entries whose size sizes a source's first read
WORKER_SEEN_MARGIN_MS: Final = 10_000
"""Added to two ``block_ms`` for the shortest time within which a consumer that read counts
as a worker (:meth:`GroupReader.other_workers`): a live consumer reads at least every
``block_ms``, unless its flow's sinks hold it back."""

EntryId = bytes
Entry = tuple[EntryId, dict[bytes, bytes]]


class GroupReader:
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
        # read again and new entries come next.
        self._pending_after: bytes | None = b"0"
        # An entry was nacked: the next read starts the pending list again, to deliver it
        # again. A flag, not _pending_after itself, which a read in flight would overwrite.
        self._reread = False
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
            if len(fields) > 1:  # the other fields, as text
                headers = {_text(n): _text(v) for n, v in fields.items() if n != self._field}
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
                        f"{address(self._reading)} and could not get it back in "
                        f"{sum(RECONNECT_BACKOFF_S):.0f} s ({error})"
                    ) from error
                await anyio.sleep(RECONNECT_BACKOFF_S[failures - 1])

    async def _read_or_claim(self, count: int) -> list[Entry]:
        if self._reread:
            self._reread, self._pending_after = False, b"0"
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
                self._reread = True
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

    @property
    def seen_within_ms(self) -> int:
        """How recently another consumer of the group must have read for
        :meth:`other_workers` to count it: ``claim_idle_ms`` (the time after which the group
        takes a silent consumer's entries for its work), and at least two ``block_ms`` plus
        the read timeout's margin, however short ``claim_idle_ms`` is."""
        floor = 2 * self._block_ms + WORKER_SEEN_MARGIN_MS
        return max(self._claim_idle_ms or 0, floor)

    async def other_workers(self) -> int:
        """The other consumers of the group that read recently (``XINFO CONSUMERS``: their
        ``idle`` time is below :attr:`seen_within_ms`), not counting this consumer and
        :data:`RELEASED_CONSUMER`. Best effort: see :meth:`RedisStreamSource.other_workers`."""
        consumers = await self._host.call(self._commands.xinfo_consumers, self.stream, self.group)
        within = self.seen_within_ms
        return sum(
            1
            for info in consumers
            if _text(_as_bytes(info["name"])) not in (self.consumer, RELEASED_CONSUMER)
            and int(info["idle"]) < within
        )


def _text(data: bytes) -> str:
    return data.decode(errors="backslashreplace")


def _as_bytes(name: bytes | str) -> bytes:
    return name if isinstance(name, bytes) else name.encode()


def _size(fields: Mapping[bytes, bytes], field: bytes | None) -> int:
    """An entry's payload bytes, counted against ``read_ahead_bytes``: its field's, or
    (whole, or without its field) all of its values'."""
    found = fields.get(field) if field is not None else None
    return len(found) if found is not None else sum(len(data) for data in fields.values())


async def typical_size(client: Any, stream: str, field: str | None) -> int | None:
    """The average payload size of the stream's newest entries (None if it is empty): it
    sizes the source's first read, before any entry was read."""
    entries = await client.xrevrange(stream, count=SIZE_SAMPLE)
    if not entries:
        return None
    name = field.encode() if field is not None else None
    return sum(_size(fields, name) for _, fields in entries) // len(entries)


async def prepare_group(
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
