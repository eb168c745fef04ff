"""A bar chart of items per second per tool, drawn from one run's rows (needs matplotlib)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any


def draw(rows: list[dict[str, Any]], path: Path) -> bool:
    """Draw the throughput cases of ``rows`` (asyncio) into ``path``; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    cases: dict[str, dict[str, float]] = defaultdict(dict)
    for row in rows:
        if row.get("backend") not in ("asyncio", "bytewax_runtime") or "rxflow_per_s" not in row:
            continue
        if row["name"].startswith(("slow_consumer", "pipe_map")):
            continue  # memory runs and the core case have their own figures
        cases[row["name"]]["rxflow"] = row["rxflow_per_s"]
        cases[row["name"]][row["baseline"]] = row["baseline_per_s"]
    if not cases:
        return False
    figure, axes = plt.subplots(len(cases), 1, figsize=(8, 2.2 * len(cases)))
    for axis, (case, rates) in zip(
        figure.axes if len(cases) > 1 else [axes], cases.items(), strict=True
    ):
        tools = sorted(rates, key=rates.__getitem__)
        axis.barh(tools, [rates[t] / 1e6 for t in tools],
                  color=["tab:orange" if t == "rxflow" else "tab:gray" for t in tools])  # fmt: skip
        axis.set_title(case, fontsize=9)
        axis.set_xlabel("million items per second (asyncio)", fontsize=8)
        axis.tick_params(labelsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return True
