"""The aio-pika connection shared by the RabbitMQ source and sink: connect, set up a channel
under cancellation, close without leaving the client's tasks behind."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import anyio

from rxflow.connectors._extras import requires_extra
from rxflow.connectors._redact import redact_logs_of
from rxflow.errors import ServiceUnavailableError

with requires_extra("rabbitmq"):
    import aio_pika
    import aiormq
    from aio_pika.abc import AbstractConnection
    from yarl import URL

__all__ = [
    "CHANNEL_LOST",
    "CLOSE_TIMEOUT",
    "close",
    "connect",
    "headers_of",
    "set_up",
    "timestamp_of",
    "address_of",
]

CLOSE_TIMEOUT = 5.0  # seconds a close may take before the connection is abandoned

# aio-pika and aiormq log connections with their URL: the password hidden, the query not.
redact_logs_of("aiormq.connection", "aio_pika.connection", "aio_pika.channel", "aio_pika.queue")


def address_of(url: str) -> str:
    """``host:port`` of an AMQP URL, for messages (never the credentials)."""
    parts = urlsplit(url)
    return f"{parts.hostname or 'localhost'}:{parts.port or 5672}"


_CLIENT_DIRS = tuple(os.path.dirname(module.__file__ or "") for module in (aio_pika, aiormq))


def _client_tasks() -> set[asyncio.Task[Any]]:
    """The running tasks that aio-pika or aiormq started (their coroutine is theirs)."""
    return {
        task
        for task in asyncio.all_tasks()
        if getattr(getattr(task.get_coro(), "cr_code", None), "co_filename", "").startswith(
            _CLIENT_DIRS
        )
    }


async def _finish_client_tasks(before: set[asyncio.Task[Any]]) -> None:
    """Wait for the tasks aio-pika started since ``before``, so none outlives the connector.

    A close, or a connect that failed or was cancelled, returns while tasks it spawned
    (writer shutdown, close callbacks) still have a few loop turns to run. Tasks that ran
    before (other connections') are left alone.
    """
    if started := _client_tasks() - before:
        await asyncio.wait(started, timeout=CLOSE_TIMEOUT)


async def connect(url: str) -> AbstractConnection:
    # What aio_pika.connect() does, keeping hold of the connection: one that failed or was
    # cancelled half-way is closed here, not by a task its __del__ would start later.
    connection = aio_pika.Connection(URL(url))
    try:
        await connection.connect()
    except BaseException as error:
        await close(connection)
        if isinstance(error, OSError | aiormq.exceptions.AMQPConnectionError):
            raise ServiceUnavailableError(
                f"rabbitmq: cannot connect to {address_of(url)} ({error!r}); check that RabbitMQ "
                "is running there and that the URL's user, password and virtual host are right"
            ) from error
        raise
    return connection


async def close(connection: AbstractConnection) -> None:
    before = _client_tasks()
    await connection.close()
    await _finish_client_tasks(before)


async def set_up(
    connection: AbstractConnection, steps: Callable[[AbstractConnection], Awaitable[None]]
) -> None:
    """Run a channel's set-up ``steps`` (open, qos, declare, consume); cancelled, close the
    connection under them rather than cancel the RPC in flight.

    aiormq answers a cancelled RPC by closing its channel with a warning in the log. The
    connection is given up anyway, and closing it ends the RPCs quietly; the caller's
    ``close()`` then finishes the job.
    """
    failure: list[BaseException] = []
    finished = anyio.Event()

    async def run() -> None:
        with anyio.CancelScope(shield=True):  # only the connection's close stops it
            try:
                await steps(connection)
            except BaseException as error:  # raised by the caller, as itself
                failure.append(error)
            finally:
                finished.set()

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(run)
        try:
            await finished.wait()
        except anyio.get_cancelled_exc_class():
            with anyio.move_on_after(CLOSE_TIMEOUT, shield=True):
                with contextlib.suppress(Exception):
                    await connection.close()
                await finished.wait()
            raise
    if failure:
        raise failure[0]


def headers_of(headers: Mapping[str, Any] | None) -> dict[str, str]:
    """AMQP header values are typed (ints, bytes, tables); a Message carries strings."""
    out = {}
    for name, value in (headers or {}).items():
        if isinstance(value, bytes):
            value = value.decode("utf-8", errors="replace")
        out[name] = value if isinstance(value, str) else str(value)
    return out


def timestamp_of(stamp: datetime | float | None) -> float | None:
    if isinstance(stamp, datetime):
        return stamp.timestamp()
    return None if stamp is None else float(stamp)


CHANNEL_LOST = (
    aiormq.exceptions.ChannelInvalidStateError,  # closed already
    aiormq.exceptions.AMQPChannelError,  # closed by the broker
    aiormq.exceptions.AMQPConnectionError,  # its connection dropped
)
