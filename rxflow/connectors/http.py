"""HTTP through httpx: server-sent events and polling as sources, POST as a sink.

httpx runs natively on asyncio and on trio, so these connectors call it directly on either
backend. Each takes an ``httpx.AsyncClient`` to share (its connection pool, auth, proxies;
it is left open) or makes its own and closes it on exit.

* :func:`sse_source` reads a ``text/event-stream`` (parsed as the WHATWG spec says) and,
  when the connection drops, reconnects with ``Last-Event-ID`` so that the server resumes
  after the last event seen. The body is read only as the consumer pulls: a slow consumer
  leaves the bytes in the socket, and TCP flow control holds the server back.
* :func:`poll_source` fetches a JSON endpoint every ``interval`` and yields the items of
  each answer; a ``cursor`` function turns the last item into the next request's
  parameters so that only new items come.
* :func:`http_post_sink` POSTs batches as JSON arrays and returns once the server answered
  2xx.

HTTP has no acknowledgement, so the messages' settlements do nothing: at-least-once across
restarts comes from the server's side (``Last-Event-ID``, a ``since`` cursor) and the ids
you keep. Server errors (5xx, 408, 429) and broken connections are retried with
exponential backoff a bounded number of times; then :class:`HttpResponseError` or
:class:`~rxflow.errors.ServiceUnavailableError` names the URL and what happened.
"""

from __future__ import annotations

import contextlib
import json
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, NamedTuple

import anyio

from rxflow._checks import check_count, check_function, check_seconds
from rxflow.connectors._extras import requires_extra
from rxflow.connectors._message import Message
from rxflow.connectors._redact import mask_url, mask_urls_in, redact_logs_of
from rxflow.connectors.codecs import (
    SKIPPED,
    Codec,
    CodecName,
    DecodeFailure,
    DecodePolicy,
    Decoder,
)
from rxflow.errors import HttpResponseError, ServiceUnavailableError

with requires_extra("http"):
    import httpx

DeadLetter = Callable[[DecodeFailure], Awaitable[object] | object]
MAX_BACKOFF = 30.0  # seconds: the longest wait between two attempts
DEFAULT_MAX_EVENT_BYTES = 16 * 1024 * 1024
DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024
ERROR_BODY_BYTES = 200  # what an error quotes of a body it did not expect

# httpx logs every request's URL (at INFO): its query's secrets are masked there too.
redact_logs_of("httpx")


# -- server-sent events: the parser ------------------------------------------------------


class ServerSentEvent(NamedTuple):
    """One dispatched event: its type, its data (lines joined by ``\\n``) and the last event
    id at that point (``""`` if the stream never set one).

    A NamedTuple rather than an attrs class: one is made per event on the hot path, and
    unpacked right away.

    Example:
        >>> ServerSentEvent("update", b"42", "7").data
        b'42'
    """

    type: str
    data: bytes
    id: str


class SseParser:
    """The WHATWG event-stream parser, fed bytes in chunks cut anywhere.

    Lines end with CRLF, LF or CR; a blank line dispatches the event; ``data`` lines
    accumulate; ``event`` sets the type; ``id`` sets the last event id (it persists to the
    next events, and an id-only block updates it without dispatching); ``retry`` sets the
    reconnection time; lines starting with ``:`` are comments; an event not ended by a
    blank line when the stream ends is discarded. Data stays bytes for the codec.

    What it holds between chunks (an unfinished line, an undispatched event's data) is
    bounded by ``max_event_bytes``; a stream that goes past it raises ``ValueError``.

    Example:
        >>> parser = SseParser()
        >>> parser.feed(b": hello\\r\\nid: 7\\r\\ndata: a\\r")
        []
        >>> parser.feed(b"\\ndata: b\\r\\n\\r\\n")
        [ServerSentEvent(type='message', data=b'a\\nb', id='7')]
    """

    def __init__(
        self,
        last_event_id: str = "",
        retry: float | None = None,
        *,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
    ) -> None:
        self.max_event_bytes = max_event_bytes
        self.last_event_id = last_event_id
        self.retry = retry  # seconds, once the stream set it
        self._id = last_event_id  # the spec's "last event ID buffer"
        self._type = ""
        self._data: list[bytes] = []
        self._tail = b""  # an unfinished line
        self._skip_lf = False  # the last chunk ended with CR: a leading LF completes a CRLF
        self._started = False  # a leading byte-order mark is still to be stripped

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        """The events completed by ``chunk``, in order."""
        if not chunk:
            return []
        if self._skip_lf:
            self._skip_lf = False
            if chunk[0] == 0x0A:
                chunk = chunk[1:]
        buffer = self._tail + chunk if self._tail else chunk
        if not self._started:
            if len(buffer) < 3 and b"\xef\xbb\xbf".startswith(buffer):
                self._tail = buffer  # perhaps the start of a byte-order mark
                return []
            self._started = True
            buffer = buffer.removeprefix(b"\xef\xbb\xbf")
        if not buffer:
            return []
        lines = buffer.splitlines()  # bytes split at CRLF, LF and CR only
        last = buffer[-1]
        if last == 0x0A or last == 0x0D:
            self._tail = b""
            self._skip_lf = last == 0x0D
        else:
            self._tail = lines.pop()
        events: list[ServerSentEvent] = []
        data = self._data
        for line in lines:
            if not line:  # dispatch (inline: this loop is the hot path)
                self.last_event_id = self._id
                if data:
                    fields = (self._type or "message", b"\n".join(data), self._id)
                    events.append(tuple.__new__(ServerSentEvent, fields))
                    data = self._data = []
                self._type = ""
                continue
            field, _, value = line.partition(b":")
            if not field:
                continue  # a comment (keep-alives are often sent this way)
            if value[:1] == b" ":
                value = value[1:]
            if field == b"data":
                data.append(value)
            elif field == b"event":
                self._type = value.decode("utf-8", "replace")
            elif field == b"id":
                if b"\0" not in value:
                    self._id = value.decode("utf-8", "replace")
            elif field == b"retry" and value.isdigit():  # ASCII digits only, as the spec asks
                self.retry = int(value) / 1000
            # any other field is ignored, as the spec says
        if len(self._tail) > self.max_event_bytes or (
            data and sum(map(len, data)) > self.max_event_bytes
        ):
            raise ValueError(
                f"event stream: an event or a line is over max_event_bytes="
                f"{self.max_event_bytes} and not finished; raise max_event_bytes if the "
                "server really sends events that large"
            )
        return events


# -- server-sent events: the source ------------------------------------------------------


class SseSource:
    """The messages of an event stream; made by :func:`sse_source`.

    Each :class:`~rxflow.connectors.Message` has the decoded ``data`` as its value, the
    event id as its key (``None`` if the stream has none) and ``{"event": type}`` as its
    headers. ``last_event_id`` is the resume point: keep it, and pass it back as
    ``sse_source(..., last_event_id=...)`` to resume after a restart.

    Example:
        Remember where to resume::

            async with sse_source(url) as events:
                async for message in events:
                    handle(message.value)
                    checkpoint.save(events.last_event_id)
    """

    def __init__(
        self,
        client: httpx.AsyncClient,
        url: str,
        *,
        headers: Mapping[str, str],
        params: Mapping[str, Any] | None,
        decoder: Decoder,
        reconnect: bool,
        retry: float,
        retries: int,
        last_event_id: str,
        timeout: httpx.Timeout,
        max_event_bytes: int,
    ) -> None:
        self.url = url
        self.decoder = decoder
        self.reconnects = 0  # connections made after the first
        self._client = client
        self._headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache", **headers}
        self._params = _query(url, params) if params else None
        self._reconnect = reconnect
        self._default_retry = retry
        self._retries = retries
        self._timeout = timeout
        self._parser = SseParser(last_event_id, max_event_bytes=max_event_bytes)
        self._events: deque[ServerSentEvent] = deque()  # parsed from the last chunk read
        self._response: httpx.Response | None = None
        self._chunks: AsyncIterator[bytes] | None = None
        self._ended = False

    @property
    def last_event_id(self) -> str:
        """The id of the last event seen (or set by an id-only block); ``""`` if none."""
        return self._parser.last_event_id

    @property
    def retry(self) -> float:
        """Seconds to wait before reconnecting: the server's ``retry:``, else the default."""
        return self._parser.retry if self._parser.retry is not None else self._default_retry

    def __aiter__(self) -> SseSource:
        return self

    async def __anext__(self) -> Message[Any]:
        decoder, events = self.decoder, self._events
        while True:
            while events:
                kind, data, event_id = events.popleft()
                key = event_id or None
                # The codec is called here directly, the common case; a failure goes through
                # decode(), which calls it again and applies the decode policy.
                try:
                    value = decoder.codec(data)
                    decoder.decoded += 1
                except Exception:
                    value = await decoder.decode(data, key=key)
                    if value is SKIPPED:
                        continue
                return Message(value, key, {"event": kind}, source=decoder.source)
            chunk = await self._read()
            if chunk is None:
                raise StopAsyncIteration
            try:
                events.extend(self._parser.feed(chunk))
            except ValueError as error:
                await self.aclose()
                raise HttpResponseError(
                    f"sse_source: {mask_url(self.url)}: {error}",
                    url=mask_url(self.url),
                    status_code=200,
                ) from error

    async def aclose(self) -> None:
        """Close the connection; iteration ends."""
        self._ended = True
        await self._close_response()

    async def _read(self) -> bytes | None:
        """The next chunk of the body, reconnecting after a drop; None once it ended."""
        while not self._ended:
            if self._chunks is None:
                await self._reconnect_after_delay()
                continue
            try:
                return await self._chunks.__anext__()
            except StopAsyncIteration:
                pass  # the server ended the response: the spec says reconnect
            except httpx.TransportError as error:
                # Dropped midway (a broken chunked body, a reset, a read timeout). Without
                # reconnection, say so: ending quietly would hide that events were lost.
                if not self._reconnect:
                    await self.aclose()
                    raise ServiceUnavailableError(
                        f"sse_source: the connection to {mask_url(self.url)} dropped after "
                        f"event id {self.last_event_id!r}: {error!r}. Pass reconnect=True to "
                        "resume from there"
                    ) from error
            await self._close_response()
            self._ended = not self._reconnect
        return None

    async def _open(self) -> None:
        """Connect and check the answer; a 204 means the server has nothing more to send."""
        headers = dict(self._headers)
        if self._parser.last_event_id:
            headers["Last-Event-ID"] = self._parser.last_event_id
        request = self._client.build_request(
            "GET", self.url, params=self._params, headers=headers, timeout=self._timeout
        )
        response = await self._client.send(request, stream=True)
        if response.status_code == 204:
            await response.aclose()
            self._ended = True
            return
        content_type = response.headers.get("content-type", "")
        if response.status_code != 200 or not content_type.startswith("text/event-stream"):
            await _raise_for_answer(response, "sse_source", expected="200 text/event-stream")
        self._response, self._chunks = response, response.aiter_bytes()
        # A new stream starts a new parse; the last event id and retry time carry over.
        self._parser = SseParser(
            self._parser.last_event_id,
            self._parser.retry,
            max_event_bytes=self._parser.max_event_bytes,
        )

    async def _reconnect_after_delay(self) -> None:
        failures = 0
        while True:
            await anyio.sleep(min(self.retry * 2**failures, max(self.retry, MAX_BACKOFF)))
            try:
                await self._open()
            except (httpx.TransportError, HttpResponseError) as error:
                if isinstance(error, HttpResponseError) and not _worth_retrying(error.status_code):
                    raise
                failures += 1
                if failures > self._retries:
                    raise _unavailable("sse_source", self.url, failures, error) from error
            else:
                self.reconnects += 1
                return

    async def _close_response(self) -> None:
        chunks, self._chunks = self._chunks, None
        response, self._response = self._response, None
        if response is not None:
            await response.aclose()
        if chunks is None:
            return
        if response is None or response.http_version != "HTTP/1.1":
            await chunks.aclose()  # type: ignore[attr-defined]  # an async generator
            return
        # httpx reads through a chain of async generators; closing the outer one would
        # abandon the inner ones (trio warns when they are collected). On HTTP/1.1, once the
        # response is closed, pulling on yields what h11 had already buffered (one read at
        # most), then fails at the bottom on the closed connection, and the failure ends
        # every generator of the chain on its way up. (HTTP/2 shares the connection: a pull
        # there could wait for another stream's data, so it only gets the plain close.)
        with contextlib.suppress(Exception):
            async for _ in chunks:
                pass


@asynccontextmanager
async def sse_source(
    url: str,
    *,
    client: httpx.AsyncClient | None = None,
    headers: Mapping[str, str] | None = None,
    params: Mapping[str, Any] | None = None,
    codec: Codec | CodecName = "text",
    on_decode_error: DecodePolicy = "raise",
    dead_letter: DeadLetter | None = None,
    reconnect: bool = True,
    retry: float = 3.0,
    retries: int = 5,
    last_event_id: str = "",
    connect_timeout: float = 10.0,
    read_timeout: float | None = None,
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
) -> AsyncIterator[SseSource]:
    """Read server-sent events from ``url`` as :class:`~rxflow.connectors.Message` records.

    Args:
        url: the ``http(s)`` address of the event stream.
        client: an ``httpx.AsyncClient`` to use (and leave open); default: a new one.
        headers: added to every request (auth).
        params: query parameters added to every request.
        codec: how each event's ``data`` becomes the value: ``"text"`` (default), ``"json"``,
            ``"bytes"`` or a function; with ``on_decode_error`` and ``dead_letter`` as in
            :mod:`rxflow.connectors.codecs`.
        reconnect: reconnect when the connection drops or the response ends, sending
            ``Last-Event-ID`` so that the server resumes after the last event seen. A 204
            answer ends the stream for good, as in browsers.
        retry: seconds before reconnecting, until the server sets it with ``retry:``.
        retries: failed reconnection attempts in a row (with exponential backoff) before
            :class:`~rxflow.errors.ServiceUnavailableError`.
        last_event_id: resume after this id (sent as ``Last-Event-ID`` on the first request).
        connect_timeout: seconds to wait for a connection.
        read_timeout: seconds without a byte (servers send ``:`` comments as keep-alives)
            after which the connection counts as dropped; default: wait for ever.
        max_event_bytes: the largest event (or line) the source holds while it arrives; a
            larger one is an error rather than unbounded memory.

    Raises:
        ServiceUnavailableError: the first connection failed (or reconnecting failed
            ``retries`` times).
        HttpResponseError: the server answered with another status than 200 (a 5xx on
            reconnection is retried), not with ``text/event-stream``, or sent an event over
            ``max_event_bytes``.

    Example:
        Print events as they come::

            async with sse_source("http://localhost:8000/events", codec="json") as events:
                async for message in events:
                    print(message.headers["event"], message.key, message.value)
    """
    where = "sse_source"
    url = _check_url(where, url)
    check_seconds(where, "retry", retry, allow_zero=True)
    check_count(where, "retries", retries, minimum=0)
    check_seconds(where, "connect_timeout", connect_timeout)
    check_seconds(where, "read_timeout", read_timeout, optional=True)
    check_count(where, "max_event_bytes", max_event_bytes)
    decoder = Decoder(
        codec,
        on_decode_error=on_decode_error,
        dead_letter=dead_letter,
        source=f"sse:{mask_url(url)}",
    )
    timeout = httpx.Timeout(connect_timeout, read=read_timeout)
    async with _client(client) as http:
        source = SseSource(
            http,
            url,
            headers=headers or {},
            params=params,
            decoder=decoder,
            reconnect=reconnect,
            retry=retry,
            retries=retries,
            last_event_id=last_event_id,
            timeout=timeout,
            max_event_bytes=max_event_bytes,
        )
        try:
            await source._open()
        except httpx.TransportError as error:
            raise _unavailable(where, url, 1, error) from error
        try:
            yield source
        finally:
            with anyio.CancelScope(shield=True):
                await source.aclose()


# -- polling -----------------------------------------------------------------------------


def _items_of(body: Any) -> Iterable[Any]:
    return body if isinstance(body, list) else (body,)


class PollSource:
    """The items of a polled endpoint; made by :func:`poll_source`.

    ``polls`` counts the requests answered; ``decoder`` counts what the codec did.

    Example:
        Read through a pipe, which pulls the next poll only when it has room::

            async with poll_source(url, interval=10) as items, open_pipe(items) as pipe:
                async for message in pipe:
                    print(message.value)
    """

    def __init__(
        self,
        client: httpx.AsyncClient,
        url: str,
        *,
        interval: float,
        params: Mapping[str, Any],
        headers: Mapping[str, str],
        cursor: Callable[[Any], Mapping[str, Any]] | None,
        items: Callable[[Any], Iterable[Any]],
        key: Callable[[Any], str | bytes | None] | None,
        decoder: Decoder,
        retry: _Retry,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    ) -> None:
        self.url = url
        self.decoder = decoder
        self.polls = 0
        self.max_body_bytes = max_body_bytes
        self.etag: str | None = None  # the last answer's ETag, sent back as If-None-Match
        self._client = client
        self._interval = interval
        self._params = _query(url, params)
        self._headers = headers
        self._cursor = cursor
        self._items = items
        self._key = key
        self._retry = retry
        self._pending: deque[Any] = deque()  # the items of the last answer not yet pulled
        self._next_poll: float | None = None
        self._ended = False

    def __aiter__(self) -> PollSource:
        return self

    async def __anext__(self) -> Message[Any]:
        while not self._pending:
            if self._ended:
                raise StopAsyncIteration
            await self._poll()
        item = self._pending.popleft()
        key = self._key(item) if self._key is not None else None
        return Message(item, key, source=self.decoder.source)

    async def aclose(self) -> None:
        """End the iteration (the client's connections close with the source)."""
        self._ended = True

    async def _poll(self) -> None:
        # Polls start `interval` apart (no drift); a slow consumer delays the next one
        # rather than making polls pile up.
        if self._next_poll is not None:
            await anyio.sleep_until(self._next_poll)
        self._next_poll = anyio.current_time() + self._interval
        headers = self._headers
        if self.etag is not None:  # "only if it changed": a 304 answer means nothing new
            headers = {**headers, "If-None-Match": self.etag}
        response = await self._retry.request(
            self._client,
            "GET",
            self.url,
            params=self._params,
            headers=headers,
            accept=(304,),
            max_body_bytes=self.max_body_bytes,
        )
        self.polls += 1
        self.etag = response.headers.get("etag", self.etag)
        if response.status_code in (204, 304) or not response.content:
            return
        body = await self.decoder.decode(response.content)
        if body is SKIPPED:
            return
        items = list(self._items(body))
        if items and self._cursor is not None:
            self._params = self._params.merge(self._cursor(items[-1]))
        self._pending.extend(items)


@asynccontextmanager
async def poll_source(
    url: str,
    *,
    interval: float,
    client: httpx.AsyncClient | None = None,
    params: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
    cursor: Callable[[Any], Mapping[str, Any]] | None = None,
    items: Callable[[Any], Iterable[Any]] | None = None,
    key: Callable[[Any], str | bytes | None] | None = None,
    codec: Codec | CodecName = "json",
    on_decode_error: DecodePolicy = "raise",
    dead_letter: DeadLetter | None = None,
    retries: int = 3,
    backoff: float = 0.5,
    request_timeout: float | None = 10.0,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> AsyncIterator[PollSource]:
    """GET ``url`` every ``interval`` seconds and yield what it returns, item by item.

    The first request goes out at once; the next ones ``interval`` after the previous one
    started, and only once the consumer took every item of the previous answer. Waiting
    uses ``anyio.sleep``, so trio's ``MockClock`` drives it in tests.

    Args:
        url: the ``http(s)`` address to poll.
        interval: seconds between the starts of two polls.
        params: query parameters sent with every request.
        headers: sent with every request.
        cursor: ask only for new items: called with the last item of a non-empty answer, it
            returns the query parameters of the next request (merged over ``params``), such
            as ``lambda item: {"since": item["id"]}``.
        items: how an answer's decoded body becomes items; default: a JSON array's elements,
            or any other body as one item. An empty body or a 204 yields nothing. When the
            server sends an ``ETag``, the next poll sends ``If-None-Match`` and a 304 answer
            yields nothing.
        key: the messages' key, from the item (``lambda order: str(order["id"])``).
        codec: how the body is decoded (default ``"json"``); with ``on_decode_error`` and
            ``dead_letter`` as in :mod:`rxflow.connectors.codecs` (a body set aside yields
            nothing).
        retries: attempts after the first on a 5xx, 408 or 429 answer or a broken
            connection, waiting ``backoff`` seconds, then twice that, and so on (a numeric
            ``Retry-After`` is honoured). Other statuses fail at once.
        request_timeout: seconds for each request.
        max_body_bytes: the largest answer read (default 10 MiB): the body is streamed,
            and past this many bytes (or a larger ``Content-Length``) reading stops with
            :class:`HttpResponseError` rather than holding an unbounded answer in memory.

    Raises:
        HttpResponseError: a non-2xx answer (after the retries), naming the URL and status,
            or a body over ``max_body_bytes``.
        ServiceUnavailableError: the server could not be reached after the retries.

    Example:
        Yield each new order once::

            async with poll_source("http://localhost:8000/orders", interval=5.0,
                                   cursor=lambda order: {"since": order["id"]}) as orders:
                async for message in orders:
                    print(message.value)
    """
    where = "poll_source"
    url = _check_url(where, url)
    check_seconds(where, "interval", interval, allow_zero=True)
    check_count(where, "max_body_bytes", max_body_bytes)
    decoder = Decoder(
        codec,
        on_decode_error=on_decode_error,
        dead_letter=dead_letter,
        source=f"poll:{mask_url(url)}",
    )
    async with _client(client) as http:
        yield PollSource(
            http,
            url,
            interval=interval,
            params=params or {},
            headers=headers or {},
            cursor=cursor,
            items=items or _items_of,
            key=key,
            decoder=decoder,
            retry=_Retry(where, retries, backoff, request_timeout),
            max_body_bytes=max_body_bytes,
        )


# -- POST sink ---------------------------------------------------------------------------


def _json_array(items: Sequence[Any]) -> bytes:
    """A compact JSON array; a :class:`~rxflow.connectors.Message` is sent as its value."""
    values = [item.value if isinstance(item, Message) else item for item in items]
    return json.dumps(values, separators=(",", ":")).encode()


class HttpPostSink:
    """POSTs batches to one URL; made by :func:`http_post_sink`.

    ``posted`` counts the items the server confirmed, ``requests`` the POSTs it answered 2xx.

    Example:
        Post in the sink's batch size::

            async with http_post_sink(url, batch_size=50) as sink:
                for start in range(0, len(rows), sink.batch_size):
                    await sink.send_batch(rows[start : start + sink.batch_size])
    """

    def __init__(
        self,
        client: httpx.AsyncClient,
        url: str,
        *,
        batch_size: int,
        encoder: Callable[[Sequence[Any]], bytes | str],
        headers: Mapping[str, str],
        retry: _Retry,
    ) -> None:
        self.url = url
        self.batch_size = batch_size
        self.posted = 0
        self.requests = 0
        self._client = client
        self._encoder = encoder
        self._headers = headers
        self._retry = retry

    async def send(self, item: Any) -> None:
        """POST ``[item]``; return once the server answered 2xx."""
        await self.send_batch((item,))

    async def send_batch(self, items: Sequence[Any]) -> None:
        """POST ``items`` as one body; return once the server answered 2xx.

        Raises:
            HttpResponseError: a non-2xx answer (a 5xx, 408 or 429 after the retries).
            ServiceUnavailableError: the server could not be reached after the retries.
        """
        if not items:
            return
        body = self._encoder(items)
        await self._retry.request(
            self._client, "POST", self.url, content=body, headers=self._headers
        )
        self.requests += 1
        self.posted += len(items)


@asynccontextmanager
async def http_post_sink(
    url: str,
    *,
    batch_size: int = 100,
    client: httpx.AsyncClient | None = None,
    encoder: Callable[[Sequence[Any]], bytes | str] = _json_array,
    content_type: str = "application/json",
    headers: Mapping[str, str] | None = None,
    retries: int = 3,
    backoff: float = 0.5,
    request_timeout: float | None = 10.0,
) -> AsyncIterator[HttpPostSink]:
    """A sink that POSTs each batch to ``url`` as one request body (a JSON array).

    Args:
        url: the ``http(s)`` address to POST to.
        batch_size: the batch size a :class:`rxflow.Flow` should use.
        client: an ``httpx.AsyncClient`` to use (and leave open); default: a new one.
        encoder: turns a batch into the body; default: a compact JSON array (a ``Message``
            in it is sent as its value).
        content_type: the ``Content-Type`` sent with every request.
        headers: sent with every request.
        retries: attempts after the first on a 5xx, 408 or 429 answer or a broken
            connection, waiting ``backoff`` seconds, then twice that, and so on (a numeric
            ``Retry-After`` is honoured). A retried POST may reach the server twice, as
            at-least-once delivery allows: make the endpoint idempotent if that matters.
        request_timeout: seconds for each request.

    Example:
        Post readings in batches of 50::

            async with http_post_sink("http://localhost:8000/ingest", batch_size=50) as sink:
                await sink.send_batch([{"t": 1, "v": 0.5}, {"t": 2, "v": 0.7}])
    """
    where = "http_post_sink"
    url = _check_url(where, url)
    check_count(where, "batch_size", batch_size)
    check_function(where, "encoder", encoder, "items -> bytes")
    async with _client(client) as http:
        yield HttpPostSink(
            http,
            url,
            batch_size=batch_size,
            encoder=encoder,
            headers={"Content-Type": content_type, **(headers or {})},
            retry=_Retry(where, retries, backoff, request_timeout),
        )


# -- shared plumbing ---------------------------------------------------------------------


class _Retry:
    """One request, retried with exponential backoff while the failure may pass."""

    def __init__(
        self, where: str, retries: int, backoff: float, request_timeout: float | None
    ) -> None:
        check_count(where, "retries", retries, minimum=0)
        check_seconds(where, "backoff", backoff, allow_zero=True)
        check_seconds(where, "request_timeout", request_timeout, optional=True)
        self.where = where
        self.retries = retries
        self.backoff = backoff
        self.timeout = request_timeout

    async def request(
        self,
        client: httpx.AsyncClient,
        method: str,
        url: str,
        *,
        accept: tuple[int, ...] = (),
        max_body_bytes: int | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """The 2xx (or ``accept``-ed) response, after retrying the failures worth it.

        With ``max_body_bytes``, the body is streamed and reading stops past that many
        bytes (:class:`HttpResponseError`): an endless or huge answer costs no more memory.
        """
        attempt = 0
        while True:
            delay = min(self.backoff * 2**attempt, MAX_BACKOFF)
            attempt += 1
            try:
                if max_body_bytes is None:
                    response = await client.request(method, url, timeout=self.timeout, **kwargs)
                else:
                    request = client.build_request(method, url, timeout=self.timeout, **kwargs)
                    response = await client.send(request, stream=True)
                    if response.is_success or response.status_code in accept:
                        return await self._read_bounded(response, max_body_bytes)
            except httpx.TransportError as error:
                if attempt > self.retries:
                    raise _unavailable(self.where, url, attempt, error) from error
            else:
                if response.is_success or response.status_code in accept:
                    return response
                if attempt > self.retries or not _worth_retrying(response.status_code):
                    await _raise_for_answer(response, self.where, tries=attempt)
                delay = max(delay, _retry_after(response))
                await response.aclose()
            await anyio.sleep(delay)

    async def _read_bounded(self, response: httpx.Response, limit: int) -> httpx.Response:
        """The streamed response, read whole if it is at most ``limit`` bytes."""
        declared = response.headers.get("content-length", "")
        size = int(declared) if declared.isdigit() else 0
        body, whole = await _read_body(response, limit) if size <= limit else (b"", False)
        if not whole:
            await response.aclose()
            how = f"of {size} bytes" if size > limit else "still going"
            url = mask_url(response.request.url)
            raise HttpResponseError(
                f"{self.where}: {response.request.method} {url} answered with a body {how}, "
                f"over max_body_bytes={limit}; the rest was not read. Raise max_body_bytes if "
                "such answers are expected, or ask for less at a time (a cursor, a page size)",
                url=url,
                status_code=response.status_code,
            )
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            content=body,
            request=response.request,
        )


async def _read_body(response: httpx.Response, limit: int) -> tuple[bytes, bool]:
    """A streamed response's body, and whether it is whole: reading stops as soon as more
    than ``limit`` bytes came (what is left is not read: the response is closed)."""
    chunks = response.aiter_bytes()
    body = bytearray()
    try:
        async for chunk in chunks:
            body += chunk
            if len(body) > limit:
                return bytes(body), False
        return bytes(body), True
    finally:
        await response.aclose()
        await _end_chunks(response, chunks)


async def _end_chunks(response: httpx.Response, chunks: AsyncIterator[bytes]) -> None:
    """End httpx's chain of body generators after the response was closed part-read.

    Closing only the outer generator would abandon the inner ones (trio warns when they
    are collected). On HTTP/1.1 a closed response's connection is closed, so pulling on
    yields what was buffered, then fails at the bottom, which ends every generator of the
    chain on its way up; HTTP/2 shares the connection, so there the outer one is closed.
    """
    if response.http_version != "HTTP/1.1":
        await chunks.aclose()  # type: ignore[attr-defined]  # an async generator
        return
    with contextlib.suppress(Exception):
        async for _ in chunks:
            pass


@asynccontextmanager
async def _client(client: httpx.AsyncClient | None) -> AsyncIterator[httpx.AsyncClient]:
    """The caller's client, left open; or a new one, closed on exit."""
    if client is not None:
        if not isinstance(client, httpx.AsyncClient):
            raise TypeError(f"client must be an httpx.AsyncClient, got {client!r}")
        yield client
        return
    async with httpx.AsyncClient() as owned:
        yield owned


def _query(url: str, params: Mapping[str, Any]) -> httpx.QueryParams:
    """The URL's own query parameters with ``params`` over them: given ``params=``, httpx
    replaces a URL's query instead of adding to it (which would drop ``?token=...``)."""
    return httpx.URL(url).params.merge(params)


def _worth_retrying(status: int) -> bool:
    """Statuses that say "later": server errors, request timeout, too many requests."""
    return status >= 500 or status in (408, 429)


def _retry_after(response: httpx.Response) -> float:
    """A numeric ``Retry-After`` in seconds, capped; 0 if absent or a date."""
    value = response.headers.get("retry-after", "")
    return min(float(value), MAX_BACKOFF) if value.isdigit() else 0.0


async def _raise_for_answer(
    response: httpx.Response, where: str, *, tries: int = 1, expected: str = "2xx"
) -> None:
    body = (await _read_body(response, ERROR_BODY_BYTES))[0][:ERROR_BODY_BYTES]
    after = f" (after {tries} attempts)" if tries > 1 else ""
    kind = response.headers.get("content-type", "no content type")
    url = mask_url(response.request.url)
    raise HttpResponseError(
        f"{where}: {response.request.method} {url} answered {response.status_code} "
        f"{response.reason_phrase} ({kind}){after}, expected {expected}; body starts "
        f"{body!r}. Check the URL, the request and the server's log",
        url=url,
        status_code=response.status_code,
    )


def _unavailable(where: str, url: str, tries: int, error: Exception) -> ServiceUnavailableError:
    after = f" after {tries} attempts" if tries > 1 else ""
    return ServiceUnavailableError(
        f"{where}: could not reach {mask_url(url)}{after}: {error!r}. Is the server running, "
        "and is the address right?"
    )


def _check_url(where: str, url: object) -> str:
    """The URL as a string, once it is one that httpx can GET or POST (httpx parses it,
    which is why this check lives here rather than in :mod:`rxflow._checks`)."""
    if not isinstance(url, str | httpx.URL):
        raise TypeError(
            f"{where}: url must be a str such as 'http://host:8000/path', got {type(url).__name__}"
        )
    try:
        scheme = httpx.URL(url).scheme
    except httpx.InvalidURL as error:
        raise ValueError(
            f"{where}: {mask_url(url)!r} is not a valid URL ({mask_urls_in(str(error))})"
        ) from None
    if scheme not in ("http", "https"):
        raise ValueError(f"{where}: url must start with http:// or https://, got {mask_url(url)!r}")
    return str(url)
