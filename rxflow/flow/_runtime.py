"""``FlowHandle``: a flow while it runs. It opens the sources and sinks, runs the pipe
between fan-in and fan-out, acknowledges what every sink confirmed, and stops gracefully,
aborts, or fails with the one error that ended it."""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

import anyio

from rxflow._checks import check_seconds
from rxflow._source_time import SourceTime
from rxflow._state import IN_MEMORY, state_activated
from rxflow.errors import FlowStateError
from rxflow.flow._accounts import SourceAccount
from rxflow.flow._acker import Acker
from rxflow.flow._checkpoint import Checkpointer
from rxflow.flow._delivery import Delivery, tag_outputs, tracked
from rxflow.flow._fan import fan_out, merged_source
from rxflow.flow._shared_work import SharedWorkWatch
from rxflow.flow._stages import entered, source_name
from rxflow.flow.metrics import FlowSnapshot
from rxflow.partitions import per_partition
from rxflow.pipe import Pipe, open_pipe
from rxflow.state._store import Store, TransactionalSink

if TYPE_CHECKING:
    from rxflow.flow._builder import Flow

__all__ = ["FlowHandle"]

logger = logging.getLogger("rxflow")


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
        self._checkpointer: Checkpointer | None = None
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

        Over a partitioned source (Kafka), open windows are not emitted but dropped, as
        when a partition is revoked: their records stay uncommitted, and whoever reads the
        partition next (this service restarted, or another worker) builds them whole.

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

    def _not_stopping(self) -> bool:
        return not self._stop_requested

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
        store = self._flow._store
        self._delivery = delivery = Delivery(
            self._acker.put, source_time, acks_follow_checkpoints=store is not None
        )
        self._acker.on_done = delivery.forget
        # Sources open first and close last: their connections must outlive the final acks.
        async with AsyncExitStack() as open_sources:
            checkpointer = None
            if store is not None:  # entered first: the last checkpoint comes after the pipe
                await open_sources.enter_async_context(store)
                checkpointer = Checkpointer(
                    store, self._flow.name, self._flow._checkpoint_every, delivery, self._acker
                )
                await checkpointer.prepare(None)  # the unpartitioned scope, before any push
                self._checkpointer = checkpointer
            sources = [await entered(source.items, open_sources) for source in self._flow._sources]
            for source, items in zip(self._flow._sources, sources, strict=True):
                source.decoder = getattr(items, "decoder", None)
            if checkpointer is None:
                delivery.refuse_overlapping = _overlap_refusal(self._flow, sources)
            self._accounts = [
                SourceAccount(
                    source_name(source, items),
                    getattr(items, "in_flight_limit", None),
                    getattr(items, "link_many", None) if _links_outputs(items) else None,
                )
                for source, items in zip(self._flow._sources, sources, strict=True)
            ]
            delivery.linking = any(account.lineage for account in self._accounts)
            for sink in self._flow._sinks:
                await sink.open(open_sources)
            if checkpointer is not None:
                checkpointer.add_sinks(self._transactional_sinks(store))
            elif any(sink.transactional for sink in self._flow._sinks):
                raise FlowStateError(
                    f"flow {self._flow.name!r} has an exactly-once sink, which writes in the "
                    "flow's checkpoints: add .checkpoint(PostgresStore(...)) on the sink's "
                    "database"
                )
            async with anyio.create_task_group() as acks:
                acks.start_soon(self._acker.run, name=f"rxflow flow {self._flow.name} acks")
                state = IN_MEMORY
                if checkpointer is not None:
                    acks.start_soon(checkpointer.run, name=f"rxflow flow {self._flow.name} state")
                    state = checkpointer.view(None)
                # Operators subscribed in here find all three.
                with delivery.activated(), source_time.activated(), state_activated(state):
                    await self._run_pipe(sources, delivery, checkpointer)
                if checkpointer is not None:
                    checkpointer.close()
                    await checkpointer.checkpoint()  # the last: it covers what remains
                self._acker.close()  # acknowledge what was settled, then end

    def _transactional_sinks(self, store: Store | None) -> list[TransactionalSink]:
        sinks = []
        for sink in self._flow._sinks:
            if not sink.transactional:
                continue
            target: TransactionalSink = sink.target  # type: ignore[assignment]
            if store is None or not store.can_write(target):
                raise FlowStateError(
                    f"flow {self._flow.name!r}: the exactly-once sink {sink.metrics.name!r} "
                    "writes in the transaction of the flow's checkpoints, so the checkpoint "
                    f"store must be a PostgresStore on the sink's database, not "
                    f"{store.description if store is not None else 'none'}"
                )
            sinks.append(target)
        return sinks

    async def _run_pipe(
        self, sources: list[Any], delivery: Delivery, checkpointer: Checkpointer | None
    ) -> None:
        flow = self._flow
        async with anyio.create_task_group() as tg:
            names = [account.name for account in self._accounts]
            watch = SharedWorkWatch.of(flow.name, flow._operators, zip(names, sources, strict=True))
            if watch is not None:  # keyed windows over a source other workers share
                await watch.start(tg)
            merged_sources = merged_source(
                tg,
                flow._sources,
                sources,
                self._accounts,
                self._sources_scope,
                flow.name,
            )
            if checkpointer is not None:
                merged_sources = checkpointer.restoring(merged_sources)
            merged = tracked(delivery, merged_sources)
            operators = flow._operators
            if checkpointer is not None or any(
                getattr(items, "partitioned", False) for items in sources
            ):
                # Keyed state per partition, dropped when the partition is revoked; and at
                # a graceful stop not emitted either: over a partitioned source the
                # partition's next reader builds its open windows whole from the records
                # left uncommitted, as after a rebalance; with checkpoints, the last
                # checkpoint stores them, and the next run goes on with them.
                operators = [per_partition(*operators, flush_at_end=self._not_stopping)]
            async with open_pipe(
                merged,
                *operators,
                tag_outputs(delivery),
                max_buffer_size=flow._max_buffer_size,
            ) as pipe:
                self._pipe = pipe
                if self._stop_requested:
                    pipe.stop()
                if flow._log_every:
                    tg.start_soon(self._log_progress, flow._log_every)
                await fan_out(pipe, flow._sinks, delivery)
            tg.cancel_scope.cancel()  # the progress logger, and sources a take() left

    async def _log_progress(self, every: float) -> None:
        while True:
            await anyio.sleep(every)
            logger.info("%s", self.snapshot().progress_line())


def _overlap_refusal(flow: Flow, sources: list[Any]) -> Callable[[str], Exception] | None:
    """The error for event-time sliding windows (wherever they are in the chain: at the top,
    or inside ``group_by``/``flat_map``), when the flow reads a source that delivers
    unacknowledged messages again and has no checkpoints; None when they are safe. Without
    checkpoints, after a crash a window whose items were partly acknowledged (those whose
    other windows were written too) is built again from the rest and emitted as if whole:
    the messages alone cannot rebuild overlapping windows."""
    redelivering = [items for items in sources if callable(getattr(items, "link_many", None))]
    if not redelivering:
        return None
    source = getattr(redelivering[0], "name", "the source")

    def refusal(stage: str) -> Exception:
        return FlowStateError(
            f"flow {flow.name!r}: the event-time sliding windows {stage!r} overlap, so "
            f"after a crash the messages that {source} delivers again cannot rebuild a "
            "window some of whose items were acknowledged with the window before it; it "
            "would be emitted with part of its items. Add .checkpoint(store) "
            "(rxflow.state.SQLiteStore needs no server): the windows' contents are then "
            "stored and recover exactly"
        )

    return refusal


def _links_outputs(items: Any) -> bool:
    """Whether a source wants to know which of its messages made one output: one that
    commits positions (Kafka) must not commit into the middle of a window it wrote."""
    return bool(getattr(items, "links_outputs", False))


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
