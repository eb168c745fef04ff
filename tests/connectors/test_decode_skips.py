"""Records set aside by ``on_decode_error="skip"`` show: in the Flow snapshot as the source
stage's ``skipped``, and as one WARNING log line each, with the reason and the record's key.

One test per connector, against the real local services (files need none), on both
backends; then the Decoder's own logging and counting.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis

from rxflow import Flow
from rxflow.connectors import SKIPPED, DecodeFailure, Decoder
from rxflow.connectors.codecs import as_json
from rxflow.connectors.files import read_file
from rxflow.connectors.mqtt import mqtt_sink, mqtt_source
from rxflow.connectors.nats import jetstream_sink, jetstream_source
from rxflow.connectors.postgres import postgres_table_source
from rxflow.connectors.rabbitmq import rabbitmq_source
from rxflow.connectors.redis import redis_stream_source
from rxflow.errors import DecodeError
from rxflow.flow.metrics import FlowSnapshot
from tests.connectors.conftest import require_service
from tests.connectors.test_nats import admin as nats_admin
from tests.connectors.test_postgres import Admin as PostgresAdmin
from tests.connectors.test_postgres import add as add_rows
from tests.connectors.test_postgres import admin_connection
from tests.connectors.test_rabbitmq import URL as AMQP_URL
from tests.connectors.test_rabbitmq import Admin as RabbitAdmin

pytestmark = pytest.mark.anyio

JSON_FAILURE = "could not be decoded by 'as_json': JSONDecodeError"


def json_reason(data: bytes) -> str:
    """The json codec's reason for refusing ``data`` (its wording is the JSON library's)."""
    with pytest.raises(json.JSONDecodeError) as refused:
        as_json(data)
    return str(refused.value)


def skip_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "rxflow.connectors" and record.levelno == logging.WARNING
    ]


async def run_until(source: Any, count: int) -> tuple[FlowSnapshot, list[Any]]:
    """Run a flow from ``source`` (stage ``in``) until its sink got ``count`` messages, then
    stop it gracefully; its final snapshot, and the values written."""
    written: list[Any] = []
    async with anyio.create_task_group() as tg:

        async def sink(message: Any) -> None:
            written.append(message.value)
            if len(written) == count:
                handle.stop()

        handle = Flow("skips").source(source, name="in").sink(sink).start(tg)
        with anyio.fail_after(20):
            snapshot = await handle.wait()
    return snapshot, written


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="rxflow.connectors")
    return caplog


# -- per connector -------------------------------------------------------------------------


async def test_redis_entries_without_the_payload_field_show_as_skipped(
    logs: pytest.LogCaptureFixture,
) -> None:
    host, port = require_service("redis")
    client = redis.Redis(host=host, port=port)
    stream = f"rxflow-test-skips-{uuid.uuid4().hex[:12]}"
    try:
        ids = [
            client.xadd(stream, {"data": b'{"n": 1}'}),
            client.xadd(stream, {"payload": b'{"n": 2}', "ts": b"1"}),  # not `data`
            client.xadd(stream, {"data": b"{oops"}),
            client.xadd(stream, {"data": b'{"n": 3}'}),
        ]
        missing, bad = (entry_id.decode() for entry_id in ids[1:3])
        source = redis_stream_source(
            f"redis://{host}:{port}/0", stream, "g", "c1", codec="json", on_decode_error="skip"
        )
        snapshot, written = await run_until(source, 2)
        assert written == [{"n": 1}, {"n": 3}]
        assert snapshot["in"].skipped == 2
        assert skip_warnings(logs) == [
            f"redis:{stream}: skipped record {missing!r} (on_decode_error='skip'): was "
            f"rejected: entry {missing} has no field 'data' (fields: 'payload', 'ts'); set "
            "field= to the field that holds the payload, or field=None for the whole entry",
            f"redis:{stream}: skipped record {bad!r} (on_decode_error='skip'): {JSON_FAILURE}"
            f"({json_reason(b'{oops')!r})",
        ]
        assert client.xpending(stream, "g")["pending"] == 0  # skipped entries are acked
    finally:
        client.delete(stream)
        client.close()


async def test_redis_missing_field_under_raise_says_which_field_to_set() -> None:
    host, port = require_service("redis")
    client = redis.Redis(host=host, port=port)
    stream = f"rxflow-test-skips-{uuid.uuid4().hex[:12]}"
    try:
        entry_id = client.xadd(stream, {"payload": b"x"}).decode()
        async with redis_stream_source(f"redis://{host}:{port}/0", stream, "g", "c1") as source:
            with pytest.raises(DecodeError, match=rf"entry {entry_id} has no field 'data'"):
                await anext(aiter(source))
    finally:
        client.delete(stream)
        client.close()


@pytest.fixture
def nats_stream() -> Iterator[tuple[str, str]]:
    """A NATS URL and a fresh stream capturing ``<name>.>``, deleted after the test."""
    host, port = require_service("nats")
    url = f"nats://{host}:{port}"
    stream = f"rxflow_test_{uuid.uuid4().hex[:12]}"
    nats_admin(url, "create", stream)
    yield url, stream
    nats_admin(url, "delete", stream)


async def test_nats_json_failures_show_as_skipped(
    logs: pytest.LogCaptureFixture, nats_stream: tuple[str, str]
) -> None:
    url, stream = nats_stream
    subject = f"{stream}.in"
    async with jetstream_sink(url, subject) as sink:
        for payload in (b'{"n": 1}', b"{oops", b"[", b'{"n": 2}'):
            await sink.send(payload)  # one at a time: in this order
    source = jetstream_source(
        url, stream, f"{stream}.>", "reader", codec="json", on_decode_error="skip"
    )
    snapshot, written = await run_until(source, 2)
    assert written == [{"n": 1}, {"n": 2}]
    assert snapshot["in"].skipped == 2
    warnings = skip_warnings(logs)
    assert len(warnings) == 2
    assert all(w.startswith(f"nats:{stream}/reader: skipped record {subject!r}") for w in warnings)
    assert all(JSON_FAILURE in w for w in warnings)


@pytest.fixture
async def rabbit_admin() -> AsyncIterator[RabbitAdmin]:
    require_service("rabbitmq")
    from rxflow.connectors._asyncio_host import AsyncioHost

    async with AsyncioHost() as host:
        yield RabbitAdmin(host)


async def test_rabbitmq_json_failures_show_as_skipped(
    logs: pytest.LogCaptureFixture, rabbit_admin: RabbitAdmin
) -> None:
    queue = f"rxflow-test-{uuid.uuid4().hex[:12]}"
    await rabbit_admin.publish(queue, b"{oops", b'{"n": 1}', b"nope", b'{"n": 2}')
    try:
        source = rabbitmq_source(AMQP_URL, queue, codec="json", on_decode_error="skip")
        snapshot, written = await run_until(source, 2)
        assert written == [{"n": 1}, {"n": 2}]
        assert snapshot["in"].skipped == 2
        warnings = skip_warnings(logs)
        assert len(warnings) == 2
        assert all(w.startswith(f"rabbitmq:{queue}: skipped record {queue!r}") for w in warnings)
        assert all(JSON_FAILURE in w for w in warnings)
    finally:
        await rabbit_admin.delete(queue)


async def test_mqtt_json_failures_show_as_skipped(logs: pytest.LogCaptureFixture) -> None:
    host, port = require_service("mqtt")
    topic = f"rxflow-test/{uuid.uuid4().hex}"
    url = f"mqtt://{host}:{port}"
    async with mqtt_source(url, topic, codec="json", on_decode_error="skip") as source:
        async with mqtt_sink(url, topic) as sink:
            await sink.send_batch([b"{oops", b'{"n": 1}'])
        snapshot, written = await run_until(source, 1)
    assert written == [{"n": 1}]
    assert snapshot["in"].skipped == 1
    (warning,) = skip_warnings(logs)
    assert warning.startswith(f"mqtt:{topic}: skipped record {topic!r}")
    assert JSON_FAILURE in warning


async def test_postgres_table_rows_that_fail_to_decode_show_as_skipped(
    logs: pytest.LogCaptureFixture,
) -> None:
    host, port = require_service("postgresql")
    dsn = f"postgresql://postgres@{host}:{port}/test"
    table = f"outbox_{uuid.uuid4().hex[:12]}"
    async with admin_connection(dsn) as admin:
        await admin.execute(f'CREATE TABLE "{table}" (id bigserial PRIMARY KEY, payload text)')
        try:
            await add_rows(admin, table, '{"n": 1}', "{oops", '{"n": 2}')
            source = postgres_table_source(
                dsn,
                table,
                id_column="id",
                value_column="payload",
                codec="json",
                on_decode_error="skip",
            )
            snapshot, written = await run_until(source, 2)
            assert written == [{"n": 1}, {"n": 2}]
            assert snapshot["in"].skipped == 1
            (warning,) = skip_warnings(logs)
            assert warning.startswith(f"postgresql:{table}: skipped record '2'")
            assert JSON_FAILURE in warning
            assert await _rows(admin, table) == 0  # the skipped row was deleted, as acked
        finally:
            await admin.execute(f'DROP TABLE "{table}"')


async def _rows(admin: PostgresAdmin, table: str) -> int:
    count: int = await admin.fetchval(f'SELECT count(*) FROM "{table}"')
    return count


async def test_file_lines_that_fail_to_decode_show_as_skipped(
    tmp_path: Path, logs: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text('{"n": 1}\n{oops\n' + "x" * 200 + '\n{"n": 2}\n')
    written: list[Any] = []
    flow = (
        Flow("skips")
        .source(
            read_file(path, codec="json", on_decode_error="skip", max_line_length=100),
            name="in",
        )
        .sink(lambda message: written.append(message.value))
    )
    snapshot = await flow.run()
    assert written == [{"n": 1}, {"n": 2}]
    assert snapshot["in"].skipped == 2
    json_failure, too_long = skip_warnings(logs)
    assert json_failure.startswith(f"file:{path}: skipped record {str(path)!r}")
    assert JSON_FAILURE in json_failure
    assert "was rejected: a line " in too_long
    assert "is longer than max_line_length=100" in too_long


async def test_dead_letters_show_in_the_snapshot_and_are_logged_at_info(
    tmp_path: Path, logs: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text('{oops\n{"n": 1}\n')
    failures: list[DecodeFailure] = []
    source = read_file(
        path, codec="json", on_decode_error="dead_letter", dead_letter=failures.append
    )
    snapshot = await Flow().source(source, name="in").sink(lambda _: None).run()
    assert (snapshot["in"].dead_lettered, snapshot["in"].skipped) == (1, 0)
    assert len(failures) == 1
    assert skip_warnings(logs) == []
    (info,) = [r.getMessage() for r in logs.records if r.name == "rxflow.connectors"]
    assert "dead-lettered" in info
    assert JSON_FAILURE in info


# -- the Decoder ---------------------------------------------------------------------------


async def test_the_decoder_logs_each_skip_once_with_key_and_reason_never_the_bytes(
    logs: pytest.LogCaptureFixture,
) -> None:
    decoder = Decoder("json", on_decode_error="skip", source="demo")
    assert await decoder.decode(b'{"password": "hunter2"', key="k1") is SKIPPED
    assert await decoder.decode(b'{"n": 1}', key="k2") == {"n": 1}
    assert decoder.skipped == 1
    (warning,) = skip_warnings(logs)
    assert warning.startswith("demo: skipped record 'k1' (on_decode_error='skip'): ")
    assert JSON_FAILURE in warning
    assert "hunter2" not in warning


async def test_a_raising_decoder_neither_counts_nor_logs(logs: pytest.LogCaptureFixture) -> None:
    decoder = Decoder("json", source="demo")
    with pytest.raises(DecodeError, match=r"demo: record 'k' could not be decoded"):
        await decoder.decode(b"{oops", key="k")
    assert (decoder.skipped, decoder.dead_lettered) == (0, 0)
    assert [r for r in logs.records if r.name == "rxflow.connectors"] == []
