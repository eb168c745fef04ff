"""A connector's source goes straight into open_pipe, or into an Rx chain as an observable."""

from __future__ import annotations

import uuid
from pathlib import Path

import anyio
import pytest
import reactivex
import redis
from reactivex import operators as ops

from rxflow import from_async_iterable, open_pipe
from rxflow.connectors import read_file, redis_stream_source
from tests.connectors.conftest import require_service

pytestmark = pytest.mark.anyio


async def test_a_broker_source_is_an_open_pipe_source_as_it_is() -> None:
    host, port = require_service("redis")
    client = redis.Redis(host=host, port=port)
    stream = f"rxflow-as-source-{uuid.uuid4().hex[:12]}"
    for n in range(5):
        client.xadd(stream, {"data": str(n)})
    try:
        source = redis_stream_source(f"redis://{host}:{port}", stream, "g", "c", codec="text")
        async with open_pipe(source, ops.take(5)) as messages:
            with anyio.fail_after(10):
                received = [message async for message in messages]
                for message in received:
                    await message.ack()
        assert [message.value for message in received] == ["0", "1", "2", "3", "4"]
        assert client.xpending(stream, "g")["pending"] == 0
    finally:
        client.delete(stream)
        client.close()


async def test_an_opened_source_is_an_observable_inside_a_chain(tmp_path: Path) -> None:
    first, second = tmp_path / "a.txt", tmp_path / "b.txt"
    first.write_text("a1\na2\n")
    second.write_text("b1\n")
    async with read_file(first) as a, read_file(second) as b:
        merged = ops.flat_map(
            lambda path: from_async_iterable(a if path == "a" else b).pipe(
                ops.map(lambda message: message.value)
            )
        )
        async with open_pipe(reactivex.from_iterable(["a", "b"]), merged, overflow="error") as pipe:
            lines = [line async for line in pipe]
    assert sorted(lines) == ["a1", "a2", "b1"]
