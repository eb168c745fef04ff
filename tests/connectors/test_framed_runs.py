"""Byte-stream sources decode each read as one run: the records and offsets are the same
however the bytes are cut, a failing record inside a run gets its decode policy without
its neighbours decoded twice, and a run larger than a pipe's buffer still enters it within
the bound. Files and TCP, both backends."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.abc import SocketAttribute, SocketStream
from hypothesis import given, settings
from hypothesis import strategies as st

from rxflow.connectors.codecs import DecodeFailure
from rxflow.connectors.files import read_file
from rxflow.connectors.sockets import tcp_source
from rxflow.errors import DecodeError
from tests.connectors.support import values_through_a_bounded_pipe

pytestmark = pytest.mark.anyio

BACKENDS = ("asyncio", "trio")


def expected_records(data: bytes, limit: int) -> list[tuple[str, int, int, int]]:
    """What reading ``data`` as lines (``max_line_length=limit``, text, skipping what fails)
    must give, worked out line by line: (value, offset, next_offset, line)."""
    records = []
    pieces = data.split(b"\n")
    last = pieces.pop()
    position = 0
    for number, raw in enumerate([*pieces, last] if last else pieces, start=1):
        end = min(position + len(raw) + 1, len(data))  # a last line may have no newline
        text = raw[:-1] if raw.endswith(b"\r") else raw
        if len(raw) <= limit:
            with contextlib.suppress(UnicodeDecodeError):  # else skipped
                records.append((text.decode(), position, end, number))
        position = end
    return records


async def read_records(path: str, read_size: int, limit: int) -> tuple[list[Any], Any]:
    async with read_file(
        path, read_size=read_size, max_line_length=limit, on_decode_error="skip"
    ) as lines:
        got = [
            (
                m.value,
                int(m.headers["offset"]),
                int(m.headers["next_offset"]),
                int(m.headers["line"]),
            )
            async for m in lines
        ]
        return got, lines.decoder


LINES = st.lists(
    st.one_of(
        st.binary(max_size=12).filter(lambda b: b"\n" not in b),  # odd bytes: bad UTF-8
        st.text(alphabet="aé€\r", max_size=12).map(str.encode),  # multi-byte, CR
    ),
    max_size=30,
)


@settings(max_examples=60, deadline=None)
@given(lines=LINES, end=st.sampled_from([b"", b"\n"]), read_size=st.integers(1, 40))
def test_records_and_offsets_are_the_same_however_the_reads_cut_them(
    lines: list[bytes], end: bytes, read_size: int
) -> None:
    """Lines cut across reads (a multi-byte character too), CRLF, over-long lines and
    undecodable ones inside a run: every record, its offsets and its line number are those
    of the bytes, whatever the read size, on both backends."""
    data = b"\n".join(lines) + end
    limit = 8
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "lines.txt")
        Path(path).write_bytes(data)
        want = expected_records(data, limit)
        for backend in BACKENDS:
            got, decoder = anyio.run(read_records, path, read_size, limit, backend=backend)
            assert got == want
            assert decoder.decoded == len(want)
            records = data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)
            assert decoder.decoded + decoder.skipped == records  # each record once


# -- a failing record inside one read --------------------------------------------------------


def numbers_with_a_bad_one(count: int, bad: int) -> str:
    return "".join("{oops\n" if n == bad else f"{n}\n" for n in range(count))


async def test_a_failure_inside_a_read_ends_its_run_after_the_records_before_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "numbers.jsonl"
    path.write_text(numbers_with_a_bad_one(300, 200))  # one read: runs of 128
    async with read_file(path, codec="json") as numbers:
        runs = [await numbers.next_run(), await numbers.next_run()]
        assert [len(run) for run in runs] == [128, 72]
        assert [m.value for run in runs for m in run] == list(range(200))
        with pytest.raises(DecodeError, match="could not be decoded"):
            await numbers.next_run()
        with pytest.raises(StopAsyncIteration):
            await numbers.next_run()
        assert numbers.decoder.decoded == 200  # the run's good records, counted once


@pytest.mark.parametrize("policy", ["skip", "dead_letter"])
async def test_a_record_set_aside_inside_a_read_keeps_its_neighbours_and_their_offsets(
    tmp_path: Path, policy: str
) -> None:
    path = tmp_path / "numbers.jsonl"
    path.write_text(numbers_with_a_bad_one(300, 200))
    letters: list[DecodeFailure] = []
    options: dict[str, Any] = {"on_decode_error": policy}
    if policy == "dead_letter":
        options["dead_letter"] = letters.append
    async with read_file(path, codec="json", **options) as numbers:
        messages = [m async for m in numbers]
        decoder = numbers.decoder
    assert [m.value for m in messages] == [n for n in range(300) if n != 200]
    after = messages[200]  # the record after the bad one
    assert (after.headers["line"], after.headers["offset"]) == (
        "202",
        str(path.read_text().index("201\n")),
    )
    assert (decoder.decoded, decoder.skipped, decoder.dead_lettered) == (
        (299, 1, 0) if policy == "skip" else (299, 0, 1)
    )
    if policy == "dead_letter":
        assert [letter.data for letter in letters] == [b"{oops"]


async def test_a_codec_function_is_called_once_per_record_even_when_one_fails(
    tmp_path: Path,
) -> None:
    """A user's codec may count or log: a run with a failing record is not decoded twice."""
    path = tmp_path / "numbers.txt"
    path.write_text(numbers_with_a_bad_one(300, 150))
    calls: list[bytes] = []

    def parse(data: bytes) -> int:
        calls.append(data)
        return int(data)

    async with read_file(path, codec=parse, on_decode_error="skip") as numbers:
        assert [m.value async for m in numbers] == [n for n in range(300) if n != 150]
    assert len(calls) == 300


# -- TCP: the same over a socket -------------------------------------------------------------


@asynccontextmanager
async def serving(payload: bytes) -> AsyncIterator[int]:
    """A server on a free port that sends ``payload`` to each client, then closes."""

    async def send(stream: SocketStream) -> None:
        async with stream:
            await stream.send(payload)

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    async with listener, anyio.create_task_group() as tasks:
        tasks.start_soon(listener.serve, send)
        yield listener.extra(SocketAttribute.local_port)
        tasks.cancel_scope.cancel()


@pytest.mark.parametrize("policy", ["raise", "skip", "dead_letter"])
async def test_tcp_records_with_a_bad_one_under_each_policy(policy: str) -> None:
    payload = numbers_with_a_bad_one(1000, 700).encode()
    letters: list[DecodeFailure] = []
    options: dict[str, Any] = {"on_decode_error": policy}
    if policy == "dead_letter":
        options["dead_letter"] = letters.append
    got: list[Any] = []
    async with (
        serving(payload) as port,
        tcp_source("127.0.0.1", port, codec="json", **options) as records,
    ):
        if policy == "raise":
            with pytest.raises(DecodeError):
                async for message in records:
                    got.append(message.value)
        else:
            got = [message.value async for message in records]
        decoder = records.decoder
    if policy == "raise":
        assert got == list(range(700))
        assert decoder.decoded >= 700  # records after the bad one may be decoded, never given
    else:
        assert got == [n for n in range(1000) if n != 700]
        assert decoder.decoded == 999
        assert decoder.skipped + decoder.dead_lettered == 1
        assert [letter.data for letter in letters] == ([b"{oops"] if letters else [])


async def test_a_tcp_read_larger_than_the_pipe_buffer_enters_it_within_the_bound() -> None:
    payload = "".join(f"{n}\n" for n in range(20_000)).encode()  # reads of thousands of lines
    async with serving(payload) as port, tcp_source("127.0.0.1", port, codec="text") as lines:
        with anyio.fail_after(30):
            values = await values_through_a_bounded_pipe(lines, bound=8)
    assert values == [str(n) for n in range(20_000)]


async def test_a_file_run_with_a_skipped_record_through_a_small_pipe(tmp_path: Path) -> None:
    path = tmp_path / "numbers.jsonl"
    path.write_text(numbers_with_a_bad_one(5000, 2500))  # one read, runs of 128
    async with read_file(path, codec="json", on_decode_error="skip") as numbers:
        with anyio.fail_after(30):
            values = await values_through_a_bounded_pipe(numbers, bound=3)
    assert values == [n for n in range(5000) if n != 2500]
