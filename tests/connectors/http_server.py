"""A small real HTTP/1.1 server for the HTTP connector's tests and benchmarks.

It runs on anyio TCP listeners inside the caller's event loop (asyncio or trio), so httpx
talks to it over real loopback sockets: real framing, real TCP flow control, real
disconnects. Each test routes paths to handlers, async functions that answer an
:class:`Exchange` however the test needs: a JSON body, a chunked ``text/event-stream``
written piece by piece, a dropped connection (return without :meth:`Exchange.end_stream`),
or waiting to see the client hang up.

Example:
    A handler and a server around a test body::

        async def hello(exchange: Exchange) -> None:
            await exchange.respond_json({"hello": "world"})

        async with serving({"GET /hello": hello}) as server:
            response = await httpx.AsyncClient().get(server.url("/hello"))
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import anyio
import attrs
from anyio.abc import SocketStream

MAX_HEAD = 64 * 1024
REASONS = {
    200: "OK",
    204: "No Content",
    304: "Not Modified",
    404: "Not Found",
    500: "Internal Server Error",
}


@attrs.frozen
class Request:
    """One request as the server read it (header names lower-cased)."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Exchange:
    """A request and the connection to answer it on."""

    def __init__(self, request: Request, stream: SocketStream) -> None:
        self.request = request
        self.stream = stream
        self.keep_alive = True  # False once the response can only end with the connection

    async def respond(
        self,
        body: bytes = b"",
        *,
        status: int = 200,
        content_type: str = "application/json",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """A complete response with a ``Content-Length``; the connection stays open."""
        fields = {"Content-Type": content_type, "Content-Length": str(len(body))}
        await self.stream.send(_head(status, {**fields, **(headers or {})}) + body)

    async def respond_json(
        self, value: Any, *, status: int = 200, headers: Mapping[str, str] | None = None
    ) -> None:
        await self.respond(json.dumps(value).encode(), status=status, headers=headers)

    async def start_stream(
        self, *, status: int = 200, content_type: str = "text/event-stream"
    ) -> None:
        """Begin a chunked response; send pieces with :meth:`send_chunk`."""
        self.keep_alive = False
        fields = {"Content-Type": content_type, "Transfer-Encoding": "chunked"}
        await self.stream.send(_head(status, {**fields, "Cache-Control": "no-cache"}))

    async def send_chunk(self, data: bytes) -> None:
        if data:
            await self.stream.send(b"%x\r\n%s\r\n" % (len(data), data))

    async def end_stream(self) -> None:
        """End the chunked body properly (returning without it drops the connection)."""
        await self.stream.send(b"0\r\n\r\n")

    async def wait_for_disconnect(self) -> None:
        """Return once the client closed its end of the connection."""
        self.keep_alive = False
        try:
            while await self.stream.receive():
                pass
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass


Handler = Callable[[Exchange], Awaitable[None]]


async def not_found(exchange: Exchange) -> None:
    await exchange.respond(b"no such route", status=404, content_type="text/plain")


class HttpServer:
    """The running server: its address, its routes and every request it received."""

    def __init__(self, port: int, routes: Mapping[str, Handler]) -> None:
        self.port = port
        self.routes = dict(routes)  # "GET /path" -> handler
        self.requests: list[Request] = []

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def _serve_connection(self, stream: SocketStream) -> None:
        buffer = bytearray()
        async with stream:
            try:
                while (request := await _read_request(stream, buffer)) is not None:
                    self.requests.append(request)
                    exchange = Exchange(request, stream)
                    handler = self.routes.get(f"{request.method} {request.path}", not_found)
                    await handler(exchange)
                    if not exchange.keep_alive:
                        return  # closing here is how a handler drops a stream midway
            except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
                pass  # the client went away; that is the test's business, not an error


@asynccontextmanager
async def serving(routes: Mapping[str, Handler]) -> AsyncIterator[HttpServer]:
    """Serve ``routes`` on a free loopback port until the block ends."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    server = HttpServer(port, routes)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, server._serve_connection)
        try:
            yield server
        finally:
            tg.cancel_scope.cancel()


def _head(status: int, headers: Mapping[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def _read_request(stream: SocketStream, buffer: bytearray) -> Request | None:
    """The next request on the connection, or None once the client closed it."""
    while (end := buffer.find(b"\r\n\r\n")) < 0:
        if len(buffer) > MAX_HEAD:
            raise anyio.BrokenResourceError("request head too large")
        try:
            buffer += await stream.receive()
        except anyio.EndOfStream:
            return None
    head = bytes(buffer[:end]).decode("latin-1").split("\r\n")
    del buffer[: end + 4]
    method, target, _version = head[0].split(" ", 2)
    headers = {}
    for line in head[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(buffer) < length:
        buffer += await stream.receive()
    body = bytes(buffer[:length])
    del buffer[:length]
    url = urlsplit(target)
    return Request(method, url.path, dict(parse_qsl(url.query)), headers, body)
