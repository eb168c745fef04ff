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
from itertools import accumulate
from typing import Any, Final, Literal, Protocol, cast

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
    "FrameRun",
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


Record = bytes | BadFrame  # a frame's bytes, or why there are none
Frame = tuple[Record, int]  # the record, and the stream position just past it


class FrameRun:
    """The frames of one read, as one list of records: what a source decodes at once.

    ``ends`` holds the stream position just past each record, or is ``None`` where each
    record was its bytes then ``b"\\n"`` (lines without ``\\r``, the common case): the
    positions then follow from the lengths, computed only by a source that reports them
    (a file's offsets), not built per line by the framer. ``clean``: no record is a
    :class:`BadFrame`, so a codec may decode the run in one call.

    Example:
        >>> run = make_framer("lines").split(b"one\\ntwo\\nthr")
        >>> run.records, run.ends, run.start, run.frames()
        ([b'one', b'two'], None, 0, [(b'one', 4), (b'two', 8)])
    """

    __slots__ = ("clean", "ends", "records", "start")

    def __init__(
        self, records: list[Record], ends: list[int] | None, start: int, clean: bool
    ) -> None:
        self.records = records  # the frames, in stream order
        self.ends = ends  # the position past each record (None: see the class docstring)
        self.start = start  # the stream position of the first record's first byte
        self.clean = clean  # True only if no record is a BadFrame

    @classmethod
    def of(cls, frames: Sequence[Frame], start: int) -> FrameRun:
        """The run of ``frames`` (records with their end positions), the first at ``start``."""
        records = [record for record, _ in frames]
        clean = not any(type(record) is BadFrame for record in records)
        return cls(records, [end for _, end in frames], start, clean)

    def positions(self) -> list[int]:
        """The stream position just past each record."""
        if self.ends is not None:
            return self.ends
        lengths = [len(cast(bytes, record)) + 1 for record in self.records]
        return list(accumulate(lengths, initial=self.start))[1:]

    def frames(self) -> list[Frame]:
        """Each record with the position just past it."""
        return list(zip(self.records, self.positions(), strict=True))


class Framer(Protocol):
    def feed(self, chunk: bytes) -> list[Frame]: ...

    def split(self, chunk: bytes) -> FrameRun:
        """What :meth:`feed` returns, as a :class:`FrameRun`."""
        ...

    def finish_run(self) -> FrameRun:
        """What :meth:`finish` returns, as a :class:`FrameRun`."""
        ...

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
        return self.split(chunk).frames()

    def split(self, chunk: bytes) -> FrameRun:
        if self._discarding:
            end = chunk.find(b"\n")
            if end < 0:
                self._position += len(chunk)
                return FrameRun([], [], self._position, True)
            self._position += end + 1
            self._discarding = False
            chunk = chunk[end + 1 :]
        start = self._position
        if b"\n" not in chunk:
            # Scan each byte for b"\n" once: a long line arriving in many reads is gathered,
            # not searched again and again.
            self._pending += chunk
            return self._check_pending(FrameRun([], [], start, True))
        if self._pending:
            chunk = bytes(self._pending) + chunk
            self._pending.clear()
        lines = chunk.split(b"\n")
        rest = lines.pop()
        self._pending += rest
        complete = len(chunk) - len(rest)  # the complete lines' bytes, newlines included
        limit = self.max_line_length
        if b"\r" not in chunk and (complete <= limit or max(map(len, lines)) <= limit):
            # The common case, checked for the whole read at once: nothing to strip or
            # refuse, so the lines are the run as split, their positions left implicit.
            self._position = start + complete
            return self._check_pending(FrameRun(cast(list[Record], lines), None, start, True))
        records: list[Record] = []
        ends: list[int] = []
        position = start
        clean = True
        for line in lines:
            position += len(line) + 1
            ends.append(position)
            if len(line) > limit:
                records.append(self._too_long(line, len(line)))
                clean = False
            else:
                records.append(line[:-1] if line[-1:] == b"\r" else line)
        self._position = position
        return self._check_pending(FrameRun(records, ends, start, clean))

    def _check_pending(self, run: FrameRun) -> FrameRun:
        """Report an unfinished line as soon as it is too long, and drop what it holds."""
        if len(self._pending) > self.max_line_length:
            self._position += len(self._pending)
            run.ends = run.positions()
            run.records.append(self._too_long(self._pending, None))
            run.ends.append(self._position)
            run.clean = False
            self._pending = bytearray()
            self._discarding = True
        return run

    def _too_long(self, line: bytes | bytearray, length: int | None) -> BadFrame:
        size = f"of {length} bytes" if length is not None else "still unfinished"
        return BadFrame(
            bytes(line[:40]),
            f"a line {size} is longer than max_line_length={self.max_line_length}; "
            "raise max_line_length if such lines are expected",
        )

    def finish_run(self) -> FrameRun:
        start = self._position
        return FrameRun.of(self.finish(), start)

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
        self._start = position  # where the first frame of the last read started

    def split(self, chunk: bytes) -> FrameRun:
        frames = self.feed(chunk)
        return FrameRun.of(frames, self._start)

    def finish_run(self) -> FrameRun:
        start = self._position
        return FrameRun.of(self.finish(), start)

    def feed(self, chunk: bytes) -> list[Frame]:
        if self._skip:
            dropped = min(self._skip, len(chunk))
            self._skip -= dropped
            self._position += dropped
            chunk = chunk[dropped:]
        self._start = self._position  # where the first frame of this read starts
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

    def split(self, chunk: bytes) -> FrameRun:
        start = self._position
        self._position += len(chunk)
        return FrameRun([chunk], [self._position], start, True)

    def finish(self) -> list[Frame]:
        return []

    def finish_run(self) -> FrameRun:
        return FrameRun([], [], self._position, True)


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
