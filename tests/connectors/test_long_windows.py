"""Long windows over a bounded in-flight source (issue 14): examples/long_windows_jetstream.py
scaled for CI.

30,000 events at 1,000 a second of synthetic event time (30 s), published at once to a
JetStream stream, then read through a durable consumer with ``max_ack_pending=1000`` into
10-second event-time tumbling windows by key: the open windows hold 10,000 events, ten times
what JetStream lets the flow keep unacknowledged. With checkpoints (SQLiteStore) the flow
acknowledges what a stored checkpoint covers, so it never stalls at the limit: every event is
in exactly one window, every window is exactly the events of its key and span, and the flow
ends well within its time bound. Without checkpoints the same flow must hold every event of
a window unacknowledged until the window is written, which the limit forbids: it fails with
InFlightLimitError.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from types import ModuleType

import anyio
import pytest

from rxflow.errors import InFlightLimitError
from tests.connectors.conftest import require_service
from tests.connectors.support import load_example

pytestmark = pytest.mark.anyio

RATE = 1000.0  # events a second of event time
SECONDS = 30.0
WINDOW = 10.0
KEYS = 4
LIMIT = 1000  # max_ack_pending
TIME_BOUND = 40.0  # seconds the checkpointed run may take, publishing included


def scenario(example: ModuleType, *, checkpoints: bool) -> object:
    return example.Scenario(
        seconds=SECONDS,
        rate=RATE,
        window=WINDOW,
        keys=KEYS,
        max_ack_pending=LIMIT,
        checkpoints=checkpoints,
        real_time=False,
        idle_timeout=2.0,  # the source is busy until it is drained; then the last windows close
        patience=TIME_BOUND,
    )


def expected_windows() -> dict[tuple[str, float], list[int]]:
    """Each window's events, by (key, start), from the events as published."""
    windows: dict[tuple[str, float], list[int]] = defaultdict(list)
    for n in range(round(RATE * SECONDS)):
        start = (n / RATE // WINDOW) * WINDOW
        windows[(f"k{n % KEYS}", start)].append(n)
    return windows


async def test_checkpointed_windows_over_max_ack_pending_are_exact_and_never_stall(
    anyio_backend: str, tmp_path: Path
) -> None:
    host, port = require_service("nats")
    example = load_example("long_windows_jetstream")

    with anyio.fail_after(TIME_BOUND):
        report = await example.long_windows(
            scenario(example, checkpoints=True), url=f"nats://{host}:{port}", state_dir=tmp_path
        )

    print(
        f"\n{anyio_backend}: {report.in_windows}/{report.published} events in "
        f"{len(report.windows)} windows in {report.seconds:.1f} s; max unacked: flow "
        f"{report.max_unacked_flow}, JetStream {report.max_unacked_broker}; longest time "
        f"unacked with no ack {report.longest_ack_gap:.2f} s; {report.checkpoints} "
        f"checkpoints (longest commit {report.longest_commit * 1000:.0f} ms, "
        f"{report.committed_bytes / 1e6:.1f} MB)"
    )
    assert report.published == 30_000
    assert report.lost == 0
    assert report.duplicated == 0
    assert report.late == 0
    written = {(w.key, w.start): sorted(w.numbers) for w in report.windows}
    assert len(written) == len(report.windows)  # no window written twice
    assert written == expected_windows()  # 12 windows of 2,500 events each, exactly
    assert all(w.end - w.start == WINDOW for w in report.windows)
    # A window holds 2,500 events, the open ones 10,000: ten times the limit. They were
    # acknowledged long before their windows closed, by checkpoints.
    assert max(len(w.numbers) for w in report.windows) > LIMIT
    assert report.acknowledged == report.published
    assert report.checkpoints >= report.published // LIMIT
    # Never held at the limit for long: acks came at least every few seconds while any
    # message waited for one, and the flow never had more unacknowledged than allowed.
    assert report.max_unacked_flow <= LIMIT
    assert report.max_unacked_broker <= LIMIT
    assert report.longest_ack_gap < 5.0


async def test_without_checkpoints_the_same_flow_fails_at_the_in_flight_limit(
    anyio_backend: str, tmp_path: Path
) -> None:
    host, port = require_service("nats")
    example = load_example("long_windows_jetstream")

    with anyio.fail_after(TIME_BOUND), pytest.raises(InFlightLimitError) as raised:
        await example.long_windows(
            scenario(example, checkpoints=False), url=f"nats://{host}:{port}", state_dir=tmp_path
        )

    assert "1000 unacknowledged messages" in str(raised.value)
    assert "max_ack_pending=1000" in str(raised.value)
