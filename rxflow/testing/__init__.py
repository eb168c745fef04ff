"""Marble testing for rxflow: RxJS diagrams, virtual time, async pipelines, a pytest plugin.

* :class:`MarbleContext`: hot and cold observables from diagrams, expectations as diagrams,
  on reactivex's ``TestScheduler`` (one frame = 1 ms).
* :mod:`rxflow.testing.marbles`: the diagram parser and renderer.
* :func:`pipe_marbles`: an :func:`rxflow.open_pipe` driven by a marble source in virtual
  time, with a consumer pace, returning what came out and when the source was pulled.
* The pytest plugin (installed with rxflow) provides the ``marbles`` fixture.
"""

from rxflow.testing.async_marbles import (
    NotVirtualTimeError,
    PipeMarbles,
    VirtualTimeEventLoop,
    check_virtual_time,
    pipe_marbles,
    virtual_anyio_backends,
)
from rxflow.testing.context import MarbleContext, MarbleMismatch, MarbleTimeLimitError
from rxflow.testing.marbles import MarbleSyntaxError, parse, render

__all__ = [
    "MarbleContext",
    "MarbleMismatch",
    "MarbleSyntaxError",
    "MarbleTimeLimitError",
    "NotVirtualTimeError",
    "PipeMarbles",
    "VirtualTimeEventLoop",
    "check_virtual_time",
    "parse",
    "pipe_marbles",
    "render",
    "virtual_anyio_backends",
]
