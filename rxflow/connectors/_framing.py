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
    >>> from rxflow.connectors import codecs
    >>> framer = make_framer("lines")
    >>> [line for line, _ in framer.feed(b"one\\r\\ntwo\\nthr")]
    [b'one', b'two']
    >>> framer.finish()
    [(b'thr', 12)]
    >>> lines_writer = make_writer("lines", codecs.encode_text, where="demo")
    >>> lines_writer(["a", "b"])
    b'a\\nb\\n'
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from typing import Any, Final, Literal, Protocol

import attrs

from rxflow._checks import check_count
from rxflow.connectors import codecs
from rxflow.connectors._message import Message
from rxflow.errors import FramingError  # here too, where it was defined before

__all__ = [
    "DEFAULT_MAX_FRAME_SIZE",
    "DEFAULT_MAX_LINE_LENGTH",
    "DEFAULT_READ_SIZE",
    "BadFrame",
    "ChunkFramer",
    "Frame",
    "Framer",
    "Framing",
    "FramingError",
    "LengthFramer",
    "LineFramer",
    "check_framing",
    "make_framer",
    "make_writer",
]

Framing = Literal["lines", "length", "chunks"]
# Where the decode policy "dead_letter" sends the records the codec rejects.
DeadLetter = Callable[[codecs.DecodeFailure], Any] | None
FRAMINGS: Final = ("lines", "length", "chunks")
DEFAULT_MAX_LINE_LENGTH: Final = 1 << 20  # 1 MiB
DEFAULT_MAX_FRAME_SIZE: Final = 16 << 20  # 16 MiB
DEFAULT_READ_SIZE: Final = 1 << 16  # 64 KiB per read: thousands of short lines per read
_LENGTH: Final = struct.Struct(">I")
_MAX_LENGTH_PREFIXED: Final = (1 << 32) - 1


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
    check_count(where, "max_line_length", max_line_length)
    check_count(where, "max_frame_size", max_frame_size)
    check_count(where, "read_size", read_size)
    if max_frame_size > _MAX_LENGTH_PREFIXED:
        raise ValueError(f"{where}: max_frame_size cannot exceed {_MAX_LENGTH_PREFIXED}")


def make_framer(
    framing: str,
    *,
    max_line_length: int = DEFAULT_MAX_LINE_LENGTH,
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
    position: int = 0,
) -> Framer:
    """A framer for ``framing``, starting at stream ``position``; the arguments are those
    :func:`check_framing` accepted."""
    if framing == "lines":
        return LineFramer(max_line_length, position)
    if framing == "length":
        return LengthFramer(max_frame_size, position)
    return ChunkFramer(position)


# -- values to frames ------------------------------------------------------------------------


def make_writer(
    framing: str,
    encode: codecs.Encoder,
    *,
    where: str,
    max_frame_size: int = _MAX_LENGTH_PREFIXED,
) -> Callable[[Sequence[Any]], bytes]:
    """A function turning a batch of values into the bytes of their frames, each value
    encoded by ``encode``.

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

    def encoded(items: Sequence[Any]) -> list[bytes]:
        return [encode(item.value if isinstance(item, Message) else item) for item in items]

    def lines(items: Sequence[Any]) -> bytes:
        records = encoded(items)
        for record in records:
            if b"\n" in record:
                raise ValueError(
                    f"{where}: record {record[:60]!r} contains a newline, which would split it "
                    "in two; use framing='length', or an encoder that escapes newlines (json)"
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
