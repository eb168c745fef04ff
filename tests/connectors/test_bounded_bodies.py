"""``poll_source`` reads at most ``max_body_bytes`` of an answer (10 MiB by default), and
``sse_source`` at most ``max_event_bytes`` of an event: past that, a clear error, and the
rest is not read. Against the local test HTTP server, on both backends."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from rxflow.connectors.http import DEFAULT_MAX_BODY_BYTES, poll_source, sse_source
from rxflow.errors import HttpResponseError
from rxflow.strategies import Retry
from tests.connectors.http_server import Exchange, Handler, serving
from tests.connectors.support import take

pytestmark = [pytest.mark.anyio, pytest.mark.filterwarnings("error::ResourceWarning")]

MiB = 1024 * 1024


def endless_json_array(sent: list[int]) -> Handler:
    """A chunked JSON array that never ends, counting what the server managed to send."""

    async def handler(exchange: Exchange) -> None:
        await exchange.start_stream(content_type="application/json")
        await exchange.send_chunk(b"[")
        try:
            while True:
                await exchange.send_chunk(b"1," * 32_768)
                sent[0] += 65_536
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            return  # the client hung up: what the test wants

    return handler


def json_body(size: int) -> Handler:
    """A JSON string of ``size`` bytes in all, with its Content-Length."""

    async def handler(exchange: Exchange) -> None:
        await exchange.respond(b'"' + b"x" * (size - 2) + b'"')

    return handler


async def declared_but_never_sent(exchange: Exchange) -> None:
    """A head announcing 100 MB, then nothing: a client that tried to read it would hang."""
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
    await exchange.stream.send(head % (100 * MiB))
    await exchange.wait_for_disconnect()


async def first_poll(url: str, **options: Any) -> list[Any]:
    async with poll_source(url, interval=60, retry=Retry(attempts=1), **options) as source:
        with anyio.fail_after(20):
            return [message.value for message in await take(source, 1)]


async def test_an_endless_answer_stops_at_max_body_bytes() -> None:
    sent = [0]
    async with serving({"GET /all": endless_json_array(sent)}) as server:
        url = server.url("/all") + "?token=s3cr3t"
        with pytest.raises(HttpResponseError) as raised:
            await first_poll(url, max_body_bytes=MiB)
    message = str(raised.value)
    assert "answered with a body still going, over max_body_bytes=1048576" in message
    assert "s3cr3t" not in message
    assert "token=***" in message
    assert raised.value.status_code == 200
    # The client stopped reading: the server got only socket buffers' worth further.
    assert sent[0] < 16 * MiB


async def test_a_declared_length_over_the_limit_is_refused_before_reading() -> None:
    async with serving({"GET /huge": declared_but_never_sent}) as server:
        with pytest.raises(HttpResponseError, match=r"a body of 104857600 bytes, over max_body"):
            await first_poll(server.url("/huge"))


async def test_the_default_limit_is_10_mib() -> None:
    routes = {"GET /fits": json_body(DEFAULT_MAX_BODY_BYTES), "GET /over": json_body(11 * MiB)}
    async with serving(routes) as server:
        (value,) = await first_poll(server.url("/fits"))
        assert len(value) == DEFAULT_MAX_BODY_BYTES - 2
        with pytest.raises(HttpResponseError, match="over max_body_bytes=10485760"):
            await first_poll(server.url("/over"))


async def test_a_body_of_exactly_the_limit_is_read_and_one_byte_more_is_not() -> None:
    routes = {"GET /100": json_body(100), "GET /101": json_body(101)}
    async with serving(routes) as server:
        assert await first_poll(server.url("/100"), max_body_bytes=100) == ["x" * 98]
        with pytest.raises(HttpResponseError, match="over max_body_bytes=100;"):
            await first_poll(server.url("/101"), max_body_bytes=100)


async def test_an_error_answer_quotes_only_the_start_of_its_body() -> None:
    sent = [0]

    async def endless_error(exchange: Exchange) -> None:
        await exchange.stream.send(
            b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        exchange.keep_alive = False
        try:
            while True:
                await exchange.send_chunk(b"n" * 65_536)
                sent[0] += 65_536
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            return

    async with serving({"GET /gone": endless_error}) as server:
        with pytest.raises(HttpResponseError, match=r"answered 404 .*body starts b'nnnn") as raised:
            await first_poll(server.url("/gone"))
    assert "n" * 201 not in str(raised.value)
    assert sent[0] < 16 * MiB


async def test_an_sse_event_over_max_event_bytes_ends_the_stream_naming_the_limit() -> None:
    async def one_huge_event(exchange: Exchange) -> None:
        await exchange.start_stream()
        await exchange.send_chunk(b"data: small\n\n")
        try:
            while True:  # one event whose data never ends
                await exchange.send_chunk(b"data: " + b"x" * 65_536 + b"\n")
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            return

    async with (
        serving({"GET /events": one_huge_event}) as server,
        sse_source(server.url("/events") + "?access_token=s3cr3t", max_event_bytes=MiB) as events,
    ):
        assert [m.value for m in await take(events, 1)] == ["small"]
        with anyio.fail_after(20), pytest.raises(HttpResponseError) as raised:
            await take(events, 1)
    assert "over max_event_bytes=1048576" in str(raised.value)
    assert "s3cr3t" not in str(raised.value)
