"""``Acker``: acknowledges settled source messages to their systems, in a task of its own,
so that settling (a synchronous Rx callback) never waits for a broker."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import anyio

__all__ = ["Acker"]

logger = logging.getLogger("rxflow")


class Acker:
    """Acknowledges settled messages in order, in a task of its own, so that settling
    (a synchronous Rx callback) never waits for a broker."""

    def __init__(self) -> None:
        self._settled: deque[Any] = deque()
        self._wake = anyio.Event()
        self._closed = False
        self.acked = 0
        self.failed = 0
        # Told of every message once its ack was sent or failed (Delivery.forget).
        self.on_done: Callable[[list[Any]], object] = lambda messages: None
        # Told of messages whose ack failed (a checkpoint keeps them covered).
        self.on_failed: Callable[[list[Any]], object] = lambda messages: None
        # Whether an ack is done only once the system will not deliver the message again,
        # also where acks take effect later (Kafka commits offsets on a timer; a source
        # with flush_acks() makes them take effect now). A checkpointed flow needs that: it
        # forgets which messages a checkpoint covered once their acks are done.
        self.durable_acks = False

    def put(self, message: Any) -> None:
        self._settled.append(message)
        self._wake.set()

    def close(self) -> None:
        self._closed = True
        self._wake.set()

    async def run(self) -> None:
        while True:
            while self._settled:
                await self._acknowledge_settled()
            if self._closed:
                return
            self._wake = anyio.Event()
            await self._wake.wait()

    async def _acknowledge_settled(self) -> None:
        # Everything settled so far, in one go: messages whose source acknowledges in
        # batches (one XACK for many ids) share a round trip; the others go one by one.
        settled, self._settled = self._settled, deque()
        batches: dict[int, tuple[Any, list[Any]]] = {}
        for message in settled:
            acker = getattr(getattr(message, "settlement", None), "batch_acker", None)
            if acker is None:
                await self._acknowledge(message.ack, [message])
            else:
                batches.setdefault(id(acker), (acker, []))[1].append(message)
        for acker, messages in batches.values():
            await self._acknowledge(partial(self._ack_many, acker, messages), messages)

    async def _ack_many(self, acker: Any, messages: list[Any]) -> None:
        await acker.ack_many(messages)
        flush = getattr(acker, "flush_acks", None)
        if self.durable_acks and flush is not None:
            await flush()  # a Kafka commit: done means the system will not send them again

    async def _acknowledge(self, ack: Callable[[], Awaitable[object]], messages: list[Any]) -> None:
        # Done means sent or failed (_send takes every Exception). An ack cancelled on its
        # way (the flow aborted) is not done: whether it reached its system is unknown, so a
        # checkpoint must keep covering its messages.
        await self._send(ack, messages)
        self.on_done(messages)

    async def _send(self, ack: Callable[[], Awaitable[object]], messages: list[Any]) -> None:
        try:
            await ack()
        except Exception:
            # Not acknowledged means delivered again: at-least-once still holds.
            self.failed += len(messages)
            logger.warning("could not acknowledge %d message(s)", len(messages), exc_info=True)
            self.on_failed(messages)
        else:
            self.acked += len(messages)
