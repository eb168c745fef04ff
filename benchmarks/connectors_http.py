"""HTTP connectors against raw httpx, on an in-process HTTP/1.1 server over loopback.

``sse``: events per second read from a ``text/event-stream`` through
``open_pipe(sse_source(...), ops.map(...))``, acking each message, against the loop one
writes with httpx: ``response.aiter_lines()``, collecting ``data:`` lines and dispatching
on blank lines. Both decode each event's data as JSON.

``sse_parse``: the wire format alone, events per second of CPU time parsed from the same
bytes cut in 64 KiB chunks: rxflow's ``SseParser.feed`` against httpx-sse's public
``EventSource(response).aiter_sse()`` over an ``httpx.Response`` streaming those chunks
(each row also gives httpx-sse's line and event decoders driven by hand, as a bounded
wrapper would have to drive them). It is the measurement behind keeping rxflow's parser
(rxflow/connectors/http/_sse_wire.py).

``post``: items per second POSTed as JSON arrays of ``BATCH``: ``http_post_sink(...)
.send_batch(batch)`` against ``client.post(url, content=json.dumps(batch))``, each waiting
for the server's 204; both build the same batches the same way.

The server (tests/connectors/http_server.py) runs in the same event loop, so both columns
include its work; httpx runs natively on both backends. Both sides use a client made
beforehand, and each run times the transfer only.
"""

from __future__ import annotations

import codecs
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
from reactivex import operators as ops

from benchmarks._measure import BACKENDS, row
from rxflow import open_pipe
from rxflow.connectors import Message
from rxflow.connectors.http import SseParser, http_post_sink, sse_source
from tests.connectors.http_server import Exchange, HttpServer, serving

BATCH = 100
CHUNK = 64 * 1024


class Timing:
    """Wall-clock and process CPU seconds of one transfer. The CPU time is the steadier
    figure on a busy machine: client and server share this one process."""

    def __init__(self) -> None:
        self.wall = time.perf_counter()
        self.cpu = time.process_time()

    @classmethod
    def start(cls) -> Timing:
        return cls()

    def stop(self) -> Timing:
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu
        return self


def event_stream(count: int) -> bytes:
    return b"".join(b'id: %d\ndata: {"n": %d}\n\n' % (n, n) for n in range(count))


@asynccontextmanager
async def sse_server(count: int) -> AsyncIterator[HttpServer]:
    body = event_stream(count)

    async def events(exchange: Exchange) -> None:
        await exchange.start_stream()
        for start in range(0, len(body), CHUNK):
            await exchange.send_chunk(body[start : start + CHUNK])
        await exchange.end_stream()

    async with serving({"GET /events": events}) as server:
        yield server


def number(message: Message[Any]) -> Message[int]:
    return message.with_value(message.value["n"])


async def sse_rxflow(count: int) -> tuple[int, Timing]:
    total = 0
    async with sse_server(count) as server, httpx.AsyncClient() as client:
        started = Timing.start()
        async with (
            sse_source(server.url("/events"), client=client, codec="json", reconnect=False) as s,
            open_pipe(s, ops.map(number)) as numbers,
        ):
            async for message in numbers:
                total += message.value
                await message.ack()
        return total, started.stop()


async def sse_raw_httpx(count: int) -> tuple[int, Timing]:
    total = 0
    async with sse_server(count) as server, httpx.AsyncClient() as client:
        started = Timing.start()
        async with client.stream("GET", server.url("/events")) as response:
            data: list[str] = []
            async for line in response.aiter_lines():
                if line.startswith("data:"):
                    data.append(line[5:].removeprefix(" "))
                elif not line and data:
                    total += json.loads("\n".join(data))["n"]
                    data = []
        return total, started.stop()


def sse(quick: bool) -> Iterator[dict[str, Any]]:
    count = 30_000 if quick else 500_000
    yield from compare("sse_consume_ack", "raw_httpx_aiter_lines_parse", sse_rxflow,
                       sse_raw_httpx, count, count * (count - 1) // 2, quick)  # fmt: skip


# -- the wire format alone -----------------------------------------------------------------


def chunks_of(body: bytes) -> list[bytes]:
    return [body[start : start + CHUNK] for start in range(0, len(body), CHUNK)]


async def parse_rxflow(chunks: list[bytes]) -> int:
    parser, events = SseParser(), 0
    for chunk in chunks:
        events += len(parser.feed(chunk))
    return events


async def parse_httpx_sse(chunks: list[bytes]) -> int:
    from httpx_sse import EventSource  # the bench extra

    async def body() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk

    response = httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body())
    events = 0
    async for _ in EventSource(response).aiter_sse():
        events += 1
    return events


async def parse_httpx_sse_decoders(chunks: list[bytes]) -> int:
    from httpx_sse._decoders import SSEDecoder, SSELineDecoder  # private: what a bound needs

    text = codecs.getincrementaldecoder("utf-8-sig")("replace")
    lines, decoder, events = SSELineDecoder(), SSEDecoder(), 0
    for chunk in chunks:
        for line in lines.decode(text.decode(chunk)):
            if decoder.decode(line) is not None:
                events += 1
    return events


def sse_parse(quick: bool) -> Iterator[dict[str, Any]]:
    count = 30_000 if quick else 300_000
    chunks = chunks_of(event_stream(count))
    parsers = (parse_rxflow, parse_httpx_sse, parse_httpx_sse_decoders)
    for backend in BACKENDS:
        best = dict.fromkeys(parsers, float("inf"))
        for _ in range(3 if quick else 7):  # interleaved, so that a busy spell hits all
            for parse in parsers:
                started = time.process_time()
                events = anyio.run(parse, chunks, backend=backend)
                best[parse] = min(best[parse], time.process_time() - started)
                if events != count:
                    raise AssertionError(f"{parse.__name__}: {events} events, not {count}")
        ours, theirs, by_hand = (count / best[parse] for parse in parsers)
        yield row("sse_parse_cpu", backend, count, ours, "httpx_sse_aiter_sse", theirs,
                  httpx_sse_decoders_per_s=round(by_hand),
                  ratio_to_decoders=round(ours / by_hand, 3))  # fmt: skip


# -- POST batches --------------------------------------------------------------------------


@asynccontextmanager
async def ingest_server(received: list[int]) -> AsyncIterator[HttpServer]:
    async def ingest(exchange: Exchange) -> None:
        received.append(len(exchange.request.json()))
        await exchange.respond(status=204)

    async with serving({"POST /ingest": ingest}) as server:
        yield server


def reading(n: int) -> dict[str, Any]:
    return {"sensor": "s-1", "n": n, "value": 21.5}


async def post_rxflow(count: int) -> tuple[int, Timing]:
    received: list[int] = []
    async with ingest_server(received) as server, httpx.AsyncClient() as client:
        started = Timing.start()
        async with http_post_sink(server.url("/ingest"), client=client, batch_size=BATCH) as sink:
            for start in range(0, count, BATCH):
                await sink.send_batch([reading(n) for n in range(start, min(start + BATCH, count))])
        return sum(received), started.stop()


async def post_raw_httpx(count: int) -> tuple[int, Timing]:
    received: list[int] = []
    async with ingest_server(received) as server, httpx.AsyncClient() as client:
        started = Timing.start()
        url = server.url("/ingest")
        headers = {"Content-Type": "application/json"}
        for start in range(0, count, BATCH):
            batch = [reading(n) for n in range(start, min(start + BATCH, count))]
            response = await client.post(url, content=json.dumps(batch), headers=headers)
            response.raise_for_status()
        return sum(received), started.stop()


def post(quick: bool) -> Iterator[dict[str, Any]]:
    count = 10_000 if quick else 200_000
    yield from compare("http_post_sink_batches", "raw_httpx_post_batches", post_rxflow,
                       post_raw_httpx, count, count, quick)  # fmt: skip


Run = Callable[[int], Awaitable[tuple[int, Timing]]]


def compare(
    name: str,
    baseline: str,
    rxflow_run: Run,
    raw_run: Run,
    count: int,
    expected: int,
    quick: bool,
) -> Iterator[dict[str, Any]]:
    """Each run times its own transfer (not the server's start nor the client's set-up);
    the best of the repeats counts."""
    repeats = 3 if quick else 5
    for backend in BACKENDS:
        best: dict[Run, Timing] = {}
        for run in (rxflow_run, raw_run):
            timings = []
            for _ in range(repeats + 1):  # the first run warms up
                result, timing = anyio.run(run, count, backend=backend)
                if result != expected:
                    raise AssertionError(f"{run.__name__} on {backend}: {result} != {expected}")
                timings.append(timing)
            best[run] = min(timings[1:], key=lambda timing: timing.wall)
        ours, theirs = best[rxflow_run], best[raw_run]
        yield row(
            name,
            backend,
            count,
            count / ours.wall,
            baseline,
            count / theirs.wall,
            rxflow_per_cpu_s=round(count / ours.cpu),
            baseline_per_cpu_s=round(count / theirs.cpu),
        )


CASES: dict[str, Callable[[bool], Iterable[dict[str, Any]]]] = {
    "http_sse": sse,
    "http_sse_parse": sse_parse,
    "http_post": post,
}

if __name__ == "__main__":
    for case in CASES.values():
        for result in case(True):
            print(json.dumps(result), flush=True)
