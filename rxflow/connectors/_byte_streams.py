"""The kit of the byte-stream connectors (files, sockets, pipes, stdio): options, sources, sinks.

Every byte-stream source takes the same keyword options (:class:`FramedSourceOptions`) and
every byte-stream sink the same ones (:class:`FramedSinkOptions`); they are checked here,
once, by :meth:`FramedReading.from_options` and :func:`framed_writer`. A connector module
keeps only what is special to its transport: how it opens, reads chunks, writes bytes and
closes.

A source hands its messages over in *runs*: :meth:`MessageStream.next_run` returns the
messages of one read (the lines of a 64 KiB chunk), so a pipe moves them with one await;
``async for`` still takes them one at a time, from the same runs.

Example:
    >>> import anyio
    >>> from rxflow.connectors._byte_streams import FramedReading, FramedStream
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
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from typing import Any, Final, Self, TypedDict

import anyio
import attrs
from anyio.abc import ByteReceiveStream

from rxflow._checks import check_count, check_host, check_port
from rxflow.connectors._framing import (
    DEFAULT_MAX_FRAME_SIZE,
    DEFAULT_MAX_LINE_LENGTH,
    DEFAULT_READ_SIZE,
    BadFrame,
    DeadLetter,
    Frame,
    Framer,
    Framing,
    FramingError,
    check_framing,
    make_framer,
    make_writer,
)
from rxflow.connectors._message import Message, Settlement
from rxflow.connectors.codecs import (
    SKIPPED,
    Codec,
    CodecName,
    DecodePolicy,
    Decoder,
    Encoder,
    resolve_encoder,
)

__all__ = [
    "FramedReading",
    "FramedSink",
    "FramedSinkOptions",
    "FramedSourceOptions",
    "FramedStream",
    "MessageStream",
    "OffsetHeaders",
    "Restart",
    "framed_writer",
    "network_where",
    "receive_chunks",
]


DEFAULT_BATCH_SIZE: Final = 1000


class FramedSourceOptions(TypedDict, total=False):
    """The keyword options of every byte-stream source, and their defaults.

    * ``framing``: ``"lines"`` (default), ``"length"`` (4-byte big-endian length prefixes)
      or ``"chunks"`` (each read as it came); see :mod:`rxflow.connectors._framing`.
    * ``codec``: ``"bytes"``, ``"text"``, ``"json"`` or a function bytes -> value; the
      default is each source's own (``"text"`` for files and processes, ``"bytes"`` for
      sockets).
    * ``on_decode_error``: the decode policy, ``"raise"`` (default), ``"skip"`` or
      ``"dead_letter"`` (:mod:`rxflow.connectors.codecs`); a line longer than
      ``max_line_length``, a frame larger than ``max_frame_size`` or a frame cut short by
      the end of the stream is a decode failure too.
    * ``dead_letter``: the function given what fails to decode, with ``"dead_letter"``.
    * ``max_line_length``: the longest line accepted, in bytes (bounds memory; 1 MiB).
    * ``max_frame_size``: the largest length-prefixed frame accepted, in bytes (16 MiB).
    * ``read_size``: bytes per read (64 KiB); also the most a source holds of a stream.
    """

    framing: Framing
    codec: Codec | CodecName
    on_decode_error: DecodePolicy
    dead_letter: DeadLetter
    max_line_length: int
    max_frame_size: int
    read_size: int


class FramedSinkOptions(TypedDict, total=False):
    """The keyword options of every byte-stream sink, and their defaults.

    * ``framing``: ``"lines"`` (default; each record then ``b"\\n"``, and a record containing
      a newline is refused), ``"length"`` (4-byte big-endian length prefix) or ``"chunks"``
      (as is).
    * ``encoder``: ``"bytes"``, ``"text"``, ``"json"`` or a function value -> bytes; the
      default is each sink's own (``"text"`` for files and processes, ``"bytes"`` for TCP).
    * ``codec``: the former name of ``encoder`` (deprecated; a ``DeprecationWarning``).
    * ``batch_size``: the batch size a flow should use (1000).
    """

    framing: Framing
    encoder: Encoder | CodecName
    codec: Encoder | CodecName
    batch_size: int


def _check_keywords(where: str, options: Mapping[str, object], accepted: type) -> None:
    """Refuse a keyword that is not an option, as Python would for a spelled-out one."""
    unknown = sorted(options.keys() - accepted.__annotations__.keys())
    if unknown:
        raise TypeError(
            f"{where}: unexpected keyword argument {', '.join(map(repr, unknown))}; "
            f"the options are {', '.join(accepted.__annotations__)}"
        )


def network_where(kind: str, host: object, port: object, *, allow_zero: bool = False) -> str:
    """A socket connector's name (``"tcp:host:port"``), once ``host`` and ``port`` are checked."""
    where = f"{kind}:{host}:{port}"
    check_host(where, "host", host)
    check_port(where, "port", port, allow_zero=allow_zero)
    return where


# -- sources ---------------------------------------------------------------------------------


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
        except anyio.EndOfStream:
            return
        yield chunk


NO_HEADERS: Final[Mapping[str, str]] = types.MappingProxyType({})


@attrs.frozen
class FramedReading:
    """How a byte-stream source cuts and decodes what it reads, every option checked.

    Made by :meth:`from_options` before the source opens anything, so that a bad option
    fails at once; a :class:`FramedStream` then reads a stream of chunks with it.
    """

    where: str  # the source's name, in errors and on its messages (``"file:app.log"``)
    decoder: Decoder  # applies the codec and the decode policy; counts what it did
    framing: Framing
    max_line_length: int
    max_frame_size: int
    read_size: int  # bytes per read

    @classmethod
    def from_options(
        cls, where: str, options: FramedSourceOptions, *, codec: Codec | CodecName
    ) -> Self:
        """The reading ``options`` ask for, ``codec`` being the source's default codec."""
        _check_keywords(where, options, FramedSourceOptions)
        framing = options.get("framing", "lines")
        max_line_length = options.get("max_line_length", DEFAULT_MAX_LINE_LENGTH)
        max_frame_size = options.get("max_frame_size", DEFAULT_MAX_FRAME_SIZE)
        read_size = options.get("read_size", DEFAULT_READ_SIZE)
        check_framing(
            framing,
            max_line_length=max_line_length,
            max_frame_size=max_frame_size,
            read_size=read_size,
            where=where,
        )
        decoder = Decoder(
            options.get("codec", codec),
            on_decode_error=options.get("on_decode_error", "raise"),
            dead_letter=options.get("dead_letter"),
            source=where,
        )
        return cls(where, decoder, framing, max_line_length, max_frame_size, read_size)

    def framer(self, position: int = 0) -> Framer:
        """A new framer, for a stream whose first byte is at ``position``."""
        return make_framer(
            self.framing,
            max_line_length=self.max_line_length,
            max_frame_size=self.max_frame_size,
            position=position,
        )


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

    async def next_run(self) -> list[Message[Any]]:
        """The next messages, as many as one read gave."""
        if self._taken < len(self._run):
            rest = self._run[self._taken :]
            self._run, self._taken = [], 0
            return rest
        return await self._next_run()

    def __aiter__(self) -> Self:
        return self

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
        frames: Sequence[Frame],
        *,
        key: str | bytes | None,
        headers: Mapping[str, str],
        timestamp: float | None,
    ) -> list[Message[Any]]:
        """The messages of ``frames``, all sharing ``headers``: see :meth:`_decode_frames`."""
        run, _ = await self._decode_frames(frames, key, headers, timestamp, 0, 0)
        return run

    async def _decode_frames(
        self,
        frames: Sequence[Frame],
        key: str | bytes | None,
        headers: Mapping[str, str] | None,
        timestamp: float | None,
        position: int,
        line: int,
    ) -> tuple[list[Message[Any]], int]:
        """The messages of ``frames`` and the number of the last frame's line.

        ``headers=None`` gives each message its :class:`OffsetHeaders`, counting from
        ``position`` and ``line``. A frame the decode policy refuses to set aside ends the
        run: its error is kept for the next call, after the messages before it.
        """
        decoder = self.decoder
        codec = decoder.codec
        source = decoder.source
        run: list[Message[Any]] = []
        decoded = 0
        try:
            for data, end in frames:
                # The codec is called here rather than through ``await decoder.decode()``:
                # one coroutine less per record is a tenth of a file source's time per line.
                if isinstance(data, BadFrame):
                    value = await decoder.reject(data.prefix, FramingError(data.reason), key=key)
                else:
                    try:
                        value = codec(data)
                    except Exception as error:
                        value = await decoder.reject(data, error, key=key)
                    else:
                        decoded += 1
                line += 1
                start, position = position, end
                if value is not SKIPPED:
                    run.append(
                        Message(
                            value,
                            key,
                            OffsetHeaders(start, end, line) if headers is None else headers,
                            timestamp,
                            source,
                            Settlement(),
                        )
                    )
        except Exception as error:
            if not run:
                raise
            self._failure = error
            self._ended = True
        finally:
            decoder.decoded += decoded
        return run, line

    async def aclose(self) -> None:
        """Stop reading; what was not taken is dropped."""
        self._ended = True
        self._run, self._taken = [], 0

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
        self._finished = False  # the chunks ended and the framer was flushed

    async def _read_run(self) -> list[Message[Any]]:
        while True:
            if self._finished:
                self._ended = True
                if self._at_end is not None:
                    await self._at_end()
                raise StopAsyncIteration
            restart: Restart | None = None
            try:
                chunk = await anext(self._chunks)
            except StopAsyncIteration:
                self._finished = True
                frames = self._framer.finish()
            else:
                if type(chunk) is Restart:
                    restart = chunk
                    frames = self._framer.finish() if chunk.flush else []
                    self._framer.reset(chunk.position)
                else:
                    frames = self._framer.feed(chunk)  # type: ignore[arg-type]
            run, line = await self._decode_frames(
                frames,
                self._key,
                self._headers,
                time.time() if self._stamp else None,
                self._position,
                self._line,
            )
            if frames:
                self._position = frames[-1][1]
            self._line = line
            if restart is not None:
                self._position, self._line = restart.position, 0
            if run:
                return run

    async def aclose(self) -> None:
        """Stop reading and close the chunks (the file, socket or pipe) now, not whenever
        they are collected."""
        await super().aclose()
        aclose = getattr(self._chunks, "aclose", None)
        if aclose is not None:
            await aclose()


# -- sinks -----------------------------------------------------------------------------------


def framed_writer(
    where: str, options: FramedSinkOptions, *, encoder: Encoder | CodecName
) -> tuple[Callable[[Sequence[Any]], bytes], int]:
    """A byte-stream sink's writer (a batch of values -> the bytes of their frames) and batch
    size, from its ``options``; ``encoder`` is the sink's default encoder."""
    _check_keywords(where, options, FramedSinkOptions)
    chosen = options.get("encoder", encoder)
    if "codec" in options:
        if "encoder" in options:
            raise TypeError(f"{where}: pass encoder= only (codec= is its former name)")
        warnings.warn(
            f"{where}: a sink's codec= is now spelled encoder=; codec= stops working in the "
            "next release",
            DeprecationWarning,
            stacklevel=4,  # the caller of the sink: here, framed_writer, the sink, contextlib
        )
        chosen = options["codec"]
    write = make_writer(
        options.get("framing", "lines"), resolve_encoder(chosen, where=where), where=where
    )
    batch_size = check_count(where, "batch_size", options.get("batch_size", DEFAULT_BATCH_SIZE))
    return write, batch_size


class FramedSink:
    """A sink that frames each batch into one ``bytes`` and writes it whole.

    Subclasses implement :meth:`_write`: it returns once the write is confirmed (on disk,
    accepted by the kernel or the pipe).
    """

    def __init__(self, frames: Callable[[Sequence[Any]], bytes], batch_size: int) -> None:
        self._frames = frames
        self._lock = anyio.Lock()  # concurrent batches are written whole, one after the other
        self.batch_size = batch_size
        self.sent = 0  # records confirmed

    async def send(self, item: Any) -> None:
        """Write one record; returns once it is confirmed."""
        await self.send_batch((item,))

    async def send_batch(self, items: Sequence[Any]) -> None:
        """Write a batch in one write; returns once all of it is confirmed."""
        data = self._frames(items)
        async with self._lock:
            await self._write(data)
        self.sent += len(items)

    async def _write(self, data: bytes) -> None:
        raise NotImplementedError
