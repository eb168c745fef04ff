"""Typed records: a class given as the codec (``codec=Order``) reads each record as JSON
into that class, validated; given as the encoder, it writes its instances as JSON.

The classes that are records: a msgspec ``Struct``, a pydantic model (or pydantic
dataclass), a standard-library dataclass and an attrs class. msgspec validates Structs,
dataclasses and attrs classes, pydantic its models; a dataclass uses msgspec when it is
installed and pydantic otherwise. Neither library is imported here unless a record class
needs it: a Struct or a model can only exist once its library was imported.

A record that does not fit raises :class:`~rxflow.errors.RecordInvalidError` naming the
class and the field (``at `$.items[0].qty```) with the library's reason; the values of
the record stay out of it, as its bytes stay out of the log line of a skipped record.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Mapping
from typing import Any, Generic, Literal, TypeGuard, TypeVar

import attrs

from rxflow.connectors._extras import requires_extra
from rxflow.connectors.codecs import _json
from rxflow.errors import RecordInvalidError

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

RecordKind = Literal["msgspec", "pydantic", "dataclass", "attrs"]

_TYPED_RECORDS = "typed records (codec=<class>)"


def _kind(cls: object) -> RecordKind | None:
    if not isinstance(cls, type):
        return None
    msgspec = sys.modules.get("msgspec")
    if msgspec is not None and issubclass(cls, msgspec.Struct):
        return "msgspec"
    pydantic = sys.modules.get("pydantic")
    if pydantic is not None and (
        issubclass(cls, pydantic.BaseModel) or pydantic.dataclasses.is_pydantic_dataclass(cls)
    ):
        return "pydantic"
    if dataclasses.is_dataclass(cls):
        return "dataclass"
    if attrs.has(cls):
        return "attrs"
    return None


def is_record_type(cls: object) -> TypeGuard[type[Any]]:
    """Whether ``cls`` is a record class: a msgspec Struct, a pydantic model, a dataclass
    or an attrs class (and so a codec or encoder of its own, not a function to call).

    Example:
        >>> import dataclasses
        >>> @dataclasses.dataclass
        ... class Order:
        ...     id: int
        >>> is_record_type(Order), is_record_type(str)
        (True, False)
    """
    return _kind(cls) is not None


@attrs.frozen
class Resolution(Generic[F]):
    """How a codec or an encoder argument is resolved: ``names`` are looked up, a record
    class is made into a function by ``for_record``; ``what`` (``"codec"``) and
    ``function`` (``"bytes -> value"``) word the errors."""

    names: Mapping[str, F]
    for_record: Callable[..., F]  # (cls, *, where) -> F
    what: str
    function: str


def resolve(spec: object, how: Resolution[F], *, where: str) -> F:
    """The function a codec or encoder argument stands for: a name, a record class, or a
    function as it is."""
    if isinstance(spec, str):
        try:
            return how.names[spec]
        except KeyError:
            raise ValueError(
                f"{where}: unknown {how.what} {spec!r}; use one of "
                f"{', '.join(map(repr, how.names))}, a record class or a function {how.function}"
            ) from None
    if is_record_type(spec):
        return how.for_record(spec, where=where)
    if not callable(spec):
        raise TypeError(
            f"{where}: {how.what} must be a name, a record class or a function "
            f"{how.function}, got {spec!r}"
        )
    return spec  # type: ignore[return-value]  # a callable the caller vouches for


def record_decoder(cls: type[T], *, where: str) -> Callable[[bytes], T]:
    """The codec that reads a record as JSON into ``cls``, validated.

    Raises:
        MissingExtraError: when ``cls`` is a dataclass or attrs class and the library
            that validates it (msgspec; pydantic also serves dataclasses) is missing.
    """
    kind = _kind(cls)
    if kind is None:
        raise TypeError(f"{where}: {cls!r} is not a record class")
    name = cls.__qualname__
    if kind == "pydantic" or (kind == "dataclass" and not _have("msgspec") and _have("pydantic")):
        decode = _pydantic_decoder(cls)
    else:
        with requires_extra("msgspec", feature=_TYPED_RECORDS):
            import msgspec
        typed = msgspec.json.Decoder(cls)

        def decode(data: bytes) -> T:
            try:
                return typed.decode(data)
            except msgspec.DecodeError as error:
                raise RecordInvalidError(
                    f"not a valid {name}: {_msgspec_reason(str(error))}"
                ) from None

    decode.__name__ = decode.__qualname__ = name
    return decode


def record_encoder(cls: type[Any], *, where: str) -> Callable[[Any], bytes]:
    """The encoder that writes instances of ``cls`` (and of its subclasses) as compact
    JSON, and refuses anything else with a ``TypeError`` naming what it got."""
    if _kind(cls) is None:
        raise TypeError(f"{where}: {cls!r} is not a record class")
    name = cls.__qualname__
    dumps = _json.dumps

    def encode(value: Any) -> bytes:
        if not isinstance(value, cls):
            raise TypeError(
                f"{where}: encoder={name} writes {name} records, got "
                f"{type(value).__name__}; build a {name} first, or pass encoder='json'"
            )
        return dumps(value)

    encode.__name__ = encode.__qualname__ = f"encode_{name}"
    return encode


def _have(module: str) -> bool:
    if sys.modules.get(module) is not None:
        return True
    try:
        __import__(module)
    except ModuleNotFoundError:
        return False
    return True


def _pydantic_decoder(cls: type[T]) -> Callable[[bytes], T]:
    with requires_extra("pydantic", feature=_TYPED_RECORDS):
        import pydantic
    name = cls.__qualname__
    validate = pydantic.TypeAdapter(cls).validate_json

    def decode(data: bytes) -> T:
        try:
            return validate(bytes(data))
        except pydantic.ValidationError as error:
            # str(error) quotes the input's values; the structured errors need not.
            problems = error.errors(include_url=False, include_input=False, include_context=False)
            reasons = "; ".join(_pydantic_reason(problem) for problem in problems[:5])
            more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
            raise RecordInvalidError(f"not a valid {name}: {reasons}{more}") from None

    return decode


def _pydantic_reason(problem: Any) -> str:
    location = problem["loc"]
    if not location:
        return str(problem["msg"])
    path = "$" + "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in location)
    return f"at `{path}`: {problem['msg']}"


def _msgspec_reason(message: str) -> str:
    """msgspec says ``"Expected `int`, got `str` - at `$.qty`"``; said path first, and
    without the one reason that quotes a value (an enum's)."""
    reason, found, path = message.rpartition(" - at ")
    if not found:
        return message
    if reason.startswith("Invalid enum value"):
        reason = "Invalid enum value"
    return f"at {path}: {reason}"
