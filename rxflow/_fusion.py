"""Fused operators: consecutive simple reactivex steps run as one function per item.

A chain such as ``ops.map(f), ops.filter(p), ops.scan(g, 0)`` is, in reactivex, three
observers, each wrapped in an ``AutoDetachObserver``: five Python calls per item before the
item leaves the chain. :func:`fuse` replaces each run of consecutive recognised operators
(:mod:`rxflow._fusion_steps` says which and how) by one operator whose observer does every
step in one ``on_next``: a function generated once per combination of step kinds (with
``exec``, as ``dataclasses`` does: measured on map -> filter -> scan over 1 M ints, a
generated body ran 4.8 M items/s, a loop over one function per step 2.9 M items/s).

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
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import anyio.lowlevel
import attrs
from reactivex import Observable, abc
from reactivex.internal.utils import NotSet

from rxflow._fusion_steps import FUSABLE, Step, recognise

__all__ = ["FUSABLE", "DirectSink", "FusedOperator", "PipeStage", "fuse", "fusion_enabled"]

Operator = Callable[[Observable[Any]], Observable[Any]]

# The shape of a step, for the code cache: its kind and the variant of its body.
Shape = tuple[tuple[str, str], ...]

_OFF = {"0", "false", "no", "off"}

# A pump yields to the event loop at least this often, whatever its source does.
PULLS_PER_CHECKPOINT = 128


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
        shape, self._arguments = _shape(self.steps)
        self._build = _builder(shape)
        self._direct = _builder((*shape, ("direct", "")))

    def build(self, observer: Any) -> Callable[[Any], None]:
        """The ``on_next`` of one subscription, with fresh state, sending to ``observer``
        (anything with ``on_next``, ``on_error`` and ``on_completed``)."""
        on_next: Callable[[Any], None] = self._build(observer, self._arguments)
        return on_next

    def build_direct(self, observer: Any, counter: Any, state: Any) -> DirectFunctions:
        """``on_next``, ``on_run`` (the same for each item of a sequence, in order),
        ``pump_async`` and ``pump_sync`` (a pump's loops, the steps inline) for a pipe
        whose pump calls them itself (see ``Pump._subscribe_direct``).

        Each item adds 1 to ``counter.admitted``, as the pipe's inlet would, and outputs
        are appended to ``state.items`` as ``observer.on_next`` (the buffer's ``put``)
        would, which is called only when ``put`` would not simply append (the pipe ended,
        the consumer closed). ``on_run`` returns after an error or the completion.
        ``pump_async(pull, pump)`` is ``Pump._pump_async`` with the steps in its body,
        ``pump_sync(pull, pump)`` ``Pump._pump_sync``.
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


# -- code generation ------------------------------------------------------------------------


def _shape(steps: Sequence[Step]) -> tuple[Shape, tuple[tuple[Any, ...], ...]]:
    """Each step's kind and body variant (what the generated code depends on), and the
    values it is given (what it does not)."""
    shape: list[tuple[str, str]] = []
    for step in steps:
        variant = ""
        if step.kind == "map" and step.args[0] is None:
            variant = "identity"
        elif step.kind == "scan":
            variant = "seed" if step.args[1] is not NotSet else "no_seed"
        elif step.kind == "take_while":
            variant = "inclusive" if step.args[1] else ""
        elif step.kind == "distinct_until_changed":
            variant = ("key" if step.args[0] is not None else "") + (
                "+comparer" if step.args[1] is not None else ""
            )
        shape.append((step.kind, variant))
    return tuple(shape), tuple(step.args for step in steps)


Builder = Callable[..., Any]

DirectFunctions = tuple[
    Callable[[Any], None],
    Callable[[Sequence[Any]], None],
    Callable[[Callable[[], Awaitable[Any]], Any], Awaitable[bool]],
    Callable[[Callable[[], Any], Any], Awaitable[bool]],
]

_BUILDERS: dict[Shape, Builder] = {}


def _builder(shape: Shape) -> Builder:
    build = _BUILDERS.get(shape)
    if build is None:
        namespace: dict[str, Any] = {
            "checkpoint": anyio.lowlevel.checkpoint,
            "PULLS_PER_CHECKPOINT": PULLS_PER_CHECKPOINT,
        }
        exec(compile(_source(shape), f"<rxflow fused {shape}>", "exec"), namespace)
        build = _BUILDERS[shape] = namespace["build"]
    return build


def _source(shape: Shape) -> str:
    """The Python source of ``build(observer, arguments) -> on_next`` for ``shape``; a
    last step ``("direct", "")`` makes ``build(observer, arguments, counter, state)`` (see
    :meth:`FusedOperator.build`)."""
    direct = bool(shape) and shape[-1][0] == "direct"
    if direct:
        shape = shape[:-1]
    setup = [
        f"def build(observer, arguments{', counter, state' if direct else ''}):",
        "    emit = observer.on_next",
        "    fail = observer.on_error",
        "    complete = observer.on_completed",
    ]
    if direct:
        setup.append("    items = state.items")
    state: list[str] = []
    body: list[str] = []
    completes = False  # a take or take_while came earlier: dropping an item must end too

    # SKIP leaves this item (return, or continue in a run's loop); STOP leaves for good.
    def drop() -> list[str]:
        return ["if done:", "    complete()", "    STOP", "SKIP"] if completes else ["SKIP"]

    def guarded(*lines: str) -> list[str]:
        return ["try:", *(f"    {line}" for line in lines), "except Exception as error:",
                "    fail(error)", "    STOP"]  # fmt: skip

    for i, (kind, variant) in enumerate(shape):
        setup.append(f"    a{i} = arguments[{i}]")
        if kind == "map":
            if variant != "identity":
                setup.append(f"    f{i} = a{i}[0]")
                body += guarded(f"value = f{i}(value)")
        elif kind == "starmap":
            setup.append(f"    f{i} = a{i}[0]")
            body += guarded(f"value = f{i}(*value)")
        elif kind == "pluck":
            setup.append(f"    k{i} = a{i}[0]")
            body += guarded(f"value = value[k{i}]")
        elif kind == "pluck_attr":
            setup.append(f"    k{i} = a{i}[0]")
            body += guarded(f"value = getattr(value, k{i})")
        elif kind == "filter":
            setup.append(f"    f{i} = a{i}[0]")
            body += guarded(f"keep = f{i}(value)")
            body += ["if not keep:", *(f"    {line}" for line in drop())]
        elif kind == "scan":
            setup += [f"    f{i} = a{i}[0]", f"    seed{i} = a{i}[1]", f"    s{i} = None",
                      f"    h{i} = False"]  # fmt: skip
            state += [f"s{i}", f"h{i}"]
            if variant == "seed":
                body += guarded(f"if h{i}:", f"    s{i} = f{i}(s{i}, value)", "else:",
                                f"    s{i} = f{i}(seed{i}, value)", f"    h{i} = True")  # fmt: skip
            else:
                body += [
                    f"if h{i}:",
                    *(f"    {line}" for line in guarded(f"s{i} = f{i}(s{i}, value)")),
                ]
                body += ["else:", f"    s{i} = value", f"    h{i} = True"]
            body.append(f"value = s{i}")
        elif kind == "take":
            setup.append(f"    s{i} = a{i}[0]")
            state.append(f"s{i}")
            body += [f"if s{i} > 0:", f"    s{i} -= 1", f"    if not s{i}:", "        done = True",
                     "else:", *(f"    {line}" for line in drop())]  # fmt: skip
            completes = True
        elif kind == "skip":
            setup.append(f"    s{i} = a{i}[0]")
            state.append(f"s{i}")
            body += [f"if s{i} > 0:", f"    s{i} -= 1", *(f"    {line}" for line in drop())]
        elif kind == "take_while":
            setup += [f"    f{i} = a{i}[0]", f"    r{i} = True"]
            state.append(f"r{i}")
            body += [f"if not r{i}:", *(f"    {line}" for line in drop())]
            body += guarded(f"r{i} = f{i}(value)")
            if variant == "inclusive":
                body += [f"if not r{i}:", "    done = True"]
            else:
                body += [f"if not r{i}:", "    complete()", "    STOP"]
            completes = True
        elif kind == "skip_while":
            setup += [f"    f{i} = a{i}[0]", f"    r{i} = False"]
            state.append(f"r{i}")
            body += [
                f"if not r{i}:",
                *(f"    {line}" for line in guarded(f"r{i} = not f{i}(value)")),
            ]
            body += [f"    if not r{i}:", *(f"        {line}" for line in drop())]
        elif kind == "distinct_until_changed":
            setup += [f"    k{i} = a{i}[0]", f"    c{i} = a{i}[1]", f"    s{i} = None",
                      f"    h{i} = False"]  # fmt: skip
            state += [f"s{i}", f"h{i}"]
            body += guarded(f"key = k{i}(value)") if "key" in variant else ["key = value"]
            compare = f"c{i}(s{i}, key)" if "comparer" in variant else f"s{i} == key"
            body += [f"if h{i}:", *(f"    {line}" for line in guarded(f"equal = {compare}"))]
            body += ["    if equal:", *(f"        {line}" for line in drop())]
            body += [f"h{i} = True", f"s{i} = key"]
        else:  # pragma: no cover - FUSABLE and this function change together
            raise AssertionError(f"no fused code for {kind!r} (one of {FUSABLE})")
    shared = [f"nonlocal {', '.join(state)}"] if state else []
    head = ["counter.admitted += 1"] if direct else []
    if completes:
        head.append("done = False")
    if direct:  # PipeProducer.put, inlined: while below capacity, append and wake
        out = ["if len(items) < state.capacity:", "    items.append(value)",
               "    if state.consumer_waiting is not None:", "        state.wake_consumer()",
               "else:", "    emit(value)"]  # fmt: skip
    else:
        out = ["emit(value)"]
    if completes:
        out += ["if done:", "    complete()", "    STOP"]
    steps = [*head, *body, *out]
    lines = [*setup, "    def on_next(value):"]
    lines += _rendered([*shared, *steps], "        ", skip="return")
    if not direct:
        return "\n".join([*lines, "    return on_next"]) + "\n"
    # A run of items at once (Pump._pump_fused_runs): the same steps in a loop.
    lines += ["    def on_run(values):", *(f"        {line}" for line in shared)]
    lines.append("        for value in values:")
    lines += _rendered(steps, "            ", skip="continue")
    # Pump._pump_async and _pump_sync with the steps inline: the same checks, in the same
    # order per item.
    for name, pull, end in (
        ("pump_async", "await pull()", "StopAsyncIteration"),
        ("pump_sync", "pull()", "StopIteration"),
    ):
        lines += [f"    async def {name}(pull, pump):", *(f"        {line}" for line in shared)]
        lines += [
            f"        {line}".replace("await pull()", pull).replace("StopAsyncIteration", end)
            for line in _PUMP_ASYNC_HEAD
        ]
        lines += _rendered(steps, "                ", skip="continue", stop="return False")
        lines += [f"        {line}" for line in _PUMP_ASYNC_TAIL]
    return "\n".join([*lines, "    return on_next, on_run, pump_async, pump_sync"]) + "\n"


_PUMP_ASYNC_HEAD = """\
has_room, wait_for_room = pump._producer.has_room, pump._wait_for_room_held_back
scheduler, limit, countdown = pump.inlet.scheduler, state.limit, PULLS_PER_CHECKPOINT
while True:
    if scheduler.due_now:  # what the last item started that is due now runs first
        try:
            scheduler.run_due()
        except Exception as error:
            pump._fail(error)
            return False
    if state.ended or state.closed:
        return False
    countdown -= 1
    if countdown < 0:  # a source that never awaits still lets other tasks run
        countdown = PULLS_PER_CHECKPOINT
        await checkpoint()
        continue
    if (len(items) >= limit or state.holds) and not has_room():
        await wait_for_room()
        continue
    try:
        value = await pull()
    except StopAsyncIteration:
        return True
    except Exception as error:
        pump._source_failed(error)
        return False
    try:""".splitlines()

_PUMP_ASYNC_TAIL = """\
    except Exception as error:  # from the pipe's end (what Pump._pump_async catches)
        pump._fail(error)
        return False""".splitlines()


def _rendered(lines: list[str], indent: str, *, skip: str, stop: str = "return") -> list[str]:
    rendered = []
    for line in lines:
        statement = line.strip()
        if statement in ("SKIP", "STOP"):
            line = line.replace(statement, skip if statement == "SKIP" else stop)
        rendered.append(indent + line)
    return rendered
