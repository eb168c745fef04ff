"""Settlements: each message's handle (:class:`BrokerSettlement`) and the one writer of a
source's settlements (``Settler``)."""

from __future__ import annotations

from collections.abc import Coroutine, Hashable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import anyio

from rxflow.connectors._kit._records import Reader, Verb
from rxflow.connectors._message import Settlement
from rxflow.errors import SettledAfterCloseError

if TYPE_CHECKING:
    from rxflow.connectors._kit._source import BrokerSource

__all__ = ["BrokerSettlement", "Settler"]

H = TypeVar("H")


class Settler(Generic[H]):
    """Writes settlements through the reader: at once, or queued and written in runs.

    Invariant: ``outstanding`` counts records fetched (handed out or buffered) and not
    settled yet; every settlement decrements it exactly once, when it is accepted.
    """

    def __init__(self, reader: Reader[H]) -> None:
        self._reader = reader
        self.outstanding = 0
        self.closed = False
        self._queue: list[tuple[H, Verb]] = []
        self._wake = anyio.Event()
        # Set by the next settlement while the source waits at its in-flight limit (None
        # otherwise: no event to set per settlement on the hot path).
        self._settled_one: anyio.Event | None = None
        self._failure: Exception | None = None

    def check(self) -> None:
        """Raise what went wrong writing queued settlements, if anything did."""
        if self._failure is not None:
            raise self._failure

    async def settle(self, handle: H, verb: Verb, *, identity: Hashable | None) -> None:
        if self.closed:
            # (The record is named only here: a string per settlement costs on the hot path.)
            what = "a message" if identity is None else f"message {identity!r}"
            raise SettledAfterCloseError(
                f"{self._reader.name}: {what} was settled after its source closed; it was "
                "not, and the system delivers it again. Settle messages inside the source's "
                "`async with` block"
            )
        if self._failure is not None:  # check(), inline: this runs for every message
            raise self._failure
        self._accepted(1)
        if self._reader.queues_settlements:
            self._queue.append((handle, verb))
            self._wake.set()
        else:
            await self._reader.settle(((handle, verb),))

    async def settle_many(self, settlements: list[tuple[H, Verb]]) -> None:
        if self.closed:
            raise SettledAfterCloseError(
                f"{self._reader.name}: {len(settlements)} messages were settled after their "
                "source closed; they were not, and the system delivers them again"
            )
        self.check()
        self._accepted(len(settlements))
        await self._reader.settle(settlements)

    def _accepted(self, count: int) -> None:
        self.outstanding -= count
        settled_one = self._settled_one
        if settled_one is not None:
            self._settled_one = None
            settled_one.set()

    async def wait_for_a_settlement(self) -> None:
        self._settled_one = settled_one = anyio.Event()
        await settled_one.wait()

    async def run(self) -> None:
        """Write queued settlements until closed (only needed when they are queued)."""
        try:
            while not self.closed or self._queue:
                if not self._queue:
                    self._wake = anyio.Event()
                    await self._wake.wait()
                    continue
                await self._write_queued()
        finally:
            await self._write_queued()  # what was queued when cancelled

    def close(self) -> None:
        self.closed = True
        self._wake.set()

    async def _write_queued(self) -> None:
        queue, self._queue = self._queue, []
        if not queue or self._failure is not None:
            return
        try:
            # Shielded: a cancelled source still writes what its consumer settled.
            with anyio.CancelScope(shield=True):
                await self._reader.settle(queue)
        except Exception as error:  # reported by the next settlement or fetch
            self._failure = error


class BrokerSettlement(Settlement, Generic[H]):
    """Settles one record of a :class:`BrokerSource` through its reader; ``nack`` asks the
    system to deliver it again (``requeue=True``) or to drop or dead-letter it.

    ``redelivered`` is the system's own flag where it has one (RabbitMQ), else None.
    """

    __slots__ = ("_handle", "_source", "redelivered")

    def __init__(
        self,
        source: BrokerSource[Any, H],
        handle: H,
        identity: Hashable | None,
        redelivered: bool | None = None,
    ) -> None:
        # _making.messages_of makes settlements without this __init__: a field
        # added here is set there too.
        super().__init__(identity)
        self._source = source
        self._handle = handle
        self.redelivered = redelivered

    @property
    def batch_acker(self) -> BrokerSource[Any, H]:
        return self._source  # its ack_many() settles many records in one call

    def _ack(self) -> Coroutine[Any, Any, None]:
        # The settler's coroutine itself, not one awaiting it: one frame less per ack.
        return self._source._settler.settle(self._handle, "ack", identity=self.identity)

    async def _nack(self, requeue: bool) -> None:
        verb: Verb = "requeue" if requeue else "reject"
        await self._source._settler.settle(self._handle, verb, identity=self.identity)
        if requeue and self._source.requeue_rereads:
            await self._source._give_back_read_ahead()
