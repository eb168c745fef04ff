"""Subprocesses and the program's own stdio as sources and sinks.

:func:`process_source` reads the records a command writes to its stdout;
:func:`process_sink` writes records to a command's stdin; :func:`stdin_source` and
:func:`stdout_sink` do the same with this program's own stdin and stdout, so an rxflow
pipeline can be a filter in a shell pipeline.

A command is a sequence of arguments (run directly, the safe form) or a string (run by the
shell). Its stderr is captured (the last ``stderr_tail`` bytes) so that a failure can say
why: a command that exits with a non-zero code raises :class:`ProcessFailedError` naming the
command, the code and the end of its stderr, after the records it wrote before.

Backpressure. A pipe holds about 64 KiB: a slow consumer leaves the command blocked on its
write, and a slow command leaves :meth:`ProcessSink.send_batch` waiting.

Cancellation. Leaving a source or a sink early (an exception, a cancellation, or a consumer
that stops reading) terminates the command (``SIGTERM``, then ``SIGKILL`` after
``terminate_timeout`` seconds) and waits for it: no child is left running or unreaped.

Delivery. Pipes cannot take acknowledgements: messages carry the no-op settlement
(**at-most-once**); a sink's batch is confirmed once the pipe accepted its bytes.

Example:
    >>> import anyio, sys
    >>> from rxflow.connectors.process import process_source
    >>> async def main():
    ...     command = [sys.executable, "-c", "print('one'); print('two')"]
    ...     async with process_source(command) as lines:
    ...         return [line.value async for line in lines]
    >>> anyio.run(main)
    ['one', 'two']
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import stat
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import IO, Any, Unpack

import anyio
import anyio.abc
from anyio.abc import ByteReceiveStream, Process

from rxflow._task_groups import background_tasks
from rxflow.connectors import _byte_streams as byte_streams
from rxflow.connectors._framed_sources import FramedStream, MessageStream, receive_chunks
from rxflow.connectors._framing import DEFAULT_READ_SIZE
from rxflow.errors import ProcessFailedError

__all__ = [
    "ProcessSink",
    "ProcessSource",
    "StdoutSink",
    "process_sink",
    "process_source",
    "stdin_source",
    "stdout_sink",
]

Command = str | Sequence[str]
Redirect = int | IO[Any] | None


def _describe(command: Command) -> str:
    return command if isinstance(command, str) else shlex.join(command)


def _where(command: Command) -> str:
    """A process connector's name (``"process:sort -n"``), once ``command`` is checked."""
    if isinstance(command, bytes) or not command:
        raise TypeError(
            f"process: command must be a non-empty list of arguments (or a shell string), "
            f"got {command!r}"
        )
    return f"process:{_describe(command)}"


class _StderrTail:
    """Reads a command's stderr to its end, keeping only the last ``limit`` bytes."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.data = bytearray()
        self.done = anyio.Event()

    async def drain(self, stream: ByteReceiveStream | None) -> None:
        try:
            if stream is not None:
                async for chunk in stream:
                    self.data += chunk
                    del self.data[: -self.limit]
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass  # closed on our side as the command is stopped: the tail so far is enough
        finally:
            self.done.set()


async def _stop(process: Process, grace: float) -> None:
    """End the command if it still runs (TERM, then KILL) and reap it, even if cancelled."""
    with anyio.CancelScope(shield=True):
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):  # it exited meanwhile
                process.terminate()
            with anyio.move_on_after(grace):
                await process.wait()
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
        await process.aclose()  # closes the pipes and waits: the child is reaped


async def _start(
    command: Command, where: str, stderr_tail: int, **options: Any
) -> tuple[Process, _StderrTail]:
    """Run ``command`` with its stderr captured: the process, and the keeper of its tail."""
    try:
        process = await anyio.open_process(command, stderr=subprocess.PIPE, **options)
    except FileNotFoundError as error:
        raise FileNotFoundError(
            error.errno, f"{where}: cannot run {_describe(command)}: {error.strerror}"
        ) from error
    return process, _StderrTail(stderr_tail)


class ProcessSource(FramedStream):
    """The records a command writes to stdout; see :func:`process_source`.

    ``pid`` is the command's process id, ``returncode`` its exit code once it exited and
    ``stderr`` the last bytes it wrote to its stderr (warnings of a command that succeeded).

    Example:
        ::

            async with process_source(["make", "test"]) as lines:   # a ProcessSource
                async for line in lines:
                    print(line.value)
            print(lines.returncode, lines.stderr.decode())
    """

    def __init__(
        self,
        reading: byte_streams.FramedReading,
        command: Command,
        process: Process,
        tail: _StderrTail,
    ) -> None:
        assert process.stdout is not None  # opened with stdout=PIPE
        chunks = receive_chunks(process.stdout, reading.read_size)
        super().__init__(reading, chunks, key=_describe(command), at_end=self._check_exit)
        self._where = reading.where
        self._command = command
        self._process = process
        self._tail = tail
        self.pid = process.pid

    async def _check_exit(self) -> None:
        code = await self._process.wait()
        await self._tail.done.wait()
        if code != 0:
            raise ProcessFailedError(self._where, self._command, code, self.stderr)

    @property
    def returncode(self) -> int | None:
        return self._process.returncode

    @property
    def stderr(self) -> bytes:
        return bytes(self._tail.data)


@asynccontextmanager
async def process_source(
    command: Command,
    *,
    stdin: Redirect = subprocess.DEVNULL,
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    stderr_tail: int = 4096,
    terminate_timeout: float = 5.0,
    **options: Unpack[byte_streams.FramedSourceOptions],
) -> AsyncIterator[ProcessSource]:
    """Run ``command`` and read the records it writes to stdout, until it exits.

    The iteration ends when the command closed its stdout and exited with code 0; with any
    other code it raises :class:`ProcessFailedError` after the records before it. Leaving
    the block earlier terminates the command (see the module docstring).

    Args:
        command: a list of arguments, or a string for the shell.
        stdin: what the command reads: nothing (default), a file object or a descriptor.
        cwd: the command's working directory.
        env: the command's environment.
        stderr_tail: how many bytes of its stderr to keep for the error message.
        terminate_timeout: seconds between ``SIGTERM`` and ``SIGKILL`` when stopping it.
        **options: as for :func:`rxflow.connectors.files.read_file` (``framing``,
            ``codec``, default ``"text"``, ``on_decode_error``...).

    Example:
        ::

            async with process_source(["journalctl", "-f", "-o", "json"],
                                      codec="json") as entries:
                async for entry in entries:
                    print(entry.value["MESSAGE"])
    """
    where = _where(command)
    reading = byte_streams.FramedReading.from_options(where, options, codec="text")
    process, tail = await _start(
        command, where, stderr_tail, stdin=stdin, stdout=subprocess.PIPE, cwd=cwd, env=env
    )
    async with background_tasks() as tasks:
        tasks.start_soon(tail.drain, process.stderr)
        records = ProcessSource(reading, command, process, tail)
        try:
            yield records
        finally:
            await records.aclose()
            await _stop(process, terminate_timeout)  # which ends the stderr drain too


class ProcessSink(byte_streams.FramedSink):
    """Writes framed batches to a command's stdin; see :func:`process_sink`.

    ``send_batch`` returns once the pipe accepted all the batch's bytes, and raises
    :class:`ProcessFailedError` if the command exited (or closed its stdin) before reading
    it. ``sent`` counts the records confirmed.

    Example:
        ::

            async with process_sink(["sort"]) as sink:   # a ProcessSink
                await sink.send_batch(["b", "a"])
    """

    def __init__(
        self,
        writer: byte_streams.FrameWriter,
        stdin: anyio.abc.ByteSendStream,
        failed: Callable[[], Awaitable[ProcessFailedError]],
    ) -> None:
        super().__init__(writer)
        self._stdin = stdin
        self._failed = failed

    async def _write(self, data: bytes) -> None:
        try:
            await self._stdin.send(data)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as error:
            raise await self._failed() from error


@asynccontextmanager
async def process_sink(
    command: Command,
    *,
    stdout: Redirect = None,
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    stderr_tail: int = 4096,
    terminate_timeout: float = 5.0,
    **options: Unpack[byte_streams.FramedSinkOptions],
) -> AsyncIterator[ProcessSink]:
    """Run ``command`` and write records to its stdin.

    Leaving the block normally closes its stdin and waits for it to exit; a non-zero exit
    code raises :class:`ProcessFailedError`. Leaving by an exception or a cancellation
    terminates it. A :class:`~rxflow.connectors.Message` is written as its value.

    Args:
        command: a list of arguments, or a string for the shell.
        stdout: where the command's stdout goes: this program's stdout (default), a file
            object, a descriptor or ``subprocess.DEVNULL``.
        cwd: as for :func:`process_source`.
        env: as for :func:`process_source`.
        stderr_tail: as for :func:`process_source`.
        terminate_timeout: as for :func:`process_source`.
        **options: as for :func:`rxflow.connectors.files.file_sink` (``framing``,
            ``encoder``, default ``"text"``, and ``batch_size``).

    Example:
        ::

            async with process_sink(["gzip"], stdout=open("out.gz", "wb")) as sink:
                await sink.send_batch(["one", "two"])
    """
    where = _where(command)
    writer = byte_streams.framed_writer(where, options, encoder="text")
    process, tail = await _start(
        command, where, stderr_tail, stdin=subprocess.PIPE, stdout=stdout, cwd=cwd, env=env
    )
    assert process.stdin is not None

    async def failure() -> ProcessFailedError:
        # It stopped reading: say how it ended, if it did so promptly.
        with anyio.move_on_after(terminate_timeout):
            await process.wait()
            await tail.done.wait()
        code = process.returncode if process.returncode is not None else -signal.SIGPIPE
        return ProcessFailedError(where, command, code, bytes(tail.data))

    async with background_tasks() as tasks:
        tasks.start_soon(tail.drain, process.stderr)
        try:
            yield ProcessSink(writer, process.stdin, failure)
            # Left normally: end of input, and the command finishes its work.
            await process.stdin.aclose()
            await process.wait()
            await tail.done.wait()
        finally:
            await _stop(process, terminate_timeout)  # at once, unless it exited already
    if process.returncode != 0:
        raise ProcessFailedError(where, command, process.returncode or 0, bytes(tail.data))


class _FdReceiveStream(ByteReceiveStream):
    """Bytes from a file descriptor (a pipe, a terminal or a file) that cancellation can stop.

    A pipe or terminal is read when the event loop says it is readable, so a cancelled read
    ends at once; a worker thread blocked in ``read()`` could not be stopped. A regular file
    (``< file``) cannot be waited on and never blocks for long, so it is read in a thread.
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._regular = stat.S_ISREG(os.fstat(fd).st_mode)

    async def receive(self, max_bytes: int = DEFAULT_READ_SIZE) -> bytes:
        if self._regular:
            data = await anyio.to_thread.run_sync(os.read, self._fd, max_bytes)
        else:
            while True:
                await anyio.wait_readable(self._fd)
                try:
                    data = os.read(self._fd, max_bytes)
                except BlockingIOError:
                    continue  # someone else read it first
                break
        if not data:
            raise anyio.EndOfStream
        return data

    async def aclose(self) -> None:
        pass  # the descriptor belongs to the program, not to the source


@asynccontextmanager
async def stdin_source(
    *, fd: int = 0, **options: Unpack[byte_streams.FramedSourceOptions]
) -> AsyncIterator[MessageStream]:
    """Read this program's stdin (or descriptor ``fd``) as records, until it ends.

    Reading is cancellable on pipes and terminals (Unix). The descriptor is left open.
    Options as for :func:`process_source`.

    Example:
        Upper-case every line, as a shell filter (``... | python upper.py | ...``)::

            async with stdin_source() as lines, stdout_sink() as out:
                async for line in lines:
                    await out.send(line.value.upper())
    """
    where = "stdin" if fd == 0 else f"fd:{fd}"
    reading = byte_streams.FramedReading.from_options(where, options, codec="text")
    chunks = receive_chunks(_FdReceiveStream(fd), reading.read_size)
    async with FramedStream(reading, chunks, key=where) as records:
        yield records


class StdoutSink(byte_streams.FramedSink):
    """Writes framed batches to this program's stdout; see :func:`stdout_sink`.

    ``send_batch`` returns once all the batch's bytes were written to the descriptor.

    Example:
        ::

            async with stdout_sink(encoder="json") as out:   # a StdoutSink
                await out.send_batch([{"n": 1}, {"n": 2}])
    """

    def __init__(self, writer: byte_streams.FrameWriter, fd: int) -> None:
        super().__init__(writer)
        self._fd = fd

    async def _write(self, data: bytes) -> None:
        await anyio.to_thread.run_sync(self._write_now, data)

    def _write_now(self, data: bytes) -> None:
        if self._fd == 1:
            sys.stdout.flush()  # what print() buffered comes first
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]


@asynccontextmanager
async def stdout_sink(
    *, fd: int = 1, **options: Unpack[byte_streams.FramedSinkOptions]
) -> AsyncIterator[StdoutSink]:
    """Write records to this program's stdout (or descriptor ``fd``).

    Each batch is written in a worker thread (a blocking write to a slow pipe must not stop
    the event loop); a cancellation waits for the write in progress. The descriptor is left
    open. Options as for :func:`process_sink`.

    Example:
        ::

            async with stdout_sink(encoder="json") as out:
                await out.send({"n": 1})
    """
    where = "stdout" if fd == 1 else f"fd:{fd}"
    yield StdoutSink(byte_streams.framed_writer(where, options, encoder="text"), fd)
