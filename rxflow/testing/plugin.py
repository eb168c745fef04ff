"""rxflow's pytest plugin (registered through the ``pytest11`` entry point).

Fixtures:

* ``marbles``: a :class:`~rxflow.testing.MarbleContext`, flushed after the test if the
  test did not flush it. A plain (sync) fixture, so it works in any test, under
  pytest-trio's ``trio_mode`` and under anyio's plugin alike.
* ``pipe_marbles``: the async harness :func:`rxflow.testing.pipe_marbles`, checked to run
  in virtual time (``autojump_clock`` under trio; ``virtual_anyio_backends()`` for anyio).

Marker:

* ``@pytest.mark.rxflow_real_time``: run an anyio test on the real clock even where
  ``anyio_backend`` is virtual (a conftest parametrized with ``virtual_anyio_backends()``).
  Under virtual time the clock jumps whenever every task waits, so a test that waits for a
  server (``anyio.sleep(5)`` before reading Redis) would not wait at all. The marker
  parametrizes ``anyio_backend`` with ``"asyncio"`` and ``"trio"``, or with the backends
  it is given (``@pytest.mark.rxflow_real_time("trio")``); it works on a test, a class or
  a module (``pytestmark``). A test's own ``parametrize`` of ``anyio_backend`` wins.

Example::

    def test_map(marbles):
        source = marbles.cold("-a-b|")
        marbles.expect(source.pipe(ops.map(str.upper))).to_be("-A-B|")


    @pytest.mark.anyio
    @pytest.mark.rxflow_real_time
    async def test_talks_to_a_server():
        ...
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest

from rxflow.testing.async_marbles import pipe_marbles as _pipe_marbles
from rxflow.testing.context import MarbleContext

__all__ = [
    "REAL_TIME_MARKER",
    "marbles",
    "pipe_marbles",
    "pytest_configure",
    "pytest_generate_tests",
    "pytest_runtest_call",
]


@pytest.fixture
def marbles() -> MarbleContext:
    """A marble test context on a fresh TestScheduler; checked at the end of the test."""
    return MarbleContext()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    """Flush a test's ``marbles`` context as part of the test, so that a diagram that does
    not match fails the test itself (not its teardown)."""
    result = yield  # raises if the test did, and then there is nothing to check
    context = getattr(item, "funcargs", {}).get("marbles")
    if isinstance(context, MarbleContext) and not context.flushed:
        context.flush()
    return result


@pytest.fixture
def pipe_marbles() -> Any:
    """The async marble harness for ``open_pipe`` (see :func:`rxflow.testing.pipe_marbles`)."""
    return _pipe_marbles


REAL_TIME_MARKER = "rxflow_real_time"
_REAL_BACKENDS = ("asyncio", "trio")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{REAL_TIME_MARKER}(*backends): run this anyio test on the real clock (backends "
        "'asyncio' and 'trio' unless given), even where anyio_backend is virtual time",
    )


@pytest.hookimpl(tryfirst=True)
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """For a test marked ``rxflow_real_time``, parametrize ``anyio_backend`` with real
    backends. It is done as a ``parametrize`` mark, which pytest lets take precedence over
    a parametrized ``anyio_backend`` fixture (tryfirst: before pytest reads the marks)."""
    marker = metafunc.definition.get_closest_marker(REAL_TIME_MARKER)
    if marker is None or "anyio_backend" not in metafunc.fixturenames:
        return
    if any(
        "anyio_backend" in _parametrized_names(mark)
        for mark in metafunc.definition.iter_markers("parametrize")
    ):
        return
    backends = marker.args or _REAL_BACKENDS
    unknown = [backend for backend in backends if backend not in _REAL_BACKENDS]
    if unknown or marker.kwargs:
        raise pytest.UsageError(
            f"{metafunc.definition.nodeid}: @pytest.mark.{REAL_TIME_MARKER} takes backend "
            f"names, 'asyncio' and/or 'trio' (none: both), not "
            f"{', '.join(map(repr, [*unknown, *marker.kwargs]))}"
        )
    metafunc.definition.add_marker(
        pytest.mark.parametrize(
            "anyio_backend", list(backends), ids=[f"{backend}-real-time" for backend in backends]
        )
    )


def _parametrized_names(mark: pytest.Mark) -> list[str]:
    names = mark.args[0] if mark.args else mark.kwargs.get("argnames", ())
    if isinstance(names, str):
        return [name.strip() for name in names.split(",")]
    return list(names)
