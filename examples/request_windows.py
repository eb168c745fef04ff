"""Window a live stream of web requests into one-second summaries.

A generator task plays a web server's access log: requests arrive at a varying rate, some
fail, some are slow. rxflow windows them with ``buffer_with_time`` on the event loop's clock
and the loop below prints one line per window. Run it with::

    python examples/request_windows.py            # asyncio
    python examples/request_windows.py --trio     # the same pipeline under trio
"""

from __future__ import annotations

import random
import statistics
import sys
from collections.abc import AsyncIterator

import anyio
import attrs
from reactivex import operators as ops

import rxflow

WINDOW_SECONDS = 1.0
RUN_SECONDS = 4.5


@attrs.frozen
class Request:
    path: str
    status: int
    millis: float


@attrs.frozen
class Summary:
    requests: int
    errors: int
    p95_millis: float
    top_path: str

    @classmethod
    def of(cls, window: list[Request]) -> Summary:
        millis = sorted(request.millis for request in window)
        paths = [request.path for request in window]
        return cls(
            requests=len(window),
            errors=sum(request.status >= 500 for request in window),
            p95_millis=statistics.quantiles(millis, n=20)[-1] if len(millis) > 1 else millis[0],
            top_path=max(set(paths), key=paths.count),
        )


async def requests(seconds: float, seed: int = 7) -> AsyncIterator[Request]:
    """Requests as they arrive: bursts and lulls, a few errors, a long latency tail."""
    rng = random.Random(seed)
    paths = ["/", "/search", "/cart", "/checkout", "/api/items"]
    deadline = anyio.current_time() + seconds
    while anyio.current_time() < deadline:
        rate = rng.choice([50, 200, 800])  # requests per second for the next moment
        await anyio.sleep(rng.expovariate(rate))
        yield Request(
            path=rng.choice(paths),
            status=503 if rng.random() < 0.03 else 200,
            millis=rng.lognormvariate(3.0, 0.6),
        )


async def main() -> None:
    async with rxflow.open_pipe(
        requests(RUN_SECONDS),
        ops.buffer_with_time(WINDOW_SECONDS),
        ops.filter(bool),  # skip empty windows
        ops.map(Summary.of),
    ) as windows:
        async for summary in windows:
            print(
                f"{summary.requests:4d} requests, {summary.errors:2d} errors, "
                f"p95 {summary.p95_millis:6.1f} ms, busiest {summary.top_path}"
            )


if __name__ == "__main__":
    anyio.run(main, backend="trio" if "--trio" in sys.argv else "asyncio")
