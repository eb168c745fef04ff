"""The benchmark tooling (``python -m benchmarks``): repeated runs folded into medians with
their spread, the run history ``--save`` appends, ``--profile``, and the chain's limits.

The cases here are fakes or tiny sizes: figures are never asserted, only what the tooling
does with them.
"""

from __future__ import annotations

import doctest
import importlib.util
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

import benchmarks.__main__ as cli
from benchmarks import _profile, _runs, chart, core

ROOT = Path(__file__).resolve().parent.parent

needs_matplotlib = pytest.mark.skipif(
    importlib.util.find_spec("matplotlib") is None,
    reason="matplotlib is in the bench extra: pip install -e '.[bench]'",
)


def test_the_fold_doctest_holds() -> None:
    assert doctest.testmod(_runs).failed == 0


def test_fold_takes_medians_and_spreads_per_row_identity() -> None:
    def rows(rate: int, ratio: float, p50: float) -> list[dict[str, Any]]:
        return [
            {"name": "c", "backend": "asyncio", "items": 10, "rxflow_per_s": rate,
             "baseline": "b", "baseline_per_s": 100, "ratio": ratio, "ok": True},
            {"name": "c", "backend": "trio", "items": 10, "rxflow_p50_us": p50,
             "baseline": "b", "ratio_p50": ratio * 2},
        ]  # fmt: skip

    folded = _runs.fold([rows(30, 0.3, 9.0), rows(10, 0.1, 1.0), rows(20, 0.2, 5.0)])

    assert [(r["name"], r["backend"]) for r in folded] == [("c", "asyncio"), ("c", "trio")]
    first, second = folded
    assert first["rxflow_per_s"] == 20
    assert isinstance(first["rxflow_per_s"], int)
    assert (first["rxflow_per_s_min"], first["rxflow_per_s_max"]) == (10, 30)
    assert (first["ratio"], first["ratio_min"], first["ratio_max"]) == (0.2, 0.1, 0.3)
    assert (first["baseline_per_s_min"], first["baseline_per_s_max"]) == (100, 100)
    assert first["items"] == 10
    assert first["ok"] is True
    assert first["repeats"] == 3
    # Figures that are not rates or ratios get their median only.
    assert second["rxflow_p50_us"] == 5.0
    assert "rxflow_p50_us_min" not in second
    assert (second["ratio_p50"], second["ratio_p50_min"], second["ratio_p50_max"]) == (
        0.4,
        0.2,
        0.6,
    )


def test_fold_pairs_rows_of_one_identity_by_their_order_and_counts_missing_runs() -> None:
    run_1 = [{"name": "c", "ratio": 1.0}, {"name": "c", "ratio": 10.0}]
    run_2 = [{"name": "c", "ratio": 3.0}, {"name": "c", "ratio": 30.0}, {"name": "d", "ratio": 5}]

    folded = _runs.fold([run_1, run_2])

    assert [(r["name"], r["ratio"], r["repeats"]) for r in folded] == [
        ("c", 2.0, 2),
        ("c", 20.0, 2),
        ("d", 5, 1),
    ]


# -- the command line, with a fake case ------------------------------------------------------


@pytest.fixture
def fake_case(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """A case named ``fake`` whose n-th run reports rxflow at 10 * n items/s; the list
    records the ``quick`` flag of each run."""
    calls: list[bool] = []

    def fake(quick: bool) -> Iterator[dict[str, Any]]:
        calls.append(quick)
        rate = 10.0 * len(calls)
        yield {"name": "fake_case", "backend": "asyncio", "items": 5, "rxflow_per_s": rate,
               "baseline": "floor", "baseline_per_s": 100.0, "ratio": rate / 100}  # fmt: skip

    monkeypatch.setitem(cli.CASES, "fake", fake)
    return calls


def printed_rows(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def test_repeat_runs_the_case_n_times_and_prints_the_folded_row(
    fake_case: list[bool], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cli.main(["--quick", "--only", "fake", "--repeat", "3"], results=tmp_path)

    assert fake_case == [True, True, True]
    [printed] = printed_rows(capsys.readouterr().out)
    assert printed["repeats"] == 3
    assert (printed["rxflow_per_s"], printed["rxflow_per_s_min"], printed["rxflow_per_s_max"]) == (
        20.0,
        10.0,
        30.0,
    )
    assert (printed["ratio"], printed["ratio_min"], printed["ratio_max"]) == (0.2, 0.1, 0.3)
    assert not (tmp_path / "history.jsonl").exists()  # only --save writes


def test_repeat_defaults_to_one_quick_and_three_full(fake_case: list[bool]) -> None:
    assert cli.parse(["--quick"]).repeat == 1
    assert cli.parse([]).repeat == 3
    with pytest.raises(SystemExit):
        cli.parse(["--repeat", "0"])
    with pytest.raises(SystemExit):
        cli.parse(["--profile", "fake", "--save"])


def test_save_appends_each_run_with_its_commit_to_the_history(
    fake_case: list[bool], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cli.main(["--quick", "--only", "fake", "--save"], results=tmp_path)
    cli.main(["--quick", "--only", "fake", "--repeat", "2", "--save"], results=tmp_path)

    history = _runs.read_history(tmp_path / "history.jsonl")
    assert len(history) == 2
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    for record, repeat in zip(history, (1, 2), strict=True):
        assert record["commit"] == head
        assert isinstance(record["dirty"], bool)
        assert record["quick"] is True
        assert record["repeat"] == repeat
        assert record["machine"]["cores"]
        assert record["machine"]["python"]
        assert record["date"].endswith("+00:00")
    assert [r["rxflow_per_s"] for r in history[0]["rows"]] == [10.0]
    assert [r["rxflow_per_s"] for r in history[1]["rows"]] == [25.0]  # runs 2 and 3
    # latest.jsonl holds the last run only.
    latest = (tmp_path / "latest.jsonl").read_text().splitlines()
    assert [json.loads(line)["repeats"] for line in latest] == [2]


def test_append_history_creates_the_file_and_keeps_earlier_runs(tmp_path: Path) -> None:
    path = tmp_path / "results" / "history.jsonl"
    first = _runs.run_record([{"name": "a"}], checkout=ROOT, quick=False, repeat=3)
    _runs.append_history(path, first)
    _runs.append_history(path, {**first, "rows": [{"name": "b"}]})

    assert [run["rows"][0]["name"] for run in _runs.read_history(path)] == ["a", "b"]
    assert _runs.read_history(tmp_path / "absent.jsonl") == []


def test_outside_a_checkout_the_commit_is_unknown(tmp_path: Path) -> None:
    assert _runs.commit_of(tmp_path) == {"commit": None, "dirty": None}


@needs_matplotlib
def test_the_history_chart_draws_runs_of_one_size(tmp_path: Path) -> None:
    def run(commit: str, ratio: float, quick: bool) -> dict[str, Any]:
        rows = [{"name": "c", "backend": "asyncio", "baseline": "b", "ratio": ratio}]
        return {"commit": commit, "dirty": False, "quick": quick, "rows": rows}

    runs = [run("aaa", 0.5, False), run("bbb", 0.4, False), run("ccc", 9.0, True)]

    assert chart.draw_history(runs, tmp_path / "history.png")
    assert (tmp_path / "history.png").stat().st_size > 0
    assert not chart.draw_history(runs[:2], tmp_path / "quick.png", quick=True)


# -- profiles ----------------------------------------------------------------------------------


def pipe_case(quick: bool) -> Iterator[dict[str, Any]]:
    """A tiny case: rxflow's pipe on both backends."""
    for backend in ("asyncio", "trio"):
        total = anyio.run(core.through_rxflow, 5_000, backend=backend)
        yield {"name": "pipe", "backend": backend, "total": total, "quick": quick}


@pytest.mark.parametrize(
    "profiler",
    [
        pytest.param(
            "pyinstrument",
            marks=pytest.mark.skipif(
                importlib.util.find_spec("pyinstrument") is None,
                reason="pyinstrument is in the bench extra: pip install -e '.[bench]'",
            ),
        ),
        "cprofile",
    ],
)
def test_profile_runs_the_case_once_and_writes_a_readable_profile(
    profiler: _profile.Profiler, tmp_path: Path
) -> None:
    rows: list[dict[str, Any]] = []

    text, path = _profile.profile(
        "pipe", pipe_case, quick=True, out_dir=tmp_path / "profiles", profiler=profiler,
        on_row=rows.append,
    )  # fmt: skip

    assert [(r["backend"], r["total"]) for r in rows] == [
        ("asyncio", 5_000 * 4_999),
        ("trio", 5_000 * 4_999),
    ]
    assert (
        path
        == tmp_path / "profiles" / f"pipe-quick.{'html' if profiler != 'cprofile' else 'pstats'}"
    )
    assert path.stat().st_size > 0
    assert "through_rxflow" in text  # the case's own frames are in the listing


def test_the_profile_flag_prints_the_rows_and_the_profile(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(cli.CASES, "pipe", pipe_case)

    cli.main(["--quick", "--profile", "pipe"], results=tmp_path)

    captured = capsys.readouterr()
    assert [row["backend"] for row in printed_rows(captured.out)] == ["asyncio", "trio"]
    assert "through_rxflow" in captured.out
    [written] = (tmp_path / "profiles").iterdir()
    assert written.name.startswith("pipe-quick.")
    assert str(written) in captured.err


# -- the chain's limits ------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("count", [0, 1, 255, 256, 1_000])
async def test_the_chain_limits_compute_what_reactivex_computes(count: int) -> None:
    expected = core.chain_reactivex(count) if count else 0
    assert await core.chain_fused(count) == expected
    assert await core.chain_fused_runs(count) == expected
    assert await core.chain_generators(count) == expected
    if count:
        assert await core.chain_rxflow(count) == expected
