"""The Kafka changelog store's writing side, on the clients' loop: a commit's records and
markers (:func:`produce_commit`) and a claim record (:func:`produce_claim`)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from rxflow.connectors._extras import requires_extra
from rxflow.state._kafka_records import (
    CLAIM_HEADER,
    ENTRY_HEADER,
    EPOCH_HEADER,
    MARKER_HEADER,
    SNAPSHOT_HEADER,
    claim_header,
    epoch_header,
)

with requires_extra("kafka"):
    import aiokafka.errors  # type: ignore[import-untyped]  # no py.typed

__all__ = ["Plan", "produce_claim", "produce_commit"]

Send = Callable[..., Coroutine[Any, Any, "asyncio.Future[Any]"]]
"""aiokafka's ``AIOKafkaProducer.send``: queues a record, returns its delivery future."""


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


class Plan:
    """One scope's part of a commit (or a snapshot of the scope), ready to produce;
    :attr:`first` and :attr:`last` are where it went, once produced."""

    __slots__ = (
        "entries",
        "epoch",
        "first",
        "last",
        "marker",
        "partition",
        "scope",
        "snapshot",
        "topic",
    )

    def __init__(
        self,
        scope: str,
        topic: str,
        partition: int,
        entries: list[tuple[bytes, bytes | None, bytes]],
        marker: tuple[bytes, bytes],
        epoch: int | None,
        *,
        snapshot: bool = False,
    ) -> None:
        self.scope, self.topic, self.partition = scope, topic, partition
        self.entries, self.marker, self.epoch = entries, marker, epoch
        self.snapshot = snapshot
        self.first = -1  # the offset of its first record (an entry, or the marker alone)
        self.last = -1  # the offset of its marker

    def marker_headers(self) -> list[tuple[str, bytes]]:
        headers = [(MARKER_HEADER, self.marker[1])]
        if self.epoch is not None:
            headers.append((EPOCH_HEADER, epoch_header(self.epoch)))
        if self.snapshot:
            headers.append((SNAPSHOT_HEADER, b""))
        return headers


async def produce_claim(send: Send, topic: str, partition: int, namespace: str, scope: str) -> int:
    """A claim record of ``scope``, acknowledged; its offset, which is the claim's epoch."""
    future = await send(
        topic, b"", partition=partition, headers=[(CLAIM_HEADER, claim_header(namespace, scope))]
    )
    metadata = await future
    return int(metadata.offset)


async def produce_commit(send: Send, plans: list[Plan]) -> dict[str, BaseException]:
    """Every scope's records, acknowledged, then the markers of the scopes whose records
    all were; what failed, by scope."""
    failed: dict[str, BaseException] = {}
    sent: list[tuple[Plan, list[asyncio.Future[Any]]]] = []
    waiting: list[asyncio.Future[Any]] = []
    try:
        for plan in plans:
            futures: list[asyncio.Future[Any]] = []
            sent.append((plan, futures))
            topic, partition = plan.topic, plan.partition
            try:
                for key, value, header in plan.entries:
                    futures.append(
                        await send(
                            topic,
                            value,
                            key=key,
                            partition=partition,
                            headers=[(ENTRY_HEADER, header)],
                        )
                    )
            except aiokafka.errors.KafkaError as error:  # too large, buffer full
                failed[plan.scope] = error
            waiting += futures
        if waiting:
            await asyncio.wait(waiting)
        markers: list[tuple[Plan, list[asyncio.Future[Any]], asyncio.Future[Any]]] = []
        waiting = []
        for plan, futures in sent:
            refused = next((f.exception() for f in futures if f.exception()), None)
            if refused is not None:
                failed.setdefault(plan.scope, refused)
            if plan.scope in failed:
                continue
            future = await send(
                plan.topic, plan.marker[0], partition=plan.partition, headers=plan.marker_headers()
            )
            markers.append((plan, futures, future))
            waiting.append(future)
        if waiting:
            await asyncio.wait(waiting)
        for plan, futures, future in markers:
            if (refused := future.exception()) is not None:
                failed[plan.scope] = refused
            else:
                plan.last = future.result().offset
                plan.first = min((f.result().offset for f in futures), default=plan.last)
    except asyncio.CancelledError:
        for future in waiting:
            future.add_done_callback(_retrieve)
        for _, futures in sent:
            for future in futures:
                future.add_done_callback(_retrieve)
        raise
    return failed
