"""The Redis Streams sink: :func:`redis_stream_sink` appends items with ``XADD``, on the
connector kit's :class:`~rxflow.connectors._kit.BrokerSink`."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

from rxflow._checks import check_count, check_name
from rxflow.connectors._asyncio_host import AsyncioHost
from rxflow.connectors._kit import BrokerSink
from rxflow.connectors.codecs import Encoder, EncoderSpec, sink_encoder
from rxflow.connectors.redis._client import connected

__all__ = ["FieldValue", "RedisStreamSink", "redis_stream_sink"]

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
    async with AsyncioHost() as host, connected(host, url, retry=True) as client:
        appending = BrokerSink(
            _Appending(host, client, stream, maxlen), encode, batch_size=batch_size, name=where
        )
        yield RedisStreamSink(appending, stream)
