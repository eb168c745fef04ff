"""Values to bytes, for the sinks: the built-in encoders, resolved in one place.

Every sink takes ``encoder=`` and resolves it with :func:`sink_encoder`, which also maps
the names sinks used before (``codec=`` on the file, process and socket sinks, ``encode=``
on the MQTT and RabbitMQ sinks) to it, with a ``DeprecationWarning``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, Final, Literal

from rxflow.connectors.codecs import _json
from rxflow.connectors.codecs._records import Resolution, record_encoder, resolve

Encoder = Callable[[Any], bytes]
EncoderName = Literal["auto", "bytes", "text", "json"]
EncoderSpec = Encoder | EncoderName | type[Any]
"""What a sink's ``encoder=`` takes: a name, a function ``value -> bytes``, or a record
class (its instances are written as JSON)."""


def encode_json(value: Any) -> bytes:
    """Compact JSON, UTF-8 (never contains a newline); records (msgspec ``Struct``,
    pydantic model, dataclass, attrs instance) as JSON objects.

    Example:
        >>> encode_json({"city": "Zürich", "n": [1, 2]}).decode()
        '{"city":"Zürich","n":[1,2]}'
    """
    return _json.dumps(value)


def encode_auto(value: Any) -> bytes:
    """Bytes as they are, text as UTF-8, anything else (records too) as compact JSON: what
    a sink sends when it is not told how to encode.

    Example:
        >>> encode_auto(b"raw"), encode_auto("é"), encode_auto({"n": 1})
        (b'raw', b'\\xc3\\xa9', b'{"n":1}')
    """
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8")
    return _json.dumps(value)


def encode_bytes(value: Any) -> bytes:
    """Bytes as they are (bytes, bytearray or memoryview)."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    raise TypeError(
        f"encoder 'bytes' writes bytes, got {type(value).__name__} {value!r:.60}; "
        "use encoder='text' for str, 'json' for objects, 'auto' for any of them, "
        "or a function value -> bytes"
    )


def encode_text(value: Any) -> bytes:
    """A str as UTF-8."""
    if isinstance(value, str):
        return value.encode("utf-8")
    raise TypeError(
        f"encoder 'text' writes str, got {type(value).__name__} {value!r:.60}; "
        "use encoder='json' for objects, 'bytes' for bytes, 'auto' for any of them, "
        "or a function value -> bytes"
    )


ENCODERS: Final[dict[str, Encoder]] = {
    "auto": encode_auto,
    "bytes": encode_bytes,
    "text": encode_text,
    "json": encode_json,
}


_ENCODER: Final = Resolution(ENCODERS, record_encoder, what="encoder", function="value -> bytes")


def resolve_encoder(encoder: EncoderSpec, *, where: str) -> Encoder:
    """The encoder for a name (``"auto"``, ``"bytes"``, ``"text"``, ``"json"``), a record
    class or a function ``value -> bytes``; a clear error for anything else.

    Example:
        >>> resolve_encoder("json", where="demo")([1, "a"])
        b'[1,"a"]'
    """
    return resolve(encoder, _ENCODER, where=where)


def sink_encoder(
    where: str,
    encoder: EncoderSpec | None,
    *,
    codec: EncoderSpec | None = None,
    encode: EncoderSpec | None = None,
    default: EncoderSpec = "auto",
    stacklevel: int = 3,
) -> Encoder:
    """A sink's one encoder: ``encoder=`` resolved, or the deprecated ``codec=`` or
    ``encode=`` it replaces (with a ``DeprecationWarning`` naming the sink and the new
    spelling), or ``default`` when none was given.

    ``None`` stands for "not given", so a sink declares ``encoder: EncoderSpec | None =
    None`` (and the old names the same way) and passes its own default here. The warning
    points ``stacklevel`` frames up: 3 is the caller of a sink function that calls this
    directly.

    Raises:
        TypeError: when more than one of ``encoder``, ``codec`` and ``encode`` is given.

    Example:
        >>> import warnings
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     encode = sink_encoder("file_sink()", None, codec="json", default="text")
        >>> encode({"n": 1})
        b'{"n":1}'
        >>> print(caught[0].message)
        file_sink(): codec= is deprecated; pass encoder='json' (codec= goes in the next release)
    """
    given = {
        name: value
        for name, value in (("encoder", encoder), ("codec", codec), ("encode", encode))
        if value is not None
    }
    if len(given) > 1:
        raise TypeError(
            f"{where}: pass only encoder= (got {' and '.join(f'{name}=' for name in given)}); "
            "codec= and encode= are its deprecated names"
        )
    if not given:
        return resolve_encoder(default, where=where)
    ((name, chosen),) = given.items()
    if name != "encoder":
        spelled = repr(chosen) if isinstance(chosen, str) else getattr(chosen, "__name__", "...")
        warnings.warn(
            f"{where}: {name}= is deprecated; pass encoder={spelled} "
            f"({name}= goes in the next release)",
            DeprecationWarning,
            stacklevel=stacklevel,
        )
    return resolve_encoder(chosen, where=where)
