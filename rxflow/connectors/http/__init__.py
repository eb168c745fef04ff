"""HTTP through httpx: server-sent events and polling as sources, POST as a sink.

httpx runs natively on asyncio and on trio, so these connectors call it directly on either
backend. Each takes an ``httpx.AsyncClient`` to share (its connection pool, auth, proxies;
it is left open) or makes its own and closes it on exit. One connector per module:

* :func:`sse_source` (:mod:`~rxflow.connectors.http.sse`) reads a ``text/event-stream``
  (parsed as the WHATWG spec says) and, when the connection drops, reconnects with
  ``Last-Event-ID`` so that the server resumes after the last event seen. The body is
  read only as the consumer pulls: a slow consumer leaves the bytes in the socket, and
  TCP flow control holds the server back.
* :func:`poll_source` (:mod:`~rxflow.connectors.http.poll`) fetches a JSON endpoint every
  ``interval`` and yields the items of each answer; a ``cursor`` function turns the last
  item into the next request's parameters so that only new items come.
* :func:`http_post_sink` (:mod:`~rxflow.connectors.http.post`) POSTs batches as JSON
  arrays and returns once the server answered 2xx.

HTTP has no acknowledgement, so the messages' settlements do nothing: at-least-once across
restarts comes from the server's side (``Last-Event-ID``, a ``since`` cursor) and the ids
you keep. Server errors (5xx, 408, 429) and broken connections are retried as a
:class:`rxflow.strategies.Retry` says (``retry=``; a numeric ``Retry-After`` is honoured);
then :class:`~rxflow.errors.HttpResponseError` or
:class:`~rxflow.errors.ServiceUnavailableError` names the URL and what happened.

Example:
    >>> from rxflow.connectors.http import ServerSentEvent, SseParser
    >>> SseParser().feed(b"id: 1\\ndata: hello\\n\\n")
    [ServerSentEvent(type='message', data=b'hello', id='1')]
"""

from __future__ import annotations

from rxflow.connectors.codecs import DeadLetter  # noqa: F401 (importable here before)
from rxflow.connectors.http._client import (  # noqa: F401 (importable here before)
    DEFAULT_MAX_BODY_BYTES,
    ERROR_BODY_BYTES,
)
from rxflow.connectors.http._retry import DEFAULT_RETRY, MAX_BACKOFF
from rxflow.connectors.http.poll import PollSource, poll_source
from rxflow.connectors.http.post import BatchEncoder, HttpPostSink, http_post_sink
from rxflow.connectors.http.sse import (
    DEFAULT_MAX_EVENT_BYTES,
    ServerSentEvent,
    SseParser,
    SseSource,
    sse_source,
)
from rxflow.errors import HttpResponseError, ServiceUnavailableError

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_MAX_EVENT_BYTES",
    "DEFAULT_RETRY",
    "BatchEncoder",
    "MAX_BACKOFF",
    "HttpPostSink",
    "HttpResponseError",
    "PollSource",
    "ServerSentEvent",
    "ServiceUnavailableError",
    "SseParser",
    "SseSource",
    "http_post_sink",
    "poll_source",
    "sse_source",
]
