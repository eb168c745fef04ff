"""Health and metrics of a running flow over HTTP: ``/metrics``, ``/health/live``,
``/health/ready``.

A service that embeds a :class:`~rxflow.Flow` (or ``rxflow run --serve``) runs
:func:`serve_health` next to it, so that Prometheus can scrape the flow and an orchestrator
can probe it:

* ``GET /metrics``: the flow's metrics in Prometheus's text format
  (:func:`rxflow.flow.metrics.export_prometheus`);
* ``GET /health/live``: 200 while the flow runs, 503 before it started and after it ended;
* ``GET /health/ready``: 200 while the flow runs with its sources entered (connected) and
  is not draining; 503 otherwise. Both answer a small JSON body that says why.

HTTP/1.1 is parsed by h11 (python-hyper's maintained sans-I/O protocol library) and the
sockets are anyio's, so the server runs on trio and on asyncio alike, inside the caller's
task group, and leaves nothing behind when it is cancelled. It needs the ``metrics`` extra
(``pip install 'rxflow[metrics]'``: prometheus-client and h11).
"""

from __future__ import annotations

import json
import logging
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
from anyio.abc import SocketAttribute

from rxflow._checks import check_host, check_port
from rxflow.flow import FlowHandle
from rxflow.flow.metrics import export_prometheus

if TYPE_CHECKING:
    import h11

__all__ = ["serve_health"]

logger = logging.getLogger("rxflow")

# A client that opened a connection and sends nothing (or keeps an idle keep-alive
# connection) is let go after this long, so that probes cannot pile up connections.
IDLE_TIMEOUT = 30.0
MAX_REQUEST_BYTES = 16 * 1024  # a probe's or a scrape's request is a few hundred bytes
ENDPOINTS = ("/metrics", "/health/live", "/health/ready")


async def serve_health(
    handle: FlowHandle,
    host: str = "127.0.0.1",
    port: int = 9100,
    *,
    task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``/metrics``, ``/health/live`` and ``/health/ready`` for ``handle``'s flow on
    ``host:port`` until cancelled. Started with ``await task_group.start(...)``, it returns
    the port it listens on once it does (pass ``port=0`` for any free port).

    Raises :class:`OSError` when it cannot listen (the port is taken), and
    :class:`ImportError` without the ``metrics`` extra.

    Example:
        >>> import anyio, httpx
        >>> from rxflow import Flow, serve_health
        >>> async def events():
        ...     await anyio.sleep_forever()  # a source that waits for its first event
        ...     yield
        >>> async def main():
        ...     async with anyio.create_task_group() as tg:
        ...         handle = Flow("demo").source(events()).sink(print).start(tg)
        ...         port = await tg.start(serve_health, handle, "127.0.0.1", 0)
        ...         async with httpx.AsyncClient() as client:
        ...             live = await client.get(f"http://127.0.0.1:{port}/health/live")
        ...         tg.cancel_scope.cancel()
        ...     return live.status_code, live.json()
        >>> anyio.run(main)
        (200, {'live': True})
    """
    check_host("serve_health()", "host", host)
    check_port("serve_health()", "port", port, allow_zero=True)
    try:
        import h11  # noqa: F401 (checked here, so that a missing one fails at the call)
        from prometheus_client import CollectorRegistry
    except ImportError as error:
        raise ImportError(
            "serve_health() needs prometheus-client and h11: pip install 'rxflow[metrics]'"
        ) from error
    registry = CollectorRegistry()  # the flow's own: nothing global is registered twice
    export_prometheus(handle.snapshot, registry)
    listener = await anyio.create_tcp_listener(local_host=host, local_port=port)
    async with listener:
        bound = listener.extra(SocketAttribute.local_port)
        logger.info("serving /metrics and /health on %s:%d", host, bound)
        task_status.started(bound)
        await listener.serve(partial(_serve_connection, handle, registry))


async def _serve_connection(
    handle: FlowHandle, registry: Any, stream: anyio.abc.SocketStream
) -> None:
    import h11

    async with stream:
        connection = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST_BYTES)
        try:
            while True:
                request = await _next_request(connection, stream)
                if request is None:
                    return
                status, content_type, body = _answer(request, handle, registry)
                await _respond(connection, stream, request, status, content_type, body)
                if connection.our_state is h11.MUST_CLOSE:
                    return
                connection.start_next_cycle()
        except h11.RemoteProtocolError as error:
            if connection.our_state in (h11.IDLE, h11.SEND_RESPONSE):  # h11 allows an answer
                body = f"bad request: {error}\n".encode()
                await _respond(connection, stream, None, 400, "text/plain", body)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, ConnectionError):
            return  # the client went away; nothing to answer
        except Exception:
            # One connection's trouble must not end the server (nor the flow beside it).
            logger.warning("health server: a connection failed", exc_info=True)


async def _next_request(
    connection: h11.Connection, stream: anyio.abc.SocketStream
) -> h11.Request | None:
    """The next request, its body (if any) read and ignored; None when the client is
    done or idle for too long."""
    import h11

    request = None
    with anyio.move_on_after(IDLE_TIMEOUT):
        while True:
            event = connection.next_event()
            if event is h11.NEED_DATA:
                try:
                    data = await stream.receive()
                except anyio.EndOfStream:
                    data = b""
                connection.receive_data(data)
            elif isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.EndOfMessage):
                return request
            elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                return None
    return None


def _answer(request: h11.Request, handle: FlowHandle, registry: Any) -> tuple[int, str, bytes]:
    """Status, content type and body for ``request``."""
    path = request.target.decode("ascii", "replace").split("?", 1)[0]
    if request.method not in (b"GET", b"HEAD"):
        return 405, "text/plain", b"only GET and HEAD are served\n"
    if path == "/metrics":
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return 200, CONTENT_TYPE_LATEST, generate_latest(registry)
    if path == "/health/live":
        if handle.running:
            return _json(200, {"live": True})
        reason = "the flow has ended" if handle.done else "the flow has not started"
        return _json(503, {"live": False, "reason": reason})
    if path == "/health/ready":
        if handle.ready:
            return _json(200, {"ready": True})
        return _json(503, {"ready": False, "reason": _not_ready_because(handle)})
    return 404, "text/plain", f"not found; served: {', '.join(ENDPOINTS)}\n".encode()


def _not_ready_because(handle: FlowHandle) -> str:
    if not handle.running:
        return "the flow has ended" if handle.done else "the flow has not started"
    if handle.stopping:
        return "the flow is draining (it was asked to stop)"
    return "the flow's sources are not connected yet"


def _json(status: int, body: dict[str, object]) -> tuple[int, str, bytes]:
    return status, "application/json", json.dumps(body).encode()


async def _respond(
    connection: h11.Connection,
    stream: anyio.abc.SocketStream,
    request: h11.Request | None,
    status: int,
    content_type: str,
    body: bytes,
) -> None:
    import h11

    headers = [("content-type", content_type), ("content-length", str(len(body)))]
    if status == 405:
        headers.append(("allow", "GET, HEAD"))
    if request is None:  # a request it could not parse: say so and close
        headers.append(("connection", "close"))
    events: list[h11.Event] = [h11.Response(status_code=status, headers=headers)]
    if request is None or request.method != b"HEAD":  # a HEAD response has no body
        events.append(h11.Data(data=body))
    events.append(h11.EndOfMessage())
    await stream.send(b"".join(connection.send(event) or b"" for event in events))
