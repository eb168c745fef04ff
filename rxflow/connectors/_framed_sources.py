"""Byte-stream sources hand over their messages in runs: the records of one read.

:meth:`MessageStream.next_run` returns the messages of one read (the lines of a 64 KiB
chunk, at most :data:`RUN_LIMIT` of them), so a pipe moves them with one await (see
:class:`rxflow._runs.RunSource`); ``async for`` still takes them one at a time, from the
same runs. A failure (a decode error under the "raise" policy, a lost connection) comes
after the messages read before it, in a call of its own.

Example:
    >>> import anyio
    >>> from rxflow.connectors._byte_streams import FramedReading
    >>> from rxflow.connectors._framed_sources import FramedStream
    >>> async def chunks():
    ...     yield b"one\\ntwo\\nthr"
    ...     yield b"ee\\n"
    >>> async def main():
    ...     reading = FramedReading.from_options("demo", {"codec": "text"}, codec="bytes")
    ...     async with FramedStream(reading, chunks(), key="demo") as lines:
    ...         return [[m.value for m in await lines.next_run()] for _ in range(2)]
    >>> anyio.run(main)
    [['one', 'two'], ['three']]
"""

from __future__ import annotations

import time
import types
import weakref
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterator,
    Mapping,
    Sequence,
)
from typing import Any, Final, Self, cast

import attrs
from anyio import EndOfStream
from anyio.abc import ByteReceiveStream

from rxflow.connectors._byte_streams import FramedReading
from rxflow.connectors._framing import BadFrame, FrameRun, Record
from rxflow.connectors._message import Message, NoOpSettlement, make_message
from rxflow.connectors.codecs import SKIPPED, Decoder
from rxflow.errors import FramingError

__all__ = [
    "NO_HEADERS",
    "RUN_LIMIT",
    "FramedStream",
    "MessageStream",
    "OffsetHeaders",
    "Restart",
    "receive_chunks",
]

RUN_LIMIT: Final = 128
"""The most messages in a run. A run's messages live together until it is taken; Python's
young-generation collector runs every 700 net allocations, so the thousands of lines of a
64 KiB read in one run would make it run, and promote, over and over (measured: a third
slower per line than runs of this size)."""


@attrs.frozen
class Restart:
    """A chunk source's signal that the stream starts again at ``position``.

    ``flush``: the old stream is finished, so its unterminated last line is a record (a
    rotated file); otherwise what was pending is dropped (a truncated file).
    """

    position: int
    flush: bool


class OffsetHeaders(Mapping[str, str]):
    """A file record's headers, ``offset``, ``next_offset`` and ``line``, made on demand.

    Three ``str()`` calls and a dict per line would cost more than reading the line; most
    consumers never look.
    """

    __slots__ = ("_line", "_next_offset", "_offset")
    _KEYS: Final = ("offset", "next_offset", "line")

    def __init__(self, offset: int, next_offset: int, line: int) -> None:
        self._offset = offset
        self._next_offset = next_offset
        self._line = line

    def __getitem__(self, name: str) -> str:
        if name == "offset":
            return str(self._offset)
        if name == "next_offset":
            return str(self._next_offset)
        if name == "line":
            return str(self._line)
        raise KeyError(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._KEYS)

    def __len__(self) -> int:
        return 3

    def __repr__(self) -> str:
        return repr(dict(self))


async def receive_chunks(stream: ByteReceiveStream, read_size: int) -> AsyncIterator[bytes]:
    """What ``stream`` receives, up to ``read_size`` bytes a read, until it ends."""
    while True:
        try:
            chunk = await stream.receive(read_size)
        except EndOfStream:
            return
        yield chunk


NO_HEADERS: Final[Mapping[str, str]] = types.MappingProxyType({})


class MessageStream:
    """What a byte-stream source yields: its messages, in runs or one at a time.

    ``await stream.next_run()`` returns the messages of the next read (never an empty
    list; ``StopAsyncIteration`` at the end); ``async for`` takes them one at a time. A
    failure (a decode error under the "raise" policy, a lost connection) comes after the
    messages read before it, in a call of its own. ``decoder.decoded``,
    ``decoder.skipped`` and ``decoder.dead_lettered`` count what the decode policy did.

    Subclasses implement :meth:`_read_run`.
    """

    def __init__(self, decoder: Decoder) -> None:
        self.decoder = decoder
        self._run: list[Message[Any]] = []  # the run being taken one message at a time
        self._taken = 0  # how many of self._run were taken
        self._failure: BaseException | None = None  # raised once what preceded it is out
        self._ended = False  # no more runs: ended, failed or closed
        # The ``async for`` iterations over the stream, closed with it.
        self._iterations: weakref.WeakSet[AsyncGenerator[Message[Any]]] = weakref.WeakSet()

    async def next_run(self) -> list[Message[Any]]:
        """The next messages: what one read gave, at most :data:`RUN_LIMIT` of them."""
        if self._taken < len(self._run):
            rest = self._run[self._taken :]
            self._run, self._taken = [], 0
            return rest
        return await self._next_run()

    def __aiter__(self) -> AsyncGenerator[Message[Any]]:
        # A generator: resuming it costs less per message than a coroutine per __anext__.
        iteration = self._each()
        self._iterations.add(iteration)
        return iteration

    async def _each(self) -> AsyncGenerator[Message[Any]]:
        while True:
            run, taken = self._run, self._taken
            if taken >= len(run):
                try:
                    run = await self._next_run()
                except StopAsyncIteration:
                    return
                self._run, taken = run, 0
            for index in range(taken, len(run)):
                self._taken = index + 1  # what an iteration left early leaves for the next
                yield run[index]

    async def __anext__(self) -> Message[Any]:
        run, taken = self._run, self._taken
        if taken < len(run):
            self._taken = taken + 1
            return run[taken]
        self._run = run = await self._next_run()
        self._taken = 1
        return run[0]

    async def _next_run(self) -> list[Message[Any]]:
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise failure
        if self._ended:
            raise StopAsyncIteration
        try:
            return await self._read_run()
        except BaseException:
            self._ended = True
            raise

    async def _read_run(self) -> list[Message[Any]]:
        """The next non-empty run; ``StopAsyncIteration`` at the end (override)."""
        raise NotImplementedError

    async def _decode(
        self,
        records: Sequence[Record],
        *,
        key: str | bytes | None,
        headers: Mapping[str, str],
        timestamp: float | None,
        clean: bool = True,
    ) -> list[Message[Any]]:
        """The messages of ``records``, all sharing ``headers``: see :meth:`_decode_run`."""
        run, _, _ = await self._decode_run(records, None, clean, key, headers, timestamp, 0, 0)
        return run

    async def _decode_run(
        self,
        records: Sequence[Record],
        ends: Sequence[int] | None,
        clean: bool,
        key: str | bytes | None,
        headers: Mapping[str, str] | None,
        timestamp: float | None,
        position: int,
        line: int,
    ) -> tuple[list[Message[Any]], int, int]:
        """The messages of ``records``, the stream position past them and the number of the
        last one's line.

        ``headers=None`` gives each message its :class:`OffsetHeaders`, counting from
        ``position`` (where the first record starts) and ``line``, with each record's end
        from ``ends`` (or, if ``None``, its bytes and a newline; see
        :class:`~rxflow.connectors._framing.FrameRun`); with headers the position is
        returned as given. A record the decode policy refuses to set aside ends the run:
        its error is kept for the next call, after the messages before it.
        """
        decoder = self.decoder
        values: list[Any] | None = None
        failure: Exception | None = None
        decode_many = decoder.decode_many
        if clean and decode_many is not None:
            try:
                values = decode_many(cast("Sequence[bytes]", records))
            except Exception:
                values = None  # one failed: decode them one by one to apply the policy
            else:
                decoder.decoded += len(values)
        at_once = values is not None  # every record decoded, none set aside
        if values is None:
            values, failure = await self._decode_each(records, key)
        source = decoder.source
        run: list[Message[Any]] = []
        append = run.append
        # One loop per case, each as short as it can be: this is the cost of a record.
        if headers is not None:
            if at_once:
                for value in values:
                    append(make_message(value, key, headers, timestamp, source, NoOpSettlement()))
            else:
                for value in values:
                    if value is not SKIPPED:
                        append(
                            make_message(value, key, headers, timestamp, source, NoOpSettlement())
                        )
        elif ends is None:
            for record, value in zip(records, values, strict=False):  # values may stop early
                line += 1
                end = position + len(cast(bytes, record)) + 1
                if value is not SKIPPED:
                    offsets = OffsetHeaders(position, end, line)
                    append(make_message(value, key, offsets, timestamp, source, NoOpSettlement()))
                position = end
        else:
            for end, value in zip(ends, values, strict=False):
                line += 1
                if value is not SKIPPED:
                    offsets = OffsetHeaders(position, end, line)
                    append(make_message(value, key, offsets, timestamp, source, NoOpSettlement()))
                position = end
        if failure is not None:
            if not run:
                raise failure
            self._failure = failure
            self._ended = True
        return run, position, line

    async def _decode_each(
        self, records: Sequence[Record], key: str | bytes | None
    ) -> tuple[list[Any], Exception | None]:
        """Each record's value or :data:`SKIPPED`, one at a time with the decode policy; the
        values stop before a record the policy did not set aside, returned with its error."""
        decoder = self.decoder
        codec = decoder.codec
        values: list[Any] = []
        decoded = 0
        try:
            for data in records:
                # The codec is called here rather than through ``await decoder.decode()``:
                # one coroutine less per record.
                if type(data) is BadFrame:
                    value = await decoder.reject(data.prefix, FramingError(data.reason), key=key)
                else:
                    try:
                        value = codec(cast(bytes, data))
                    except Exception as error:
                        value = await decoder.reject(cast(bytes, data), error, key=key)
                    else:
                        decoded += 1
                values.append(value)
        except Exception as error:
            return values, error
        finally:
            decoder.decoded += decoded
        return values, None

    async def aclose(self) -> None:
        """Stop reading; what was not taken is dropped."""
        self._ended = True
        self._run, self._taken = [], 0
        for iteration in list(self._iterations):
            await iteration.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class FramedStream(MessageStream):
    """The messages of a stream of chunks, framed and decoded a chunk at a time.

    Args:
        reading: the framing and decoding options.
        chunks: what the transport read; a :class:`Restart` where the stream starts over
            (a rotated or truncated file). It is closed with the stream.
        key: every message's key.
        headers: every message's headers; ``None`` gives each its :class:`OffsetHeaders`.
        stamp: each message's timestamp is when its chunk arrived.
        position: the stream position of the first chunk's first byte.
        at_end: awaited once the last message was taken (a process source checks the
            command's exit code there).

    Each message carries a no-op settlement: these transports cannot redeliver.
    """

    def __init__(
        self,
        reading: FramedReading,
        chunks: AsyncIterator[bytes | Restart],
        *,
        key: str | bytes | None,
        headers: Mapping[str, str] | None = NO_HEADERS,
        stamp: bool = False,
        position: int = 0,
        at_end: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        super().__init__(reading.decoder)
        self._chunks = chunks
        self._framer = reading.framer(position)
        self._key = key
        self._headers = headers
        self._stamp = stamp
        self._position = position  # where the next frame starts
        self._line = 0  # frames read since the stream (re)started
        self._at_end = at_end
        self._frames = FrameRun([], [], position, True)  # the frames of the last read
        self._decoded = 0  # how many of self._frames were decoded
        self._timestamp: float | None = None  # when the last read came, with ``stamp``
        self._restart: Restart | None = None  # where to count from once self._frames are out
        self._finished = False  # the chunks ended and the framer was flushed

    async def _read_run(self) -> list[Message[Any]]:
        while True:
            frames, start = self._frames, self._decoded
            records, ends = frames.records, frames.ends
            if start < len(records):
                if start or len(records) > RUN_LIMIT:
                    records = records[start : start + RUN_LIMIT]
                    ends = ends[start : start + RUN_LIMIT] if ends is not None else None
                self._decoded = start + len(records)
                run, self._position, self._line = await self._decode_run(
                    records,
                    ends,
                    frames.clean,
                    self._key,
                    self._headers,
                    self._timestamp,
                    self._position,
                    self._line,
                )
                if run:
                    return run
                continue
            if self._restart is not None:
                self._position, self._line = self._restart.position, 0
                self._restart = None
            if self._finished:
                self._ended = True
                if self._at_end is not None:
                    await self._at_end()
                raise StopAsyncIteration
            await self._read()

    async def _read(self) -> None:
        """Frame the next chunk (or what is left at the end) into ``self._frames``."""
        try:
            chunk = await anext(self._chunks)
        except StopAsyncIteration:
            self._finished = True
            self._frames = self._framer.finish_run()
        else:
            if type(chunk) is Restart:
                self._restart = chunk
                self._frames = (
                    self._framer.finish_run() if chunk.flush else FrameRun([], [], 0, True)
                )
                self._framer.reset(chunk.position)
            else:
                self._frames = self._framer.split(chunk)  # type: ignore[arg-type]
        if self._frames.records:
            self._position = self._frames.start
        self._decoded = 0
        if self._stamp:
            self._timestamp = time.time()

    async def aclose(self) -> None:
        """Stop reading and close the chunks (the file, socket or pipe) now, not whenever
        they are collected."""
        await super().aclose()
        aclose = getattr(self._chunks, "aclose", None)
        if aclose is not None:
            await aclose()
