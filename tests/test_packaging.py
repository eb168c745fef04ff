"""Packaging: the lower bounds in pyproject.toml are the versions CI proves, and the metadata
users expect (version, license, changelog, URLs) is there.

CI's second run installs ``constraints/lowest.txt`` and runs the whole suite, so a lower bound
that disagrees with its pin would be a bound nobody tested.
"""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest

# `packaging` parses requirements as pip does (maintained by the PyPA; pytest depends on it).
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

import rxflow

ROOT = Path(__file__).resolve().parent.parent
# Extras that hold tools rather than what rxflow's code imports: the test tools (pytest, mypy,
# ruff, ...) run the newest versions, and the benchmarks' peers are not installed by CI.
TOOL_EXTRAS = frozenset({"test", "bench"})


def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def direct_requirements(project: Mapping[str, Any]) -> Iterable[tuple[str, Requirement]]:
    """Every requirement of the core and of the extras that are not tools, with where it is."""
    for line in project.get("dependencies", []):
        yield "dependencies", Requirement(line)
    for extra, lines in project.get("optional-dependencies", {}).items():
        if extra in TOOL_EXTRAS:
            continue
        for line in lines:
            requirement = Requirement(line)
            if canonicalize_name(requirement.name) != canonicalize_name(project["name"]):
                yield f"optional-dependencies.{extra}", requirement


def parse_pins(text: str) -> dict[str, Version]:
    """``name==version`` lines (comments and blank lines ignored) by canonical name."""
    pins: dict[str, Version] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([^\s;]+)", line)
        if match is None:
            raise ValueError(f"line {number}: {raw!r} is not name==version")
        name = canonicalize_name(match[1])
        if name in pins:
            raise ValueError(f"line {number}: {match[1]} is pinned twice")
        pins[name] = Version(match[2])
    return pins


def lower_bound(requirement: Requirement) -> Version | None:
    bounds = [Version(s.version) for s in requirement.specifier if s.operator in (">=", "==")]
    return max(bounds) if bounds else None


def bound_problems(project: Mapping[str, Any], pins: Mapping[str, Version]) -> list[str]:
    """What is wrong between pyproject's requirements and the lowest pins, in words."""
    problems = []
    seen = set()
    for where, requirement in direct_requirements(project):
        name = canonicalize_name(requirement.name)
        seen.add(name)
        bound = lower_bound(requirement)
        if bound is None:
            problems.append(f"{where}: {requirement} has no lower bound; add >=<lowest that works>")
        elif name not in pins:
            problems.append(f"{where}: {requirement.name} is not pinned in constraints/lowest.txt")
        elif pins[name] != bound:
            problems.append(
                f"{where}: {requirement.name}'s lower bound is {bound}, but constraints/lowest.txt"
                f" pins {pins[name]}; make them equal (the pin is what CI tests)"
            )
    problems += [
        f"constraints/lowest.txt pins {name}, which is no direct dependency"
        for name in sorted(pins.keys() - seen)
    ]
    return problems


def test_every_lower_bound_is_the_version_ci_tests() -> None:
    pins = parse_pins((ROOT / "constraints" / "lowest.txt").read_text())
    assert bound_problems(pyproject()["project"], pins) == []


def test_the_check_catches_a_missing_bound_a_disagreeing_pin_and_a_stray_pin() -> None:
    project = {
        "name": "demo",
        "dependencies": ["anyio>=4.16", "attrs"],
        "optional-dependencies": {
            "http": ["httpx>=0.25.1"],
            "all": ["demo[http]"],  # a self-reference is no dependency
            "test": ["pytest>=8"],  # a tool: free
        },
    }
    pins = parse_pins("anyio==4.16.0  # same version, spelled longer\nhttpx==0.27\nredis==5.0.8\n")
    assert bound_problems(project, pins) == [
        "dependencies: attrs has no lower bound; add >=<lowest that works>",
        "optional-dependencies.http: httpx's lower bound is 0.25.1, but constraints/lowest.txt"
        " pins 0.27; make them equal (the pin is what CI tests)",
        "constraints/lowest.txt pins redis, which is no direct dependency",
    ]
    assert bound_problems(project, {**pins, "attrs": Version("1")}) != []


def test_a_malformed_pin_line_says_which_line() -> None:
    with pytest.raises(ValueError, match=r"line 2: 'anyio>=4' is not name==version"):
        parse_pins("attrs==23.2.0\nanyio>=4\n")
    with pytest.raises(ValueError, match="line 2: AnyIO is pinned twice"):
        parse_pins("anyio==4.16.0\nAnyIO==4.17.0\n")


def test_ci_runs_the_readme_command_first_and_the_suite_again_on_the_lowest_versions() -> None:
    readme = (ROOT / "README.md").read_text()
    command = re.search(r"```sh\n(python3 -m venv .venv && .*python -m pytest)\n```", readme)
    assert command is not None, "the README's test command is gone"
    steps = [
        line
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    runs = [i for i, line in enumerate(steps) if "-m pytest" in line]
    assert len(runs) >= 2, steps
    assert steps[runs[0]] == command[1]  # verbatim
    assert "pip install -e '.[test]' -c constraints/lowest.txt" in "\n".join(steps[runs[0] :])


def test_version_is_the_installed_distributions() -> None:
    version = pyproject()["project"]["version"]
    assert rxflow.__version__ == version == importlib.metadata.version("rxflow")
    assert "__version__" in rxflow.__all__


def test_license_changelog_and_urls_are_there() -> None:
    project = pyproject()["project"]
    assert project["license"] == "MIT"
    license_text = (ROOT / "LICENSE").read_text()
    assert license_text.startswith("MIT License")
    assert "rxflow contributors" in license_text
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert "## [Unreleased]" in changelog
    base = "https://github.com/rxflow/rxflow"
    urls = project["urls"]
    assert set(urls) >= {"Homepage", "Documentation", "Changelog", "Issues"}
    assert urls["Homepage"] == base
    assert urls["Issues"] == f"{base}/issues"
    assert urls["Changelog"] == f"{base}/blob/main/CHANGELOG.md"
