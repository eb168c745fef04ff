"""What every window operator shares: its runs (one per subscription) and its metrics,
whose backlog is the number of items the runs' open windows hold."""

from __future__ import annotations

from typing import Any, Generic, Protocol, TypeVar

from rxflow._stage_metrics import StageMetrics
from rxflow._state import StateTable
from rxflow.errors import StateNameError
from rxflow.windows._durable import durable_table

__all__ = ["WindowStage"]


class _Holding(Protocol):
    @property
    def held(self) -> int: ...

    @property
    def table(self) -> StateTable[Any, Any] | None: ...


RunT = TypeVar("RunT", bound=_Holding)


class WindowStage(Generic[RunT]):
    """The base of the window operators: ``metrics`` (kind ``"window"``) counts what the
    operator's runs receive and emit; its ``backlog`` is :meth:`state_size`."""

    def __init__(self, name: str) -> None:
        self._runs: set[RunT] = set()  # a subscription's run, while it is subscribed
        self.metrics = StageMetrics(name, "window", backlog=self.state_size)

    def durable_table(self) -> StateTable[Any, Any] | None:
        """The table of a new subscription in a checkpointed flow (None outside one).

        Raises:
            StateNameError: another subscription of this operator runs with the same table
                (the operator inside ``group_by``/``flat_map``, or one object used twice):
                their windows would mix in one state.
        """
        name = self.metrics.name
        table = durable_table(name, self)
        if table is not None and any(run.table is table for run in self._runs):
            raise StateNameError(
                f"window stage {name!r} is subscribed again while another subscription of it "
                "runs in the same checkpointed flow (inside group_by/flat_map, or one "
                "operator used twice); their windows would mix in its one stored state. For "
                "windows per key give the window key= (sessions: their key function) "
                "instead of a window per group; for two uses make two operators, each with "
                "a name= of its own"
            )
        return table

    def state_size(self) -> int:
        """Items held in open windows now, over all subscriptions."""
        return sum(run.held for run in self._runs)
