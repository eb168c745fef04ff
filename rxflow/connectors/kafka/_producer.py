"""The Kafka sink's producing side: a batch's records addressed (key, partition, headers,
timestamp: fixed, or functions of the item) and handed to aiokafka's producer in one call,
then every acknowledgement awaited (:class:`Producing`)."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any, NamedTuple

from rxflow.connectors._asyncio_host import AsyncioHost
from rxflow.connectors._extras import requires_extra

with requires_extra("kafka"):
    import aiokafka.errors  # type: ignore[import-untyped]  # no py.typed

__all__ = [
    "HeadersSpec",
    "Key",
    "KeySpec",
    "Outcome",
    "PartitionSpec",
    "Producing",
    "Timestamp",
    "TimestampSpec",
    "Written",
]

Key = str | bytes | None
KeySpec = Key | Callable[[Any], Key]
"""A record's key: one for every item, or a function of the item (``None``: no key)."""
PartitionSpec = int | Callable[[Any], int | None] | None
"""A record's partition: one for every item, or a function of the item; ``None`` lets the
producer choose (by the key's hash, as every Kafka client does)."""
HeadersSpec = Mapping[str, str | bytes] | Callable[[Any], Mapping[str, str | bytes] | None] | None
"""A record's headers: the same for every item, or a function of the item."""
Timestamp = float | datetime.datetime | None
TimestampSpec = Callable[[Any], Timestamp] | None
"""A record's timestamp (seconds since the epoch, or an aware ``datetime``) as a function
of the item; ``None``: the time it is produced."""


class Written(NamedTuple):
    """Where Kafka stored a record: its partition and offset."""

    partition: int
    offset: int


_written: Callable[[tuple[int, int]], Written] = partial(tuple.__new__, Written)
"""``Written(partition, offset)`` without NamedTuple's Python-level ``__new__`` (per record)."""


class _Batch(NamedTuple):
    """A batch ready for ``producer.send``, computed on the caller's side: the values, and
    for each of key, partition, headers and timestamp one value per record, or ``None``
    where every record has the sink's fixed one."""

    values: list[bytes]
    keys: list[bytes | None] | None
    partitions: list[int | None] | None
    headers: list[list[tuple[str, bytes]] | None] | None
    timestamps: list[int | None] | None


Outcome = tuple[list[Written | None], dict[int, BaseException]]
"""Where each record of a batch was stored (``None`` for a failed one), and why each
failed record failed, by its position in the batch."""


def _key_bytes(where: str, key: object) -> bytes | None:
    if key is None or isinstance(key, bytes):
        return key
    if isinstance(key, str):
        return key.encode("utf-8")
    if isinstance(key, bytearray | memoryview):
        return bytes(key)
    raise TypeError(
        f"{where}: a key must be str, bytes or None, got {type(key).__name__} {key!r:.60}; "
        "make the key function return str(...) of it"
    )


def _header_list(where: str, headers: object) -> list[tuple[str, bytes]] | None:
    if headers is None:
        return None
    if not isinstance(headers, Mapping):
        raise TypeError(
            f"{where}: headers must be a mapping of names to str or bytes, got "
            f"{type(headers).__name__}"
        )
    listed: list[tuple[str, bytes]] = []
    for name, value in headers.items():
        if not isinstance(name, str):
            raise TypeError(f"{where}: a header's name must be str, got {name!r:.60}")
        if isinstance(value, str):
            listed.append((name, value.encode("utf-8")))
        elif isinstance(value, bytes | bytearray | memoryview):
            listed.append((name, bytes(value)))
        else:
            raise TypeError(
                f"{where}: header {name!r} must be str or bytes, got {type(value).__name__}"
            )
    return listed


def _timestamp_ms(where: str, timestamp: object) -> int | None:
    if timestamp is None:
        return None
    if isinstance(timestamp, datetime.datetime):
        if timestamp.tzinfo is None:
            raise ValueError(
                f"{where}: a timestamp datetime must be aware (tzinfo set), got {timestamp!r}"
            )
        return round(timestamp.timestamp() * 1000)
    if isinstance(timestamp, int | float) and not isinstance(timestamp, bool):
        return round(timestamp * 1000)
    raise TypeError(
        f"{where}: a timestamp must be seconds since the epoch or an aware datetime, got "
        f"{type(timestamp).__name__}"
    )


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark a send's outcome as seen (its batch's call was cancelled: nobody else will)."""
    if not future.cancelled():
        future.exception()


class Producing:
    """The sink's :class:`~rxflow.connectors._kit.Publisher`: computes the records' keys,
    partitions, headers and timestamps on the caller's side, then hands the whole batch to
    the producer in one call on the client's loop, which appends every record to the
    producer's batches before waiting for the broker's acknowledgements."""

    def __init__(
        self,
        where: str,
        host: AsyncioHost,
        producer: Any,
        topic: str,
        key: KeySpec,
        partition: PartitionSpec,
        headers: HeadersSpec,
        timestamp: TimestampSpec,
    ) -> None:
        self._where, self._host, self._producer, self._topic = where, host, producer, topic
        self._key, self._partition, self._headers, self._timestamp = (
            key,
            partition,
            headers,
            timestamp,
        )
        # What every record gets, where it is not a function of the item.
        self._fixed_key = None if callable(key) else _key_bytes(where, key)
        self._fixed_partition = None if callable(partition) else partition
        self._fixed_headers = None if callable(headers) else _header_list(where, headers)

    def _partition_of(self, item: Any) -> int | None:
        assert callable(self._partition)
        partition = self._partition(item)
        if partition is not None and (
            not isinstance(partition, int) or isinstance(partition, bool) or partition < 0
        ):
            raise TypeError(
                f"{self._where}: a partition must be an int >= 0 or None, got {partition!r:.60}"
            )
        return partition

    async def publish(self, records: Sequence[tuple[bytes, Any]]) -> Outcome:
        return await self.produce([value for value, _ in records], [item for _, item in records])

    async def produce(self, values: list[bytes], items: Sequence[Any]) -> Outcome:
        """Produce ``values``, addressed by their ``items``; each record's outcome."""
        if not values:
            return [], {}
        where = self._where
        key, partition, headers, timestamp = (
            self._key,
            self._partition,
            self._headers,
            self._timestamp,
        )
        batch = _Batch(
            values,
            [_key_bytes(where, key(item)) for item in items] if callable(key) else None,
            [self._partition_of(item) for item in items] if callable(partition) else None,
            [_header_list(where, headers(item)) for item in items] if callable(headers) else None,
            None if timestamp is None else [_timestamp_ms(where, timestamp(i)) for i in items],
        )
        outcome: Outcome = await self._host.call(self._send_all, batch)
        return outcome

    async def _send_all(self, batch: _Batch) -> Outcome:
        """On the client's loop: every record into the producer's batches (``send`` waits
        only when a partition's batch is full), then wait for every acknowledgement."""
        known = await self._producer.partitions_for(self._topic)
        failures: dict[int, BaseException] = {}
        futures = await self._append_all(batch, known, failures)
        try:
            for future in futures:
                if future is not None and not future.done():
                    # A partition's batch is acknowledged at once: most are done by now.
                    await asyncio.wait((future,))
        except asyncio.CancelledError:
            for future in futures:  # sent all the same; nobody will look at them
                if future is not None:
                    future.add_done_callback(_retrieve)
            raise
        if not failures:
            try:  # the usual case first: every record stored
                stored = [future.result() for future in futures]  # type: ignore[union-attr]
            except Exception:  # the loop below tells each record's outcome
                pass
            else:
                return [_written((m.partition, m.offset)) for m in stored], failures
        written: list[Written | None] = []
        for future in futures:
            if future is None:
                written.append(None)
                continue
            try:
                metadata = future.result()
            except Exception as error:
                failures[len(written)] = error
                written.append(None)
            else:
                written.append(_written((metadata.partition, metadata.offset)))
        return written, failures

    async def _append_all(
        self, batch: _Batch, known: set[int], failures: dict[int, BaseException]
    ) -> list[asyncio.Future[Any] | None]:
        """Every record of ``batch`` into the producer: each one's future, or ``None`` and
        its error in ``failures``."""
        topic, send = self._topic, self._producer.send
        values, keys, partitions, headers, timestamps = batch
        key, partition, header = self._fixed_key, self._fixed_partition, self._fixed_headers
        futures: list[asyncio.Future[Any] | None] = []
        varies = (keys, partitions, headers, timestamps) != (None, None, None, None)
        if not varies and (partition is None or partition in known):  # the fast loop
            for value in values:
                try:
                    futures.append(
                        await send(topic, value, key=key, partition=partition, headers=header)
                    )
                except aiokafka.errors.KafkaError as error:  # too large, buffer full
                    failures[len(futures)] = error
                    futures.append(None)
            return futures
        stamp = None
        for at, value in enumerate(values):
            if keys is not None:
                key = keys[at]
            if partitions is not None:
                partition = partitions[at]
            if headers is not None:
                header = headers[at]
            if timestamps is not None:
                stamp = timestamps[at]
            if partition is not None and partition not in known:
                failures[at] = ValueError(
                    f"topic {topic!r} has no partition {partition} (it has {len(known)}: 0 to "
                    f"{len(known) - 1})"
                )
                futures.append(None)
                continue
            try:
                futures.append(
                    await send(
                        topic,
                        value,
                        key=key,
                        partition=partition,
                        timestamp_ms=stamp,
                        headers=header,
                    )
                )
            except aiokafka.errors.KafkaError as error:
                failures[at] = error
                futures.append(None)
        return futures
