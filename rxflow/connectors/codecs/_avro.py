"""Avro records in the Confluent wire format, with fastavro (the ``[avro]`` extra).

Each record is a magic byte ``0``, the writer schema's id as 4 bytes big-endian, and the
Avro binary body (no schema, no container file): what Kafka producers with a schema
registry write, and what any system carrying such bytes (a NATS subject, a Redis stream)
then holds. :func:`avro` writes it (an encoder), :func:`avro_reader` reads it (a codec)
with the writer schemas it knows by id, or asks ``lookup`` (a function, or a
:class:`~rxflow.connectors.codecs.SchemaRegistry`) for an id it has not seen.
"""

from __future__ import annotations

import inspect
import io
from collections.abc import Awaitable, Callable, Mapping, Sequence
from functools import partial
from typing import Any, Final

from rxflow.connectors._extras import requires_extra
from rxflow.errors import CodecNeedsAwait, RecordInvalidError

AvroSchema = Mapping[str, Any] | Sequence[Any] | str
"""An Avro schema as parsed JSON: a record's mapping, a union's list, a primitive's name."""
SchemaLookup = Callable[[int], AvroSchema | None] | Callable[[int], Awaitable[AvroSchema | None]]
"""Finds the writer schema of an id (sync or async): the schema, or None for an unknown id.
What it raises ends the source: it says the lookup failed, not that the record is bad."""

MAGIC: Final = 0
HEADER: Final = 5  # the magic byte and the 4-byte schema id
_FEATURE: Final = "Avro (rxflow.connectors.codecs.avro)"


def _fastavro() -> Any:
    with requires_extra("avro", feature=_FEATURE):
        import fastavro
    return fastavro


class AvroWriter:
    """An encoder: a value (a mapping, for a record schema) to Confluent-framed Avro."""

    __name__ = "avro"

    def __init__(self, schema: AvroSchema, schema_id: int) -> None:
        if not 0 <= schema_id < 2**32:
            raise ValueError(f"avro(): schema_id must fit 4 bytes (0 to 2**32-1), got {schema_id}")
        fastavro = _fastavro()
        self.schema_id = schema_id
        self._parsed = fastavro.parse_schema(schema)
        self._write = fastavro.schemaless_writer
        self._header = bytes([MAGIC]) + schema_id.to_bytes(4, "big")

    def __call__(self, value: Any) -> bytes:
        out = io.BytesIO()
        out.write(self._header)
        self._write(out, self._parsed, value)
        return out.getvalue()


class AvroReader:
    """A codec: Confluent-framed Avro to values, with the writer schema its id names.

    A record that is not such Avro raises :class:`~rxflow.errors.RecordInvalidError`, so
    the source's ``on_decode_error`` applies: a wrong magic byte, a record shorter than
    the header, an id neither known nor found by the lookup, a body its schema cannot
    read or that has bytes left over.
    """

    __name__ = "avro"

    def __init__(
        self,
        schemas: Mapping[int, AvroSchema],
        lookup: SchemaLookup | None,
        reader_schema: AvroSchema | None,
    ) -> None:
        fastavro = _fastavro()
        self._parse = fastavro.parse_schema
        self._read = fastavro.schemaless_reader
        self._reader_schema = self._parse(reader_schema) if reader_schema is not None else None
        self._writers: dict[int, Any] = {id_: self._parse(s) for id_, s in schemas.items()}
        self._lookup = lookup
        # Ids the lookup just said it does not know: the retry that follows the lookup
        # fails them, and forgets them, so a later record asks again.
        self._not_found: set[int] = set()

    def __call__(self, data: bytes) -> Any:
        if len(data) < HEADER:
            raise RecordInvalidError(
                f"not a valid Avro record: {len(data)} bytes, shorter than the "
                f"{HEADER}-byte header of the Confluent wire format"
            )
        if data[0] != MAGIC:
            raise RecordInvalidError(
                f"not a valid Avro record: magic byte {data[0]:#04x}, where the Confluent "
                "wire format has 0x00"
            )
        schema_id = int.from_bytes(data[1:HEADER], "big")
        writer = self._writers.get(schema_id)
        if writer is None:
            self._unknown(schema_id)
        body = io.BytesIO(data)
        body.seek(HEADER)
        try:
            value = self._read(body, writer, self._reader_schema)
        except Exception as error:
            # fastavro's reasons (EOFError, an index out of range) name no values.
            raise RecordInvalidError(
                f"not a valid Avro record of schema id {schema_id}: {type(error).__name__}: {error}"
            ) from None
        if (left := len(data) - body.tell()) != 0:
            raise RecordInvalidError(
                f"not a valid Avro record of schema id {schema_id}: {left} bytes left after "
                "the record (was it written with another schema?)"
            )
        return value

    async def decode(self, data: bytes) -> Any:
        """Decode one record outside a source, asking the lookup first if needed."""
        try:
            return self(data)
        except CodecNeedsAwait as needs:
            await needs.prepare()
            return self(data)

    def _unknown(self, schema_id: int) -> None:
        if self._lookup is None or schema_id in self._not_found:
            self._not_found.discard(schema_id)
            known = ", ".join(map(str, sorted(self._writers))) or "none"
            asked = "; the lookup does not know it either" if self._lookup is not None else ""
            raise RecordInvalidError(
                f"not a valid Avro record: schema id {schema_id} is unknown (known: {known}){asked}"
            )
        raise CodecNeedsAwait(partial(self._look_up, schema_id), f"schema id {schema_id}")

    async def _look_up(self, schema_id: int) -> None:
        assert self._lookup is not None
        found = self._lookup(schema_id)
        if inspect.isawaitable(found):
            found = await found
        if found is None:
            self._not_found.add(schema_id)
        else:
            self._writers[schema_id] = self._parse(found)


def avro(schema: AvroSchema, *, schema_id: int) -> AvroWriter:
    """An encoder writing values as Avro with ``schema``, framed for the Confluent wire
    format under ``schema_id`` (the id a schema registry gave the schema).

    Example:
        >>> schema = {"type": "record", "name": "Order",
        ...           "fields": [{"name": "id", "type": "long"}]}
        >>> avro(schema, schema_id=7)({"id": 3})
        b'\\x00\\x00\\x00\\x00\\x07\\x06'
    """
    return AvroWriter(schema, schema_id)


def avro_reader(
    schemas: Mapping[int, AvroSchema] | None = None,
    *,
    lookup: SchemaLookup | None = None,
    reader_schema: AvroSchema | None = None,
) -> AvroReader:
    """A codec reading Confluent-framed Avro, each record with the writer schema its id
    names.

    Args:
        schemas: writer schemas by id, known in advance.
        lookup: asked (once per id, then remembered) for an id not in ``schemas``: a
            function ``id -> schema or None``, sync or async, such as a
            :class:`~rxflow.connectors.codecs.SchemaRegistry`.
        reader_schema: the schema values are read as (Avro schema resolution: fields
            added with defaults, fields dropped); by default each record's writer schema.

    Example:
        >>> schema = {"type": "record", "name": "Order",
        ...           "fields": [{"name": "id", "type": "long"}]}
        >>> avro_reader({7: schema})(b'\\x00\\x00\\x00\\x00\\x07\\x06')
        {'id': 3}
    """
    if not schemas and lookup is None:
        raise ValueError("avro_reader(): give the writer schemas by id, or a lookup=, or both")
    return AvroReader(dict(schemas or {}), lookup, reader_schema)
