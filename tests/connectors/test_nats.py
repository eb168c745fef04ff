"""NATS JetStream source and sink against a real nats-server (with JetStream), both backends."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel
import nats
import nats.js.api
import pytest
from reactivex import operators as ops

from rxflow import Flow, open_pipe, tumbling
from rxflow.connectors import Message
from rxflow.connectors.nats import JetStreamSource, jetstream_sink, jetstream_source
from rxflow.errors import ServiceUnavailableError
from rxflow.state import SQLiteStore
from tests.connectors.conftest import require_service
from tests.connectors.support import take, tcp_proxy, wait_until

pytestmark = pytest.mark.anyio


@pytest.fixture
def url() -> str:
    host, port = require_service("nats")
    return f"nats://{host}:{port}"


async def _admin(url: str, action: str, name: str) -> None:
    client = await nats.connect(url)
    try:
        js = client.jetstream()
        if action == "create":
            await js.add_stream(name=name, subjects=[f"{name}.>"])
        else:
            await js.delete_stream(name)
    finally:
        await client.close()


def admin(url: str, action: str, name: str) -> None:
    """Create or delete a stream with a raw client on its own loop (from any thread)."""
    asyncio.run(_admin(url, action, name))


@pytest.fixture
def stream(url: str) -> Iterator[str]:
    """A fresh stream capturing ``<name>.>``, deleted after the test."""
    name = f"rxflow_test_{uuid.uuid4().hex[:12]}"
    admin(url, "create", name)
    yield name
    admin(url, "delete", name)


async def publish(url: str, subject: str, items: list[Any], encoder: str = "auto") -> None:
    async with jetstream_sink(url, subject, encoder=encoder) as sink:  # type: ignore[arg-type]
        await sink.send_batch(items)


async def all_acked(source: JetStreamSource) -> None:
    """Wait until JetStream has processed our acks (``msg.ack()`` does not wait for it)."""

    async def none_pending() -> bool:
        return bool((await source.consumer_info()).num_ack_pending == 0)

    await wait_until(none_pending)


def has_even_id(message: Message[Any]) -> bool:
    return bool(message.value["id"] % 2 == 0)


async def test_round_trip_through_a_pipe(url: str, stream: str) -> None:
    subject = f"{stream}.orders"
    before = time.time()
    async with jetstream_sink(url, subject) as sink:
        assert sink.batch_size > 0
        await sink.send({"id": 0})
        await sink.send_batch([{"id": n} for n in range(1, 20)])
        assert sink.sent == 20

    async with (
        jetstream_source(url, stream, f"{stream}.>", "reader", codec="json", batch=8) as source,
        open_pipe(source, ops.filter(has_even_id)) as evens,
    ):
        seen = []
        with anyio.fail_after(10):
            async for message in evens:
                seen.append(message.value["id"])
                assert message.key == subject
                assert message.source == f"nats:{stream}/reader"
                assert message.timestamp is not None
                assert message.timestamp >= before - 1
                await message.ack()
                if len(seen) == 10:
                    break
        assert sorted(seen) == list(range(0, 20, 2))  # a batch is published concurrently
        assert source.decoder.decoded == 20
        info = await source.consumer_info()
        assert info.num_pending == 0


async def test_a_pipe_without_buffer_fetches_only_for_its_consumer(url: str, stream: str) -> None:
    await publish(url, f"{stream}.n", list(range(100)))
    async with (
        jetstream_source(url, stream, f"{stream}.>", "piped", codec="json", batch=5) as source,
        open_pipe(source, ops.map(lambda m: m), max_buffer_size=0) as pipe,
    ):
        with anyio.fail_after(10):
            for _ in range(3):
                await pipe.receive()
        info = await source.consumer_info()
        assert source.fetches == 1
        assert info.delivered.consumer_seq == 5
        assert info.num_pending == 95


async def test_unacked_messages_are_delivered_again_after_ack_wait(url: str, stream: str) -> None:
    await publish(url, f"{stream}.n", list(range(5)))
    async with jetstream_source(
        url, stream, f"{stream}.>", "redo", codec="json", batch=5, ack_wait=1
    ) as source:
        first = await take(source, 5)
        for message in first:
            assert message.settlement.redelivered is False
            if message.value % 2 == 0:
                await message.ack()
        # 1 and 3 were not acked: JetStream hands them out again once ack_wait passed.
        again = await take(source, 2)
        assert sorted(m.value for m in again) == [1, 3]
        for message in again:
            assert message.settlement.redelivered is True  # JetStream's num_delivered
            # The same stream sequence on every delivery: a flow counts it once.
            assert message.identity == first[message.value].identity
            await message.ack()
        await all_acked(source)


async def test_acks_made_just_before_a_cancellation_reach_the_server(url: str, stream: str) -> None:
    await publish(url, f"{stream}.n", list(range(5)))
    with anyio.CancelScope() as scope:
        async with jetstream_source(url, stream, f"{stream}.>", "cut", batch=5) as source:
            for message in await take(source, 5):
                await message.ack()  # under trio: queued, handed over by a task
            scope.cancel()
            await anyio.sleep_forever()
    async with jetstream_source(url, stream, f"{stream}.>", "cut") as source:
        await all_acked(source)  # not 5 pending until ack_wait (30 s) passes
        assert (await source.consumer_info()).num_pending == 0


async def test_a_connection_lost_mid_stream_loses_no_message(url: str, stream: str) -> None:
    ids = list(range(30))
    await publish(url, f"{stream}.n", ids)
    seen: list[int] = []
    async with jetstream_source(
        url, stream, f"{stream}.>", "fault", codec="json", batch=5, ack_wait=1
    ) as source:
        for message in await take(source, 10):
            seen.append(message.value)
            if message.value < 7:
                await message.ack()
        await source.host.call(source.connection.close)  # the connection goes away
        # Under trio, acks queued when the connection closed are reported instead.
        with pytest.raises(ServiceUnavailableError, match=r"closed|could not be sent"):
            await take(source, 1)
    # A new worker on the same durable gets everything that was not acked.
    async with jetstream_source(
        url, stream, f"{stream}.>", "fault", codec="json", batch=5, ack_wait=1
    ) as source:
        with anyio.fail_after(10):
            async for message in source:
                seen.append(message.value)
                await message.ack()
                if set(seen) == set(ids):
                    break
    assert set(seen) == set(ids)


async def test_a_dropped_connection_is_resumed_and_loses_nothing(url: str, stream: str) -> None:
    ids = set(range(40))
    await publish(url, f"{stream}.n", sorted(ids))
    seen: set[int] = set()
    async with (
        tcp_proxy(require_service("nats")[1]) as relay,
        jetstream_source(
            f"nats://127.0.0.1:{relay.port}",
            stream,
            f"{stream}.>",
            "dropped",
            codec="json",
            batch=5,
            ack_wait=1,
            fetch_timeout=1,
            connect_options={"reconnect_time_wait": 0.05},
        ) as source,
    ):
        with anyio.fail_after(15):
            async for message in source:
                seen.add(message.value)
                await message.ack()
                if len(seen) == 10 and relay.connections == 1:
                    relay.drop()  # nats-py reconnects through the relay
                if seen == ids:
                    break
    assert relay.connections >= 2


async def test_the_error_hides_credentials_in_the_url() -> None:
    with anyio.fail_after(10), pytest.raises(ServiceUnavailableError) as raised:
        async with jetstream_sink("nats://ann:s3cret@127.0.0.1:1", "s", connect_timeout=0.5):
            pass  # pragma: no cover
    assert "s3cret" not in str(raised.value)
    assert "***@127.0.0.1:1" in str(raised.value)


async def test_a_missing_stream_says_how_to_create_it(url: str) -> None:
    missing = f"rxflow_missing_{uuid.uuid4().hex[:8]}"
    with pytest.raises(ValueError, match="create=True"):
        async with jetstream_source(url, missing, f"{missing}.>", "d"):
            pass  # pragma: no cover


async def test_create_makes_the_stream(url: str) -> None:
    name = f"rxflow_test_{uuid.uuid4().hex[:12]}"
    try:
        async with jetstream_sink(url, f"{name}.a", stream=name, create=True) as sink:
            await sink.send("hello")
        async with jetstream_source(url, name, f"{name}.a", "d", create=True, codec="text") as src:
            (message,) = await take(src, 1)
            assert message.value == "hello"
            await message.ack()
    finally:
        await anyio.to_thread.run_sync(admin, url, "delete", name)


async def test_confirmed_acks_are_processed_when_ack_returns(url: str, stream: str) -> None:
    await publish(url, f"{stream}.n", list(range(5)))
    async with jetstream_source(url, stream, f"{stream}.>", "sure", confirm_acks=True) as source:
        for message in await take(source, 5):
            await message.ack()
        assert (await source.consumer_info()).num_ack_pending == 0


async def test_the_sink_checks_its_stream(url: str, stream: str) -> None:
    missing = f"rxflow_missing_{uuid.uuid4().hex[:8]}"
    with pytest.raises(ValueError, match="no stream"):
        async with jetstream_sink(url, f"{stream}.x", stream=missing):
            pass  # pragma: no cover
    async with jetstream_sink(url, f"{stream}.x", stream=stream) as sink:
        await sink.send("kept")
        assert sink.sent == 1


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"batch": 0}, ValueError, "batch"),
        ({"read_ahead_bytes": 0}, ValueError, "read_ahead_bytes"),
        ({"fetch_timeout": -1}, ValueError, "fetch_timeout"),
        ({"ack_wait": 0}, ValueError, "ack_wait"),
        ({"durable": ""}, ValueError, "durable"),
        ({"durable": "bill.ing"}, ValueError, "may not contain"),
        ({"codec": "yaml"}, ValueError, "unknown codec"),
        ({"on_decode_error": "dead_letter"}, ValueError, "dead_letter"),
    ],
)
async def test_bad_source_arguments_are_refused(
    kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    arguments: dict[str, Any] = {"durable": "d", **kwargs}
    durable = arguments.pop("durable")
    with pytest.raises(error, match=match):
        async with jetstream_source("nats://127.0.0.1:1", "S", "s.>", durable, **arguments):
            pass  # pragma: no cover


async def test_bad_sink_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown encoder"):
        async with jetstream_sink("nats://127.0.0.1:1", "s", encoder="yaml"):  # type: ignore[arg-type]
            pass  # pragma: no cover
    with pytest.raises(ValueError, match="batch_size"):
        async with jetstream_sink("nats://127.0.0.1:1", "s", batch_size=0):
            pass  # pragma: no cover
    with pytest.raises(ValueError, match="stream="):
        async with jetstream_sink("nats://127.0.0.1:1", "s", create=True):
            pass  # pragma: no cover
    with pytest.raises(ValueError, match="may not contain"):
        async with jetstream_sink("nats://127.0.0.1:1", "s", stream="my stream"):
            pass  # pragma: no cover


async def test_the_sink_says_when_no_stream_captures_the_subject(url: str) -> None:
    async with jetstream_sink(url, f"rxflow_nowhere_{uuid.uuid4().hex[:8]}") as sink:
        with pytest.raises(ValueError, match="no JetStream stream"):
            await sink.send(b"lost")


async def test_sink_encoders(url: str, stream: str) -> None:
    async with jetstream_sink(url, f"{stream}.e") as sink:  # "auto"
        await sink.send_batch([b"raw", "text", {"json": True}])
    async with jetstream_sink(url, f"{stream}.e", encoder="json") as sink:
        await sink.send("quoted")
    async with jetstream_sink(url, f"{stream}.e", encoder="bytes") as sink:
        with pytest.raises(TypeError, match="writes bytes"):
            await sink.send("not bytes")
        assert sink.sent == 0
    async with jetstream_source(url, stream, f"{stream}.>", "enc") as source:
        values = [m.value for m in await take(source, 4)]
    assert sorted(values) == sorted([b"raw", b"text", b'{"json":true}', b'"quoted"'])


async def test_messages_handed_out_and_never_settled_are_given_back_at_close(
    url: str, stream: str
) -> None:
    await publish(url, f"{stream}.n", list(range(6)))
    async with jetstream_source(url, stream, f"{stream}.>", "back", codec="json", batch=3) as src:
        first = await take(src, 3)
        await first[0].ack()
    # 1 and 2 were handed out and never settled: nakked at close, so they come again at
    # once and before 3, 4, 5 (left alone, JetStream would hold them for ack_wait, 30 s,
    # and hand out 3, 4, 5 first).
    async with jetstream_source(url, stream, f"{stream}.>", "back", codec="json") as source:
        again = await take(source, 2)
        assert [m.value for m in again] == [1, 2]
        assert [m.identity for m in again] == [m.identity for m in first[1:]]
        assert all(m.settlement.redelivered for m in again)
        assert src.given_back == 2
        rest = await take(source, 3)
        assert [m.value for m in rest] == [3, 4, 5]
        # Nakked, they were due at once: read first, and nothing was held back for them.
        assert source.survey.pending == 2
        assert source.waited == 0
        for message in [*again, *rest]:
            await message.ack()
        await all_acked(source)
    assert source.given_back == 0


def _windows_into(
    name: str, written: list[list[float]], source: JetStreamSource, store: Path
) -> Flow:
    """Flow ``name``: event-time tumbling(10) windows (5 s out of order) of ``{"t"}``
    events, each written as its sorted times; checkpointed only when the flow stops."""
    stage = tumbling(10, timestamp=lambda m: m.value["t"], out_of_orderness=5.0, name="w")
    return (
        Flow(name)
        .source(source)
        .pipe(stage)
        .sink(lambda window: written.append(sorted(m.value["t"] for m in window.items)))
        .checkpoint(SQLiteStore(store), every=3600.0)
    )


async def _crash_holding(url: str, stream: str, durable: str, count: int) -> None:
    """A worker that takes ``count`` messages and dies: its connection goes before it can
    settle or give back anything (as after SIGKILL), so JetStream holds them for ack_wait."""
    async with jetstream_source(
        url, stream, f"{stream}.>", durable, codec="json", batch=count, ack_wait=2
    ) as source:
        await take(source, count)
        await source.host.call(source.connection.close)
    assert source.given_back == 0  # nothing could be nakked


async def test_a_crashed_workers_messages_come_before_newer_ones(url: str, stream: str) -> None:
    await publish(url, f"{stream}.n", list(range(5)))
    await _crash_holding(url, stream, "crash", 3)
    await publish(url, f"{stream}.n", list(range(5, 10)))
    # Read on at once, the next worker would get 3..9 first and 0, 1, 2 one ack_wait
    # later: after newer messages, late for an event-time window that restarted.
    async with jetstream_source(
        url, stream, f"{stream}.>", "crash", codec="json", batch=4, fetch_timeout=0.5
    ) as source:
        got = await take(source, 10)
        assert [m.value for m in got] == list(range(10))
        assert [m.settlement.redelivered for m in got[:3]] == [True] * 3
        assert source.survey.pending == 3
        assert 0 < source.waited <= 2.2  # newer ones held back until 0..2 were due
        for message in got:
            await message.ack()
        await all_acked(source)
    # Nothing left behind: the next worker reads at once.
    await publish(url, f"{stream}.n", [10])
    async with jetstream_source(url, stream, f"{stream}.>", "crash", codec="json") as source:
        with anyio.fail_after(1):
            assert [m.value for m in await take(source, 1)] == [10]
        assert source.survey.pending == 0


async def _crash_touching(url: str, stream: str, durable: str) -> None:
    """A raw nats-py worker that takes 3 messages, says it is still working on the second
    one a second later (``in_progress``), and dies without settling any."""
    client = await nats.connect(url)
    try:
        config = nats.js.api.ConsumerConfig(ack_wait=2)
        js = client.jetstream()
        subscription = await js.pull_subscribe(
            f"{stream}.>", durable=durable, stream=stream, config=config
        )
        held = await subscription.fetch(3, timeout=5)
        await asyncio.sleep(1.0)  # real time: JetStream's ack_wait runs on its own clock
        await held[1].in_progress()
        await client.flush()
    finally:
        await client.close()


async def test_a_crashed_workers_message_touched_after_its_last_delivery_comes_first(
    url: str, stream: str
) -> None:
    # A worker that told JetStream it was still working on a message (in_progress, as a
    # source does for the newer messages it held back) restarted that message's ack_wait
    # after its delivery. The next worker waits for it too, not only for those due one
    # ack_wait after their delivery: JetStream counts the in_progress as the consumer's
    # last activity (delivered.last_active), which bounds the wait (_orphans.survey).
    await publish(url, f"{stream}.n", list(range(5)))
    await anyio.to_thread.run_sync(asyncio.run, _crash_touching(url, stream, "touch"))
    await publish(url, f"{stream}.n", list(range(5, 10)))
    async with jetstream_source(
        url, stream, f"{stream}.>", "touch", codec="json", batch=4, fetch_timeout=0.5
    ) as source:
        got = await take(source, 10)
        assert sorted(m.value for m in got[:3]) == [0, 1, 2]
        assert [m.value for m in got[3:]] == list(range(3, 10))
        for message in got:
            await message.ack()
        await all_acked(source)


async def test_redeliveries_first_false_reads_on_at_once(url: str, stream: str) -> None:
    await publish(url, f"{stream}.n", list(range(5)))
    await _crash_holding(url, stream, "eager", 3)
    async with jetstream_source(
        url, stream, f"{stream}.>", "eager", codec="json", redeliveries_first=False
    ) as source:
        got = await take(source, 5)
        assert [m.value for m in got] == [3, 4, 0, 1, 2]  # 0..2 after ack_wait
        assert source.survey.pending == 0


async def test_another_workers_unacked_messages_are_not_waited_for(url: str, stream: str) -> None:
    await publish(url, f"{stream}.n", list(range(6)))
    async with jetstream_source(
        url, stream, f"{stream}.>", "shared", codec="json", batch=2, ack_wait=30
    ) as alive:
        await take(alive, 2)  # held, unacknowledged, by a worker that is still there
        async with jetstream_source(
            url, stream, f"{stream}.>", "shared", codec="json", ack_wait=30
        ) as source:
            with anyio.fail_after(5):  # not ack_wait (30 s)
                got = await take(source, 4)
            assert [m.value for m in got] == [2, 3, 4, 5]
            assert source.survey.pending == 0


@pytest.mark.parametrize("ending", ["abort", "crash"])
async def test_a_checkpointed_flow_that_ended_gets_its_open_window_back_in_order(
    url: str, stream: str, tmp_path: Path, ending: str
) -> None:
    # The first run read every event of window [0, 10) and stored no checkpoint: its
    # messages are not acknowledged. The next run must get them before the later events
    # (t = 100...), or the watermark passes their window and they are dropped as late.
    # Aborted, the run nakked them as its source closed; crashed (its connection gone
    # first, as after SIGKILL) it could not, and they come again only after ack_wait: the
    # next run holds the newer events back until then.
    await publish(url, f"{stream}.e", [{"t": float(t)} for t in range(10)])
    written: list[list[float]] = []

    def windows_of(source: JetStreamSource) -> Flow:
        return _windows_into(stream, written, source, tmp_path / "state.db")

    def reading() -> Any:
        # ack_wait long enough that, crashed, the next run starts before the first run's
        # messages are due even on a loaded machine (with 2 s, a run that took longer to
        # close found them due already, waited for nothing, and failed the last assert).
        return jetstream_source(
            url, stream, f"{stream}.>", "win", codec="json", ack_wait=5, fetch_timeout=0.5
        )

    async with reading() as first:
        async with anyio.create_task_group() as tg:
            handle = windows_of(first).start(tg)

            async def all_handed_out() -> bool:
                info = await first.consumer_info()
                return bool(info.num_ack_pending == 10 and first.buffered == 0)

            await wait_until(all_handed_out)
            handle.abort()
        if ending == "crash":
            await first.host.call(first.connection.close)  # no nak reaches the server
    assert first.given_back == (10 if ending == "abort" else 0)
    await publish(url, f"{stream}.e", [{"t": 100.0 + t} for t in range(5)])
    async with reading() as source, anyio.create_task_group() as tg:
        handle = windows_of(source).start(tg)
        await wait_until(lambda: bool(written))
        handle.stop()
    assert written[0] == [float(t) for t in range(10)]
    assert source.survey.pending == 10
    assert (source.waited > 0) == (ending == "crash")
