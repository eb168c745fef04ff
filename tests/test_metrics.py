"""Metrics: a dozen latency buckets, short reprs, one meaning per Prometheus counter, stage
names, and the flow's ``log_every`` check."""

from __future__ import annotations

import functools
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from reactivex import operators as ops

from rxflow import Flow, Skip, map_async
from rxflow.flow.metrics import (
    LATENCY_BUCKETS,
    FlowSnapshot,
    LatencyHistogram,
    StageMetrics,
    export_prometheus,
)


async def double(item: int) -> int:
    return item * 2


def discard(item: object) -> None:
    pass


async def toy_snapshot() -> FlowSnapshot:
    """A four-stage flow: a source, the pipe, a map_async, a sink."""
    flow = Flow("toy").source(range(10)).pipe(map_async(double)).sink(discard)
    return await flow.run()


def exported(snapshot: FlowSnapshot) -> str:
    registry = CollectorRegistry()
    export_prometheus(lambda: snapshot, registry)
    return generate_latest(registry).decode()


@pytest.mark.anyio
async def test_a_stage_exports_about_a_dozen_latency_buckets() -> None:
    snapshot = await toy_snapshot()
    assert len(snapshot.stages) == 4
    bucket_lines = [
        line
        for line in exported(snapshot).splitlines()
        if line.startswith("rxflow_stage_latency_seconds_bucket")
    ]
    assert len(bucket_lines) == 4 * (len(LATENCY_BUCKETS) + 1)  # +Inf
    assert 10 <= len(LATENCY_BUCKETS) <= 14
    assert tuple(sorted(LATENCY_BUCKETS)) == LATENCY_BUCKETS
    assert LATENCY_BUCKETS[0] <= 0.0001
    assert LATENCY_BUCKETS[-1] >= 10


@pytest.mark.anyio
async def test_a_snapshot_repr_is_short() -> None:
    snapshot = await toy_snapshot()
    text = repr(snapshot)
    assert text == "<FlowSnapshot toy: source1 10 | pipe 10 | double 10 | discard 10>"
    stage = repr(snapshot["discard"])
    assert stage.startswith("StageSnapshot('discard', 'sink', received=10, emitted=10, latency=")
    assert "dropped" not in stage
    assert "buckets" not in stage
    assert len(stage) < 200


def test_quantiles_are_interpolated_within_a_bucket_and_capped_by_the_max() -> None:
    histogram = LatencyHistogram()
    for _ in range(90):
        histogram.observe(0.002)
    for _ in range(10):
        histogram.observe(2.0)
    snapshot = histogram.snapshot()
    # 90 items in (1 ms, 3 ms]: the median is 50/90 of the way through that bucket.
    assert snapshot.p50 == pytest.approx(0.001 + 0.002 * 50 / 90)
    # The 99th is in (1 s, 3 s], interpolated to 2.8 s, but nothing took more than 2 s.
    assert snapshot.p99 == 2.0
    assert snapshot.max == 2.0
    assert snapshot.mean == pytest.approx((90 * 0.002 + 10 * 2.0) / 100)
    assert LatencyHistogram().snapshot().p50 == 0.0


def test_a_latency_beyond_the_last_bucket_is_read_as_the_max() -> None:
    histogram = LatencyHistogram()
    histogram.observe(60.0)
    snapshot = histogram.snapshot()
    assert (snapshot.p50, snapshot.p99) == (60.0, 60.0)
    assert snapshot.buckets[-1] == (float("inf"), 1)
    assert snapshot.buckets[-2] == (LATENCY_BUCKETS[-1], 0)


def test_each_prometheus_counter_counts_one_thing() -> None:
    stage = StageMetrics("parse", "map_async")
    stage.received, stage.emitted = 10, 6
    stage.errors, stage.retries = 5, 2
    stage.dropped, stage.skipped, stage.dead_lettered = 1, 2, 1
    families = {
        family.name: family
        for family in text_string_to_metric_families(
            exported(FlowSnapshot("demo", (stage.snapshot(),)))
        )
    }
    values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in families.values()
        for sample in family.samples
    }
    labels = (("flow", "demo"), ("kind", "map_async"), ("stage", "parse"))

    def value(name: str, **extra: str) -> float:
        return values[(name, tuple(sorted((*labels, *extra.items()))))]

    assert value("rxflow_stage_items_received_total") == 10
    assert value("rxflow_stage_items_emitted_total") == 6
    assert value("rxflow_stage_errors_total") == 5
    assert value("rxflow_stage_retries_total") == 2
    assert value("rxflow_stage_items_discarded_total", reason="dropped") == 1
    assert value("rxflow_stage_items_discarded_total", reason="skipped") == 2
    assert value("rxflow_stage_items_discarded_total", reason="dead_lettered") == 1
    # No counter mixes what came in, what went out and what failed under one label.
    assert all("outcome" not in sample for sample, _ in values)
    for family in families.values():
        if family.type == "counter":
            assert {sample.labels.get("reason") for sample in family.samples} <= {
                None,
                "dropped",
                "skipped",
                "dead_lettered",
            }


@pytest.mark.anyio
async def test_stages_are_named_after_their_functions_and_lambdas_get_numbered_names() -> None:
    def save(item: object) -> None:
        pass

    class Writer:
        def write(self, item: object) -> None:
            pass

    flow = (
        Flow("names")
        .source(range(3))
        .pipe(map_async(lambda item: item), ops.map(lambda item: item))
        .sink(lambda item: None)
        .sink(save)
        .sink(functools.partial(discard))
        .sink(Writer().write)
        .sink(lambda item: None)
    )
    snapshot = await flow.run()
    assert snapshot.names() == [
        "source1",
        "pipe",
        "map_async",
        "sink1",
        "save",
        "sink3",
        "write",
        "sink5",
    ]
    assert map_async(double).metrics.name == "double"


@pytest.mark.parametrize("log_every", [0, -1, 0.0, float("nan"), float("inf")])
def test_log_every_must_be_more_than_zero(log_every: float) -> None:
    with pytest.raises(ValueError, match=r"Flow\(\): log_every must be more than 0 seconds.*None"):
        Flow("bad", log_every=log_every)


@pytest.mark.parametrize("log_every", ["10", True])
def test_log_every_must_be_seconds(log_every: Any) -> None:
    with pytest.raises(TypeError, match=r"Flow\(\): log_every must be seconds"):
        Flow("bad", log_every=log_every)


@pytest.mark.anyio
async def test_log_every_none_logs_no_progress(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="rxflow")
    await Flow("quiet", log_every=None).source(range(3)).sink(discard).run()
    assert [record.getMessage().split(":")[0] for record in caplog.records] == [
        "flow quiet started",
        "flow quiet ended",
    ]


@pytest.mark.anyio
async def test_log_messages_do_not_repeat_the_logger_name(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def fails_once(item: int) -> None:
        if item == 1:
            raise ValueError("bad item")

    caplog.set_level("DEBUG", logger="rxflow")
    await Flow("named").source(range(3)).sink(fails_once, on_error=Skip()).run()
    messages = [record.getMessage() for record in caplog.records if record.name == "rxflow"]
    assert any("skipped 1" in message for message in messages)
    assert not [message for message in messages if message.startswith("rxflow")]
