"""python -m rxflow run: loading a flow, progress on and off a terminal, logs, the first
interrupt drains (within --drain-timeout), the second aborts, a closed stdout, --serve."""

from __future__ import annotations

import fcntl
import importlib.metadata
import logging
import os
import re
import select
import signal
import struct
import subprocess
import sys
import termios
from pathlib import Path

import anyio
import httpx
import pyte
import pytest
import trio
import trio.testing
from anyio.abc import Process

from rxflow import Flow
from rxflow.flow.cli import EXIT_FAILED, main, run_flow, show_progress

FLOWS = """
import sys

import anyio
from reactivex import operators as ops
from rxflow import Flow

written = []

async def ticks(pause=0.001, count=None):
    n = 0
    while count is None or n < count:
        await anyio.sleep(pause)
        yield n
        n += 1

async def save(item):
    written.append(item)

def endless():
    return (Flow("endless").source(ticks(), name="ticks").pipe(ops.map(lambda n: n * 2))
            .sink(save, name="save"))

async def stubborn_sink(item):
    await anyio.sleep(3600)  # a drain would wait for this write forever

def stuck():
    return Flow("stuck").source(ticks()).sink(stubborn_sink)

def finite():
    return Flow("finite").source(range(5)).sink(save, name="save")

def failing():
    def explode(item):
        raise RuntimeError("sink exploded")
    return Flow("failing").source(range(5)).sink(explode)

def printing():
    return Flow("printing").source(ticks(0)).sink(lambda n: print(f"item {n}"))

def show(n):
    print(f"line {n}")  # the flow's own output, on stdout
    if n % 10 == 0:
        print(f"note {n}", file=sys.stderr)  # and on stderr

def chatty():
    return Flow("chatty").source(ticks(0.005, 60), name="src").sink(show)

not_a_flow = 42
"""

BACKENDS = pytest.mark.parametrize("backend", ["asyncio", "trio"])


@pytest.fixture
def anyio_backend() -> str:
    """Most tests drive a child process; the flow's backend is the child's ``--backend``."""
    return "asyncio"


def command(target: str, backend: str, *options: str) -> list[str]:
    return [sys.executable, "-m", "rxflow", "run", target, "--backend", backend, *options]


def child_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    (tmp_path / "flows.py").write_text(FLOWS)
    return {**os.environ, "PYTHONPATH": str(tmp_path), **extra}


async def start(tmp_path: Path, target: str, backend: str, *options: str) -> Process:
    return await anyio.open_process(
        command(target, backend, "--progress-every", "0.01", *options), env=child_env(tmp_path)
    )


async def read_until(process: Process, text: str) -> str:
    """stderr up to and including the first chunk that contains ``text``."""
    assert process.stderr is not None
    seen = ""
    async for chunk in process.stderr:
        seen += chunk.decode()
        if text in seen:
            return seen
    raise AssertionError(f"the process ended without printing {text!r}; it printed:\n{seen}")


async def run_to_end(tmp_path: Path, target: str, backend: str, *options: str) -> tuple[int, str]:
    """Exit status and stderr of a run that ends by itself."""
    with anyio.fail_after(60):  # a guard against a hung child, not a timing assertion
        async with await start(tmp_path, target, backend, *options) as process:
            assert process.stderr is not None
            output = b"".join([chunk async for chunk in process.stderr]).decode()
            return await process.wait(), output


@BACKENDS
@pytest.mark.anyio
async def test_first_interrupt_drains_the_flow(tmp_path: Path, backend: str) -> None:
    with anyio.fail_after(60):
        async with await start(tmp_path, "flows:endless", backend) as process:
            await read_until(process, "endless: ticks")  # a progress line: it runs
            process.send_signal(signal.SIGINT)
            rest = await read_until(process, "flow endless ended: ")
            assert await process.wait() == 0
    assert "SIGINT: stopping: draining the flow (interrupt again to abort)" in rest
    final = rest.rsplit("flow endless ended: ", 1)[1]
    # Everything the source handed over was written: "ticks N | pipe N | save N".
    ticks = int(final.split("ticks ")[1].split()[0])
    saved = int(final.split("save ")[1].split()[0])
    assert saved == ticks > 0
    # Off a terminal, lines are logged whole: no carriage return, no cursor control.
    assert "\r" not in rest
    assert "\x1b" not in rest


@BACKENDS
@pytest.mark.anyio
async def test_second_interrupt_aborts(tmp_path: Path, backend: str) -> None:
    with anyio.fail_after(60):
        async with await start(tmp_path, "flows:stuck", backend) as process:
            await read_until(process, "stuck:")
            process.send_signal(signal.SIGINT)
            await read_until(process, "draining")
            process.send_signal(signal.SIGINT)
            await read_until(process, "flow stuck aborted")
            assert await process.wait() == 130


@BACKENDS
@pytest.mark.anyio
async def test_a_drain_past_drain_timeout_aborts_and_exits_124(
    tmp_path: Path, backend: str
) -> None:
    with anyio.fail_after(60):
        async with await start(
            tmp_path, "flows:stuck", backend, "--drain-timeout", "0.2"
        ) as process:
            await read_until(process, "stuck:")
            process.send_signal(signal.SIGTERM)
            rest = await read_until(process, "drain-timeout")
            assert await process.wait() == 124
    assert "SIGTERM: stopping: draining the flow for at most 0.2s" in rest
    assert "the drain did not finish within drain_timeout=0.2s, so the flow was aborted" in rest
    assert "message(s) were left unacknowledged" in rest
    assert "the flow was aborted: its drain did not finish within --drain-timeout 0.2s" in rest


@BACKENDS
@pytest.mark.anyio
@pytest.mark.parametrize(
    ("target", "status", "message"),
    [
        ("flows:finite", 0, "flow finite ended: finite: source1 5 | pipe 5 | save 5"),
        ("flows:failing", 1, "flow failing failed: RuntimeError('sink exploded')"),
        ("flows:not_a_flow", 2, "gave 42, not an rxflow.Flow"),
        ("flows:missing", 2, "module 'flows' has no attribute 'missing'"),
        ("no_such_module:flow", 2, "cannot import 'no_such_module'"),
        ("flows", 2, "expected module:attribute"),
    ],
)
async def test_exit_status_and_message(
    tmp_path: Path, backend: str, target: str, status: int, message: str
) -> None:
    exit_status, output = await run_to_end(tmp_path, target, backend)
    assert exit_status == status
    assert message in output


@BACKENDS
@pytest.mark.anyio
async def test_a_failure_is_reported_once(tmp_path: Path, backend: str) -> None:
    status, output = await run_to_end(tmp_path, "flows:failing", backend)
    assert status == 1
    assert output.count("Traceback") == 1
    assert output.count("RuntimeError: sink exploded") == 1
    assert output.count(" ERROR ") == 1
    assert "rxflow: rxflow:" not in output


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
@pytest.mark.anyio
async def test_a_failure_is_one_error_record(caplog: pytest.LogCaptureFixture) -> None:
    def explode(item: int) -> None:
        raise RuntimeError("sink exploded")

    caplog.set_level(logging.DEBUG)
    status = await run_flow(Flow("failing").source(range(5)).sink(explode))
    assert status == EXIT_FAILED
    errors = [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert [record.getMessage() for record in errors] == [
        "flow failing failed: RuntimeError('sink exploded')"
    ]
    assert errors[0].exc_info is not None
    assert not [record for record in caplog.records if record.getMessage().startswith("rxflow")]


def test_version() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "rxflow", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stdout) == (0, f"rxflow {importlib.metadata.version('rxflow')}\n")


@pytest.mark.anyio
async def test_log_level_chooses_what_is_shown(tmp_path: Path) -> None:
    status, quiet = await run_to_end(tmp_path, "flows:finite", "asyncio", "--log-level", "WARNING")
    assert (status, quiet) == (0, "")
    status, chatty = await run_to_end(tmp_path, "flows:finite", "asyncio", "--log-level", "debug")
    assert status == 0
    assert " DEBUG " in chatty
    assert "flow finite ended" in chatty


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--log-level", "LOUD"], "--log-level: invalid choice: 'LOUD'"),
        (["--drain-timeout", "-1"], "--drain-timeout: expected seconds, 0 or more, got '-1'"),
        (["--drain-timeout", "soon"], "--drain-timeout: expected seconds, 0 or more, got 'soon'"),
        (["--progress-every", "nan"], "--progress-every: expected seconds, 0 or more, got 'nan'"),
        (["--serve", "9100"], "--serve: expected HOST:PORT (such as 127.0.0.1:9100"),
        (["--serve", "localhost:http"], "--serve: expected HOST:PORT"),
        (["--serve", "127.0.0.1:70000"], "--serve: expected HOST:PORT"),
    ],
)
def test_a_bad_option_is_refused_with_what_to_pass(
    options: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "flows:finite", *options])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


@BACKENDS
@pytest.mark.anyio
async def test_serve_exposes_metrics_and_probes(tmp_path: Path, backend: str) -> None:
    with anyio.fail_after(60):
        async with await start(
            tmp_path, "flows:endless", backend, "--serve", "127.0.0.1:0"
        ) as process:
            announced = await read_until(process, "serving /metrics and /health on ")
            port = int(re.findall(r"on 127\.0\.0\.1:(\d+)", announced)[0])
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                assert (await client.get("/health/live")).status_code == 200
                for _ in range(1000):  # ready once the flow has entered its source
                    ready = await client.get("/health/ready")
                    if ready.status_code == 200:
                        break
                    await anyio.sleep(0.01)
                assert (ready.status_code, ready.json()) == (200, {"ready": True})
                metrics = (await client.get("/metrics")).text
                assert (
                    'rxflow_stage_items_emitted_total{flow="endless",kind="sink",stage="save"}'
                    in metrics
                )
            process.send_signal(signal.SIGINT)
            assert await process.wait() == 0
        with pytest.raises(OSError, match="All connection attempts failed"):
            await anyio.connect_tcp("127.0.0.1", port)  # the server went with the process


@pytest.mark.anyio
async def test_serve_on_a_taken_port_is_a_usage_error(tmp_path: Path) -> None:
    with socket_listening() as port:
        status, output = await run_to_end(
            tmp_path, "flows:endless", "asyncio", "--serve", f"127.0.0.1:{port}"
        )
    assert status == 2
    assert f"cannot serve on 127.0.0.1:{port}: [Errno 98] Address already in use" in output
    assert "Traceback" not in output


@BACKENDS
def test_a_reader_that_closes_stdout_ends_the_run_quietly(tmp_path: Path, backend: str) -> None:
    """``rxflow run ... | head -1``: exit 141, as a shell reports for SIGPIPE, and no
    BrokenPipeError traceback."""
    read_end, write_end = os.pipe()
    process = subprocess.Popen(
        command("flows:printing", backend),
        stdout=write_end,
        stderr=subprocess.PIPE,
        env=child_env(tmp_path),
    )
    os.close(write_end)
    try:
        first = os.read(read_end, 100)
    finally:
        os.close(read_end)  # as head does once it has its line
    _, errors = process.communicate(timeout=60)
    assert first.startswith(b"item 0")
    assert process.returncode == 141
    text = errors.decode()
    assert "Traceback" not in text
    assert "BrokenPipeError" not in text
    assert "Exception ignored" not in text
    assert "flow printing ended" in text  # stopped gracefully: what it took, it wrote


def test_progress_is_shown_only_when_it_changed() -> None:
    """Off a terminal, an idle flow does not log the same progress line again and again
    (in virtual time: 100 ticks, three changes)."""
    changes_at = {0: "f: a 0", 10: "f: a 5", 60: "f: a 5 (backlog 1)"}
    shown: list[tuple[float, str]] = []

    async def main() -> None:
        line = ""

        def read() -> str:
            nonlocal line
            line = changes_at.get(round(trio.current_time()) - 1, line)
            return line

        with trio.move_on_after(100.5):
            await show_progress(read, 1.0, lambda text: shown.append((trio.current_time(), text)))

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert shown == [(1.0, "f: a 0"), (11.0, "f: a 5"), (61.0, "f: a 5 (backlog 1)")]


class socket_listening:
    """A loopback port that something already listens on."""

    def __enter__(self) -> int:
        import socket

        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen()
        port: int = self.socket.getsockname()[1]
        return port

    def __exit__(self, *exc_info: object) -> None:
        self.socket.close()


def run_in_terminal(
    tmp_path: Path, target: str, backend: str, columns: int = 120
) -> tuple[int, bytes]:
    """Run the CLI with stdout and stderr on a pseudo-terminal, as in a person's shell;
    return its exit status and every byte it wrote there."""
    env = child_env(tmp_path, COLUMNS=str(columns), LINES="40", TERM="xterm-256color")
    for variable in ("NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
        env.pop(variable, None)
    main, child = os.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    process = subprocess.Popen(
        command(target, backend, "--progress-every", "0.01"),
        stdin=child,
        stdout=child,
        stderr=child,
        env=env,
    )
    os.close(child)
    output = bytearray()
    try:
        for _ in range(600):  # at most a minute: a guard against a hung child
            readable, _, _ = select.select([main], [], [], 0.1)
            if readable:
                try:
                    chunk = os.read(main, 65536)
                except OSError:  # EIO: every writer closed the terminal
                    break
                if not chunk:
                    break
                output += chunk
            elif process.poll() is not None:
                break
        status = process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(main)
    return status, bytes(output)


def screen_lines(output: bytes, columns: int = 120) -> list[str]:
    """What a person sees: the terminal's lines after all of ``output``, blank ones left
    out (a screen tall enough that nothing scrolls away)."""
    screen = pyte.Screen(columns, 1000)
    stream = pyte.ByteStream(screen)
    stream.feed(output.replace(b"\n", b"\r\n"))  # the pty's own newline translation
    return [line.rstrip() for line in screen.display if line.strip()]


@BACKENDS
def test_on_a_terminal_the_progress_line_stays_below_the_output(
    tmp_path: Path, backend: str
) -> None:
    status, output = run_in_terminal(tmp_path, "flows:chatty", backend)
    assert status == 0, output.decode(errors="replace")
    lines = screen_lines(output)
    text = "\n".join(lines)
    # The status line was drawn (and redrawn in place: erase the line, write it again) ...
    assert b"chatty: src " in output
    assert b"\x1b[2K" in output
    # ... and every line the flow printed, to stdout or stderr, is whole, in order, on a
    # line of its own: nothing was drawn over it.
    assert [line for line in lines if line.startswith("line ")] == [
        f"line {n}" for n in range(60)
    ], text
    assert [line for line in lines if line.startswith("note ")] == [
        f"note {n}" for n in range(0, 60, 10)
    ], text
    # The status line is gone once the flow ended; the last thing said is how it ended.
    assert not [line for line in lines if line.startswith("chatty: src")], text
    assert "flow chatty ended: chatty: src 60" in lines[-1], text
