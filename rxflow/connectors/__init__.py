"""Connectors: real systems as rxflow sources and sinks.

The contract every connector keeps:

* A **source** is an async context manager that yields an async iterable of
  :class:`Message` records. Use it as an :func:`rxflow.open_pipe` source, as a
  :class:`rxflow.Flow` source, or as an observable through :func:`rxflow.from_async_iterable`.
  It is pulled: a slow consumer means fewer reads or fetches from the system, never an
  unbounded local buffer.
* A source takes a ``codec`` (``"bytes"``, ``"text"``, ``"json"`` or a function) and an
  ``on_decode_error`` policy (:mod:`rxflow.connectors.codecs`).
* A **sink** is an async context manager yielding an object with ``send(item)`` and
  ``send_batch(items)``; each returns once the system confirmed the write.
* Delivery is **at-least-once**: a message that is not acknowledged is delivered again by
  its system. See :mod:`rxflow.connectors` in the README for what is guaranteed where.

Example:
    >>> from rxflow.connectors import Message
    >>> Message("hello").value
    'hello'
"""

from rxflow.connectors._message import Message, Settlement
from rxflow.connectors.codecs import SKIPPED, DecodeFailure, Decoder

__all__ = ["SKIPPED", "DecodeFailure", "Decoder", "Message", "Settlement"]
