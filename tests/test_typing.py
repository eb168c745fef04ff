"""rxflow's public API type-checks in a user's program under ``mypy --strict``.

tests/typing/user_program.py uses the API as a user would (open_pipe with operators,
windows with ``late_items``, map_async on async and plain functions, a Flow, connectors,
marbles) and states with ``assert_type`` what a type checker must infer. It is checked
here, and run, so that what it claims is also what happens.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

PROGRAM = Path(__file__).parent / "typing" / "user_program.py"
ROOT = Path(__file__).parent.parent


def test_a_typed_user_program_passes_mypy_strict() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", str(PROGRAM.relative_to(ROOT))],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_would_tell_if_a_name_were_any(tmp_path: Path) -> None:
    # The check above is only worth something if mypy fails on the program when the API
    # loses its types: here the connectors' names are made Any, as they were behind the
    # lazy __getattr__, and the program's `type: ignore` on a wrong call becomes unused.
    degraded = PROGRAM.read_text().replace(
        "from rxflow.connectors import (",
        "from typing import Any as tcp_source  # noqa\nfrom rxflow.connectors import (",
    )
    degraded = degraded.replace("    tcp_source,\n", "", 1)
    copy = tmp_path / "degraded_program.py"
    copy.write_text(degraded)
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", str(copy)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1, result.stdout
    assert 'Unused "type: ignore" comment' in result.stdout


def _load_program() -> ModuleType:
    spec = importlib.util.spec_from_file_location("rxflow_user_program", PROGRAM)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.anyio
async def test_the_typed_program_runs(tmp_path: Path) -> None:
    program = _load_program()
    await program.main(str(tmp_path / "records.jsonl"))
