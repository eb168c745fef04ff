"""The code of fused operators: one function generated per combination of step kinds.

:class:`rxflow._fusion.FusedOperator` runs its steps through functions generated here once
per *shape* (each step's kind and body variant; the values the steps are given are passed
in), with ``exec``, as ``dataclasses`` does: measured on map -> filter -> scan over 1 M
ints, a generated body ran 4.8 M items/s, a loop over one function per step 2.9 M items/s.

A chain that is one fused stage in a pipe also gets the pump's loops with the steps inline
(``build_direct``): ``on_run`` for a run of items, ``pump_async`` and ``pump_sync`` for a
pulled source. They keep the pump's guarantees while checking as little per item as those
allow:

* Each step gives at most one output per item, so a pump that pulls no more items than the
  buffer has room for keeps the bound without a check per item: ``pump_async`` and
  ``pump_sync`` check the room, the scheduler, the pipe's end and the checkpoint count once
  per *stretch* (as many pulls as the buffer has room for, at most the pulls left before the
  next checkpoint), and read the source with ``async for`` / ``for`` (no bound
  ``__anext__`` call per item); ``on_run`` pushes a run's items until as many outputs as
  the buffer had room for went in.
* ``pump_async``'s source may suspend between two items, and then the consumer may start
  waiting or the pipe may end (its cancellation cannot reach a source that shields its
  await): each item is counted as admitted at once, the pump stops before its steps if the
  pipe ended, and a waiting consumer is woken at each output, not at the stretch's end.
* Nothing else runs during ``on_run`` and ``pump_sync``'s stretch (no await): outputs are
  appended, the consumer is woken once at the end, and ``on_run`` counts its admitted items
  once (exactly, however it ends: the run's iterator says how far it got).

Measured on map -> filter -> scan (benchmarks ``chain``, ``chain_batches``, full size, both
backends, two runs on a shared machine): runs of 256 read in batches went from 0.38-0.44x
the fused loop's own speed to 0.49-0.63x, an async generator read with ``async for`` from
0.88-0.90x synchronous reactivex to 1.05-1.22x.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from string import Template
from typing import Any

import anyio.lowlevel
from reactivex.internal.utils import NotSet

from rxflow._fusion_steps import FUSABLE, Step
from rxflow._handoff import YIELDS

__all__ = [
    "PULLS_PER_CHECKPOINT",
    "Builder",
    "DirectFunctions",
    "Shape",
    "builder",
    "pump_fused_runs",
    "shape_of",
]

# A pump yields to the event loop at least this often, whatever its source does.
PULLS_PER_CHECKPOINT = 128

# The shape of a step, for the code cache: its kind and the variant of its body.
Shape = tuple[tuple[str, str], ...]

Builder = Callable[..., Any]

DirectFunctions = tuple[
    Callable[[Any], None],
    Callable[[Sequence[Any], int, int], int],
    Callable[[AsyncIterator[Any], Any], Awaitable[bool]],
    Callable[[Iterator[Any], Any], Awaitable[bool]],
]

_BUILDERS: dict[Shape, Builder] = {}


def shape_of(steps: Sequence[Step]) -> tuple[Shape, tuple[tuple[Any, ...], ...]]:
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


def builder(shape: Shape) -> Builder:
    """``build(observer, arguments) -> on_next`` for ``shape``; with a last step
    ``("direct", "")``, ``build(observer, arguments, counter, state) -> DirectFunctions``
    (see :meth:`rxflow._fusion.FusedOperator.build_direct`)."""
    build = _BUILDERS.get(shape)
    if build is None:
        namespace: dict[str, Any] = {
            "checkpoint": anyio.lowlevel.checkpoint,
            "async_iterating": _async_iterating,
            "iterating": _iterating,
            "PULLS_PER_CHECKPOINT": PULLS_PER_CHECKPOINT,
            "YIELDS": YIELDS,
        }
        exec(compile(_source(shape), f"<rxflow fused {shape}>", "exec"), namespace)
        build = _BUILDERS[shape] = namespace["build"]
    return build


def _source(shape: Shape) -> str:
    """The Python source of the ``build`` function for ``shape`` (see :func:`builder`)."""
    direct = bool(shape) and shape[-1][0] == "direct"
    if direct:
        shape = shape[:-1]
    setup = [
        f"def build(observer, arguments{', counter, state' if direct else ''}):",
        "    emit = observer.on_next",
        "    fail = observer.on_error",
        "    complete = observer.on_completed",
    ]
    if direct:  # the state's deque is never replaced (see PipeState.items)
        setup += ["    items = state.items", "    append = items.append"]
    state, body, completes = _steps(shape, setup)
    nonlocal_ = [f"nonlocal {', '.join(state)}"] if state else []

    def item(out: list[str], after: Sequence[str] = ()) -> list[str]:
        """One item's steps, then its output: ``out``, the end a take came to, and
        ``after`` (what follows an output)."""
        ending = ["if done:", "    complete()", "    STOP"] if completes else []
        return [*(["done = False"] if completes else []), *body, *out, *ending, *after]

    if not direct:
        lines = [*setup, "    def on_next(value):"]
        lines += _rendered([*nonlocal_, *item(["emit(value)"])], "        ", skip="return")
        return "\n".join([*lines, "    return on_next"]) + "\n"
    # PipeProducer.put, inlined: while the pipe is open (a pulled source's capacity is
    # sys.maxsize, 0 once it ended), append and wake a waiting consumer.
    put = ["if state.capacity:", "    append(value)",
           "    if state.consumer_waiting is not None:", "        state.wake_consumer()",
           "else:", "    emit(value)"]  # fmt: skip
    wake = ["if state.consumer_waiting is not None:", "    state.wake_consumer()"]
    # The source may have awaited: the pipe may have ended meanwhile (a source that shields
    # its await from the cancellation): then the item is left, as put() would leave it, and
    # the pump stops, as it stops between two items.
    open_check = ["if not state.capacity:", "    break"]
    lines = [*setup]
    # on_run stops once `room` outputs went into the buffer.
    room = ["room -= 1", "if not room:", "    break"]
    for template, out, after, skip, stop, replacements in (
        (_ON_NEXT, put, (), "return", "return", {}),
        (_ON_RUN, ["append(value)"], room, "continue", "return len(values)", {}),
        (_PUMP, ["append(value)", *wake], (), "break", "return False",
         {"name": "async", "for": "async for", "iterating": "async_iterating"}),
        (_PUMP, ["append(value)"], (), "break", "return False",
         {"name": "sync", "for": "for", "iterating": "iterating"}),
    ):  # fmt: skip
        template = Template(template).substitute(replacements)
        synchronous = out == ["append(value)"]  # no await in a stretch: one wake at its end
        blocks = {"NONLOCAL": nonlocal_, "STEPS": item(out, after),
                  "OPEN_CHECK": [] if synchronous else open_check,
                  "WAKE_AT_END": wake if synchronous else []}  # fmt: skip
        lines += _expanded(template, blocks, skip, stop)
    return "\n".join([*lines, "    return on_next, on_run, pump_async, pump_sync"]) + "\n"


def _steps(shape: Shape, setup: list[str]) -> tuple[list[str], list[str], bool]:
    """The steps' body for one item (``value`` in, ``value`` out), the names of their
    state, and whether a step (take, take_while) can complete; their setup is appended to
    ``setup``. ``SKIP`` leaves this item (return, or continue in a loop); ``STOP`` leaves
    for good."""
    state: list[str] = []
    body: list[str] = []
    completes = False  # a take or take_while came earlier: dropping an item must end too

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
    return state, body, completes


# The templates of build_direct's functions, inside `build`. A line that is only NONLOCAL,
# STEPS or WAKE_AT_END becomes those lines at its indentation (STEPS: one item's steps and
# output); $name, $for and $iterating are substituted.

# One item, as the inlet would push it: counted, then its steps.
_ON_NEXT = """\
    def on_next(value):
        NONLOCAL
        counter.admitted += 1
        STEPS"""

# The items of a run from `start` on until `room` outputs went into the buffer (each item
# gives at most one, so the bound holds) or the run ends: the position reached, where the
# pump (pump_fused_runs) goes on; it calls it only while the pipe is open. `values` is a
# list or a tuple: its iterator starts at `start` and its length hint says how many items
# were reached (those count as admitted, as inlet.on_next counts each).
_ON_RUN = """\
    def on_run(values, start, room):
        NONLOCAL
        iterator = iter(values)
        if start:
            iterator.__setstate__(start)
        try:
            for value in iterator:
                STEPS
        finally:
            reached = len(values) - iterator.__length_hint__()
            counter.admitted += reached - start
            if state.consumer_waiting is not None:
                state.wake_consumer()
        return reached"""

# Pump._pump_async ($name async) and Pump._pump_sync ($name sync), the steps inline, pulling a
# stretch of items between two checks (see the module's docstring). A wait for room was a
# real wait (has_room() was False): other tasks ran, so the checkpoint count starts again.
_PUMP = """\
    async def pump_$name(iterator, pump):
        NONLOCAL
        has_room, wait_for_room = pump._producer.has_room, pump._wait_for_room_held_back
        scheduler, limit, countdown = pump.inlet.scheduler, state.limit, PULLS_PER_CHECKPOINT
        iterator, wakes = $iterating(iterator), state.consumer_wakes
        while True:
            if scheduler.due_now:  # what the last items started that is due now runs first
                try:
                    scheduler.run_due()
                except Exception as error:
                    pump._fail(error)
                    return False
            if state.ended or state.closed:
                return False
            if countdown <= 0:  # a source that never awaits still lets other tasks run
                countdown = PULLS_PER_CHECKPOINT
                if state.consumer_wakes == wakes:  # ahead of the consumer, it goes on at
                    state.producer_runnable = YIELDS  # once: the consumer yields, not parks
                await checkpoint()
                state.producer_runnable, wakes = 0, state.consumer_wakes
                continue
            stretch = limit - len(items)
            if stretch <= 0 or state.holds:
                if not has_room():
                    await wait_for_room()
                    countdown = PULLS_PER_CHECKPOINT
                    continue
                stretch = 1  # max_buffer_size=0: one item for the waiting consumer
            if stretch > countdown:
                stretch = countdown
            countdown -= stretch
            stop = counter.admitted + stretch  # the stretch's last pull: when it is reached
            try:  # what the loop's header raises is the source's (the steps catch theirs)
                $for value in iterator:
                    try:
                        admitted = counter.admitted + 1
                        counter.admitted = admitted
                        OPEN_CHECK
                        while True:  # one pass: SKIP (break) leaves it
                            STEPS
                            break
                    except Exception as error:  # from the pipe's end (Pump._pump_async's)
                        pump._fail(error)
                        return False
                    if admitted >= stop:
                        break
                else:
                    WAKE_AT_END
                    return True
            except Exception as error:
                pump._source_failed(error)
                return False
            WAKE_AT_END"""


async def pump_fused_runs(
    next_run: Callable[[], Awaitable[Sequence[Any]]],
    push: Callable[[Sequence[Any], int, int], int],
    pump: Any,
) -> bool:
    """``Pump._pump_runs`` for a chain that is one fused stage, ``push`` its ``on_run``:
    each step gives at most one output per item, so the pump pushes a run's items until
    as many outputs as the buffer has room for went in (one when it has none and the
    consumer waits), and the bound holds; it pushes only while the pipe is open, lists or
    tuples (as on_run asks). True when the source is exhausted, False when the pipe ended
    or the source failed."""
    state, producer = pump._state, pump._producer
    items, limit = state.items, state.limit
    scheduler = pump.inlet.scheduler
    countdown, wakes = PULLS_PER_CHECKPOINT, state.consumer_wakes
    run: Sequence[Any] = ()
    start = count = 0
    while True:
        if (len(items) >= limit or state.holds) and not producer.has_room():
            await pump._wait_for_room_held_back()
            if state.ended or state.closed:
                return False
            countdown = PULLS_PER_CHECKPOINT  # a real wait: other tasks ran
            continue
        if start >= count:  # the run is in: pull the next one, there is room for it
            if countdown <= 0:  # runs that come without awaiting (see _PUMP)
                countdown = PULLS_PER_CHECKPOINT
                if state.consumer_wakes == wakes:  # ahead of the consumer (see _PUMP)
                    state.producer_runnable = YIELDS
                await anyio.lowlevel.checkpoint()
                state.producer_runnable, wakes = 0, state.consumer_wakes
            countdown -= 1  # an empty run counts as one item
            try:
                run = await next_run()
            except StopAsyncIteration:
                return True
            except Exception as error:
                pump._source_failed(error)
                return False
            if type(run) is not list and type(run) is not tuple:
                run = list(run)
            start, count = 0, len(run)
            continue
        if state.ended or state.closed:  # while next_run awaited (a shielded await)
            return False
        pushed_from = start
        try:
            start = push(run, start, max(limit - len(items), 1))
            if scheduler.due_now:
                scheduler.run_due()
        except Exception as error:
            pump._fail(error)
            return False
        if state.ended or state.closed:
            return False
        countdown -= start - pushed_from


def _async_iterating(iterator: Any) -> Any:
    """``iterator``, or a wrapper that ``async for`` takes if it has no ``__aiter__``."""
    return iterator if hasattr(type(iterator), "__aiter__") else _AsyncIterating(iterator)


def _iterating(iterator: Any) -> Any:
    """``iterator``, or a wrapper that ``for`` takes if it has no ``__iter__``."""
    return iterator if hasattr(type(iterator), "__iter__") else _Iterating(iterator)


class _AsyncIterating:
    __slots__ = ("_pull",)

    def __init__(self, iterator: Any) -> None:
        self._pull = iterator.__anext__

    def __aiter__(self) -> _AsyncIterating:
        return self

    def __anext__(self) -> Awaitable[Any]:
        return self._pull()  # type: ignore[no-any-return]


class _Iterating:
    __slots__ = ("_pull",)

    def __init__(self, iterator: Any) -> None:
        self._pull = iterator.__next__

    def __iter__(self) -> _Iterating:
        return self

    def __next__(self) -> Any:
        return self._pull()


def _expanded(template: str, blocks: dict[str, list[str]], skip: str, stop: str) -> list[str]:
    lines: list[str] = []
    for line in template.splitlines():
        name = line.strip()
        if name in blocks:
            lines += _rendered(blocks[name], line[: len(line) - len(line.lstrip())], skip=skip,
                               stop=stop)  # fmt: skip
        else:
            lines.append(line)
    return lines


def _rendered(lines: list[str], indent: str, *, skip: str, stop: str = "return") -> list[str]:
    rendered = []
    for line in lines:
        statement = line.strip()
        if statement in ("SKIP", "STOP"):
            line = line.replace(statement, skip if statement == "SKIP" else stop)
        rendered.append(indent + line)
    return rendered
