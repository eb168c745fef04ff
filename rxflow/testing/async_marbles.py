"""Marble tests of async pipelines: :func:`rxflow.open_pipe` fed by a diagram, read at a pace.

The source diagram says when each item becomes available; the pipe pulls it then, or
later if the consumer is slow (that is backpressure). The optional ``pace`` diagram says
when the consumer is ready for its next item. The result draws when the consumer received
each output and when the source was pulled, so a test states what backpressure does::

    result = await pipe_marbles("abcdef|", pace="a---b---c---d---e---f---|", max_buffer_size=1)
    assert result.pulls == ...   # the source was read only as fast as the consumer

Time is virtual: under trio, run with ``MockClock(autojump_threshold=0)`` (pytest-trio's
``autojump_clock`` fixture); under asyncio, on :class:`VirtualTimeEventLoop`
(``anyio.run(..., backend_options={"loop_factory": VirtualTimeEventLoop})``, or the
anyio pytest backend from :func:`virtual_anyio_backends`).
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import AsyncIterator, Mapping
from typing import Any

import anyio
import attrs
import sniffio

from rxflow.errors import MarbleMismatch, NotVirtualTimeError
from rxflow.pipe import open_pipe
from rxflow.testing.context import describe_mismatch, same_events
from rxflow.testing.marbles import FRAME_SECONDS, Event, frame_of_seconds, parse, render

__all__ = [
    "NotVirtualTimeError",
    "PipeMarbles",
    "VirtualTimeEventLoop",
    "check_virtual_time",
    "pipe_marbles",
    "virtual_anyio_backends",
]


class _VirtualTimeSelector(selectors.BaseSelector):
    """Wraps a real selector: when the loop would wait for a timer, time jumps to it."""

    def __init__(self, loop: VirtualTimeEventLoop) -> None:
        self._loop = loop
        self._real = selectors.DefaultSelector()

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._real.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.modify(fileobj, events, data)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = self._real.select(0)
        if ready or timeout == 0:
            return ready
        if timeout is None:  # no timer at all: only I/O (a thread finishing) can wake us
            return self._real.select(None)
        self._loop.virtual_now += timeout
        return []

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return self._real.get_map()

    def close(self) -> None:
        self._real.close()


class VirtualTimeEventLoop(asyncio.SelectorEventLoop):
    """An asyncio event loop whose clock is virtual: whenever every task waits for a
    timer, the clock jumps to the next timer (like trio's ``MockClock`` with
    ``autojump_threshold=0``). I/O still works; waiting for it takes no virtual time."""

    def __init__(self) -> None:
        self.virtual_now = 0.0
        super().__init__(selector=_VirtualTimeSelector(self))

    def time(self) -> float:
        return self.virtual_now


def virtual_anyio_backends() -> list[Any]:
    """Parameters for anyio's pytest plugin that run tests in virtual time on both backends::

    @pytest.fixture(params=rxflow.testing.virtual_anyio_backends())
    def anyio_backend(request):
        return request.param
    """
    import trio.testing

    return [
        pytest_param(("asyncio", {"loop_factory": VirtualTimeEventLoop}), "asyncio-virtual"),
        pytest_param(
            ("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)}), "trio-virtual"
        ),
    ]


def pytest_param(value: Any, name: str) -> Any:
    import pytest

    return pytest.param(value, id=name)


def check_virtual_time() -> None:
    """Raise :class:`NotVirtualTimeError`, saying how to fix it, unless the running loop's
    clock is virtual."""
    library = sniffio.current_async_library()
    if library == "trio":
        import trio
        import trio.testing

        clock = trio.lowlevel.current_clock()
        if isinstance(clock, trio.testing.MockClock) and clock.autojump_threshold == 0:
            return
        advice = (
            "run the test with trio.testing.MockClock(autojump_threshold=0) (pytest-trio: "
            "add the autojump_clock fixture)"
        )
    else:
        if isinstance(asyncio.get_running_loop(), VirtualTimeEventLoop):
            return
        advice = (
            "run it on rxflow.testing.VirtualTimeEventLoop (anyio's pytest plugin: "
            "parametrize anyio_backend with rxflow.testing.virtual_anyio_backends())"
        )
    raise NotVirtualTimeError(
        f"async marble tests need virtual time, this {library} loop has a real clock: {advice}"
    )


@attrs.frozen
class PipeMarbles:
    """What :func:`pipe_marbles` saw: ``output`` (when the consumer received each output)
    and ``pulls`` (when each source item entered the pipe), as diagrams and as events."""

    output: str
    pulls: str
    received: tuple[Event, ...]
    pulled: tuple[Event, ...]
    values: Mapping[str, Any] | None = None

    def expect(
        self,
        output: str | None = None,
        pulls: str | None = None,
        values: Mapping[str, Any] | None = None,
    ) -> None:
        """Compare with expected diagrams; on a difference, raise
        :class:`~rxflow.testing.MarbleMismatch` showing both, aligned."""
        values = values if values is not None else self.values
        for name, expected, actual in (
            ("output", output, self.received),
            ("pulls", pulls, self.pulled),
        ):
            if expected is None:
                continue
            wanted = parse(expected, values).events
            if not same_events(wanted, actual, error_given=False):
                raise MarbleMismatch(f"{name}: " + describe_mismatch(wanted, actual, values))


async def pipe_marbles(
    source: str,
    *operators: Any,
    values: Mapping[str, Any] | None = None,
    error: BaseException | None = None,
    pace: str | None = None,
    max_buffer_size: int = 0,
) -> PipeMarbles:
    """Run ``open_pipe(<source diagram>, *operators)`` in virtual time and record it.

    Args:
        source: when each item is available (``|`` ends the source, ``#`` fails it).
        operators: the operators under test; time-based ones run on the loop's clock, so
            ``ops.debounce(0.02)`` is 20 frames.
        values: what the diagram's characters stand for, as for marble diagrams.
        error: the exception ``#`` raises, as for marble diagrams.
        pace: when the consumer is ready for its next item (any non-``-`` character); it
            stops reading where the diagram ends (``|`` or the last character). ``None``:
            it reads as fast as outputs come.
        max_buffer_size: the pipe's buffer (default 0: pull only for a waiting consumer).

    Example:
        >>> import anyio
        >>> from reactivex import operators as ops
        >>> from rxflow.testing import VirtualTimeEventLoop, pipe_marbles
        >>> async def main():
        ...     result = await pipe_marbles("-a-b-c|", ops.map(str.upper))
        ...     print(result.output)
        >>> anyio.run(main, backend_options={"loop_factory": VirtualTimeEventLoop})
        -A-B-C|
    """
    check_virtual_time()
    start = anyio.current_time()

    def now() -> float:
        return frame_of_seconds(anyio.current_time() - start)

    async def wait_for(frame: float) -> None:
        delay = frame * FRAME_SECONDS - (anyio.current_time() - start)
        if delay > 0:
            await anyio.sleep(delay)

    plan = parse(source, values, error).events
    pulled: list[Event] = []

    async def items() -> AsyncIterator[Any]:
        for event in plan:
            await wait_for(event.frame)
            if event.kind == "C":
                pulled.append(Event(now(), "C"))
                return
            if event.kind == "E":
                pulled.append(Event(now(), "E", event.value))
                raise event.value
            pulled.append(Event(now(), "N", event.value))
            yield event.value

    received: list[Event] = []
    ready_at = None if pace is None else [e.frame for e in parse(pace).events if e.kind == "N"]
    async with open_pipe(items(), *operators, max_buffer_size=max_buffer_size) as pipe:
        turn = 0
        while ready_at is None or turn < len(ready_at):
            if ready_at is not None:
                await wait_for(ready_at[turn])
            turn += 1
            try:
                item = await pipe.receive()
            except anyio.EndOfStream:
                received.append(Event(now(), "C"))
                break
            except Exception as failure:
                received.append(Event(now(), "E", failure))
                break
            received.append(Event(now(), "N", item))
    return PipeMarbles(
        output=render(received, values),
        pulls=render(pulled, values),
        received=tuple(received),
        pulled=tuple(pulled),
        values=values,
    )
