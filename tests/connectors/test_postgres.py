"""PostgreSQL connector against a real server: LISTEN/NOTIFY source and COPY/INSERT sink."""

from __future__ import annotations

import threading
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import asyncpg  # type: ignore[import-untyped,unused-ignore]
import pytest

from rxflow import open_pipe
from rxflow.connectors import Message
from rxflow.connectors._asyncio_host import AsyncioHost
from rxflow.connectors.codecs import DecodeFailure
from rxflow.connectors.postgres import (
    postgres_listen_source,
    postgres_sink,
    postgres_table_source,
)
from rxflow.connectors.postgres.listen import RUN_LIMIT
from rxflow.errors import DecodeError, ServiceUnavailableError, SourceOverflowError
from tests.connectors.conftest import require_service
from tests.connectors.support import take

pytestmark = pytest.mark.anyio


@pytest.fixture
def dsn() -> str:
    host, port = require_service("postgresql")
    return f"postgresql://postgres@{host}:{port}/test"


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


class Admin:
    """A second, plain asyncpg connection for the test's own SQL (works under trio too)."""

    def __init__(self, host: AsyncioHost, connection: Any) -> None:
        self.host = host
        self.connection = connection

    async def fetch(self, query: str, *args: Any) -> list[Any]:
        rows: list[Any] = await self.host.call(self.connection.fetch, query, *args)
        return rows

    async def execute(self, script: str) -> None:
        await self.host.call(self.connection.execute, script)

    async def fetchval(self, query: str, *args: Any) -> Any:
        return await self.host.call(self.connection.fetchval, query, *args)

    async def notify(self, channel: str, *payloads: str) -> None:
        """Send each payload on ``channel``, all in one transaction."""

        async def send() -> None:
            async with self.connection.transaction():
                for payload in payloads:
                    await self.connection.execute("SELECT pg_notify($1, $2)", channel, payload)

        await self.host.call(send)

    async def sessions(self, application_name: str) -> int:
        count: int = await self.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
            application_name,
        )
        return count

    async def wait_for_sessions(self, application_name: str, count: int) -> None:
        with anyio.fail_after(10):  # a closed session leaves pg_stat_activity shortly after
            while True:
                if await self.sessions(application_name) == count:
                    return
                await anyio.sleep(0.01)


@asynccontextmanager
async def admin_connection(dsn: str) -> AsyncIterator[Admin]:
    async with AsyncioHost() as host:
        connection = await host.call(asyncpg.connect, dsn)
        try:
            yield Admin(host, connection)
        finally:
            with anyio.CancelScope(shield=True):
                await host.call(connection.close)


@pytest.fixture
async def admin(dsn: str) -> AsyncIterator[Admin]:
    async with admin_connection(dsn) as admin:
        yield admin


async def wait_received(source: Any, count: int) -> None:
    with anyio.fail_after(10):  # notifications take a moment to come round
        while True:
            if source.received >= count:
                return
            await anyio.sleep(0.01)


# -- LISTEN/NOTIFY ------------------------------------------------------------------------------


async def test_notifications_arrive_as_messages_keyed_by_channel(dsn: str, admin: Admin) -> None:
    channel = unique("orders")
    async with postgres_listen_source(dsn, channel, codec="json") as orders:
        await admin.notify(channel, '{"id": 1}', '{"id": 2}')
        messages = await take(orders, 2)
        sender = admin.connection.get_server_pid()
        assert [message.value for message in messages] == [{"id": 1}, {"id": 2}]
        assert {message.key for message in messages} == {channel}
        assert {message.headers["pid"] for message in messages} == {str(sender)}
        assert messages[0].source == f"postgresql:{channel}"
        await messages[0].ack()  # nothing to settle, and harmless
        assert orders.decoder.decoded == 2


async def test_only_committed_notifications_arrive(dsn: str, admin: Admin) -> None:
    channel = unique("tx")

    async def rolled_back() -> None:
        connection = admin.connection
        transaction = connection.transaction()
        await transaction.start()
        await connection.execute("SELECT pg_notify($1, 'rolled back')", channel)
        await transaction.rollback()

    async with postgres_listen_source(dsn, channel) as source:
        await admin.host.call(rolled_back)
        await admin.notify(channel, "first", "second")
        await admin.notify(channel, "last")
        assert [message.value for message in await take(source, 3)] == ["first", "second", "last"]


@pytest.mark.parametrize(
    ("overflow", "delivered", "dropped"),
    [
        ("drop_oldest", ["7", "8", "9"], 7),
        ("drop_newest", ["0", "1", "2"], 7),
        ("latest", ["9"], 9),
    ],
)
async def test_a_slow_consumer_loses_notifications_by_the_policy_and_they_are_counted(
    dsn: str, admin: Admin, overflow: Any, delivered: list[str], dropped: int
) -> None:
    channel = unique("burst")
    async with postgres_listen_source(dsn, channel, max_buffer_size=3, overflow=overflow) as source:
        await admin.notify(channel, *map(str, range(10)))
        await wait_received(source, 10)  # the consumer has not taken any yet
        assert source.dropped == dropped
        assert [message.value for message in await take(source, len(delivered))] == delivered
        await admin.notify(channel, "after")  # the buffer held nothing more
        assert [message.value for message in await take(source, 1)] == ["after"]


async def test_overflow_error_delivers_what_fit_then_raises(dsn: str, admin: Admin) -> None:
    channel = unique("burst")
    async with postgres_listen_source(dsn, channel, max_buffer_size=3) as source:
        await admin.notify(channel, *map(str, range(5)))
        await wait_received(source, 5)
        assert [message.value for message in await take(source, 3)] == ["0", "1", "2"]
        with pytest.raises(SourceOverflowError, match=r"postgresql:burst_\w+.*max_buffer_size=3"):
            await source.__anext__()


@pytest.mark.parametrize("policy", ["raise", "skip", "dead_letter"])
async def test_decode_policies(dsn: str, admin: Admin, policy: Any) -> None:
    channel = unique("decode")
    failures: list[DecodeFailure] = []
    async with postgres_listen_source(
        dsn,
        channel,
        codec="json",
        on_decode_error=policy,
        dead_letter=failures.append if policy == "dead_letter" else None,
    ) as source:
        await admin.notify(channel, '{"n": 1}', "{oops", '{"n": 2}')
        if policy == "raise":
            assert (await take(source, 1))[0].value == {"n": 1}
            with pytest.raises(DecodeError, match=rf"postgresql:{channel}.*'{channel}'"):
                await take(source, 1)
            return
        assert [message.value for message in await take(source, 2)] == [{"n": 1}, {"n": 2}]
    if policy == "skip":
        assert source.decoder.skipped == 1
    else:
        assert source.decoder.dead_lettered == 1
        assert [(failure.data, failure.key) for failure in failures] == [(b"{oops", channel)]


async def test_a_burst_is_handed_over_in_runs_in_order(dsn: str, admin: Admin) -> None:
    channel = unique("runs")
    async with postgres_listen_source(dsn, channel, codec="json") as source:
        await admin.notify(channel, *(f'{{"n": {n}}}' for n in range(300)))
        await wait_received(source, 300)
        runs = [await source.next_run() for _ in range(3)]
        assert [len(run) for run in runs] == [RUN_LIMIT, RUN_LIMIT, 300 - 2 * RUN_LIMIT]
        assert [m.value["n"] for run in runs for m in run] == list(range(300))
        assert {m.key for run in runs for m in run} == {channel}
        assert source.decoder.decoded == 300
        await admin.notify(channel, '{"n": 300}', '{"n": 301}')  # read through a pipe
        async with open_pipe(source) as pipe:
            assert [m.value["n"] for m in await take(pipe, 2)] == [300, 301]


@pytest.mark.parametrize("policy", ["raise", "skip"])
async def test_a_payload_the_codec_rejects_ends_a_run_before_it(
    dsn: str, admin: Admin, policy: Any
) -> None:
    channel = unique("decode_runs")
    async with postgres_listen_source(dsn, channel, codec="json", on_decode_error=policy) as source:
        await admin.notify(channel, '{"n": 1}', '{"n": 2}', "{oops", '{"n": 3}')
        await wait_received(source, 4)
        assert [m.value for m in await source.next_run()] == [{"n": 1}, {"n": 2}]
        if policy == "raise":
            with pytest.raises(DecodeError, match=rf"postgresql:{channel}"):
                await source.next_run()
        else:
            assert [m.value for m in await source.next_run()] == [{"n": 3}]
            assert source.decoder.skipped == 1
        assert source.decoder.decoded == 2 + (policy == "skip")


async def test_a_terminated_listening_connection_ends_the_stream_naming_the_service(
    dsn: str, admin: Admin
) -> None:
    channel, application = unique("fault"), unique("rxflow_test")
    async with postgres_listen_source(dsn, channel, application_name=application) as source:
        await admin.notify(channel, "before")
        await wait_received(source, 1)
        terminated = await admin.fetch(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
            application,
        )
        assert [row[0] for row in terminated] == [True]
        assert (await take(source, 1))[0].value == "before"  # what was buffered comes first
        with (
            anyio.fail_after(10),
            pytest.raises(
                ServiceUnavailableError, match=rf"postgresql:{channel}.*PostgreSQL at 127.0.0.1"
            ),
        ):
            await source.__anext__()


def host_threads() -> set[threading.Thread]:
    return {thread for thread in threading.enumerate() if thread.name == "rxflow asyncio host"}


@pytest.mark.parametrize(
    ("arguments", "error", "match"),
    [
        ({"channel": "x" * 64}, ValueError, "longer than 63 bytes"),
        ({"channel": ""}, ValueError, "non-empty str"),
        ({"max_buffer_size": 0}, ValueError, "max_buffer_size must be an int of 1 or more"),
        ({"overflow": "block"}, ValueError, "overflow must be one of"),
        ({"codec": "yaml"}, ValueError, "unknown codec"),
    ],
)
async def test_bad_source_arguments_are_refused_before_connecting(
    arguments: dict[str, Any], error: type[Exception], match: str
) -> None:
    arguments = {"dsn": "postgresql://nobody@127.0.0.1:1/none", "channel": "ok", **arguments}
    with pytest.raises(error, match=match):
        async with postgres_listen_source(**arguments):
            pass


# -- sink ---------------------------------------------------------------------------------------


@pytest.fixture
async def table(admin: Admin) -> AsyncIterator[str]:
    name = unique("readings")
    await admin.execute(
        f'CREATE TABLE "{name}" (id int PRIMARY KEY, sensor text NOT NULL, value float8)'
    )
    try:
        yield name
    finally:
        with anyio.CancelScope(shield=True):
            await admin.execute(f'DROP TABLE "{name}"')


async def rows_of(admin: Admin, table: str) -> list[tuple[Any, ...]]:
    return [tuple(row) for row in await admin.fetch(f'SELECT * FROM "{table}" ORDER BY id')]


COLUMNS = ["id", "sensor", "value"]


@pytest.mark.parametrize("method", ["copy", "insert"])
async def test_a_batch_is_committed_when_send_batch_returns(
    dsn: str, admin: Admin, table: str, method: Any
) -> None:
    async with postgres_sink(dsn, table, COLUMNS, method=method, batch_size=50) as sink:
        assert sink.batch_size == 50
        await sink.send_batch([(1, "a", 1.5), {"value": None, "sensor": "b", "id": 2}])
        assert await rows_of(admin, table) == [(1, "a", 1.5), (2, "b", None)]
        await sink.send((3, "c", 3.0))
        assert len(await rows_of(admin, table)) == 3
        await sink.send_batch([])
        assert sink.rows_written == 3


@pytest.mark.parametrize("method", ["copy", "insert"])
async def test_a_failing_batch_writes_nothing_and_the_sink_goes_on(
    dsn: str, admin: Admin, table: str, method: Any
) -> None:
    async with postgres_sink(dsn, table, COLUMNS, method=method) as sink:
        duplicate_key = [(1, "a", 1.0), (2, "b", 2.0), (1, "c", 3.0)]
        with pytest.raises(asyncpg.UniqueViolationError):
            await sink.send_batch(duplicate_key)
        assert await rows_of(admin, table) == []

        wrong_type = [(1, "a", 1.0), (2, "b", 2.0), (3, "c", "high")]
        with pytest.raises(TypeError, match=r"item 2, column 'value': 'high' .* float8"):
            await sink.send_batch(wrong_type)
        assert await rows_of(admin, table) == []

        await sink.send_batch([(1, "a", 1.0)])
        assert await rows_of(admin, table) == [(1, "a", 1.0)]
        assert sink.rows_written == 1


async def test_on_conflict_ignore_writes_a_redelivered_batch_once(
    dsn: str, admin: Admin, table: str
) -> None:
    batch = [(1, "a", 1.0), (2, "b", 2.0)]
    async with postgres_sink(dsn, table, COLUMNS, method="insert", on_conflict="ignore") as sink:
        await sink.send_batch(batch)
        await sink.send_batch([*batch, (3, "c", 3.0)])  # delivered again, and one more
    assert await rows_of(admin, table) == [*batch, (3, "c", 3.0)]
    with pytest.raises(ValueError, match="COPY cannot skip conflicting rows"):
        async with postgres_sink(dsn, table, COLUMNS, on_conflict="ignore"):
            pass


@pytest.mark.parametrize(
    ("item", "error", "match"),
    [
        ((1, "a"), ValueError, r"item 1 has 2 value\(s\) but the sink has 3 columns"),
        ({"id": 1, "sensor": "a"}, ValueError, r"item 1 is a dict without column\(s\) \['value'\]"),
        ({"id": 1, "sensor": "a", "value": 1, "x": 0}, ValueError, r"key\(s\) \['x'\]"),
        ("1,a,1.0", TypeError, "item 1 is a str; pass a tuple"),
    ],
)
async def test_an_item_that_is_not_a_row_is_refused_by_index(
    dsn: str, admin: Admin, table: str, item: Any, error: type[Exception], match: str
) -> None:
    async with postgres_sink(dsn, table, COLUMNS) as sink:
        with pytest.raises(error, match=match):
            await sink.send_batch([(1, "a", 1.0), item])
    assert await rows_of(admin, table) == []


@pytest.mark.parametrize("method", ["copy", "insert"])
async def test_a_connection_lost_mid_batch_fails_it_and_the_next_batch_reconnects(
    dsn: str, admin: Admin, table: str, method: Any
) -> None:
    # A row trigger that makes the server end the session writing the row 'kill': the
    # connection dies in the middle of the batch, every time.
    await admin.execute(
        f"""CREATE FUNCTION "{table}_kill"() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.sensor = 'kill' THEN PERFORM pg_terminate_backend(pg_backend_pid()); END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER kill BEFORE INSERT ON "{table}"
            FOR EACH ROW EXECUTE FUNCTION "{table}_kill"()"""
    )
    application = unique("rxflow_test")
    try:
        async with postgres_sink(
            dsn, table, COLUMNS, method=method, application_name=application
        ) as sink:
            await sink.send((1, "a", 1.0))
            with pytest.raises(
                ServiceUnavailableError, match=r"postgresql:readings_\w+: the connection to Postg"
            ):
                await sink.send_batch([(2, "b", 2.0), (3, "kill", 3.0), (4, "d", 4.0)])
            await sink.send((5, "e", 5.0))
            assert await admin.sessions(application) == 1
        assert await rows_of(admin, table) == [(1, "a", 1.0), (5, "e", 5.0)]
    finally:
        with anyio.CancelScope(shield=True):
            await admin.execute(f'DROP FUNCTION "{table}_kill"() CASCADE')


async def test_a_missing_table_is_reported_when_the_sink_opens(dsn: str) -> None:
    with pytest.raises(asyncpg.UndefinedTableError):
        async with postgres_sink(dsn, unique("missing"), ["a"]):
            pass


async def test_cancelling_a_sink_leaves_no_session(dsn: str, admin: Admin, table: str) -> None:
    application = unique("rxflow_test")
    hosts_before = host_threads()
    with anyio.CancelScope() as scope:
        async with postgres_sink(dsn, table, COLUMNS, application_name=application) as sink:
            await sink.send((1, "a", 1.0))
            scope.cancel()
            await anyio.sleep_forever()
    await admin.wait_for_sessions(application, 0)
    assert host_threads() == hosts_before
    assert await rows_of(admin, table) == [(1, "a", 1.0)]


# -- table (outbox) source ----------------------------------------------------------------------


@pytest.fixture
async def outbox(admin: Admin) -> AsyncIterator[str]:
    name = unique("outbox")
    await admin.execute(f'CREATE TABLE "{name}" (id bigserial PRIMARY KEY, payload text)')
    try:
        yield name
    finally:
        with anyio.CancelScope(shield=True):
            await admin.execute(f'DROP TABLE "{name}"')


async def add(admin: Admin, outbox: str, *payloads: str) -> None:
    await admin.host.call(
        admin.connection.executemany,
        f'INSERT INTO "{outbox}" (payload) VALUES ($1)',
        [(payload,) for payload in payloads],
    )


async def left_in(admin: Admin, outbox: str) -> list[str]:
    rows = await admin.fetch(f'SELECT payload FROM "{outbox}" ORDER BY id')
    return [row[0] for row in rows]


async def test_rows_arrive_in_id_order_and_an_ack_deletes_the_row(
    dsn: str, admin: Admin, outbox: str
) -> None:
    await add(admin, outbox, "a", "b", "c")
    async with postgres_table_source(dsn, outbox, id_column="id") as source:
        messages = await take(source, 3)
        assert [message.value["payload"] for message in messages] == ["a", "b", "c"]
        assert [message.key for message in messages] == ["1", "2", "3"]
        assert messages[0].source == f"postgresql:{outbox}"
        await messages[0].ack()
        await messages[2].ack()
        assert source.deleted == 0  # acks are applied with the next read, or by flush_acks()
        await source.flush_acks()
        assert await left_in(admin, outbox) == ["b"]
        assert source.deleted == 2


async def test_a_nack_redelivers_in_the_same_run_and_requeue_false_sets_aside(
    dsn: str, admin: Admin, outbox: str
) -> None:
    await add(admin, outbox, "a", "b", "c", "d")
    async with postgres_table_source(dsn, outbox, id_column="id", batch_size=10) as source:
        a, b, c = await take(source, 3)
        await b.nack()  # delivered again, before what follows it
        await c.nack(requeue=False)  # not in this run; left in the table
        again = await take(source, 2)
        assert [message.value["payload"] for message in again] == ["b", "d"]
        for message in (a, *again):
            await message.ack()
    assert await left_in(admin, outbox) == ["c"]  # closing applied the acks


async def test_rows_added_later_are_found_by_polling(dsn: str, admin: Admin, outbox: str) -> None:
    got: list[Message[Any]] = []

    async def consume(source: Any) -> None:
        got.extend(await take(source, 1))

    async with (
        postgres_table_source(dsn, outbox, id_column="id", poll_interval=0.02) as source,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(consume, source)
        with anyio.fail_after(10):
            while True:  # until the consumer has found the table empty
                if source.queries >= 1:
                    break
                await anyio.sleep(0.01)
        await add(admin, outbox, "later")
    assert [message.value for message in got] == [{"id": 1, "payload": "later"}]
    assert source.queries >= 2


async def test_a_row_committed_late_with_a_lower_id_is_not_passed_over(
    dsn: str, admin: Admin, outbox: str
) -> None:
    # Ids are taken when rows are inserted, not when they commit: id 5 may commit after 6.
    await admin.fetch(f"INSERT INTO \"{outbox}\" (id, payload) VALUES (6, 'six')")
    async with postgres_table_source(dsn, outbox, id_column="id") as source:
        six = (await take(source, 1))[0]
        await admin.fetch(f"INSERT INTO \"{outbox}\" (id, payload) VALUES (5, 'five')")
        five = (await take(source, 1))[0]
        assert (six.key, five.key) == ("6", "5")


async def test_table_source_arguments_and_missing_columns(dsn: str, outbox: str) -> None:
    with pytest.raises(ValueError, match="pass both"):
        async with postgres_table_source(dsn, outbox, id_column="id", codec="json"):
            pass
    with pytest.raises(asyncpg.UndefinedColumnError):
        async with postgres_table_source(dsn, outbox, id_column="seq"):
            pass


async def test_the_first_read_is_sized_by_the_tables_rows_and_comes_as_one_run(
    dsn: str, admin: Admin, outbox: str
) -> None:
    await add(admin, outbox, "a", "b", "c", "d", "e")
    async with postgres_table_source(dsn, outbox, id_column="id", batch_size=10) as source:
        run = await source.next_run()  # one read of the table, handed over at once
        assert [message.value["payload"] for message in run] == ["a", "b", "c", "d", "e"]
        assert (source.queries, source.fetched, source.decoder) == (1, 5, None)
        await source.ack_many(run)
        await source.flush_acks()
        assert (source.deleted, await left_in(admin, outbox)) == (5, [])


async def test_read_ahead_bytes_counts_a_whole_rows_text(
    dsn: str, admin: Admin, outbox: str
) -> None:
    await add(admin, outbox, *(f"{n:03}" + "x" * 997 for n in range(6)))
    async with postgres_table_source(
        dsn, outbox, id_column="id", batch_size=10, read_ahead_bytes=2000
    ) as source:
        taken = []
        for _ in range(6):
            (message,) = await take(source, 1)
            taken.append(message.value["payload"][:3])
            assert source.buffered_bytes <= 2000 + 1000  # the budget, plus one row
            await message.ack()
    assert taken == ["000", "001", "002", "003", "004", "005"]
    assert source.queries >= 3  # not one read of all six: the bytes bound it


async def test_a_read_keeps_within_read_ahead_bytes_when_rows_grow(
    dsn: str, admin: Admin, outbox: str
) -> None:
    # Small rows first make the average small, so a read asks for many rows; the large
    # rows it reaches beyond the budget stay in the table for the next read.
    payloads = [f"{n:03}" + "s" * 7 for n in range(50)] + [f"{n:03}" + "L" * 997 for n in range(10)]
    await add(admin, outbox, *payloads)
    async with postgres_table_source(
        dsn, outbox, id_column="id", value_column="payload", codec="text",
        batch_size=100, read_ahead_bytes=2000,
    ) as source:  # fmt: skip
        taken = []
        for _ in payloads:
            (message,) = await take(source, 1)
            taken.append(message.value)
            assert source.buffered_bytes <= 2000 + 1000  # the budget, plus one row
            await message.ack()
    assert taken == payloads


async def test_rows_deleted_by_a_read_are_not_read_by_it(
    dsn: str, admin: Admin, outbox: str
) -> None:
    # The DELETE of acked rows and the next SELECT are one statement, which sees the table
    # as it was before the DELETE: the acked rows must still be left out.
    await add(admin, outbox, "a", "b", "c", "d")
    async with postgres_table_source(dsn, outbox, id_column="id", batch_size=2) as source:
        first = await source.next_run()
        await source.ack_many(first)
        second = await source.next_run()  # deletes a and b, reads on
        assert source.deleted == 2
        await source.ack_many(second)
    assert [m.value["payload"] for m in first + second] == ["a", "b", "c", "d"]
    assert await left_in(admin, outbox) == []
