"""``Flow``: sources, operators and sinks run as one unit that a service can start, watch
and stop without losing data.

A flow is one :func:`rxflow.open_pipe` with the plumbing around it:

* fan-in: several sources are merged fairly (a source that is always ready does not starve
  the others: waiting sources are served in turn, and under trio, which shuffles ready
  tasks, a ready source waits at most two turns);
* fan-out: every sink gets every output. By default the slowest sink sets the pace of the
  whole flow; a sink given an ``overflow=`` policy gets a buffer of its own instead and
  drops (counted) when it falls behind;
* sinks confirm: an item counts as written when the sink's call returned. A failing sink
  call goes to the sink's error strategy (:mod:`rxflow.strategies`);
* graceful stop (:meth:`FlowHandle.stop`): no source is read any more, the operators see
  completion so windows flush, every sink drains and confirms what it was given, then the
  flow ends. Every item a source handed over is then written, or dropped by a policy you
  chose, or dead-lettered, or skipped: each counted in :meth:`FlowHandle.snapshot`.
* abort (:meth:`FlowHandle.abort`): everything is cancelled at once; nothing keeps running.

Delivery is at-least-once for sources whose items can be acknowledged (connector
:class:`~rxflow.connectors.Message` records, or anything with an async ``ack()``): the flow
acknowledges each one once every output derived from it has been confirmed by every sink,
and windows and ``map_async`` calls holding it have emitted (the rule in
:mod:`rxflow._delivery`). A message whose outputs were lost with an aborted or failed flow is
never acknowledged, so its system delivers it again.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Coroutine, Iterable
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from typing import Any, Protocol, TypeGuard, runtime_checkable

import anyio
import anyio.abc
import attrs
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from reactivex import Observable

from rxflow._checks import check_count, check_seconds
from rxflow._delivery import Acker, Delivery, Output, SourceAccount, tag_outputs, tracked
from rxflow._handoff import OVERFLOW_POLICIES, OverflowPolicy
from rxflow._source_time import SourceTime
from rxflow.errors import RxflowError, SourceOverflowError
from rxflow.metrics import FlowSnapshot, StageMetrics, stage_name
from rxflow.pipe import DEFAULT_MAX_BUFFER_SIZE, Operator, Pipe, open_pipe
from rxflow.strategies import (
    FAIL_FAST,
    SKIPPED,
    ErrorStrategy,
    call_with_strategy,
    check_strategy,
)

logger = logging.getLogger("rxflow")


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


class FlowStateError(RxflowError, RuntimeError):
    """A flow was used in a way its state does not allow (started twice, run without a
    source or a sink)."""


@attrs.define
class _Source:
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
class _Sink:
    target: SinkTarget | AbstractAsyncContextManager[Any]
    metrics: StageMetrics
    on_error: ErrorStrategy
    batch_size: int | None
    max_buffer_size: int | None  # None: decided when the flow runs (see _open)
    overflow: OverflowPolicy | None

    async def _open(self, stack: AsyncExitStack) -> None:
        """Enter a context-manager target, and size batches and buffer for what it is."""
        if _is_context_manager(self.target):
            self.target = await stack.enter_async_context(self.target)
        if isinstance(self.target, BatchSink) and self.batch_size is None:
            self.batch_size = self.target.batch_size
        if self.max_buffer_size is None:
            self.max_buffer_size = self.batch_size or 0


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
        self._sources: list[_Source] = []
        self._operators: list[Operator] = []
        self._sinks: list[_Sink] = []
        self._handle: FlowHandle | None = None

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
        if _is_context_manager(items):
            pass
        elif not isinstance(items, AsyncIterable | Iterable) or isinstance(items, str | bytes):
            raise TypeError(
                "Flow.source(): expected an async iterable, an iterable or an async context "
                f"manager yielding one, got {items!r}"
            )
        stage = name or f"source{len(self._sources) + 1}"
        self._sources.append(_Source(items, self._new_stage(stage, "source")))
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
        """
        # Checked first: a context manager made by @asynccontextmanager is callable too.
        if _is_context_manager(target) or isinstance(target, BatchSink):
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
            _Sink(
                target,
                self._new_stage(stage, "sink"),
                check_strategy(on_error, "Flow.sink()"),
                batch_size,
                1 if overflow == "latest" else max_buffer_size,
                overflow,
            )
        )
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


class FlowHandle:
    """A running flow: stop it gracefully, abort it, wait for it, read its metrics."""

    def __init__(self, flow: Flow) -> None:
        self._flow = flow
        self._pipe: Pipe[Any] | None = None
        self._scope = anyio.CancelScope()
        self._sources_scope = anyio.CancelScope()
        self._stop_requested = False
        self._done = anyio.Event()
        self._error: BaseException | None = None
        self._acker = Acker()
        self._delivery: Delivery | None = None
        self._accounts: list[SourceAccount] = []
        self._started = False
        self._drain_timeout: float | None = None
        self.aborted = False
        self.drain_timed_out = False
        """True when a drain given a ``drain_timeout`` did not finish in time and the flow
        aborted itself (``aborted`` is True too)."""

    @property
    def acknowledged(self) -> int:
        """Source messages acknowledged so far (at-least-once delivery)."""
        return self._acker.acked

    @property
    def redelivered_while_held(self) -> int:
        """Messages a source delivered again while the flow still held the first copy (a
        broker's ack timeout, a reclaimed stream entry): recognised by their identity, not
        pushed again, and acknowledged with the first copy."""
        return sum(account.redelivered for account in self._accounts)

    @property
    def unacknowledged(self) -> int:
        """Source messages admitted whose outputs are not all confirmed yet."""
        return self._delivery.unsettled if self._delivery is not None else 0

    @property
    def running(self) -> bool:
        """True from the moment the flow starts running until it has ended (a liveness
        probe's question)."""
        return self._started and not self._done.is_set()

    @property
    def done(self) -> bool:
        """True once the flow has ended (completed, stopped, aborted or failed)."""
        return self._done.is_set()

    @property
    def ready(self) -> bool:
        """True while the flow runs with every source entered (connected) and every sink
        opened, and is not stopping (a readiness probe's question)."""
        return self._pipe is not None and not self._stop_requested and self.running

    @property
    def stopping(self) -> bool:
        """True once :meth:`stop` was called: the flow drains (or has ended)."""
        return self._stop_requested

    def stop(self, *, drain_timeout: float | None = None) -> None:
        """Stop gracefully: read no more from the sources, flush the operators (open
        windows are emitted), let every sink drain and confirm, then end.

        With ``drain_timeout`` (seconds, from this call), a drain that takes longer aborts
        the flow instead: :attr:`drain_timed_out` becomes True and a WARNING says how many
        messages were left unacknowledged (their sources deliver them again). Call it from
        the flow's event loop; calling it again may shorten the deadline, never extend it.

        Example:
            >>> import anyio
            >>> from rxflow import Flow
            >>> async def stuck_sink(item):
            ...     await anyio.sleep(3600)
            >>> async def main():
            ...     async with anyio.create_task_group() as tg:
            ...         handle = Flow("stuck").source(range(3)).sink(stuck_sink).start(tg)
            ...         await anyio.sleep(0.01)
            ...         handle.stop(drain_timeout=0.05)
            ...     return handle.drain_timed_out, handle.aborted
            >>> anyio.run(main)
            (True, True)
        """
        timeout = check_seconds(
            "FlowHandle.stop()", "drain_timeout", drain_timeout, allow_zero=True, optional=True
        )
        if timeout is not None:
            # The drain's deadline is the whole flow's scope: past it, the flow aborts itself.
            self._scope.deadline = min(self._scope.deadline, anyio.current_time() + timeout)
            self._drain_timeout = timeout
        self._stop_requested = True
        self._sources_scope.cancel()
        if self._pipe is not None:
            self._pipe.stop()

    def abort(self) -> None:
        """Cancel everything now. Items in flight are not written; nothing keeps running."""
        self.aborted = True
        self._scope.cancel()

    async def wait(self) -> FlowSnapshot:
        """Wait for the flow to end; raise its error if it failed; return its metrics."""
        await self._done.wait()
        if self._error is not None:
            raise self._error
        return self.snapshot()

    def snapshot(self) -> FlowSnapshot:
        """The flow's metrics now (see :meth:`Flow.snapshot`)."""
        return self._flow.snapshot()

    async def run(self) -> FlowSnapshot:
        """Run the flow to its end here; return its final metrics or raise its error."""
        await self._run()
        return self.snapshot()

    async def _run(self) -> None:
        flow = self._flow
        self._started = True
        logger.info("flow %s started", flow.name)
        try:
            with self._scope:
                try:
                    await self._run_stages()
                except BaseExceptionGroup as group:
                    raise _the_one_error(group) from None
        except Exception as error:
            self._error = error
            # The one record of this failure, with its traceback: callers that catch the
            # error re-raised here need not log it again. The message names the error too,
            # for log views that show messages only.
            logger.exception("flow %s failed: %r", flow.name, error)  # noqa: TRY401
            raise
        finally:
            self._done.set()
        if self._scope.cancelled_caught and not self.aborted:  # the drain's deadline passed
            self.aborted = self.drain_timed_out = True
            logger.warning(
                "flow %s: the drain did not finish within drain_timeout=%gs, so the flow was "
                "aborted; %d message(s) were left unacknowledged and will be redelivered",
                flow.name,
                self._drain_timeout,
                self.unacknowledged,
            )
        state = "aborted" if self.aborted else "ended"
        logger.info("flow %s %s: %s", flow.name, state, self.snapshot().progress_line())

    async def _run_stages(self) -> None:
        # The pipe's source time, paused while a source is at its in-flight limit too.
        source_time = SourceTime()
        self._delivery = delivery = Delivery(self._acker.put, source_time)
        self._acker.on_done = delivery.forget
        # Sources open first and close last: their connections must outlive the final acks.
        async with AsyncExitStack() as open_sources:
            sources = [await _entered(source.items, open_sources) for source in self._flow._sources]
            for source, items in zip(self._flow._sources, sources, strict=True):
                source.decoder = getattr(items, "decoder", None)
            self._accounts = [
                SourceAccount(_source_name(source, items), getattr(items, "in_flight_limit", None))
                for source, items in zip(self._flow._sources, sources, strict=True)
            ]
            for sink in self._flow._sinks:
                await sink._open(open_sources)
            async with anyio.create_task_group() as acks:
                acks.start_soon(self._acker.run, name=f"rxflow flow {self._flow.name} acks")
                # Operators subscribed in here find both.
                with delivery.activated(), source_time.activated():
                    await self._run_pipe(sources, delivery)
                self._acker.close()  # acknowledge what was settled, then end

    async def _run_pipe(self, sources: list[Any], delivery: Delivery) -> None:
        flow = self._flow
        async with anyio.create_task_group() as tg:
            merged = tracked(delivery, self._merged_source(tg, sources, self._accounts))
            async with open_pipe(
                merged,
                *flow._operators,
                tag_outputs(delivery),
                max_buffer_size=flow._max_buffer_size,
            ) as pipe:
                self._pipe = pipe
                if self._stop_requested:
                    pipe.stop()
                if flow._log_every:
                    tg.start_soon(self._log_progress, flow._log_every)
                await self._fan_out(pipe, delivery)
            tg.cancel_scope.cancel()  # the progress logger, and sources a take() left

    def _merged_source(
        self, tg: anyio.abc.TaskGroup, iterables: list[Any], accounts: list[SourceAccount]
    ) -> AsyncIterable[tuple[SourceAccount, Any]]:
        """Every source's items, each paired with its source's account."""
        sources = self._flow._sources
        if len(sources) == 1:
            return _counted(iterables[0], sources[0].metrics, accounts[0])
        # Each source's task waits in send() on an unbuffered stream; anyio serves waiting
        # senders in turn, which is the fairness a merge needs.
        send, receive = anyio.create_memory_object_stream[tuple[SourceAccount, Any]](0)

        async def forward(
            items: Any,
            metrics: StageMetrics,
            account: SourceAccount,
            send: anyio.abc.ObjectSendStream[tuple[SourceAccount, Any]],
        ) -> None:
            async with send:
                async for item in _counted(items, metrics, account):
                    try:
                        await send.send(item)
                    except anyio.BrokenResourceError:
                        return  # the pipe stopped reading (an operator such as take() ended)

        async def forward_all() -> None:
            with self._sources_scope:
                async with send, anyio.create_task_group() as sources_tg:
                    for source, items, account in zip(sources, iterables, accounts, strict=True):
                        sources_tg.start_soon(forward, items, source.metrics, account, send.clone())

        tg.start_soon(forward_all, name=f"rxflow flow {self._flow.name} sources")
        return receive

    async def _fan_out(self, pipe: Pipe[Output], delivery: Delivery) -> None:
        sinks = self._flow._sinks
        async with anyio.create_task_group() as tg:
            branches = []
            for sink in sinks:
                send, receive = anyio.create_memory_object_stream[Output](sink.max_buffer_size or 0)
                sink.metrics.backlog = _backlog_of(receive)
                branches.append((sink, send, receive))
                tg.start_soon(
                    _drain_into, sink, receive, delivery, name=f"rxflow sink {sink.metrics.name}"
                )
            try:
                async for output in pipe:
                    output.unconfirmed = len(branches)
                    for sink, send, receive in branches:
                        sink.metrics.received += 1
                        if sink.overflow is None:
                            await send.send(output)
                        else:
                            _send_or_overflow(sink, send, receive, output, delivery)
            finally:
                for _, send, _ in branches:
                    send.close()

    async def _log_progress(self, every: float) -> None:
        while True:
            await anyio.sleep(every)
            logger.info("%s", self.snapshot().progress_line())


def _send_or_overflow(
    sink: _Sink,
    send: MemoryObjectSendStream[Output],
    receive: MemoryObjectReceiveStream[Output],
    output: Output,
    delivery: Delivery,
) -> None:
    try:
        send.send_nowait(output)
    except anyio.WouldBlock:
        pass
    else:
        return
    if sink.overflow == "error":
        raise SourceOverflowError(
            f"sink {sink.metrics.name!r} fell more than max_buffer_size="
            f"{sink.max_buffer_size} items behind; raise its buffer or choose another overflow"
        )
    # A drop is the policy the user chose for this sink: it counts as done with the output.
    sink.metrics.dropped += 1
    if sink.overflow == "drop_newest":
        output.done_by_one_sink(delivery)
        return
    receive.receive_nowait().done_by_one_sink(delivery)  # drop_oldest, and latest
    send.send_nowait(output)


async def _counted(
    items: AsyncIterable[Any] | Iterable[Any], metrics: StageMetrics, account: SourceAccount
) -> AsyncIterator[tuple[SourceAccount, Any]]:
    """A source's items, counted, each paired with the source's account for delivery."""
    if isinstance(items, AsyncIterable):
        iterator = aiter(items)
        try:
            async for item in iterator:
                metrics.emitted += 1
                yield account, item
        finally:
            aclose = getattr(iterator, "aclose", None)
            if aclose is not None:
                with anyio.CancelScope(shield=True):
                    await aclose()
    else:
        for item in items:
            metrics.emitted += 1
            yield account, item


def _source_name(source: _Source, items: object) -> str:
    """How errors name a source: its stage, and the connector's own name if it has one."""
    stage = f"source {source.metrics.name!r}"
    own = getattr(items, "name", None)
    return f"{stage} ({own})" if isinstance(own, str) else stage


def _is_context_manager(items: object) -> TypeGuard[AbstractAsyncContextManager[Any]]:
    return hasattr(items, "__aenter__") and not isinstance(items, AsyncIterable)


async def _entered(items: SourceItems, stack: AsyncExitStack) -> AsyncIterable[Any] | Iterable[Any]:
    """What a source yields: a context manager entered (left by ``stack``), or itself."""
    if _is_context_manager(items):
        entered: AsyncIterable[Any] | Iterable[Any] = await stack.enter_async_context(items)
        return entered
    assert isinstance(items, AsyncIterable | Iterable)
    return items


async def _drain_into(
    sink: _Sink, receive: MemoryObjectReceiveStream[Output], delivery: Delivery
) -> None:
    """Feed one sink until its branch closes; every item it got is confirmed or handled."""
    write = _writer(sink.target)
    async with receive:
        async for output in receive:
            outputs = [output]
            if sink.batch_size is not None:
                while len(outputs) < sink.batch_size:
                    try:
                        outputs.append(receive.receive_nowait())
                    except (anyio.WouldBlock, anyio.EndOfStream):
                        break
            batch = output.value if sink.batch_size is None else [o.value for o in outputs]
            # Returning (written, skipped or dead-lettered by the sink's strategy) is what
            # confirms; an exception fails the flow and leaves the outputs unconfirmed.
            outcome = await call_with_strategy(write, batch, sink.on_error, sink.metrics)
            if outcome is not SKIPPED:
                sink.metrics.emitted += len(outputs)
            for done in outputs:
                done.done_by_one_sink(delivery)


def _writer(target: SinkTarget | AbstractAsyncContextManager[Any]) -> Callable[[Any], Any]:
    assert not _is_context_manager(target), "entered by _Sink._open before the flow runs"
    if isinstance(target, anyio.abc.ObjectSendStream):
        return target.send
    if isinstance(target, BatchSink):
        return target.send_batch
    assert callable(target)
    return target


def _backlog_of(receive: MemoryObjectReceiveStream[Any]) -> Callable[[], int]:
    return lambda: receive.statistics().current_buffer_used


def _the_one_error(group: BaseExceptionGroup[Any]) -> BaseException:
    """The error a task group failed with, unwrapped when it is the only one, so that a
    flow raises its stage's own exception rather than a group around it."""
    errors = [
        leaf for leaf in _leaves(group) if not isinstance(leaf, anyio.get_cancelled_exc_class())
    ]
    if len(errors) > 1:
        # A stage that failed closed its stream, so its neighbour's send broke: that is a
        # consequence, not a second error.
        errors = [error for error in errors if not isinstance(error, anyio.BrokenResourceError)]
    return errors[0] if len(errors) == 1 else group


def _leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in _leaves(inner)]
    return [error]
