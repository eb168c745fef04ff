"""Retrying HTTP requests with :class:`rxflow.strategies.Retry`: which failures are worth
another attempt, how ``Retry-After`` stretches the wait, and the connectors' old
``retries=``/``backoff=`` parameters mapped onto a ``Retry``.

The backoff schedule is the strategy's own (:meth:`Retry.delay`); what this module adds is
what only HTTP knows: a broken connection (``httpx.TransportError``) and the statuses that
say "later" (5xx, 408, 429) are worth retrying, any other status is not, and a server's
numeric ``Retry-After`` is a lower bound on the wait.
"""

from __future__ import annotations

import warnings
from typing import Any

import anyio
import attrs

from rxflow._checks import check_count, check_seconds
from rxflow.connectors._extras import requires_extra
from rxflow.connectors.http._client import raise_for_answer, read_bounded, unavailable
from rxflow.errors import HttpResponseError, ServiceUnavailableError
from rxflow.strategies import FailFast, Retry

with requires_extra("http"):
    import httpx

__all__ = [
    "DEFAULT_RETRY",
    "MAX_BACKOFF",
    "RetryingEndpoint",
    "reconnect_delay",
    "request",
    "retry_policy",
    "worth_retrying",
]

MAX_BACKOFF = 30.0  # seconds: the longest wait between two attempts, by default

DEFAULT_RETRY = Retry(attempts=4, base=0.5, cap=MAX_BACKOFF, jitter=0.0)
"""What ``poll_source`` and ``http_post_sink`` do unless told: 3 retries after the first
attempt, waiting 0.5 s, 1 s, 2 s (no jitter), or longer if the server says so."""


def retry_policy(where: str, retry: Retry | None, retries: object, backoff: object) -> Retry:
    """The connector's ``Retry``: ``retry`` as given, else one made from the deprecated
    ``retries``/``backoff`` (with a ``DeprecationWarning``), else :data:`DEFAULT_RETRY`."""
    if retries is None and backoff is None:
        policy = DEFAULT_RETRY if retry is None else retry
        if not isinstance(policy, Retry):
            raise TypeError(
                f"{where}: retry must be an rxflow.strategies.Retry, such as "
                f"Retry(attempts=4, base=0.5, cap=30, jitter=1.0), got {policy!r}"
            )
        if not isinstance(policy.then, FailFast):
            raise TypeError(
                f"{where}: retry.then must be FailFast(): a request that still fails after "
                "the last attempt raises; skip or dead-letter it with the Flow's on_error"
            )
        return policy
    if retry is not None:
        raise TypeError(f"{where}: pass retry=Retry(...) alone, not with retries= or backoff=")
    attempts = 1 + check_count(where, "retries", 3 if retries is None else retries, minimum=0)
    base = check_seconds(where, "backoff", 0.5 if backoff is None else backoff, allow_zero=True)
    warnings.warn(
        f"{where}(retries=, backoff=) are deprecated and will be removed in the next release: "
        f"pass retry=Retry(attempts={attempts}, base={base}, cap={MAX_BACKOFF}, jitter=0.0) "
        "(rxflow.strategies.Retry)",
        DeprecationWarning,
        stacklevel=4,  # the user's call, through the context manager's __aenter__
    )
    return Retry(attempts=attempts, base=base, cap=max(base, MAX_BACKOFF), jitter=0.0)


def worth_retrying(status: int) -> bool:
    """Statuses that say "later": server errors, request timeout, too many requests."""
    return status >= 500 or status in (408, 429)


def reconnect_delay(policy: Retry, base: float, failures: int) -> float:
    """The wait before the next reconnection after ``failures`` failed ones in a row, on
    ``policy``'s schedule from ``base`` seconds (a server's own ``retry:`` time): ``base``,
    then twice as long after each failure, up to ``policy.cap`` (or ``base`` if longer)."""
    if base != policy.base:  # the server changed it
        policy = attrs.evolve(policy, base=base, cap=max(base, policy.cap))
    return policy.delay(failures + 1)


def _retry_after(response: httpx.Response, cap: float) -> float:
    """A numeric ``Retry-After`` in seconds, capped; 0 if absent or a date."""
    value = response.headers.get("retry-after", "")
    return min(float(value), cap) if value.isdigit() else 0.0


async def request(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    where: str,
    retry: Retry,
    request_timeout: float | None,
    accept: tuple[int, ...] = (),
    max_body_bytes: int | None = None,
    **kwargs: Any,
) -> httpx.Response:
    """The 2xx (or ``accept``-ed) response, after retrying the failures ``retry`` covers.

    A broken connection is retried if ``retry.on`` covers the ``httpx.TransportError`` it
    is or the :class:`~rxflow.errors.ServiceUnavailableError` (a ``ConnectionError``) it
    ends as; a 5xx, 408 or 429 answer if ``retry.on`` covers ``HttpResponseError``. The
    default ``(Exception,)`` covers both. After the last attempt a broken connection raises
    :class:`~rxflow.errors.ServiceUnavailableError`, an answer :class:`HttpResponseError`.
    With ``max_body_bytes``, the body is streamed and reading stops past that many bytes.
    """
    retry_answers = issubclass(HttpResponseError, retry.on)
    # A broken connection is both what httpx raised and what it ends as for the caller.
    retry_connections = issubclass(ServiceUnavailableError, retry.on)
    attempt = 0
    while True:
        attempt += 1
        try:
            if max_body_bytes is None:
                response = await client.request(method, url, timeout=request_timeout, **kwargs)
            else:
                built = client.build_request(method, url, timeout=request_timeout, **kwargs)
                response = await client.send(built, stream=True)
                if response.is_success or response.status_code in accept:
                    return await read_bounded(response, max_body_bytes, where)
        except httpx.TransportError as error:
            if attempt >= retry.attempts or not (retry_connections or isinstance(error, retry.on)):
                raise unavailable(where, url, attempt, error) from error
            delay = retry.delay(attempt)
        else:
            if response.is_success or response.status_code in accept:
                return response
            if (
                attempt >= retry.attempts
                or not retry_answers
                or not worth_retrying(response.status_code)
            ):
                await raise_for_answer(response, where, tries=attempt)
            delay = max(retry.delay(attempt), _retry_after(response, retry.cap))
            await response.aclose()
        await anyio.sleep(delay)


class RetryingEndpoint:
    """One URL requested with retries: what the poll source and the POST sink share.

    ``url`` and ``retry`` are public on both connectors; ``where`` names the connector in
    errors.
    """

    def __init__(
        self,
        client: httpx.AsyncClient,
        url: str,
        *,
        where: str,
        retry: Retry,
        request_timeout: float | None,
    ) -> None:
        self.url = url
        self.retry = retry
        self._client = client
        self._where = where
        self._timeout = request_timeout

    async def _request(self, method: str, **kwargs: Any) -> httpx.Response:
        """:func:`request` to this endpoint (``kwargs`` as there: ``accept``, ``headers``...)."""
        return await request(
            self._client,
            method,
            self.url,
            where=self._where,
            retry=self.retry,
            request_timeout=self._timeout,
            **kwargs,
        )
