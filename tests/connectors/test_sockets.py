"""Sockets: TCP client and server sources, TCP sink, UDP; real sockets on 127.0.0.1.

Backpressure is shown with the kernel: a consumer that stops reading leaves a fast writer
blocked, far short of what it wanted to send, and everything arrives once it reads again.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from anyio.abc import SocketAttribute, SocketStream

from rxflow.connectors import Message
from rxflow.connectors.codecs import DecodeFailure
from rxflow.connectors.sockets import tcp_server_source, tcp_sink, tcp_source, udp_source
from rxflow.errors import DecodeError, ServiceUnavailableError
from tests.connectors.support import runs_of, values_through_a_bounded_pipe

pytestmark = pytest.mark.anyio

LINE = b"x" * (16 * 1024 - 1) + b"\n"  # 16 KiB lines
TOTAL = 96 * 1024 * 1024  # more than the kernel buffers of a connection can hold (~36 MiB)


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


@asynccontextmanager
async def server(handler: Callable[[SocketStream], Awaitable[None]]) -> AsyncIterator[int]:
    """A raw anyio TCP server on a free port, running ``handler`` per connection."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    async with listener, anyio.create_task_group() as tasks:
        tasks.start_soon(listener.serve, handler)
        yield listener.extra(SocketAttribute.local_port)
        tasks.cancel_scope.cancel()


def reset(stream: SocketStream) -> None:
    """Make closing ``stream`` send a TCP reset instead of an orderly end."""
    raw = stream.extra(SocketAttribute.raw_socket)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


async def test_tcp_sink_to_server_source_in_lines_and_length_framing() -> None:
    records = [{"n": n, "text": "line\nbreak"} for n in range(500)]
    for framing in ("lines", "length"):
        async with tcp_server_source(framing=framing, codec="json") as source:
            async with tcp_sink("127.0.0.1", source.port, framing=framing, encoder="json") as sink:
                await sink.send_batch(records[:250])
                await sink.send_batch(records[250:])
                await sink.send(Message({"n": "last"}))
                assert sink.sent == 501
            received = []
            with anyio.fail_after(10):
                async for message in source:
                    received.append(message)
                    if len(received) == 501:
                        break
            assert [m.value for m in received] == [*records, {"n": "last"}]
            peer = received[0].key
            assert isinstance(peer, str)
            assert peer.startswith("127.0.0.1:")
            assert received[0].headers == {"peer": peer}
            assert received[0].timestamp is not None


async def test_server_source_merges_clients_and_one_reset_does_not_end_it() -> None:
    async with tcp_server_source(codec="text") as source:
        port = source.port
        async with tcp_sink("127.0.0.1", port, encoder="text") as first:
            await first.send_batch(["a1", "a2"])
        broken = await anyio.connect_tcp("127.0.0.1", port)
        await broken.send(b"b1\nunfinish")
        async with tcp_sink("127.0.0.1", port, encoder="text") as third:
            await third.send("c1")
        received: dict[str, list[str]] = {}
        iterator = aiter(source)
        with anyio.fail_after(10):
            for _ in range(4):
                message = await anext(iterator)
                received.setdefault(str(message.key), []).append(message.value)
            reset(broken)
            await broken.aclose()
            await anyio.wait_all_tasks_blocked()  # the reset reached its connection's task
        assert source.lost == 1
        assert sorted(received.values()) == [["a1", "a2"], ["b1"], ["c1"]]
        assert source.connections == 3
        async with tcp_sink("127.0.0.1", port, encoder="text") as fourth:
            await fourth.send("d1")
        with anyio.fail_after(10):
            assert (await anext(iterator)).value == "d1"  # the reset ended only that client


async def test_tcp_source_reads_until_the_server_closes() -> None:
    async def handler(stream: SocketStream) -> None:
        async with stream:
            await stream.send(b"one\r\ntwo\nthree")  # the last line ends with the stream

    async with server(handler) as port, tcp_source("127.0.0.1", port, codec="text") as lines:
        with anyio.fail_after(10):
            messages = [message async for message in lines]
    assert [m.value for m in messages] == ["one", "two", "three"]
    assert {m.key for m in messages} == {f"127.0.0.1:{port}"}


async def test_tcp_sources_hand_over_a_read_as_a_run_and_a_pipe_still_bounds_items() -> None:
    async def handler(stream: SocketStream) -> None:
        async with stream:
            await stream.send(b"".join(b"%d\n" % n for n in range(5000)))

    async with server(handler) as port:
        async with tcp_source("127.0.0.1", port, codec="text") as lines:
            with anyio.fail_after(10):
                runs = await runs_of(lines)
        assert [m.value for run in runs for m in run] == [str(n) for n in range(5000)]
        assert len(runs) < 5000
        async with tcp_source("127.0.0.1", port, codec="text") as lines:
            with anyio.fail_after(10):
                values = await values_through_a_bounded_pipe(lines, bound=8)
        assert values == [str(n) for n in range(5000)]
    async with tcp_server_source(codec="text") as source:
        async with tcp_sink("127.0.0.1", source.port, encoder="text") as sink:
            await sink.send_batch(["a", "b", "c"])  # one write: one read, one run
        with anyio.fail_after(10):
            run = await source.next_run()
        assert [(m.value, m.headers["peer"]) for m in run] == [(v, run[0].key) for v in "abc"]


async def test_a_sinks_codec_still_works_as_encoder_with_a_deprecation_warning() -> None:
    async with tcp_server_source(codec="json") as source:
        with pytest.warns(DeprecationWarning, match="codec= is deprecated; pass encoder='json'"):
            async with tcp_sink("127.0.0.1", source.port, codec="json") as sink:
                await sink.send({"n": 1})
        with anyio.fail_after(10):
            assert (await anext(aiter(source))).value == {"n": 1}


async def test_a_connection_reset_mid_stream_is_a_clear_error() -> None:
    delivered = anyio.Event()

    async def handler(stream: SocketStream) -> None:
        await stream.send(b"one\ntwo\n")
        await delivered.wait()
        reset(stream)
        await stream.aclose()

    received = []
    async with server(handler) as port, tcp_source("127.0.0.1", port, codec="text") as lines:
        with anyio.fail_after(10), pytest.raises(ServiceUnavailableError) as raised:
            async for message in lines:
                received.append(message.value)
                if len(received) == 2:
                    delivered.set()
    assert received == ["one", "two"]
    assert f"tcp:127.0.0.1:{port}: the connection was lost mid-stream" in str(raised.value)
    assert "after 8 bytes" in str(raised.value)


async def test_connecting_to_nothing_names_the_address() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ServiceUnavailableError, match=f"could not connect to 127.0.0.1:{port}"):
        async with tcp_source("127.0.0.1", port):
            pass
    with pytest.raises(ServiceUnavailableError, match=f"tcp:127.0.0.1:{port}"):
        async with tcp_sink("127.0.0.1", port):
            pass


async def test_a_slow_consumer_leaves_the_bytes_in_the_kernel_and_blocks_the_writer() -> None:
    sent = 0

    async def fast_writer(stream: SocketStream) -> None:
        nonlocal sent
        async with stream:
            chunk = LINE * 16
            while sent < TOTAL:
                await stream.send(chunk)
                sent += len(chunk)

    async with server(fast_writer) as port, tcp_source("127.0.0.1", port) as lines:
        iterator = aiter(lines)
        with anyio.fail_after(20):
            await anext(iterator)
            await anyio.wait_all_tasks_blocked()  # the writer blocks: nobody reads
            assert sent < TOTAL // 2
            received = 1 + sum([1 async for _ in iterator])
    assert received == TOTAL // len(LINE)  # and nothing was lost


async def test_a_slow_consumer_of_a_server_source_blocks_its_clients() -> None:
    sent = 0
    async with tcp_server_source() as source, anyio.create_task_group() as tasks:

        async def fast_client() -> None:
            nonlocal sent
            async with await anyio.connect_tcp("127.0.0.1", source.port) as stream:
                chunk = LINE * 16
                while sent < TOTAL:
                    await stream.send(chunk)
                    sent += len(chunk)

        tasks.start_soon(fast_client)
        iterator = aiter(source)
        with anyio.fail_after(20):
            await anext(iterator)
            await anyio.wait_all_tasks_blocked()
            assert sent < TOTAL // 2
            received = 1
            while received < TOTAL // len(LINE):
                await anext(iterator)
                received += 1


async def test_an_endless_line_is_a_decode_failure_not_unbounded_memory() -> None:
    async def endless(stream: SocketStream) -> None:
        async with stream:
            with contextlib.suppress(anyio.BrokenResourceError):  # until the reader leaves
                await stream.send(b"fine\n")
                while True:
                    await stream.send(b"y" * 65536)  # never a newline

    async with server(endless) as port:
        async with tcp_source("127.0.0.1", port, codec="text", max_line_length=1000) as lines:
            received = []
            with anyio.fail_after(10), pytest.raises(DecodeError, match="max_line_length=1000"):
                async for message in lines:
                    received.append(message.value)
        assert received == ["fine"]
        dead: list[DecodeFailure] = []
        async with tcp_source(
            "127.0.0.1",
            port,
            max_line_length=1000,
            on_decode_error="dead_letter",
            dead_letter=dead.append,
        ) as lines:
            iterator = aiter(lines)
            with anyio.fail_after(10):
                await anext(iterator)
                while not dead:  # the over-long line goes aside; reading goes on, bounded
                    with anyio.move_on_after(0.05):
                        await anext(iterator)
        assert dead[0].data == b"y" * 40


async def test_decode_policies_over_tcp() -> None:
    async def handler(stream: SocketStream) -> None:
        async with stream:
            await stream.send(b'{"n": 1}\nnot json\n{"n": 2}\n')

    async with server(handler) as port:
        async with tcp_source("127.0.0.1", port, codec="json", on_decode_error="skip") as lines:
            with anyio.fail_after(10):
                assert [m.value async for m in lines] == [{"n": 1}, {"n": 2}]
        assert lines.decoder.skipped == 1
        async with tcp_source("127.0.0.1", port, codec="json") as lines:
            with anyio.fail_after(10), pytest.raises(DecodeError, match=r"record '127\.0\.0\.1:"):
                async for _ in lines:
                    pass


async def test_a_truncated_length_prefixed_frame_is_a_decode_failure() -> None:
    async def handler(stream: SocketStream) -> None:
        async with stream:
            await stream.send(struct.pack(">I", 3) + b"one" + struct.pack(">I", 10) + b"cut")

    async with server(handler) as port, tcp_source("127.0.0.1", port, framing="length") as frames:
        received = []
        with anyio.fail_after(10), pytest.raises(DecodeError, match="ended inside a frame"):
            async for message in frames:
                received.append(message.value)
    assert received == [b"one"]


async def test_tcp_sink_to_a_peer_that_resets_is_a_clear_error() -> None:
    async def slam(stream: SocketStream) -> None:
        reset(stream)
        await stream.aclose()

    async with server(slam) as port, tcp_sink("127.0.0.1", port, encoder="bytes") as sink:
        with (
            anyio.fail_after(10),
            pytest.raises(ServiceUnavailableError, match="connection was lost"),
        ):
            while True:  # the reset arrives after a write or two
                await sink.send(b"x" * 65536)
                await anyio.sleep(0.01)


async def test_udp_datagrams_with_a_decode_policy() -> None:
    async with udp_source(codec="json", on_decode_error="skip", receive_buffer=1 << 20) as source:
        async with await anyio.create_connected_udp_socket("127.0.0.1", source.port) as client:
            for payload in (b'{"n": 1}', b"junk", b'{"n": 2}'):
                await client.send(payload)
            local = client.extra(SocketAttribute.local_port)
        iterator = aiter(source)
        with anyio.fail_after(10):
            messages = [await anext(iterator) for _ in range(2)]
    assert [m.value for m in messages] == [{"n": 1}, {"n": 2}]
    assert messages[0].key == f"127.0.0.1:{local}"
    assert source.decoder.skipped == 1


async def test_udp_cannot_be_paused_so_the_kernel_drops_and_says_how_many() -> None:
    sent = 300
    async with udp_source(receive_buffer=4096) as source:
        async with await anyio.create_connected_udp_socket("127.0.0.1", source.port) as client:
            for n in range(sent):  # nobody reads meanwhile
                await client.send(n.to_bytes(2, "big") + b"." * 998)
        dropped = source.dropped()
        assert dropped is not None
        assert 0 < dropped < sent
        iterator = aiter(source)
        with anyio.fail_after(10):
            received = [
                int.from_bytes((await anext(iterator)).value[:2]) for _ in range(sent - dropped)
            ]
    assert received == list(range(sent - dropped))  # the first ones fit, the newest were dropped


async def cancel_while_reading(source_cm: Any, *, connect: bool = False) -> None:
    """Enter a source, start reading it (a client connected, if asked), then cancel."""
    with anyio.move_on_after(10) as scope:  # the cancellation comes from inside, at once
        async with source_cm as source:
            client = await anyio.connect_tcp("127.0.0.1", source.port) if connect else None
            try:
                async with anyio.create_task_group() as tasks:

                    async def read() -> None:
                        async for _ in source:
                            pass

                    tasks.start_soon(read)
                    await anyio.wait_all_tasks_blocked()
                    scope.cancel()
                    await anyio.sleep_forever()
            finally:
                if client is not None:
                    with anyio.CancelScope(shield=True):
                        await client.aclose()
    assert scope.cancel_called


async def test_cancellation_closes_every_socket() -> None:
    before = open_fds()

    async def silent(stream: SocketStream) -> None:
        async with stream:
            await anyio.sleep_forever()

    async with server(silent) as port:
        await cancel_while_reading(tcp_source("127.0.0.1", port))
    await cancel_while_reading(tcp_server_source(), connect=True)
    await cancel_while_reading(udp_source())
    assert open_fds() == before


async def test_bad_arguments_say_what_to_do() -> None:
    with pytest.raises(ValueError, match="unknown framing 'json'"):
        async with tcp_source("127.0.0.1", 1, framing="json"):  # type: ignore[arg-type]
            pass
    with pytest.raises(ValueError, match="read_size must be an int of 1 or more"):
        async with tcp_server_source(read_size=0):
            pass
    with pytest.raises(ValueError, match="batch_size must be an int of 1 or more"):
        async with tcp_sink("127.0.0.1", 1, batch_size=0):
            pass
    with pytest.raises(ValueError, match="on_decode_error='dead_letter' and dead_letter"):
        async with udp_source(on_decode_error="dead_letter"):
            pass
