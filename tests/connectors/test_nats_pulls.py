"""JetStream's Pulls: a fetch whose reader is cancelled runs on, so the messages nats-py's
fetch had gathered are handed out by the next read or given back at close, never dropped
(dropped, JetStream would deliver them again only after ack_wait, after newer ones).

The race this guards is narrow against a real server (a cancellation landing while a fetch
waits for the rest of a batch the server is sending): here the fetch is a coroutine the test
controls, on the client's loop (asyncio) as in the source."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from rxflow.connectors.nats._settling import Pulls


class Fetch:
    """A fetch the test completes: ``finish(messages)`` or ``fail(error)``."""

    def __init__(self, pulls: Pulls) -> None:
        self.pulls, self.started = pulls, 0
        self.outcome: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()

    async def __call__(self) -> list[Any]:
        self.started += 1
        messages = await self.outcome
        for message in messages:  # as source._pull does
            self.pulls.unsettled[id(message)] = message
        return messages


async def cancelled_read(pulls: Pulls, fetch: Fetch) -> None:
    read = asyncio.ensure_future(pulls.pull(fetch))
    await asyncio.sleep(0)  # the fetch is under way
    read.cancel()
    with pytest.raises(asyncio.CancelledError):
        await read


def test_the_next_read_gets_what_a_cancelled_reads_fetch_brought() -> None:
    async def main() -> None:
        pulls = Pulls()
        fetch = Fetch(pulls)
        await cancelled_read(pulls, fetch)
        assert pulls.pending is not None
        assert not pulls.pending.done()
        messages = [object(), object()]
        fetch.outcome.set_result(messages)
        await asyncio.sleep(0)
        assert len(pulls.unsettled) == 2  # given back if the source closed now
        assert await pulls.pull(fetch) == messages  # no second fetch was started
        assert fetch.started == 1
        assert pulls.pending is None

    asyncio.run(main())


def test_a_failed_fetch_fails_the_next_read_once() -> None:
    async def main() -> None:
        pulls = Pulls()
        fetch = Fetch(pulls)
        await cancelled_read(pulls, fetch)
        fetch.outcome.set_exception(ConnectionError("closed"))
        await asyncio.sleep(0)  # failed with no reader: not logged as never retrieved
        with pytest.raises(ConnectionError, match="closed"):
            await pulls.pull(fetch)
        again = Fetch(pulls)
        again.outcome.set_result([])
        assert await pulls.pull(again) == []
        assert again.started == 1

    asyncio.run(main())
