"""HTTP connectors against a real local HTTP/1.1 server (tests/connectors/http_server.py).

The server runs in the test's own event loop on loopback sockets, so every test runs on
asyncio and on trio with httpx doing real I/O; the trio-only tests drive time with
``autojump_clock``.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st
from reactivex import operators as ops

from rxflow import Flow, open_pipe
from rxflow.connectors import Message
from rxflow.connectors.codecs import DecodeFailure
from rxflow.connectors.http import (
    HttpResponseError,
    ServerSentEvent,
    SseParser,
    http_post_sink,
    poll_source,
    sse_source,
)
from rxflow.errors import DecodeError, ServiceUnavailableError
from rxflow.strategies import FailFast, Retry, Skip
from tests.connectors.http_server import Exchange, Handler, serving

pytestmark = pytest.mark.filterwarnings("error::ResourceWarning")


def event(data: str, *, id: str | None = None, type: str | None = None) -> bytes:
    lines = [f"id: {id}"] if id is not None else []
    lines += [f"event: {type}"] if type is not None else []
    lines += [f"data: {line}" for line in data.split("\n")]
    return ("\n".join(lines) + "\n\n").encode()


def stream_of(*chunks: bytes, end: bool = True) -> Handler:
    """A handler that sends ``chunks`` as an event stream, then ends it (or drops it)."""

    async def handler(exchange: Exchange) -> None:
        await exchange.start_stream()
        for chunk in chunks:
            await exchange.send_chunk(chunk)
        if end:
            await exchange.end_stream()

    return handler


async def take(
    source: AsyncIterator[Message[Any]], count: int, *, within: float = 10
) -> list[Message[Any]]:
    taken: list[Message[Any]] = []
    with anyio.fail_after(within):
        async for message in source:
            taken.append(message)
            if len(taken) == count:
                break
    return taken


def value_of(message: Message[Any]) -> Any:
    return message.value


async def unused_port() -> int:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    async with listener:
        port: int = listener.extra(anyio.abc.SocketAttribute.local_port)
    return port


# -- the parser --------------------------------------------------------------------------

EDGE_CASES = (
    b"\xef\xbb\xbf: a comment, then a two-line event with an id\r\n"
    b"id: 1\r\ndata: first\r\ndata:  second\r\n\r\n"
    b"event: update\rdata\rdata:x\r\r"  # CR only; a field with no colon; no space after ':'
    b"data: keeps id 1\n\n"
    b"id: 2\n\n"  # an id-only block moves the last event id without an event
    b"retry: 250\nretry: soon\nid: bad\x00id\nunknown: field\ndata: after\n\n"
    b"data: never finished"
)
EDGE_EVENTS = [
    ServerSentEvent("message", b"first\n second", "1"),
    ServerSentEvent("update", b"\nx", "1"),
    ServerSentEvent("message", b"keeps id 1", "1"),
    ServerSentEvent("message", b"after", "2"),
]


def test_the_parser_follows_the_whatwg_rules() -> None:
    parser = SseParser()
    assert parser.feed(EDGE_CASES) == EDGE_EVENTS
    assert parser.last_event_id == "2"
    assert parser.retry == 0.25


@given(st.lists(st.integers(min_value=0, max_value=len(EDGE_CASES)), max_size=12))
def test_the_parser_gives_the_same_events_however_the_bytes_are_cut(cuts: list[int]) -> None:
    parser = SseParser()
    bounds = [0, *sorted(cuts), len(EDGE_CASES)]
    events = []
    for start, end in itertools.pairwise(bounds):
        events += parser.feed(EDGE_CASES[start:end])
    assert events == EDGE_EVENTS


def test_a_parser_resumes_from_a_last_event_id() -> None:
    parser = SseParser(last_event_id="41")
    assert parser.feed(b"data: no id of its own\n\n") == [
        ServerSentEvent("message", b"no id of its own", "41")
    ]


def test_the_parser_bounds_what_it_holds() -> None:
    with pytest.raises(ValueError, match="over max_event_bytes=100"):
        SseParser(max_event_bytes=100).feed(b"data: " + b"x" * 200)  # a line with no end
    parser = SseParser(max_event_bytes=100)
    with pytest.raises(ValueError, match="raise max_event_bytes"):
        for _ in range(20):  # data lines, but never the blank line that ends the event
            parser.feed(b"data: 0123456789\n")


# Events of one shape, which the parser reads a column at a time when a chunk holds several.
SHAPES = st.sampled_from(
    [("id", "data"), ("data",), ("event", "id", "data"), ("data", "event"), ("id", "data", "id")]
)
VALUES = st.sampled_from(["", "7", " x", '{"n": 1}', "é", "a\0b", "\udcff"])


@given(SHAPES, st.lists(st.tuples(VALUES, VALUES, VALUES), min_size=1, max_size=8),
       st.sampled_from([b"\n", b"\r\n", b"\r"]), st.integers(0, 40))  # fmt: skip
def test_runs_of_one_shape_parse_as_line_by_line(
    shape: tuple[str, ...], values: list[tuple[str, str, str]], end: bytes, cut: int
) -> None:
    events_lines = [
        [f"{field}: {value}" for field, value in zip(shape, fields, strict=False)] + [""]
        for fields in values
    ]
    lines = [line.encode("utf-8", "surrogateescape") for event in events_lines for line in event]
    stream = b"".join(line + end for line in lines)
    by_line = SseParser(last_event_id="0")
    expected = [event for at in range(len(stream)) for event in by_line.feed(stream[at : at + 1])]
    at_once = SseParser(last_event_id="0")
    events = at_once.feed(stream[:cut]) + at_once.feed(stream[cut:])
    assert events == expected
    assert (at_once.last_event_id, at_once._id) == (by_line.last_event_id, by_line._id)


def test_the_parser_gives_events_as_columns_too() -> None:
    columns = SseParser().feed_columns(EDGE_CASES)
    assert list(zip(*columns, strict=True)) == [tuple(event) for event in EDGE_EVENTS]


# -- sse_source --------------------------------------------------------------------------


@pytest.mark.anyio
async def test_sse_messages_carry_the_value_the_id_and_the_event_type() -> None:
    chunks = (EDGE_CASES[:40], EDGE_CASES[40:41], EDGE_CASES[41:], b"\n\n")
    async with (
        serving({"GET /events": stream_of(*chunks)}) as server,
        sse_source(server.url("/events"), reconnect=False) as source,
    ):
        messages = await take(source, 10)
        assert source.last_event_id == "2"
        assert source.retry == 0.25
    assert [(m.value, m.key, m.headers) for m in messages] == [
        ("first\n second", "1", {"event": "message"}),
        ("\nx", "1", {"event": "update"}),
        ("keeps id 1", "1", {"event": "message"}),
        ("after", "2", {"event": "message"}),
        ("never finished", "2", {"event": "message"}),  # the last chunk ended it
    ]
    assert messages[0].source == f"sse:{server.url('/events')}"
    assert server.requests[0].headers["accept"] == "text/event-stream"


@pytest.mark.anyio
async def test_sse_reconnects_with_last_event_id_and_loses_nothing() -> None:
    async def events(exchange: Exchange) -> None:
        last = exchange.request.headers.get("last-event-id")
        if last is None:
            await exchange.start_stream()
            await exchange.send_chunk(b"retry: 1\n\n" + event("1", id="1") + event("2", id="2"))
            await exchange.send_chunk(b"id: 3\ndata: 3\n\nid: 4\ndata: cut off mid")
            return  # drop the connection: the chunked body never ends
        if last == "3":
            await stream_of(event("4", id="4"), event("5", id="5"))(exchange)  # ends cleanly
            return
        await exchange.respond(status=204)  # "no more": the source stops reconnecting

    async with (
        serving({"GET /events": events}) as server,
        sse_source(server.url("/events"), codec="json") as source,
    ):
        values = [message.value async for message in source]
        assert source.reconnects == 2
    assert values == [1, 2, 3, 4, 5]
    sent_ids = [request.headers.get("last-event-id") for request in server.requests]
    assert sent_ids == [None, "3", "5"]


@pytest.mark.anyio
async def test_without_reconnect_a_dropped_stream_is_an_error_not_an_end() -> None:
    dropped = stream_of(event("1", id="1"), b"data: cut", end=False)
    async with (
        serving({"GET /events": dropped}) as server,
        sse_source(server.url("/events"), reconnect=False) as source,
    ):
        assert [m.value for m in await take(source, 1)] == ["1"]
        with pytest.raises(ServiceUnavailableError, match="dropped after event id '1'"):
            await take(source, 1)
    assert len(server.requests) == 1


@pytest.mark.anyio
async def test_sse_starts_after_a_given_last_event_id() -> None:
    async with (
        serving({"GET /events": stream_of(event("8", id="8"))}) as server,
        sse_source(server.url("/events"), last_event_id="7", reconnect=False) as source,
    ):
        assert [message.key async for message in source] == ["8"]
    assert server.requests[0].headers["last-event-id"] == "7"


@pytest.mark.anyio
@pytest.mark.parametrize("policy", ["raise", "skip", "dead_letter"])
async def test_sse_decode_policies(policy: Any) -> None:
    chunks = (event("1", id="1"), event("{oops", id="2"), event("3", id="3"))
    dead: list[DecodeFailure] = []
    extra: dict[str, Any] = {"dead_letter": dead.append} if policy == "dead_letter" else {}
    async with (
        serving({"GET /events": stream_of(*chunks)}) as server,
        sse_source(
            server.url("/events"), codec="json", on_decode_error=policy, reconnect=False, **extra
        ) as source,
    ):
        if policy == "raise":
            assert (await take(source, 1))[0].value == 1
            with pytest.raises(DecodeError, match="'2'"):
                await take(source, 1)
            return
        assert [m.value async for m in source] == [1, 3]
    assert source.decoder.skipped == (policy == "skip")
    assert [(d.key, d.data) for d in dead] == ([("2", b"{oops")] if dead else [])


@pytest.mark.anyio
async def test_sse_hands_a_pipe_what_one_read_brought_as_a_run() -> None:
    good = b"".join(event(str(n), id=str(n)) for n in range(5))
    async with (
        serving({"GET /events": stream_of(good + event("{oops", id="5"), event("6"))}) as server,
        sse_source(server.url("/events"), codec="json", reconnect=False) as source,
    ):
        first = await source.next_run()
        assert [m.value for m in first] == [0, 1, 2, 3, 4]  # what decoded before the failure
        with pytest.raises(DecodeError, match="'5'"):
            await source.next_run()
        assert [m.value for m in await source.next_run()] == [6]
        with pytest.raises(StopAsyncIteration):
            await source.next_run()
    async with (
        serving({"GET /events": stream_of(good, event("6", id="6"))}) as server,
        sse_source(server.url("/events"), codec="json", reconnect=False) as source,
        open_pipe(source, ops.map(value_of)) as pipe,
    ):
        assert [value async for value in pipe] == [0, 1, 2, 3, 4, 6]
    many = b"".join(event(str(n), id=str(n)) for n in range(300))
    async with (
        serving({"GET /events": stream_of(many)}) as server,
        sse_source(server.url("/events"), codec="json", reconnect=False) as source,
    ):
        runs = [await source.next_run()]
        while sum(map(len, runs)) < 300:
            runs.append(await source.next_run())
        assert max(map(len, runs)) == 128  # one read's events, in runs of at most RUN_LIMIT
        messages = [message for run in runs for message in run]
        assert [(m.value, m.key, m.headers) for m in messages[:2]] == [
            (0, "0", {"event": "message"}),
            (1, "1", {"event": "message"}),
        ]
        await messages[0].ack()
        assert (messages[0].settled, messages[1].settled) == ("ack", None)


@pytest.mark.anyio
async def test_sse_reads_only_what_the_consumer_pulls() -> None:
    total, sent = 32 * 1024 * 1024, 0
    chunk = event("x" * 1000) * 64

    async def flood(exchange: Exchange) -> None:
        nonlocal sent
        await exchange.start_stream()
        while sent < total:
            await exchange.send_chunk(chunk)
            sent += len(chunk)
        await exchange.end_stream()

    async with (
        serving({"GET /flood": flood}) as server,
        sse_source(server.url("/flood"), reconnect=False) as source,
    ):
        await take(source, 3)
        await anyio.wait_all_tasks_blocked()  # the server is stuck on a full socket
        assert sent < total / 4  # what the socket buffers and one read hold, no more
        assert len(source._events.datas) < 64 * 2  # parsed ahead: one chunk's events at most


@pytest.mark.anyio
@pytest.mark.parametrize("how", ["pipe_exit", "cancelled_while_waiting"])
async def test_leaving_an_sse_source_closes_the_connection(how: str) -> None:
    disconnected = anyio.Event()

    async def events(exchange: Exchange) -> None:
        await exchange.start_stream()
        await exchange.send_chunk(event("one", id="1"))
        await exchange.wait_for_disconnect()
        disconnected.set()

    async with serving({"GET /events": events}) as server:
        async with sse_source(server.url("/events")) as source:
            if how == "pipe_exit":
                async with open_pipe(source, ops.map(value_of)) as pipe:
                    assert await pipe.receive() == "one"
            else:
                async with anyio.create_task_group() as tg:

                    async def consume() -> None:
                        async for _ in source:
                            pass

                    tg.start_soon(consume)
                    await anyio.wait_all_tasks_blocked()  # reading, with nothing to read
                    tg.cancel_scope.cancel()
        with anyio.fail_after(10):
            await disconnected.wait()
        assert source._response is None


@pytest.mark.anyio
async def test_sse_connection_errors_name_the_url() -> None:
    async def wrong_type(exchange: Exchange) -> None:
        await exchange.respond(b"<html>", content_type="text/html")

    url = f"http://127.0.0.1:{await unused_port()}/events"
    with pytest.raises(ServiceUnavailableError, match=r"could not reach http://127\.0\.0\.1"):
        async with sse_source(url):
            pass
    async with serving({"GET /html": wrong_type}) as server:
        with pytest.raises(HttpResponseError, match="/missing answered 404") as info:
            async with sse_source(server.url("/missing")):
                pass
        assert info.value.status_code == 404
        with pytest.raises(HttpResponseError, match=r"text/html.*expected 200 text/event-stream"):
            async with sse_source(server.url("/html")):
                pass


@pytest.mark.anyio
async def test_an_sse_event_over_the_limit_is_an_error_naming_the_url() -> None:
    async with (
        serving({"GET /big": stream_of(b"data: " + b"x" * 5000, end=False)}) as server,
        sse_source(server.url("/big"), max_event_bytes=1000) as source,
    ):
        with pytest.raises(HttpResponseError, match=r"/big: event stream: .*=1000"):
            await take(source, 1)


@pytest.mark.trio
async def test_sse_waits_the_server_retry_time_then_backs_off(
    autojump_clock: trio.testing.MockClock,
) -> None:
    times: list[float] = []

    async def events(exchange: Exchange) -> None:
        times.append(trio.current_time())
        if len(times) == 1:
            await stream_of(b"retry: 5000\n\n", event("1", id="1"))(exchange)
        else:
            await exchange.respond(b"down", status=503, content_type="text/plain")

    async with (
        serving({"GET /events": events}) as server,
        sse_source(server.url("/events"), retries=2, connect_timeout=1000) as source,
    ):
        assert [m.value for m in await take(source, 1, within=1000)] == ["1"]
        with pytest.raises(ServiceUnavailableError, match="after 3 attempts"):
            await take(source, 1, within=1000)
    assert times == [0, 5, 15, 35]  # the server's 5 s, then twice as long after each failure


@pytest.mark.anyio
async def test_sse_gives_up_after_failed_reconnections() -> None:
    async def flaky(exchange: Exchange) -> None:
        if len(server.requests) == 1:
            await stream_of(event("only", id="1"))(exchange)
        else:
            await exchange.respond(b"down", status=503, content_type="text/plain")

    async with (
        serving({"GET /events": flaky}) as server,
        sse_source(server.url("/events"), retry=0.001, retries=2) as source,
    ):
        assert (await take(source, 1))[0].value == "only"
        with pytest.raises(ServiceUnavailableError, match=r"after 3 attempts.*503"):
            await take(source, 1)
    assert len(server.requests) == 4


def test_bad_arguments_say_what_is_wrong() -> None:
    with pytest.raises(ValueError, match="http:// or https://"):
        anyio.run(_enter, sse_source("ftp://example.com/events"))
    with pytest.raises(ValueError, match="interval must be 0 or more seconds"):
        anyio.run(_enter, poll_source("http://example.com", interval=-1))
    with pytest.raises(TypeError, match="interval must be seconds"):
        anyio.run(_enter, poll_source("http://example.com", interval="5"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="batch_size must be an int of 1 or more"):
        anyio.run(_enter, http_post_sink("http://example.com", batch_size=0))
    with pytest.raises(TypeError, match=r"retry must be an rxflow\.strategies\.Retry"):
        anyio.run(_enter, http_post_sink("http://example.com", retry=3))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"retry\.then must be FailFast"):
        anyio.run(_enter, poll_source("http://example.com", interval=1, retry=Retry(then=Skip())))
    with pytest.raises(TypeError, match="pass retry=Retry"):
        anyio.run(_enter, http_post_sink("http://example.com", retry=Retry(), retries=2))
    with pytest.raises(TypeError, match="retries must be an int"):
        anyio.run(_enter, http_post_sink("http://example.com", retries=1.5))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown codec"):
        anyio.run(_enter, poll_source("http://example.com", interval=1, codec="yaml"))  # type: ignore[arg-type]


async def _enter(manager: Any) -> None:
    async with manager:
        pass


NO_WAIT = Retry(attempts=3, base=0, cap=0)


# -- poll_source -------------------------------------------------------------------------


def orders_endpoint(ids: list[int], times: list[float], page: int = 3) -> Handler:
    """JSON pages of orders with an id above ``since``, recording when each poll came."""

    async def orders(exchange: Exchange) -> None:
        times.append(anyio.current_time())
        since = int(exchange.request.query.get("since", "0"))
        await exchange.respond_json([{"id": n} for n in ids if n > since][:page])

    return orders


@pytest.mark.trio
async def test_poll_every_interval_in_virtual_time(autojump_clock: trio.testing.MockClock) -> None:
    times: list[float] = []
    async with (
        serving({"GET /orders": orders_endpoint([1, 2, 3, 4, 5, 6, 7], times)}) as server,
        poll_source(
            server.url("/orders"),
            interval=60,
            cursor=lambda order: {"since": order["id"]},
            request_timeout=None,  # virtual time jumps while idle: keep timeouts out of it
        ) as source,
    ):
        ids = [message.value["id"] for message in await take(source, 7, within=1000)]
    assert ids == [1, 2, 3, 4, 5, 6, 7]
    assert times == [0, 60, 120]
    assert [request.query.get("since") for request in server.requests] == [None, "3", "6"]


@pytest.mark.trio
async def test_poll_retries_server_errors_with_backoff(
    autojump_clock: trio.testing.MockClock,
) -> None:
    times: list[float] = []

    async def unsteady(exchange: Exchange) -> None:
        times.append(trio.current_time())
        if len(times) == 2:
            await exchange.respond(b"", status=429, headers={"Retry-After": "10"})
        elif len(times) < 4:
            await exchange.respond(b"busy", status=503, content_type="text/plain")
        else:
            await exchange.respond_json({"status": "ok"})  # not a list: one item

    async with (
        serving({"GET /status": unsteady}) as server,
        poll_source(
            server.url("/status"),
            interval=1,
            retry=Retry(attempts=4, base=1, cap=30, jitter=0),
            request_timeout=None,
        ) as source,
    ):
        assert [m.value for m in await take(source, 1, within=1000)] == [{"status": "ok"}]
    assert times == [0, 1, 11, 15]  # backoff 1, then Retry-After 10 over 2, then 4


@pytest.mark.anyio
async def test_poll_waits_at_least_the_interval_between_polls() -> None:
    times: list[float] = []
    started = anyio.current_time()
    async with (
        serving({"GET /orders": orders_endpoint([1, 2, 3, 4, 5, 6], times, page=2)}) as server,
        poll_source(
            server.url("/orders"), interval=0.02, cursor=lambda order: {"since": order["id"]}
        ) as source,
    ):
        assert [m.value["id"] for m in await take(source, 6)] == [1, 2, 3, 4, 5, 6]
    assert len(times) == source.polls == 3
    # Poll k starts no sooner than `interval` after poll k-1 started, so whatever the
    # latencies, the server sees it no sooner than k intervals after the source opened.
    assert all(time >= started + k * 0.02 - 1e-6 for k, time in enumerate(times))


@pytest.mark.anyio
async def test_poll_asks_only_if_changed_when_the_server_sends_an_etag() -> None:
    answers = [(b"[1, 2]", "v1"), (b"", None), (b"[3]", "v2")]

    async def versions(exchange: Exchange) -> None:
        body, etag = answers.pop(0)
        if etag is None:
            await exchange.respond(status=304)
        else:
            await exchange.respond(body, headers={"ETag": etag})

    async with (
        serving({"GET /v": versions}) as server,
        poll_source(server.url("/v"), interval=0, key=str) as source,
    ):
        assert [(m.value, m.key) for m in await take(source, 3)] == [(1, "1"), (2, "2"), (3, "3")]
        assert source.etag == "v2"
    assert [r.headers.get("if-none-match") for r in server.requests] == [None, "v1", "v1"]


@pytest.mark.anyio
async def test_poll_hands_a_pipe_each_answer_as_a_run() -> None:
    def key(order: dict[str, int]) -> str:
        if order["id"] == 3:
            raise KeyError("no key for 3")
        return str(order["id"])

    async with (
        serving({"GET /orders": orders_endpoint([1, 2, 3, 4], [], page=4)}) as server,
        poll_source(server.url("/orders"), interval=0, key=key) as source,
    ):
        assert [m.key for m in await source.next_run()] == ["1", "2"]  # those before 3
        with pytest.raises(KeyError, match="no key for 3"):
            await source.next_run()
    async with (
        serving({"GET /orders": orders_endpoint([1, 2, 3, 4, 5], [], page=2)}) as server,
        poll_source(
            server.url("/orders"), interval=0, cursor=lambda order: {"since": order["id"]}
        ) as source,
    ):
        assert [[m.value["id"] for m in await source.next_run()] for _ in range(2)] == [
            [1, 2],
            [3, 4],
        ]
        async with open_pipe(source) as pipe:
            assert [m.value["id"] for m in await take(pipe, 1)] == [5]


@pytest.mark.anyio
async def test_poll_errors_name_the_url_and_status() -> None:
    async def down(exchange: Exchange) -> None:
        await exchange.respond(b"maintenance", status=503, content_type="text/plain")

    async with serving({"GET /down": down}) as server:
        async with poll_source(server.url("/missing"), interval=1, retry=NO_WAIT) as source:
            with pytest.raises(HttpResponseError, match=r"GET .*/missing answered 404"):
                await take(source, 1)
        assert len(server.requests) == 1  # a 404 is not worth retrying
        async with poll_source(server.url("/down"), interval=1, retry=NO_WAIT) as source:
            with pytest.raises(HttpResponseError, match=r"/down answered 503.*after 3 attempts"):
                await take(source, 1)
        assert len(server.requests) == 4


@pytest.mark.anyio
@pytest.mark.parametrize("policy", ["raise", "skip", "dead_letter"])
async def test_poll_decode_policies(policy: Any) -> None:
    async def answers(exchange: Exchange) -> None:
        first = len(server.requests) == 1
        await exchange.respond(b"{not json" if first else b"[1, 2]")

    dead: list[DecodeFailure] = []
    extra: dict[str, Any] = {"dead_letter": dead.append} if policy == "dead_letter" else {}
    async with (
        serving({"GET /items": answers}) as server,
        poll_source(server.url("/items"), interval=0, on_decode_error=policy, **extra) as source,
    ):
        if policy == "raise":
            with pytest.raises(DecodeError, match="poll:http"):
                await take(source, 1)
            return
        assert [m.value for m in await take(source, 2)] == [1, 2]
    assert source.decoder.skipped == (policy == "skip")
    assert [d.data for d in dead] == ([b"{not json"] if dead else [])


# -- http_post_sink ----------------------------------------------------------------------


def ingest_endpoint(received: list[Any], failures: list[int]) -> Handler:
    """Store each POSTed JSON body, after answering the given failure statuses first."""

    async def ingest(exchange: Exchange) -> None:
        if failures:
            await exchange.respond(b"try later", status=failures.pop(0), content_type="text/plain")
            return
        received.append(exchange.request.json())
        await exchange.respond(status=204)

    return ingest


@pytest.mark.anyio
async def test_post_sink_sends_each_batch_as_one_json_array() -> None:
    received: list[Any] = []
    async with (
        serving({"POST /ingest": ingest_endpoint(received, [])}) as server,
        http_post_sink(server.url("/ingest"), batch_size=2, headers={"X-Token": "t"}) as sink,
    ):
        assert sink.batch_size == 2
        await sink.send_batch([{"n": 1}, {"n": 2}])
        await sink.send({"n": 3})
        await sink.send_batch([])  # nothing to send: no request
    assert received == [[{"n": 1}, {"n": 2}], [{"n": 3}]]
    assert (sink.posted, sink.requests) == (3, 2)
    request = server.requests[0]
    assert request.headers["content-type"] == "application/json"
    assert request.headers["x-token"] == "t"


@pytest.mark.anyio
async def test_post_sink_retries_503_then_returns_once_confirmed() -> None:
    received: list[Any] = []
    async with (
        serving({"POST /ingest": ingest_endpoint(received, [503, 503])}) as server,
        http_post_sink(server.url("/ingest"), retry=Retry(attempts=3, base=0.001)) as sink,
    ):
        await sink.send_batch([1, 2, 3])
        assert received == [[1, 2, 3]]
    assert len(server.requests) == 3


@pytest.mark.anyio
async def test_post_sink_errors_name_the_status_and_url() -> None:
    received: list[Any] = []
    async with serving({"POST /ingest": ingest_endpoint(received, [400, 503, 503])}) as server:
        url = server.url("/ingest")
        async with http_post_sink(url, retry=Retry(attempts=2, base=0.001)) as sink:
            with pytest.raises(HttpResponseError, match=f"POST {url} answered 400") as info:
                await sink.send(1)
            assert (info.value.status_code, info.value.url) == (400, url)
            with pytest.raises(HttpResponseError, match=r"answered 503.*after 2 attempts"):
                await sink.send(2)
        assert received == []
        assert sink.posted == 0
    with pytest.raises(ServiceUnavailableError, match=r"could not reach .* after 2 attempts"):
        async with http_post_sink(url, retry=Retry(attempts=2, base=0.001)) as sink:
            await sink.send(3)


@pytest.mark.anyio
async def test_a_shared_client_is_left_open_and_a_custom_encoder_is_used() -> None:
    received: list[Any] = []
    async with (
        serving({"POST /ingest": ingest_endpoint(received, [])}) as server,
        httpx.AsyncClient() as client,
    ):
        encoder = lambda items: json.dumps({"items": list(items)})  # noqa: E731
        async with http_post_sink(server.url("/ingest"), client=client, encoder=encoder) as sink:
            await sink.send_batch(["a"])
        assert not client.is_closed
        await sink.send_batch(["b"])  # the client still works
    assert received == [{"items": ["a"]}, {"items": ["b"]}]


@pytest.mark.anyio
async def test_a_flow_relays_server_sent_events_to_a_post_endpoint() -> None:
    received: list[Any] = []
    chunks = [event(json.dumps({"n": n}), id=str(n)) for n in range(25)]
    routes = {"GET /events": stream_of(*chunks), "POST /ingest": ingest_endpoint(received, [])}
    async with (
        serving(routes) as server,
        http_post_sink(server.url("/ingest"), batch_size=10) as sink,
    ):
        events = sse_source(server.url("/events"), codec="json", reconnect=False)
        flow = Flow("relay").source(events).pipe(ops.map(value_of)).sink(sink, name="post")
        with anyio.fail_after(10):
            snapshot = await flow.run()
    assert [item for batch in received for item in batch] == [{"n": n} for n in range(25)]
    assert all(len(batch) <= 10 for batch in received)
    assert snapshot["post"].emitted == 25


@dataclasses.dataclass
class Reading:
    sensor: str
    value: float


@pytest.mark.anyio
async def test_post_sink_encodes_records_and_refuses_what_makes_no_body() -> None:
    received: list[Any] = []
    async with (
        serving({"POST /ingest": ingest_endpoint(received, [])}) as server,
        http_post_sink(server.url("/ingest")) as as_json,
        http_post_sink(server.url("/ingest"), encoder=Reading) as as_readings,
    ):
        await as_json.send_batch([Reading("a", 1.5), {"sensor": "b"}])
        await as_readings.send_batch([Reading("c", 2.0), Message(Reading("d", 0.5))])
        with pytest.raises(TypeError, match="encoder=Reading writes Reading records, got dict"):
            await as_readings.send({"sensor": "e"})
    assert received == [
        [{"sensor": "a", "value": 1.5}, {"sensor": "b"}],
        [{"sensor": "c", "value": 2.0}, {"sensor": "d", "value": 0.5}],
    ]
    with pytest.raises(ValueError, match=r"encoder='text' does not make a request body"):
        await _enter(http_post_sink("http://example.com", encoder="text"))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="encoder must be a function items -> bytes"):
        await _enter(http_post_sink("http://example.com", encoder=42))  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_post_sink_sends_messages_as_their_values() -> None:
    received: list[Any] = []
    async with (
        serving({"POST /ingest": ingest_endpoint(received, [])}) as server,
        http_post_sink(server.url("/ingest")) as sink,
    ):
        await sink.send_batch([Message({"n": 1}, key="a"), {"n": 2}])
    assert received == [[{"n": 1}, {"n": 2}]]


# -- retrying with rxflow.strategies.Retry ----------------------------------------------


@pytest.mark.anyio
async def test_retries_and_backoff_still_work_with_a_deprecation_warning() -> None:
    async def down(exchange: Exchange) -> None:
        await exchange.respond(b"maintenance", status=503, content_type="text/plain")

    async with serving({"GET /down": down, "POST /down": down}) as server:
        source = poll_source(server.url("/down"), interval=1, retries=2, backoff=0)
        with pytest.warns(DeprecationWarning, match=r"retry=Retry\(attempts=3, base=0\.0") as w:
            await source.__aenter__()
        await source.__aexit__(None, None, None)
        assert w[0].filename == __file__  # the warning points at the caller's line
        sink_manager = http_post_sink(server.url("/down"), retries=1, backoff=0)
        with pytest.warns(DeprecationWarning, match="http_post_sink"):
            sink = await sink_manager.__aenter__()
        try:
            assert sink.retry == Retry(attempts=2, base=0, cap=30, jitter=0)
            with pytest.raises(HttpResponseError, match=r"503.*after 2 attempts"):
                await sink.send(1)
        finally:
            await sink_manager.__aexit__(None, None, None)
    assert len(server.requests) == 2


@pytest.mark.anyio
async def test_retry_on_selects_broken_connections_or_answers() -> None:
    async def down(exchange: Exchange) -> None:
        await exchange.respond(b"busy", status=503, content_type="text/plain")

    connections_only = Retry(attempts=3, base=0, cap=0, on=(httpx.TransportError,))
    answers_only = Retry(attempts=3, base=0, cap=0, on=(HttpResponseError,))
    async with serving({"POST /down": down}) as server:
        async with http_post_sink(server.url("/down"), retry=connections_only) as sink:
            with pytest.raises(HttpResponseError, match=r"answered 503 .*\(text/plain\), exp"):
                await sink.send(1)  # not "after 3 attempts": a 503 is not retried
        assert len(server.requests) == 1
        async with http_post_sink(server.url("/down"), retry=answers_only) as sink:
            with pytest.raises(HttpResponseError, match="after 3 attempts"):
                await sink.send(1)
        assert len(server.requests) == 4
    url = f"http://127.0.0.1:{await unused_port()}/ingest"
    async with http_post_sink(url, retry=answers_only) as sink:
        with pytest.raises(ServiceUnavailableError, match=r"could not reach \S+: "):
            await sink.send(1)  # a broken connection is not retried: one attempt
    for on in [(httpx.TransportError,), (ConnectionError,)]:
        connections_only = Retry(attempts=3, base=0, cap=0, on=on)
        async with http_post_sink(url, retry=connections_only) as sink:
            with pytest.raises(ServiceUnavailableError, match="after 3 attempts"):
                await sink.send(1)


@pytest.mark.trio
async def test_retry_after_waits_longer_but_no_longer_than_the_cap(
    autojump_clock: trio.testing.MockClock,
) -> None:
    times: list[float] = []

    async def slow_down(exchange: Exchange) -> None:
        times.append(trio.current_time())
        if len(times) < 3:
            await exchange.respond(b"", status=429, headers={"Retry-After": "3600"})
        else:
            await exchange.respond(status=204)

    policy = Retry(attempts=3, base=1, cap=20, jitter=0)
    async with (
        serving({"POST /in": slow_down}) as server,
        http_post_sink(server.url("/in"), retry=policy, request_timeout=None) as sink,
    ):
        await sink.send(1)
    assert times == [0, 20, 40]


@pytest.mark.trio
async def test_jittered_waits_stay_within_the_schedule(
    autojump_clock: trio.testing.MockClock,
) -> None:
    times: list[float] = []

    async def flaky(exchange: Exchange) -> None:
        times.append(trio.current_time())
        status = 503 if len(times) < 4 else 204
        await exchange.respond(b"", status=status, content_type="text/plain")

    policy = Retry(attempts=4, base=8, cap=30, jitter=1.0, then=FailFast())
    async with (
        serving({"POST /in": flaky}) as server,
        http_post_sink(server.url("/in"), retry=policy, request_timeout=None) as sink,
    ):
        await sink.send(1)
    waits = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert len(waits) == 3
    assert all(0 <= wait <= bound for wait, bound in zip(waits, [8, 16, 30], strict=True))
    assert waits != [8, 16, 30]  # drawn: equal to the bounds only with no jitter at all


# -- the package ---------------------------------------------------------------------------

OLD_NAMES = [
    *("DEFAULT_MAX_BODY_BYTES", "DEFAULT_MAX_EVENT_BYTES", "ERROR_BODY_BYTES", "MAX_BACKOFF"),
    *("DeadLetter", "HttpPostSink", "HttpResponseError", "PollSource", "ServerSentEvent"),
    *("ServiceUnavailableError", "SseParser", "SseSource"),
    *("http_post_sink", "poll_source", "sse_source"),
]


def test_every_name_of_the_old_module_still_imports_from_the_package() -> None:
    import rxflow.connectors as connectors
    import rxflow.connectors.http as http
    from rxflow.connectors.http import poll, post, sse

    assert all(hasattr(http, name) for name in OLD_NAMES)
    assert http.sse_source is sse.sse_source is connectors.sse_source
    assert http.poll_source is poll.poll_source is connectors.poll_source
    assert http.http_post_sink is post.http_post_sink is connectors.http_post_sink
    for module in (http, sse, poll, post):
        assert all(hasattr(module, name) for name in module.__all__)
