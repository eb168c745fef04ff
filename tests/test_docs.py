"""The documentation site builds with warnings as errors and documents every public name.

`mkdocs build --strict` (mkdocs.yml) fails on a broken link, a page left out of the nav, or a
docstring mkdocstrings cannot read (a parameter documented that the signature lacks, say).
mkdocs is in the `test` extra, so CI builds the site on every run; without it the test skips.
"""

from __future__ import annotations

import doctest
import importlib
import importlib.util
import inspect
import os
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# The modules whose API the reference documents (docs/api/*.md).
PUBLIC_MODULES = [
    "rxflow",
    "rxflow.windows",
    "rxflow.connectors",
    "rxflow.testing",
    "rxflow.errors",
    "rxflow.strategies",
    "rxflow.flow",
    "rxflow.flow.metrics",
    "rxflow.state",
]

needs_mkdocs = pytest.mark.skipif(
    importlib.util.find_spec("mkdocs") is None,
    reason="mkdocs is not installed: pip install -e '.[docs]' (the test extra includes it)",
)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site, built once for this module's tests."""
    out = tmp_path_factory.mktemp("site")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")  # mkdocs' banner about its successor
    build = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    log = build.stdout + build.stderr
    warnings = [line for line in log.splitlines() if "WARNING" in line or "ERROR" in line]
    assert build.returncode == 0, f"mkdocs build --strict failed:\n{log}"
    assert not warnings, "mkdocs warned:\n" + "\n".join(warnings)
    return out


def _public_names(module: types.ModuleType) -> list[str]:
    """`__all__`, or the classes and functions the module defines without a leading `_`."""
    names = getattr(module, "__all__", None)
    if names is None:
        names = [
            name
            for name, value in vars(module).items()
            if not name.startswith("_")
            and (inspect.isclass(value) or inspect.isfunction(value))
            and value.__module__ == module.__name__
        ]
    # A submodule re-exported as a name (`rxflow.errors`) has a page of its own.
    return [name for name in names if not isinstance(getattr(module, name), types.ModuleType)]


@needs_mkdocs
def test_the_site_builds_strictly(site: Path) -> None:
    assert (site / "index.html").is_file()
    # The guides include README sections (pymdownx.snippets); a missing one fails the build.
    connectors = (site / "connectors" / "index.html").read_text()
    assert "NATS JetStream" in connectors
    assert "--8&lt;--" not in connectors


@needs_mkdocs
@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_the_api_reference_documents_every_public_name(site: Path, module_name: str) -> None:
    module = importlib.import_module(module_name)
    pages = "".join(page.read_text() for page in (site / "api").rglob("*.html"))
    anchors = set(re.findall(r'id="(rxflow[\w.]*)"', pages))
    missing = [
        name
        for name in _public_names(module)
        if f"{module_name}.{name}" not in anchors
        # re-exported from a submodule, documented there (rxflow.connectors.files.read_file)
        and not any(a.startswith(f"{module_name}.") and a.endswith(f".{name}") for a in anchors)
    ]
    assert not missing, f"the API reference lacks {module_name}: {missing}"


@needs_mkdocs
def test_docstrings_render_as_markdown(site: Path) -> None:
    """Sphinx roles and ``Example:`` admonitions are rewritten (docs/_ext/house_style.py)."""
    page = (site / "api" / "rxflow" / "index.html").read_text()
    assert not re.search(r":(func|class|meth|mod):", page)
    # The doctest examples are highlighted code, not paragraphs of ">>>".
    assert "&gt;&gt;&gt; import anyio" not in re.sub(r"<code[^>]*>.*?</code>", "", page, flags=re.S)


def _house_style() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(
        "house_style", ROOT / "docs" / "_ext" / "house_style.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(importlib.util.find_spec("griffe") is None, reason="griffe (docs) missing")
def test_house_style_rewrites_examples_literal_blocks_and_roles() -> None:
    house_style = _house_style()
    assert doctest.testmod(house_style).failed == 0
    rewrite = house_style.markdown_docstring
    text = (
        "Start a :class:`~rxflow.Flow` with :func:`rxflow.open_pipe`.\n"
        "\n"
        "Example:\n"
        "    Run it::\n"
        "\n"
        "        await flow.run()\n"
        "\n"
        "    A shell line::\n"
        "\n"
        "        python -m rxflow run a:b\n"
    )
    assert rewrite(text).splitlines() == [
        "Start a `Flow` with `rxflow.open_pipe`.",
        "",
        "Examples:",
        "    Run it:",
        "",
        "    ```python",
        "    await flow.run()",
        "    ```",
        "",
        "    A shell line:",
        "",
        "    ```text",
        "    python -m rxflow run a:b",
        "    ```",
    ]
