"""What a flow is built from: its sources and sinks as the builder records them, and the
shapes a source or a sink may take (an iterable, a connector's context manager, a function,
a stream, a batch sink)."""

from __future__ import annotations

from collections.abc import AsyncIterable, Awaitable, Callable, Coroutine, Iterable
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from typing import Any, Protocol, TypeGuard, runtime_checkable

import anyio.abc
import attrs

from rxflow._overflow import OverflowPolicy
from rxflow._stage_metrics import StageMetrics
from rxflow.strategies import ErrorStrategy

__all__ = [
    "BatchSink",
    "SinkStage",
    "SinkTarget",
    "SourceItems",
    "SourceStage",
    "TaskStarter",
    "entered",
    "is_context_manager",
    "source_name",
    "writer",
]


@runtime_checkable
class BatchSink(Protocol):
    """A sink object such as a connector's: ``send_batch`` returns once the batch is
    confirmed; ``batch_size`` is the batch size it works best with."""

    batch_size: int

    async def send_batch(self, items: Any) -> None: ...


class TaskStarter(Protocol):
    """Where :meth:`Flow.start` runs a flow: an anyio task group or a trio nursery, or
    anything else with their ``start_soon(fn, *args, name=...)``."""

    def start_soon(
        self, func: Callable[..., Coroutine[Any, Any, Any]], /, *args: Any, name: object = None
    ) -> object: ...


SinkTarget = (
    Callable[[Any], Awaitable[object] | object] | anyio.abc.ObjectSendStream[Any] | BatchSink
)
"""A sink: a function (sync or async) called with each item or batch, an anyio send
stream, or a :class:`BatchSink`. Its call returning is its confirmation."""

SourceItems = AsyncIterable[Any] | Iterable[Any] | AbstractAsyncContextManager[Any]
"""A source: an async iterable, an iterable, or an async context manager yielding one
(a connector's source, entered when the flow runs and left when it ended)."""


@attrs.define
class SourceStage:
    items: SourceItems
    metrics: StageMetrics
    # The opened connector's decoder (duck-typed: flow does not import the connectors),
    # whose decode skips and dead letters are this stage's ``skipped``/``dead_lettered``.
    decoder: Any = None

    def read_decoder(self) -> None:
        skipped = getattr(self.decoder, "skipped", None)
        dead_lettered = getattr(self.decoder, "dead_lettered", None)
        if isinstance(skipped, int) and isinstance(dead_lettered, int):
            self.metrics.skipped, self.metrics.dead_lettered = skipped, dead_lettered


@attrs.define
class SinkStage:
    target: SinkTarget | AbstractAsyncContextManager[Any]
    metrics: StageMetrics
    on_error: ErrorStrategy
    batch_size: int | None
    max_buffer_size: int | None  # None: decided when the flow runs (see open)
    overflow: OverflowPolicy | None
    lineage: bool = False  # hand it Traced(value, sources) records

    @property
    def transactional(self) -> bool:
        """Whether the sink writes its outputs in the flow's checkpoints (exactly once):
        it stages them, and the checkpoint's store writes them in its own transaction."""
        return bool(getattr(self.target, "transactional", False))

    async def open(self, stack: AsyncExitStack) -> None:
        """Enter a context-manager target, and size batches and buffer for what it is."""
        if is_context_manager(self.target):
            self.target = await stack.enter_async_context(self.target)
        if isinstance(self.target, BatchSink) and self.batch_size is None:
            self.batch_size = self.target.batch_size
        if self.max_buffer_size is None:
            self.max_buffer_size = self.batch_size or 0


def source_name(source: SourceStage, items: object) -> str:
    """How errors name a source: its stage, and the connector's own name if it has one."""
    stage = f"source {source.metrics.name!r}"
    own = getattr(items, "name", None)
    return f"{stage} ({own})" if isinstance(own, str) else stage


def is_context_manager(items: object) -> TypeGuard[AbstractAsyncContextManager[Any]]:
    return hasattr(items, "__aenter__") and not isinstance(items, AsyncIterable)


async def entered(items: SourceItems, stack: AsyncExitStack) -> AsyncIterable[Any] | Iterable[Any]:
    """What a source yields: a context manager entered (left by ``stack``), or itself."""
    if is_context_manager(items):
        entered: AsyncIterable[Any] | Iterable[Any] = await stack.enter_async_context(items)
        return entered
    assert isinstance(items, AsyncIterable | Iterable)
    return items


def writer(target: SinkTarget | AbstractAsyncContextManager[Any]) -> Callable[[Any], Any]:
    assert not is_context_manager(target), "entered by SinkStage.open before the flow runs"
    if isinstance(target, anyio.abc.ObjectSendStream):
        return target.send
    if isinstance(target, BatchSink):
        return target.send_batch
    assert callable(target)
    return target
