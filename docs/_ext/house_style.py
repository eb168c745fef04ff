"""A griffe extension: rxflow's docstrings, written for `help()` and doctest, read as Markdown.

rxflow's docstrings follow Google style but keep three reST habits that mkdocstrings would
show raw: an ``Example:`` heading (griffe only treats ``Examples:`` as a section of code
examples and renders ``Example:`` as an admonition whose ``>>>`` lines lose their code
formatting), literal blocks introduced by ``::``, and Sphinx roles such as
``:class:`~rxflow.Flow```. This extension rewrites each docstring before griffe parses it,
so the sources keep one convention and the site still shows code as code. It is loaded by
mkdocstrings through ``extensions:`` in mkdocs.yml (griffe's own extension API).
"""

from __future__ import annotations

import ast
import re
import textwrap
from typing import Any

import griffe

# `:class:`~rxflow.Flow`` shows `Flow`; `:func:`rxflow.open_pipe`` shows `rxflow.open_pipe`.
_ROLE = re.compile(r":(?:func|class|meth|mod|attr|exc|data|obj):`(~?)([^`]+)`")
_EXAMPLE_HEADING = re.compile(r"^(\s*)Example:\s*$")


def _role_as_code(match: re.Match[str]) -> str:
    short, target = match.group(1), match.group(2)
    return f"`{target.rsplit('.', 1)[-1] if short else target}`"


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _fence(block: list[str], indent: int) -> list[str]:
    """A reST literal block as a fenced Markdown block, highlighted as Python if it parses."""
    code = textwrap.dedent("\n".join(block)).strip("\n")
    try:
        ast.parse(code)
        language = "python"
    except SyntaxError:
        language = "text"
    pad = " " * indent
    body = [pad + line if line else "" for line in code.splitlines()]
    return [f"{pad}```{language}", *body, f"{pad}```"]


def _literal_blocks(lines: list[str]) -> list[str]:
    """Turn each ``text::`` paragraph end and the indented block after it into a fence."""
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.rstrip().endswith("::"):
            out.append(line)
            i += 1
            continue
        indent = _indent(line)
        lead = line.rstrip()[:-2].rstrip()
        if lead.strip():
            out.append(lead + ":")
        j = i + 1
        while j < len(lines) and not lines[j].strip():
            j += 1
        block_end = j
        while block_end < len(lines) and (
            not lines[block_end].strip() or _indent(lines[block_end]) > indent
        ):
            block_end += 1
        block = lines[j:block_end]
        while block and not block[-1].strip():
            block.pop()
        if not block:  # a "::" with nothing under it: leave the text as it was
            out.append(line if not lead.strip() else "")
            i += 1
            continue
        out.append("")
        out.extend(_fence(block, indent))
        i = j + len(block)
        if i < len(lines) and lines[i].strip():  # Markdown needs a blank line after a fence
            out.append("")
    return out


def markdown_docstring(text: str) -> str:
    """The docstring with ``Example:`` as ``Examples:``, literal blocks fenced, roles as code.

    Example:
        >>> print(markdown_docstring("Use :class:`~rxflow.Flow`::\\n\\n    flow.run()"))
        Use `Flow`:
        <BLANKLINE>
        ```python
        flow.run()
        ```
    """
    text = _ROLE.sub(_role_as_code, text)
    lines = [_EXAMPLE_HEADING.sub(r"\1Examples:", line) for line in text.splitlines()]
    return "\n".join(_literal_blocks(lines))


class HouseStyle(griffe.Extension):
    """Rewrite every docstring of the loaded objects with :func:`markdown_docstring`."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = markdown_docstring(obj.docstring.value)
