"""Fixtures of the contract suite: every test runs once per system (and per anyio backend),
on a channel of its own.

A test states what it needs of a system with ``@needs("capability", ...)``; on a system
that lacks one it is skipped with the system's reason (``"mqtt has no nack_requeue: ..."``),
before anything is made on the server.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

import anyio
import attrs
import pytest

from tests.connectors.conftest import require_service
from tests.connectors.contract.systems import CAPABILITIES, SYSTEMS, Channel, System


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "needs(*capabilities): the contract test runs on systems that have them"
    )


def needs(*capabilities: str) -> pytest.MarkDecorator:
    unknown = set(capabilities) - set(CAPABILITIES)
    assert not unknown, f"unknown capabilities {unknown}; see systems.CAPABILITIES"
    return pytest.mark.needs(*capabilities)


@pytest.fixture(params=SYSTEMS, ids=repr)
def system(request: pytest.FixtureRequest) -> System:
    """The system under test; skipped if the test needs what it lacks."""
    chosen: System = request.param
    for marker in request.node.iter_markers("needs"):
        for capability in marker.args:
            if (why := chosen.missing(capability)) is not None:
                pytest.skip(why)
    return chosen


@attrs.frozen
class Rig:
    """A system with one test's channel: publish into it, open rxflow on it, look at it."""

    system: System
    channel: Channel
    host: str
    port: int

    @property
    def url(self) -> str:
        return self.channel.url

    async def publish(self, *payloads: bytes) -> list[str]:
        return await self.system.publish(self.channel, payloads)

    def source(self, **options: Any) -> AbstractAsyncContextManager[Any]:
        return self.system.source(self.url, self.channel, **options)

    def source_at(self, url: str, **options: Any) -> AbstractAsyncContextManager[Any]:
        return self.system.source(url, self.channel, **options)

    def sink(self) -> AbstractAsyncContextManager[Any]:
        return self.system.sink(self.url, self.channel)

    def sink_at(self, url: str, **options: Any) -> AbstractAsyncContextManager[Any]:
        return self.system.sink(url, self.channel, **options)

    def items(self, payloads: Sequence[bytes]) -> list[Any]:
        return [self.system.item(payload) for payload in payloads]

    async def written(self, count: int) -> list[bytes]:
        return await self.system.written(self.channel, count)

    async def held(self) -> int:
        return await self.system.held(self.channel)

    async def delivered(self, source: Any) -> int:
        return await self.system.delivered(self.channel, source)


@pytest.fixture
async def rig(system: System, anyio_backend: str) -> AsyncIterator[Rig]:
    """The system with a fresh channel, deleted after the test."""
    host, port = require_service(system.service)
    name = f"rxflow_contract_{uuid.uuid4().hex[:12]}"
    channel = Channel(name, system.url(host, port))
    await system.create(channel)
    try:
        yield Rig(system, channel, host, port)
    finally:
        with anyio.CancelScope(shield=True):
            await system.delete(channel)
