"""Connections to Redis: a redis-py asyncio client on an :class:`AsyncioHost`, checked
with ``PING``; what a lost connection raises."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any, Final

import anyio

from rxflow.connectors._asyncio_host import AsyncioHost
from rxflow.connectors._extras import requires_extra
from rxflow.errors import ServiceUnavailableError

with requires_extra("redis"):
    import redis.asyncio as aioredis
    from redis.asyncio.retry import Retry
    from redis.backoff import ExponentialBackoff, NoBackoff
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import ResponseError
    from redis.exceptions import TimeoutError as RedisTimeoutError

CONNECTION_ERRORS: Final = (RedisConnectionError, RedisTimeoutError, OSError)
CONNECT_TIMEOUT_S: Final = 5.0

__all__ = ["CONNECTION_ERRORS", "ResponseError", "address", "connected"]


def address(client: Any) -> str:
    """Where a client connects (``host:port``, or its socket's path), never credentials."""
    kwargs = client.connection_pool.connection_kwargs
    if "path" in kwargs:
        return str(kwargs["path"])
    return f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"


@contextlib.asynccontextmanager
async def connected(
    host: AsyncioHost, url: str, *, retry: bool, **options: Any
) -> AsyncIterator[Any]:
    """A redis-py client on the host's loop, checked with ``PING``, closed on exit.

    ``retry=False`` turns off redis-py's own retries, for the source's reads: a read retried
    inside redis-py could hide a reply lost with its connection (entries the server handed to
    this consumer), which the source must know about to re-read them.
    """

    async def open_client() -> Any:
        # from_url does not give its pool redis-py's default retries: say what we want.
        retries = (
            Retry(ExponentialBackoff(cap=1.0, base=0.05), 3) if retry else Retry(NoBackoff(), 0)
        )
        return aioredis.from_url(
            url, socket_connect_timeout=CONNECT_TIMEOUT_S, retry=retries, **options
        )

    client = await host.call(open_client)
    try:
        try:
            await host.call(client.ping)
        except CONNECTION_ERRORS as error:
            raise ServiceUnavailableError(
                f"redis at {address(client)} is not reachable ({error}); start it, or check the URL"
            ) from error
        yield client
    finally:
        with anyio.CancelScope(shield=True):
            await host.call(client.aclose)
