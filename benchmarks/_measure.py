"""Timing and memory helpers shared by the benchmark cases."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

BACKENDS = ("asyncio", "trio")


def peak_rss_mb() -> float:
    """This process's peak resident set size so far, in MB (Linux reports KB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def best_rate(items: int, run_once: Callable[[], Any], repeats: int) -> float:
    """Items per second of the fastest of ``repeats`` runs (the least disturbed one)."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        run_once()
        best = min(best, time.perf_counter() - started)
    return items / best


def in_subprocess(module: str, *args: str) -> dict[str, Any]:
    """Run ``python -m module args`` and return the JSON object it prints last.

    Memory cases run one per process, so that each peak RSS is its own.
    """
    done = subprocess.run(
        [sys.executable, "-m", module, *args], capture_output=True, text=True, check=True
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def row(
    name: str,
    backend: str,
    items: int,
    rxflow_per_s: float,
    baseline: str,
    baseline_per_s: float,
    **extra: Any,
) -> dict[str, Any]:
    """One output line: rxflow against its baseline, with ``ratio`` = rxflow / baseline."""
    return {
        "name": name,
        "backend": backend,
        "items": items,
        "rxflow_per_s": round(rxflow_per_s),
        "baseline": baseline,
        "baseline_per_s": round(baseline_per_s),
        "ratio": round(rxflow_per_s / baseline_per_s, 3),
        **extra,
    }


def measured(count: int, run: Callable[[], Any], expected: Any, repeats: int) -> float:
    """Items per second of ``run`` (best of ``repeats``), after a first run, untimed, that
    warms up and checks the output against ``expected``."""
    result = run()
    if result != expected:
        raise AssertionError(f"{run}: output {result!r}, expected {expected!r}")
    return best_rate(count, run, repeats)
