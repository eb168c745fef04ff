"""Keyed windows over work-sharing sources (Redis consumer groups, JetStream durable
consumers): a Flow refuses to run them while other workers read the source, against the
real local Redis and nats-server, on both backends.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import anyio
import anyio.abc
import nats
import pytest
import redis

import rxflow.flow._shared_work
from rxflow import Flow, Window, session, tumbling
from rxflow.connectors import Message
from rxflow.connectors.nats import jetstream_source
from rxflow.connectors.redis import RELEASED_CONSUMER, redis_stream_source
from rxflow.errors import KeyedWindowsOnSharedWorkError
from tests.connectors.conftest import require_service
from tests.connectors.support import wait_until

pytestmark = pytest.mark.anyio

GROUP = "sessions"
USERS = ["ann", "bob", "cid"]


def user_of(message: Message[Any]) -> str:
    return str(message.value["user"])


def clicks(count: int) -> list[dict[str, Any]]:
    return [{"user": USERS[n % len(USERS)], "n": n} for n in range(count)]


# -- the systems ---------------------------------------------------------------------------


class RedisGroup:
    """One test's stream, read by the consumers of group ``GROUP``."""

    def __init__(self) -> None:
        host, port = require_service("redis")
        self.stream = f"rxflow-test-{uuid.uuid4().hex[:12]}"
        self.url = f"redis://{host}:{port}/0"
        self.client = redis.Redis(host=host, port=port)

    def source(self, worker: str, **options: Any) -> AbstractAsyncContextManager[Any]:
        options.setdefault("block_ms", 200)
        return redis_stream_source(self.url, self.stream, GROUP, worker, codec="json", **options)

    async def add(self, items: list[dict[str, Any]]) -> None:
        for item in items:
            self.client.xadd(self.stream, {"data": json.dumps(item)})

    def consumers(self) -> set[str]:
        try:
            infos = self.client.xinfo_consumers(self.stream, GROUP)
        except redis.ResponseError:  # no group yet
            return set()
        return {info["name"].decode() for info in infos}

    def close(self) -> None:
        self.client.delete(self.stream)
        self.client.close()


@pytest.fixture
def rd() -> Iterator[RedisGroup]:
    group = RedisGroup()
    yield group
    group.close()


class JetStream:
    """One test's stream and the durable consumer ``GROUP`` its workers share."""

    def __init__(self) -> None:
        host, port = require_service("nats")
        self.url = f"nats://{host}:{port}"
        self.stream = f"rxflow_test_{uuid.uuid4().hex[:12]}"
        asyncio.run(self._admin("create"))

    def source(self, worker: str, **options: Any) -> AbstractAsyncContextManager[Any]:
        del worker  # a durable's workers have no names
        return jetstream_source(
            self.url, self.stream, f"{self.stream}.>", GROUP, codec="json", fetch_timeout=0.5
        )

    async def add(self, items: list[dict[str, Any]]) -> None:
        await anyio.to_thread.run_sync(asyncio.run, self._admin("publish", items))

    async def _admin(self, action: str, items: list[dict[str, Any]] | None = None) -> None:
        client = await nats.connect(self.url)
        try:
            js = client.jetstream()
            if action == "create":
                await js.add_stream(name=self.stream, subjects=[f"{self.stream}.>"])
            elif action == "publish":
                for item in items or []:
                    await js.publish(f"{self.stream}.clicks", json.dumps(item).encode())
            else:
                await js.delete_stream(self.stream)
        finally:
            await client.close()

    def close(self) -> None:
        asyncio.run(self._admin("delete"))


@pytest.fixture
def js() -> Iterator[JetStream]:
    stream = JetStream()
    yield stream
    stream.close()


@pytest.fixture(params=["redis", "jetstream"])
def system(request: pytest.FixtureRequest) -> Iterator[RedisGroup | JetStream]:
    made: RedisGroup | JetStream = RedisGroup() if request.param == "redis" else JetStream()
    yield made
    made.close()


@asynccontextmanager
async def another_worker(system: RedisGroup | JetStream, name: str = "w2") -> AsyncIterator[None]:
    """Another worker of the group, reading (and acknowledging) in a task of its own."""
    async with system.source(name) as source, anyio.create_task_group() as tg:

        async def read() -> None:
            async for message in source:
                await message.ack()

        tg.start_soon(read)
        if isinstance(system, RedisGroup):  # Redis knows it once it read
            await wait_until(lambda: name in system.consumers())
        try:
            yield
        finally:
            tg.cancel_scope.cancel()


def keyed_flow(source: Any, windows: list[Window[Any]], *, keyed: bool = True) -> Flow:
    stage = session(user_of, 60.0) if keyed else tumbling(60.0)
    return Flow("clicks").source(source, name="clicks").pipe(stage).sink(windows.append)


async def run_until_read(flow: Flow, count: int) -> None:
    """Run ``flow`` until its source handed out ``count`` messages, then stop it gracefully
    (open windows are written)."""
    handle = flow.prepare()
    async with anyio.create_task_group() as tg:
        tg.start_soon(handle.run)
        await wait_until(lambda: handle.snapshot()["clicks"].emitted >= count)
        handle.stop()
    await handle.wait()


# -- both systems ------------------------------------------------------------------------


async def test_keyed_windows_refuse_to_run_beside_another_worker(
    system: RedisGroup | JetStream,
) -> None:
    await system.add(clicks(30))
    windows: list[Window[Any]] = []
    async with another_worker(system):
        flow = keyed_flow(system.source("w1"), windows)
        with pytest.raises(KeyedWindowsOnSharedWorkError) as raised:
            await flow.run()
    error = raised.value
    assert error.other_workers == 1
    assert error.stage == "session"
    name = "redis:" if isinstance(system, RedisGroup) else "nats:"
    assert name in error.source
    message = str(error)
    for said in ("'clicks'", "'session'", "another worker", "single worker", "Kafka"):
        assert said in message, said
    assert "kafka_repartition" in message
    assert windows == []
    assert flow.snapshot()["clicks"].emitted == 0  # refused before it read anything


async def test_keyed_windows_run_on_a_single_worker(system: RedisGroup | JetStream) -> None:
    await system.add(clicks(30))
    windows: list[Window[Any]] = []
    await run_until_read(keyed_flow(system.source("w1"), windows), 30)
    assert sorted(window.key for window in windows) == USERS
    assert sum(len(window) for window in windows) == 30


async def test_windows_without_a_key_run_beside_other_workers(
    system: RedisGroup | JetStream,
) -> None:
    windows: list[Window[Any]] = []
    async with another_worker(system):
        handle = keyed_flow(system.source("w1"), windows, keyed=False).prepare()
        async with anyio.create_task_group() as tg:
            tg.start_soon(handle.run)
            await wait_until(lambda: handle.ready)
            handle.stop()
    await handle.wait()  # ran, and ended without an error


async def test_a_worker_that_starts_later_stops_the_keyed_flow(
    system: RedisGroup | JetStream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rxflow.flow._shared_work, "CHECK_EVERY_S", 0.2)
    await system.add(clicks(9))
    windows: list[Window[Any]] = []
    handle = keyed_flow(system.source("w1"), windows).prepare()

    async def join_once_it_read() -> None:
        await wait_until(lambda: handle.snapshot()["clicks"].emitted >= 9)
        async with another_worker(system):
            await anyio.sleep_forever()

    async with anyio.create_task_group() as tg:
        tg.start_soon(join_once_it_read)
        with pytest.raises(KeyedWindowsOnSharedWorkError) as raised:
            await handle.run()
        tg.cancel_scope.cancel()
    assert raised.value.other_workers == 1
    assert windows == []  # a failed flow writes no partial window


async def _counts(source: Any, expected: int) -> bool:
    return bool(await source.other_workers() == expected)


# -- Redis -------------------------------------------------------------------------------


async def test_redis_counts_consumers_that_read_recently(rd: RedisGroup) -> None:
    async with rd.source("w1") as source:
        assert source.shares_work is True
        assert await source.other_workers() == 0
        # Consumers that read just now count, but not the one that holds released entries.
        await rd.add(clicks(2))
        rd.client.xreadgroup(GROUP, "live", {rd.stream: ">"}, count=1)
        rd.client.xreadgroup(GROUP, RELEASED_CONSUMER, {rd.stream: ">"}, count=1)
        assert await source.other_workers() == 1
    # Seen within claim_idle_ms, and within at least two block_ms plus 10 s.
    for options, within in (
        ({}, 60_000),
        ({"claim_idle_ms": 5000}, 10_400),
        ({"claim_idle_ms": None, "block_ms": 100}, 10_200),
    ):
        async with rd.source("w1", **options) as source:
            assert source._group.seen_within_ms == within, options


async def test_redis_check_failures_are_logged_and_retried(
    rd: RedisGroup, caplog: pytest.LogCaptureFixture
) -> None:
    # The group is deleted under the running flow: XINFO CONSUMERS fails; the flow says so
    # and goes on (its own reads fail, or not, on their own terms).
    watch = rxflow.flow._shared_work.SharedWorkWatch
    async with rd.source("w1") as source:
        rd.client.xgroup_destroy(rd.stream, GROUP)
        check = watch("clicks", ["session"], [("source 'clicks'", source)])
        with caplog.at_level(logging.WARNING, logger="rxflow"):
            await check.check()
    assert "could not count the other workers of source 'clicks'" in caplog.text


# -- JetStream -----------------------------------------------------------------------------


@asynccontextmanager
async def plain_client_pulling(js: JetStream) -> AsyncIterator[None]:
    """A nats-py client that is not rxflow, waiting in pulls on the durable (on its own
    loop, in a thread, the same under both backends)."""
    started, stop = threading.Event(), threading.Event()

    async def pull() -> None:
        client = await nats.connect(js.url)
        try:
            sub = await client.jetstream().pull_subscribe(
                f"{js.stream}.>", durable=GROUP, stream=js.stream
            )
            started.set()
            while not stop.is_set():
                with contextlib.suppress(nats.errors.TimeoutError):
                    await sub.fetch(1, timeout=0.3)
        finally:
            await client.close()

    async with anyio.create_task_group() as tg:
        tg.start_soon(anyio.to_thread.run_sync, asyncio.run, pull())
        try:
            await wait_until(started.is_set)
            yield
        finally:
            stop.set()


async def test_jetstream_sees_a_client_waiting_for_messages(js: JetStream) -> None:
    # A client that is not rxflow does not answer the roll call; its pull request waiting at
    # the server is what shows it.
    async with js.source("w1") as source:
        assert await source.other_workers() == 0
        async with plain_client_pulling(js):
            await wait_until(lambda: _counts(source, 1))
        await wait_until(lambda: _counts(source, 0))


async def test_jetstream_roll_call_sees_a_busy_worker(js: JetStream) -> None:
    # A worker with no pull request waiting (it is not reading now) still answers.
    async with js.source("w1") as source:
        assert source.shares_work is True
        async with js.source("w2") as busy:
            assert (await busy.consumer_info()).num_waiting == 0
            assert await source.other_workers() == 1
            assert await busy.other_workers() == 1
        assert await source.other_workers() == 0  # it left
