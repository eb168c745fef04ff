"""``Message``: what a connector source yields, and the handle that settles it."""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Hashable, Iterable, Mapping
from typing import Any, Final, Generic, Protocol, TypeVar, cast, runtime_checkable

import attrs

from rxflow.partitions import Partition

T = TypeVar("T")
U = TypeVar("U")


class Settlement:
    """How a message is acknowledged to the system it came from, once.

    Connectors subclass it and implement :meth:`_ack` and :meth:`_nack` with their client
    (``XACK``, ``msg.ack()``, ``basic_ack``...). Settling twice is a no-op, so the flow's
    delivery tracking and a user who acks by hand never ack a message twice.
    """

    __slots__ = ("identity", "settled")

    def __init__(self, identity: Hashable | None = None) -> None:
        self.settled: str | None = None  # "ack" or "nack" once settled
        # What names the message in its system across redeliveries (a stream sequence, a
        # stream entry id), or None: a flow recognises a redelivery of a message it still
        # holds by it, and does not count that message twice.
        self.identity = identity

    async def ack(self) -> None:
        if self.settled is None:
            self.settled = "ack"
            await self._ack()

    async def nack(self, *, requeue: bool = True) -> None:
        if self.settled is None:
            self.settled = "nack"
            await self._nack(requeue)

    @property
    def batch_acker(self) -> BatchAcker | None:
        """An object that acknowledges many messages of the same source in one round trip
        (``XACK id id ...``), if the connector has one. A flow acknowledges settled
        messages through it in batches; by hand, ``await message.ack()`` still works."""
        return None

    async def _ack(self) -> None:
        """Tell the source system the message is done with (override)."""

    async def _nack(self, requeue: bool) -> None:
        """Tell the source system the message failed (override; default: leave it to the
        system's redelivery timeout)."""


class NoOpSettlement(Settlement):
    """The settlement of a record whose transport takes no acknowledgement (a file, a
    socket, a pipe): settling only records that it happened.

    The same as a plain :class:`Settlement`, whose ``_ack`` and ``_nack`` do nothing,
    without awaiting them: one coroutine less per message.
    """

    __slots__ = ()

    async def ack(self) -> None:
        if self.settled is None:
            self.settled = "ack"

    async def nack(self, *, requeue: bool = True) -> None:
        if self.settled is None:
            self.settled = "nack"


@runtime_checkable
class BatchAcker(Protocol):
    """Acknowledges messages of one source together (see :attr:`Settlement.batch_acker`);
    messages settled already are left out."""

    async def ack_many(self, messages: Iterable[Message[Any]]) -> None: ...


@attrs.frozen
class InFlightLimit:
    """How many messages a source's system delivers without an acknowledgement, at most.

    A connector source exposes it as ``in_flight_limit`` (None where the system sets no
    limit, as Redis Streams). A :class:`rxflow.Flow` reads it: windows that hold this
    many messages would stop the source for good, so the flow fails with
    :class:`~rxflow.errors.InFlightLimitError` instead, and it never lets event time pass
    on idleness while the source is at its limit.

    Example:
        >>> InFlightLimit(1000, "max_ack_pending")
        InFlightLimit(count=1000, setting='max_ack_pending')
    """

    count: int
    setting: str  # the parameter that sets it, named in errors ("prefetch")


class _WeakReferable:
    """Gives :class:`Message` its ``__weakref__`` slot from a base class.

    CPython lets an object's ``__class__`` be reassigned only between classes it finds laid
    out alike, and it miscounts a ``__weakref__`` slot placed after the fields (where attrs
    puts it): from a base, the slot keeps messages weak-referable and lets
    :func:`make_message` build them through :class:`_MessageDraft`.
    """

    __slots__ = ("__weakref__",)


@attrs.frozen(weakref_slot=False)
class Message(_WeakReferable, Generic[T]):
    """One record from a connector: its decoded value and where it came from.

    Attributes:
        value: the record, decoded by the source's codec.
        key: the record's key or subject, if the system has one (a Redis stream id, a NATS
            subject, an MQTT topic, a RabbitMQ routing key).
        headers: string headers, when the system carries them.
        timestamp: when the system received the record (seconds since the epoch), if known.
        source: which connector produced it, for logs and dead letters (``"redis:orders"``).
        partition: the :class:`~rxflow.partitions.Partition` it was read from, where the
            system partitions records by key (Kafka); ``None`` elsewhere.
        offset: its position in ``partition`` (Kafka's offset), or ``None``.

    ``await message.ack()`` settles it by hand. Inside a :class:`rxflow.Flow` you do not
    need to: the flow acks each source message once what was derived from it has been
    confirmed by every sink (see :mod:`rxflow.connectors`).

    Example:
        >>> from rxflow.connectors import Message
        >>> message = Message(b'{"n": 1}', key="orders")
        >>> message.with_value({"n": 1})
        Message(value={'n': 1}, key='orders', headers={}, timestamp=None, source='')
    """

    value: T
    key: str | bytes | None = None
    headers: Mapping[str, str] = attrs.field(factory=dict)
    timestamp: float | None = None
    source: str = ""
    settlement: Settlement = attrs.field(factory=Settlement, eq=False, repr=False)
    partition: Partition | None = attrs.field(default=None, repr=False)
    offset: int | None = attrs.field(default=None, repr=False)

    # ack and nack hand over the settlement's coroutine rather than awaiting it in one of
    # their own: ``await message.ack()`` is the same, at one coroutine less per message.
    def ack(self) -> Coroutine[Any, Any, None]:
        """Acknowledge the message to its source (once; later calls do nothing):
        ``await message.ack()``."""
        return self.settlement.ack()

    def nack(self, *, requeue: bool = True) -> Coroutine[Any, Any, None]:
        """Reject the message; with ``requeue`` the system may deliver it again:
        ``await message.nack()``."""
        return self.settlement.nack(requeue=requeue)

    @property
    def identity(self) -> Hashable | None:
        """What names this message in its system across redeliveries (a JetStream stream
        sequence, a Redis stream entry id), or None if the connector has nothing stable."""
        return self.settlement.identity

    @property
    def settled(self) -> str | None:
        """``"ack"`` or ``"nack"`` once settled, else ``None``."""
        return self.settlement.settled

    def with_value(self, value: U) -> Message[U]:
        """The same message (same settlement) carrying another value, such as a parsed one."""
        # A draft (see _MessageDraft): ops.map(lambda m: m.with_value(...)) makes one per item.
        return _MessageDraft(
            value,
            self.key,
            self.headers,
            self.timestamp,
            self.source,
            self.settlement,
            self.partition,
            self.offset,
        )  # type: ignore[return-value]  # it is a Message once made

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled as a record (a checkpointed window's contents): the settlement is a handle
        # on this process's connection, and the partition an assignment to this worker;
        # neither means anything where the record is loaded. The identity and offset stay.
        settlement = Settlement(self.settlement.identity)
        return (
            Message,
            (
                self.value,
                self.key,
                dict(self.headers),
                self.timestamp,
                self.source,
                settlement,
                None,
                self.offset,
            ),
            None,
            None,
            None,
        )


_set_attribute: Final = object.__setattr__


class _MessageDraft(_WeakReferable, Generic[T]):
    """``_MessageDraft(value, key, headers, timestamp, source, settlement)`` is
    ``Message(value, key, headers, timestamp, source, settlement)``, the same object, made
    in half the time: for sources that make one per record (as :func:`make_message`).

    attrs fills a frozen class's fields through ``object.__setattr__``, one call per field
    (about 0.6 µs a message here, more than reading and decoding a short line). A draft has
    the same slots without the frozen ``__setattr__``: it is filled by plain stores, then
    becomes a :class:`Message` before anyone sees it.

    Example:
        >>> message = make_message("v", "k", {}, None, "demo", Settlement())
        >>> message == Message("v", "k", {}, None, "demo"), type(message) is Message
        (True, True)
    """

    __slots__ = Message.__slots__

    def __init__(
        self,
        value: T,
        key: str | bytes | None,
        headers: Mapping[str, str],
        timestamp: float | None,
        source: str,
        settlement: Settlement,
        partition: Partition | None = None,
        offset: int | None = None,
    ) -> None:
        self.value = value
        self.key = key
        self.headers = headers
        self.timestamp = timestamp
        self.source = source
        self.settlement = settlement
        self.partition = partition
        self.offset = offset
        _set_attribute(self, "__class__", Message)


make_message: Final = cast(
    "Callable[[Any, str | bytes | None, Mapping[str, str], float | None, str, Settlement], "
    "Message[Any]]",
    _MessageDraft,
)
"""A :class:`Message` from its value, key, headers, timestamp, source and settlement, made
at half the cost of ``Message(...)`` (see :class:`_MessageDraft`)."""


def describe(message: Message[Any]) -> str:
    """A short name of a message for errors: its source and key."""
    where = message.source or "a source"
    return f"{where} record {message.key!r}" if message.key is not None else f"{where} record"
