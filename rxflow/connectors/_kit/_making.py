"""Making a run of fetched records into messages: decoded in one call where the codec
allows, then each record's :class:`~rxflow.connectors.Message` and
:class:`~rxflow.connectors._kit.BrokerSettlement` in one loop."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Final, TypeVar

from rxflow.connectors._kit._records import Incoming
from rxflow.connectors._kit._settle import BrokerSettlement
from rxflow.connectors._message import Message, _MessageDraft
from rxflow.connectors.codecs import Decoder

if TYPE_CHECKING:
    from rxflow.connectors._kit._source import BrokerSource

__all__ = ["decode_run", "messages_of"]

H = TypeVar("H")

_new: Final = object.__new__


def decode_run(decoder: Decoder, payloads: list[bytes]) -> list[Any]:
    """The values of ``payloads``, in one call where the codec has a run form
    (:attr:`Decoder.decode_many`); else one by one. Either way they stop before the first
    payload that fails (the caller's full path applies the decode policy to it). Not
    counted in the decoder's counts."""
    decode_many = decoder.decode_many
    if decode_many is not None:
        try:
            return decode_many(payloads)
        except Exception:  # one failed: the loop below finds which (a built-in
            pass  # codec is pure: decoding again gives the same values)
    codec = decoder.codec
    values: list[Any] = []
    append = values.append
    for payload in payloads:
        try:
            append(codec(payload))
        except Exception:
            break
    return values


def messages_of(
    source: BrokerSource[Any, H], records: Iterable[Incoming[H]], values: Iterable[Any]
) -> list[Message[Any]]:
    """The messages of ``records`` (with these decoded values), each with its
    :class:`BrokerSettlement`, made in one loop.

    This is the cost of a record: each object is made without a Python ``__init__`` and
    filled by plain slot stores (what ``BrokerSettlement(...)`` and
    :func:`~rxflow.connectors._message.make_message` would store), and the draft becomes
    a :class:`Message` before anyone sees it (see ``_MessageDraft``): a third of the cost
    of ``Message(...)`` with ``BrokerSettlement(...)``.

    Example:
        >>> from rxflow.connectors._kit import BrokerSource, Incoming
        >>> class Reader:
        ...     name, in_flight_limit, queues_settlements = "demo", None, False
        >>> record = Incoming(b"v", handle=7, key="k", identity=7)
        >>> (message,) = messages_of(BrokerSource(Reader(), None), [record], ["v"])
        >>> message.value, message.key, message.source, message.identity
        ('v', 'k', 'demo', 7)
        >>> type(message).__name__, message.settlement._handle
        ('Message', 7)
    """
    name = source.name
    messages: list[Message[Any]] = []
    append = messages.append
    for (
        _,
        handle,
        key,
        headers,
        timestamp,
        identity,
        _,
        redelivered,
        partition,
        offset,
    ), value in zip(records, values, strict=True):
        settlement = _new(BrokerSettlement)
        settlement.settled = None
        settlement.identity = identity
        settlement._source = source
        settlement._handle = handle
        settlement.redelivered = redelivered
        message: Any = _new(_MessageDraft)  # typed Any: it is a Message once filled
        message.value = value
        message.key = key
        message.headers = headers
        message.timestamp = timestamp
        message.source = name
        message.settlement = settlement
        message.partition = partition
        message.offset = offset
        message.__class__ = Message
        append(message)
    return messages
