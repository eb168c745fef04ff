"""Records to values: the built-in codecs, :class:`Decoder` and its decode policy."""

from __future__ import annotations

import enum
import inspect
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, Generic, Literal, TypedDict, TypeVar, Unpack, cast, overload

import attrs

from rxflow._typevars import ValueT
from rxflow.connectors.codecs import _json
from rxflow.connectors.codecs._records import Resolution, record_decoder, resolve
from rxflow.errors import CodecNeedsAwait, DecodeError, RecordInvalidError, RecordRejected

T = TypeVar("T")

logger = logging.getLogger("rxflow.connectors")

CodecFunction = Callable[[bytes], Any]
"""A codec as a source calls it: a function ``bytes -> value``."""
Codec = CodecFunction | type[Any]
"""A ``codec=`` other than a name: a function ``bytes -> value``, or a record class (a
msgspec ``Struct``, a pydantic model, a dataclass, an attrs class), which a type checker
could not take for such a function since its constructor takes fields, not bytes."""
CodecName = Literal["bytes", "text", "json"]
CodecSpec = Codec | CodecName
"""Everything a source's ``codec=`` takes."""
DecodePolicy = Literal["raise", "skip", "dead_letter"]
DECODE_POLICIES: Final = ("raise", "skip", "dead_letter")


def as_bytes(data: bytes) -> bytes:
    """The record as it came."""
    return bytes(data)


def as_text(data: bytes) -> str:
    """The record as UTF-8 text (a ``UnicodeDecodeError`` is a decode failure)."""
    return bytes(data).decode("utf-8")


def as_json(data: bytes) -> Any:
    """The record parsed as JSON (RFC 8259: UTF-8, no ``NaN``), with the library picked in
    :mod:`rxflow.connectors.codecs._json` by measurement."""
    return _json.loads(data)


CODECS: Final[dict[str, CodecFunction]] = {"bytes": as_bytes, "text": as_text, "json": as_json}

ManyCodec = Callable[[Sequence[bytes]], list[Any]]
"""A codec applied to a run of records at once: their values, in order."""


def _bytes_many(records: Sequence[bytes]) -> list[bytes]:
    return list(map(bytes, records))


def _text_many(records: Sequence[bytes]) -> list[str]:
    return list(map(_utf8, records))


def _json_many(records: Sequence[bytes]) -> list[Any]:
    return list(map(_json.loads, records))


_utf8: Final = bytes.decode  # UTF-8 and strict by default, as as_text
# The built-in codecs over a run, one C loop each: pure functions, so that where one record
# fails the run can be decoded again record by record to find it and apply the policy.
_MANY: Final[dict[CodecFunction, ManyCodec]] = {
    as_bytes: _bytes_many,
    as_text: _text_many,
    as_json: _json_many,
}
_CODEC: Final = Resolution(CODECS, record_decoder, what="codec", function="bytes -> value")


def resolve_codec(codec: CodecSpec, *, where: str) -> CodecFunction:
    """The codec function for a name, a record class or a function; a clear error for
    anything else.

    Example:
        >>> resolve_codec("json", where="demo")(b'{"n": 1}')
        {'n': 1}
    """
    return resolve(codec, _CODEC, where=where)


@attrs.frozen
class DecodeFailure:
    """A record the codec rejected, as handed to a dead-letter target."""

    data: bytes
    error: Exception
    source: str
    key: str | bytes | None = None


DeadLetter = Callable[[DecodeFailure], Awaitable[object] | object]


class DecoderOptions(TypedDict, total=False):
    """:class:`Decoder`'s keyword arguments, as its typed forms take them."""

    on_decode_error: DecodePolicy
    dead_letter: DeadLetter | None
    source: str


class _Skipped(enum.Enum):
    # An enum of one: `value is SKIPPED` narrows `Order | SKIPPED` to `Order` for mypy.
    SKIPPED = "SKIPPED"

    def __repr__(self) -> str:
        return "SKIPPED"

    __str__ = __repr__


SKIPPED: Final = _Skipped.SKIPPED
"""What :meth:`Decoder.decode` returns for a record its policy skipped or dead-lettered."""


class Decoder(Generic[ValueT]):
    """A codec applied with a decode policy, counting what it did.

    Typed by its codec: ``Decoder(Order)`` is a ``Decoder[Order]``, ``Decoder("text")`` a
    ``Decoder[str]``, ``Decoder(parse)`` a ``Decoder`` of what ``parse`` returns.

    Args:
        codec: ``"bytes"``, ``"text"``, ``"json"``, a record class (a msgspec ``Struct``,
            a pydantic model, a dataclass or an attrs class: JSON into it, validated), or
            a function ``bytes -> value`` (:func:`~rxflow.connectors.codecs.avro_reader`
            makes one for Avro).
        on_decode_error: ``"raise"``, ``"skip"`` or ``"dead_letter"``.
        dead_letter: required with ``"dead_letter"``: called (and awaited, if async) with a
            :class:`DecodeFailure` for each rejected record.
        source: the connector's name, used in errors (``"redis:orders"``).

    Example:
        >>> import anyio, dataclasses
        >>> @dataclasses.dataclass
        ... class Order:
        ...     id: int
        >>> decoder = Decoder(Order, on_decode_error="skip", source="demo")
        >>> async def main():
        ...     return [await decoder.decode(b'{"id": 7}'), await decoder.decode(b'{"id": "x"}')]
        >>> anyio.run(main)
        [Order(id=7), SKIPPED]
    """

    @overload
    def __init__(
        self: Decoder[bytes], codec: Literal["bytes"] = ..., **options: Unpack[DecoderOptions]
    ) -> None: ...
    @overload
    def __init__(
        self: Decoder[str], codec: Literal["text"], **options: Unpack[DecoderOptions]
    ) -> None: ...
    @overload
    def __init__(self: Decoder[T], codec: type[T], **options: Unpack[DecoderOptions]) -> None: ...
    @overload
    def __init__(
        self: Decoder[T], codec: Callable[[bytes], T], **options: Unpack[DecoderOptions]
    ) -> None: ...
    @overload
    def __init__(
        self: Decoder[Any], codec: CodecSpec, **options: Unpack[DecoderOptions]
    ) -> None: ...
    def __init__(
        self,
        codec: CodecSpec = "bytes",
        *,
        on_decode_error: DecodePolicy = "raise",
        dead_letter: DeadLetter | None = None,
        source: str = "source",
    ) -> None:
        self.codec: Callable[[bytes], ValueT] = resolve_codec(codec, where=source)
        # The codec over a run of records in one call, where it is a built-in one (pure:
        # a run in which a record fails may be decoded again one by one); else None.
        self.decode_many: ManyCodec | None = _MANY.get(self.codec)
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

    async def decode(self, data: bytes, *, key: str | bytes | None = None) -> ValueT | _Skipped:
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

    async def reject(
        self, data: bytes, error: Exception, *, key: str | bytes | None = None
    ) -> ValueT | _Skipped:
        """Apply the decode policy to a record the codec failed on, or that a connector
        found bad before decoding (a :class:`~rxflow.errors.RecordRejected`: a frame over
        the size limit, an entry without its payload field): raise, or set it aside and
        return :data:`SKIPPED`.

        A record set aside is counted and logged here, once: the one place every
        connector's skips go through. A codec that must await something first (it raised
        :class:`CodecNeedsAwait`) is given that here and tried again, so this may return
        the record's value after all (counted as decoded).
        """
        if isinstance(error, CodecNeedsAwait):
            value, failure = await self._after_preparing(error, data)
            if failure is None:
                self.decoded += 1
                return cast(ValueT, value)  # None only alongside a failure
            error = failure
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

    async def _after_preparing(
        self, needs: CodecNeedsAwait, data: bytes
    ) -> tuple[ValueT | None, Exception | None]:
        """The codec's second try, once what it needed was awaited: the value, or why not.
        What ``prepare()`` raises ends the source, unless it is about the record."""
        try:
            await needs.prepare()
        except RecordInvalidError as invalid:
            return None, invalid
        try:
            return self.codec(data), None
        except CodecNeedsAwait as again:  # a codec that asks twice must not loop
            return None, RecordInvalidError(f"not decodable: {again}")
        except Exception as failure:
            return None, failure

    def _reason(self, error: Exception) -> str:
        if isinstance(error, RecordRejected):
            return f"was rejected: {error}"
        if isinstance(error, RecordInvalidError):
            return f"is {error}"
        return f"could not be decoded by {getattr(self.codec, '__name__', self.codec)!r}: {error!r}"
