"""The architecture's rules, checked on the real tree (docs/architecture.md explains them).

* Imports run one way: the core (the pipe, the scheduler, sources, operators, windows)
  never imports the Flow runtime, the connectors or the testing kit; those use the core and
  not each other. Every import counts, also inside functions and under ``TYPE_CHECKING``.
* Every public module (no path part starting with ``_``) has ``__all__``.
* Every exception class rxflow defines is in ``rxflow/errors.py`` and derives from
  ``RxflowError``, and ``rxflow.errors.__all__`` names each one.
* No module is over 500 lines unless it is one idea, named below with the reason.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import textwrap
from pathlib import Path

import pytest

import rxflow
from rxflow.errors import RxflowError

PACKAGE = Path(rxflow.__file__).parent

MAX_LINES = 500

ONE_IDEA_OVER_MAX_LINES: dict[str, str] = {
    # module: why it is one idea although longer than MAX_LINES
}

# What each part of the package may import, besides itself and the standard library and
# third-party packages. The package's face (rxflow/__init__.py, python -m rxflow, and the
# shims of moved modules) gathers the public API from every part.
LAYERS = ("flow", "connectors", "testing", "state")
MAY_IMPORT: dict[str, set[str]] = {
    "core": {"core"},
    "flow": {"core", "flow", "state"},  # a checkpointed flow writes into a store
    "connectors": {"core", "connectors"},
    "testing": {"core", "testing"},
    "state": {"core", "state", "connectors"},  # stores reuse the connectors' clients
}
FACE = {"rxflow", "rxflow.__main__", "rxflow.metrics", "rxflow.cli"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def layer_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else "core"


def is_public(module: str) -> bool:
    return not any(part.startswith("_") for part in module.split("."))


def imported_modules(source: str, module: str, *, is_package: bool = False) -> set[str]:
    """Every rxflow module ``source`` imports, anywhere in it (functions included), with
    relative imports resolved against ``module``."""
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            found.add(base)
            # `from rxflow import flow` imports the module rxflow.flow
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {name for name in found if name == "rxflow" or name.startswith("rxflow.")}


def wrong_way_imports(module: str, imports: set[str]) -> list[str]:
    allowed = MAY_IMPORT[layer_of(module)]
    return sorted(
        name
        for name in imports
        if name in MODULES or name.rpartition(".")[0] in MODULES
        if layer_of(name) not in allowed
    )


def exception_classes(module: str) -> list[type[BaseException]]:
    """The exception classes ``module`` defines, at its top level or inside its classes."""
    found = []
    imported = importlib.import_module(module)
    for _, value in inspect.getmembers(imported, inspect.isclass):
        if value.__module__ != module:
            continue
        for cls in (value, *(v for _, v in inspect.getmembers(value, inspect.isclass))):
            if issubclass(cls, BaseException) and cls.__module__ == module:
                found.append(cls)
    return found


def nested_class_names(source: str) -> list[str]:
    """Classes defined inside functions, which no import can reach: each must not be an
    exception (checked by name and bases, as far as the source says)."""
    names = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for inner in ast.walk(node):
                if isinstance(inner, ast.ClassDef) and any(
                    _names_an_exception(base) for base in inner.bases
                ):
                    names.append(inner.name)
    return names


def _names_an_exception(base: ast.expr) -> bool:
    name = ast.unparse(base).rpartition(".")[2]
    return name.endswith(("Error", "Exception", "Rejected", "Mismatch", "Warning"))


def problems_of(module: str) -> list[str]:
    """What ``module`` breaks of the rules other than the direction of imports."""
    path = MODULES[module]
    source = path.read_text()
    problems = []
    if is_public(module) and "__all__" not in _assigned(source):
        problems.append("no __all__")
    lines = source.count("\n")
    if lines > MAX_LINES and module not in ONE_IDEA_OVER_MAX_LINES:
        problems.append(f"{lines} lines")
    if module != "rxflow.errors":
        problems += [f"defines {cls.__name__}" for cls in exception_classes(module)]
        problems += [f"defines {name} in a function" for name in nested_class_names(source)]
    return problems


def _assigned(source: str) -> set[str]:
    return {
        target.id
        for node in ast.parse(source).body
        if isinstance(node, ast.Assign | ast.AnnAssign)
        for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
        if isinstance(target, ast.Name)
    }


# -- the rules on the real tree -------------------------------------------------------------


@pytest.mark.parametrize("module", sorted(set(MODULES) - FACE))
def test_imports_run_one_way(module: str) -> None:
    path = MODULES[module]
    imports = imported_modules(path.read_text(), module, is_package=path.name == "__init__.py")
    wrong = wrong_way_imports(module, imports)
    assert not wrong, (
        f"{module} ({layer_of(module)}) imports {wrong}; it may import only "
        f"{sorted(MAY_IMPORT[layer_of(module)])} (see docs/architecture.md)"
    )


@pytest.mark.parametrize("module", sorted(MODULES))
def test_every_module_keeps_the_rules(module: str) -> None:
    assert not problems_of(module), f"{module}: {', '.join(problems_of(module))}"


def test_every_exception_in_errors_derives_from_rxflow_error_and_is_exported() -> None:
    import rxflow.errors

    defined = exception_classes("rxflow.errors")
    assert RxflowError in defined
    assert [cls.__name__ for cls in defined if not issubclass(cls, RxflowError)] == []
    assert sorted(cls.__name__ for cls in defined) == sorted(rxflow.errors.__all__)


def test_the_one_idea_list_names_only_long_modules() -> None:
    for module in ONE_IDEA_OVER_MAX_LINES:
        assert MODULES[module].read_text().count("\n") > MAX_LINES, f"{module} is short now"


# -- the checks themselves catch what they are for --------------------------------------


def test_an_import_inside_a_function_is_found() -> None:
    source = textwrap.dedent(
        """
        def later():
            from rxflow.flow._delivery import Delivery
            import rxflow.testing
        """
    )
    imports = imported_modules(source, "rxflow.windows.processing")
    assert {"rxflow.flow._delivery", "rxflow.testing"} <= imports
    assert wrong_way_imports("rxflow.windows.processing", imports) == [
        "rxflow.flow._delivery",
        "rxflow.flow._delivery.Delivery",
        "rxflow.testing",
    ]


def test_relative_imports_are_resolved() -> None:
    imports = imported_modules("from ..flow import metrics\n", "rxflow.windows.processing")
    assert "rxflow.flow.metrics" in imports
    assert wrong_way_imports("rxflow.map_async", {"rxflow.connectors"}) == ["rxflow.connectors"]
    assert wrong_way_imports("rxflow.flow._builder", {"rxflow.pipe", "rxflow.errors"}) == []


class _ExampleError(ValueError):
    """An exception defined outside rxflow.errors, for the check to find."""


def test_an_exception_defined_outside_errors_is_found() -> None:
    assert exception_classes(__name__) == [_ExampleError]
    source = "def f():\n    class Oops(ValueError):\n        pass\n"
    assert nested_class_names(source) == ["Oops"]


def test_a_module_without_all_is_a_problem() -> None:
    assert "__all__" in _assigned("__all__ = ['x']\n")
    assert "__all__" not in _assigned("x = 1\n")
    assert is_public("rxflow.flow.metrics")
    assert not is_public("rxflow.flow._delivery")
