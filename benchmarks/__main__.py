"""Run the benchmarks: ``python -m benchmarks [--quick] [--only CASE ...] [--repeat N]
[--save]``, or profile one case: ``python -m benchmarks [--quick] --profile CASE``.

Prints one JSON object per line, as each case finishes, with at least ``name``,
``backend``, ``items``, ``rxflow_per_s``, ``baseline``, ``baseline_per_s`` and ``ratio``
(rxflow / baseline); memory cases add ``peak_rss_mb``. ``--quick`` runs each case in
seconds; without it, the full sizes run (millions of items). Full runs run each case 3
times (``--repeat``) and report the median of each figure, with ``<figure>_min`` and
``<figure>_max`` for rates and ratios, and ``repeats``. ``--save`` writes
results/latest.jsonl and latest.png and adds the run, with its commit, to
results/history.jsonl and history.png (each case's ratios over the saved runs).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from benchmarks import (
    _profile,
    _runs,
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
ROOT = Path(__file__).resolve().parent.parent

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


# The cases drawn in latest.png: rxflow against the tools a user would pick instead.
CHART_CASES = frozenset({"chain", *peers.CASES})

# Cases that run once whatever --repeat says: their figures are memory and the in-flight
# bound, which a rerun does not sharpen, and a full run of them takes many minutes
# (reactivex's observe_on alone takes about 12).
RUN_ONCE = frozenset({"memory", "memory_vs_peers"})


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, seconds per case")
    parser.add_argument("--only", nargs="+", choices=sorted(CASES), metavar="CASE",
                        help=f"run these cases, of: {' '.join(sorted(CASES))}")  # fmt: skip
    parser.add_argument(
        "--repeat", type=int, metavar="N",
        help="run each case N times and report medians, with min and max (default: 3, "
        "or 1 with --quick)",
    )  # fmt: skip
    parser.add_argument(
        "--save", action="store_true",
        help="also write results/latest.jsonl and latest.png, and add the run to "
        "results/history.jsonl and history.png",
    )  # fmt: skip
    parser.add_argument(
        "--profile", choices=sorted(CASES), metavar="CASE",
        help="run CASE once under pyinstrument (cProfile without it): the profile to "
        "stdout and to results/profiles/",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.profile is not None and (args.only or args.save or args.repeat):
        parser.error(
            "--profile runs one case once, and the profiler slows it down: "
            "leave out --only, --repeat and --save"
        )
    if args.repeat is None:
        args.repeat = 1 if args.quick else 3
    elif args.repeat < 1:
        parser.error(f"--repeat {args.repeat}: give 1 or more runs per case")
    return args


def run_case(name: str, quick: bool, repeat: int) -> list[dict[str, Any]]:
    """The case's rows: one run's, or ``repeat`` runs folded into medians and spreads."""
    times = 1 if name in RUN_ONCE else repeat
    if times == 1:
        return list(CASES[name](quick))
    runs = []
    for number in range(1, times + 1):
        print(f"{name}: run {number} of {times}", file=sys.stderr, flush=True)
        runs.append(list(CASES[name](quick)))
    return _runs.fold(runs)


def save(
    rows: list[dict[str, Any]],
    chart_rows: list[dict[str, Any]],
    record: dict[str, Any],
    results: Path,
) -> None:
    """latest.jsonl and latest.png for this run; the run added to the history and its chart."""
    results.mkdir(parents=True, exist_ok=True)
    (results / "latest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if chart.draw(chart_rows, results / "latest.png"):
        print(f"chart: {results / 'latest.png'}", file=sys.stderr)
    _runs.append_history(results / "history.jsonl", record)
    print(f"history: {results / 'history.jsonl'}", file=sys.stderr)
    history = _runs.read_history(results / "history.jsonl")
    if chart.draw_history(history, results / "history.png", quick=record["quick"]):
        print(f"history chart: {results / 'history.png'}", file=sys.stderr)


def main(argv: list[str] | None = None, results: Path = RESULTS) -> None:
    args = parse(argv)
    if args.profile is not None:
        text, path = _profile.profile(
            args.profile,
            CASES[args.profile],
            quick=args.quick,
            out_dir=results / "profiles",
            on_row=lambda row: print(json.dumps(row), flush=True),
        )
        print(text)
        print(f"profile: {path}", file=sys.stderr)
        return
    commit = _runs.commit_of(ROOT)  # the code that runs, before anything is written
    rows = []
    chart_rows = []  # latest.png compares tools: the rows of the cases against peers
    for name in args.only or CASES:
        for result in run_case(name, args.quick, args.repeat):
            print(json.dumps(result), flush=True)
            rows.append(result)
            if name in CHART_CASES:
                chart_rows.append(result)
    if args.save:
        record = _runs.run_record(
            rows, checkout=ROOT, quick=args.quick, repeat=args.repeat, commit=commit
        )
        save(rows, chart_rows, record, results)


if __name__ == "__main__":
    main()
