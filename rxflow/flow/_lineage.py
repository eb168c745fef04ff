"""Lineage: which source messages an output of a flow came from.

A flow already tracks, for delivery, which admitted messages each output claims: the
message being pushed when it was emitted, and the items of a window that holds its
messages. A sink added with ``Flow.sink(..., lineage=True)`` receives each output as a
:class:`Traced` record carrying those positions, for debugging ("which records made this
row?") and for sinks that must know what they wrote.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

import attrs

__all__ = ["SourcePosition", "Traced"]

T = TypeVar("T")


@attrs.frozen
class SourcePosition:
    """Where one source message was: its source, its partition, its identity and offset.

    Attributes:
        source: the flow's name for the source (``"source 'orders' (kafka:orders)"``).
        partition: ``"<topic>/<index>"`` for a partitioned source (Kafka), else ``""``.
        identity: what names the message in its system (a Kafka ``(topic, partition,
            offset)``, a JetStream stream sequence, a Redis entry id), or None.
        offset: its offset in the partition (Kafka), or None.
    """

    source: str
    partition: str
    identity: Hashable | None
    offset: int | None = None


@attrs.frozen
class Traced(Generic[T]):
    """An output of a flow with the source messages it came from (``lineage=True`` sinks).

    Example:
        >>> import anyio
        >>> from rxflow import Flow, Traced
        >>> from rxflow.connectors import Message, Settlement
        >>> class Acked(Settlement):
        ...     async def _ack(self): pass
        >>> records = [Message(n, settlement=Acked(identity=n)) for n in (1, 2)]
        >>> def show(traced: Traced[int]) -> None:
        ...     print(traced.value, [position.identity for position in traced.sources])
        >>> _ = anyio.run(Flow("doubled").source(records).sink(show, lineage=True).run)
        Message(value=1, ...) [1]
        Message(value=2, ...) [2]
    """

    value: T
    sources: tuple[SourcePosition, ...]
