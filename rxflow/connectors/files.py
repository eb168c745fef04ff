"""Files as sources and sinks: read a file, follow a growing log like ``tail -F``, append.

Reads and writes go through anyio's worker threads (disk I/O has no non-blocking form), a
whole chunk or a whole batch per thread hop, so a hop costs little per record.

Delivery. A file cannot take acknowledgements, so messages carry the no-op settlement and a
restarted reader starts where it is told: **at-most-once across restarts** unless the user
keeps the position. Each message's headers carry ``offset`` (where the record starts),
``next_offset`` (where the next one starts) and ``line`` (its number among the records read),
so a program that stores ``next_offset`` of the last record it finished can resume with
``read_file(path, start_offset=...)``. :func:`file_sink` confirms a batch once it is written
and, by default, ``fsync``-ed: confirmed means on disk.

Example:
    >>> import anyio, tempfile, os
    >>> from rxflow.connectors.files import file_sink, read_file
    >>> path = os.path.join(tempfile.mkdtemp(), "log.txt")
    >>> async def main():
    ...     async with file_sink(path) as sink:
    ...         await sink.send_batch(["one", "two"])
    ...     async with read_file(path) as lines:
    ...         return [(m.value, m.headers["offset"]) async for m in lines]
    >>> anyio.run(main)
    [('one', '0'), ('two', '4')]
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import IO, Unpack

import anyio
from anyio.streams.file import FileReadStream

from rxflow._checks import check_count, check_seconds
from rxflow.connectors import _byte_streams as byte_streams
from rxflow.connectors._framed_sources import FramedStream, MessageStream, Restart, receive_chunks

__all__ = ["FileSink", "file_sink", "follow_file", "read_file"]

PathLike = str | os.PathLike[str]


@asynccontextmanager
async def read_file(
    path: PathLike, *, start_offset: int = 0, **options: Unpack[byte_streams.FramedSourceOptions]
) -> AsyncIterator[MessageStream]:
    """Read a file's records, from ``start_offset`` to its end.

    Each message's key is the path, its headers ``offset``, ``next_offset`` and ``line``
    (see the module docstring). The last line counts even without a final newline.

    Args:
        start_offset: the byte offset to start at (a record's ``next_offset`` to resume).
        **options: how records are cut and decoded, as for every byte-stream source
            (:class:`~rxflow.connectors._byte_streams.FramedSourceOptions`): ``framing``
            (``"lines"``, ``"length"`` or ``"chunks"``), ``codec`` (default ``"text"``),
            ``on_decode_error`` and ``dead_letter``, ``max_line_length``,
            ``max_frame_size`` and ``read_size``. A line longer than ``max_line_length``
            or a frame larger than ``max_frame_size`` is a decode failure.

    Example:
        A JSON-lines file, skipping what does not parse::

            async with read_file("events.jsonl", codec="json",
                                 on_decode_error="skip") as events:
                async for event in events:
                    print(event.value, event.headers["line"])
            events.decoder.skipped   # how many lines were not JSON
    """
    where = f"file:{os.fspath(path)}"
    reading = byte_streams.FramedReading.from_options(where, options, codec="text")
    check_count(where, "start_offset", start_offset, minimum=0)
    stream = await FileReadStream.from_path(path)
    async with stream:
        if start_offset:
            await stream.seek(start_offset)
        chunks = receive_chunks(stream, reading.read_size)
        key = os.fspath(path)
        async with FramedStream(
            reading, chunks, key=key, headers=None, position=start_offset
        ) as records:
            yield records


@asynccontextmanager
async def follow_file(
    path: PathLike,
    *,
    from_end: bool = False,
    poll_interval: float = 1.0,
    **options: Unpack[byte_streams.FramedSourceOptions],
) -> AsyncIterator[MessageStream]:
    """Follow a file as it grows, like ``tail -F``: the iteration never ends by itself.

    At the end of the file it checks every ``poll_interval`` seconds (``anyio.sleep``, so
    trio's ``MockClock`` runs it in virtual time) whether the file grew, was truncated or was
    replaced:

    * grown: the new records are read; a last line without its newline waits for it;
    * truncated (smaller than what was read): reading starts again at its beginning;
    * replaced (log rotation: renamed, and a new file created at ``path``): the rest of the
      old file is read first, its unterminated last line counts as a record, then the new
      file is read from its beginning. While ``path`` is missing the old file is still
      followed.

    A file that does not exist yet is waited for. A truncation followed by writes that make
    the file larger than what was read before the next check cannot be told from growth (as
    with ``tail``). Headers carry ``offset``, ``next_offset`` and ``line`` within the current
    file; ``line`` counts from where reading started.

    Args:
        from_end: start at the end of the file (only new records), like ``tail -F -n 0``.
        poll_interval: seconds between checks once at the end of the file.
        **options: as for :func:`read_file`.

    Example:
        Print the lines added to a log, surviving its rotation::

            async with follow_file("/var/log/app.log", from_end=True) as lines:
                async for line in lines:
                    print(line.value)
    """
    where = f"file:{os.fspath(path)}"
    check_seconds(where, "poll_interval", poll_interval)
    reading = byte_streams.FramedReading.from_options(where, options, codec="text")
    follower = _Follower(os.fspath(path), poll_interval, reading.read_size)
    try:
        position = await follower.start(from_end)
        chunks = follower.chunks(position)
        key = os.fspath(path)
        async with FramedStream(
            reading, chunks, key=key, headers=None, position=position
        ) as records:
            yield records
    finally:
        await follower.close()


class _Follower:
    """The chunks of a followed file, with a :class:`Restart` where the file started over."""

    def __init__(self, path: str, poll_interval: float, read_size: int) -> None:
        self.path = path
        self.poll_interval = poll_interval
        self.read_size = read_size
        self.file: IO[bytes] | None = None

    async def start(self, from_end: bool) -> int:
        """Open the file if it exists, at its end with ``from_end``: the position to start at.

        Done when the source is entered, so that "from the end" means from when it started.
        """
        try:
            self.file = await anyio.to_thread.run_sync(open, self.path, "rb")
        except FileNotFoundError:
            return 0  # read from its beginning once it appears
        if not from_end:
            return 0
        return await anyio.to_thread.run_sync(self.file.seek, 0, os.SEEK_END)

    async def chunks(self, position: int) -> AsyncIterator[bytes | Restart]:
        file = self.file or await self._open()
        while True:
            chunk = await anyio.to_thread.run_sync(file.read, self.read_size)
            if chunk:
                position += len(chunk)
                yield chunk
                continue
            change = await anyio.to_thread.run_sync(_what_changed, self.path, file, position)
            if change == "truncated":
                position = await anyio.to_thread.run_sync(file.seek, 0)
                yield Restart(0, flush=False)
            elif change == "replaced":
                # Whatever the writer added between our last read and the rename comes first.
                while chunk := await anyio.to_thread.run_sync(file.read, self.read_size):
                    yield chunk
                yield Restart(0, flush=True)
                await self.close()
                file = await self._open()
                position = 0
            else:
                await anyio.sleep(self.poll_interval)

    async def _open(self) -> IO[bytes]:
        while True:
            try:
                self.file = await anyio.to_thread.run_sync(open, self.path, "rb")
            except FileNotFoundError:
                await anyio.sleep(self.poll_interval)  # tail -F waits for the file to appear
            else:
                return self.file

    async def close(self) -> None:
        if self.file is not None:
            file, self.file = self.file, None
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(file.close)


def _what_changed(path: str, file: IO[bytes], position: int) -> str:
    """``"replaced"``, ``"truncated"`` or ``"same"``: what happened to the file at ``path``."""
    opened = os.fstat(file.fileno())
    try:
        now = os.stat(path)
    except FileNotFoundError:
        return "same"  # renamed, not recreated yet: keep following the old file
    if (now.st_ino, now.st_dev) != (opened.st_ino, opened.st_dev):
        return "replaced"
    if opened.st_size < position:
        return "truncated"
    return "same"


class FileSink(byte_streams.FramedSink):
    """Writes batches of records to a file; see :func:`file_sink`.

    ``send_batch`` returns once the batch is on disk (``fsync=True``) or handed to the OS;
    ``sent`` counts the records confirmed.

    Example:
        ::

            async with file_sink("audit.log") as sink:   # a FileSink
                await sink.send_batch(["login alice", "logout alice"])
                sink.sent                                # 2
    """

    def __init__(self, writer: byte_streams.FrameWriter, file: IO[bytes], fsync: bool) -> None:
        super().__init__(writer)
        self._file = file
        self._fsync = fsync

    async def _write(self, data: bytes) -> None:
        await anyio.to_thread.run_sync(self._write_now, data)  # one thread hop per batch

    def _write_now(self, data: bytes) -> None:
        self._file.write(data)
        self._file.flush()
        if self._fsync:
            os.fsync(self._file.fileno())


@asynccontextmanager
async def file_sink(
    path: PathLike,
    *,
    append: bool = True,
    fsync: bool = True,
    **options: Unpack[byte_streams.FramedSinkOptions],
) -> AsyncIterator[FileSink]:
    """Write records to a file, each batch in one write, confirmed once on disk.

    A :class:`~rxflow.connectors.Message` is written as its value.

    Args:
        append: add to the file (default) or replace it.
        fsync: ``fsync`` after each batch, so a confirmed batch survives a crash; without it,
            confirmed means handed to the OS.
        **options: as for every byte-stream sink
            (:class:`~rxflow.connectors._byte_streams.FramedSinkOptions`): ``framing``
            (``"lines"``: each record then ``b"\\n"``, a record containing a newline is
            refused; ``"length"``: a 4-byte big-endian length prefix; ``"chunks"``: as is),
            ``encoder`` (``"text"``, the default, ``"bytes"``, ``"json"`` or a function
            value -> bytes) and ``batch_size`` (the batch size a flow should use).

    Example:
        ::

            async with file_sink("out.jsonl", encoder="json") as sink:
                await sink.send_batch([{"n": 1}, {"n": 2}])
    """
    where = f"file:{os.fspath(path)}"
    writer = byte_streams.framed_writer(where, options, encoder="text")
    file = await anyio.to_thread.run_sync(open, path, "ab" if append else "wb")
    try:
        yield FileSink(writer, file, fsync)
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(file.close)
