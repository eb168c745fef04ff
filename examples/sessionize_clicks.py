"""Sessionize a click stream by event time: one line per user session.

Clicks arrive slightly out of order (as they do from mobile clients) with their own
timestamps. ``rxflow.session`` groups each user's clicks into sessions that end after 30
minutes without a click, in event time, so the result does not depend on when the clicks
were processed. Clicks that come too late for their session go to a side output. Run::

    python examples/sessionize_clicks.py
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

import anyio
import attrs

from rxflow import open_pipe, session

MINUTE = 60.0


@attrs.frozen
class Click:
    user: str
    page: str
    at: float  # seconds since the start of the day, on the client's clock


async def clicks(seed: int = 3) -> AsyncIterator[Click]:
    """A day of clicks from five users: most on time, some a little late, a few very late
    (a phone that was offline)."""
    rng = random.Random(seed)
    clock = 8 * 60 * MINUTE
    for _ in range(400):
        clock += rng.expovariate(1 / 20)  # a click every 20 s on average
        user = rng.choice(["ann", "bob", "cid", "dee", "eve"])
        if rng.random() < 0.05:  # this user is away for a while
            clock += 40 * MINUTE
        delay = rng.choice([0, 0, 0, 30, 90])
        if rng.random() < 0.02:
            delay = 50 * MINUTE  # its session may be over by the time it arrives
        yield Click(user, rng.choice(["/", "/search", "/item", "/cart"]), clock - delay)
        await anyio.lowlevel.checkpoint()


def hhmm(seconds: float) -> str:
    return f"{int(seconds // 3600):02d}:{int(seconds % 3600 // 60):02d}"


async def main() -> None:
    sessions = session(
        lambda click: click.user,
        30 * MINUTE,
        timestamp=lambda click: click.at,
        out_of_orderness=2 * MINUTE,  # wait this long for stragglers
        late="side",
    )
    late: list[Click] = []
    sessions.late_items.subscribe(late.append)  # type: ignore[attr-defined]
    async with open_pipe(clicks(), sessions) as windows:
        async for window in windows:
            pages = [click.page for click in window.items]
            print(
                f"{window.key}: {hhmm(window.start)}-{hhmm(window.end)} {len(window):3d} clicks, "
                f"{pages.count('/cart')} to the cart"
            )
    print(f"{len(late)} clicks came too late for their session (e.g. {late[0] if late else '-'})")


if __name__ == "__main__":
    anyio.run(main)
