"""Operators issue #16 found broken in the core (since fixed), stated as reactivex gives them.

They are the same kind of case as in test_conformance.py, grouped here so that whoever works
on the core can run them together: ``pytest tests/conformance/test_core_regressions.py``.
"""

from __future__ import annotations

from typing import Any

import pytest
from conformance_cases import CASES_BY_ID, CORE_REGRESSIONS
from conformance_harness import KINDS, Case, Kind, check

from rxflow.testing import virtual_anyio_backends

REGRESSIONS = [CASES_BY_ID[case_id] for case_id in CORE_REGRESSIONS]


@pytest.fixture(params=virtual_anyio_backends())
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    return request.param


@pytest.mark.anyio
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("case", REGRESSIONS, ids=CORE_REGRESSIONS)
async def test_operator_gives_what_reactivex_gives(case: Case, kind: Kind) -> None:
    await check(case, kind)
