"""rxflow.connectors names every connector, and imports a client only when it is used."""

from __future__ import annotations

import subprocess
import sys

import pytest

import rxflow.connectors


def test_every_exported_name_resolves_to_a_connector() -> None:
    connectors = [name for name in rxflow.connectors.__all__ if name.islower()]
    assert len(connectors) == 28
    for name in connectors:
        assert callable(getattr(rxflow.connectors, name)), name


def test_importing_the_package_imports_no_client() -> None:
    clients = ["nats", "redis", "aiomqtt", "aio_pika", "asyncpg", "httpx", "aiokafka"]
    check = f"import sys, rxflow.connectors; print([c for c in {clients!r} if c in sys.modules])"
    out = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'pulsar_source'"):
        rxflow.connectors.pulsar_source  # noqa: B018
