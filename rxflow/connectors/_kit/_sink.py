"""The broker sink shape: one encoder, confirmed batches (:class:`BrokerSink`)."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, Protocol

from rxflow.connectors._asyncio_host import AsyncioHost

if sys.version_info >= (3, 13):
    from typing import TypeVar
else:  # TypeVar defaults came with Python 3.13; typing_extensions has them before
    from typing_extensions import TypeVar

__all__ = ["Address", "AddressedPublisher", "BrokerSink", "Publisher"]

R = TypeVar("R")  # what a publisher returns for a batch
R_co = TypeVar("R_co", covariant=True)
T = TypeVar("T")
T_contra = TypeVar("T_contra", contravariant=True)
# What a sink's encoder makes of an item: its bytes, or a record of its own (the named
# fields of a Redis entry).
E = TypeVar("E", default=bytes)
E_contra = TypeVar("E_contra", contravariant=True, default=bytes)


class Publisher(Protocol[T_contra, R_co, E_contra]):
    """A broker module's part of a sink: publish encoded records and return once the
    system confirmed every one (raise if it refused one). A publisher that lost its
    connection raises :class:`~rxflow.errors.ServiceUnavailableError` and connects again on
    its next call."""

    async def publish(self, records: Sequence[tuple[E_contra, T_contra]]) -> R_co:
        """Publish ``(payload, item)`` pairs; the item is there for addressing (a routing
        key, a subject) computed by the module. The payload is what the sink's encoder
        made of the item: bytes, unless the sink encodes into records of another shape."""
        ...


Address = str | Callable[[Any], str]
"""Where a sink sends an item: one name (a topic, a routing key), or a function of the item."""


class AddressedPublisher:
    """A :class:`Publisher` for systems that address each record by one string (an MQTT
    topic, an AMQP routing key): it computes the addresses, then publishes the whole batch
    with one call on the client's loop (``publish`` gets ``(payload, address)`` pairs)."""

    def __init__(
        self,
        host: AsyncioHost,
        publish: Callable[[list[tuple[bytes, str]]], Awaitable[None]],
        address: Address,
    ) -> None:
        self._host, self._publish, self._address = host, publish, address

    async def publish(self, records: Sequence[tuple[bytes, Any]]) -> None:
        address = self._address
        if callable(address):
            addressed = [(payload, address(item)) for payload, item in records]
        else:
            addressed = [(payload, address) for payload, _ in records]
        if addressed:
            await self._host.call(self._publish, addressed)


class BrokerSink(Generic[T, R, E]):
    """Encodes items with the sink's one encoder and publishes them in confirmed batches.

    The encoder makes bytes of an item (``BrokerSink[T, R]``), or the system's record where
    that is not one payload (``BrokerSink[T, R, Mapping[str, bytes]]``: an entry's fields).

    Attributes:
        batch_size: how many items a :class:`rxflow.Flow` hands to :meth:`send_batch` at once.
        name: the sink's name in errors.
    """

    def __init__(
        self,
        publisher: Publisher[T, R, E],
        encoder: Callable[[T], E],
        *,
        batch_size: int,
        name: str,
    ):
        self._publisher = publisher
        self._encode = encoder
        self.batch_size = batch_size
        self.name = name

    async def send(self, item: T) -> None:
        """Publish one item; return once the system confirmed it."""
        await self.send_batch((item,))

    async def send_batch(self, items: Sequence[T]) -> R:
        """Publish the items; return once the system confirmed all of them."""
        encode = self._encode
        return await self._publisher.publish([(encode(item), item) for item in items])
