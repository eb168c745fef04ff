"""Every reactivex operator inside open_pipe gives what it gives in plain reactivex.

Each case (conformance_cases.py) runs with a list, an async-generator, an Observable and an
erroring source, on asyncio and on trio, in virtual time; under trio five times, since trio
orders ready tasks differently from run to run. Timed cases are compared to the virtual
timestamp. The cases the issue found broken in the core run in test_core_regressions.py.
"""

from __future__ import annotations

import inspect
import itertools
import re
import threading
from pathlib import Path
from typing import Any

import pytest
import reactivex.operators
from conformance_cases import CASES, CASES_BY_ID, CORE_REGRESSIONS, INHERENT_DIFFERENCES, TIMED
from conformance_harness import (
    KINDS,
    PULLED,
    Case,
    Kind,
    check,
    reference,
    subject_reference,
    untimed,
)
from reactivex import operators as ops

from rxflow.testing import virtual_anyio_backends

DOCS = Path(__file__).resolve().parents[2] / "docs" / "operators.md"


@pytest.fixture(params=virtual_anyio_backends())
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    return request.param


def public_operators() -> set[str]:
    """The operators reactivex exports. ``__all__`` where it has one; and every function
    defined in ``reactivex.operators`` itself, in case one is missing from ``__all__`` (a
    plain ``callable`` filter would take the typing names it imports, such as ``Callable``)."""
    names = set(getattr(reactivex.operators, "__all__", ()))
    for name, value in vars(reactivex.operators).items():
        if (
            not name.startswith("_")
            and inspect.isfunction(value)
            and value.__module__ == reactivex.operators.__name__
        ):
            names.add(name)
    return names


CONFORMING = [case for case in CASES if case.id not in CORE_REGRESSIONS]


@pytest.mark.anyio
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("case", CONFORMING, ids=[case.id for case in CONFORMING])
async def test_operator_gives_what_reactivex_gives(case: Case, kind: Kind) -> None:
    await check(case, kind, subject_rule=case.id in INHERENT_DIFFERENCES and kind in PULLED)


def test_every_reactivex_operator_has_a_case() -> None:
    """A reactivex release that adds an operator fails here until it gets a case."""
    missing = sorted(public_operators() - {case.operator for case in CASES})
    assert not missing, f"operators of reactivex {reactivex.__version__} without a case: {missing}"


def test_every_case_is_of_a_reactivex_operator() -> None:
    unknown = sorted({case.operator for case in CASES} - public_operators())
    assert not unknown, f"cases of names that reactivex.operators does not export: {unknown}"


def test_case_ids_are_unique() -> None:
    assert len(CASES_BY_ID) == len(CASES)


def test_the_exception_lists_name_cases() -> None:
    unknown = sorted((set(INHERENT_DIFFERENCES) | set(CORE_REGRESSIONS)) - set(CASES_BY_ID))
    assert not unknown, f"not case ids: {unknown}"
    both = sorted(set(INHERENT_DIFFERENCES) & set(CORE_REGRESSIONS))
    assert not both, f"a broken case is not an inherent difference: {both}"


def documented_differences() -> set[str]:
    """The operators in the table of docs/operators.md (a row starts with `name`)."""
    return set(re.findall(r"^\| `ops\.(\w+)", DOCS.read_text(), flags=re.MULTILINE))


def test_the_docs_list_the_inherent_differences() -> None:
    listed = {CASES_BY_ID[case_id].operator for case_id in INHERENT_DIFFERENCES}
    assert documented_differences() == listed


@pytest.mark.parametrize("case_id", sorted(INHERENT_DIFFERENCES))
def test_an_inherent_difference_is_a_difference(case_id: str) -> None:
    """An entry stays in the list only while reactivex itself gives another result with a
    Subject source than with from_iterable, for some source kind."""
    case = CASES_BY_ID[case_id]
    assert any(reference(case, kind) != subject_reference(case, kind) for kind in PULLED)


# -- the harness sees what it must see ---------------------------------------------------------


def reference_then(first: Any, later: Any) -> Any:
    """A case's ``make`` that builds ``first`` for the reference (built first) and ``later``
    for the pipe's runs: a pipe that behaves differently, as a broken core would."""
    calls = 0

    def make() -> list[Any]:
        nonlocal calls
        calls += 1
        return [first() if calls == 1 else later()]

    return make


@pytest.mark.anyio
async def test_the_harness_reports_a_different_result() -> None:
    make = reference_then(lambda: ops.map(abs), lambda: ops.map(lambda x: -abs(x)))
    with pytest.raises(AssertionError, match=r"open_pipe gave:\n.* N -1"):
        await check(Case("map", make, untimed(1, 2)), "list")


@pytest.mark.anyio
async def test_the_harness_reports_a_different_time() -> None:
    make = reference_then(lambda: ops.delay(0.25), lambda: ops.delay(0.3))
    with pytest.raises(AssertionError, match=r"open_pipe gave:\n +0\.43 N 1"):
        await check(Case("delay", make, TIMED), "observable")


@pytest.mark.anyio
async def test_the_harness_reports_a_hang() -> None:
    make = reference_then(lambda: ops.take(1), lambda: ops.concat(reactivex.never()))
    case = Case("take", make, untimed(1, 2))
    with pytest.raises(AssertionError, match=r"open_pipe gave:\n.*\n.*\n +100\.0 H None"):
        await check(case, "observable")


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", virtual_anyio_backends()[1:])  # trio's only
async def test_the_harness_reports_runs_that_differ() -> None:
    calls = itertools.count()

    def make() -> list[Any]:  # the reference and every other run map; the others skip one
        return [ops.map(lambda x: x) if next(calls) % 2 == 0 else ops.skip(1)]

    with pytest.raises(AssertionError, match=r"the runs differ from each other:\n3 run"):
        await check(Case("map", make, untimed(1, 2)), "list")


@pytest.mark.anyio
async def test_the_harness_reports_a_thread_left_behind() -> None:
    timers: list[threading.Timer] = []

    def leave_a_thread() -> None:
        timers.append(threading.Timer(60, lambda: None))
        timers[-1].start()

    case = Case("do_action", lambda: [ops.do_action(on_completed=leave_a_thread)], untimed(1))
    try:
        with pytest.raises(AssertionError, match=r"run 1 left 0 task\(s\) and the threads"):
            await check(case, "list")
    finally:
        for timer in timers:
            timer.cancel()
            timer.join()
