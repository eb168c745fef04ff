"""The Flow's check of keyed windows over a source that shares its work, in virtual time
(trio's MockClock): when it asks, and what it does with the answers. The real systems'
answers are tested in tests/connectors/test_shared_work.py."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio
import trio.testing

from rxflow import Flow, session, sliding, tumbling
from rxflow.errors import KeyedWindowsOnSharedWorkError
from rxflow.flow._shared_work import CHECK_EVERY_S, keyed_stages


class SharedClicks:
    """A source that shares its work: a click a second; other workers appear at ``joined``
    (virtual seconds after the start) or never."""

    shares_work = True
    name = "fake:clicks"

    def __init__(self, count: int, joined: float | None = None, fails: bool = False) -> None:
        self.count = count
        self.joined = joined
        self.fails = fails
        self.asked: list[float] = []
        self.start = trio.current_time()

    async def other_workers(self) -> int:
        now = trio.current_time() - self.start
        self.asked.append(now)
        if self.fails:
            raise ConnectionError("the broker did not answer")
        return 2 if self.joined is not None and now >= self.joined else 0

    async def _clicks(self) -> AsyncIterator[tuple[str, int]]:
        for n in range(self.count):
            yield ("ann" if n % 2 else "bob", n)
            await trio.sleep(1.0)

    def __aiter__(self) -> AsyncIterator[tuple[str, int]]:
        return self._clicks()


def user(click: tuple[str, int]) -> str:
    return click[0]


@pytest.mark.trio
async def test_other_workers_that_appear_later_fail_the_flow_at_the_next_check(
    autojump_clock: trio.testing.MockClock,
) -> None:
    clicks = SharedClicks(count=1000, joined=25.0)
    written: list[Any] = []
    flow = Flow("per-user").source(clicks, name="clicks").pipe(session(user, 5.0))
    with pytest.raises(KeyedWindowsOnSharedWorkError) as raised:
        await flow.sink(written.append).run()
    assert clicks.asked == [0.0, CHECK_EVERY_S, 2 * CHECK_EVERY_S, 3 * CHECK_EVERY_S]
    error = raised.value
    assert (error.source, error.other_workers, error.stage) == (
        "source 'clicks' (fake:clicks)",
        2,
        "session",
    )
    assert "2 other workers read it now" in str(error)


@pytest.mark.trio
async def test_a_single_worker_runs_to_the_end(autojump_clock: trio.testing.MockClock) -> None:
    clicks = SharedClicks(count=25)
    written: list[Any] = []
    flow = Flow().source(clicks).pipe(tumbling(10.0, key=user)).sink(written.append)
    await flow.run()
    assert sum(len(window) for window in written) == 25
    assert clicks.asked == [0.0, 10.0, 20.0]  # the check ended with the flow


@pytest.mark.trio
async def test_windows_without_a_key_are_not_checked(
    autojump_clock: trio.testing.MockClock,
) -> None:
    clicks = SharedClicks(count=30, joined=0.0)
    await Flow().source(clicks).pipe(sliding(10.0, 5.0)).sink(lambda window: None).run()
    assert clicks.asked == []


@pytest.mark.trio
async def test_an_unanswered_check_is_logged_and_asked_again(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    clicks = SharedClicks(count=15, fails=True)
    with caplog.at_level(logging.WARNING, logger="rxflow"):
        await Flow("f").source(clicks).pipe(session(user, 5.0)).sink(lambda w: None).run()
    assert clicks.asked == [0.0, 10.0]
    assert "could not count the other workers of source 'source1' (fake:clicks)" in caplog.text
    assert "asking again in 10 s" in caplog.text


def test_keyed_stages_are_windows_with_a_key_and_sessions() -> None:
    operators = [
        tumbling(1.0),
        tumbling(1.0, key=user, name="by-user"),
        sliding(2.0, 1.0, key=user, timestamp=lambda c: c[1]),
        tumbling(1.0, timestamp=lambda c: c[1], name="event-time"),
        session(user, 5.0, name="sessions"),
        session(user, 5.0, timestamp=lambda c: c[1], name="event-sessions"),
        lambda source: source,
    ]
    assert keyed_stages(operators) == ["by-user", "sliding", "sessions", "event-sessions"]
    assert [getattr(op, "keyed", None) for op in operators[:2]] == [False, True]
