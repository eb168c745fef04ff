"""Every example in rxflow's docstrings runs, and prints what it says it prints."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import rxflow

SUBMODULES = sorted(
    module.name
    for module in pkgutil.walk_packages(rxflow.__path__, prefix="rxflow.")
    if module.name != "rxflow.__main__"
)
MODULES = ["rxflow", *SUBMODULES]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    failures, _ = doctest.testmod(module, optionflags=doctest.ELLIPSIS, report=True)
    assert failures == 0, f"{failures} docstring example(s) of {name} failed (see above)"
