"""The marble kit's async tests run in virtual time on both backends."""

from __future__ import annotations

from typing import Any

import pytest

from rxflow.testing import virtual_anyio_backends

pytest_plugins = ["pytester"]


@pytest.fixture(params=virtual_anyio_backends())
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    return request.param
