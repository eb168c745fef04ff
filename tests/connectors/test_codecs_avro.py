"""Avro in the Confluent wire format: bytes written by fastavro itself and by rxflow's
encoder, several writer schemas by id, lookups (sync, async, a schema registry served by a
real local HTTP server), and every way a record can be wrong, through a real Decoder and a
real Redis stream source.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import uuid
from typing import Any

import fastavro
import pytest
import redis

from rxflow.connectors.codecs import (
    SKIPPED,
    DecodeFailure,
    Decoder,
    SchemaRegistry,
    avro,
    avro_reader,
)
from rxflow.connectors.files import read_file
from rxflow.connectors.redis import redis_stream_source
from rxflow.errors import (
    DecodeError,
    HttpResponseError,
    RecordInvalidError,
    ServiceUnavailableError,
)
from tests.connectors.conftest import require_service
from tests.connectors.http_server import Exchange, serving

pytestmark = pytest.mark.anyio

ORDER_V1 = {
    "type": "record",
    "name": "Order",
    "fields": [{"name": "id", "type": "long"}, {"name": "user", "type": "string"}],
}
# v2 adds a field with a default: a reader on v2 reads v1 records (schema resolution).
ORDER_V2 = {
    "type": "record",
    "name": "Order",
    "fields": [
        {"name": "id", "type": "long"},
        {"name": "user", "type": "string"},
        {"name": "total", "type": "double", "default": 0.0},
    ],
}


def confluent(schema_id: int, schema: Any, record: Any) -> bytes:
    """A record as a Confluent producer frames it, written by fastavro itself."""
    body = io.BytesIO()
    fastavro.schemaless_writer(body, fastavro.parse_schema(schema), record)
    return b"\x00" + schema_id.to_bytes(4, "big") + body.getvalue()


# -- writer and reader ------------------------------------------------------------------------


async def test_records_written_by_fastavro_read_with_the_schema_their_id_names() -> None:
    decoder = Decoder(avro_reader({1: ORDER_V1, 2: ORDER_V2}), source="orders")
    one = confluent(1, ORDER_V1, {"id": 1, "user": "ann"})
    two = confluent(2, ORDER_V2, {"id": 2, "user": "bob", "total": 9.5})
    assert await decoder.decode(one) == {"id": 1, "user": "ann"}
    assert await decoder.decode(two) == {"id": 2, "user": "bob", "total": 9.5}


async def test_the_encoder_writes_the_confluent_frame_and_round_trips() -> None:
    encode = avro(ORDER_V2, schema_id=258)
    record = {"id": 2**40, "user": "zoë", "total": 1.25}
    data = encode(record)
    assert data[:5] == b"\x00\x00\x00\x01\x02"  # magic byte, then 258 in 4 bytes big-endian
    assert data == confluent(258, ORDER_V2, record)  # the same bytes as fastavro's own
    assert await Decoder(avro_reader({258: ORDER_V2})).decode(data) == record


async def test_a_reader_schema_reads_older_writers_records() -> None:
    reader = avro_reader({1: ORDER_V1, 2: ORDER_V2}, reader_schema=ORDER_V2)
    assert reader(confluent(1, ORDER_V1, {"id": 1, "user": "ann"})) == {
        "id": 1,
        "user": "ann",
        "total": 0.0,
    }


def test_the_encoder_refuses_a_value_its_schema_cannot_hold() -> None:
    with pytest.raises((TypeError, ValueError)):
        avro(ORDER_V1, schema_id=1)({"id": "not a long", "user": "ann"})
    with pytest.raises(ValueError, match="schema_id must fit 4 bytes"):
        avro(ORDER_V1, schema_id=2**32)
    with pytest.raises(ValueError, match="give the writer schemas by id, or a lookup="):
        avro_reader()


# -- records that are not such Avro ----------------------------------------------------------

WRONG = {
    "wrong magic byte": (
        b"\x01\x00\x00\x00\x01\x02\x06ann",
        "magic byte 0x01, where the Confluent wire format has 0x00",
    ),
    "shorter than the header": (b"\x00\x00\x01", "3 bytes, shorter than the 5-byte header"),
    "unknown id": (
        confluent(9, ORDER_V1, {"id": 1, "user": "a"}),
        "schema id 9 is unknown (known: 1)",
    ),
    "truncated body": (
        confluent(1, ORDER_V1, {"id": 1, "user": "ann"})[:-2],
        "not a valid Avro record of schema id 1: EOFError",
    ),
    "bytes left over": (
        confluent(1, ORDER_V1, {"id": 1, "user": "ann"}) + b"\x02",
        "1 bytes left after the record (was it written with another schema?)",
    ),
}


@pytest.mark.parametrize("case", WRONG)
async def test_a_record_that_is_not_such_avro_follows_the_decode_policy(
    case: str, caplog: pytest.LogCaptureFixture
) -> None:
    data, reason = WRONG[case]
    with pytest.raises(DecodeError, match="record 'k' is not a valid Avro record") as raised:
        await Decoder(avro_reader({1: ORDER_V1}), source="s").decode(data, key="k")
    assert isinstance(raised.value.__cause__, RecordInvalidError)
    assert reason in str(raised.value.__cause__)

    caplog.set_level(logging.WARNING, logger="rxflow.connectors")
    skipping = Decoder(avro_reader({1: ORDER_V1}), on_decode_error="skip", source="s")
    assert await skipping.decode(data, key="k") is SKIPPED
    assert skipping.skipped == 1
    (line,) = [r.getMessage() for r in caplog.records if r.name == "rxflow.connectors"]
    assert reason in line

    dead: list[DecodeFailure] = []
    lettering = Decoder(
        avro_reader({1: ORDER_V1}), on_decode_error="dead_letter", dead_letter=dead.append
    )
    assert await lettering.decode(data) is SKIPPED
    assert dead[0].data == data


# -- lookups ------------------------------------------------------------------------------------


async def test_a_sync_lookup_is_asked_once_per_unknown_id() -> None:
    asked: list[int] = []

    def lookup(schema_id: int) -> Any:
        asked.append(schema_id)
        return {2: ORDER_V2}.get(schema_id)

    decoder = Decoder(avro_reader({1: ORDER_V1}, lookup=lookup), on_decode_error="skip")
    records = [
        confluent(1, ORDER_V1, {"id": 1, "user": "a"}),
        confluent(2, ORDER_V2, {"id": 2, "user": "b", "total": 1.0}),
        confluent(2, ORDER_V2, {"id": 3, "user": "c", "total": 2.0}),
        confluent(5, ORDER_V1, {"id": 4, "user": "d"}),  # the lookup does not know 5
        confluent(5, ORDER_V1, {"id": 5, "user": "e"}),  # ... and is asked again
    ]
    values = [await decoder.decode(data) for data in records]
    assert [v if v is SKIPPED else v["id"] for v in values] == [1, 2, 3, SKIPPED, SKIPPED]
    assert asked == [2, 5, 5]
    assert (decoder.decoded, decoder.skipped) == (3, 2)


async def test_an_async_lookup_is_awaited_by_the_decoder() -> None:
    async def lookup(schema_id: int) -> Any:
        return ORDER_V2

    reader = avro_reader(lookup=lookup)
    data = confluent(4, ORDER_V2, {"id": 1, "user": "a", "total": 0.5})
    assert await Decoder(reader).decode(data) == {"id": 1, "user": "a", "total": 0.5}
    assert reader(data)["id"] == 1  # remembered: no await needed any more
    assert await avro_reader(lookup=lookup).decode(data) == {"id": 1, "user": "a", "total": 0.5}


async def test_a_failing_lookup_ends_the_source_instead_of_skipping_the_record() -> None:
    def lookup(schema_id: int) -> Any:
        raise ConnectionRefusedError("registry down")

    decoder = Decoder(avro_reader(lookup=lookup), on_decode_error="skip")
    with pytest.raises(ConnectionRefusedError):
        await decoder.decode(confluent(1, ORDER_V1, {"id": 1, "user": "a"}))
    assert decoder.skipped == 0


# -- a schema registry, over real HTTP -------------------------------------------------------


def registry_routes(schemas: dict[int, Any], requests: list[str]) -> dict[str, Any]:
    routes = {}
    for schema_id, schema in schemas.items():

        async def answer(exchange: Exchange, schema: Any = schema) -> None:
            requests.append(exchange.request.headers.get("authorization", ""))
            await exchange.respond_json({"schema": json.dumps(schema)})

        routes[f"GET /schemas/ids/{schema_id}"] = answer

    async def protobuf(exchange: Exchange) -> None:
        await exchange.respond_json({"schema": "syntax = 'proto3';", "schemaType": "PROTOBUF"})

    async def broken(exchange: Exchange) -> None:
        await exchange.respond(b"boom", status=500, content_type="text/plain")

    routes["GET /schemas/ids/70"] = protobuf
    routes["GET /schemas/ids/71"] = broken
    return routes


async def test_the_registry_is_asked_once_per_id_with_the_credentials() -> None:
    requests: list[str] = []
    async with serving(registry_routes({1: ORDER_V1, 2: ORDER_V2}, requests)) as server:
        registry = SchemaRegistry(server.url(), auth=("app", "s3cret"))
        decoder = Decoder(avro_reader(lookup=registry), on_decode_error="skip", source="s")
        records = [
            confluent(1, ORDER_V1, {"id": 1, "user": "a"}),
            confluent(2, ORDER_V2, {"id": 2, "user": "b", "total": 1.0}),
            confluent(1, ORDER_V1, {"id": 3, "user": "c"}),
            confluent(3, ORDER_V1, {"id": 4, "user": "d"}),  # 404: skipped
            confluent(70, ORDER_V1, {"id": 5, "user": "e"}),  # not an Avro schema: skipped
        ]
        values = [await decoder.decode(data) for data in records]
    assert [v if v is SKIPPED else v["id"] for v in values] == [1, 2, 3, SKIPPED, SKIPPED]
    basic = "Basic " + base64.b64encode(b"app:s3cret").decode()
    assert requests == [basic, basic]  # ids 1 and 2, once each (404 and 70 answer elsewhere)
    assert await registry(1) == ORDER_V1  # cached


async def test_registry_failures_end_the_source_and_never_show_the_password() -> None:
    async with serving(registry_routes({}, [])) as server:
        url = server.url().replace("http://", "http://app:s3cret@")
        decoder = Decoder(avro_reader(lookup=SchemaRegistry(url)), on_decode_error="skip")
        with pytest.raises(HttpResponseError) as answered:
            await decoder.decode(confluent(71, ORDER_V1, {"id": 1, "user": "a"}))
        assert answered.value.status_code == 500
        assert "s3cret" not in str(answered.value)
        assert "s3cret" not in answered.value.url
        assert decoder.skipped == 0
    # Nothing listens there any more.
    down = Decoder(avro_reader(lookup=SchemaRegistry(url, timeout=2.0)), on_decode_error="skip")
    with pytest.raises(ServiceUnavailableError, match="could not fetch schema id 1") as refused:
        await down.decode(confluent(1, ORDER_V1, {"id": 1, "user": "a"}))
    assert "s3cret" not in str(refused.value)
    assert "app:***@" in str(refused.value)
    assert refused.value.__cause__ is None
    assert "s3cret" not in repr(SchemaRegistry(url))


# -- through a real source ----------------------------------------------------------------------


async def test_a_redis_stream_of_avro_records_reads_through_a_registry() -> None:
    host, port = require_service("redis")
    client = redis.Redis(host=host, port=port)
    stream = f"rxflow-test-avro-{uuid.uuid4().hex[:12]}"
    encode = avro(ORDER_V1, schema_id=1)
    try:
        for data in (
            encode({"id": 1, "user": "ann"}),
            b"\x07not avro",
            confluent(2, ORDER_V2, {"id": 2, "user": "bob", "total": 3.5}),
        ):
            client.xadd(stream, {"data": data})
        async with serving(registry_routes({1: ORDER_V1, 2: ORDER_V2}, [])) as server:
            codec = avro_reader(lookup=SchemaRegistry(server.url()))
            async with redis_stream_source(
                f"redis://{host}:{port}/0", stream, "g", "c1", codec=codec, on_decode_error="skip"
            ) as source:
                values = []
                async for message in source:
                    values.append(message.value)
                    if len(values) == 2:
                        break
                assert source.decoder.skipped == 1
        assert values == [{"id": 1, "user": "ann"}, {"id": 2, "user": "bob", "total": 3.5}]
    finally:
        client.delete(stream)


async def test_a_file_of_length_prefixed_avro_records_reads_through_an_async_lookup(
    tmp_path: Any,
) -> None:
    # Byte-stream sources call the codec directly and hand failures to the decoder: the
    # lookup an unknown id needs is awaited there too.
    asked: list[int] = []

    async def lookup(schema_id: int) -> Any:
        asked.append(schema_id)
        return {1: ORDER_V1, 2: ORDER_V2}.get(schema_id)

    records = [
        confluent(1, ORDER_V1, {"id": 1, "user": "ann"}),
        confluent(3, ORDER_V1, {"id": 2, "user": "bob"}),  # id 3: unknown, skipped
        confluent(2, ORDER_V2, {"id": 3, "user": "cy", "total": 1.5}),
        confluent(1, ORDER_V1, {"id": 4, "user": "di"}),
    ]
    path = tmp_path / "orders.avro-frames"
    path.write_bytes(b"".join(len(data).to_bytes(4, "big") + data for data in records))
    codec = avro_reader(lookup=lookup)
    async with read_file(path, framing="length", codec=codec, on_decode_error="skip") as orders:
        ids = [message.value["id"] async for message in orders]
        assert orders.decoder.skipped == 1
    assert ids == [1, 3, 4]
    assert asked == [1, 3, 2]
