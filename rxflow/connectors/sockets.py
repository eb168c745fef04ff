"""TCP and UDP sockets as sources and sinks.

Backpressure. The TCP sources read a socket only when the consumer asks for more: what is
not read stays in the kernel's socket buffers, which fill, and TCP flow control then stops
the sender. rxflow itself holds at most one read (``read_size`` bytes) per connection.
UDP cannot be paused: datagrams that arrive while the consumer is slow queue in the
kernel's receive buffer (``SO_RCVBUF``) and the kernel drops those that do not fit. rxflow
adds no buffer of its own, so the bound is the kernel's, and so are the drops (as the
``drop_newest`` overflow policy would): ``source.dropped()`` reads the kernel's count.

Delivery. A socket cannot take acknowledgements: messages carry the no-op settlement, and
what was read but not processed when the program stops is lost (**at-most-once**). Make the
protocol above carry acknowledgements if you need more. :func:`tcp_sink` confirms a batch
once the kernel accepted its bytes, not once the peer processed them.

Example:
    >>> import anyio
    >>> from rxflow.connectors.sockets import tcp_server_source, tcp_sink
    >>> async def main():
    ...     async with tcp_server_source("127.0.0.1", 0, codec="text") as server:
    ...         async with tcp_sink("127.0.0.1", server.port, encoder="text") as sink:
    ...             await sink.send_batch(["hello", "world"])
    ...         messages = aiter(server)
    ...         return [(await anext(messages)).value for _ in range(2)]
    >>> anyio.run(main)
    ['hello', 'world']
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Unpack

import anyio
import anyio.lowlevel
from anyio.abc import ByteStream, SocketAttribute, SocketStream

from rxflow._checks import check_count
from rxflow._task_groups import background_tasks
from rxflow.connectors import _byte_streams as byte_streams
from rxflow.connectors._framed_sources import FramedStream, MessageStream
from rxflow.connectors._framing import DeadLetter, FrameRun
from rxflow.connectors._message import Message
from rxflow.connectors.codecs import Codec, CodecName, DecodePolicy, Decoder
from rxflow.errors import ServiceUnavailableError

__all__ = [
    "TcpServerSource",
    "TcpSink",
    "UdpSource",
    "tcp_server_source",
    "tcp_sink",
    "tcp_source",
    "udp_source",
]

# What a lost connection looks like: a reset, a broken pipe, or anyio's wrapper of them.
CONNECTION_LOST = (anyio.BrokenResourceError, ConnectionError, OSError)


def _address(address: Any) -> str:
    """``host:port`` (IPv6 hosts in brackets) from a socket address tuple."""
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


async def _connect(host: str, port: int, where: str) -> SocketStream:
    try:
        return await anyio.connect_tcp(host, port)
    except OSError as error:
        raise ServiceUnavailableError(
            f"{where}: could not connect to {host}:{port} ({error}); is the server running "
            "and listening there?"
        ) from error


async def _received(
    stream: ByteStream, read_size: int, where: str, counts: list[int]
) -> AsyncIterator[bytes]:
    """The chunks a connection receives; a reset becomes an error that says so."""
    while True:
        try:
            chunk = await stream.receive(read_size)
        except anyio.EndOfStream:
            return
        except CONNECTION_LOST as error:
            raise ServiceUnavailableError(
                f"{where}: the connection was lost mid-stream ({error!r}) after "
                f"{counts[0]} bytes; the records received before it were delivered, a partial "
                "record was dropped"
            ) from error
        counts[0] += len(chunk)
        yield chunk


@asynccontextmanager
async def tcp_source(
    host: str, port: int, **options: Unpack[byte_streams.FramedSourceOptions]
) -> AsyncIterator[MessageStream]:
    """Connect to ``host:port`` and read framed records until the server closes.

    Each message's key is ``"host:port"`` and its timestamp the time its bytes arrived. A
    connection that fails raises :class:`~rxflow.errors.ServiceUnavailableError`, at
    connect time or mid-stream (a reset), after the records received before it.

    Args:
        **options: how records are cut and decoded, as for every byte-stream source
            (:class:`~rxflow.connectors._byte_streams.FramedSourceOptions`): ``framing``
            (``"lines"``, ``"length"`` or ``"chunks"``), ``codec`` (default ``"bytes"``),
            ``on_decode_error`` and ``dead_letter`` (an over-long line or frame, or a frame
            cut short by the end of the stream, is a decode failure too),
            ``max_line_length``, ``max_frame_size`` and ``read_size`` (bytes per read; also
            the most rxflow buffers for the connection).

    Example:
        ::

            async with tcp_source("127.0.0.1", 9000, codec="json") as records:
                async for record in records:
                    print(record.value)
    """
    where = byte_streams.network_where("tcp", host, port)
    reading = byte_streams.FramedReading.from_options(where, options, codec="bytes")
    stream = await _connect(host, port, where)
    async with stream:
        chunks = _received(stream, reading.read_size, where, [0])
        async with FramedStream(reading, chunks, key=f"{host}:{port}", stamp=True) as records:
            yield records


Batch = tuple[str, float, FrameRun]  # a connection's peer, when its read came, its frames


class TcpServerSource(MessageStream):
    """The records of every client of a listening socket; see :func:`tcp_server_source`.

    ``port`` is the port it listens on; ``connections`` counts the clients accepted, ``lost``
    those whose connection broke (a reset) rather than closed. A run is the records of one
    read of one connection.

    Example:
        ::

            async with tcp_server_source(port=0) as server:   # a TcpServerSource
                print("send lines to port", server.port)
                async for line in server:
                    print(line.key, line.value, server.connections)
    """

    def __init__(
        self,
        reading: byte_streams.FramedReading,
        batches: anyio.abc.ObjectReceiveStream[Batch],
        host: str,
        port: int,
    ) -> None:
        super().__init__(reading.decoder)
        self._batches = batches
        self.host = host
        self.port = port
        self.connections = 0
        self.lost = 0

    async def _read_run(self) -> list[Message[Any]]:
        """Decode the batches of frames the connections hand over, as the consumer asks."""
        async for peer, timestamp, frames in self._batches:
            # The headers are shared by the messages of one read.
            run = await self._decode(
                frames.records,
                key=peer,
                headers={"peer": peer},
                timestamp=timestamp,
                clean=frames.clean,
            )
            if run:
                return run
        raise StopAsyncIteration


@asynccontextmanager
async def tcp_server_source(
    host: str = "127.0.0.1", port: int = 0, **options: Unpack[byte_streams.FramedSourceOptions]
) -> AsyncIterator[TcpServerSource]:
    """Listen on ``host:port`` and merge the framed records of every client that connects.

    Each connection is read by its own task, one read at a time, handed to the consumer
    before the next read: a slow consumer leaves the bytes in each client's socket, and TCP
    flow control slows every client down. A message's key (and ``peer`` header) is the
    client's ``"host:port"``. A client that disconnects, even by a reset, ends only its own
    records (``source.lost`` counts resets; a partial last record of a reset client is
    dropped). ``port=0`` picks a free port: read it from ``source.port``.

    Memory: each connection holds at most one read plus one unfinished record
    (``read_size`` + ``max_line_length`` or ``max_frame_size``); the number of connections is
    not limited here (limit it in front: a firewall, ``ulimit -n``).

    Args:
        **options: as for :func:`tcp_source`.

    Example:
        ::

            async with tcp_server_source("0.0.0.0", 9000, codec="text") as lines:
                async for line in lines:
                    print(line.key, line.value)
    """
    where = byte_streams.network_where("tcp-server", host, port, allow_zero=True)
    reading = byte_streams.FramedReading.from_options(where, options, codec="bytes")
    try:
        listener = await anyio.create_tcp_listener(local_host=host, local_port=port)
    except OSError as error:
        raise OSError(
            error.errno, f"{where}: could not listen on {host}:{port}: {error.strerror}"
        ) from error
    # A rendezvous: a connection's next read waits until the consumer took its last one.
    send, receive = anyio.create_memory_object_stream[Batch](0)
    server = TcpServerSource(reading, receive, host, listener.extra(SocketAttribute.local_port))

    async def serve(stream: SocketStream) -> None:
        peer = _address(stream.extra(SocketAttribute.remote_address))
        framer = reading.framer()  # each connection its own
        server.connections += 1
        async with stream:
            while True:
                try:
                    chunk: bytes | None = await stream.receive(reading.read_size)
                except anyio.EndOfStream:
                    chunk = None
                except CONNECTION_LOST:
                    server.lost += 1  # this client is gone; the others go on
                    return
                frames = framer.split(chunk) if chunk is not None else framer.finish_run()
                if frames.records:
                    try:
                        await send.send((peer, time.time(), frames))
                    except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                        return  # the consumer is gone
                if chunk is None:
                    return

    async with listener, send, receive, background_tasks() as tasks:
        tasks.start_soon(listener.serve, serve, tasks)
        try:
            yield server
        finally:
            await server.aclose()
            tasks.cancel_scope.cancel()


class UdpSource(MessageStream):
    """Datagrams received on a UDP socket; see :func:`udp_source`. ``port``: where.

    Example:
        ::

            async with udp_source(port=8125) as datagrams:   # a UdpSource
                async for datagram in datagrams:
                    print(datagram.value, "dropped so far:", datagrams.dropped())
    """

    def __init__(self, udp: socket.socket, decoder: Decoder) -> None:
        super().__init__(decoder)
        self._udp = udp
        self._received = 0
        self.port: int = udp.getsockname()[1]
        self._inode = str(os.fstat(udp.fileno()).st_ino)

    async def _read_run(self) -> list[Message[Any]]:
        """One datagram per ask, straight from the kernel's receive buffer.

        A raw socket, not anyio's UDP socket: on asyncio that one reads every datagram as it
        arrives into a queue of 100 that silently drops the oldest, and rxflow must neither
        buffer nor lose anything silently.
        """
        while True:
            try:
                data, address = self._udp.recvfrom(65536)
            except BlockingIOError:
                await anyio.wait_readable(self._udp)
                continue
            self._received += 1
            if self._received % 64 == 0:
                await anyio.lowlevel.checkpoint()  # a flood of datagrams must not starve the loop
            sender = _address(address)
            run = await self._decode(
                [data], key=sender, headers={"peer": sender}, timestamp=time.time()
            )
            if run:
                return run

    def dropped(self) -> int | None:
        """How many datagrams the kernel dropped because they did not fit in the receive
        buffer (the consumer was slower than the senders); ``None`` where the kernel does
        not say (only Linux does, in ``/proc/net/udp``)."""
        for table in ("/proc/net/udp", "/proc/net/udp6"):
            try:
                with open(table) as rows:
                    for row in rows:
                        fields = row.split()  # ... inode ref pointer drops
                        if len(fields) >= 13 and fields[9] == self._inode:
                            return int(fields[12])
            except OSError:
                continue
        return None


@asynccontextmanager
async def udp_source(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    codec: Codec | CodecName = "bytes",
    on_decode_error: DecodePolicy = "raise",
    dead_letter: DeadLetter = None,
    receive_buffer: int | None = None,
) -> AsyncIterator[UdpSource]:
    """Receive datagrams on ``host:port``: one datagram, one record; never ends by itself.

    UDP cannot be paused. Datagrams wait in the kernel's receive buffer until the consumer
    asks for the next one, and the kernel drops what does not fit: the bound is the
    kernel's, rxflow buffers nothing; ``source.dropped()`` says how many the kernel dropped
    (Linux). ``receive_buffer`` sets ``SO_RCVBUF`` (bytes; the kernel caps it at
    ``net.core.rmem_max``) to absorb longer bursts. A message's key is the sender's
    ``"host:port"``. ``port=0`` picks a free port: read it from ``source.port``. Unix only
    (it waits on the socket with ``anyio.wait_readable``).

    Example:
        ::

            async with udp_source("0.0.0.0", 8125, codec="text") as datagrams:
                async for datagram in datagrams:
                    print(datagram.key, datagram.value)
    """
    where = byte_streams.network_where("udp", host, port, allow_zero=True)
    decoder = Decoder(codec, on_decode_error=on_decode_error, dead_letter=dead_letter, source=where)
    check_count(where, "receive_buffer", receive_buffer, optional=True)
    try:
        (family, _, _, _, address), *_ = await anyio.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        udp = socket.socket(family, socket.SOCK_DGRAM)
    except OSError as error:
        raise OSError(error.errno, f"{where}: cannot resolve {host}: {error.strerror}") from error
    try:
        udp.setblocking(False)
        if receive_buffer is not None:
            udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        try:
            udp.bind(address)
        except OSError as error:
            raise OSError(
                error.errno, f"{where}: could not bind {host}:{port}: {error.strerror}"
            ) from error
        async with UdpSource(udp, decoder) as datagrams:
            yield datagrams
    finally:
        anyio.notify_closing(udp)
        udp.close()


class TcpSink(byte_streams.FramedSink):
    """Writes framed batches to a TCP connection; see :func:`tcp_sink`.

    ``send_batch`` returns once the kernel accepted all the batch's bytes, and raises
    :class:`~rxflow.errors.ServiceUnavailableError` if the connection was lost (the batch
    may then be partly delivered). ``sent`` counts the records confirmed.

    Example:
        ::

            async with tcp_sink("127.0.0.1", 9000, framing="length") as sink:   # a TcpSink
                await sink.send(b"\x00binary\x01")
    """

    def __init__(self, writer: byte_streams.FrameWriter, stream: SocketStream) -> None:
        super().__init__(writer)
        self._stream = stream

    async def _write(self, data: bytes) -> None:
        try:
            await self._stream.send(data)
        except CONNECTION_LOST as error:
            raise ServiceUnavailableError(
                f"{self._where}: the connection was lost ({error!r}) after {self.sent} "
                "records were sent; this batch may be partly delivered"
            ) from error


@asynccontextmanager
async def tcp_sink(
    host: str, port: int, **options: Unpack[byte_streams.FramedSinkOptions]
) -> AsyncIterator[TcpSink]:
    """Connect to ``host:port`` and send framed records.

    A :class:`~rxflow.connectors.Message` is sent as its value. A slow peer makes
    ``send_batch`` wait (TCP flow control). Leaving the block sends end-of-stream and closes.

    Args:
        **options: as for every byte-stream sink
            (:class:`~rxflow.connectors._byte_streams.FramedSinkOptions`): ``framing``
            (``"lines"``, ``"length"`` or ``"chunks"``), ``encoder`` (default ``"bytes"``)
            and ``batch_size``.

    Example:
        ::

            async with tcp_sink("127.0.0.1", 9000, encoder="json") as sink:
                await sink.send_batch([{"n": 1}, {"n": 2}])
    """
    where = byte_streams.network_where("tcp", host, port)
    writer = byte_streams.framed_writer(where, options, encoder="bytes")
    stream = await _connect(host, port, where)
    async with stream:
        yield TcpSink(writer, stream)
        with contextlib.suppress(*CONNECTION_LOST):  # a peer that is gone needs no end-of-stream
            await stream.send_eof()
