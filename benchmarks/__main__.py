"""Run the benchmarks: ``python -m benchmarks [--quick] [--only CASE ...]``.

Prints one JSON object per line, as each case finishes, with at least ``name``,
``backend``, ``items``, ``rxflow_per_s``, ``baseline``, ``baseline_per_s`` and ``ratio``
(rxflow / baseline); memory cases add ``peak_rss_mb``. ``--quick`` runs each case in
seconds; without it, the full sizes run (millions of items).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from benchmarks import (
    chart,
    codecs,
    connectors_http,
    connectors_kafka,
    connectors_mqtt,
    connectors_native,
    connectors_nats,
    connectors_postgres,
    connectors_rabbitmq,
    connectors_redis,
    core,
    peers,
    state_flow,
    state_operators,
    state_stores,
    windows,
)

Case = Callable[[bool], Iterable[dict[str, Any]]]

RESULTS = Path(__file__).parent / "results"

CASES: dict[str, Case] = {
    **core.CASES,
    **windows.CASES,
    # Keyed state: aggregate against a hand-written dict in the same pipe.
    **state_operators.CASES,
    # Keyed state in a checkpointed Flow (SQLite) against a dict in a Flow without one.
    **state_flow.CASES,
    # The embedded state store (SQLite) against RocksDB (rocksdict) and a dict.
    **state_stores.CASES,
    **peers.CASES,
    # The codec layer's JSON and typed records against the libraries called directly.
    **codecs.CASES,
    # Connectors, end to end against the local servers (each against its raw client).
    **connectors_native.CASES,
    **connectors_http.CASES,
    **connectors_nats.CASES,
    **connectors_redis.CASES,
    **connectors_mqtt.CASES,
    **connectors_rabbitmq.CASES,
    **connectors_postgres.CASES,
    **connectors_kafka.CASES,
}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, seconds per case")
    parser.add_argument("--only", nargs="+", choices=sorted(CASES), help="run these cases")
    parser.add_argument(
        "--save", action="store_true",
        help="also write benchmarks/results/latest.jsonl and latest.png (the chart)",
    )  # fmt: skip
    args = parser.parse_args()
    rows = []
    peer_rows = []  # the chart compares tools: the rows of the peer cases
    for name in args.only or CASES:
        for result in CASES[name](args.quick):
            print(json.dumps(result), flush=True)
            rows.append(result)
            if name in peers.CASES:
                peer_rows.append(result)
    if args.save:
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "latest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        if chart.draw(peer_rows, RESULTS / "latest.png"):
            print(f"chart: {RESULTS / 'latest.png'}", file=sys.stderr)


if __name__ == "__main__":
    main()
