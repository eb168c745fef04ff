"""Counters and latency histograms of a flow's stages, read as snapshots.

Every stage of a :class:`rxflow.Flow` (its sources, its pipe, each ``map_async``, each
sink) keeps a :class:`StageMetrics`. They are plain counters on the event-loop thread, so
updating one costs an attribute increment; :meth:`StageMetrics.snapshot` copies them into a
frozen :class:`StageSnapshot` for reading, logging or export
(:func:`rxflow.metrics.export_prometheus` when ``prometheus-client`` is installed).

Example:
    >>> from rxflow.metrics import StageMetrics
    >>> stage = StageMetrics("enrich", "map_async")
    >>> stage.received += 3; stage.emitted += 2; stage.errors += 1
    >>> stage.latency.observe(0.004)
    >>> snapshot = stage.snapshot()
    >>> snapshot.received, snapshot.emitted, snapshot.errors, snapshot.latency.count
    (3, 2, 1, 1)
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable
from typing import Any

import attrs

# Bucket upper bounds from 1 µs to about 18 minutes, each sqrt(2) times the last: a
# quantile read off them is within a factor of 1.42 of the true value.
_BOUNDS = tuple(1e-6 * 2 ** (i / 2) for i in range(61))


@attrs.frozen
class LatencySnapshot:
    """Latencies observed so far, in seconds (quantiles are bucket upper bounds)."""

    count: int
    total: float
    p50: float
    p90: float
    p99: float
    max: float
    buckets: tuple[tuple[float, int], ...] = ()
    """Cumulative ``(upper bound, count)`` pairs, the last one at infinity."""

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0


class LatencyHistogram:
    """Latencies in log-spaced buckets: constant memory whatever the count."""

    __slots__ = ("_counts", "count", "max", "total")

    def __init__(self) -> None:
        self._counts = [0] * (len(_BOUNDS) + 1)
        self.count = 0
        self.total = 0.0
        self.max = 0.0

    def observe(self, seconds: float) -> None:
        self._counts[bisect.bisect_left(_BOUNDS, seconds)] += 1
        self.count += 1
        self.total += seconds
        if seconds > self.max:
            self.max = seconds

    def quantile(self, q: float) -> float:
        """The upper bound of the bucket holding the ``q`` quantile (0 when empty)."""
        if not self.count:
            return 0.0
        rank = q * self.count
        seen = 0
        for index, count in enumerate(self._counts):
            seen += count
            if seen >= rank and count:
                return min(_BOUNDS[index], self.max) if index < len(_BOUNDS) else self.max
        return self.max

    def buckets(self) -> tuple[tuple[float, int], ...]:
        """Cumulative ``(upper bound, count)`` pairs, as Prometheus histograms want them."""
        cumulative, seen = [], 0
        for bound, count in zip(_BOUNDS, self._counts, strict=False):
            seen += count
            cumulative.append((bound, seen))
        cumulative.append((float("inf"), self.count))
        return tuple(cumulative)

    def snapshot(self) -> LatencySnapshot:
        return LatencySnapshot(
            count=self.count,
            total=self.total,
            p50=self.quantile(0.5),
            p90=self.quantile(0.9),
            p99=self.quantile(0.99),
            max=self.max,
            buckets=self.buckets(),
        )


@attrs.frozen
class StageSnapshot:
    """One stage's counters at one moment.

    Attributes:
        name, kind: the stage's name and what it is (``source``, ``pipe``, ``map_async``,
            ``sink``).
        received: items that entered the stage.
        emitted: items it passed on (for a sink: items it confirmed written).
        dropped: items an overflow policy dropped.
        errors: items whose processing raised (each retry counts once more here).
        retries: attempts made again by a ``Retry`` strategy.
        skipped: failed items a ``Skip`` strategy left out.
        dead_lettered: failed items sent to a dead-letter sink.
        backlog: items waiting in the stage's bounded buffer now.
        latency: time per item (a sink: per write; ``map_async``: per call).
    """

    name: str
    kind: str
    received: int
    emitted: int
    dropped: int
    errors: int
    retries: int
    skipped: int
    dead_lettered: int
    backlog: int
    latency: LatencySnapshot


class StageMetrics:
    """The live counters of one stage; see :class:`StageSnapshot` for their meaning."""

    def __init__(self, name: str, kind: str, backlog: Callable[[], int] | None = None) -> None:
        self.name = name
        self.kind = kind
        self.received = 0
        self.emitted = 0
        self.dropped = 0
        self.errors = 0
        self.retries = 0
        self.skipped = 0
        self.dead_lettered = 0
        self.latency = LatencyHistogram()
        self.backlog: Callable[[], int] = backlog or (lambda: 0)

    def snapshot(self) -> StageSnapshot:
        return StageSnapshot(
            name=self.name,
            kind=self.kind,
            received=self.received,
            emitted=self.emitted,
            dropped=self.dropped,
            errors=self.errors,
            retries=self.retries,
            skipped=self.skipped,
            dead_lettered=self.dead_lettered,
            backlog=self.backlog(),
            latency=self.latency.snapshot(),
        )


@attrs.frozen
class FlowSnapshot:
    """Every stage of a flow at one moment; index it by stage name."""

    flow: str
    stages: tuple[StageSnapshot, ...]

    def __getitem__(self, name: str) -> StageSnapshot:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(f"flow {self.flow!r} has no stage {name!r}; it has {self.names()}")

    def names(self) -> list[str]:
        return [stage.name for stage in self.stages]

    def progress_line(self) -> str:
        """One line for a terminal or a log: items per stage, problems, backlogs."""
        parts = []
        for stage in self.stages:
            part = f"{stage.name} {stage.emitted}"
            problems = [
                f"{count} {label}"
                for count, label in (
                    (stage.errors, "errors"),
                    (stage.dropped, "dropped"),
                    (stage.dead_lettered, "dead-lettered"),
                    (stage.skipped, "skipped"),
                )
                if count
            ]
            if stage.backlog:
                problems.append(f"backlog {stage.backlog}")
            if problems:
                part += f" ({', '.join(problems)})"
            parts.append(part)
        return f"{self.flow}: " + " | ".join(parts)


def export_prometheus(snapshot: Callable[[], FlowSnapshot], registry: Any = None) -> Any:
    r"""Expose a flow's metrics to Prometheus; returns the registered collector.

    ``snapshot`` is read at each scrape (pass ``flow.snapshot``). Needs the optional
    ``prometheus-client`` package (``pip install 'rxflow[metrics]'``). Metrics:
    ``rxflow_stage_items_total{flow,stage,kind,outcome}`` (outcome: received, emitted,
    dropped, errors, retries, skipped, dead_lettered), ``rxflow_stage_backlog`` and the
    histogram ``rxflow_stage_latency_seconds``.

    Example:
        >>> from prometheus_client import CollectorRegistry, generate_latest
        >>> from rxflow.metrics import FlowSnapshot, StageMetrics, export_prometheus
        >>> stage = StageMetrics("parse", "map_async"); stage.received = 5
        >>> registry = CollectorRegistry()
        >>> _ = export_prometheus(lambda: FlowSnapshot("demo", (stage.snapshot(),)), registry)
        >>> for line in generate_latest(registry).decode().splitlines():
        ...     if 'outcome="received"' in line:
        ...         print(line.replace(",", "\n  "))
        rxflow_stage_items_total{flow="demo"
          kind="map_async"
          outcome="received"
          stage="parse"} 5.0
    """
    try:
        from prometheus_client import REGISTRY
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )
    except ImportError as error:
        raise ImportError(
            "export_prometheus() needs prometheus-client: pip install 'rxflow[metrics]'"
        ) from error

    outcomes = ("received", "emitted", "dropped", "errors", "retries", "skipped", "dead_lettered")

    class FlowCollector:
        def collect(self) -> Iterable[Any]:
            now = snapshot()
            labels = ["flow", "stage", "kind"]
            items = CounterMetricFamily(
                "rxflow_stage_items", "Items per stage and outcome", labels=[*labels, "outcome"]
            )
            backlog = GaugeMetricFamily(
                "rxflow_stage_backlog", "Items waiting in the stage's buffer", labels=labels
            )
            latency = HistogramMetricFamily(
                "rxflow_stage_latency_seconds", "Time per item in the stage", labels=labels
            )
            for stage in now.stages:
                values = [now.flow, stage.name, stage.kind]
                for outcome in outcomes:
                    items.add_metric([*values, outcome], getattr(stage, outcome))
                backlog.add_metric(values, stage.backlog)
                buckets = [
                    ("+Inf" if bound == float("inf") else repr(bound), count)
                    for bound, count in stage.latency.buckets
                ]
                latency.add_metric(values, buckets, sum_value=stage.latency.total)
            yield from (items, backlog, latency)

        def describe(self) -> Iterable[Any]:
            return []

    collector = FlowCollector()
    (registry if registry is not None else REGISTRY).register(collector)
    return collector
