"""Event-time windows against a small reference model, for random orders and lateness.

The reference assigns events to windows in one batch, in arrival order, with the same
lateness rule stated plainly: an event misses a window whose end the watermark (largest
timestamp seen before it, minus the allowance) has already reached.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import reactivex
from hypothesis import given, settings
from hypothesis import strategies as st

from rxflow import Window, session, sliding, tumbling

Event = tuple[str, int, int]  # key, timestamp, serial number (to tell equal events apart)

events_strategy = st.lists(st.tuples(st.sampled_from("abc"), st.integers(0, 60)), max_size=40).map(
    lambda pairs: [(key, t, n) for n, (key, t) in enumerate(pairs)]
)


def timestamp(event: Event) -> int:
    return event[1]


def key(event: Event) -> str:
    return event[0]


def run(events: list[Event], operator: Any) -> list[Window]:
    windows: list[Window] = []
    reactivex.from_iterable(events).pipe(operator).subscribe(windows.append)
    return windows


def reference_aligned(
    events: list[Event], span: int, every: int, allowance: int
) -> tuple[dict[tuple[str, float], list[Event]], int]:
    contents: dict[tuple[str, float], list[Event]] = defaultdict(list)
    missed = 0
    watermark = -math.inf
    for event in events:
        t = timestamp(event)
        for start in range(t - t % every - span + every, t + 1, every):
            if start <= t < start + span:
                if start + span <= watermark:
                    missed += 1
                else:
                    contents[(key(event), float(start))].append(event)
        watermark = max(watermark, t - allowance)
    return contents, missed


def as_contents(windows: list[Window]) -> dict[tuple[str, float], list[Event]]:
    result: dict[tuple[str, float], list[Event]] = {}
    for window in windows:
        assert (window.key, window.start) not in result, "a window was emitted twice"
        result[(window.key, window.start)] = list(window.items)
    return result


@settings(max_examples=300, deadline=None)
@given(
    events=events_strategy,
    spans=st.sampled_from([(10, 10), (10, 5), (6, 2), (7, 7)]),
    allowance=st.integers(0, 30),
)
def test_aligned_windows_match_the_reference(
    events: list[Event], spans: tuple[int, int], allowance: int
) -> None:
    span, every = spans
    operator = sliding(span, every, key=key, timestamp=timestamp, out_of_orderness=allowance)
    windows = run(events, operator)
    expected, missed = reference_aligned(events, span, every, allowance)
    assert as_contents(windows) == expected
    assert operator.late_dropped == missed  # type: ignore[attr-defined]
    # Nothing lost: every placement is in a window or counted as dropped.
    placements = sum(span // every for _ in events)
    assert sum(len(w) for w in windows) + missed == placements


@settings(max_examples=200, deadline=None)
@given(events=events_strategy, allowance=st.integers(0, 30))
def test_updates_within_the_lateness_end_with_every_event_in_its_window(
    events: list[Event], allowance: int
) -> None:
    operator = tumbling(
        10, key=key, timestamp=timestamp, out_of_orderness=allowance, late="update",
        allowed_lateness=1000,
    )  # fmt: skip
    windows = run(events, operator)
    latest: dict[tuple[str, float], list[Event]] = {}
    for window in windows:
        latest[(window.key, window.start)] = sorted(window.items)
    batch: dict[tuple[str, float], list[Event]] = defaultdict(list)
    for event in events:
        batch[(key(event), float(timestamp(event) // 10 * 10))].append(event)
    assert latest == {k: sorted(v) for k, v in batch.items()}
    assert operator.late_dropped == 0  # type: ignore[attr-defined]


def reference_sessions(
    events: list[Event], gap: int
) -> set[tuple[str, int, int, tuple[Event, ...]]]:
    sessions = set()
    by_key: dict[str, list[Event]] = defaultdict(list)
    for event in events:
        by_key[key(event)].append(event)
    for k, group in by_key.items():
        group.sort(key=timestamp)
        current = [group[0]]
        for event in group[1:]:
            if timestamp(event) < timestamp(current[-1]) + gap:
                current.append(event)
            else:
                sessions.add(
                    (k, timestamp(current[0]), timestamp(current[-1]) + gap, tuple(sorted(current)))
                )
                current = [event]
        sessions.add(
            (k, timestamp(current[0]), timestamp(current[-1]) + gap, tuple(sorted(current)))
        )
    return sessions


@settings(max_examples=300, deadline=None)
@given(events=events_strategy, gap=st.integers(1, 15))
def test_sessions_in_any_order_match_batch_sessionization(events: list[Event], gap: int) -> None:
    # With an allowance as large as the whole time range nothing is late, so arrival order
    # must not matter: merging has to put together what batch sessionization does.
    windows = run(events, session(key, gap, timestamp=timestamp, out_of_orderness=100))
    actual = {(w.key, int(w.start), int(w.end), tuple(sorted(w.items))) for w in windows}
    assert len(actual) == len(windows)
    assert actual == reference_sessions(events, gap)
