"""What every HTTP connector shares: the httpx client it is given or makes, URL checks,
bounded bodies and the errors that name the URL (its secrets masked)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from rxflow.connectors._extras import requires_extra
from rxflow.connectors._redact import mask_url, mask_urls_in, redact_logs_of
from rxflow.errors import HttpResponseError, ServiceUnavailableError

with requires_extra("http"):
    import httpx

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "check_url",
    "end_chunks",
    "merged_query",
    "raise_for_answer",
    "read_body",
    "read_bounded",
    "unavailable",
    "using_client",
]

DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024
ERROR_BODY_BYTES = 200  # what an error quotes of a body it did not expect

# httpx logs every request's URL (at INFO): its query's secrets are masked there too.
redact_logs_of("httpx")


@asynccontextmanager
async def using_client(client: httpx.AsyncClient | None) -> AsyncIterator[httpx.AsyncClient]:
    """The caller's client, left open; or a new one, closed on exit."""
    if client is not None:
        if not isinstance(client, httpx.AsyncClient):
            raise TypeError(f"client must be an httpx.AsyncClient, got {client!r}")
        yield client
        return
    async with httpx.AsyncClient() as owned:
        yield owned


def merged_query(url: str, params: Mapping[str, Any]) -> httpx.QueryParams:
    """The URL's own query parameters with ``params`` over them: given ``params=``, httpx
    replaces a URL's query instead of adding to it (which would drop ``?token=...``)."""
    return httpx.URL(url).params.merge(params)


def check_url(where: str, url: object) -> str:
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


async def read_bounded(response: httpx.Response, limit: int, where: str) -> httpx.Response:
    """The streamed ``response``, read whole if its body is at most ``limit`` bytes; past
    that, reading stops (:class:`HttpResponseError`): a huge or endless answer costs no
    more memory than the limit."""
    declared = response.headers.get("content-length", "")
    size = int(declared) if declared.isdigit() else 0
    body, whole = await read_body(response, limit) if size <= limit else (b"", False)
    if not whole:
        await response.aclose()
        how = f"of {size} bytes" if size > limit else "still going"
        url = mask_url(response.request.url)
        raise HttpResponseError(
            f"{where}: {response.request.method} {url} answered with a body {how}, "
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


async def read_body(response: httpx.Response, limit: int) -> tuple[bytes, bool]:
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
        await end_chunks(response, chunks)


async def end_chunks(response: httpx.Response, chunks: AsyncIterator[bytes]) -> None:
    """End httpx's chain of body generators after the response was closed part-read.

    Closing only the outer generator would abandon the inner ones (trio warns when they
    are collected). On HTTP/1.1 a closed response's connection is closed, so pulling on
    yields what h11 had already buffered (one read at most), then fails at the bottom,
    which ends every generator of the chain on its way up. HTTP/2 shares the connection
    (a pull there could wait for another stream's data), so there the outer one is closed.
    """
    if response.http_version != "HTTP/1.1":
        await chunks.aclose()  # type: ignore[attr-defined]  # an async generator
        return
    with contextlib.suppress(Exception):
        async for _ in chunks:
            pass


async def raise_for_answer(
    response: httpx.Response, where: str, *, tries: int = 1, expected: str = "2xx"
) -> None:
    """Raise :class:`HttpResponseError` for an answer that is not the one asked for,
    quoting the start of its body (the rest is not read)."""
    body = (await read_body(response, ERROR_BODY_BYTES))[0][:ERROR_BODY_BYTES]
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


def unavailable(where: str, url: str, tries: int, error: Exception) -> ServiceUnavailableError:
    """The error for a server that could not be reached, ``tries`` times."""
    after = f" after {tries} attempts" if tries > 1 else ""
    return ServiceUnavailableError(
        f"{where}: could not reach {mask_url(url)}{after}: {error!r}. Is the server running, "
        "and is the address right?"
    )
