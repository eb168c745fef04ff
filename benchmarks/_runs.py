"""Repeated runs of a case folded into one row each, and the run history (``--save``).

A case run ``--repeat N`` times yields its rows N times; :func:`fold` turns them into one
row per (name, backend, baseline): the median of every figure, and for the rates and ratios
their spread (``<field>_min``, ``<field>_max``). A ratio's median is the median of the
per-run ratios, each taken within one run (rxflow and its baseline measured side by side),
not the ratio of the two medians.

:func:`append_history` adds one JSON line per saved run to ``history.jsonl``: the commit,
whether tracked files differed from it, the date, the machine and the rows.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# Fields that name a row rather than measure it: rows of repeated runs with the same
# identity are folded together.
IDENTITY = ("name", "backend", "baseline")


def spread_field(field: str) -> bool:
    """Whether ``field`` is a rate or a ratio, whose min and max the folded row reports."""
    return field.endswith("per_s") or field.startswith("ratio")


def fold(runs: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row per identity over the ``runs`` of one case (each run a list of its rows).

    Numbers (not ``items``, not booleans) become their median; rates and ratios also get
    ``_min`` and ``_max``; ``repeats`` says how many runs had the row. Other fields are
    the first run's. Rows keep the order of their first appearance.

    >>> fold([[{"name": "c", "ratio": 0.5, "rxflow_per_s": 10}],
    ...       [{"name": "c", "ratio": 0.7, "rxflow_per_s": 30}],
    ...       [{"name": "c", "ratio": 0.6, "rxflow_per_s": 20}]])  # doctest: +NORMALIZE_WHITESPACE
    [{'name': 'c', 'ratio': 0.6, 'rxflow_per_s': 20, 'repeats': 3, 'ratio_min': 0.5,
      'ratio_max': 0.7, 'rxflow_per_s_min': 10, 'rxflow_per_s_max': 30}]
    """
    grouped: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for rows in runs:
        seen: dict[tuple[Any, ...], int] = {}
        for row in rows:
            identity = tuple(row.get(field) for field in IDENTITY)
            # A case may yield two rows of one identity (differing in another field): the
            # n-th of them in one run goes with the n-th of them in the others.
            occurrence = seen[identity] = seen.get(identity, -1) + 1
            grouped.setdefault((*identity, occurrence), []).append(row)
    return [fold_rows(rows) for rows in grouped.values()]


def fold_rows(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The rows of one identity over repeated runs, folded (see :func:`fold`)."""
    folded = dict(rows[0])
    spreads: dict[str, Any] = {}
    for field, first in rows[0].items():
        if field == "items" or isinstance(first, bool) or not isinstance(first, int | float):
            continue
        values = [row[field] for row in rows if isinstance(row.get(field), int | float)]
        folded[field] = rounded(statistics.median(values), like=first)
        if spread_field(field):
            spreads[f"{field}_min"] = min(values)
            spreads[f"{field}_max"] = max(values)
    return {**folded, "repeats": len(rows), **spreads}


def rounded(value: float, like: int | float) -> int | float:
    """A median as the figures it came from are written: whole numbers stay whole (the
    median of two is their mean), ratios keep three decimals."""
    return round(value) if isinstance(like, int) else round(value, 3)


# -- history ----------------------------------------------------------------------------------


def git(*args: str, cwd: Path) -> str | None:
    """``git args`` in ``cwd``, its output stripped; None outside a checkout or without git."""
    try:
        done = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, check=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


def commit_of(checkout: Path) -> dict[str, Any]:
    """The checkout's commit (short hash) and whether tracked files differ from it.

    Untracked files do not count: results and profiles are written into the tree.
    """
    commit = git("rev-parse", "--short", "HEAD", cwd=checkout)
    status = git("status", "--porcelain", "--untracked-files=no", cwd=checkout)
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def machine() -> dict[str, Any]:
    """What the figures depend on: CPU, cores, memory, OS, Python."""
    memory_gib = None
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemTotal:"):
                    memory_gib = round(int(line.split()[1]) / 1024**2, 1)
                    break
    except OSError:
        pass  # not Linux: the summary goes without it
    return {
        "cpu": cpu_model() or platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "memory_gib": memory_gib,
        "os": platform.platform(),
        "python": platform.python_version(),
    }


def cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def run_record(
    rows: Iterable[dict[str, Any]],
    *,
    checkout: Path,
    quick: bool,
    repeat: int,
    commit: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One saved run: commit, dirty flag, date (UTC), machine, sizes, repeats and rows.

    ``commit`` is :func:`commit_of` taken when the run started (the code that ran); without
    it, the checkout's state now.
    """
    return {
        **(commit if commit is not None else commit_of(checkout)),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "quick": quick,
        "repeat": repeat,
        "rows": list(rows),
    }


def append_history(path: Path, record: dict[str, Any]) -> None:
    """Add ``record`` as one line at the end of ``path`` (created with its folder)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as history:
        history.write(json.dumps(record) + "\n")


def read_history(path: Path) -> list[dict[str, Any]]:
    """The saved runs in ``path``, oldest first; none if it does not exist."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
