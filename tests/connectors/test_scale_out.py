"""Scale-out through a JetStream durable consumer: worker processes share the orders, one is
killed with SIGKILL midway, and every order is still processed (examples/scale_out_jetstream.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.connectors.conftest import require_service
from tests.connectors.support import load_example


@pytest.mark.anyio
async def test_a_killed_worker_loses_no_order(anyio_backend: str, tmp_path: Path) -> None:
    host, port = require_service("nats")
    example = load_example("scale_out_jetstream")
    backends = ("asyncio", "trio")  # worker n runs backends[n % 2]
    victim = backends.index(anyio_backend)  # the killed worker runs this test's backend
    report = await example.scale_out(
        workers=3,
        orders=2000,
        kill=victim,
        backends=backends,
        url=f"nats://{host}:{port}",
        log_dir=tmp_path,
    )
    print(
        f"\n{anyio_backend} victim: {report.processed}/{report.orders} processed in "
        f"{report.seconds:.1f} s, per worker {list(report.per_worker)}, killed worker in flight "
        f"{len(report.killed_in_flight)} (processed, not acked: "
        f"{len(report.killed_done_not_acked)}), duplicates {report.duplicates}"
    )
    assert report.processed == report.orders  # every order, at least once
    assert report.per_worker[victim] > 0  # it was killed midway, not before it started
    # An order is processed twice only when the killed worker wrote its result and had not
    # acknowledged it yet: JetStream re-sent it after ack_wait to a surviving worker.
    assert report.duplicate_ids <= report.killed_done_not_acked
    assert report.killed_done_not_acked <= report.killed_in_flight
    assert report.duplicates == len(report.duplicate_ids)  # twice at most, never more
