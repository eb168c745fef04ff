"""JSON, the one way every codec and encoder reads and writes it: RFC 8259, UTF-8, compact.

Which library, by measurement. A typical order record (nine fields, a nested list of two
items, a non-ASCII string), 2 cores, the best of 5 runs of 20,000 records, machine idle:

============  ==============  ==============
library        decode (M/s)    encode (M/s)
============  ==============  ==============
stdlib json    0.21            0.13
msgspec        0.96 (4.6x)     1.36 (10.5x)
orjson         1.23 (5.9x)     2.29 (17.6x)
============  ==============  ==============

``python -m benchmarks --only codecs_json`` measures rxflow's codec against each library
in turns; run while other work loaded the machine, it decoded 4.1x and encoded 10.7x as
fast as the stdlib, and within 8-16% of msgspec called directly (the wrapper's cost).

msgspec is used when it is installed, the stdlib otherwise. Neither fast library is a
required dependency; msgspec is the ``[msgspec]`` extra, which typed records need anyway
(it validates ``Struct``s, dataclasses and attrs classes), so one optional library serves
both. orjson is faster still (1.3x decoding, 1.7x encoding over msgspec) but would be a
third JSON library for a gain the per-record cost of a broker round trip mostly hides,
and it reads integers over 64 bits as floats, where the stdlib and msgspec keep them exact.

Both paths read and write the same JSON; where they differ they differ only on input that
is not RFC 8259 JSON or on values JSON cannot hold:

* reading: ``NaN`` and ``Infinity`` are refused by both (they are not JSON); msgspec also
  refuses an unpaired surrogate escape (``"\\ud800"``) and a number too large for a float;
* writing: msgspec also writes what the stdlib refuses (datetimes and UUIDs as strings,
  sets as arrays, bytes as base64), and writes a NaN as ``null``, where the stdlib path
  raises ``ValueError``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any

import attrs


def record_as_builtins(value: Any) -> Any:
    """A record the JSON library does not know as plain values: a pydantic model as its
    ``model_dump(mode="json")``; without msgspec also a dataclass or an attrs instance.

    Raises TypeError for anything else, as the JSON libraries' hooks must.
    """
    model_dump = getattr(value, "model_dump", None)
    if model_dump is not None and hasattr(type(value), "model_fields"):
        return model_dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if attrs.has(type(value)):
        return attrs.asdict(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _refuse_constant(name: str) -> Any:
    # json.loads calls this for NaN, Infinity and -Infinity, which RFC 8259 has not; it
    # cannot say where they stand, so the caller turns this into a JSONDecodeError there.
    raise ValueError(name)


def _stdlib_loads(data: bytes) -> Any:
    # Decoding the UTF-8 first spares json.loads guessing the encoding of every record.
    text = bytes(data).decode("utf-8")
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError:
        raise
    except ValueError as error:  # only _refuse_constant raises a plain ValueError here
        constant = str(error)
        reason = f"{constant} is not JSON (RFC 8259 has no NaN or Infinity)"
        raise json.JSONDecodeError(reason, text, text.find(constant)) from None


def _stdlib_dumps(value: Any) -> bytes:
    text = json.dumps(
        value,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
        default=record_as_builtins,
    )
    return text.encode("utf-8")


def _pick() -> tuple[str, Callable[[bytes], Any], Callable[[Any], bytes]]:
    try:
        import msgspec
    except ModuleNotFoundError:
        return "json", _stdlib_loads, _stdlib_dumps
    decode = msgspec.json.Decoder().decode
    encoder = msgspec.json.Encoder(enc_hook=record_as_builtins)

    def msgspec_loads(data: bytes) -> Any:
        try:
            return decode(data)
        except msgspec.DecodeError as error:
            # The stdlib's exception type, which callers (and dead-letter targets) catch.
            raise _json_decode_error(str(error), data) from None

    return "msgspec", msgspec_loads, encoder.encode


def _json_decode_error(message: str, data: bytes) -> json.JSONDecodeError:
    """msgspec's ``"JSON is malformed: ... (byte 7)"`` as a :class:`json.JSONDecodeError`
    at that position, as the stdlib would raise it."""
    reason, _, where = message.rpartition(" (byte ")
    document = bytes(data).decode("utf-8", "replace")
    if reason and where.endswith(")") and where[:-1].isdigit():
        position = int(where[:-1])
    else:  # "Input data was truncated": at the end
        reason, position = message, len(document) if "truncated" in message else 0
    return json.JSONDecodeError(reason, document, min(position, len(document)))


LIBRARY: str
"""The library in use: ``"msgspec"`` or ``"json"`` (the standard library's)."""
loads: Callable[[bytes], Any]
"""JSON text (UTF-8 bytes) to values; a :class:`json.JSONDecodeError` for anything that is
not JSON, or a ``UnicodeDecodeError`` for bytes that are not UTF-8 (both ``ValueError``)."""
dumps: Callable[[Any], bytes]
"""Values to compact JSON, UTF-8, without a newline; a ``TypeError`` for values it cannot
write."""
LIBRARY, loads, dumps = _pick()
