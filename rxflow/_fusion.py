"""Fused operators: consecutive simple reactivex steps run as one function per item.

A chain such as ``ops.map(f), ops.filter(p), ops.scan(g, 0)`` is, in reactivex, three
observers, each wrapped in an ``AutoDetachObserver``: five Python calls per item before the
item leaves the chain. :func:`fuse` replaces each run of consecutive recognised operators
(:mod:`rxflow._fusion_steps` says which and how) by one operator whose observer does every
step in one ``on_next``: a function generated once per combination of step kinds
(:mod:`rxflow._fusion_code`).

Behaviour is reactivex's, step by step: a function that raises sends ``on_error``
downstream and nothing more comes (the upstream subscription is disposed by the
downstream ``AutoDetachObserver``, as in reactivex); ``take`` and ``take_while`` complete
after the item that ends them has gone through the later steps; state (``scan``'s
accumulation, ``take``'s count) is per subscription and is updated before the item goes
downstream, so an ``on_next`` that synchronously pushes another item sees it updated; an
exception raised downstream propagates to the source untouched. ``take_while`` does not
take reactivex's per-source lock: the Rx grammar already forbids concurrent ``on_next``
calls, and a pipe makes none (items from other threads are handed to its loop's thread;
``observe_on`` delivers one at a time).

``RXFLOW_FUSION=0`` in the environment turns fusion off (every operator is reactivex's
own), for debugging and for the equivalence tests.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import attrs
from reactivex import Observable, abc

from rxflow._fusion_code import PULLS_PER_CHECKPOINT, DirectFunctions, builder, shape_of
from rxflow._fusion_steps import FUSABLE, Step, recognise

__all__ = [
    "FUSABLE",
    "PULLS_PER_CHECKPOINT",
    "DirectFunctions",
    "DirectSink",
    "FusedOperator",
    "PipeStage",
    "fuse",
    "fusion_enabled",
]

Operator = Callable[[Observable[Any]], Observable[Any]]

_OFF = {"0", "false", "no", "off"}


def fusion_enabled() -> bool:
    """False when ``RXFLOW_FUSION`` is set to 0, false, no or off."""
    return os.environ.get("RXFLOW_FUSION", "1").strip().lower() not in _OFF


@attrs.frozen
class PipeStage:
    """One stage of a pipe's operator chain, as :meth:`rxflow.Pipe.plan` reports it.

    Attributes:
        operators: the operators the stage runs, in order, as written
            (``"map(triple)"``, ``"ops.delay"``).
        fused: True when rxflow runs them as one fused function, False for a reactivex
            operator run as it is.

    Example:
        >>> from reactivex import operators as ops
        >>> from rxflow._fusion import fuse
        >>> _, plan = fuse((ops.map(abs), ops.filter(bool)), enabled=True)
        >>> [str(stage) for stage in plan]
        ['fused(map(abs) -> filter(bool))']
    """

    operators: tuple[str, ...]
    fused: bool

    def __str__(self) -> str:
        if self.fused:
            return f"fused({' -> '.join(self.operators)})"
        return self.operators[0]


class FusedOperator:
    """An operator that runs consecutive recognised steps in one ``on_next`` per item."""

    def __init__(self, steps: Sequence[Step]) -> None:
        self.steps = tuple(steps)
        shape, self._arguments = shape_of(self.steps)
        self._build = builder(shape)
        self._direct = builder((*shape, ("direct", "")))

    def build(self, observer: Any) -> Callable[[Any], None]:
        """The ``on_next`` of one subscription, with fresh state, sending to ``observer``
        (anything with ``on_next``, ``on_error`` and ``on_completed``)."""
        on_next: Callable[[Any], None] = self._build(observer, self._arguments)
        return on_next

    def build_direct(self, observer: Any, counter: Any, state: Any) -> DirectFunctions:
        """``on_next``, ``on_run`` (the same for the items of a sequence, in order),
        ``pump_async`` and ``pump_sync`` (a pump's loops, the steps inline) for a pipe
        whose pump calls them itself (see ``Pump._subscribe_direct``).

        Each item adds 1 to ``counter.admitted``, as the pipe's inlet would, and outputs
        are appended to ``state.items`` as ``observer.on_next`` (the buffer's ``put``)
        would, which is called only when ``put`` would not simply append (the pipe ended,
        the consumer closed). ``on_run(values, start, room)`` pushes the items of a list
        or a tuple from ``start`` on until ``room`` outputs went into the buffer, an error
        or the completion, while the pipe is open, counts them once and returns the
        position reached. ``pump_async(iterator, pump)`` is ``Pump._pump_async`` with the
        steps in its body, ``pump_sync(iterator, pump)`` ``Pump._pump_sync``
        (:mod:`rxflow._fusion_code` says what each checks per item).
        """
        functions: DirectFunctions = self._direct(observer, self._arguments, counter, state)
        return functions

    def __call__(self, source: Observable[Any]) -> Observable[Any]:
        build, arguments = self._build, self._arguments

        def subscribe(
            observer: abc.ObserverBase[Any], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            # Fresh state per subscription, as each reactivex operator keeps its own.
            on_next = build(observer, arguments)
            return source.subscribe(
                on_next, observer.on_error, observer.on_completed, scheduler=scheduler
            )

        return Observable(subscribe)

    def __repr__(self) -> str:
        return f"<fused {' -> '.join(step.label for step in self.steps)}>"


def fuse(
    operators: Sequence[Operator],
    *,
    enabled: bool | None = None,
    name_of: Callable[[Operator], str] = repr,
) -> tuple[list[tuple[int, Operator]], tuple[PipeStage, ...]]:
    """The operators to apply instead of ``operators`` (each with the position, from 1, of
    the first operator it stands for), and the plan that says what fused.

    Each run of consecutive operators that :func:`~rxflow._fusion_steps.recognise` knows
    becomes one :class:`FusedOperator` (a single one too: it still saves an observer);
    the others stay as they are. ``enabled`` (default: :func:`fusion_enabled`) False keeps
    every operator as it is.
    """
    if enabled is None:
        enabled = fusion_enabled()
    applied: list[tuple[int, Operator]] = []
    plan: list[PipeStage] = []
    pending: list[Step] = []
    first = 0  # the position of pending's first operator

    def flush() -> None:
        if pending:
            applied.append((first, FusedOperator(pending)))
            plan.append(PipeStage(tuple(step.label for step in pending), True))
            pending.clear()

    for position, operator in enumerate(operators, start=1):
        steps = recognise(operator) if enabled else None
        if steps is None:
            flush()
            applied.append((position, operator))
            plan.append(PipeStage((name_of(operator),), False))
        else:
            if not pending:
                first = position
            pending.extend(steps)
    flush()
    return applied, tuple(plan)


class DirectSink:
    """The end of a chain that is one fused stage, as reactivex's ``AutoDetachObserver``
    would be there: nothing after the first error or completion, and either disposes the
    subscription. Its ``on_next`` is the buffer's ``put``, which ignores items once the
    pipe ended."""

    __slots__ = ("_on_completed", "_on_error", "is_stopped", "on_next", "upstream")

    def __init__(
        self,
        put: Callable[[Any], None],
        on_error: Callable[[Exception], None],
        on_completed: Callable[[], None],
    ) -> None:
        self.on_next = put
        self._on_error = on_error
        self._on_completed = on_completed
        self.is_stopped = False
        self.upstream: abc.DisposableBase | None = None

    def on_error(self, error: Exception) -> None:
        if self.is_stopped:
            return
        self.is_stopped = True
        try:
            self._on_error(error)
        finally:
            self._dispose()

    def on_completed(self) -> None:
        if self.is_stopped:
            return
        self.is_stopped = True
        try:
            self._on_completed()
        finally:
            self._dispose()

    def _dispose(self) -> None:
        if self.upstream is not None:
            self.upstream.dispose()
