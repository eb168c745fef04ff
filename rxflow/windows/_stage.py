"""What every window operator shares: its runs (one per subscription) and its metrics,
whose backlog is the number of items the runs' open windows hold."""

from __future__ import annotations

from typing import Generic, Protocol, TypeVar

from rxflow._stage_metrics import StageMetrics

__all__ = ["WindowStage"]


class _Holding(Protocol):
    @property
    def held(self) -> int: ...


RunT = TypeVar("RunT", bound=_Holding)


class WindowStage(Generic[RunT]):
    """The base of the window operators: ``metrics`` (kind ``"window"``) counts what the
    operator's runs receive and emit; its ``backlog`` is :meth:`state_size`."""

    def __init__(self, name: str) -> None:
        self._runs: set[RunT] = set()  # a subscription's run, while it is subscribed
        self.metrics = StageMetrics(name, "window", backlog=self.state_size)

    def state_size(self) -> int:
        """Items held in open windows now, over all subscriptions."""
        return sum(run.held for run in self._runs)
