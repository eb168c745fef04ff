"""What every PostgreSQL connector shares: connecting through asyncpg (hosted under trio),
closing, describing the server without its password, and taking names literally.

asyncpg runs only on asyncio; under trio its calls go through
:class:`~rxflow.connectors._asyncio_host.AsyncioHost`.
"""

from __future__ import annotations

from typing import Any, Final
from urllib.parse import urlsplit

import anyio

from rxflow._checks import check_name
from rxflow.connectors._asyncio_host import AsyncioHost
from rxflow.connectors._extras import requires_extra
from rxflow.connectors._redact import key_value_pairs, mask_urls_in
from rxflow.errors import ServiceUnavailableError

with requires_extra("postgres"):
    import asyncpg  # type: ignore[import-untyped,unused-ignore]

__all__ = [
    "CONNECTION_FAILED",
    "DEFAULT_APPLICATION_NAME",
    "MAX_IDENTIFIER_BYTES",
    "check_identifier",
    "close",
    "connect",
    "describe_server",
    "qualified_table",
    "quote_ident",
    "terminate",
]

DEFAULT_APPLICATION_NAME: Final = "rxflow"
MAX_IDENTIFIER_BYTES: Final = 63  # PostgreSQL truncates longer names (NAMEDATALEN - 1)

# What asyncpg raises when a connection in use breaks.
CONNECTION_FAILED = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)
# What asyncpg.connect raises when no server answers, or the server refuses for now.
_UNREACHABLE = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
)


def describe_server(dsn: str) -> str:
    """``"PostgreSQL at host:port/db"`` for error messages, without the password, from a
    URL DSN or a key/value one.

    Example:
        >>> describe_server("postgresql://me:secret@db.local:5433/app")
        'PostgreSQL at db.local:5433/app'
        >>> describe_server("host=db.local dbname=app user=me password=secret")
        'PostgreSQL at db.local:5432/app'
    """
    if "://" not in dsn:
        settings = key_value_pairs(dsn)
        host = settings.get("host", "localhost")
        port: object = settings.get("port", 5432)
        database = settings.get("dbname", "")
    else:
        try:
            url = urlsplit(dsn)
            host, port = url.hostname or "localhost", url.port or 5432
        except ValueError:
            return "PostgreSQL (a DSN that does not parse)"
        database = url.path.lstrip("/")
    return f"PostgreSQL at {host}:{port}" + (f"/{database}" if database else "")


def quote_ident(name: str) -> str:
    """``name`` as a quoted SQL identifier (so any table or column name is taken literally).

    Example:
        >>> print(quote_ident('Orders "2024" EU'))
        "Orders ""2024"" EU"
    """
    return '"' + name.replace('"', '""') + '"'


def qualified_table(schema: str | None, table: str) -> str:
    """The table's quoted name, with its quoted schema if there is one.

    Example:
        >>> print(qualified_table("app", "outbox"))
        "app"."outbox"
    """
    return (quote_ident(schema) + "." if schema else "") + quote_ident(table)


def check_identifier(where: str, name: str, value: object) -> str:
    """A table, column, schema or channel name PostgreSQL takes whole (at most 63 bytes)."""
    value = check_name(where, name, value)
    if len(value.encode()) > MAX_IDENTIFIER_BYTES:
        raise ValueError(
            f"{where}: {name} {value!r} is longer than {MAX_IDENTIFIER_BYTES} bytes, and "
            "PostgreSQL would silently truncate it; use a shorter name"
        )
    return value


def _retrieve_lost_tls_probe_errors() -> None:
    """asyncpg (0.30 to 0.32 at least: MagicStack/asyncpg#1211, #1310) probes for TLS
    with a protocol whose future gets an exception when its connection closes. A connect
    cancelled as that connection opens closes it with nobody awaiting the future, and
    asyncio logs "Future exception was never retrieved" (a ConnectionError) once it is
    collected. Marking the exception seen changes nothing else: a connect that awaits the
    future still gets it."""
    probe = getattr(getattr(asyncpg, "connect_utils", None), "TLSUpgradeProto", None)
    connection_lost = getattr(probe, "connection_lost", None)
    if probe is None or connection_lost is None or hasattr(connection_lost, "_rxflow_quiet"):
        return

    def quiet_connection_lost(self: Any, exc: BaseException | None) -> None:
        connection_lost(self, exc)
        future = getattr(self, "on_data", None)
        if future is not None and future.done() and not future.cancelled():
            future.exception()

    quiet_connection_lost._rxflow_quiet = True  # type: ignore[attr-defined]
    probe.connection_lost = quiet_connection_lost


_retrieve_lost_tls_probe_errors()


async def connect(
    host: AsyncioHost, dsn: str, application_name: str, connect_timeout: float, where: str
) -> asyncpg.Connection:
    """A connection on the host's loop; ServiceUnavailableError (without the password) if
    the server cannot be reached. A connect cancelled as it completes leaves nothing open."""
    server_settings = {"application_name": application_name}
    try:
        connection: asyncpg.Connection = await host.call(
            lambda: asyncpg.connect(dsn, timeout=connect_timeout, server_settings=server_settings),
            close_if_cancelled=_drop_at_once,
        )
    except _UNREACHABLE as error:
        raise ServiceUnavailableError(
            f"{where}: cannot connect to {describe_server(dsn)}: "
            f"{mask_urls_in(repr(error))}. Is the server running, and is the DSN right?"
        ) from error
    return connection


async def _drop_at_once(connection: asyncpg.Connection) -> None:
    """For a connect whose caller was cancelled as it completed: drop it at once."""
    connection.terminate()


async def close(host: AsyncioHost, connection: asyncpg.Connection) -> None:
    """Close the connection even if the caller is being cancelled; drop it if closing fails."""
    with anyio.CancelScope(shield=True):
        if connection.is_closed():
            return
        try:
            await host.call(lambda: connection.close(timeout=5.0))
        except Exception:
            await terminate(host, connection)


async def terminate(host: AsyncioHost, connection: asyncpg.Connection) -> None:
    """Abort the connection's socket at once (on asyncpg's loop: transports are not
    thread-safe)."""
    with anyio.CancelScope(shield=True):
        await host.call(_drop_at_once, connection)
