"""Fan-in and fan-out: a flow's sources merged fairly into its pipe, and every output of
the pipe handed to every sink, each at its own pace or dropping by its own policy."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from typing import Any

import anyio
import anyio.abc
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from rxflow._overflow import OverflowBuffer, OverflowPolicy
from rxflow._stage_metrics import StageMetrics
from rxflow.flow._accounts import SourceAccount
from rxflow.flow._delivery import Delivery, Output
from rxflow.flow._lineage import Traced
from rxflow.flow._stages import SinkStage, SourceStage, writer
from rxflow.pipe import Pipe
from rxflow.strategies import SKIPPED, call_with_strategy

__all__ = ["counted", "fan_out", "merged_source"]


def merged_source(
    tg: anyio.abc.TaskGroup,
    sources: list[SourceStage],
    iterables: list[Any],
    accounts: list[SourceAccount],
    sources_scope: anyio.CancelScope,
    flow_name: str,
) -> AsyncIterable[tuple[SourceAccount, Any]]:
    """Every source's items, each paired with its source's account, read in tasks of
    ``tg`` inside ``sources_scope`` (cancelling it stops every source: a graceful stop)."""
    if len(sources) == 1:
        return counted(iterables[0], sources[0].metrics, accounts[0])
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
            async for item in counted(items, metrics, account):
                try:
                    await send.send(item)
                except anyio.BrokenResourceError:
                    return  # the pipe stopped reading (an operator such as take() ended)

    async def forward_all() -> None:
        with sources_scope:
            async with send, anyio.create_task_group() as sources_tg:
                for source, items, account in zip(sources, iterables, accounts, strict=True):
                    sources_tg.start_soon(forward, items, source.metrics, account, send.clone())

    tg.start_soon(forward_all, name=f"rxflow flow {flow_name} sources")
    return receive


async def fan_out(pipe: Pipe[Output], sinks: list[SinkStage], delivery: Delivery) -> None:
    """Hand every output of ``pipe`` to every sink, each fed by a task of its own."""
    async with anyio.create_task_group() as tg:
        branches: list[tuple[SinkStage, MemoryObjectSendStream[Output] | OverflowBuffer[Output]]]
        branches = []
        for sink in sinks:
            receive: MemoryObjectReceiveStream[Output] | OverflowBuffer[Output]
            if sink.overflow is None:
                send, receive = anyio.create_memory_object_stream[Output](sink.max_buffer_size or 0)
                sink.metrics.backlog = _backlog_of(receive)
                branches.append((sink, send))
            else:
                receive = _overflow_buffer(sink, sink.overflow, delivery)
                sink.metrics.backlog = receive.__len__
                branches.append((sink, receive))
            tg.start_soon(
                _drain_into, sink, receive, delivery, name=f"rxflow sink {sink.metrics.name}"
            )
        try:
            async for output in pipe:
                output.unconfirmed = len(branches)
                for sink, branch in branches:
                    sink.metrics.received += 1
                    if isinstance(branch, OverflowBuffer):
                        branch.add(output)  # SourceOverflowError under "error"
                    else:
                        await branch.send(output)
        finally:
            for _, branch in branches:
                branch.close()


def _overflow_buffer(
    sink: SinkStage, policy: OverflowPolicy, delivery: Delivery
) -> OverflowBuffer[Output]:
    """The buffer of a sink that may fall behind, under its own overflow policy."""

    def dropped(output: Output) -> None:
        # A drop is the policy the user chose for this sink: it counts as done with it.
        sink.metrics.dropped += 1
        output.done_by_one_sink(delivery)

    return OverflowBuffer(
        policy,
        sink.max_buffer_size or 1,
        on_drop=dropped,
        overflow_message=(
            f"sink {sink.metrics.name!r} fell more than max_buffer_size="
            f"{sink.max_buffer_size} items behind; raise its buffer or choose another overflow"
        ),
    )


async def counted(
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


async def _drain_into(
    sink: SinkStage,
    receive: MemoryObjectReceiveStream[Output] | OverflowBuffer[Output],
    delivery: Delivery,
) -> None:
    """Feed one sink until its branch closes; every item it got is confirmed or handled."""
    write = writer(sink.target)
    async with receive:
        async for output in receive:
            outputs = [output]
            if sink.batch_size is not None:
                while len(outputs) < sink.batch_size:
                    try:
                        outputs.append(receive.receive_nowait())
                    except (anyio.WouldBlock, anyio.EndOfStream):
                        break
            if sink.transactional:  # written by the checkpoint that covers their epoch
                stage = sink.target.stage  # type: ignore[union-attr]
                stage([(o.epoch, _value_for(sink, o, delivery)) for o in outputs])
                sink.metrics.emitted += len(outputs)
                for done in outputs:
                    done.done_by_one_sink(delivery)
                continue
            batch = (
                _value_for(sink, output, delivery)
                if sink.batch_size is None
                else [_value_for(sink, o, delivery) for o in outputs]
            )
            # Returning (written, skipped or dead-lettered by the sink's strategy) is what
            # confirms; an exception fails the flow and leaves the outputs unconfirmed.
            outcome = await call_with_strategy(write, batch, sink.on_error, sink.metrics)
            if outcome is not SKIPPED:
                sink.metrics.emitted += len(outputs)
            for done in outputs:
                done.done_by_one_sink(delivery)


def _value_for(sink: SinkStage, output: Output, delivery: Delivery) -> Any:
    if sink.lineage:
        return Traced(output.value, delivery.sources_of(output.tags))
    return output.value


def _backlog_of(receive: MemoryObjectReceiveStream[Any]) -> Callable[[], int]:
    return lambda: receive.statistics().current_buffer_used
