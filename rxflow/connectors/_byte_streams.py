"""The options of the byte-stream connectors (files, sockets, pipes, stdio), and their sinks.

Every byte-stream source takes the same keyword options (:class:`FramedSourceOptions`) and
every byte-stream sink the same ones (:class:`FramedSinkOptions`); they are checked here,
once, by :meth:`FramedReading.from_options` and :func:`framed_writer`. A connector module
keeps only what is special to its transport: how it opens, reads chunks, writes bytes and
closes. Sources read through :mod:`rxflow.connectors._framed_sources`; sinks write with
:class:`FramedSink`.

Example:
    >>> reading = FramedReading.from_options("demo", {"framing": "length"}, codec="text")
    >>> reading.framing, reading.decoder.codec.__name__, reading.read_size
    ('length', 'as_text', 65536)
    >>> FramedReading.from_options("demo", {"framming": "x"}, codec="text")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    TypeError: demo: unexpected keyword argument 'framming'; the options are framing, codec, ...
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, Self, TypedDict

import anyio
import attrs

from rxflow._checks import check_count, check_host, check_port
from rxflow.connectors._framing import (
    DEFAULT_MAX_FRAME_SIZE,
    DEFAULT_MAX_LINE_LENGTH,
    DEFAULT_READ_SIZE,
    DeadLetter,
    Framer,
    Framing,
    check_framing,
    make_framer,
    make_writer,
)
from rxflow.connectors.codecs import (
    Codec,
    CodecName,
    DecodePolicy,
    Decoder,
    EncoderSpec,
    sink_encoder,
)

__all__ = [
    "FramedReading",
    "FramedSink",
    "FramedSinkOptions",
    "FramedSourceOptions",
    "FrameWriter",
    "framed_writer",
    "network_where",
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
    * ``encoder``: ``"auto"``, ``"bytes"``, ``"text"``, ``"json"``, a record class or a
      function value -> bytes (:mod:`rxflow.connectors.codecs`); the default is each
      sink's own (``"text"`` for files and processes, ``"bytes"`` for TCP).
    * ``codec``: the former name of ``encoder`` (deprecated; a ``DeprecationWarning``).
    * ``batch_size``: the batch size a flow should use (1000).
    """

    framing: Framing
    encoder: EncoderSpec
    codec: EncoderSpec
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


@attrs.frozen
class FramedReading:
    """How a byte-stream source cuts and decodes what it reads, every option checked.

    Made by :meth:`from_options` before the source opens anything, so that a bad option
    fails at once; a :class:`~rxflow.connectors._framed_sources.FramedStream` then reads a
    stream of chunks with it.
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


# -- sinks -----------------------------------------------------------------------------------


@attrs.frozen
class FrameWriter:
    """How a byte-stream sink writes, every option checked: see :func:`framed_writer`."""

    where: str  # the sink's name, in errors (``"tcp:host:port"``)
    frames: Callable[[Sequence[Any]], bytes]  # a batch of values -> the bytes of their frames
    batch_size: int  # the batch size a flow should use


def framed_writer(where: str, options: FramedSinkOptions, *, encoder: EncoderSpec) -> FrameWriter:
    """A byte-stream sink's :class:`FrameWriter`, from its ``options``; ``encoder`` is the
    sink's default encoder."""
    _check_keywords(where, options, FramedSinkOptions)
    encode = sink_encoder(
        where,
        options.get("encoder"),
        codec=options.get("codec"),
        default=encoder,
        stacklevel=5,  # sink_encoder, framed_writer, the sink, contextlib, the sink's caller
    )
    frames = make_writer(options.get("framing", "lines"), encode, where=where)
    batch_size = check_count(where, "batch_size", options.get("batch_size", DEFAULT_BATCH_SIZE))
    return FrameWriter(where, frames, batch_size)


class FramedSink:
    """A sink that frames each batch into one ``bytes`` and writes it whole.

    Subclasses implement :meth:`_write`: it returns once the write is confirmed (on disk,
    accepted by the kernel or the pipe).
    """

    def __init__(self, writer: FrameWriter) -> None:
        self._where = writer.where
        self._frames = writer.frames
        self._lock = anyio.Lock()  # concurrent batches are written whole, one after the other
        self.batch_size = writer.batch_size
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
