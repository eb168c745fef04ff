"""Framing: cutting a byte stream into records, and records back into bytes.

Files, sockets, pipes and stdio carry bytes, not records. A *framer* cuts what arrives in
chunks into records (frames); a *writer* turns a batch of values into the bytes of their
frames. Three framings:

* ``"lines"``: a record ends at ``b"\\n"`` (a ``b"\\r"`` before it is dropped too, so CRLF
  text reads the same). A line longer than ``max_line_length`` is a decode failure handled by
  the source's decode policy, and its bytes are discarded as they arrive: memory stays
  bounded by ``max_line_length`` plus one read, whatever the peer sends.
* ``"length"``: each record is a 4-byte big-endian length, then that many bytes. A frame
  larger than ``max_frame_size`` is a decode failure and is skipped without being buffered.
* ``"chunks"``: each read is a record, as it came (no framing).

Framers are synchronous (``feed(chunk)`` returns the frames it completed), so they are the
same for every transport and cost no task switch per record. Each frame comes with the
stream position just past it, which is how file sources report byte offsets.

Example:
    >>> framer = make_framer("lines", where="demo")
    >>> [line for line, _ in framer.feed(b"one\\r\\ntwo\\nthr")]
    [b'one', b'two']
    >>> framer.finish()
    [(b'thr', 12)]
    >>> lines_writer = make_writer("lines", "text", where="demo")
    >>> lines_writer(["a", "b"])
    b'a\\nb\\n'
"""

from __future__ import annotations

import contextlib
import struct
import time
import types
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterator,
    Mapping,
    Sequence,
)
from typing import Any, Final, Literal, Protocol

import anyio
import attrs
from anyio.abc import ByteReceiveStream

from rxflow.connectors._message import Message, Settlement
from rxflow.connectors.codecs import (
    SKIPPED,
    Codec,
    CodecName,
    DecodeFailure,
    DecodePolicy,
    Decoder,
    Encoder,
    RecordRejected,
    resolve_encoder,
)

Framing = Literal["lines", "length", "chunks"]
# Where the decode policy "dead_letter" sends the records the codec rejects.
DeadLetter = Callable[[DecodeFailure], Any] | None
FRAMINGS: Final = ("lines", "length", "chunks")
DEFAULT_MAX_LINE_LENGTH: Final = 1 << 20  # 1 MiB
DEFAULT_MAX_FRAME_SIZE: Final = 16 << 20  # 16 MiB
DEFAULT_READ_SIZE: Final = 1 << 16  # 64 KiB per read: thousands of short lines per read
_LENGTH: Final = struct.Struct(">I")
_MAX_LENGTH_PREFIXED: Final = (1 << 32) - 1


class FramingError(RecordRejected):
    """Why a frame was rejected (the ``__cause__`` of the source's ``DecodeError``)."""


@attrs.frozen
class BadFrame:
    """A frame that cannot be delivered: too long, or cut short by the end of the stream.

    Only its first bytes are kept (for the error message and dead letters), never the frame.
    """

    prefix: bytes
    reason: str


Frame = tuple["bytes | BadFrame", int]  # the record, and the stream position just past it


class Framer(Protocol):
    def feed(self, chunk: bytes) -> list[Frame]: ...

    def finish(self) -> list[Frame]:
        """The frames still pending at the end of the stream."""
        ...

    def reset(self, position: int) -> None:
        """Forget what is pending and continue at ``position`` (a file was truncated)."""
        ...


class LineFramer:
    """Lines ending at ``b"\\n"``, at most ``max_line_length`` bytes each."""

    def __init__(self, max_line_length: int, position: int = 0) -> None:
        self.max_line_length = max_line_length
        self.reset(position)

    def reset(self, position: int) -> None:
        self._pending = bytearray()  # the start of a line whose end has not arrived
        self._discarding = False  # inside an over-long line, already reported
        self._position = position  # stream position where the pending bytes start

    def feed(self, chunk: bytes) -> list[Frame]:
        if self._discarding:
            end = chunk.find(b"\n")
            if end < 0:
                self._position += len(chunk)
                return []
            self._position += end + 1
            self._discarding = False
            chunk = chunk[end + 1 :]
        if b"\n" not in chunk:
            # Scan each byte for b"\n" once: a long line arriving in many reads is gathered,
            # not searched again and again.
            self._pending += chunk
            return self._check_pending([])
        if self._pending:
            chunk = bytes(self._pending) + chunk
            self._pending.clear()
        lines = chunk.split(b"\n")
        self._pending += lines.pop()
        frames: list[Frame] = []
        position = self._position
        limit = self.max_line_length
        for line in lines:
            position += len(line) + 1
            if len(line) > limit:
                frames.append((self._too_long(line, len(line)), position))
            elif line[-1:] == b"\r":
                frames.append((line[:-1], position))
            else:
                frames.append((line, position))
        self._position = position
        return self._check_pending(frames)

    def _check_pending(self, frames: list[Frame]) -> list[Frame]:
        """Report an unfinished line as soon as it is too long, and drop what it holds."""
        if len(self._pending) > self.max_line_length:
            self._position += len(self._pending)
            frames.append((self._too_long(self._pending, None), self._position))
            self._pending = bytearray()
            self._discarding = True
        return frames

    def _too_long(self, line: bytes | bytearray, length: int | None) -> BadFrame:
        size = f"of {length} bytes" if length is not None else "still unfinished"
        return BadFrame(
            bytes(line[:40]),
            f"a line {size} is longer than max_line_length={self.max_line_length}; "
            "raise max_line_length if such lines are expected",
        )

    def finish(self) -> list[Frame]:
        if not self._pending:
            return []
        line = bytes(self._pending)
        self._position += len(line)
        self._pending.clear()
        return [(line[:-1] if line[-1:] == b"\r" else line, self._position)]


class LengthFramer:
    """Frames of a 4-byte big-endian length then that many bytes, at most ``max_frame_size``."""

    def __init__(self, max_frame_size: int, position: int = 0) -> None:
        self.max_frame_size = max_frame_size
        self.reset(position)

    def reset(self, position: int) -> None:
        self._buffer = bytearray()
        self._skip = 0  # bytes still to discard of an oversized frame, already reported
        self._position = position  # stream position of the start of self._buffer

    def feed(self, chunk: bytes) -> list[Frame]:
        if self._skip:
            dropped = min(self._skip, len(chunk))
            self._skip -= dropped
            self._position += dropped
            chunk = chunk[dropped:]
        buffer = self._buffer
        buffer += chunk
        frames: list[Frame] = []
        start = 0
        while len(buffer) - start >= 4:
            (size,) = _LENGTH.unpack_from(buffer, start)
            if size > self.max_frame_size:
                start += 4
                available = min(size, len(buffer) - start)
                self._skip = size - available
                frames.append(
                    (
                        BadFrame(
                            bytes(buffer[start : start + min(available, 40)]),
                            f"a frame of {size} bytes is larger than max_frame_size="
                            f"{self.max_frame_size}; raise max_frame_size if such frames "
                            "are expected",
                        ),
                        self._position + start + size,
                    )
                )
                start += available
                continue
            end = start + 4 + size
            if end > len(buffer):
                break
            frames.append((bytes(buffer[start + 4 : end]), self._position + end))
            start = end
        del buffer[:start]
        self._position += start
        return frames

    def finish(self) -> list[Frame]:
        if not self._buffer:
            return []
        got = len(self._buffer)
        expected = f"{_LENGTH.unpack_from(self._buffer)[0]} + 4" if got >= 4 else "a 4-byte header"
        self._position += got
        bad = BadFrame(
            bytes(self._buffer[4:44]),
            f"the stream ended inside a frame: got {got} of {expected} bytes",
        )
        self._buffer.clear()
        return [(bad, self._position)]


class ChunkFramer:
    """Every read as one record."""

    def __init__(self, position: int = 0) -> None:
        self._position = position

    def reset(self, position: int) -> None:
        self._position = position

    def feed(self, chunk: bytes) -> list[Frame]:
        self._position += len(chunk)
        return [(chunk, self._position)]

    def finish(self) -> list[Frame]:
        return []


def check_framing(
    framing: str, *, max_line_length: int, max_frame_size: int, read_size: int, where: str
) -> None:
    """Raise a clear error for a framing or a size that cannot work."""
    if framing not in FRAMINGS:
        raise ValueError(
            f"{where}: unknown framing {framing!r}; use 'lines' (newline-terminated), "
            "'length' (4-byte big-endian length prefix) or 'chunks' (each read as it came)"
        )
    for name, value in (
        ("max_line_length", max_line_length),
        ("max_frame_size", max_frame_size),
        ("read_size", read_size),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{where}: {name} must be a positive int, got {value!r}")
    if max_frame_size > _MAX_LENGTH_PREFIXED:
        raise ValueError(f"{where}: max_frame_size cannot exceed {_MAX_LENGTH_PREFIXED}")


def make_framer(
    framing: str,
    *,
    max_line_length: int = DEFAULT_MAX_LINE_LENGTH,
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
    read_size: int = DEFAULT_READ_SIZE,
    position: int = 0,
    where: str = "source",
) -> Framer:
    """A framer for ``framing``, starting at stream ``position`` (checks every argument)."""
    check_framing(
        framing,
        max_line_length=max_line_length,
        max_frame_size=max_frame_size,
        read_size=read_size,
        where=where,
    )
    if framing == "lines":
        return LineFramer(max_line_length, position)
    if framing == "length":
        return LengthFramer(max_frame_size, position)
    return ChunkFramer(position)


def decoder_and_framer(
    where: str,
    *,
    codec: Codec | CodecName,
    on_decode_error: DecodePolicy,
    dead_letter: Callable[[DecodeFailure], Any] | None,
    framing: str,
    max_line_length: int,
    max_frame_size: int,
    read_size: int,
    position: int = 0,
) -> tuple[Decoder, Framer]:
    """A byte-stream source's decoder and framer, every argument checked."""
    decoder = Decoder(codec, on_decode_error=on_decode_error, dead_letter=dead_letter, source=where)
    framer = make_framer(
        framing,
        max_line_length=max_line_length,
        max_frame_size=max_frame_size,
        read_size=read_size,
        position=position,
        where=where,
    )
    return decoder, framer


# -- frames to messages ----------------------------------------------------------------------


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


async def reject(decoder: Decoder, bad: BadFrame, key: str | bytes | None) -> Any:
    """Hand a bad frame to the decode policy, as if its codec had failed on it."""
    return await decoder.reject(bad.prefix, FramingError(bad.reason), key=key)


async def decode_frame(decoder: Decoder, data: bytes | BadFrame, key: str | bytes | None) -> Any:
    """The frame's value, or ``SKIPPED``; raises ``DecodeError`` under the "raise" policy.

    The codec is called here rather than through ``await decoder.decode()``: one coroutine
    less per record is a tenth of a file source's time per line.
    """
    if isinstance(data, BadFrame):
        return await reject(decoder, data, key)
    try:
        value = decoder.codec(data)
    except Exception as error:
        return await decoder.reject(data, error, key=key)
    decoder.decoded += 1
    return value


async def framed_messages(
    chunks: AsyncIterable[bytes | Restart],
    framer: Framer,
    decoder: Decoder,
    *,
    key: str | bytes | None,
    headers: Mapping[str, str] | None = NO_HEADERS,
    stamp: bool = False,
    position: int = 0,
    at_end: Callable[[], Awaitable[None]] | None = None,
) -> AsyncGenerator[Message[Any], None]:
    """The messages in a stream of chunks: framed, decoded, one at a time.

    ``headers=None`` gives each message its :class:`OffsetHeaders`; otherwise all share
    ``headers``. ``stamp``: each message's timestamp is when its chunk arrived. ``at_end`` is
    awaited after the last message (a process source checks the exit code there). Each
    message carries a no-op settlement: these transports cannot redeliver.
    """
    source = decoder.source
    codec = decoder.codec
    line = 0
    timestamp: float | None = None
    chunks = aiter(chunks)
    try:
        async for chunk in chunks:
            if type(chunk) is Restart:
                frames = framer.finish() if chunk.flush else []
                framer.reset(chunk.position)
            else:
                frames = framer.feed(chunk)  # type: ignore[arg-type]
            if stamp:
                timestamp = time.time()
            for data, end in frames:
                # decode_frame(), inlined: the common case costs no coroutine.
                if isinstance(data, BadFrame):
                    value = await reject(decoder, data, key)
                else:
                    try:
                        value = codec(data)
                    except Exception as error:
                        value = await decoder.reject(data, error, key=key)
                    else:
                        decoder.decoded += 1
                line += 1
                start, position = position, end
                if value is SKIPPED:
                    continue
                yield Message(
                    value,
                    key,
                    OffsetHeaders(start, end, line) if headers is None else headers,
                    timestamp,
                    source,
                    Settlement(),
                )
            if type(chunk) is Restart:
                position = chunk.position
                line = 0
        for data, end in framer.finish():
            value = await decode_frame(decoder, data, key)
            line += 1
            if value is not SKIPPED:
                headers_here = OffsetHeaders(position, end, line) if headers is None else headers
                yield Message(value, key, headers_here, timestamp, source, Settlement())
            position = end
        if at_end is not None:
            await at_end()
    finally:
        # Close the chunk source now (its file or socket), not whenever it is collected.
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()


# -- values to frames ------------------------------------------------------------------------


def make_writer(
    framing: str, codec: Encoder | str, *, where: str, max_frame_size: int = _MAX_LENGTH_PREFIXED
) -> Callable[[Sequence[Any]], bytes]:
    """A function turning a batch of values into the bytes of their frames.

    A :class:`~rxflow.connectors.Message` is written as its value, so a source's messages can
    go straight to a sink.
    """
    check_framing(
        framing,
        max_line_length=1,
        max_frame_size=max_frame_size,
        read_size=1,
        where=where,
    )
    encode = resolve_encoder(codec, where=where)

    def encoded(items: Sequence[Any]) -> list[bytes]:
        return [encode(item.value if isinstance(item, Message) else item) for item in items]

    def lines(items: Sequence[Any]) -> bytes:
        records = encoded(items)
        for record in records:
            if b"\n" in record:
                raise ValueError(
                    f"{where}: record {record[:60]!r} contains a newline, which would split it "
                    "in two; use framing='length', or a codec that escapes newlines (json)"
                )
        return b"\n".join(records) + b"\n" if records else b""

    def length_prefixed(items: Sequence[Any]) -> bytes:
        parts: list[bytes] = []
        for record in encoded(items):
            if len(record) > max_frame_size:
                raise ValueError(
                    f"{where}: a record of {len(record)} bytes exceeds max_frame_size="
                    f"{max_frame_size}"
                )
            parts += (_LENGTH.pack(len(record)), record)
        return b"".join(parts)

    def chunks(items: Sequence[Any]) -> bytes:
        return b"".join(encoded(items))

    return {"lines": lines, "length": length_prefixed, "chunks": chunks}[framing]


def check_batch_size(batch_size: int, *, where: str) -> int:
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"{where}: batch_size must be a positive int, got {batch_size!r}")
    return batch_size


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


class MessageStream:
    """What a byte-stream source yields: its messages, to iterate once, and its decoder.

    ``decoder.decoded``, ``decoder.skipped`` and ``decoder.dead_lettered`` count what the
    decode policy did.
    """

    def __init__(self, messages: AsyncGenerator[Message[Any]], decoder: Decoder) -> None:
        self._messages = messages
        self.decoder = decoder

    def __aiter__(self) -> AsyncGenerator[Message[Any], None]:
        # The generator itself, not a wrapper: no extra await per message.
        return self._messages

    async def aclose(self) -> None:
        await self._messages.aclose()


@contextlib.asynccontextmanager
async def streaming(
    messages: AsyncGenerator[Message[Any]], decoder: Decoder
) -> AsyncIterator[MessageStream]:
    """The :class:`MessageStream` a source yields; its generator is closed when the block
    ends, so the chunk source (file, socket, pipe) closes then, not when it is collected."""
    try:
        yield MessageStream(messages, decoder)
    finally:
        await messages.aclose()
