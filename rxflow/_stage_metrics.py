"""The counters of one stage (a source, a window, a ``map_async``, a sink), which the
operators bump as items pass, and the frozen snapshot each one reads as.

This is the core's half of metrics: operators (windows, ``map_async``, the failure
strategies) count here without knowing whether a :class:`rxflow.Flow` runs them. A flow's
view of all its stages, and the Prometheus export, are in :mod:`rxflow.flow.metrics`.
Counters are plain attributes on the event-loop thread, so updating one costs an
attribute increment.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable

import attrs

__all__ = [
    "LATENCY_BUCKETS",
    "LatencyHistogram",
    "LatencySnapshot",
    "StageMetrics",
    "StageSnapshot",
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


def stage_name(function: object, fallback: str) -> str:
    """The name a stage gets by default: its function's ``__name__``, or ``fallback`` for
    a function without a usable one (a lambda's ``<lambda>``, a ``functools.partial``).

    Example:
        >>> from rxflow.flow.metrics import stage_name
        >>> def save(item): ...
        >>> stage_name(save, "sink1"), stage_name(lambda item: item, "sink1")
        ('save', 'sink1')
    """
    name = getattr(function, "__name__", None)
    return name if isinstance(name, str) and name.isidentifier() else fallback
