"""Every ```python block of the README and of the documentation site runs as written.

Each block runs in a subprocess of its own, in an empty temporary directory, with the
repository on ``PYTHONPATH`` (for ``examples.*``). A block that defines ``test_*`` functions
is a pytest module: it runs under pytest, with rxflow's plugin, and must pass. Any other
block is a program: it must exit 0 within the time limit.

Two HTML comments, on the line right before a block's fence, change that:

* ``<!-- continues -->``: the block is the rest of the previous one; they run as one.
* ``<!-- no-run: why -->``: the block cannot run by its nature (it serves forever); it is
  reported as skipped, with the reason.

Blocks that use a broker connector talk to the local service (as the integration tests do),
and skip naming the service when it is missing, unless ``RXFLOW_REQUIRE_SERVICES=1``.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import attrs
import pytest

from tests.connectors.conftest import require_service
from tests.connectors.kafka_broker import kafka_bootstrap

ROOT = Path(__file__).resolve().parent.parent

# The documents whose blocks run: the README and the site's pages. The marble-testing README,
# which the site's testing page includes, has its own test (tests/testing/test_readme.py).
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

TIMEOUT_S = 60.0

_FENCE = re.compile(r"^(?P<indent>\s*)```(?P<lang>[\w+-]*)\s*$")
_DIRECTIVE = re.compile(r"^\s*<!--\s*(?P<what>continues|no-run:\s*(?P<why>.+?))\s*-->\s*$")

# A block that names one of these uses the service next to it.
SERVICE_OF = {
    "redis_stream_": "redis",
    "postgres_": "postgresql",
    "postgresql://": "postgresql",
    "rabbitmq_": "rabbitmq",
    "mqtt_": "mqtt",
    "jetstream_": "nats",
    "kafka_": "kafka",  # the tests' broker; the block finds it in RXFLOW_KAFKA_BOOTSTRAP
}


@attrs.define
class Block:
    """One runnable block: where it starts, its code, why it does not run (if it does not)."""

    document: Path
    line: int
    code: str
    skip: str | None = None

    @property
    def name(self) -> str:
        return f"{self.document.relative_to(ROOT)}:{self.line}"


def python_blocks(document: Path) -> list[Block]:
    """The document's ```python blocks, each joined with the fragments that continue it."""
    lines = document.read_text().splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        fence = _FENCE.match(lines[i])
        if fence is None or not fence.group("lang"):
            i += 1
            continue
        indent, lang, start = fence.group("indent"), fence.group("lang"), i
        end = start + 1
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        i = end + 1
        if lang != "python":
            continue
        code = "\n".join(line.removeprefix(indent) for line in lines[start + 1 : end]) + "\n"
        previous = lines[start - 1] if start > 0 else ""
        directive = _DIRECTIVE.match(previous)
        if directive is not None and directive.group("what") == "continues":
            if not blocks:
                raise AssertionError(f"{document}:{start + 1}: nothing before it to continue")
            blocks[-1].code += code
        else:
            why = directive.group("why") if directive is not None else None
            blocks.append(Block(document, start + 1, code, why))
    return blocks


BLOCKS = [block for document in DOCUMENTS for block in python_blocks(document)]


def _defines_tests(code: str) -> bool:
    return any(
        isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test_")
        for node in ast.parse(code).body
    )


def _run(
    command: list[str], cwd: Path, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    paths = [str(ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(paths), **(extra_env or {}))
    return subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT_S, check=False
    )


@pytest.mark.parametrize("block", BLOCKS, ids=[block.name for block in BLOCKS])
def test_block_runs(block: Block, tmp_path: Path) -> None:
    if block.skip is not None:
        pytest.skip(f"marked no-run: {block.skip}")
    for marker, service in SERVICE_OF.items():
        if marker in block.code:
            require_service(service)
    # A Kafka block reads where the tests' broker is (a user's runs at localhost:9092).
    env = {"RXFLOW_KAFKA_BOOTSTRAP": kafka_bootstrap()} if "kafka_" in block.code else {}
    if _defines_tests(block.code):
        (tmp_path / "test_block.py").write_text(block.code)
        done = _run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], tmp_path, env)
        passed = done.returncode == 0 and re.search(r"\b\d+ passed\b", done.stdout)
        assert passed, f"{block.name}: its tests failed:\n{done.stdout}\n{done.stderr}"
    else:
        (tmp_path / "block.py").write_text(block.code)
        done = _run([sys.executable, "block.py"], tmp_path, env)
        assert done.returncode == 0, f"{block.name} failed:\n{done.stdout}\n{done.stderr}"


def test_the_blocks_are_found() -> None:
    """The parser sees the README's blocks (a fence it missed would silently not run)."""
    readme = (ROOT / "README.md").read_text()
    fences = len(re.findall(r"^```python\s*$", readme, flags=re.M))
    joined = len(re.findall(r"^<!--\s*continues\s*-->\s*\n```python", readme, flags=re.M))
    assert fences > 0
    assert len(python_blocks(ROOT / "README.md")) == fences - joined
