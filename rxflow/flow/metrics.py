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

LATENCY_BUCKETS = (0.0001, 0.0003, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
"""Upper bounds (seconds) of the latency buckets, ``+Inf`` after them: 100 µs to 10 s,
each about sqrt(10) times the last. A stage's time per item is an in-memory call (well under
a millisecond), a network round trip (milliseconds) or a batch write (up to seconds): eleven
evenly log-spaced bounds cover that range with twelve series per stage in Prometheus, and
quantiles are interpolated within a bucket, as Prometheus's ``histogram_quantile`` does."""

_BOUNDS = LATENCY_BUCKETS


@attrs.frozen(repr=False)
class LatencySnapshot:
    """Latencies observed so far, in seconds (quantiles are estimated from the buckets,
    interpolated within one, never above the largest latency seen)."""

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

    def __repr__(self) -> str:
        if not self.count:
            return "LatencySnapshot(count=0)"
        return (
            f"LatencySnapshot(count={self.count}, p50={_duration(self.p50)}, "
            f"p90={_duration(self.p90)}, p99={_duration(self.p99)}, max={_duration(self.max)})"
        )


def _duration(seconds: float) -> str:
    """A latency for a human: ``250µs``, ``1.5ms``, ``2s``."""
    if seconds < 1e-3:
        return f"{seconds * 1e6:.3g}µs"
    if seconds < 1:
        return f"{seconds * 1e3:.3g}ms"
    return f"{seconds:.3g}s"


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
        """The ``q`` quantile (0 when empty), interpolated linearly within its bucket as
        Prometheus's ``histogram_quantile`` does, and never above the largest latency seen
        (which is also the answer when it falls in the last, unbounded bucket)."""
        if not self.count:
            return 0.0
        rank = q * self.count
        seen = 0
        for index, count in enumerate(self._counts):
            if count and seen + count >= rank:
                if index == len(_BOUNDS):
                    return self.max
                lower = _BOUNDS[index - 1] if index else 0.0
                estimate = lower + (_BOUNDS[index] - lower) * (rank - seen) / count
                return min(estimate, self.max)
            seen += count
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


_COUNTERS = ("received", "emitted", "dropped", "errors", "retries", "skipped", "dead_lettered")


@attrs.frozen(repr=False)
class StageSnapshot:
    """One stage's counters at one moment (its ``repr`` shows the counters that are not 0).

    Attributes:
        name, kind: the stage's name and what it is (``source``, ``pipe``, ``map_async``,
            ``sink``).
        received: items that entered the stage.
        emitted: items it passed on (for a sink: items it confirmed written).
        dropped: items an overflow policy dropped.
        errors: items whose processing raised (each retry counts once more here).
        retries: attempts made again by a ``Retry`` strategy.
        skipped: failed items a ``Skip`` strategy left out (for a connector's source: the
            records its ``on_decode_error="skip"`` set aside).
        dead_lettered: failed items sent to a dead-letter sink (for a connector's source:
            records its decode policy handed to ``dead_letter``).
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

    def __repr__(self) -> str:
        counters = [f"{name}={getattr(self, name)}" for name in _COUNTERS if getattr(self, name)]
        if self.backlog:
            counters.append(f"backlog={self.backlog}")
        if self.latency.count:
            counters.append(f"latency={self.latency!r}")
        return f"StageSnapshot({self.name!r}, {self.kind!r}{''.join(', ' + c for c in counters)})"


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
        >>> from rxflow.metrics import FlowSnapshot, StageMetrics, export_prometheus
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


def stage_name(function: object, fallback: str) -> str:
    """The name a stage gets by default: its function's ``__name__``, or ``fallback`` for
    a function without a usable one (a lambda's ``<lambda>``, a ``functools.partial``).

    Example:
        >>> from rxflow.metrics import stage_name
        >>> def save(item): ...
        >>> stage_name(save, "sink1"), stage_name(lambda item: item, "sink1")
        ('save', 'sink1')
    """
    name = getattr(function, "__name__", None)
    return name if isinstance(name, str) and name.isidentifier() else fallback
