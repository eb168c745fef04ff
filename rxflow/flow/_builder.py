"""``Flow``, the builder: sources, operators and sinks recorded in order and checked as
they are added; :meth:`Flow.prepare` hands them to a :class:`FlowHandle` to run."""

from __future__ import annotations

from collections.abc import AsyncIterable, Iterable
from contextlib import AbstractAsyncContextManager
from typing import Any

import anyio.abc
from reactivex import Observable

from rxflow._checks import check_count, check_seconds
from rxflow._overflow import OVERFLOW_POLICIES, OverflowPolicy
from rxflow._stage_metrics import StageMetrics, stage_name
from rxflow.errors import FlowStateError
from rxflow.flow._runtime import FlowHandle
from rxflow.flow._stages import (
    BatchSink,
    SinkStage,
    SinkTarget,
    SourceItems,
    SourceStage,
    TaskStarter,
    is_context_manager,
)
from rxflow.flow.metrics import FlowSnapshot
from rxflow.pipe import DEFAULT_MAX_BUFFER_SIZE, Operator
from rxflow.state._store import Store
from rxflow.strategies import FAIL_FAST, ErrorStrategy, check_strategy

__all__ = ["Flow"]

DEFAULT_CHECKPOINT_EVERY = 1.0
"""Seconds between a checkpointed flow's checkpoints, unless ``every=`` says otherwise."""


class Flow:
    """A pipeline to run as a unit: ``Flow(name).source(...).pipe(...).sink(...)``.

    Build it with :meth:`source`, :meth:`pipe` and :meth:`sink` (each returns the flow), then
    ``await flow.run()`` to run it to the end, or ``flow.start(task_group)`` to embed it in a
    service and get a :class:`FlowHandle`. A flow runs once.

    Args:
        name: the flow's name in metrics and logs.
        max_buffer_size: the pipe's buffer (see :func:`rxflow.open_pipe`).
        log_every: if given, log a progress line (``logging`` logger ``"rxflow"``, INFO)
            every this many seconds (more than 0) while the flow runs; ``None``: never.

    Example:
        >>> import anyio
        >>> from reactivex import operators as ops
        >>> from rxflow import Flow
        >>> written = []
        >>> async def save(batch):
        ...     written.extend(batch)
        >>> flow = (
        ...     Flow("squares")
        ...     .source(range(5))
        ...     .pipe(ops.map(lambda n: n * n))
        ...     .sink(save, batch_size=2)
        ... )
        >>> snapshot = anyio.run(flow.run)
        >>> written, snapshot["save"].emitted
        ([0, 1, 4, 9, 16], 5)
    """

    def __init__(
        self,
        name: str = "flow",
        *,
        max_buffer_size: int = DEFAULT_MAX_BUFFER_SIZE,
        log_every: float | None = None,
    ) -> None:
        self.name = name
        self._max_buffer_size = max_buffer_size
        # 0 must not mean "off" by accident: None says that.
        self._log_every = check_seconds("Flow()", "log_every", log_every, optional=True)
        self._sources: list[SourceStage] = []
        self._operators: list[Operator] = []
        self._sinks: list[SinkStage] = []
        self._handle: FlowHandle | None = None
        self._store: Store | None = None
        self._checkpoint_every = DEFAULT_CHECKPOINT_EVERY

    # -- building ------------------------------------------------------------------------

    def source(self, items: SourceItems, *, name: str | None = None) -> Flow:
        """Add a source: an async iterable (a generator), a plain iterable, or an async
        context manager that yields one (a connector's source: the flow enters it when it
        starts and leaves it after its last acknowledgement).

        Several sources are merged fairly, in the order their items arrive.
        """
        if isinstance(items, Observable):
            raise TypeError(
                f"Flow.source(): {name or 'this source'} is an Observable, which cannot be "
                "paused; read it with rxflow.to_async_iterable(observable, overflow=...) and "
                "pass that, so you choose what happens when it outpaces the flow"
            )
        if is_context_manager(items):
            pass
        elif not isinstance(items, AsyncIterable | Iterable) or isinstance(items, str | bytes):
            raise TypeError(
                "Flow.source(): expected an async iterable, an iterable or an async context "
                f"manager yielding one, got {items!r}"
            )
        stage = name or f"source{len(self._sources) + 1}"
        self._sources.append(SourceStage(items, self._new_stage(stage, "source")))
        return self

    def pipe(self, *operators: Operator) -> Flow:
        """Add ``reactivex`` operators (and rxflow's, such as ``map_async``), in order."""
        for position, operator in enumerate(operators, start=1):
            if not callable(operator):
                raise TypeError(
                    f"Flow.pipe(): operator {position} is {operator!r}, not an operator"
                )
        self._operators.extend(operators)
        return self

    def sink(
        self,
        target: SinkTarget | AbstractAsyncContextManager[Any],
        *,
        name: str | None = None,
        on_error: ErrorStrategy = FAIL_FAST,
        batch_size: int | None = None,
        max_buffer_size: int | None = None,
        overflow: OverflowPolicy | None = None,
        lineage: bool = False,
    ) -> Flow:
        """Add a sink; every sink gets every output of the operators.

        Args:
            target: a function (sync or async) called with each item, or with a list of up
                to ``batch_size`` items; an anyio ``ObjectSendStream``; or a connector's
                sink (a :class:`BatchSink`, given batches of its own ``batch_size`` unless
                you pass one), as an object or as the async context manager that makes it
                (entered when the flow starts, left after its last write).
            name: the sink's name in metrics (default: the function's name, or ``sink1``,
                ``sink2``, ... for a lambda or an object without a name).
            on_error: what a failing call does: ``FailFast()`` ends the flow, ``Skip()``,
                ``DeadLetter(sink)`` or ``Retry(...)`` (:mod:`rxflow.strategies`).
            batch_size: hand the sink lists of up to this many items: whatever is waiting
                when it is ready, never waiting to fill a batch.
            max_buffer_size: items waiting for this sink at most (default: 0, or the batch
                size for a batching sink, so that it has whole batches to take). Without
                ``overflow``, a full sink holds back the whole flow (the slowest sink sets
                the pace).
            overflow: let this sink fall behind instead: ``"drop_newest"``,
                ``"drop_oldest"``, ``"latest"`` or ``"error"`` when its buffer is full.
            lineage: hand the sink each output as a :class:`rxflow.Traced` record: the
                value and the positions of the source messages it came from.
        """
        # Checked first: a context manager made by @asynccontextmanager is callable too.
        if is_context_manager(target) or isinstance(target, BatchSink):
            pass  # its batch size is known once it is entered
        elif not (callable(target) or isinstance(target, anyio.abc.ObjectSendStream)):
            raise TypeError(
                "Flow.sink(): expected a function, an anyio ObjectSendStream or a sink with "
                f"send_batch(), got {target!r}"
            )
        check_count("Flow.sink()", "batch_size", batch_size, optional=True)  # True is no size
        if overflow is not None:
            if overflow not in OVERFLOW_POLICIES:
                raise ValueError(
                    f"Flow.sink(): overflow must be one of {OVERFLOW_POLICIES}, got {overflow!r}"
                )
            if max_buffer_size is None or max_buffer_size < 1:
                raise ValueError(
                    "Flow.sink(): a sink with an overflow policy needs max_buffer_size >= 1 "
                    "to hold what it falls behind by"
                )
        stage = name or stage_name(target, f"sink{len(self._sinks) + 1}")
        self._sinks.append(
            SinkStage(
                target,
                self._new_stage(stage, "sink"),
                check_strategy(on_error, "Flow.sink()"),
                batch_size,
                1 if overflow == "latest" else max_buffer_size,
                overflow,
                lineage,
            )
        )
        return self

    def checkpoint(self, store: Store, *, every: float = DEFAULT_CHECKPOINT_EVERY) -> Flow:
        """Keep the operators' state in ``store`` and acknowledge source messages when a
        checkpoint that covers them is stored (see :doc:`state`).

        Every ``every`` seconds (sooner when a source has half its in-flight limit
        unacknowledged) the flow stores each stateful operator's changes (windows,
        :func:`rxflow.state.aggregate`, joins...) together with which source messages they
        cover, then acknowledges those messages. After a crash, a flow started again with
        the same name and store continues from its last checkpoint: open windows and keyed
        state come back, and only what came after that checkpoint is redone. A graceful
        :meth:`FlowHandle.stop` stores a last checkpoint with the open windows instead of
        emitting them cut short.

        Args:
            store: where state goes: :class:`rxflow.state.SQLiteStore` (a local file, no
                server), ``RedisStore``, ``PostgresStore``, or ``KafkaChangelogStore``.
            every: seconds between checkpoints (more than 0).

        Example:
            >>> import anyio, os, tempfile
            >>> from rxflow import Flow
            >>> from rxflow.state import SQLiteStore, aggregate
            >>> path = os.path.join(tempfile.mkdtemp(), "state.db")
            >>> async def count(words):
            ...     totals = {}
            ...     await (
            ...         Flow("words")
            ...         .source(words)
            ...         .pipe(aggregate(lambda word: word, lambda n, word: n + 1, int))
            ...         .sink(lambda update: totals.update({update.key: update.value}))
            ...         .checkpoint(SQLiteStore(path))
            ...         .run()
            ...     )
            ...     return totals
            >>> anyio.run(count, ["a", "b", "a"])
            {'a': 2, 'b': 1}
            >>> anyio.run(count, ["a"])  # the next run goes on from the stored counts
            {'a': 3}
        """
        if not isinstance(store, Store):
            raise TypeError(
                f"Flow.checkpoint(): expected a store from rxflow.state (SQLiteStore, "
                f"RedisStore, PostgresStore, KafkaChangelogStore), got {store!r}"
            )
        if self._store is not None:
            raise FlowStateError(f"flow {self.name!r} has a checkpoint store already")
        self._checkpoint_every = check_seconds("Flow.checkpoint()", "every", every)
        self._store = store
        return self

    def _new_stage(self, name: str, kind: str) -> StageMetrics:
        if name in {stage.name for stage in self._stages()}:
            raise ValueError(f"Flow: two stages are named {name!r}; pass name= to tell them apart")
        return StageMetrics(name, kind)

    def _stages(self) -> list[StageMetrics]:
        operator_stages = [
            metrics
            for operator in self._operators
            if isinstance(metrics := getattr(operator, "metrics", None), StageMetrics)
        ]
        return [
            *(source.metrics for source in self._sources),
            *operator_stages,
            *(sink.metrics for sink in self._sinks),
        ]

    # -- running -------------------------------------------------------------------------

    def start(self, task_group: TaskStarter) -> FlowHandle:
        """Start the flow in ``task_group`` (a service's own) and return its handle.

        ``task_group`` is an anyio task group (under asyncio or trio) or a trio nursery.
        If the flow fails, its error is raised by :meth:`FlowHandle.wait` and, like any
        failing task's, fails ``task_group``.

        Example:
            >>> import trio
            >>> from rxflow import Flow
            >>> async def service():
            ...     written = []
            ...     async with trio.open_nursery() as nursery:
            ...         handle = Flow("demo").source(range(3)).sink(written.append).start(nursery)
            ...     print(written, handle.snapshot()["append"].emitted)
            >>> trio.run(service)
            [0, 1, 2] 3
        """
        if not callable(getattr(task_group, "start_soon", None)):
            raise TypeError(
                f"Flow.start(): expected an anyio task group or a trio nursery (something with "
                f"start_soon), got {type(task_group).__name__}; under asyncio, open one with "
                "`async with anyio.create_task_group() as tg:` (asyncio.TaskGroup has no "
                "start_soon)"
            )
        handle = self.prepare()
        task_group.start_soon(handle.run, name=f"rxflow flow {self.name}")
        return handle

    async def run(self) -> FlowSnapshot:
        """Run the flow to its end (its sources exhausted and every sink confirmed) and
        return its final metrics. An error of a stage that fails fast is raised here."""
        return await self.prepare().run()

    def prepare(self) -> FlowHandle:
        """The flow's handle, not started: ``await handle.run()`` runs it where you like,
        while another task may ``stop()`` or ``abort()`` it."""
        if self._handle is not None:
            raise FlowStateError(f"flow {self.name!r} was started already; a Flow runs once")
        if not self._sources:
            raise FlowStateError(f"flow {self.name!r} has no source: add one with .source()")
        if not self._sinks:
            raise FlowStateError(f"flow {self.name!r} has no sink: add one with .sink()")
        self._handle = FlowHandle(self)
        return self._handle

    def snapshot(self) -> FlowSnapshot:
        """The flow's metrics now: every source, metered operator, the pipe, every sink."""
        pipe = self._handle._pipe if self._handle is not None else None
        for source in self._sources:
            source.read_decoder()
        stages = self._stages()
        if pipe is not None:
            stats = pipe.stats()
            pipe_stage = StageMetrics("pipe", "pipe", backlog=lambda: stats.buffered)
            pipe_stage.received, pipe_stage.emitted = stats.admitted, stats.delivered
            pipe_stage.dropped = stats.dropped
            stages.insert(len(self._sources), pipe_stage)
        return FlowSnapshot(self.name, tuple(stage.snapshot() for stage in stages))
