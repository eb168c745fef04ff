"""Files: read, follow (tail -F: growth, truncation, rotation), write; framing and decode
policies; files closed on cancellation."""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import AsyncIterator
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import anyio
import pytest
import trio.testing
from hypothesis import given
from hypothesis import strategies as st
from reactivex import operators as ops

import rxflow
from rxflow.connectors import Message
from rxflow.connectors._framing import LengthFramer, LineFramer, make_writer
from rxflow.connectors.codecs import DecodeFailure, encode_bytes, encode_text
from rxflow.connectors.files import file_sink, follow_file, read_file
from rxflow.errors import DecodeError
from tests.connectors.support import values_through_a_bounded_pipe

pytestmark = pytest.mark.anyio


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


async def values(messages: Any) -> list[Any]:
    return [message.value async for message in messages]


# -- framing, directly -----------------------------------------------------------------------


def test_lines_across_chunks_with_offsets() -> None:
    framer = LineFramer(max_line_length=10)
    frames = [
        *framer.feed(b"ab"),
        *framer.feed(b"c\r\nde\nf"),
        *framer.feed(b"g\n"),
        *framer.finish(),
    ]
    assert frames == [(b"abc", 5), (b"de", 8), (b"fg", 11)]


def test_an_over_long_line_is_reported_once_and_its_bytes_are_not_kept() -> None:
    framer = LineFramer(max_line_length=4)
    frames = framer.feed(b"ok\n0123456789")  # too long before its end arrived
    assert frames[0] == (b"ok", 3)
    assert "max_line_length=4" in frames[1][0].reason  # type: ignore[union-attr]
    assert framer.feed(b"x" * 100_000) == []  # still the same line: dropped as it comes
    assert framer.feed(b"yy\nnext\n") == [(b"next", 3 + 10 + 100_000 + 3 + 5)]


def test_length_prefixed_frames_skip_an_oversized_one_without_buffering_it() -> None:
    write = make_writer("length", encode_bytes, where="t")
    data = write([b"one", b"x" * 50, b"three"])
    framer = LengthFramer(max_frame_size=10)
    frames = [frame for byte in range(len(data)) for frame in framer.feed(data[byte : byte + 1])]
    assert [f for f, _ in frames][0::2] == [b"one", b"three"]
    assert "max_frame_size=10" in frames[1][0].reason  # type: ignore[union-attr]
    assert frames[-1][1] == len(data)
    assert len(framer._buffer) == 0
    framer.feed(b"\x00\x00\x00\x09abc")
    assert "ended inside a frame: got 7 of 9 + 4" in framer.finish()[0][0].reason  # type: ignore[union-attr]


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(cut % (len(data) + 1) for cut in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


@given(st.lists(st.binary(max_size=12), max_size=20), st.lists(st.integers(0, 500), max_size=8))
def test_lines_are_the_same_however_the_bytes_are_cut(lines: list[bytes], cuts: list[int]) -> None:
    lines = [line.replace(b"\n", b"") for line in lines]
    data = b"\n".join(lines)
    framer = LineFramer(max_line_length=1000)
    frames = [frame for chunk in chunked(data, cuts) for frame in framer.feed(chunk)]
    frames += framer.finish()
    expected = [line[:-1] if line.endswith(b"\r") else line for line in lines]
    if data.endswith(b"\n") or not lines or lines[-1] == b"":
        expected = expected[:-1]  # nothing after the last newline: no last record
    assert [line for line, _ in frames] == expected
    assert [end for _, end in frames] == [
        min(len(data), sum(len(line) + 1 for line in lines[: n + 1])) for n in range(len(frames))
    ]


@given(st.lists(st.binary(max_size=30), max_size=20), st.lists(st.integers(0, 900), max_size=8))
def test_length_prefixed_frames_are_the_same_however_the_bytes_are_cut(
    records: list[bytes], cuts: list[int]
) -> None:
    data = make_writer("length", encode_bytes, where="t")(records)
    framer = LengthFramer(max_frame_size=30)
    frames = [frame for chunk in chunked(data, cuts) for frame in framer.feed(chunk)]
    assert [record for record, _ in frames] == records
    assert framer.finish() == []


def test_writers_refuse_what_would_break_the_framing() -> None:
    with pytest.raises(ValueError, match="contains a newline"):
        make_writer("lines", encode_text, where="t")(["a\nb"])
    with pytest.raises(TypeError, match="'text' writes str"):
        make_writer("lines", encode_text, where="t")([b"bytes"])
    with pytest.raises(ValueError, match="unknown framing 'line'"):
        make_writer("line", encode_text, where="t")


# -- read_file -------------------------------------------------------------------------------


async def test_read_file_lines_with_offsets_and_resume(tmp_path: Path) -> None:
    path = tmp_path / "log.txt"
    path.write_bytes(b"alpha\nbeta\r\ngamma")  # CRLF, and no final newline
    async with read_file(path) as lines:
        messages = [message async for message in lines]
    assert [m.value for m in messages] == ["alpha", "beta", "gamma"]
    assert [dict(m.headers) for m in messages] == [
        {"offset": "0", "next_offset": "6", "line": "1"},
        {"offset": "6", "next_offset": "12", "line": "2"},
        {"offset": "12", "next_offset": "17", "line": "3"},
    ]
    assert {m.key for m in messages} == {str(path)}
    resume = int(messages[0].headers["next_offset"])
    async with read_file(path, start_offset=resume) as lines:
        assert await values(lines) == ["beta", "gamma"]


async def test_file_sink_then_read_file_round_trip_in_every_framing(tmp_path: Path) -> None:
    records = [{"n": n, "text": "ünïcode\nnewline"} for n in range(1000)]
    for framing in ("lines", "length"):
        path = tmp_path / f"out.{framing}"
        async with file_sink(path, framing=framing, encoder="json", batch_size=100) as sink:
            assert sink.batch_size == 100
            for start in range(0, 1000, 100):
                await sink.send_batch(records[start : start + 100])
            await sink.send(Message({"n": "last"}))  # a message: its value
        async with read_file(path, framing=framing, codec="json") as read:
            assert await values(read) == [*records, {"n": "last"}]
    async with file_sink(tmp_path / "raw", framing="chunks", encoder="bytes", fsync=False) as sink:
        await sink.send_batch([b"ab", b"cd"])
    assert (tmp_path / "raw").read_bytes() == b"abcd"


async def test_file_sink_appends_or_replaces(tmp_path: Path) -> None:
    path = tmp_path / "out.txt"
    path.write_text("old\n")
    async with file_sink(path) as sink:
        await sink.send("new")
    assert path.read_text() == "old\nnew\n"
    async with file_sink(path, append=False) as sink:
        await sink.send("only")
    assert path.read_text() == "only\n"


def as_int(message: Message[str]) -> int:
    return int(message.value)


def is_even(n: int) -> bool:
    return n % 2 == 0


async def test_read_file_through_a_pipe(tmp_path: Path) -> None:
    path = tmp_path / "numbers.txt"
    path.write_text("".join(f"{n}\n" for n in range(10_000)))
    async with (
        read_file(path, read_size=4096) as lines,
        rxflow.open_pipe(lines, ops.map(as_int), ops.filter(is_even)) as pipe,
    ):
        assert [n async for n in pipe] == list(range(0, 10_000, 2))


def doubled(message: Message[dict[str, int]]) -> dict[str, int]:
    return {"n": message.value["n"] * 2}


async def test_a_flow_from_a_file_to_a_file(tmp_path: Path) -> None:
    source, target = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_text("".join(f'{{"n": {n}}}\n' for n in range(1000)))
    # fsync=False: the flow hands over what is waiting, often one item, and an fsync each
    # would make this test slow, not more telling.
    async with file_sink(target, encoder="json", batch_size=64, fsync=False) as sink:
        flow = rxflow.Flow("copy").source(read_file(source, codec="json"))
        await flow.pipe(ops.map(doubled)).sink(sink).run()
    assert target.read_text() == "".join(f'{{"n":{n * 2}}}\n' for n in range(1000))


@pytest.mark.parametrize("policy", ["raise", "skip", "dead_letter"])
async def test_decode_policies_including_an_over_long_line(tmp_path: Path, policy: str) -> None:
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b'{"n": 1}\n{oops\n' + b'"' + b"x" * 5000 + b'"\n{"n": 2}\n')
    dead: list[DecodeFailure] = []
    options: dict[str, Any] = {"on_decode_error": policy}
    if policy == "dead_letter":
        options["dead_letter"] = dead.append
    async with read_file(path, codec="json", max_line_length=100, **options) as lines:
        if policy == "raise":
            received = []
            with pytest.raises(DecodeError, match=r"file:.*mixed.jsonl: record") as raised:
                async for message in lines:
                    received.append(message.value)
            assert received == [{"n": 1}]
            assert isinstance(raised.value.__cause__, json.JSONDecodeError)
            return
        assert await values(lines) == [{"n": 1}, {"n": 2}]
    if policy == "skip":
        assert (lines.decoder.skipped, lines.decoder.decoded) == (2, 2)
    else:
        assert lines.decoder.dead_lettered == 2
        assert dead[0].data == b"{oops"
        assert "max_line_length=100" in str(dead[1].error)
        assert dead[1].data == b'"' + b"x" * 39  # only the first bytes are kept
        assert dead[1].key == str(path)


async def test_bad_arguments_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown framing"):
        async with read_file(tmp_path / "x", framing="line"):  # type: ignore[arg-type]
            pass
    with pytest.raises(ValueError, match="max_line_length must be an int of 1 or more"):
        async with read_file(tmp_path / "x", max_line_length=0):
            pass
    with pytest.raises(ValueError, match="start_offset must be an int of 0 or more"):
        async with read_file(tmp_path / "x", start_offset=-1):
            pass
    with pytest.raises(ValueError, match="poll_interval must be more than 0 seconds"):
        async with follow_file(tmp_path / "x", poll_interval=0):
            pass
    with pytest.raises(ValueError, match="unknown encoder 'yaml'"):
        async with file_sink(tmp_path / "x", encoder="yaml"):  # type: ignore[arg-type]
            pass
    with pytest.raises(FileNotFoundError):
        async with read_file(tmp_path / "missing"):
            pass


async def test_an_unknown_option_is_refused_by_name(tmp_path: Path) -> None:
    (tmp_path / "x").write_text("a\n")
    with pytest.raises(TypeError, match="unexpected keyword argument 'framming'; the options"):
        async with read_file(tmp_path / "x", framming="lines"):  # type: ignore[call-arg]
            pass
    with pytest.raises(TypeError, match="unexpected keyword argument 'fsynk'"):
        async with file_sink(tmp_path / "y", fsynk=False):  # type: ignore[call-arg]
            pass


async def test_a_sinks_codec_still_works_as_encoder_with_a_deprecation_warning(
    tmp_path: Path,
) -> None:
    path = tmp_path / "out.jsonl"
    with pytest.warns(DeprecationWarning, match=r"codec= is deprecated; pass encoder='json'"):
        async with file_sink(path, codec="json", fsync=False) as sink:
            await sink.send({"n": 1})
    assert path.read_text() == '{"n":1}\n'
    with pytest.raises(TypeError, match="pass only encoder="):
        async with file_sink(path, codec="json", encoder="json"):
            pass


# -- runs ------------------------------------------------------------------------------------


async def test_read_file_hands_over_each_read_as_a_run(tmp_path: Path) -> None:
    path = tmp_path / "numbers.txt"
    path.write_text("".join(f"{n}\n" for n in range(100)))  # 290 bytes
    async with read_file(path, read_size=100) as lines:
        runs = []
        with pytest.raises(StopAsyncIteration):
            while True:
                runs.append([int(m.value) for m in await lines.next_run()])
    assert [n for run in runs for n in run] == list(range(100))
    assert len(runs) == 3  # a run per read of 100 bytes (a line cut by a read waits for it)
    async with read_file(path) as lines:
        first, second = await anext(lines), await anext(lines)
        rest = await lines.next_run()  # what is left of the run the two came from
        assert [first.value, second.value, rest[0].value, rest[-1].value] == ["0", "1", "2", "99"]
        assert [m.headers["line"] for m in rest[:2]] == ["3", "4"]
        assert [m async for m in lines] == []


async def test_a_decode_failure_ends_a_run_and_comes_in_the_next_call(tmp_path: Path) -> None:
    path = tmp_path / "mixed.jsonl"
    path.write_text("1\n2\n{oops\n4\n")
    async with read_file(path, codec="json") as numbers:
        assert [m.value for m in await numbers.next_run()] == [1, 2]
        with pytest.raises(DecodeError, match="could not be decoded"):
            await numbers.next_run()
        with pytest.raises(StopAsyncIteration):
            await numbers.next_run()  # the stream ended with its error, as a generator does
    async with read_file(path, codec="json") as numbers:
        assert [await anext(numbers) for _ in range(2)][1].value == 2
        with pytest.raises(DecodeError):
            await anext(numbers)


async def test_a_pipe_over_a_file_source_bounds_its_buffer_in_items(tmp_path: Path) -> None:
    """One read is thousands of lines (runs of RUN_LIMIT); the pipe still admits at most
    its bound of them ahead of a slow consumer."""
    path = tmp_path / "numbers.txt"
    path.write_text("".join(f"{n}\n" for n in range(5000)))  # ~24 KiB: one read
    with deadline():
        async with read_file(path) as lines:
            values = await values_through_a_bounded_pipe(lines, bound=8)
    assert values == [str(n) for n in range(5000)]
    target = tmp_path / "followed.txt"
    target.write_text("".join(f"{n}\n" for n in range(3000)))
    with deadline():
        async with follow_file(target) as followed:  # never ends by itself
            values = await values_through_a_bounded_pipe(followed, bound=8, count=3000)
    assert values == [str(n) for n in range(3000)]


async def test_cancelling_a_read_closes_the_file(tmp_path: Path) -> None:
    path = tmp_path / "big.txt"
    path.write_text("line\n" * 100_000)
    before = open_fds()
    with anyio.CancelScope() as scope:
        async with read_file(path) as lines:
            async for _ in lines:
                assert len(open_fds() - before) == 1
                scope.cancel()
                await anyio.sleep(1)  # cancelled at once
    assert scope.cancelled_caught
    assert open_fds() == before


# -- follow_file: asyncio with a short real poll, trio in virtual time -----------------------


@pytest.fixture(
    params=[
        pytest.param(("asyncio", {}), id="asyncio"),
        pytest.param(
            ("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)}), id="trio-mockclock"
        ),
    ]
)
def follow_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def anyio_backend(follow_backend: tuple[str, dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    # Module-wide: every test here runs on asyncio and on trio (in virtual time).
    return follow_backend


def deadline() -> AbstractContextManager[Any]:
    """A generous real-time guard on asyncio. Under trio's MockClock a timeout would fire at
    once (the clock jumps while a worker thread reads), and the test cannot wait for real."""
    try:
        import sniffio

        if sniffio.current_async_library() == "trio":
            return nullcontext()
    except Exception:  # pragma: no cover
        pass
    return anyio.fail_after(10)


def poll_interval() -> float:
    # Under MockClock a poll costs no real time, so use a realistic one; on asyncio, short.
    import sniffio

    return 1.0 if sniffio.current_async_library() == "trio" else 0.01


@pytest.fixture
def appender(tmp_path: Path) -> Any:
    path = tmp_path / "app.log"

    def append(text: str, target: Path = path) -> None:
        with target.open("a") as file:
            file.write(text)

    return path, append


async def next_values(iterator: AsyncIterator[Any], count: int) -> list[Any]:
    with deadline():
        return [(await anext(iterator)).value for _ in range(count)]


async def test_follow_reads_appends_and_waits_for_a_partial_line(appender: Any) -> None:
    path, append = appender
    append("one\n")
    async with follow_file(path, poll_interval=poll_interval()) as lines:
        iterator = aiter(lines)
        assert await next_values(iterator, 1) == ["one"]
        append("tw")  # half a line: not a record yet
        started = anyio.current_time()
        append("o\nthree\n")
        assert await next_values(iterator, 2) == ["two", "three"]
        assert anyio.current_time() - started < 10


async def test_follow_from_end_skips_what_was_there(appender: Any) -> None:
    path, append = appender
    append("old\n" * 3)
    async with follow_file(path, from_end=True, poll_interval=poll_interval()) as lines:
        iterator = aiter(lines)
        append("new\n")
        with deadline():
            messages = [await anext(iterator)]
        assert messages[0].value == "new"
        assert messages[0].headers["offset"] == "12"


async def test_follow_survives_truncation(appender: Any) -> None:
    path, append = appender
    append("a\nb\n")
    async with follow_file(path, poll_interval=poll_interval()) as lines:
        iterator = aiter(lines)
        assert await next_values(iterator, 2) == ["a", "b"]
        path.write_text("")  # truncated (copytruncate rotation)
        # Smaller than what was read (2 < 4 bytes), so the follower tells it from growth.
        append("c\n")
        with deadline():
            message = await anext(iterator)
        assert message.value == "c"
        assert message.headers["offset"] == "0"


async def test_follow_survives_rotation_and_reads_the_rest_of_the_old_file(
    appender: Any, tmp_path: Path
) -> None:
    path, append = appender
    append("1\n")
    async with follow_file(path, poll_interval=poll_interval()) as lines:
        iterator = aiter(lines)
        assert await next_values(iterator, 1) == ["1"]
        append("2\n3")  # the writer's last words, the last line without its newline
        path.rename(tmp_path / "app.log.1")
        append("4\n")  # a new file at the same path
        assert await next_values(iterator, 3) == ["2", "3", "4"]
        # And the new file keeps being followed.
        append("5\n")
        with deadline():
            message = await anext(iterator)
        assert (message.value, message.headers["offset"], message.headers["line"]) == (
            "5",
            "2",
            "2",
        )


async def test_follow_waits_for_a_missing_file(appender: Any) -> None:
    path, append = appender
    async with follow_file(path, poll_interval=poll_interval()) as lines:
        iterator = aiter(lines)
        async with anyio.create_task_group() as tasks:

            async def create_later() -> None:
                await anyio.sleep(poll_interval() * 2)
                append("born\n")

            tasks.start_soon(create_later)
            assert await next_values(iterator, 1) == ["born"]


async def test_cancelling_a_follow_closes_the_file(appender: Any) -> None:
    path, append = appender
    append("x\n")
    before = open_fds()
    with anyio.move_on_after(poll_interval() * 5) as scope:
        async with follow_file(path, poll_interval=poll_interval()) as lines:
            async for _ in lines:
                pass  # waits at the end of the file until cancelled
    assert scope.cancelled_caught
    assert open_fds() == before
