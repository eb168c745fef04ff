"""Recognising the reactivex operators that a pipe may fuse, and reading their arguments.

``reactivex.operators.map(f)`` returns a closure; so do ``filter``, ``scan`` and the rest.
They are recognised by identity, never by name: at import, one sample of each operator is
built, and its closure's code object (and, for reactivex's ``curry_flip`` operators, the
operator function held in the closure) is what a user's operator must match. The arguments
are then read from the closure's cells by name (``co_freevars``) and bound to the
operator function's own signature, so an argument passed by keyword or left to its default
reads the same. Anything that does not match exactly, or whose arguments are of a form not
fused (an index-taking ``map_indexed``, ``take(0)``, which is ``empty()``), is left to
reactivex unchanged. ``tests/test_fusion.py`` fails if a reactivex upgrade makes the
samples stop matching, so recognition cannot silently stop.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from types import CodeType
from typing import Any

import attrs
from reactivex import operators as ops
from reactivex.internal.utils import NotSet

__all__ = ["FUSABLE", "Step", "curried_name", "recognise"]

# The kinds of step a fused stage runs, in the order the docs list them.
FUSABLE = (
    "map",
    "starmap",
    "pluck",
    "pluck_attr",
    "filter",
    "scan",
    "take",
    "skip",
    "take_while",
    "skip_while",
    "distinct_until_changed",
)


@attrs.frozen
class Step:
    """One recognised operator: its kind, what it was given, and the operator itself.

    ``args`` holds what the fused code calls, per kind: map, starmap, filter, skip_while:
    ``(function,)``; pluck: ``(key,)``; pluck_attr: ``(name,)``; scan: ``(accumulator,
    seed)`` (seed is ``NotSet`` when none was given); take, skip: ``(count,)``; take_while:
    ``(predicate, inclusive)``; distinct_until_changed: ``(key_mapper or None, comparer or
    None)``.
    """

    kind: str
    args: tuple[Any, ...]
    operator: Callable[..., Any]
    label: str


def _cells(function: object) -> dict[str, Any] | None:
    """A closure's free variables by name, or None for anything else."""
    code = getattr(function, "__code__", None)
    closure = getattr(function, "__closure__", None)
    if not isinstance(code, CodeType) or closure is None:
        return None
    try:
        return {
            name: cell.cell_contents for name, cell in zip(code.co_freevars, closure, strict=True)
        }
    except ValueError:  # an empty cell
        return None


def _probe(*_: object) -> bool:
    return True


class _Samples:
    """The code objects of reactivex's own closures, read from samples built at import."""

    def __init__(self) -> None:
        curried = ops.map(_probe)
        cells = _cells(curried) or {}
        # reactivex >= 5: every operator is `curry_flip(fun)(*args)`, one closure code for
        # all of them, with the operator function in its cell "fun".
        self.curried: CodeType | None = None
        self.functions: dict[Callable[..., Any], str] = {}
        if {"fun", "args", "kwargs"} <= cells.keys():
            self.curried = curried.__code__
            samples: dict[str, Callable[..., Any]] = {
                "map": ops.map(_probe),
                "filter": ops.filter(_probe),
                "scan": ops.scan(_probe, 0),
                "take": ops.take(1),
                "skip": ops.skip(1),
                "take_while": ops.take_while(_probe),
                "skip_while": ops.skip_while(_probe),
                "distinct_until_changed": ops.distinct_until_changed(),
            }
            for kind, sample in samples.items():
                sample_cells = _cells(sample)
                if sample.__code__ is self.curried and sample_cells is not None:
                    self.functions[sample_cells["fun"]] = kind
        compose = _cells(ops.starmap(_probe)) or {}
        self.compose: CodeType | None = getattr(ops.starmap(_probe), "__code__", None)
        self.starred: CodeType | None = None
        inner = compose.get("operators")
        if isinstance(inner, tuple) and len(inner) == 1:
            mapper = self._curried_argument(inner[0], "map", "mapper")
            self.starred = getattr(mapper, "__code__", None)
        self.pluck: CodeType | None = getattr(
            self._curried_argument(ops.pluck("key"), "map", "mapper"), "__code__", None
        )
        self.pluck_attr: CodeType | None = getattr(
            self._curried_argument(ops.pluck_attr("name"), "map", "mapper"), "__code__", None
        )

    def _curried_argument(self, operator: object, kind: str, name: str) -> object:
        arguments = self.arguments(operator)
        if arguments is None or arguments[0] != kind:
            return None
        return arguments[1].get(name)

    def arguments(self, operator: object) -> tuple[str, dict[str, Any]] | None:
        """``(kind, arguments by parameter name)`` of a recognised curried operator."""
        if self.curried is None or getattr(operator, "__code__", None) is not self.curried:
            return None
        cells = _cells(operator)
        if cells is None:
            return None
        fun, args, kwargs = cells.get("fun"), cells.get("args"), cells.get("kwargs")
        kind = self.functions.get(fun) if callable(fun) else None
        if (
            kind is None
            or not callable(fun)
            or not isinstance(args, tuple)
            or not isinstance(kwargs, dict)
        ):
            return None
        try:
            bound = _signature(fun).bind(None, *args, **kwargs)
        except TypeError:
            return None
        bound.apply_defaults()
        arguments = dict(bound.arguments)
        arguments.pop(next(iter(arguments)))  # the source, bound to None above
        return kind, arguments


_SIGNATURES: dict[Callable[..., Any], inspect.Signature] = {}


def _signature(function: Callable[..., Any]) -> inspect.Signature:
    signature = _SIGNATURES.get(function)
    if signature is None:
        signature = _SIGNATURES[function] = inspect.signature(function)
    return signature


_SAMPLES = _Samples()


def _name(function: object) -> str:
    if function is None:
        return "None"
    name = getattr(function, "__qualname__", None)
    return name if isinstance(name, str) else repr(function)


def curried_name(operator: object) -> str | None:
    """``ops.delay`` for what ``ops.delay(1.0)`` returns (any ``curry_flip`` operator of
    reactivex's); None for anything else."""
    if _SAMPLES.curried is None or getattr(operator, "__code__", None) is not _SAMPLES.curried:
        return None
    fun = (_cells(operator) or {}).get("fun")
    name = getattr(fun, "__name__", None)
    module = getattr(fun, "__module__", "") or ""
    if not isinstance(name, str) or not module.startswith("reactivex."):
        return None
    return f"ops.{name.rstrip('_')}"


def recognise(operator: Callable[..., Any]) -> list[Step] | None:
    """The steps ``operator`` runs, if every one of them can be fused; else None.

    ``reactivex.compose(...)`` (what ``ops.starmap`` returns) gives the steps of its
    operators.
    """
    samples = _SAMPLES
    code = getattr(operator, "__code__", None)
    if code is not None and code is samples.compose:
        cells = _cells(operator) or {}
        inner = cells.get("operators")
        if not isinstance(inner, tuple) or not inner:
            return None
        steps: list[Step] = []
        for part in inner:
            part_steps = recognise(part)
            if part_steps is None:
                return None
            steps.extend(part_steps)
        return steps
    found = samples.arguments(operator)
    if found is None:
        return None
    step = _step(found[0], found[1], operator)
    return None if step is None else [step]


def _step(kind: str, arguments: dict[str, Any], operator: Callable[..., Any]) -> Step | None:
    """The step for a recognised operator, or None for argument forms not fused."""
    get = arguments.get
    if kind == "map":
        mapper = get("mapper")
        if mapper is None:
            return Step("map", (None,), operator, "map()")
        if not callable(mapper) or not mapper:  # reactivex tests `mapper or identity`
            return None
        mapper_code = getattr(mapper, "__code__", None)
        inner = _cells(mapper) if mapper_code is not None else None
        if inner is not None and mapper_code is _SAMPLES.starred and callable(inner.get("mapper")):
            function = inner["mapper"]
            return Step("starmap", (function,), operator, f"starmap({_name(function)})")
        if inner is not None and mapper_code is _SAMPLES.pluck and "key" in inner:
            return Step("pluck", (inner["key"],), operator, f"pluck({inner['key']!r})")
        if inner is not None and mapper_code is _SAMPLES.pluck_attr and "prop" in inner:
            prop = inner["prop"]
            return Step("pluck_attr", (prop,), operator, f"pluck_attr({prop!r})")
        return Step("map", (mapper,), operator, f"map({_name(mapper)})")
    if kind in ("filter", "skip_while"):
        predicate = get("predicate")
        if not callable(predicate):
            return None
        return Step(kind, (predicate,), operator, f"{kind}({_name(predicate)})")
    if kind == "scan":
        accumulator, seed = get("accumulator"), get("seed", NotSet)
        if not callable(accumulator):
            return None
        shown = "" if seed is NotSet else f", seed={seed!r}"
        return Step("scan", (accumulator, seed), operator, f"scan({_name(accumulator)}{shown})")
    if kind in ("take", "skip"):
        count = get("count")
        # take(0) is empty() (it never subscribes); a negative count raises when applied.
        if type(count) is not int or count < (1 if kind == "take" else 0):
            return None
        return Step(kind, (count,), operator, f"{kind}({count})")
    if kind == "take_while":
        predicate, inclusive = get("predicate"), get("inclusive", False)
        if not callable(predicate):
            return None
        shown = ", inclusive=True" if inclusive else ""
        return Step(
            kind, (predicate, bool(inclusive)), operator, f"take_while({_name(predicate)}{shown})"
        )
    if kind == "distinct_until_changed":
        key_mapper, comparer = get("key_mapper"), get("comparer")
        # reactivex tests `key_mapper or identity`: a falsy callable is not fused.
        if (key_mapper is not None and (not callable(key_mapper) or not key_mapper)) or (
            comparer is not None and (not callable(comparer) or not comparer)
        ):
            return None
        shown = ", ".join(
            f"{name}={_name(value)}"
            for name, value in (("key_mapper", key_mapper), ("comparer", comparer))
            if value is not None
        )
        return Step(kind, (key_mapper, comparer), operator, f"{kind}({shown})")
    return None
