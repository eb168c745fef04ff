"""rxflow: backpressured ReactiveX pipelines for trio and asyncio.

Compose `reactivex` operators over async sources and read the results as an anyio stream;
a slow consumer slows the source instead of filling memory::

    async with rxflow.open_pipe(source, ops.map(parse), ops.buffer_with_time(1.0)) as pipe:
        async for window in pipe:
            ...
"""

from importlib import metadata as _metadata

from rxflow import errors
from rxflow._overflow import OverflowPolicy
from rxflow._runs import RunSource
from rxflow._state import StateTable
from rxflow.flow import Flow, FlowHandle
from rxflow.flow._lineage import SourcePosition, Traced
from rxflow.flow._serve import serve_health
from rxflow.map_async import map_async
from rxflow.partitions import Partition, per_partition
from rxflow.pipe import Pipe, PipeStats, open_pipe
from rxflow.scheduler import AnyioScheduler
from rxflow.sources import from_async_iterable, from_stream, to_async_iterable
from rxflow.strategies import DeadLetter, FailFast, Failure, Retry, Skip
from rxflow.windows import Window, session, sliding, tumbling


def _installed_version() -> str:
    try:
        return _metadata.version("rxflow")
    except _metadata.PackageNotFoundError:  # imported from a source tree that was not installed
        return "0+unknown"


__version__: str = _installed_version()
"""The version of the installed rxflow distribution (``0+unknown`` when not installed).

Example:
    >>> import importlib.metadata, rxflow
    >>> rxflow.__version__ == importlib.metadata.version("rxflow")
    True
"""

__all__ = [
    "AnyioScheduler",
    "DeadLetter",
    "FailFast",
    "Failure",
    "Flow",
    "FlowHandle",
    "OverflowPolicy",
    "Partition",
    "Pipe",
    "PipeStats",
    "Retry",
    "RunSource",
    "Skip",
    "SourcePosition",
    "StateTable",
    "Traced",
    "Window",
    "__version__",
    "errors",
    "from_async_iterable",
    "from_stream",
    "map_async",
    "open_pipe",
    "per_partition",
    "serve_health",
    "session",
    "sliding",
    "to_async_iterable",
    "tumbling",
]
