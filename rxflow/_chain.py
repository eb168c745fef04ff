"""Building a pipe's operator chain: runs of simple operators fused, each stage checked.

:func:`chained` is what the pump subscribes: ``head.pipe(*operators)``, with each run of
consecutive simple operators replaced by one fused operator (:mod:`rxflow._fusion`), and
an operator that does not return an Observable refused with the position the user wrote
it at.
"""

from __future__ import annotations

import logging
from typing import Any

from reactivex import Observable

from rxflow._fusion import FusedOperator, Operator, PipeStage, fuse
from rxflow._fusion_steps import curried_name

__all__ = ["chained", "name_of"]

logger = logging.getLogger("rxflow.pipe")


def chained(
    head: Observable[Any], operators: tuple[Operator, ...]
) -> tuple[Observable[Any], tuple[PipeStage, ...], FusedOperator | None]:
    """``head.pipe(*operators)`` with runs of simple operators fused (:mod:`rxflow._fusion`),
    the plan saying which, and the fused operator when it is the whole chain; a stage that
    does not return an Observable is refused at once (``ops.to_future()`` ends a chain; a
    pipe reads observables only)."""
    applied, plan = fuse(operators, name_of=name_of)
    if plan and logger.isEnabledFor(logging.DEBUG):
        logger.debug("open_pipe() runs its operators as: %s", ", ".join(map(str, plan)))
    chain = head
    for position, operator in applied:  # the position the user wrote it at, for errors
        try:
            result = operator(chain)
        except Exception as error:
            error.add_note(
                f"rxflow: raised by operator {position} ({name_of(operator)}) of open_pipe() "
                "while the chain was built"
            )
            raise
        if not isinstance(result, Observable):
            raise TypeError(
                f"open_pipe(): operator {position} ({name_of(operator)}) returned a value "
                f"of type {type(result).__name__}, not an Observable, so nothing can follow it in "
                "a pipe. Operators that end a chain (such as ops.to_future()) have no place "
                "in open_pipe: read the pipe instead (async for, or receive())"
            )
        chain = result
    only = applied[0][1] if len(applied) == 1 else None
    return chain, plan, only if isinstance(only, FusedOperator) else None


def name_of(operator: object) -> str:
    """An operator's name for errors: ``ops.to_future`` for ``ops.to_future()``'s closure."""
    curried = curried_name(operator)  # reactivex's curry_flip operators share one closure
    if curried is not None:
        return curried
    qualname = getattr(operator, "__qualname__", None) or repr(operator)
    module = getattr(operator, "__module__", "") or ""
    name = qualname.rsplit(".", 1)[-1]
    if not module.startswith("reactivex.operators."):
        return qualname
    if name.startswith("_"):  # a curried wrapper: the module says which operator
        name = module.rsplit(".", 1)[-1].lstrip("_")
    return f"ops.{name}"
