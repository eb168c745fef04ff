"""JetStream's Recovery (what a starting source reads first) against a scripted server, in
trio's virtual time: which fetches it makes, what it hands out, holds back and touches.

The server here does what JetStream does with a durable's messages: a redelivery that is
due goes to a pull request before any message not delivered yet; a crashed worker's
messages are due only at their deadline. The real server: tests/connectors/test_nats.py.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from rxflow.connectors._kit import Incoming
from rxflow.connectors.nats._orphans import Recovery, Survey


class Server:
    """A durable consumer's messages by stream sequence: ``nakked`` are due at once,
    ``crashed`` at ``due_at`` (virtual seconds), ``new`` never delivered."""

    def __init__(self, nakked: list[int], crashed: list[int], new: list[int], due_at: float):
        self.due, self.crashed, self.new, self.due_at = nakked, crashed, new, due_at
        self.fetches: list[int] = []  # the count asked for by each fetch
        self.touched: list[int] = []

    async def fetch(self, count: int) -> list[Incoming[Any]]:
        self.fetches.append(count)
        if trio.current_time() >= self.due_at:
            self.due, self.crashed = sorted(self.due + self.crashed), []
        taken, self.due = self.due[:count], self.due[count:]  # due redeliveries first
        room = count - len(taken)
        taken, self.new = taken + self.new[:room], self.new[room:]
        if not taken:
            await trio.sleep(0.5)  # the pull request expires
        return [Incoming(b"", handle=n, identity=n) for n in taken]

    async def touch(self, handles: list[Any]) -> None:
        self.touched += handles


async def read(recovery: Recovery, server: Server, count: int, total: int) -> list[int]:
    """What the kit would hand out: through the recovery until it is over, then plainly."""
    got: list[Any] = []
    while len(got) < total:
        if recovery.over:
            records = await server.fetch(count)
        else:
            records = await recovery.fetch(count, server.fetch, server.touch)
        got += [record.identity for record in records]
    return got


@pytest.mark.trio
async def test_nakked_messages_are_read_first_without_waiting(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server = Server(nakked=[3, 4], crashed=[], new=[6, 7, 8], due_at=30.0)
    recovery = Recovery(Survey(pending=2, boundary=5, wait=30.0))
    assert await read(recovery, server, 4, 5) == [3, 4, 6, 7, 8]
    assert trio.current_time() == 0  # nothing waited for
    assert server.fetches[0] == 2  # asks for the pending ones only
    assert recovery.over
    assert recovery.waited == 0
    assert server.touched == []


@pytest.mark.trio
async def test_a_crashed_workers_messages_come_first_and_newer_ones_are_held(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server = Server(nakked=[], crashed=[1, 2, 3], new=[6, 7, 8, 9, 10], due_at=2.0)
    recovery = Recovery(Survey(pending=3, boundary=5, wait=2.1))
    got = await read(recovery, server, 2, 8)
    assert got == [1, 2, 3, 6, 7, 8, 9, 10]
    assert recovery.waited == pytest.approx(2.1)
    # The first fetch brought 6 and 7 before anything was due; later fetches brought more
    # than fit behind the redeliveries: each was held, and touched (its ack_wait restarted)
    # when handed out.
    assert server.touched == [6, 7, 8, 9, 10]


@pytest.mark.trio
async def test_pending_and_crashed_together(autojump_clock: trio.testing.MockClock) -> None:
    server = Server(nakked=[2], crashed=[1, 4], new=[6, 7], due_at=1.0)
    recovery = Recovery(Survey(pending=3, boundary=5, wait=1.1))
    got = await read(recovery, server, 3, 5)
    assert got == [2, 1, 4, 6, 7]  # what was due at once, then the crashed worker's
    assert recovery.waited == pytest.approx(1.1)


@pytest.mark.trio
async def test_a_pending_message_that_never_comes_is_waited_for_until_due_only(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Counted pending, never delivered again (max_deliver reached, say): the new ones go
    # out once everything was due.
    server = Server(nakked=[], crashed=[], new=[6, 7], due_at=0.0)
    recovery = Recovery(Survey(pending=1, boundary=5, wait=3.0))
    assert await read(recovery, server, 5, 2) == [6, 7]
    assert recovery.waited == pytest.approx(3.0)
    assert recovery.over


@pytest.mark.trio
async def test_nothing_new_the_crashed_messages_come_when_due(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server = Server(nakked=[], crashed=[1, 2], new=[], due_at=2.0)
    recovery = Recovery(Survey(pending=2, boundary=5, wait=2.1))
    assert await read(recovery, server, 4, 2) == [1, 2]
    assert recovery.waited == 0  # nothing held: the pull requests simply waited
    assert recovery.over
