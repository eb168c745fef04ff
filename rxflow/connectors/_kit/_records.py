"""What a broker module tells the kit: its records (:class:`Incoming`) and its client's
calls (:class:`Reader`)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Hashable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, Generic, Literal, NamedTuple, Protocol, TypeVar

from rxflow.connectors._asyncio_host import AsyncioHost
from rxflow.connectors._message import InFlightLimit
from rxflow.connectors.codecs import RecordRejected
from rxflow.partitions import Partition

__all__ = [
    "DEFAULT_READ_AHEAD_BYTES",
    "NO_HEADERS",
    "Decoded",
    "HostedPushReader",
    "Incoming",
    "Payload",
    "Reader",
    "Verb",
]

H = TypeVar("H")  # what a reader settles a record by: a delivery, a message, an entry id

DEFAULT_READ_AHEAD_BYTES = 16 * 1024 * 1024
"""How many payload bytes a source holds fetched and not handed out, by default (16 MiB)."""

Verb = Literal["ack", "requeue", "reject"]
"""How a record is settled: done with; failed, deliver it again; failed, do not."""

NO_HEADERS: Mapping[str, str] = MappingProxyType({})  # shared, so it must not change


class Decoded(NamedTuple):
    """A record's value as the system's client decoded it already (asyncpg's rows): handed
    out as it is, by a source that has no decoder."""

    value: Any


Payload = bytes | Mapping[str, bytes] | RecordRejected | Decoded
"""What a record carries for the codec: its bytes; named fields, each decoded on its own (a
Redis entry read whole); why the reader found it unusable before any codec saw it; or a
value that needs no codec."""


class Incoming(NamedTuple, Generic[H]):
    """One fetched record, as a reader describes it to the kit."""

    payload: Payload
    handle: H  # what the reader settles it by
    key: str | bytes | None = None
    headers: Mapping[str, str] = NO_HEADERS
    timestamp: float | None = None
    identity: Hashable | None = None  # names the record across redeliveries
    size: int = 0  # payload bytes, counted against read_ahead_bytes
    redelivered: bool | None = None  # the system's own flag, where it has one
    partition: Partition | None = None  # the assignment it was read from (Kafka)
    offset: int | None = None  # its position in that partition


class Reader(Protocol[H]):
    """A broker module's part of a source: its client's calls, made from the caller's loop
    (a hosted client routes them through its :class:`AsyncioHost`).

    Attributes:
        name: the source's name in messages and errors (``"rabbitmq:orders"``).
        in_flight_limit: how many records the system delivers unsettled, at most (None if
            unlimited); the kit never fetches past it.
        queues_settlements: whether settlements may be queued and written in runs by a
            task of the kit (true when each call costs a thread hop and the system does
            not answer acks); false writes each one before ``ack()`` returns.
    """

    name: str
    in_flight_limit: InFlightLimit | None
    queues_settlements: bool

    async def fetch(self, count: int, max_bytes: int) -> Sequence[Incoming[H]]:
        """At most ``count`` records (at least one), waiting for them; or an empty list when
        none came within the system's poll time (the kit asks again). ``max_bytes`` is the
        read-ahead budget, for systems that can bound a fetch in bytes."""
        ...

    async def settle(self, settlements: Sequence[tuple[H, Verb]]) -> None:
        """Settle records, in order, with as few round trips as the system allows."""
        ...

    async def release(self, unhanded: Sequence[H]) -> int:
        """As the source closes: give back records fetched and never handed out, so the
        system delivers them again soon (nak them, re-queue them), or leave them to its
        redelivery. Returns how many were given back. Called shielded, at every close
        (``unhanded`` may be empty: a system may also give back what a fetch cut off by
        a cancellation took and never returned)."""
        ...

    async def held_back(self) -> bool:
        """After an empty fetch: whether records wait that the system may not deliver
        because this consumer's group is at its in-flight limit (False if unknown)."""
        ...


class HostedPushReader(ABC, Generic[H]):
    """The common part of readers for systems that push deliveries into the client (RabbitMQ,
    MQTT): the broker bounds what it sends unsettled, so an empty fetch never happens and
    nothing is held back; closing the connection (or the session) is what gives unsettled
    records back. Under trio each client call is a hop to the client's thread and the broker
    does not answer acks, so settlements are queued and written in runs.

    Subclasses implement ``fetch``, ``settle`` and ``unacked``.
    """

    def __init__(self, host: AsyncioHost, name: str, in_flight_limit: InFlightLimit) -> None:
        self.host, self.name = host, name
        self.in_flight_limit: InFlightLimit | None = in_flight_limit
        self.queues_settlements = host.hosted

    @abstractmethod
    async def fetch(self, count: int, max_bytes: int) -> Sequence[Incoming[H]]: ...

    @abstractmethod
    async def settle(self, settlements: Sequence[tuple[H, Verb]]) -> None: ...

    async def release(self, unhanded: Sequence[H]) -> int:
        return 0  # the connection's close (or the session) gives them back

    async def held_back(self) -> bool:
        return False  # the broker pushes: an empty fetch never happens

    def check_open(self) -> None:
        """Raise :class:`~rxflow.errors.ServiceUnavailableError` if the connection is
        lost. A source at its in-flight limit fetches nothing, so it asks this while it
        waits for a settlement (default: nothing known, nothing raised)."""

    @property
    @abstractmethod
    def unacked(self) -> int:
        """Records the broker delivered that are not settled yet, as the client counts them."""
