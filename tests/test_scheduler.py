"""AnyioScheduler: Rx time on the anyio event loop, in trio's virtual time and on asyncio."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import anyio
import pytest
import reactivex
import trio
from reactivex import operators as ops

from rxflow import AnyioScheduler
from rxflow.errors import WrongThreadError


def record_at(log: list[tuple[str, float]], label: str) -> Any:
    def action(scheduler: Any, state: Any = None) -> None:
        log.append((label, trio.current_time()))

    return action


@pytest.mark.trio
async def test_relative_actions_run_at_their_due_time_in_virtual_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log: list[tuple[str, float]] = []
    start = trio.current_time()
    async with anyio.create_task_group() as tg:
        scheduler = AnyioScheduler(tg)
        scheduler.schedule_relative(2.0, record_at(log, "late"))
        scheduler.schedule_relative(timedelta(seconds=0.5), record_at(log, "early"))
        scheduler.schedule(record_at(log, "now"))
    assert [(label, at - start) for label, at in log] == [
        ("now", 0.0),
        ("early", 0.5),
        ("late", 2.0),
    ]


@pytest.mark.trio
async def test_actions_due_at_the_same_time_run_in_the_order_they_were_scheduled(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log: list[tuple[str, float]] = []
    async with anyio.create_task_group() as tg:
        scheduler = AnyioScheduler(tg)
        for label in "abcdefgh":
            scheduler.schedule_relative(1.0, record_at(log, label))
    assert "".join(label for label, _ in log) == "abcdefgh"


@pytest.mark.trio
async def test_absolute_time_is_on_the_schedulers_clock(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log: list[tuple[str, float]] = []
    start = trio.current_time()
    async with anyio.create_task_group() as tg:
        scheduler = AnyioScheduler(tg)
        assert (scheduler.now - scheduler.to_datetime(0.0)).total_seconds() == pytest.approx(start)
        scheduler.schedule_absolute(scheduler.now + timedelta(seconds=3), record_at(log, "x"))
    assert [at - start for _, at in log] == [pytest.approx(3.0)]


@pytest.mark.trio
async def test_disposed_action_never_runs_and_does_not_hold_the_task_group_open(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log: list[tuple[str, float]] = []
    start = trio.current_time()
    async with anyio.create_task_group() as tg:
        scheduler = AnyioScheduler(tg)
        scheduler.schedule_relative(60.0, record_at(log, "timeout")).dispose()
        scheduler.schedule_relative(1.0, record_at(log, "kept"))
    assert [label for label, _ in log] == ["kept"]
    # The task group ended when the last live timer ran, not at the disposed one's time.
    assert trio.current_time() - start == pytest.approx(1.0)


@pytest.mark.trio
async def test_periodic_action_runs_every_period_until_disposed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ticks: list[float] = []
    start = trio.current_time()
    async with anyio.create_task_group() as tg:
        scheduler = AnyioScheduler(tg)

        def tick(count: Any) -> int:
            ticks.append(trio.current_time() - start)
            return int(count) + 1

        periodic = scheduler.schedule_periodic(0.25, tick, state=0)
        scheduler.schedule_relative(1.1, lambda *_: periodic.dispose())
    assert ticks == pytest.approx([0.25, 0.5, 0.75, 1.0])


@pytest.mark.trio
async def test_rx_time_operators_follow_the_mock_clock(
    autojump_clock: trio.testing.MockClock,
) -> None:
    received: list[tuple[list[int], float]] = []
    start = trio.current_time()
    async with anyio.create_task_group() as tg:
        scheduler = AnyioScheduler(tg)
        reactivex.interval(0.3).pipe(
            ops.take(7),
            ops.buffer_with_time(1.0),
        ).subscribe(
            lambda window: received.append((window, trio.current_time() - start)),
            scheduler=scheduler,
        )
    assert received == [
        ([0, 1, 2], pytest.approx(1.0)),
        ([3, 4, 5], pytest.approx(2.0)),
        ([6], pytest.approx(2.1)),
    ]


@pytest.mark.trio
async def test_an_error_in_an_action_goes_to_on_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    errors: list[Exception] = []
    log: list[tuple[str, float]] = []

    def fail(*_: Any) -> None:
        raise KeyError("bad action")

    async with anyio.create_task_group() as tg:
        scheduler = AnyioScheduler(tg, on_error=errors.append)
        scheduler.schedule_relative(1.0, fail)
        scheduler.schedule_relative(2.0, record_at(log, "after"))
    assert [type(e) for e in errors] == [KeyError]
    assert [label for label, _ in log] == ["after"]


@pytest.mark.anyio
async def test_without_on_error_an_action_error_fails_the_task_group() -> None:
    def fail(*_: Any) -> None:
        raise KeyError("bad action")

    with pytest.raises(ExceptionGroup) as caught:
        async with anyio.create_task_group() as tg:
            AnyioScheduler(tg).schedule(fail)
    assert caught.group_contains(KeyError)


@pytest.mark.anyio
async def test_runs_on_both_backends_and_now_is_the_loop_clock() -> None:
    log: list[str] = []
    async with anyio.create_task_group() as tg:
        scheduler = AnyioScheduler(tg)
        before = anyio.current_time()
        now = (scheduler.now - scheduler.to_datetime(0.0)).total_seconds()
        assert before <= now <= anyio.current_time()
        reactivex.of(1, 2, 3).pipe(ops.delay(0.0)).subscribe(
            lambda x: log.append(f"item {x}"),
            on_completed=lambda: log.append("done"),
            scheduler=scheduler,
        )
    assert log == ["item 1", "item 2", "item 3", "done"]


@pytest.mark.anyio
async def test_scheduling_from_another_thread_is_refused_with_advice() -> None:
    async with anyio.create_task_group() as tg:
        scheduler = AnyioScheduler(tg)
        outcome: list[BaseException] = []

        def from_thread() -> None:
            try:
                scheduler.schedule(lambda *_: None)
            except WrongThreadError as error:
                outcome.append(error)

        await anyio.to_thread.run_sync(from_thread)
    assert len(outcome) == 1
    assert "anyio.from_thread.run_sync" in str(outcome[0])
