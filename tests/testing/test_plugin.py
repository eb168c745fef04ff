"""The pytest plugin, used as a user would: under pytest-trio's trio_mode and anyio's plugin."""

from __future__ import annotations

import pytest

MARBLE_TESTS = """
from reactivex import operators as ops


def test_sync_marbles(marbles):
    source = marbles.cold("-a-b|")
    marbles.expect(source.pipe(ops.map(str.upper))).to_be("-A-B|")


def test_a_failing_diagram_fails_the_test(marbles):
    marbles.expect(marbles.cold("-a|")).to_be("--a|")
"""

TRIO_MODE_TESTS = """
from reactivex import operators as ops


async def test_pipe_marbles_in_trio_mode(autojump_clock, pipe_marbles):
    result = await pipe_marbles("-a-b|", ops.map(str.upper))
    assert result.output == "-A-B|"
"""

ANYIO_TESTS = """
import pytest
from reactivex import operators as ops
from rxflow.testing import virtual_anyio_backends


@pytest.fixture(params=virtual_anyio_backends())
def anyio_backend(request):
    return request.param


@pytest.mark.anyio
async def test_pipe_marbles_with_anyio(pipe_marbles):
    result = await pipe_marbles("(ab|)", ops.map(str.upper), pace="x--x--x")
    assert result.output == "A--B--|"
"""


def test_the_marbles_fixture_checks_at_the_end_of_the_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_marbles=MARBLE_TESTS)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*expected: --a|*", "*actual:   -a|*"])


def test_it_works_under_pytest_trio_trio_mode(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\ntrio_mode = true\n")
    pytester.makepyfile(test_marbles=MARBLE_TESTS, test_trio_mode=TRIO_MODE_TESTS)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, failed=1)


def test_it_works_under_anyios_plugin_on_both_backends(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_anyio=ANYIO_TESTS)
    result = pytester.runpytest("-p", "no:cacheprovider", "-v")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*asyncio-virtual*PASSED*", "*trio-virtual*PASSED*"])


REAL_TIME_TESTS = """
import pytest
from rxflow.testing import NotVirtualTimeError, check_virtual_time, virtual_anyio_backends

pytestmark = pytest.mark.anyio


@pytest.fixture(params=virtual_anyio_backends())
def anyio_backend(request):
    return request.param


async def test_unmarked_runs_in_virtual_time():
    check_virtual_time()


@pytest.mark.rxflow_real_time
async def test_marked_runs_on_the_real_clock():
    with pytest.raises(NotVirtualTimeError):
        check_virtual_time()


@pytest.mark.rxflow_real_time("trio")
async def test_marked_with_one_backend(anyio_backend):
    assert anyio_backend == "trio"
    with pytest.raises(NotVirtualTimeError):
        check_virtual_time()


@pytest.mark.rxflow_real_time
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_an_explicit_parametrize_wins(anyio_backend):
    assert anyio_backend == "asyncio"


@pytest.mark.rxflow_real_time
class TestAClassOfRealTimeTests:
    async def test_in_a_class(self):
        with pytest.raises(NotVirtualTimeError):
            check_virtual_time()
"""


def test_the_real_time_marker_takes_tests_out_of_virtual_time(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_real_time=REAL_TIME_TESTS)
    result = pytester.runpytest("-p", "no:cacheprovider", "-v", "--strict-markers")
    result.assert_outcomes(passed=8)
    result.stdout.fnmatch_lines_random(
        [
            "*test_unmarked_runs_in_virtual_time[[]asyncio-virtual[]] PASSED*",
            "*test_unmarked_runs_in_virtual_time[[]trio-virtual[]] PASSED*",
            "*test_marked_runs_on_the_real_clock[[]asyncio-real-time[]] PASSED*",
            "*test_marked_runs_on_the_real_clock[[]trio-real-time[]] PASSED*",
            "*test_marked_with_one_backend[[]trio-real-time[]] PASSED*",
            "*test_an_explicit_parametrize_wins[[]asyncio[]] PASSED*",
            "*test_in_a_class[[]asyncio-real-time[]] PASSED*",
            "*test_in_a_class[[]trio-real-time[]] PASSED*",
        ]
    )


def test_the_real_time_marker_refuses_an_unknown_backend(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_bad="""
import pytest

@pytest.mark.anyio
@pytest.mark.rxflow_real_time("curio")
async def test_it():
    pass
"""
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*rxflow_real_time takes backend names*not 'curio'*"])
