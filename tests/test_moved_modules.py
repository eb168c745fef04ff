"""Modules that moved into rxflow.flow keep working at their old paths for one release,
with a DeprecationWarning that names the new import."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import rxflow.flow.cli
import rxflow.flow.metrics

MOVED = [("rxflow.metrics", rxflow.flow.metrics), ("rxflow.cli", rxflow.flow.cli)]


@pytest.mark.parametrize(("old", "new"), MOVED, ids=[old for old, _ in MOVED])
def test_every_name_of_a_moved_module_is_the_new_one_with_a_warning(old: str, new: object) -> None:
    shim = importlib.import_module(old)
    names = new.__all__  # type: ignore[attr-defined]
    assert shim.__all__ == names
    for name in names:
        with pytest.warns(DeprecationWarning, match=rf"import {name} from {new.__name__}"):  # type: ignore[attr-defined]
            value = getattr(shim, name)
        assert value is getattr(new, name)


def test_a_name_the_old_module_never_had_is_an_attribute_error() -> None:
    shim = importlib.import_module("rxflow.metrics")
    with pytest.raises(AttributeError):
        shim.no_such_name  # noqa: B018


def test_from_import_of_an_old_path_warns_at_the_import_line() -> None:
    with pytest.warns(DeprecationWarning, match="rxflow.flow.metrics") as caught:
        from rxflow.metrics import StageMetrics  # noqa: F401
    assert caught[0].filename == __file__


def test_python_dash_m_rxflow_runs_the_new_cli_without_a_warning() -> None:
    done = subprocess.run(
        [sys.executable, "-W", "error::DeprecationWarning", "-m", "rxflow", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "run" in done.stdout
