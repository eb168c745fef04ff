"""What the Kafka source and sink share: aiokafka, imported as the ``[kafka]`` extra; the
client options (bootstrap servers, client id, TLS and SASL); starting and stopping a client
on its :class:`~rxflow.connectors._asyncio_host.AsyncioHost` within a bounded time; and the
errors a lost broker raises, which name the bootstrap servers and never the credentials.

Why aiokafka: it is asyncio-native and maintained, its calls cancel as asyncio tasks do (a
cancelled ``getmany`` or ``send_and_wait`` leaves nothing running), and under trio it is
hosted on an asyncio loop in a worker thread like the other asyncio-only clients. The
alternative, confluent-kafka (librdkafka), runs its own threads, prefetches into its own
queues past any bound we set per fetch, and its asyncio layer wraps blocking calls in
executor threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Final

import anyio

from rxflow._checks import check_name
from rxflow.connectors._asyncio_host import AsyncioHost, closed_on_failure
from rxflow.connectors._extras import requires_extra
from rxflow.errors import ServiceUnavailableError

with requires_extra("kafka"):
    import aiokafka  # type: ignore[import-untyped]  # no py.typed
    import aiokafka.client  # type: ignore[import-untyped]
    import aiokafka.errors  # type: ignore[import-untyped]

__all__ = [
    "AUTHENTICATION_ERRORS",
    "CLOSE_TIMEOUT_S",
    "CONNECTION_ERRORS",
    "CONNECT_TIMEOUT_S",
    "SECURITY_PROTOCOLS",
    "Bootstrap",
    "ClientOptions",
    "client_options",
    "started",
    "stop_client",
    "unavailable",
]

CONNECT_TIMEOUT_S: Final = 10.0
"""How long a client may take to reach the cluster at start before ServiceUnavailableError."""
CLOSE_TIMEOUT_S: Final = 5.0
"""How long a client's stop (leaving its group, closing its connections) may take at most."""
STOP_GRACE_S: Final = 2.0
"""How long a consumer's own stop may take before it is torn down (see :func:`stop_client`)."""

SECURITY_PROTOCOLS: Final = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS: Final = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")

CONNECTION_ERRORS: Final = (
    aiokafka.errors.KafkaConnectionError,
    aiokafka.errors.NoBrokersAvailable,
    aiokafka.errors.KafkaTimeoutError,
    aiokafka.errors.RequestTimedOutError,
    TimeoutError,
    OSError,
)
"""What a client raises when it cannot reach the cluster (or a broker of it)."""

AUTHENTICATION_ERRORS: Final = (
    aiokafka.errors.AuthenticationFailedError,
    aiokafka.errors.AuthenticationMethodNotSupported,
    aiokafka.errors.SaslAuthenticationFailed,
    # The broker does not offer the mechanism (or SASL at all). From aiokafka 0.13 on,
    # bootstrap() takes it for an unreachable broker; before, it comes out of start().
    aiokafka.errors.UnsupportedSaslMechanismError,
)

Bootstrap = str | Sequence[str]
"""The bootstrap servers: ``"host:port"``, several separated by commas, or a list of them."""


class ClientOptions(dict[str, Any]):
    """The keyword arguments every aiokafka client of a connector gets (bootstrap servers,
    client id, security), plus what errors may name: :attr:`address` (the bootstrap
    servers, never credentials) and the secrets an error text must not show.

    Its ``repr`` masks the password: it may end up in a traceback's locals.
    """

    address: str
    secrets: tuple[str, ...]

    def __repr__(self) -> str:
        shown = {k: ("***" if k == "sasl_plain_password" and v else v) for k, v in self.items()}
        return f"ClientOptions({shown!r})"

    def scrub(self, text: str) -> str:
        """``text`` with every secret of these options replaced by ``***``."""
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text


def _servers(where: str, bootstrap: Bootstrap) -> list[str]:
    if isinstance(bootstrap, str):
        check_name(where, "bootstrap", bootstrap)
        servers = [part.strip() for part in bootstrap.split(",")]
    elif isinstance(bootstrap, Sequence) and bootstrap:
        servers = []
        for server in bootstrap:
            check_name(where, "bootstrap", server)
            servers.append(server.strip())
    else:
        raise TypeError(
            f"{where}: bootstrap must be 'host:port' (several separated by commas) or a "
            f"non-empty list of them, not {bootstrap!r}"
        )
    for server in servers:
        host, colon, port = server.rpartition(":")
        if not colon or not host or "/" in server or not port.isdigit():
            raise ValueError(
                f"{where}: bootstrap server {server!r} is not 'host:port' (such as "
                "'localhost:9092'); give the broker's host and port, without a scheme"
            )
    return servers


def client_options(
    where: str,
    bootstrap: Bootstrap,
    *,
    client_id: str | None = None,
    security_protocol: str = "PLAINTEXT",
    sasl_mechanism: str | None = None,
    sasl_plain_username: str | None = None,
    sasl_plain_password: str | None = None,
    ssl_context: Any = None,
) -> ClientOptions:
    """Check the connection arguments and turn them into aiokafka's keyword arguments.

    Example:
        >>> options = client_options("demo", "localhost:9092", client_id="billing")
        >>> options["bootstrap_servers"], options["client_id"], options.address
        (['localhost:9092'], 'billing', 'localhost:9092')
        >>> secured = client_options(
        ...     "demo", "k1:9093,k2:9093", security_protocol="SASL_PLAINTEXT",
        ...     sasl_mechanism="PLAIN", sasl_plain_username="u", sasl_plain_password="pw")
        >>> "pw" in repr(secured), secured.scrub("failed with pw")
        (False, 'failed with ***')
    """
    servers = _servers(where, bootstrap)
    if security_protocol not in SECURITY_PROTOCOLS:
        raise ValueError(
            f"{where}: security_protocol must be one of {', '.join(SECURITY_PROTOCOLS)}, "
            f"not {security_protocol!r}"
        )
    options = ClientOptions(bootstrap_servers=servers, security_protocol=security_protocol)
    if client_id is not None:
        check_name(where, "client_id", client_id)
        options["client_id"] = client_id
    if security_protocol.startswith("SASL"):
        mechanism = sasl_mechanism or "PLAIN"
        if mechanism not in SASL_MECHANISMS:
            raise ValueError(
                f"{where}: sasl_mechanism must be one of {', '.join(SASL_MECHANISMS)}, not "
                f"{mechanism!r}"
            )
        if not sasl_plain_username or not sasl_plain_password:
            raise ValueError(
                f"{where}: security_protocol {security_protocol!r} needs "
                "sasl_plain_username and sasl_plain_password"
            )
        options.update(
            sasl_mechanism=mechanism,
            sasl_plain_username=sasl_plain_username,
            sasl_plain_password=sasl_plain_password,
        )
    elif sasl_mechanism is not None or sasl_plain_username or sasl_plain_password:
        raise ValueError(
            f"{where}: SASL settings need security_protocol='SASL_SSL' (or "
            f"'SASL_PLAINTEXT'), not {security_protocol!r}"
        )
    if ssl_context is not None:
        if not security_protocol.endswith("SSL"):
            raise ValueError(
                f"{where}: ssl_context needs security_protocol='SSL' (or 'SASL_SSL'), not "
                f"{security_protocol!r}"
            )
        options["ssl_context"] = ssl_context
    elif security_protocol.endswith("SSL"):
        from aiokafka.helpers import create_ssl_context  # type: ignore[import-untyped]

        options["ssl_context"] = create_ssl_context()  # the system's trusted CAs
    options.address = ",".join(servers)
    options.secrets = tuple(s for s in (sasl_plain_password,) if s)
    return options


def unavailable(
    options: ClientOptions, error: BaseException, what: str = "is not reachable"
) -> ServiceUnavailableError:
    """The error for a cluster the client cannot reach (or lost): names the bootstrap
    servers and the client's own error, with every secret masked."""
    if isinstance(error, AUTHENTICATION_ERRORS):
        return ServiceUnavailableError(
            f"kafka at {options.address} refused the credentials "
            f"({options.scrub(repr(error))}); check sasl_mechanism, sasl_plain_username "
            "and sasl_plain_password"
        )
    return ServiceUnavailableError(
        f"kafka at {options.address} {what} ({options.scrub(repr(error))}); start it, or "
        "check bootstrap (and security_protocol)"
    )


async def stop_client(client: Any) -> None:
    """``client.stop()`` (on the client's loop), to its end, within
    :data:`STOP_GRACE_S` for a consumer (then torn down).

    Two things in aiokafka's consumer would hold the stop or leave tasks and sockets
    behind:

    * its ``stop()`` waits for the group coordinator's routine, which may be in a JoinGroup
      that the broker holds until the group's rebalance ends (seconds; tansu holds a
      first join for half the session timeout), or looking for a coordinator that is not
      there. The routine is cancelled first: with auto-commit off (the connectors commit
      themselves) its last step has nothing to do, and ``stop()`` still sends LeaveGroup
      for a member that joined. What is left of ``stop()`` (LeaveGroup, the fetcher, the
      connections) waits only for a lost broker, or for a LeaveGroup sent behind a held
      rejoin (a broker answers a connection's requests in order): past the grace time it
      is torn down here (the group finds out by the session timeout). A member cancelled
      in its first join has no generation, and leaves no LeaveGroup either;
    * its fetcher stops by cancelling the fetch requests in flight and awaiting each: one
      that was retrying (the broker is gone) re-raises its cancellation out of ``stop()``,
      which then never closes the connections. Such a ``CancelledError`` (this task is not
      being cancelled) is taken for what it is.
    """
    if not hasattr(client, "_fetcher"):  # a producer
        await client.stop()
        return
    coordinator = getattr(client, "_coordinator", None)
    await _cancelled(getattr(coordinator, "_coordination_task", None))
    try:
        with anyio.fail_after(STOP_GRACE_S):
            await client.stop()
    except TimeoutError:
        await _tear_down_consumer(client)  # a lost broker did not answer
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise  # a real cancellation of this stop
        await _tear_down_consumer(client)


async def _cancelled(task: object) -> None:
    """Cancel one of aiokafka's tasks (if it is one and runs) and wait for its end."""
    if isinstance(task, asyncio.Task) and not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


async def _tear_down_consumer(client: Any) -> None:
    """What ``stop()`` did not reach: the coordinator's tasks, the fetcher's, the
    connections (aiokafka's own attributes, looked up with care)."""
    coordinator = getattr(client, "_coordinator", None)
    tasks = [
        getattr(coordinator, name, None)
        for name in ("_coordination_task", "_heartbeat_task", "_commit_refresh_task")
    ]
    fetcher = getattr(client, "_fetcher", None)
    tasks.append(getattr(fetcher, "_fetch_task", None))
    tasks += list(getattr(fetcher, "_pending_tasks", ()))
    for task in tasks:
        await _cancelled(task)
    await client._client.close()


class _Opened:
    """What aiokafka's client made in a start's own task: connections and tasks."""

    __slots__ = ("conns", "task", "tasks")

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self.task = task
        self.conns: list[Any] = []
        self.tasks: list[asyncio.Task[Any]] = []

    def close(self) -> None:
        """Close the connections (again for one the client closed: that does nothing) and
        cancel the tasks (their outcome is taken when they end: none is logged)."""
        for conn in self.conns:
            conn.close()
        for task in self.tasks:
            task.cancel()
            task.add_done_callback(_outcome_taken)


def _outcome_taken(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()


_OPENING: contextvars.ContextVar[_Opened | None] = contextvars.ContextVar(
    "rxflow_kafka_opening", default=None
)
"""What the client's start running in this context (its task only) has made so far."""


def _track_what_starts_make() -> None:
    """Have aiokafka's client tell :data:`_OPENING` of each connection and task it makes.

    Cancelled in a start, ``AIOKafkaClient`` leaves things behind that nothing else
    reaches: ``bootstrap()`` keeps its first connection in a local variable until the
    cluster's metadata arrives, and never closes it when cancelled meanwhile (it is found
    unclosed when collected, its reader task still pending); before 0.13, ``bootstrap()``
    also probes the broker's version with requests in tasks of their own, which fail
    unretrieved when the connection closes. A start records what is made in its own task,
    to close it when the start fails. Outside a start, and in the client's other tasks,
    the wrappers only pass things on.
    """
    module = aiokafka.client
    if getattr(module.create_conn, "rxflow_tracked", False):
        return
    original_conn, original_task = module.create_conn, module.create_task

    def opening() -> _Opened | None:
        opened = _OPENING.get()
        if opened is not None and opened.task is asyncio.current_task():
            return opened
        return None

    async def create_conn(*args: Any, **kwargs: Any) -> Any:
        conn = await original_conn(*args, **kwargs)
        if (opened := opening()) is not None:
            opened.conns.append(conn)
        return conn

    def create_task(*args: Any, **kwargs: Any) -> Any:
        task = original_task(*args, **kwargs)
        if (opened := opening()) is not None:
            opened.tasks.append(task)
        return task

    create_conn.rxflow_tracked = True  # type: ignore[attr-defined]
    module.create_task = create_task
    module.create_conn = create_conn


async def _start_there(client: Any, within: float) -> None:
    """``client.start()`` on the client's loop, within ``within`` s; a failed or
    cancelled start stops the half-started client (its tasks and sockets), and closes the
    connections and tasks it made that the client did not keep."""
    _track_what_starts_make()
    task = asyncio.current_task()
    assert task is not None
    opened = _Opened(task)

    async def stop() -> None:
        try:
            await stop_client(client)
        finally:
            opened.close()

    token = _OPENING.set(opened)
    try:
        async with closed_on_failure(stop, close_timeout=CLOSE_TIMEOUT_S):
            with anyio.fail_after(within):
                await client.start()
    finally:
        _OPENING.reset(token)
    # Started: the client keeps what it needs. (Its tasks' contexts still name `opened`.)
    opened.conns.clear()
    opened.tasks.clear()


@contextlib.asynccontextmanager
async def started(
    host: AsyncioHost,
    make: Callable[[], Any],
    options: ClientOptions,
    *,
    within: float = CONNECT_TIMEOUT_S,
) -> AsyncIterator[Any]:
    """An aiokafka client made by ``make()`` on the host's loop (aiokafka clients bind to
    the loop they are made on), started within ``within`` s, stopped at exit (shielded,
    bounded by :data:`CLOSE_TIMEOUT_S`).

    Raises:
        ServiceUnavailableError: the cluster could not be reached in time, or refused the
            credentials.
    """

    async def make_and_start_there() -> Any:
        client = make()
        await _start_there(client, within)
        return client

    async def stop(client: Any) -> None:  # started, and the caller was cancelled meanwhile
        with anyio.move_on_after(CLOSE_TIMEOUT_S):
            await stop_client(client)

    try:
        client = await host.call(make_and_start_there, close_if_cancelled=stop)
    except (*CONNECTION_ERRORS, *AUTHENTICATION_ERRORS) as error:
        raise unavailable(options, error) from error
    try:
        yield client
    finally:
        with anyio.move_on_after(CLOSE_TIMEOUT_S, shield=True):
            await host.call(stop_client, client)
