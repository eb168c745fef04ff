"""Polling as a source: :func:`poll_source` fetches a JSON endpoint every ``interval`` and
yields the items of each answer; a ``cursor`` function turns the last item into the next
request's parameters so that only new items come."""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import anyio

from rxflow._checks import check_count, check_seconds
from rxflow.connectors._extras import requires_extra
from rxflow.connectors._message import Message
from rxflow.connectors._redact import mask_url
from rxflow.connectors.codecs import (
    SKIPPED,
    CodecSpec,
    DeadLetter,
    DecodePolicy,
    Decoder,
)
from rxflow.connectors.http._client import (
    DEFAULT_MAX_BODY_BYTES,
    check_url,
    merged_query,
    using_client,
)
from rxflow.connectors.http._retry import RetryingEndpoint, retry_policy
from rxflow.strategies import Retry

with requires_extra("http"):
    import httpx

__all__ = ["DEFAULT_MAX_BODY_BYTES", "PollSource", "poll_source"]


def _items_of(body: Any) -> Iterable[Any]:
    return body if isinstance(body, list) else (body,)


class PollSource(RetryingEndpoint):
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
        retry: Retry,
        request_timeout: float | None,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    ) -> None:
        super().__init__(
            client, url, where="poll_source", retry=retry, request_timeout=request_timeout
        )
        self.decoder = decoder
        self.polls = 0
        self.max_body_bytes = max_body_bytes
        self.etag: str | None = None  # the last answer's ETag, sent back as If-None-Match
        self._interval = interval
        self._params = merged_query(url, params)
        self._headers = headers
        self._cursor = cursor
        self._items = items
        self._key = key
        self._pending: deque[Any] = deque()  # the items of the last answer not yet pulled
        self._next_poll: float | None = None
        self._ended = False

    def __aiter__(self) -> PollSource:
        return self

    async def __anext__(self) -> Message[Any]:
        await self._have_items()
        item = self._pending.popleft()
        key = self._key(item) if self._key is not None else None
        return Message(item, key, source=self.decoder.source)

    async def next_run(self) -> list[Message[Any]]:
        """The items of the last answer not yet taken (polling first when there are none),
        in one await: :func:`rxflow.open_pipe` prefers it to ``__anext__``."""
        await self._have_items()
        pending, key_of, source = self._pending, self._key, self.decoder.source
        run: list[Message[Any]] = []
        while pending:
            item = pending[0]
            try:
                key = key_of(item) if key_of is not None else None
            except Exception:
                if run:  # hand over the items before it; the next call raises
                    break
                raise
            run.append(Message(pending.popleft(), key, source=source))
        return run

    async def _have_items(self) -> None:
        """Poll until an answer brought items; ``StopAsyncIteration`` once closed."""
        while not self._pending:
            if self._ended:
                raise StopAsyncIteration
            await self._poll()

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
        response = await self._request(
            "GET",
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
    codec: CodecSpec = "json",
    on_decode_error: DecodePolicy = "raise",
    dead_letter: DeadLetter | None = None,
    retry: Retry | None = None,
    request_timeout: float | None = 10.0,
    retries: int | None = None,
    backoff: float | None = None,
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
        retry: how a 5xx, 408 or 429 answer or a broken connection is retried, as an
            :class:`rxflow.strategies.Retry` (``then`` must be ``FailFast()``); default:
            4 attempts in all, waiting 0.5 s, then twice as long each time, no jitter. A
            numeric ``Retry-After`` makes a wait longer (up to ``retry.cap``). Other
            statuses fail at once. See :func:`rxflow.connectors.http.http_post_sink`
            for which failures ``retry.on`` selects.
        request_timeout: seconds for each request.
        retries: deprecated, use ``retry=Retry(attempts=retries + 1, ...)``.
        backoff: deprecated, use ``retry=Retry(base=backoff, ...)``.
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
    url = check_url(where, url)
    check_seconds(where, "interval", interval, allow_zero=True)
    check_count(where, "max_body_bytes", max_body_bytes)
    check_seconds(where, "request_timeout", request_timeout, optional=True)
    policy = retry_policy(where, retry, retries, backoff)
    decoder = Decoder(
        codec,
        on_decode_error=on_decode_error,
        dead_letter=dead_letter,
        source=f"poll:{mask_url(url)}",
    )
    async with using_client(client) as http:
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
            retry=policy,
            request_timeout=request_timeout,
            max_body_bytes=max_body_bytes,
        )
