"""A TCP service that embeds an rxflow Flow, on asyncio or trio.

Clients send one JSON click per line (``{"user": "ann", "page": "/cart"}``). Every line
goes into the flow, which parses it (malformed lines go to a dead-letter list instead of
killing the service), counts clicks per page in one-second windows and prints them. A
client that sends ``STATS`` gets the flow's metrics line back.

Run it with its own demo clients, which send clicks (and some garbage) for three seconds;
the service then stops the flow gracefully, so the last window is flushed::

    python examples/flow_service.py           # asyncio
    python examples/flow_service.py --trio    # the same service under trio

The same flow, fed by generated clicks, runs under rxflow's command-line runner, which
adds Ctrl-C handling (first: drain, second: abort) and a progress line::

    python -m rxflow run examples.flow_service:generated_clicks --backend trio
"""

from __future__ import annotations

import json
import random
import sys
from collections import Counter
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

import anyio
import anyio.abc
from anyio.streams.text import TextReceiveStream
from reactivex import operators as ops

from rxflow import DeadLetter, Failure, Flow, map_async

dead_letters: list[Failure] = []


def parse_click(line: str) -> dict[str, Any]:
    click = json.loads(line)
    if not isinstance(click, dict) or "page" not in click:
        raise ValueError(f"not a click: {line!r}")
    return click


def print_window(counts: Counter[str]) -> None:
    busiest = ", ".join(f"{page} {n}" for page, n in counts.most_common(3))
    print(f"window: {sum(counts.values()):4d} clicks; busiest: {busiest}")


def click_flow(lines: AsyncIterable[str]) -> Flow:
    """The pipeline, whatever feeds it: parse, window by one second, count per page."""
    return (
        Flow("clicks", log_every=None)
        .source(lines, name="lines")
        .pipe(
            map_async(parse_click, on_error=DeadLetter(dead_letters.append), name="parse"),
            ops.buffer_with_time(1.0),
            ops.filter(bool),
            ops.map(lambda clicks: Counter(click["page"] for click in clicks)),
        )
        .sink(print_window, name="report")
    )


async def serve(port: int, lines: anyio.abc.ObjectSendStream[str], flow: Flow) -> None:
    """Accept clients on ``port`` and hand their lines to the flow, until cancelled."""

    async def handle(client: anyio.abc.SocketStream) -> None:
        async with client, lines.clone() as send:
            buffered = ""
            async for text in TextReceiveStream(client):
                buffered += text
                *complete, buffered = buffered.split("\n")
                for line in complete:
                    if line.strip() == "STATS":
                        await client.send((flow.snapshot().progress_line() + "\n").encode())
                    elif line.strip():
                        await send.send(line)  # waits while the flow is busy: backpressure

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=port)
    await listener.serve(handle)


async def demo_client(port: int, seed: int, seconds: float) -> None:
    rng = random.Random(seed)
    pages = ["/", "/search", "/cart", "/checkout"]
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        deadline = anyio.current_time() + seconds
        while anyio.current_time() < deadline:
            if rng.random() < 0.02:
                line = "{not json"
            else:
                line = json.dumps({"user": f"u{rng.randrange(50)}", "page": rng.choice(pages)})
            await stream.send((line + "\n").encode())
            await anyio.sleep(rng.expovariate(300))
        await stream.send(b"STATS\n")
        print("stats from the service:", (await stream.receive()).decode().strip())


async def main(port: int = 8765) -> None:
    send, receive = anyio.create_memory_object_stream[str](100)
    flow = click_flow(receive)
    async with anyio.create_task_group() as tg:
        handle = flow.start(tg)
        tg.start_soon(serve, port, send, flow)
        await anyio.sleep(0.1)  # let the listener open before the demo clients connect
        async with anyio.create_task_group() as clients:
            for seed in range(3):
                clients.start_soon(demo_client, port, seed, 3.0)
        handle.stop()  # graceful: the open window is flushed and printed
        await handle.wait()
        tg.cancel_scope.cancel()  # the listener
    print(f"dead letters: {len(dead_letters)}, e.g. {dead_letters[0].item!r}")


async def generated_lines(seconds: float = 5.0) -> AsyncIterator[str]:
    rng = random.Random(1)
    deadline = anyio.current_time() + seconds
    while anyio.current_time() < deadline:
        await anyio.sleep(rng.expovariate(500))
        yield json.dumps({"user": f"u{rng.randrange(50)}", "page": f"/p{rng.randrange(6)}"})


def generated_clicks() -> Flow:
    """The same flow over generated clicks, for ``python -m rxflow run``."""
    return click_flow(generated_lines())


if __name__ == "__main__":
    anyio.run(main, backend="trio" if "--trio" in sys.argv else "asyncio")
