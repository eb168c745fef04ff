"""The Redis Streams source: :func:`redis_stream_source` reads a stream as one consumer of
a consumer group, on the connector kit's :class:`~rxflow.connectors._kit.BrokerSource`."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Final

from rxflow._checks import check_count, check_name
from rxflow.connectors._asyncio_host import AsyncioHost
from rxflow.connectors._kit import DEFAULT_READ_AHEAD_BYTES, BrokerSource
from rxflow.connectors.codecs import Codec, CodecName, DecodeFailure, DecodePolicy, Decoder
from rxflow.connectors.redis._client import connected
from rxflow.connectors.redis._group import EntryId, GroupReader, prepare_group, typical_size

__all__ = ["DEFAULT_CLAIM_IDLE_MS", "RedisStreamSource", "redis_stream_source"]

DEFAULT_CLAIM_IDLE_MS: Final = 60_000
READ_TIMEOUT_MARGIN_S: Final = 10.0
"""How much longer than its ``BLOCK`` time a read may take before the connection counts as
dead (a silent network failure would otherwise hang the read forever)."""


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
            re-read) and never handed out, moved to the group's consumer
            :data:`~rxflow.connectors.redis.RELEASED_CONSUMER` for any worker to claim.

    It is its own iterator: a second ``async for`` goes on where the first stopped. It holds
    at most ``batch`` entries that it has not handed out yet (and ``read_ahead_bytes``).

    Example:
        With a Redis server running::

            async with redis_stream_source("redis://localhost", "orders", "billing", "w1") as src:
                async for message in src:
                    print(message.key, message.value)
                    await message.ack()
    """

    shares_work: Final = True
    """The group hands each entry to any of its consumers: a :class:`rxflow.Flow` with keyed
    windows over this source refuses to run while :meth:`other_workers` sees others."""

    def __init__(self, reader: GroupReader, decoder: Decoder, **bounds: Any) -> None:
        super().__init__(reader, decoder, **bounds)
        self._group = reader
        self.stream, self.group, self.consumer = reader.stream, reader.group, reader.consumer

    async def other_workers(self) -> int:
        """How many other consumers of the group read the stream now (best effort).

        From ``XINFO CONSUMERS``: every consumer of the group but this one (and
        :data:`~rxflow.connectors.redis.RELEASED_CONSUMER`) whose ``idle`` time, the time
        since it last tried to read or claim, is below ``claim_idle_ms`` (or two
        ``block_ms`` plus 10 s, if that is longer, or if nothing is claimed). A live
        consumer reads at least every ``block_ms``, unless its flow's sinks hold it back,
        and a consumer silent for ``claim_idle_ms`` is what the group already treats as
        gone (its entries are claimed by the others): so a worker slowed down by its sinks
        still counts, and a worker that stopped counts for ``claim_idle_ms`` after its
        last read. Give each worker a consumer name that stays the same across restarts:
        a restarted worker is then this consumer, not another one.

        Example:
            With a Redis server running::

                async with redis_stream_source(url, "clicks", "sessions", "w1") as clicks:
                    assert await clicks.other_workers() == 0, "w1 must run alone"
        """
        return await self._group.other_workers()


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
        connected(host, url, retry=False, socket_timeout=read_timeout) as reading,
        connected(host, url, retry=True) as commands,
    ):
        await prepare_group(host, commands, stream, group, create=create_group, start_id=start_id)
        reader = GroupReader(
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
            expected_size=await host.call(typical_size, commands, stream, field),
        ) as source:
            yield source
