"""POST as a sink: :func:`http_post_sink` sends each batch as one request body (a JSON
array by default) and returns once the server answered 2xx."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, Literal, TypeAlias

from rxflow._checks import check_count, check_function, check_seconds
from rxflow.connectors._extras import requires_extra
from rxflow.connectors._message import Message
from rxflow.connectors.codecs import encode_json, resolve_encoder
from rxflow.connectors.http._client import check_url, using_client
from rxflow.connectors.http._retry import RetryingEndpoint, retry_policy
from rxflow.strategies import Retry

with requires_extra("http"):
    import httpx

__all__ = ["BatchEncoder", "HttpPostSink", "http_post_sink"]

BatchEncoder: TypeAlias = Callable[[Sequence[Any]], bytes | str]
"""A function that turns a whole batch into one request body."""


def _values(items: Sequence[Any]) -> list[Any]:
    """The batch as values: a :class:`~rxflow.connectors.Message` is sent as its value."""
    return [item.value if isinstance(item, Message) else item for item in items]


def _json_array(items: Sequence[Any]) -> bytes:
    """A compact JSON array, written by the codecs' JSON (records as objects)."""
    return encode_json(_values(items))


def _batch_encoder(where: str, encoder: object) -> BatchEncoder:
    """``encoder=`` as a function of the batch: ``"json"``, a record class (a JSON array of
    its instances, each checked to be one) or the caller's own function."""
    if encoder == "json":
        return _json_array
    if isinstance(encoder, type):
        encode = resolve_encoder(encoder, where=where)  # refuses a class that is no record

        def record_array(items: Sequence[Any]) -> bytes:
            return b"[" + b",".join(map(encode, _values(items))) + b"]"

        return record_array
    name = encoder if isinstance(encoder, str) else None
    if name is not None:  # a name of the per-value encoders ('auto', 'text', ...) or a typo
        raise ValueError(
            f"{where}: encoder={name!r} does not make a request body of a batch; pass "
            "'json' (a JSON array, the default), a record class, or a function items -> body"
        )
    return check_function(where, "encoder", encoder, "items -> bytes")


class HttpPostSink(RetryingEndpoint):
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
        encoder: BatchEncoder,
        headers: Mapping[str, str],
        retry: Retry,
        request_timeout: float | None,
    ) -> None:
        super().__init__(
            client, url, where="http_post_sink", retry=retry, request_timeout=request_timeout
        )
        self.batch_size = batch_size
        self.posted = 0
        self.requests = 0
        self._encoder = encoder
        self._headers = headers

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
        await self._request("POST", content=body, headers=self._headers)
        self.requests += 1
        self.posted += len(items)


@asynccontextmanager
async def http_post_sink(
    url: str,
    *,
    batch_size: int = 100,
    client: httpx.AsyncClient | None = None,
    encoder: BatchEncoder | Literal["json"] | type[Any] = "json",
    content_type: str = "application/json",
    headers: Mapping[str, str] | None = None,
    retry: Retry | None = None,
    request_timeout: float | None = 10.0,
    retries: int | None = None,
    backoff: float | None = None,
) -> AsyncIterator[HttpPostSink]:
    """A sink that POSTs each batch to ``url`` as one request body (a JSON array).

    Args:
        url: the ``http(s)`` address to POST to.
        batch_size: the batch size a :class:`rxflow.Flow` should use.
        client: an ``httpx.AsyncClient`` to use (and leave open); default: a new one.
        encoder: how a batch becomes the body: ``"json"`` (default), a compact JSON array
            written by :func:`rxflow.connectors.codecs.encode_json` (records as objects);
            a record class, the same array of its instances, refusing anything else; or a
            function ``items -> bytes`` (or ``str``). A ``Message`` in a batch is sent as
            its value (a function gets the batch as it was sent).
        content_type: the ``Content-Type`` sent with every request.
        headers: sent with every request.
        retry: how a 5xx, 408 or 429 answer or a broken connection is retried, as an
            :class:`rxflow.strategies.Retry`; default: 4 attempts in all, waiting 0.5 s,
            then twice as long each time up to 30 s, no jitter (several workers posting to
            one server do better with ``jitter=1.0``). A numeric ``Retry-After`` makes a
            wait longer (up to ``retry.cap``). ``retry.on`` selects the failures: a broken
            connection is an ``httpx.TransportError`` or a ``ConnectionError``
            (:class:`~rxflow.errors.ServiceUnavailableError`), an answer worth retrying an
            :class:`~rxflow.errors.HttpResponseError`; the default ``(Exception,)`` retries both.
            ``retry.then`` must be ``FailFast()``. A retried POST may reach the server
            twice, as at-least-once delivery allows: make the endpoint idempotent if that
            matters.
        request_timeout: seconds for each request.
        retries: deprecated, use ``retry=Retry(attempts=retries + 1, ...)``.
        backoff: deprecated, use ``retry=Retry(base=backoff, ...)``.

    Raises:
        HttpResponseError: a non-2xx answer (a 5xx, 408 or 429 after the retries).
        ServiceUnavailableError: the server could not be reached after the retries.

    Example:
        Post readings in batches of 50::

            async with http_post_sink("http://localhost:8000/ingest", batch_size=50) as sink:
                await sink.send_batch([{"t": 1, "v": 0.5}, {"t": 2, "v": 0.7}])
    """
    where = "http_post_sink"
    url = check_url(where, url)
    check_count(where, "batch_size", batch_size)
    batch_encoder = _batch_encoder(where, encoder)
    check_seconds(where, "request_timeout", request_timeout, optional=True)
    policy = retry_policy(where, retry, retries, backoff)
    async with using_client(client) as http:
        yield HttpPostSink(
            http,
            url,
            batch_size=batch_size,
            encoder=batch_encoder,
            headers={"Content-Type": content_type, **(headers or {})},
            retry=policy,
            request_timeout=request_timeout,
        )
