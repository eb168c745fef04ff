"""The broker connector contract: what every broker source and sink does, written once
against the public API and run against every system (``systems.SYSTEMS``) on both anyio
backends, on the real local services.

Records are published with each system's own client and read back with it, so what is
tested is rxflow's source and sink against the real system. A test that needs what a
system lacks (``@needs``) is skipped on it, with the system's reason.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from reactivex import operators as ops

from rxflow import Flow
from rxflow.connectors import DecodeFailure, Message
from rxflow.errors import DecodeError, ServiceUnavailableError, SettledAfterCloseError
from rxflow.flow.metrics import FlowSnapshot
from tests.connectors.contract.conftest import Rig, needs
from tests.connectors.contract.systems import Channel, System
from tests.connectors.support import (
    PASSWORD,
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

pytestmark = pytest.mark.anyio

SIDES = ["source", "sink"]


async def consume_until(
    source: AsyncIterator[Message[Any]], done: Callable[[list[Any]], bool]
) -> list[Any]:
    """Take and ack what ``source`` yields until ``done(values)``; the values taken. (Some
    systems deliver again only after a while: the condition is polled, not checked per
    message, so a record that is only skipped still ends the wait.)"""
    values: list[Any] = []
    async with anyio.create_task_group() as tg:

        async def read() -> None:
            async for message in source:
                values.append(message.value)
                await message.ack()

        tg.start_soon(read)
        await wait_until(lambda: done(values))
        tg.cancel_scope.cancel()
    return values


async def assert_held(rig: Rig, expected: int) -> None:
    """The system ends up holding ``expected`` records for the consumer (an ack reaches
    some systems a moment after ``ack()`` returned, so this waits for it)."""
    if rig.system.counting_takes:  # once: counting takes what is counted
        assert await rig.held() == expected
        return
    try:
        await wait_until(lambda: _held_is(rig, expected))
    except TimeoutError:
        raise AssertionError(f"{rig.system}: holds {await rig.held()}, not {expected}") from None


async def _held_is(rig: Rig, expected: int) -> bool:
    return await rig.held() == expected


async def run_flow(
    rig: Rig, sink: Any, *, until: Callable[[Any], bool], **source_options: Any
) -> tuple[FlowSnapshot, Any]:
    """A flow from the rig's source (stage ``in``) to ``sink``, stopped gracefully once
    ``until(handle)``; its final snapshot and handle."""
    async with anyio.create_task_group() as tg:
        flow = Flow("contract").source(rig.source(**source_options), name="in").sink(sink)
        handle = flow.start(tg)
        await wait_until(lambda: until(handle))
        handle.stop()
        with anyio.fail_after(20):
            snapshot = await handle.wait()
    return snapshot, handle


# -- decode policies --------------------------------------------------------------------------


@needs("ack", "redelivery")
async def test_decode_raise_names_the_record_and_leaves_it_unacked(rig: Rig) -> None:
    keys = await rig.publish(b'{"n": 1}', b"{oops", b'{"n": 2}')
    async with rig.source(codec="json") as source:
        messages = aiter(source)
        (first,) = await take(messages, 1)
        await first.ack()
        with pytest.raises(DecodeError) as raised:
            await anext(messages)
    assert f"{source.decoder.source}: record {keys[1]!r}" in str(raised.value)
    assert first.value == {"n": 1}

    # Not acked: delivered again to the next source, which skips it (and acks it).
    async with rig.source(codec="json", on_decode_error="skip") as again:
        values = await consume_until(
            again, lambda taken: again.decoder.skipped == 1 and {"n": 2} in taken
        )
    assert values == [{"n": 2}]
    await assert_held(rig, 0)


@needs("ack")
async def test_decode_skip_counts_and_acks_the_record(rig: Rig) -> None:
    await rig.publish(b"{oops", b'{"n": 1}', b"[", b'{"n": 2}')
    async with rig.source(codec="json", on_decode_error="skip") as source:
        messages = await take(aiter(source), 2)
        for message in messages:
            await message.ack()
    assert [message.value for message in messages] == [{"n": 1}, {"n": 2}]
    assert (source.decoder.skipped, source.decoder.dead_lettered) == (2, 0)
    await assert_held(rig, 0)  # the skipped ones are acked too


@needs("ack")
async def test_decode_dead_letter_hands_the_failure_over_and_acks_the_record(rig: Rig) -> None:
    keys = await rig.publish(b"{oops", b"7")
    failures: list[DecodeFailure] = []

    async def dead_letter(failure: DecodeFailure) -> None:  # a coroutine function is awaited
        await anyio.lowlevel.checkpoint()
        failures.append(failure)

    options = {"codec": "json", "on_decode_error": "dead_letter", "dead_letter": dead_letter}
    async with rig.source(**options) as source:
        (message,) = await take(aiter(source), 1)
        await message.ack()
    assert message.value == 7
    assert [(failure.data, failure.key) for failure in failures] == [(b"{oops", keys[0])]
    assert isinstance(failures[0].error, json.JSONDecodeError)
    assert failures[0].source == source.decoder.source
    assert (source.decoder.dead_lettered, source.decoder.skipped) == (1, 0)
    await assert_held(rig, 0)


JSON_FAILURE = "could not be decoded by 'as_json': JSONDecodeError"


@needs("ack")
async def test_a_flow_snapshot_counts_what_its_source_skipped_and_each_is_logged(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="rxflow.connectors")
    keys = await rig.publish(b'{"n": 1}', b"{oops", b"[", b'{"n": 2}')
    written: list[Message[Any]] = []
    snapshot, handle = await run_flow(
        rig,
        written.append,
        until=lambda _: len(written) == 2,
        codec="json",
        on_decode_error="skip",
    )
    assert [message.value for message in written] == [{"n": 1}, {"n": 2}]
    assert (snapshot["in"].skipped, snapshot["in"].dead_lettered) == (2, 0)
    assert handle.acknowledged == 2
    # One WARNING per skipped record: the source, the record's key and why (never the bytes).
    warnings = [
        record.getMessage()
        for record in caplog.records
        if record.name == "rxflow.connectors" and record.levelno == logging.WARNING
    ]
    source = written[0].source
    assert len(warnings) == 2, warnings
    for warning, key in zip(warnings, keys[1:3], strict=True):
        assert warning.startswith(f"{source}: skipped record {key!r} (on_decode_error='skip'): ")
        assert JSON_FAILURE in warning
        assert "oops" not in warning
    await assert_held(rig, 0)


# -- at-least-once --------------------------------------------------------------------------


@needs("ack")
async def test_a_flow_acks_only_once_its_sink_returned(rig: Rig) -> None:
    payloads = [b"%d" % n for n in range(10)]
    await rig.publish(*payloads)
    handed_out: list[Message[bytes]] = []
    written: list[bytes] = []
    confirm = anyio.Event()

    async def sink(message: Message[bytes]) -> None:
        await confirm.wait()  # blocks until the test lets every write return
        written.append(message.value)

    async with anyio.create_task_group() as tg:
        handle = (
            Flow("contract")
            .source(rig.source(), name="in")
            .pipe(ops.do_action(handed_out.append))
            .sink(sink)
            .start(tg)
        )
        await wait_until(lambda: len(handed_out) >= 2)  # one in the sink, more behind it
        await anyio.wait_all_tasks_blocked()  # room for an early ack to happen, if any would
        assert handle.acknowledged == 0
        assert [message.settled for message in handed_out] == [None] * len(handed_out)

        confirm.set()
        await wait_until(lambda: handle.acknowledged == len(payloads))
        handle.stop()
    assert written == payloads
    assert {message.settled for message in handed_out} == {"ack"}
    await assert_held(rig, 0)


@needs("ack", "redelivery")
async def test_an_aborted_flow_leaves_every_unacked_record_for_the_next_source(rig: Rig) -> None:
    payloads = [b"%d" % n for n in range(20)]
    await rig.publish(*payloads)
    written: list[bytes] = []

    async def sink(message: Message[bytes]) -> None:
        written.append(message.value)
        if len(written) > 5:
            await anyio.sleep_forever()  # the sixth write never returns

    async with anyio.create_task_group() as tg:
        handle = Flow("contract").source(rig.source(), name="in").sink(sink).start(tg)
        await wait_until(lambda: len(written) == 6 and handle.acknowledged == 5)
        handle.abort()
    acked = set(written[:5])

    # Everything not acked comes to a new source; between them, every record is written.
    async with rig.source() as again:
        redelivered = await consume_until(again, lambda got: set(got) >= set(payloads) - acked)
    assert set(written) | set(redelivered) == set(payloads)
    await assert_held(rig, 0)


@needs("ack", "redelivery")
async def test_what_a_closed_source_read_ahead_comes_at_once_to_another_worker(rig: Rig) -> None:
    payloads = [b"%d" % n for n in range(20)]
    await rig.publish(*payloads)
    # A redelivery after the system's own timeout would not be at once.
    options = {rig.system.read_ahead_option: 5, **rig.system.no_timed_redelivery}
    async with rig.source(**options) as first:
        (taken,) = await take(aiter(first), 1)
        await taken.ack()
        # Read ahead and never handed out: the rest of a fetched batch, or a pushed window.
        await wait_until(lambda: _delivered_reaches(rig, first, 4))
    async with rig.source(worker="b", **options) as second:
        rest = await consume_until(second, lambda got: set(got) >= set(payloads[1:]))
    assert taken.value == payloads[0]
    assert sorted(rest) == sorted(payloads[1:])
    await assert_held(rig, 0)


@needs("ack", "redelivery", "identity")
async def test_a_record_delivered_again_has_the_same_identity(rig: Rig) -> None:
    await rig.publish(b"a", b"b")
    async with rig.source() as first:
        taken = {message.value: message.identity for message in await take(aiter(first), 2)}
    async with rig.source() as second:
        again = await take(aiter(second), 2)
        for message in again:
            await message.ack()
    assert None not in taken.values()
    assert {message.value: message.identity for message in again} == taken


@needs("ack")
async def test_ack_many_acks_messages_of_its_source_together(rig: Rig) -> None:
    await rig.publish(b"a", b"b", b"c")
    async with rig.source() as source:
        messages = await take(aiter(source), 3)
        await source.ack_many(messages)
        assert {message.settled for message in messages} == {"ack"}
        await source.ack_many(messages)  # settled already: left out
        with pytest.raises(ValueError, match="ack_many"):
            await source.ack_many([Message(b"elsewhere", source="another")])
    await assert_held(rig, 0)


@needs("ack", "nack_requeue")
async def test_a_record_nacked_with_requeue_comes_again(rig: Rig) -> None:
    await rig.publish(b"a", b"b")
    # What comes again comes by the nack, not by the system's own redelivery timeout.
    async with rig.source(**rig.system.no_timed_redelivery) as source:
        messages = aiter(source)
        (first,) = await take(messages, 1)
        await first.nack(requeue=True)
        await first.nack(requeue=True)  # settling twice does nothing more
        values = await consume_until(messages, lambda got: b"a" in got and b"b" in got)
    assert first.value == b"a"
    assert sorted(values) == [b"a", b"b"]
    await assert_held(rig, 0)


@needs("ack", "reject")
async def test_a_record_nacked_without_requeue_never_comes_again(rig: Rig) -> None:
    await rig.publish(b"a", b"b")
    async with rig.source() as source:
        messages = aiter(source)
        (first,) = await take(messages, 1)
        await first.nack(requeue=False)
        (second,) = await take(messages, 1)
        await second.ack()
        await rig.publish(b"c")  # comes next: "a" does not come back before it
        (third,) = await take(messages, 1)
        await third.ack()
    assert [first.value, second.value, third.value] == [b"a", b"b", b"c"]
    await assert_held(rig, 0)  # nor is it kept for another source


@needs("ack")
async def test_settling_after_the_source_closed_raises_a_clear_error(rig: Rig) -> None:
    await rig.publish(b"a", b"b")
    async with rig.source() as source:
        first, second = await take(aiter(source), 2)
    with pytest.raises(SettledAfterCloseError, match="after its source closed"):
        await first.ack()
    with pytest.raises(SettledAfterCloseError, match="after its source closed"):
        await second.nack()


# -- read-ahead -----------------------------------------------------------------------------


@needs("ack", "read_ahead")
async def test_read_ahead_is_bounded_by_its_count(rig: Rig) -> None:
    bound = 5
    await rig.publish(*(b"%d" % n for n in range(3 * bound)))
    async with rig.source(**{rig.system.read_ahead_option: bound}) as source:
        messages = aiter(source)
        taken: list[Message[bytes]] = []
        for _ in range(bound):
            taken += await take(messages, 1)
            # Delivered and not acked, in hand or read ahead: a pushing system fills its
            # window up to the bound, a pulling one fetched a batch; never more.
            await wait_until(lambda: _delivered_reaches(rig, source, bound))
            assert await rig.delivered(source) == bound
        for message in taken:
            await message.ack()
    assert [message.value for message in taken] == [b"%d" % n for n in range(bound)]


async def _delivered_reaches(rig: Rig, source: Any, count: int) -> bool:
    return await rig.delivered(source) >= count


# -- sinks ----------------------------------------------------------------------------------


@needs("sink")
async def test_what_the_sink_confirmed_is_in_the_system(rig: Rig) -> None:
    payloads = [b"%d" % n for n in range(7)]
    async with rig.sink() as sink:
        await sink.send_batch(rig.items(payloads[:6]))
        await sink.send(rig.items(payloads[6:])[0])
    assert await rig.written(len(payloads)) == payloads


@needs("ack", "sink")
async def test_a_flow_from_source_to_sink_writes_every_record_then_acks_it(rig: Rig) -> None:
    payloads = [b"%d" % n for n in range(20)]
    await rig.publish(*payloads)
    async with anyio.create_task_group() as tg:
        handle = (
            Flow("contract")
            .source(rig.source(), name="in")
            .pipe(ops.map(lambda message: rig.system.item(message.value)))
            .sink(rig.sink(), name="out")
            .start(tg)
        )
        await wait_until(lambda: handle.acknowledged == len(payloads))
        handle.stop()
    assert await rig.written(len(payloads)) == payloads
    await assert_held(rig, 0)


# -- cancellation ---------------------------------------------------------------------------

CONNECT_CANCELS = 12  # per system, side and backend
FETCH_CANCELS = 6
WITHIN_S = 60.0


def _side(system: System, side: str) -> None:
    if side == "sink" and (why := system.missing("sink")) is not None:
        pytest.skip(why)


async def _open_and_use(system: System, url: str, channel: Channel, side: str) -> None:
    if side == "source":
        async with system.source(url, channel) as source:
            async for _ in source:
                break
    else:
        async with system.sink(url, channel) as sink:
            await sink.send(system.item(b"x"))
    await anyio.sleep_forever()


@pytest.mark.parametrize("side", SIDES)
async def test_cancelled_while_connecting_leaves_nothing_running(
    system: System,
    side: str,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    _side(system, side)

    async def cancel_each(delays: list[float | int]) -> None:
        for delay in delays:
            async with anyio.create_task_group() as tg:
                tg.start_soon(_open_and_use, system, url, channel, side)
                await after(delay)
                tg.cancel_scope.cancel()

    # A listening socket that never answers: the kernel completes the connection and no
    # one ever speaks, so every cancel lands in the connect, at some step.
    with black_hole() as port, nothing_printed(capfd, caplog) as noise:
        url = system.url("127.0.0.1", port)
        channel = Channel(f"rxflow_contract_{uuid.uuid4().hex[:12]}", url)
        delays = random_delays(CONNECT_CANCELS, longest=0.02)
        left = await leftovers_of(cancel_each, delays, within=WITHIN_S)
    assert left.nothing, left.describe(f"{system} {side}: cancels while connecting")
    assert noise == [], f"{system} {side}: cancelling printed:\n" + "\n".join(noise)


async def test_cancelled_while_a_fetch_waits_leaves_nothing_running(
    rig: Rig,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def read_nothing(opened: anyio.Event) -> None:
        async with rig.source() as source:
            opened.set()
            async for _ in source:  # the channel is empty: the fetch waits
                raise AssertionError("nothing was published")

    async def cancel_each(delays: list[float | int]) -> None:
        for delay in delays:
            async with anyio.create_task_group() as tg:
                opened = anyio.Event()
                tg.start_soon(read_nothing, opened)
                await opened.wait()
                await after(delay)
                tg.cancel_scope.cancel()

    with nothing_printed(capfd, caplog) as noise:
        delays = random_delays(FETCH_CANCELS, longest=0.2)
        left = await leftovers_of(cancel_each, delays, within=WITHIN_S)
    assert left.nothing, left.describe(f"{rig.system}: cancels while fetching")
    assert noise == [], f"{rig.system}: cancelling printed:\n" + "\n".join(noise)


# -- credentials ----------------------------------------------------------------------------


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)  # every logger: the connectors' and their clients'
    return caplog


@pytest.mark.parametrize("side", SIDES)
async def test_a_refused_connection_names_the_server_without_credentials(
    system: System, side: str, logs: pytest.LogCaptureFixture
) -> None:
    _side(system, side)
    port = refused_port()
    url = system.url("127.0.0.1", port, f"bob:{PASSWORD}")
    channel = Channel(f"rxflow_contract_{uuid.uuid4().hex[:12]}", url)
    opened = system.source if side == "source" else system.sink
    error = await failure_of(lambda: opened(url, channel, **system.fail_fast), system.item(b"x"))
    assert isinstance(error, ServiceUnavailableError), repr(error)
    assert_no_secret(error, logs)
    assert f"127.0.0.1:{port}" in str(error), error  # where it failed


@needs("checks_password")
@pytest.mark.parametrize("side", SIDES)
async def test_a_wrong_password_is_refused_without_quoting_it(
    rig: Rig, side: str, logs: pytest.LogCaptureFixture
) -> None:
    _side(rig.system, side)
    url = rig.system.url(rig.host, rig.port, f"guest:{PASSWORD}")
    opened = rig.source_at if side == "source" else rig.sink_at
    error = await failure_of(lambda: opened(url), rig.system.item(b"x"))
    assert_no_secret(error, logs)
