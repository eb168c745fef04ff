"""Server-sent events as a source: :func:`sse_source` reads a ``text/event-stream`` and,
when the connection drops, reconnects with ``Last-Event-ID`` so that the server resumes
after the last event seen.

The body is read only as the consumer pulls: a slow consumer leaves the bytes in the
socket, and TCP flow control holds the server back. The wire format is parsed by
:class:`SseParser` (``rxflow.connectors.http._sse_wire`` says why that parser).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import anyio

from rxflow._checks import check_count, check_seconds
from rxflow.connectors._extras import requires_extra
from rxflow.connectors._framed_sources import RUN_LIMIT
from rxflow.connectors._message import Message, NoOpSettlement, make_message
from rxflow.connectors._redact import mask_url
from rxflow.connectors.codecs import (
    SKIPPED,
    CodecSpec,
    DeadLetter,
    DecodePolicy,
    Decoder,
)
from rxflow.connectors.http._client import (
    check_url,
    end_chunks,
    merged_query,
    raise_for_answer,
    unavailable,
    using_client,
)
from rxflow.connectors.http._retry import MAX_BACKOFF, reconnect_delay, worth_retrying
from rxflow.connectors.http._sse_wire import (
    DEFAULT_MAX_EVENT_BYTES,
    EventColumns,
    ServerSentEvent,
    SseParser,
)
from rxflow.errors import HttpResponseError, ServiceUnavailableError
from rxflow.strategies import Retry

with requires_extra("http"):
    import httpx

__all__ = ["DEFAULT_MAX_EVENT_BYTES", "ServerSentEvent", "SseParser", "SseSource", "sse_source"]


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
        self._params = merged_query(url, params) if params else None
        self._reconnect = reconnect
        self._default_retry = retry
        # Failed reconnections in a row: waits from the server's `retry:` time, doubling.
        self._reconnection = Retry(
            attempts=retries + 1, base=retry, cap=max(retry, MAX_BACKOFF), jitter=0.0
        )
        self._timeout = timeout
        self._parser = SseParser(last_event_id, max_event_bytes=max_event_bytes)
        self._events = EventColumns([], [], [])  # parsed from the last chunk read
        self._taken = 0  # how many of self._events became messages (or were set aside)
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
        while True:
            run = await self._messages(most=1)
            if run:
                return run[0]

    async def next_run(self) -> list[Message[Any]]:
        """The messages of the events parsed and not yet taken, else of the next piece of
        the body (what one read brought), at most ``RUN_LIMIT`` of them: one await for many
        events, which :func:`rxflow.open_pipe` prefers to ``__anext__``. Empty when the
        piece read completed no event; ``StopAsyncIteration`` at the end of the stream."""
        return await self._messages(most=RUN_LIMIT)

    async def _messages(self, most: int) -> list[Message[Any]]:
        """Up to ``most`` messages of the parsed events, reading and parsing the next piece
        of the body first if none is left.

        A run's data goes to the codec in one call where the codec allows
        (``decoder.decode_many``); if an event in it fails, the run is decoded again one
        event at a time, so that the events before the failing one come first and the
        failing one goes through ``decoder.decode`` (its policy) at the next call.
        """
        start = self._taken
        if start >= len(self._events.datas):
            await self._parse_next_piece()
            start = 0
        types, datas, ids = self._events
        end = min(start + most, len(datas))
        decoder = self.decoder
        values: list[Any] | None = None
        if decoder.decode_many is not None:
            try:
                values = decoder.decode_many(datas[start:end])
            except Exception:
                values = None  # one failed: decode one by one, to apply the policy to it
            else:
                decoder.decoded += len(values)
        if values is None:
            return await self._decode_each(start, end)
        self._taken = end
        source = decoder.source
        # Each with a settlement of its own, though acking does nothing: the message's
        # settled state is its own. make_message: the cheap way to a Message.
        return [
            make_message(value, event_id or None, {"event": kind}, None, source, NoOpSettlement())
            for value, kind, event_id in zip(values, types[start:end], ids[start:end], strict=True)
        ]

    async def _decode_each(self, start: int, end: int) -> list[Message[Any]]:
        """The messages of the events ``start:end``, decoded one at a time; a failing event
        after others ends the run and is left for the next call."""
        types, datas, ids = self._events
        decoder = self.decoder
        codec, source = decoder.codec, decoder.source
        run: list[Message[Any]] = []
        index = start
        while index < end:
            data, key = datas[index], ids[index] or None
            # The codec is called here directly, the common case; a failure goes through
            # decode(), which calls it again and applies the decode policy.
            try:
                value = codec(data)
                decoder.decoded += 1
            except Exception:
                if run:  # what decoded before it goes first: the policy may raise
                    break
                self._taken = index + 1  # taken, whatever the policy does with it
                value = await decoder.decode(data, key=key)
                if value is SKIPPED:
                    index += 1
                    continue
            run.append(
                make_message(value, key, {"event": types[index]}, None, source, NoOpSettlement())
            )
            index += 1
        self._taken = index
        return run

    async def _parse_next_piece(self) -> None:
        chunk = await self._read()
        if chunk is None:
            raise StopAsyncIteration
        try:
            events = self._parser.feed_columns(chunk)
        except ValueError as error:
            await self.aclose()
            raise HttpResponseError(
                f"sse_source: {mask_url(self.url)}: {error}",
                url=mask_url(self.url),
                status_code=200,
            ) from error
        self._events, self._taken = events, 0

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
            await raise_for_answer(response, "sse_source", expected="200 text/event-stream")
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
            await anyio.sleep(reconnect_delay(self._reconnection, self.retry, failures))
            try:
                await self._open()
            except (httpx.TransportError, HttpResponseError) as error:
                if isinstance(error, HttpResponseError) and not worth_retrying(error.status_code):
                    raise
                failures += 1
                if failures >= self._reconnection.attempts:
                    raise unavailable("sse_source", self.url, failures, error) from error
            else:
                self.reconnects += 1
                return

    async def _close_response(self) -> None:
        chunks, self._chunks = self._chunks, None
        response, self._response = self._response, None
        if response is None:  # never opened, or closed already (both are set together)
            return
        await response.aclose()
        if chunks is not None:
            await end_chunks(response, chunks)


@asynccontextmanager
async def sse_source(
    url: str,
    *,
    client: httpx.AsyncClient | None = None,
    headers: Mapping[str, str] | None = None,
    params: Mapping[str, Any] | None = None,
    codec: CodecSpec = "text",
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
            ``"bytes"``, a record class or a function; with ``on_decode_error`` and
            ``dead_letter`` as in :mod:`rxflow.connectors.codecs`.
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
    url = check_url(where, url)
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
    async with using_client(client) as http:
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
            raise unavailable(where, url, 1, error) from error
        try:
            yield source
        finally:
            with anyio.CancelScope(shield=True):
                await source.aclose()
