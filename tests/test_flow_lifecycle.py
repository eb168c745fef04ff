"""FlowHandle: a drain with a deadline (``stop(drain_timeout=...)``), the running, ready
and stopping states a health probe reads, and one log record per failure."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import pytest
import sniffio
import trio.testing
from support import running_tasks

from rxflow import Flow


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    """asyncio in real time; trio in virtual time (a MockClock that jumps when idle)."""
    if request.param == "trio":
        return ("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)})
    return "asyncio"


def _on_trio() -> bool:
    """Under trio these tests run in virtual time, and may assert exact durations."""
    return sniffio.current_async_library() == "trio"


class Message:
    """A source message the flow acknowledges once its outputs are written."""

    def __init__(self, value: int) -> None:
        self.value = value
        self.acked = False

    async def ack(self) -> None:
        self.acked = True


async def messages(
    sent: list[Message], count: int, all_taken: anyio.Event
) -> AsyncIterator[Message]:
    for n in range(count):
        message = Message(n)
        sent.append(message)
        yield message
    all_taken.set()  # the flow asked for one more: it took every message
    await anyio.sleep_forever()  # a broker source: more may come, until the flow stops


async def until(condition: Callable[[], bool]) -> None:
    """Let the flow run until ``condition`` holds (it has no event to wait for)."""
    for _ in range(10_000):
        if condition():
            return
        await anyio.sleep(0.001)
    raise AssertionError("the condition never held")


class Sink:
    """Takes ``seconds`` per item; ``None``: the first write never returns."""

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds
        self.written: list[int] = []

    async def __call__(self, message: Message) -> None:
        await anyio.sleep(3600 if self.seconds is None else self.seconds)
        self.written.append(message.value)


@pytest.mark.anyio
async def test_a_drain_past_its_timeout_aborts_and_says_what_is_left(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="rxflow")
    sent: list[Message] = []
    all_taken = anyio.Event()
    timeout = 30.0 if _on_trio() else 0.05  # virtual seconds under trio
    tasks_before = running_tasks()
    async with anyio.create_task_group() as tg:
        source = messages(sent, 5, all_taken)
        handle = Flow("stuck").source(source).sink(Sink(None), name="stuck").start(tg)
        with anyio.fail_after(3600 if _on_trio() else 30):
            await all_taken.wait()
            stopped_at = anyio.current_time()
            assert handle.stop(drain_timeout=timeout) is None  # sync, as stop() always was
            assert handle.stopping
            assert not handle.done
            await handle.wait()
        ended_at = anyio.current_time()
    assert running_tasks() == tasks_before
    assert handle.drain_timed_out
    assert handle.aborted
    assert handle.done
    if _on_trio():
        assert ended_at - stopped_at == pytest.approx(timeout)
    assert not any(message.acked for message in sent)
    left = handle.unacknowledged
    assert left == 5  # every message the flow admitted; none was written
    warnings = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1
    text = warnings[0].getMessage()
    assert f"drain_timeout={timeout:g}s" in text
    assert f"{left} message(s) were left unacknowledged and will be redelivered" in text
    assert "flow stuck aborted" in caplog.records[-1].getMessage()


@pytest.mark.anyio
async def test_a_drain_within_its_timeout_ends_normally(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="rxflow")
    sent: list[Message] = []
    all_taken = anyio.Event()
    seconds = 1.0 if _on_trio() else 0.001
    sink = Sink(seconds)
    async with anyio.create_task_group() as tg:
        source = messages(sent, 3, all_taken)
        handle = Flow("slow").source(source).sink(sink, name="slow").start(tg)
        await all_taken.wait()
        handle.stop(drain_timeout=1000 * seconds)
        snapshot = await handle.wait()
    assert not handle.drain_timed_out
    assert not handle.aborted
    assert sink.written == [0, 1, 2]
    assert all(message.acked for message in sent)
    assert snapshot["slow"].emitted == 3
    assert not [record for record in caplog.records if record.levelno >= logging.WARNING]


@pytest.mark.anyio
async def test_stop_again_may_shorten_the_deadline_but_not_extend_it() -> None:
    sent: list[Message] = []
    all_taken = anyio.Event()
    async with anyio.create_task_group() as tg:
        handle = Flow("stuck").source(messages(sent, 1, all_taken)).sink(Sink(None)).start(tg)
        await all_taken.wait()
        handle.stop(drain_timeout=20.0 if _on_trio() else 0.05)
        started = anyio.current_time()
        handle.stop(drain_timeout=3600)  # later and longer: the first deadline holds
        await handle.wait()
    assert handle.drain_timed_out
    if _on_trio():
        assert anyio.current_time() - started == pytest.approx(20.0)


@pytest.mark.parametrize(
    ("drain_timeout", "error", "message"),
    [
        (-1, ValueError, r"FlowHandle.stop\(\): drain_timeout must be 0 or more seconds"),
        (float("nan"), ValueError, "drain_timeout must be 0 or more seconds"),
        ("5", TypeError, r"drain_timeout must be seconds \(a number or a timedelta\)"),
    ],
)
@pytest.mark.anyio
async def test_a_bad_drain_timeout_is_refused_at_the_call(
    drain_timeout: Any, error: type[Exception], message: str
) -> None:
    handle = Flow("f").source(range(1)).sink(print).prepare()
    with pytest.raises(error, match=message):
        handle.stop(drain_timeout=drain_timeout)
    assert not handle.stopping  # refused before anything changed


@pytest.mark.anyio
async def test_running_ready_and_stopping_follow_the_flow() -> None:
    connected = anyio.Event()
    entered = anyio.Event()

    class Connecting:
        """A connector-like source: ready once its connection is up."""

        async def __aenter__(self) -> AsyncIterator[int]:
            entered.set()
            await connected.wait()
            return self.items()

        async def __aexit__(self, *exc_info: object) -> None:
            pass

        async def items(self) -> AsyncIterator[int]:
            yield 1
            await anyio.sleep_forever()

    handle = Flow("probe").source(Connecting()).sink(lambda item: None).prepare()
    assert (handle.running, handle.ready, handle.stopping, handle.done) == (
        False,
        False,
        False,
        False,
    )
    async with anyio.create_task_group() as tg:
        tg.start_soon(handle.run)
        await entered.wait()
        assert handle.running
        assert not handle.ready
        connected.set()
        await until(lambda: handle.ready)
        handle.stop()
        assert handle.running
        assert handle.stopping
        assert not handle.ready
    assert (handle.running, handle.ready, handle.done) == (False, False, True)


@pytest.mark.anyio
async def test_a_failure_is_logged_once_with_its_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def explode(item: int) -> None:
        raise RuntimeError("sink exploded")

    caplog.set_level(logging.DEBUG)
    with pytest.raises(RuntimeError, match="sink exploded"):
        await Flow("failing").source(range(5)).sink(explode).run()
    errors = [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert errors[0].getMessage() == "flow failing failed: RuntimeError('sink exploded')"
    assert errors[0].exc_info is not None
    assert errors[0].exc_info[0] is RuntimeError
    assert caplog.text.count("Traceback") == 1
