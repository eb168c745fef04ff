"""rxflow's pytest plugin (registered through the ``pytest11`` entry point).

Fixtures:

* ``marbles``: a :class:`~rxflow.testing.MarbleContext`, flushed after the test if the
  test did not flush it. A plain (sync) fixture, so it works in any test, under
  pytest-trio's ``trio_mode`` and under anyio's plugin alike.
* ``pipe_marbles``: the async harness :func:`rxflow.testing.pipe_marbles`, checked to run
  in virtual time (``autojump_clock`` under trio; ``virtual_anyio_backends()`` for anyio).

Example::

    def test_map(marbles):
        source = marbles.cold("-a-b|")
        marbles.expect(source.pipe(ops.map(str.upper))).to_be("-A-B|")
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest

from rxflow.testing.async_marbles import pipe_marbles as _pipe_marbles
from rxflow.testing.context import MarbleContext


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
