"""Codecs turn a connector's raw records into values; a decode policy says what happens to
a record the codec rejects. Encoders are the way back, values to bytes, for the sinks.

A source's ``codec=`` is one of:

* ``"bytes"``, ``"text"`` (UTF-8) or ``"json"`` (RFC 8259, with msgspec when installed);
* a **record class**: a msgspec ``Struct``, a pydantic model, a dataclass or an attrs
  class. Each record is read as JSON into it and validated; a record that does not fit is
  a decode failure (:class:`~rxflow.errors.RecordInvalidError`, naming the field);
* **Avro** in the Confluent wire format: :func:`avro_reader`, with writer schemas by id
  and optionally a :class:`SchemaRegistry`;
* any function ``bytes -> value``.

A record that fails to decode is never dropped silently:

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

A sink's ``encoder=`` is ``"auto"`` (bytes as they are, ``str`` as UTF-8, anything else,
records too, as JSON), ``"bytes"``, ``"text"``, ``"json"``, a record class (its instances
as JSON), :func:`avro`, or a function ``value -> bytes``; :func:`sink_encoder` resolves it.

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

from rxflow.connectors.codecs._avro import (
    AvroReader,
    AvroSchema,
    AvroWriter,
    SchemaLookup,
    avro,
    avro_reader,
)
from rxflow.connectors.codecs._decode import (
    CODECS,
    DECODE_POLICIES,
    SKIPPED,
    Codec,
    CodecFunction,
    CodecName,
    CodecSpec,
    DeadLetter,
    DecodeFailure,
    DecodePolicy,
    Decoder,
    DecoderOptions,
    as_bytes,
    as_json,
    as_text,
    resolve_codec,
)
from rxflow.connectors.codecs._encode import (
    ENCODERS,
    Encoder,
    EncoderName,
    EncoderSpec,
    encode_auto,
    encode_bytes,
    encode_json,
    encode_text,
    resolve_encoder,
    sink_encoder,
)
from rxflow.connectors.codecs._records import is_record_type
from rxflow.connectors.codecs._registry import SchemaRegistry
from rxflow.errors import CodecNeedsAwait, RecordInvalidError, RecordRejected

__all__ = [
    "CODECS",
    "DECODE_POLICIES",
    "ENCODERS",
    "SKIPPED",
    "AvroReader",
    "AvroSchema",
    "AvroWriter",
    "Codec",
    "CodecFunction",
    "CodecName",
    "CodecNeedsAwait",
    "CodecSpec",
    "DeadLetter",
    "DecodeFailure",
    "DecodePolicy",
    "Decoder",
    "DecoderOptions",
    "Encoder",
    "EncoderName",
    "EncoderSpec",
    "RecordInvalidError",
    "RecordRejected",
    "SchemaLookup",
    "SchemaRegistry",
    "as_bytes",
    "as_json",
    "as_text",
    "avro",
    "avro_reader",
    "encode_auto",
    "encode_bytes",
    "encode_json",
    "encode_text",
    "is_record_type",
    "resolve_codec",
    "resolve_encoder",
    "sink_encoder",
]
