"""The nats-py connection shared by the JetStream source and sink: connect within a time
(nothing left running when that fails or is cancelled), close, and the stream's checks."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any, Final

import anyio

from rxflow._checks import check_name
from rxflow.connectors._asyncio_host import AsyncioHost, closed_on_failure
from rxflow.connectors._extras import requires_extra
from rxflow.connectors._redact import mask_url, mask_urls_in
from rxflow.errors import ServiceUnavailableError

with requires_extra("nats"):
    import nats
    import nats.aio.client
    import nats.errors
    import nats.js.errors

__all__ = ["CONNECT_TIMEOUT_S", "check_jetstream_name", "connected", "ensure_stream"]

CONNECT_TIMEOUT_S: Final = 5.0


async def _connect(url: str, within: float, options: Mapping[str, Any]) -> Any:
    """A nats-py client (on the client's loop), or ServiceUnavailableError after ``within`` s.

    nats-py retries a refused first connection forever when reconnects are allowed, and
    reports each failure only to ``error_cb``: the last one is kept for the error message.
    Reconnects stay on for the connection's life, so a server restart does not end a stream.
    """
    failures: list[BaseException] = []

    async def remember(error: BaseException) -> None:
        failures.append(error)

    settings: dict[str, Any] = {"connect_timeout": within, "error_cb": remember}
    settings.update(options)
    # nats.connect() would drop a client whose connect was cancelled half-way, with its
    # reader, flusher and pinger tasks running and its socket open: keep hold of it. And
    # no asyncio.wait_for, whose task (Python 3.11) may finish the connect after a cancel.
    client = nats.aio.client.Client()
    try:
        async with closed_on_failure(client.close, close_timeout=within):
            with anyio.fail_after(within):
                await client.connect(url, **settings)
    except (TimeoutError, OSError, nats.errors.Error) as error:
        cause = failures[-1] if failures else error
        raise ServiceUnavailableError(
            f"nats at {mask_url(url)} is not reachable ({mask_urls_in(repr(cause))}); start it "
            "(with JetStream: nats-server -js), or check the URL"
        ) from error
    return client


async def _close_client(client: Any) -> None:
    await client.close()


@contextlib.asynccontextmanager
async def connected(
    host: AsyncioHost, url: str, within: float, options: Mapping[str, Any] | None
) -> AsyncIterator[Any]:
    """A connected nats-py client, closed on exit (even when cancelled)."""
    client = await host.call(
        _connect, url, within, dict(options or {}), close_if_cancelled=_close_client
    )
    try:
        yield client
    finally:
        with anyio.CancelScope(shield=True):
            await host.call(client.close)


def check_jetstream_name(where: str, name: str, value: object) -> None:
    """Stream and consumer names: JetStream refuses these characters, with a vaguer error."""
    check_name(where, name, value)
    if isinstance(value, str) and any(c in value for c in ".*> /\\\t\n"):
        raise ValueError(
            f"{where}: {name} {value!r} may not contain '.', '*', '>', '/', '\\' or spaces "
            "(JetStream names are single tokens, such as 'ORDERS' or 'billing-worker')"
        )


async def ensure_stream(js: Any, stream: str, subject: str, create: bool) -> Any:
    """The stream's info (None if it was just made); with ``create``, make it if missing
    (capturing ``subject``)."""
    try:
        return await js.stream_info(stream)
    except nats.errors.NoRespondersError as error:  # nobody answers JetStream's API
        raise ServiceUnavailableError(
            "nats: the server does not run JetStream; start it with JetStream enabled "
            "(nats-server -js)"
        ) from error
    except nats.js.errors.NotFoundError:
        if not create:
            raise ValueError(
                f"nats: JetStream has no stream {stream!r}; create it, or pass create=True to "
                f"create it capturing {subject!r}"
            ) from None
        await js.add_stream(name=stream, subjects=[subject])
        return None
