"""A crashed worker's messages, first: how a starting source gets them before newer ones.

A worker that dies without a goodbye (SIGKILL, a lost machine) cannot nak what it was
handed: JetStream keeps those messages pending until each one's ``ack_wait`` has passed
since it was delivered, and meanwhile hands newer messages to the worker that took over
(up to ``max_ack_pending``). The old ones then come after messages far newer than they are:
an event-time window has closed by then, and drops them as late.

So a source that starts while the durable has messages pending and no other worker is
there to hold them (:class:`~rxflow.connectors.nats._workers.RollCall`) takes them first
(:class:`Recovery`). Some may be due already (nakked by a source that closed: JetStream
hands due redeliveries to a pull request before any message it has not delivered yet);
the others, a crashed worker's, are due ``ack_wait`` after their delivery, at most
``ack_wait`` after the consumer's last delivery (``delivered.last_active``). Newer messages
that a fetch brings before every pending one came again are held back (one fetch's worth,
at most) until the rest are due, then handed out in stream order.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, Final, NamedTuple

import anyio

from rxflow._source_time import current_source_time
from rxflow.connectors._kit import Incoming
from rxflow.connectors.nats._workers import RollCall

__all__ = ["DUE_MARGIN_S", "Recovery", "Survey", "survey"]

DUE_MARGIN_S: Final = 0.1
"""Waited past the moment the last pending message is due: the server's own timer moves it
to its redelivery queue then (measured here: within a few milliseconds)."""


class Survey(NamedTuple):
    """The durable's state when a source starts, as far as its first fetches care."""

    pending: int  # delivered, not acknowledged, and no other worker to settle them
    boundary: int  # the stream sequence of its last delivery: newer messages are above it
    wait: float  # seconds until every pending message is due for redelivery


NOTHING_PENDING: Final = Survey(0, 0, 0.0)


async def survey(subscription: Any, roll_call: RollCall) -> Survey:
    """What the durable holds for workers that are gone; nothing while another worker reads
    it (the pending messages may be its own, and it settles them). On the client's loop."""
    info = await subscription.consumer_info()
    pending = info.num_ack_pending or 0
    if not pending or await roll_call.others(subscription):
        return NOTHING_PENDING
    config = info.config
    # With backoff, the n-th redelivery waits backoff[n - 1]: the longest bounds them all.
    ack_wait = max(config.backoff) if config.backoff else (config.ack_wait or 30.0)
    last = info.delivered.last_active
    # Clocks may differ: never more than one ack_wait (the wait from a delivery just now).
    due = ack_wait if last is None else last.timestamp() + ack_wait - time.time()
    wait = min(max(due + DUE_MARGIN_S, 0.0), ack_wait + DUE_MARGIN_S)
    return Survey(pending, info.delivered.stream_seq, wait)


Fetch = Callable[[int], Awaitable[list[Incoming[Any]]]]
Touch = Callable[[list[Any]], Awaitable[object]]


class Recovery:
    """A starting source's first fetches, while what the durable held pending comes again.

    Used by one fetch at a time (the kit's). Invariant: ``held`` holds only messages newer
    than ``survey.boundary``, in stream order, at most one fetch's worth.
    """

    def __init__(self, found: Survey) -> None:
        self.survey = found
        self.deadline = anyio.current_time() + found.wait
        self.came = 0  # pending messages delivered again so far
        self.held: list[Incoming[Any]] = []
        self.waited = 0.0  # seconds spent waiting for messages not due yet

    @property
    def over(self) -> bool:
        """Whether fetches are plain again: nothing held, nothing pending to wait for."""
        return not self.held and self._all_came_or_due()

    def _all_came_or_due(self) -> bool:
        return self.came >= self.survey.pending or anyio.current_time() >= self.deadline

    async def fetch(self, count: int, fetch: Fetch, touch: Touch) -> list[Incoming[Any]]:
        """The next messages, through ``fetch(count)``; ``touch(handles)`` restarts the
        ack_wait of held messages as they are handed out."""
        while True:
            if self.came >= self.survey.pending:
                # Every pending message came again: the held ones are the next in line.
                if not self.held:
                    return await fetch(count)
                out, self.held = self.held[:count], self.held[count:]
                await touch([incoming.handle for incoming in out])
                return out
            if anyio.current_time() >= self.deadline:
                # Whatever is still pending is due: a fetch gets it before newer messages.
                held = {id(incoming) for incoming in self.held}
                merged = sorted([*self.held, *await fetch(count)], key=_sequence)
                self.held = merged[count:]
                out = merged[:count]
                # Held, they lost part of their ack_wait: the consumer gets all of it.
                await touch([incoming.handle for incoming in out if id(incoming) in held])
                return out
            if self.held:
                # A fetch brought newer messages: JetStream had no due redelivery left, so
                # the pending messages still missing are a crashed worker's, not due yet.
                await self._wait_until_due()
                continue
            fetched = await fetch(min(count, self.survey.pending - self.came))
            boundary = self.survey.boundary
            old = [incoming for incoming in fetched if _sequence(incoming) <= boundary]
            self.held = [incoming for incoming in fetched if _sequence(incoming) > boundary]
            self.came += len(old)
            if old or not fetched:
                return old

    async def _wait_until_due(self) -> None:
        started = anyio.current_time()
        # Held back, not idle: an event-time window's idle_timeout must not count this.
        source_time = current_source_time()
        if source_time is not None:
            source_time.pause()
        try:
            await anyio.sleep(self.deadline - started)
        finally:
            if source_time is not None:
                source_time.resume()
            self.waited += anyio.current_time() - started


def _sequence(incoming: Incoming[Any]) -> int:
    sequence = incoming.identity  # the stream sequence (source._incoming)
    assert isinstance(sequence, int)
    return sequence
