"""The Kafka source when things go wrong, on asyncio and trio: a broker connection dropped
and resumed, a broker gone for good, a client that must not prefetch past its bound, bad
arguments, unreachable brokers, credentials, and cancellation.

The network faults need a broker whose every connection goes through a proxy: a tansu of
their own (``TansuBroker(advertised_port=proxy.port)``), so they are skipped when
``RXFLOW_KAFKA_BOOTSTRAP`` names the broker instead.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.abc
import pytest

from rxflow.connectors.kafka import kafka_source
from rxflow.errors import ServiceUnavailableError
from tests.connectors.conftest import require_service
from tests.connectors.kafka_broker import TansuBroker, free_port
from tests.connectors.support import (
    PASSWORD,
    TcpProxy,
    after,
    assert_no_secret,
    black_hole,
    failure_of,
    leftovers_of,
    nothing_printed,
    random_delays,
    refused_port,
    take,
    wait_until,
)
from tests.connectors.test_kafka_source import SESSION, Topic, where

pytestmark = pytest.mark.anyio


class CountingProxy(TcpProxy):
    """A :class:`TcpProxy` that counts the bytes the server sent to its clients."""

    received = 0

    async def _forward(self, client: anyio.abc.SocketStream) -> None:
        self.connections += 1
        server = await anyio.connect_tcp("127.0.0.1", self.target_port)
        async with client, server, anyio.create_task_group() as tg:
            self._links.add(tg.cancel_scope)

            async def pipe(a: anyio.abc.SocketStream, b: anyio.abc.SocketStream) -> None:
                try:
                    async for chunk in a:
                        if a is server:
                            self.received += len(chunk)
                        await b.send(chunk)
                except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                    pass
                finally:
                    tg.cancel_scope.cancel()

            tg.start_soon(pipe, client, server)
            tg.start_soon(pipe, server, client)


@contextlib.asynccontextmanager
async def proxied_broker(proxy: TcpProxy | None = None) -> AsyncIterator[tuple[str, TcpProxy]]:
    """A tansu of this test's own, every connection to it through ``proxy``; its bootstrap
    address (the proxy's) and the proxy."""
    if os.environ.get("RXFLOW_KAFKA_BOOTSTRAP"):
        pytest.skip("needs a broker of its own behind a proxy: runs on tansu only")
    require_service("kafka")  # tansu is there (or the reason it is not)
    port = free_port()
    async with anyio.create_task_group() as tg:
        proxy = proxy or TcpProxy(port)
        proxy.target_port = port
        await tg.start(proxy.run)
        broker = TansuBroker(port, advertised_port=proxy.port)
        await anyio.to_thread.run_sync(broker.start)
        try:
            yield broker.bootstrap, proxy
        finally:
            await anyio.to_thread.run_sync(broker.stop)
            tg.cancel_scope.cancel()


async def test_a_dropped_connection_is_resumed_and_nothing_is_lost() -> None:
    async with proxied_broker() as (bootstrap, proxy):
        topic = Topic(bootstrap, partitions=2)
        await topic.create()
        produced = set(await topic.spread(200, size=100))
        acked: set[tuple[int, int]] = set()
        # Small fetches (read_ahead_bytes): the client has to fetch again after the drop.
        async with topic.source(batch=10, read_ahead_bytes=1024) as source:
            messages = aiter(source)
            for message in await take(messages, 50):
                await message.ack()
                acked.add(where(message))
            connections = proxy.connections
            proxy.drop()  # every connection to the broker, mid-stream
            with anyio.fail_after(30):
                async for message in messages:
                    await message.ack()
                    acked.add(where(message))
                    if acked >= produced:
                        break
            assert proxy.connections > connections  # it reconnected
        assert acked == produced
        assert await topic.committed() == {0: 100, 1: 100}


async def test_a_broker_gone_for_good_is_a_clear_error_in_bounded_time() -> None:
    async with proxied_broker() as (bootstrap, proxy):
        topic = Topic(bootstrap, partitions=1)
        await topic.create()
        await topic.spread(30, size=100)
        started = time.monotonic()
        with pytest.raises(ServiceUnavailableError) as raised:
            async with topic.source(read_ahead_bytes=1024, reconnect_timeout=2) as source:
                messages = aiter(source)
                await take(messages, 5)
                proxy.cut()  # dropped, and nothing listens any more
                started = time.monotonic()
                with anyio.fail_after(30):
                    async for message in messages:
                        await message.ack()
    assert time.monotonic() - started < 20
    assert f"kafka at {bootstrap} was lost" in str(raised.value)


async def test_the_client_does_not_fetch_ahead_of_a_slow_consumer() -> None:
    """What the broker sends the client stays within what the consumer took, plus the
    read-ahead bounds (the source's and the client's, both sized by read_ahead_bytes):
    between fetches the partitions are paused."""
    proxy = CountingProxy(0)
    async with proxied_broker(proxy) as (bootstrap, _):
        topic = Topic(bootstrap, partitions=2)
        await topic.create()
        await topic.spread(600, size=1000)  # 600 kB
        async with topic.source(batch=10, read_ahead_bytes=4000) as source:
            messages = aiter(source)
            for message in await take(messages, 20):
                await message.ack()
            before = proxy.received
            await anyio.sleep(2)  # time enough for a client that prefetches to do so
            # 20 records taken, and at most one fetch (4 kB per partition, one record over
            # each) read ahead: far from the topic's 600 kB.
            assert proxy.received - before < 2000  # heartbeats only, nothing fetched
            assert proxy.received < 20 * 1000 + 2 * 2 * 5000 + 30_000
            assert source.buffered <= 10


@pytest.mark.parametrize(
    ("bootstrap", "error", "words"),
    [
        ("localhost", ValueError, "is not 'host:port'"),
        ("kafka://localhost:9092", ValueError, "without a scheme"),
        ("", ValueError, "bootstrap must be a non-empty str"),
        ([], TypeError, "non-empty list"),
    ],
)
async def test_a_bad_bootstrap_is_refused_naming_it(
    bootstrap: Any, error: type, words: str
) -> None:
    with pytest.raises(error, match=words):
        async with kafka_source(bootstrap, "t", "g"):
            pass  # pragma: no cover


@pytest.mark.parametrize(
    ("topics", "options", "words"),
    [
        ([], {}, "topics must be a topic name or a non-empty list"),
        ("", {}, "topics must be a non-empty str"),
        ("t", {"key_codec": "json"}, "key_codec must be 'text' or 'bytes'"),
        ("t", {"batch": 0}, "batch must be an int of 1 or more"),
        ("t", {"auto_offset_reset": "oldest"}, "auto_offset_reset must be"),
        ("t", {"security_protocol": "TLS"}, "security_protocol must be one of"),
        ("t", {"sasl_plain_username": "u"}, "SASL settings need security_protocol"),
    ],
)
async def test_bad_arguments_are_refused_naming_them(
    topics: Any, options: dict[str, Any], words: str
) -> None:
    with pytest.raises((ValueError, TypeError), match=words):
        async with kafka_source("localhost:9092", topics, "g", **options):
            pass  # pragma: no cover


async def test_an_unreachable_broker_is_a_clear_error_at_once() -> None:
    port = refused_port()
    started = time.monotonic()
    with pytest.raises(ServiceUnavailableError, match=f"kafka at 127.0.0.1:{port} is not"):
        async with kafka_source(f"127.0.0.1:{port}", "t", "g"):
            pass  # pragma: no cover
    assert time.monotonic() - started < 5


async def test_a_broker_that_never_answers_is_a_clear_error_within_connect_timeout() -> None:
    with black_hole() as port:
        started = time.monotonic()
        with pytest.raises(ServiceUnavailableError, match=f"kafka at 127.0.0.1:{port}"):
            async with kafka_source(f"127.0.0.1:{port}", "t", "g", connect_timeout=1):
                pass  # pragma: no cover
        assert time.monotonic() - started < 8  # the timeout, and a bounded close


@pytest.mark.parametrize("where", ["refused", "black hole", "broker"])
async def test_credentials_never_show_in_errors_or_logs(
    where: str, caplog: pytest.LogCaptureFixture
) -> None:
    secured = {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "PLAIN",
        "sasl_plain_username": "user",
        "sasl_plain_password": PASSWORD,
        "connect_timeout": 2,
    }
    with contextlib.ExitStack() as stack:
        if where == "refused":
            bootstrap = f"127.0.0.1:{refused_port()}"
        elif where == "black hole":
            bootstrap = f"127.0.0.1:{stack.enter_context(black_hole())}"
        else:  # a broker without SASL: the handshake fails
            host, port = require_service("kafka")
            bootstrap = f"{host}:{port}"
        error = await failure_of(lambda: kafka_source(bootstrap, "t", "g", **secured))
    assert isinstance(error, ServiceUnavailableError)
    assert bootstrap in str(error)
    assert_no_secret(error, caplog)


async def test_repr_of_the_options_masks_the_password() -> None:
    from rxflow.connectors.kafka._client import client_options

    options = client_options(
        "t",
        "k:9092",
        security_protocol="SASL_PLAINTEXT",
        sasl_plain_username="u",
        sasl_plain_password=PASSWORD,
    )
    assert PASSWORD not in repr(options)
    assert PASSWORD not in str(options)


async def test_cancelling_at_any_point_leaves_nothing_behind(
    capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """Cancelled anywhere (connecting, joining, reading, acking, committing), the source
    leaves no task, thread or socket, and nothing is printed or logged."""
    host, port = require_service("kafka")
    topic = Topic(f"{host}:{port}", partitions=2)
    await topic.create()
    await topic.spread(50)

    async def cancels(delays: list[float | int]) -> None:
        for delay in delays:
            async with anyio.create_task_group() as tg:

                async def use() -> None:
                    async with topic.source(batch=5) as source:
                        async for message in source:
                            await message.ack()

                tg.start_soon(use)
                await after(delay)
                tg.cancel_scope.cancel()

    with nothing_printed(capfd, caplog) as noise:
        leftovers = await leftovers_of(
            cancels, random_delays(12, longest=4.0), within=120, ignore_tasks=()
        )
    assert leftovers.nothing, leftovers.describe("cancelling kafka_source")
    assert noise == [], "cancelling kafka_source printed or reported:\n" + "\n".join(noise)


async def test_what_a_cancelled_reader_acked_is_committed() -> None:
    host, port = require_service("kafka")
    topic = Topic(f"{host}:{port}", partitions=1)
    await topic.create()
    await topic.spread(20)
    acked = 0

    async def reader() -> None:
        nonlocal acked
        async with topic.source(batch=3, **SESSION) as source:
            async for message in source:
                await message.ack()
                acked += 1

    async with anyio.create_task_group() as tg:
        tg.start_soon(reader)
        await wait_until(lambda: acked >= 7)
        tg.cancel_scope.cancel()
    assert (await topic.committed())[0] == acked
