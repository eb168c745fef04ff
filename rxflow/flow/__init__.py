"""The Flow runtime: sources, operators and sinks run as one unit that a service can
start, watch and stop without losing data.

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
:mod:`rxflow.flow._delivery`). A message whose outputs were lost with an aborted or
failed flow is never acknowledged, so its system delivers it again.

This package holds the Flow and everything only a flow needs: the builder
(:class:`Flow`), the runtime (:class:`FlowHandle`), fan-in and fan-out, delivery tracking
(acks), :mod:`rxflow.flow.metrics`, the command line (:mod:`rxflow.flow.cli`) and the health
server (:func:`rxflow.serve_health`). It uses the core (the pipe, the operators); the core
never imports it.
"""

from rxflow.errors import FlowStateError
from rxflow.flow._builder import Flow
from rxflow.flow._runtime import FlowHandle
from rxflow.flow._stages import BatchSink, SinkTarget, SourceItems, TaskStarter

__all__ = [
    "BatchSink",
    "Flow",
    "FlowHandle",
    "FlowStateError",
    "SinkTarget",
    "SourceItems",
    "TaskStarter",
]
