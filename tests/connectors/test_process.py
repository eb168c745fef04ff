"""Subprocesses and stdio: records in and out of real child processes; failures name the
command, its exit code and its stderr; no child outlives its source or sink."""

from __future__ import annotations

import os
import shlex
import signal
import sys
from pathlib import Path

import anyio
import pytest

from rxflow.connectors._framed_sources import RUN_LIMIT
from rxflow.connectors.process import (
    ProcessFailedError,
    process_sink,
    process_source,
    stdin_source,
    stdout_sink,
)
from rxflow.errors import DecodeError
from tests.connectors.support import runs_of, values_through_a_bounded_pipe

pytestmark = pytest.mark.anyio

PYTHON = sys.executable


def python(code: str) -> list[str]:
    return [PYTHON, "-c", code]


def assert_reaped(pid: int) -> None:
    """The child has exited and its parent collected it: not running, not a zombie."""
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # not our child any more: already reaped
    assert not os.path.exists(f"/proc/{pid}")


async def test_process_source_reads_stdout_records() -> None:
    command = python("import sys\nfor n in range(1000): print(n)\nsys.stderr.write('warning')")
    async with process_source(command) as lines:
        with anyio.fail_after(10):
            messages = [message async for message in lines]
    assert [int(m.value) for m in messages] == list(range(1000))
    assert messages[0].key == shlex.join(command)
    assert lines.returncode == 0
    assert lines.stderr == b"warning"
    assert_reaped(lines.pid)


async def test_a_failing_command_names_itself_its_code_and_its_stderr_after_its_records() -> None:
    code = "import sys; print('a'); print('b'); sys.stderr.write('x' * 9000 + 'disk full'); exit(3)"
    received = []
    async with process_source(python(code)) as lines:
        with anyio.fail_after(10), pytest.raises(ProcessFailedError) as raised:
            async for message in lines:
                received.append(message.value)
    assert received == ["a", "b"]
    error = raised.value
    assert error.returncode == 3
    assert str(error).startswith(f"command {PYTHON} -c ")
    assert "exited with code 3; its stderr ends with:\n" in str(error)
    assert str(error).endswith("disk full")
    assert len(error.stderr) == 4096  # only the tail is kept
    assert_reaped(lines.pid)


async def test_leaving_early_terminates_the_command_and_reaps_it() -> None:
    command = python("import time\nprint('ready', flush=True)\ntime.sleep(600)")
    async with process_source(command) as lines:
        with anyio.fail_after(10):
            async for _ in lines:
                break
    assert lines.returncode == -signal.SIGTERM
    assert_reaped(lines.pid)


async def test_cancelling_a_blocked_read_kills_a_stubborn_command() -> None:
    # It ignores SIGTERM: after terminate_timeout it gets SIGKILL.
    command = python(
        "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('ready', flush=True)\ntime.sleep(600)"
    )
    with anyio.move_on_after(10) as scope:
        async with process_source(command, terminate_timeout=0.2) as lines:
            iterator = aiter(lines)
            await anext(iterator)
            scope.cancel()
            await anext(iterator)  # blocked on the pipe until cancelled
    assert scope.cancel_called
    assert lines.returncode == -signal.SIGKILL
    assert_reaped(lines.pid)


async def test_decode_policies_on_process_output() -> None:
    command = python("print('{\"n\": 1}'); print('nope'); print('{\"n\": 2}')")
    async with process_source(command, codec="json", on_decode_error="skip") as records:
        with anyio.fail_after(10):
            assert [m.value async for m in records] == [{"n": 1}, {"n": 2}]
    assert records.decoder.skipped == 1
    async with process_source(command, codec="json") as records:
        with anyio.fail_after(10), pytest.raises(DecodeError, match="process:"):
            async for _ in records:
                pass
    assert_reaped(records.pid)


async def test_process_sink_writes_stdin_and_confirms_a_clean_exit(tmp_path: Path) -> None:
    out = tmp_path / "copy.txt"
    copy = python(f"import sys, shutil; shutil.copyfileobj(sys.stdin, open({str(out)!r}, 'w'))")
    async with process_sink(copy, encoder="json") as sink:
        await sink.send_batch([{"n": n} for n in range(100)])
        await sink.send({"n": "last"})
        assert sink.sent == 101
    lines = out.read_text().splitlines()
    assert lines[0] == '{"n":0}'
    assert lines[-1] == '{"n":"last"}'
    assert len(lines) == 101


async def test_process_sink_of_a_failing_command() -> None:
    quits = python("import sys; sys.stderr.write('no input wanted'); sys.exit(2)")
    with anyio.fail_after(10), pytest.raises(ProcessFailedError, match="no input wanted") as raised:
        async with process_sink(quits, encoder="bytes") as sink:
            while True:  # until the pipe breaks
                await sink.send(b"x" * 65536)
    assert raised.value.returncode == 2
    # A clean input, but the command fails at the end: the sink says so when it closes.
    fails_late = python("import sys; sys.stdin.read(); sys.exit(5)")
    with anyio.fail_after(10), pytest.raises(ProcessFailedError, match="exited with code 5"):
        async with process_sink(fails_late) as sink:
            await sink.send("ok")


async def test_stdio_of_an_rxflow_program_in_a_shell_pipeline(
    tmp_path: Path, anyio_backend: str
) -> None:
    """A child runs stdin_source -> stdout_sink, fed through a pipe (process_sink) and
    through a file (process_source with stdin=file): both ways of reading stdin."""
    upper = (
        "import anyio, sys\n"
        "from rxflow.connectors.process import stdin_source, stdout_sink\n"
        "async def main():\n"
        "    async with stdin_source() as lines, stdout_sink(batch_size=10) as out:\n"
        "        async for line in lines:\n"
        "            await out.send(line.value.upper())\n"
        f"anyio.run(main, backend={anyio_backend!r})\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    output = tmp_path / "out.txt"
    with output.open("wb") as out_file, anyio.fail_after(20):
        async with process_sink(python(upper), stdout=out_file, env=env) as sink:
            await sink.send_batch(["one", "two"])
    assert output.read_text() == "ONE\nTWO\n"
    with output.open("rb") as in_file, anyio.fail_after(20):
        async with process_source(python(upper), stdin=in_file, env=env) as lines:
            assert [m.value async for m in lines] == ["ONE", "TWO"]


async def test_process_source_hands_over_runs_then_the_exit_code() -> None:
    command = python("import sys\nfor n in range(1000): print(n)\nsys.exit(3)")
    async with process_source(command) as lines:
        with anyio.fail_after(10), pytest.raises(ProcessFailedError, match="code 3"):
            await runs_of(lines)  # the records first, in runs; then the failure
    async with process_source(command) as lines:
        runs = []
        with anyio.fail_after(10), pytest.raises(ProcessFailedError):
            while True:
                runs.append(await lines.next_run())
    assert [int(m.value) for run in runs for m in run] == list(range(1000))
    assert len(runs) < 1000  # a read of many lines is one run
    assert max(len(run) for run in runs) <= RUN_LIMIT


async def test_a_pipe_over_a_process_source_bounds_its_buffer_in_items() -> None:
    command = python("for n in range(5000): print(n)")
    with anyio.fail_after(10):
        async with process_source(command) as lines:
            values = await values_through_a_bounded_pipe(lines, bound=8)
    assert values == [str(n) for n in range(5000)]


async def test_a_sinks_codec_still_works_as_encoder_with_a_deprecation_warning() -> None:
    with pytest.warns(DeprecationWarning, match="codec= is deprecated; pass encoder='json'"):
        async with process_sink(python("import sys; sys.stdin.read()"), codec="json") as sink:
            await sink.send({"n": 1})
    read_end, write_end = os.pipe()
    try:
        with pytest.warns(DeprecationWarning, match=f"fd:{write_end}: codec= is deprecated"):
            async with stdout_sink(fd=write_end, codec="bytes") as out:
                await out.send(b"raw")
        assert os.read(read_end, 100) == b"raw\n"
    finally:
        os.close(read_end)
        os.close(write_end)


async def test_stdin_source_hands_over_what_one_read_got_as_a_run() -> None:
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, b"one\ntwo\nthree\n")
        os.close(write_end)
        write_end = -1
        async with stdin_source(fd=read_end) as lines:
            with anyio.fail_after(10):
                runs = await runs_of(lines)
        assert [[m.value for m in run] for run in runs] == [["one", "two", "three"]]
    finally:
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)


async def test_stdin_source_on_a_pipe_is_cancellable_and_stdout_sink_writes_whole_batches() -> None:
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, b"first\n")
        with anyio.move_on_after(10) as scope:
            async with stdin_source(fd=read_end) as lines:
                iterator = aiter(lines)
                assert (await anext(iterator)).value == "first"
                scope.cancel()
                await anext(iterator)  # waits on the pipe: a thread could not be stopped
        assert scope.cancel_called
        os.write(write_end, b"second\n")  # the descriptor is still open and usable
        async with stdout_sink(fd=write_end, encoder="bytes", framing="length") as out:
            await out.send_batch([b"abc", b"de"])
        assert os.read(read_end, 100) == b"second\n\x00\x00\x00\x03abc\x00\x00\x00\x02de"
    finally:
        os.close(read_end)
        os.close(write_end)


async def test_bad_arguments_say_what_to_do() -> None:
    with pytest.raises(TypeError, match="command must be a non-empty list"):
        async with process_source([]):
            pass
    with pytest.raises(FileNotFoundError, match="cannot run no-such-command-rxflow"):
        async with process_source(["no-such-command-rxflow"]):
            pass
    with pytest.raises(ValueError, match="unknown framing"):
        async with process_sink(["cat"], framing="xml"):  # type: ignore[arg-type]
            pass
    with pytest.raises(ValueError, match="batch_size must be an int of 1 or more"):
        async with stdout_sink(batch_size=-1):
            pass
