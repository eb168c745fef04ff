"""Charts (need matplotlib): one run's items per second per tool, and the ratios over runs."""

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


def draw_history(runs: list[dict[str, Any]], path: Path, *, quick: bool = False) -> bool:
    """Each case's ratios over the saved ``runs`` (``history.jsonl``) into ``path``.

    One panel per case, one line per backend and baseline, one point per run that had it,
    labelled with its commit (``*``: tracked files differed from it): a regression shows
    as a line going down. Only runs of one size are drawn (full by default: ``quick``
    sizes measure other things). False without matplotlib or without such runs.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    runs = [run for run in runs if bool(run.get("quick")) == quick]
    # case -> (backend, baseline) -> [(run index, ratio)]
    lines: dict[str, dict[str, list[tuple[int, float]]]] = defaultdict(lambda: defaultdict(list))
    for index, run in enumerate(runs):
        for row in run.get("rows", []):
            # Positive ratios only: the axis is logarithmic, so that a case at 0.2x and one
            # at 8x show the same fall in the same panel.
            if isinstance(row.get("ratio"), int | float) and row["ratio"] > 0:
                label = f"{row.get('backend')} / {row.get('baseline')}"
                lines[row["name"]][label].append((index, row["ratio"]))
    if not lines:
        return False
    labels = [f"{run.get('commit') or '?'}{'*' if run.get('dirty') else ''}" for run in runs]
    columns = 2 if len(lines) > 1 else 1
    rows = -(-len(lines) // columns)
    figure, _ = plt.subplots(rows, columns, figsize=(7 * columns, 2.6 * rows), squeeze=False)
    for axis, (case, of_case) in zip(figure.axes, sorted(lines.items()), strict=False):
        for label, points in sorted(of_case.items()):
            axis.plot([i for i, _ in points], [r for _, r in points], marker="o", label=label)
        axis.set_title(case, fontsize=9)
        axis.set_yscale("log")
        axis.set_ylabel("ratio (rxflow / baseline)", fontsize=7)
        axis.set_xticks(range(len(runs)), labels, rotation=45, fontsize=6)
        axis.tick_params(axis="y", labelsize=7)
        axis.legend(fontsize=6)
    for axis in figure.axes[len(lines) :]:
        axis.set_visible(False)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return True
