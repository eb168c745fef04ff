"""Codecs turn a connector's raw records into values; a decode policy says what happens to
a record the codec rejects. Encoders are the way back, values to bytes, for the sinks.

A codec is any function ``bytes -> value``; ``"bytes"``, ``"text"`` (UTF-8) and ``"json"``
name the built-in ones. A record that fails to decode is never dropped silently:

* ``on_decode_error="raise"`` (default): the source raises :class:`~rxflow.errors.DecodeError`
  naming the record, and the stream ends with it; the record is not acknowledged, so the
  system delivers it again to whoever reads next;
* ``"skip"``: the record is counted in ``decoder.skipped``, logged once at WARNING on the
  ``"rxflow.connectors"`` logger with the reason and the record's key (never its bytes),
  and acknowledged;
* ``"dead_letter"``: the record and its error go to ``dead_letter`` (a function, sync or
  async, called with a :class:`DecodeFailure`), and are acknowledged once it returned
  (counted in ``decoder.dead_lettered`` and logged at INFO).

In a :class:`rxflow.Flow`, the source's stage shows these counts as its ``skipped`` and
``dead_lettered``.

Example:
    >>> import anyio
    >>> from rxflow.connectors.codecs import Decoder, SKIPPED
    >>> decoder = Decoder("json", on_decode_error="skip", source="demo")
    >>> async def main():
    ...     return [await decoder.decode(b'{"n": 1}'), await decoder.decode(b"{oops")]
    >>> anyio.run(main) == [{"n": 1}, SKIPPED]
    True
    >>> decoder.skipped
    1
"""

from __future__ import annotations

import inspect
import json as _json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final, Literal

import attrs

from rxflow.errors import DecodeError

logger = logging.getLogger("rxflow.connectors")

Codec = Callable[[bytes], Any]
CodecName = Literal["bytes", "text", "json"]
DecodePolicy = Literal["raise", "skip", "dead_letter"]
DECODE_POLICIES: Final = ("raise", "skip", "dead_letter")


def as_bytes(data: bytes) -> bytes:
    """The record as it came."""
    return bytes(data)


def as_text(data: bytes) -> str:
    """The record as UTF-8 text (a ``UnicodeDecodeError`` is a decode failure)."""
    return bytes(data).decode("utf-8")


def as_json(data: bytes) -> Any:
    """The record parsed as JSON (UTF-8, as RFC 8259 requires: decoding it first spares
    ``json.loads`` guessing the encoding of every record)."""
    return _json.loads(bytes(data).decode("utf-8"))


CODECS: Final[dict[str, Codec]] = {"bytes": as_bytes, "text": as_text, "json": as_json}


def resolve_codec(codec: Codec | CodecName, *, where: str) -> Codec:
    """The codec function for a name or a function; a clear error for anything else."""
    if isinstance(codec, str):
        try:
            return CODECS[codec]
        except KeyError:
            raise ValueError(
                f"{where}: unknown codec {codec!r}; use one of {', '.join(map(repr, CODECS))} "
                "or a function bytes -> value"
            ) from None
    if not callable(codec):
        raise TypeError(
            f"{where}: codec must be a name or a function bytes -> value, got {codec!r}"
        )
    return codec


class RecordRejected(ValueError):
    """Why a connector set a record aside before any codec saw it (a stream entry without
    its payload field, a frame over the size limit). Its message is the whole reason, said
    as it is in the ``DecodeError`` and in the log line of a skipped record.

    Example:
        >>> RecordRejected("entry 1-0 has no field 'data'; set field= to the payload's")
        RecordRejected("entry 1-0 has no field 'data'; set field= to the payload's")
    """


@attrs.frozen
class DecodeFailure:
    """A record the codec rejected, as handed to a dead-letter target."""

    data: bytes
    error: Exception
    source: str
    key: str | bytes | None = None


class _Skipped:
    def __repr__(self) -> str:
        return "SKIPPED"


SKIPPED: Final = _Skipped()
"""What :meth:`Decoder.decode` returns for a record its policy skipped or dead-lettered."""


class Decoder:
    """A codec applied with a decode policy, counting what it did.

    Args:
        codec: ``"bytes"``, ``"text"``, ``"json"`` or a function ``bytes -> value``.
        on_decode_error: ``"raise"``, ``"skip"`` or ``"dead_letter"``.
        dead_letter: required with ``"dead_letter"``: called (and awaited, if async) with a
            :class:`DecodeFailure` for each rejected record.
        source: the connector's name, used in errors (``"redis:orders"``).
    """

    def __init__(
        self,
        codec: Codec | CodecName = "bytes",
        *,
        on_decode_error: DecodePolicy = "raise",
        dead_letter: Callable[[DecodeFailure], Awaitable[object] | object] | None = None,
        source: str = "source",
    ) -> None:
        self.codec = resolve_codec(codec, where=source)
        if on_decode_error not in DECODE_POLICIES:
            raise ValueError(
                f"{source}: on_decode_error must be one of {', '.join(map(repr, DECODE_POLICIES))}"
                f", got {on_decode_error!r}"
            )
        if (on_decode_error == "dead_letter") != (dead_letter is not None):
            raise ValueError(
                f"{source}: on_decode_error='dead_letter' and dead_letter=<function> go together; "
                "pass both, or neither"
            )
        self.policy = on_decode_error
        self.dead_letter = dead_letter
        self.source = source
        self.decoded = 0
        self.skipped = 0
        self.dead_lettered = 0

    async def decode(self, data: bytes, *, key: str | bytes | None = None) -> Any:
        """The decoded value, or :data:`SKIPPED` when the policy set the record aside.

        Raises:
            DecodeError: with ``on_decode_error="raise"``, naming the record; the codec's
                own exception is its ``__cause__``.
        """
        try:
            value = self.codec(data)
        except Exception as error:
            return await self.reject(data, error, key=key)
        self.decoded += 1
        return value

    async def reject(self, data: bytes, error: Exception, *, key: str | bytes | None = None) -> Any:
        """Apply the decode policy to a record the codec failed on, or that a connector
        found bad before decoding (a :class:`RecordRejected`: a frame over the size limit,
        an entry without its payload field): raise, or set it aside and return
        :data:`SKIPPED`.

        A record set aside is counted and logged here, once: the one place every
        connector's skips go through.
        """
        which = f" {key!r}" if key is not None else ""
        reason = self._reason(error)
        if self.policy == "raise":
            raise DecodeError(
                f"{self.source}: record{which} {reason} (first bytes: {bytes(data[:40])!r}). "
                "Fix the producer or the codec, or pass on_decode_error='skip' or "
                "'dead_letter' to set such records aside"
            ) from error
        if self.policy == "skip":
            self.skipped += 1
            # The reason and the key say which record and why; its bytes stay out of logs.
            logger.warning(
                "%s: skipped record%s (on_decode_error='skip'): %s", self.source, which, reason
            )
            return SKIPPED
        assert self.dead_letter is not None
        result = self.dead_letter(DecodeFailure(bytes(data), error, self.source, key))
        if inspect.isawaitable(result):
            await result
        self.dead_lettered += 1
        logger.info("%s: record%s dead-lettered: %s", self.source, which, reason)
        return SKIPPED

    def _reason(self, error: Exception) -> str:
        if isinstance(error, RecordRejected):
            return f"was rejected: {error}"
        return f"could not be decoded by {getattr(self.codec, '__name__', self.codec)!r}: {error!r}"


# -- values to bytes (sinks) ------------------------------------------------------------

Encoder = Callable[[Any], bytes]
EncoderName = Literal["bytes", "text", "json"]


def encode_auto(value: Any) -> bytes:
    """Bytes as they are, text as UTF-8, anything else as JSON: what a broker sink sends
    when it is not told how to encode."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8")
    return _json.dumps(value).encode("utf-8")


def encode_bytes(value: Any) -> bytes:
    """Bytes as they are (bytes, bytearray or memoryview)."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    raise TypeError(
        f"codec 'bytes' writes bytes, got {type(value).__name__} {value!r:.60}; "
        "use codec='text' for str, 'json' for objects, or a function value -> bytes"
    )


def encode_text(value: Any) -> bytes:
    """A str as UTF-8."""
    if isinstance(value, str):
        return value.encode("utf-8")
    raise TypeError(
        f"codec 'text' writes str, got {type(value).__name__} {value!r:.60}; "
        "use codec='json' for objects, 'bytes' for bytes, or a function value -> bytes"
    )


def encode_json(value: Any) -> bytes:
    """Compact JSON, UTF-8 (never contains a newline)."""
    return _json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


ENCODERS: Final[dict[str, Encoder]] = {
    "bytes": encode_bytes,
    "text": encode_text,
    "json": encode_json,
}


def resolve_encoder(codec: Encoder | str, *, where: str) -> Encoder:
    """The encoder for a name or a function; a clear error for anything else."""
    if isinstance(codec, str):
        try:
            return ENCODERS[codec]
        except KeyError:
            raise ValueError(
                f"{where}: unknown codec {codec!r}; use one of "
                f"{', '.join(map(repr, ENCODERS))} or a function value -> bytes"
            ) from None
    if not callable(codec):
        raise TypeError(f"{where}: codec must be a name or a function value -> bytes")
    return codec
