"""Records set aside by ``on_decode_error="skip"`` show: in the Flow snapshot as the source
stage's ``skipped``, and as one WARNING log line each, with the reason and the record's key.

For every broker the contract suite (tests/connectors/contract) checks both; here is what is
special: Redis entries without the payload field, file lines, dead letters logged at INFO,
and the Decoder's own logging and counting.
"""

from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis

from rxflow import Flow
from rxflow.connectors import SKIPPED, DecodeFailure, Decoder
from rxflow.connectors.codecs import as_json
from rxflow.connectors.files import read_file
from rxflow.connectors.redis import redis_stream_source
from rxflow.errors import DecodeError
from rxflow.flow.metrics import FlowSnapshot
from tests.connectors.conftest import require_service

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
