"""Every Python block of rxflow/testing/README.md runs as written.

The blocks are tests (they use the plugin's fixtures and markers), so each one is written
into a test module of its own and pytest runs them in a subprocess, with rxflow's plugin
loaded from its entry point as in a user's project. One subprocess for all the blocks
(each costs seconds to start); its JUnit report says how each module fared.
"""

from __future__ import annotations

import re
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import attrs
import pytest

README = Path(__file__).parents[2] / "rxflow" / "testing" / "README.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```$", README.read_text(), flags=re.MULTILINE | re.DOTALL)
NAMES = [f"test_readme_block_{n}" for n in range(1, len(BLOCKS) + 1)]


@attrs.frozen
class Outcome:
    passed: list[str]
    failed: list[str]  # test names with their failure messages
    output: str


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome]:
    directory = tmp_path_factory.mktemp("readme")
    for name, block in zip(NAMES, BLOCKS, strict=True):
        (directory / f"{name}.py").write_text(block)
    report = directory / "report.xml"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "--strict-markers",
            "--continue-on-collection-errors",  # a broken block fails only its own test
            f"--junitxml={report}",
            "-rA",
            str(directory),
        ],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    results = {name: Outcome([], [], run.stdout + run.stderr) for name in NAMES}
    for case in ElementTree.parse(report).getroot().iter("testcase"):
        # classname is the module for a test, empty for a module that failed to import.
        module = (case.get("classname") or case.get("name") or "").split(".")[-1]
        problems = [child for child in case if child.tag in ("failure", "error")]
        if problems:
            results[module].failed.append(f"{case.get('name')}: {problems[0].get('message')}")
        elif not any(child.tag == "skipped" for child in case):
            results[module].passed.append(str(case.get("name")))
    return results


def test_the_readme_has_python_blocks() -> None:
    assert len(BLOCKS) >= 5


@pytest.mark.parametrize(("name", "block"), list(zip(NAMES, BLOCKS, strict=True)), ids=NAMES)
def test_a_readme_block_runs(outcomes: dict[str, Outcome], name: str, block: str) -> None:
    outcome = outcomes[name]
    assert not outcome.failed, f"{outcome.failed}\n{outcome.output}"
    # A block is a test module (its tests pass) or a script (it ran when imported).
    if re.search(r"^(async )?def test_", block, flags=re.MULTILINE):
        assert outcome.passed, f"no test of {name} passed:\n{outcome.output}"
