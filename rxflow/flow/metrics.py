"""Counters and latency histograms of a flow's stages, read as snapshots.

Every stage of a :class:`rxflow.Flow` (its sources, its pipe, each ``map_async``, each
sink) keeps a :class:`StageMetrics`. They are plain counters on the event-loop thread, so
updating one costs an attribute increment; :meth:`StageMetrics.snapshot` copies them into a
frozen :class:`StageSnapshot` for reading, logging or export
(:func:`rxflow.flow.metrics.export_prometheus` when ``prometheus-client`` is installed).

Example:
    >>> from rxflow.flow.metrics import StageMetrics
    >>> stage = StageMetrics("enrich", "map_async")
    >>> stage.received += 3; stage.emitted += 2; stage.errors += 1
    >>> stage.latency.observe(0.004)
    >>> snapshot = stage.snapshot()
    >>> snapshot.received, snapshot.emitted, snapshot.errors, snapshot.latency.count
    (3, 2, 1, 1)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import attrs

from rxflow._stage_metrics import (
    LATENCY_BUCKETS,
    LatencyHistogram,
    LatencySnapshot,
    StageMetrics,
    StageSnapshot,
    stage_name,
)

__all__ = [
    "LATENCY_BUCKETS",
    "FlowSnapshot",
    "LatencyHistogram",
    "LatencySnapshot",
    "StageMetrics",
    "StageSnapshot",
    "export_prometheus",
    "stage_name",
]


@attrs.frozen(repr=False)
class FlowSnapshot:
    """Every stage of a flow at one moment; index it by stage name. Its ``repr`` is its
    :meth:`progress_line` (each stage is in ``snapshot.stages``)."""

    flow: str
    stages: tuple[StageSnapshot, ...]

    def __repr__(self) -> str:
        return f"<FlowSnapshot {self.progress_line()}>"

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
    ``prometheus-client`` package (``pip install 'rxflow[metrics]'``). Every metric has the
    labels ``flow``, ``stage`` and ``kind`` (the stage's: ``source``, ``pipe``,
    ``map_async``, ``sink``); each counter counts one thing, so summing it over a label
    means something:

    * ``rxflow_stage_items_received_total``: items that entered the stage;
    * ``rxflow_stage_items_emitted_total``: items it passed on (a sink: confirmed written);
    * ``rxflow_stage_items_discarded_total{reason}``: items that did not go on, each once,
      by ``reason``: ``dropped`` (an overflow policy), ``skipped`` (``Skip``),
      ``dead_lettered`` (``DeadLetter``);
    * ``rxflow_stage_errors_total``: failed attempts (a retried item counts once per
      failure), ``rxflow_stage_retries_total``: attempts made again;
    * ``rxflow_stage_backlog``: items waiting in the stage's buffer (a gauge);
    * ``rxflow_stage_latency_seconds``: time per item, a histogram over
      :data:`LATENCY_BUCKETS`.

    Example:
        >>> from prometheus_client import CollectorRegistry, generate_latest
        >>> from rxflow.flow.metrics import FlowSnapshot, StageMetrics, export_prometheus
        >>> stage = StageMetrics("parse", "map_async"); stage.received = 5; stage.skipped = 1
        >>> registry = CollectorRegistry()
        >>> _ = export_prometheus(lambda: FlowSnapshot("demo", (stage.snapshot(),)), registry)
        >>> for line in generate_latest(registry).decode().splitlines():
        ...     if line.startswith(("rxflow_stage_items_received_total", "rxflow_stage_items_discarded_total")):
        ...         print(line)
        rxflow_stage_items_received_total{flow="demo",kind="map_async",stage="parse"} 5.0
        rxflow_stage_items_discarded_total{flow="demo",kind="map_async",reason="dropped",stage="parse"} 0.0
        rxflow_stage_items_discarded_total{flow="demo",kind="map_async",reason="skipped",stage="parse"} 1.0
        rxflow_stage_items_discarded_total{flow="demo",kind="map_async",reason="dead_lettered",stage="parse"} 0.0
    """  # noqa: E501 (the example's output lines are as long as Prometheus writes them)
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

    labels = ["flow", "stage", "kind"]
    # metric name (without _total), help, the StageSnapshot attribute it reads
    counters = (
        ("rxflow_stage_items_received", "Items that entered the stage", "received"),
        ("rxflow_stage_items_emitted", "Items the stage passed on (a sink: written)", "emitted"),
        ("rxflow_stage_errors", "Failed attempts (each retry's failure counts)", "errors"),
        ("rxflow_stage_retries", "Attempts made again by a Retry strategy", "retries"),
    )
    reasons = ("dropped", "skipped", "dead_lettered")

    class FlowCollector:
        def collect(self) -> Iterable[Any]:
            now = snapshot()
            families = {
                attribute: CounterMetricFamily(name, text, labels=labels)
                for name, text, attribute in counters
            }
            discarded = CounterMetricFamily(
                "rxflow_stage_items_discarded",
                "Items that did not go on, by reason (each item once)",
                labels=[*labels, "reason"],
            )
            backlog = GaugeMetricFamily(
                "rxflow_stage_backlog", "Items waiting in the stage's buffer", labels=labels
            )
            latency = HistogramMetricFamily(
                "rxflow_stage_latency_seconds", "Time per item in the stage", labels=labels
            )
            for stage in now.stages:
                values = [now.flow, stage.name, stage.kind]
                for attribute, family in families.items():
                    family.add_metric(values, getattr(stage, attribute))
                for reason in reasons:
                    discarded.add_metric([*values, reason], getattr(stage, reason))
                backlog.add_metric(values, stage.backlog)
                buckets = [
                    ("+Inf" if bound == float("inf") else repr(bound), count)
                    for bound, count in stage.latency.buckets
                ]
                latency.add_metric(values, buckets, sum_value=stage.latency.total)
            yield from families.values()
            yield from (discarded, backlog, latency)

        def describe(self) -> Iterable[Any]:
            return []

    collector = FlowCollector()
    (registry if registry is not None else REGISTRY).register(collector)
    return collector
