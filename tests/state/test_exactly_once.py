"""Exactly-once into PostgreSQL: ``postgres_sink(..., exactly_once=True)`` in a Flow
checkpointed in a ``PostgresStore`` on the same database writes its rows in the transaction
of the checkpoint that stores the state and the source messages covered.

The flow is the example's (examples/exactly_once_postgres.py): orders from a real Redis
stream, a running total per customer (``aggregate``), one row ``(customer, n, total,
order_id)`` per order. In-process tests run on both backends; the chaos test runs worker
processes (alternating asyncio and trio) that are SIGKILLed at random moments, right after
new rows appeared, or by themselves right after a commit and before its acknowledgements.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import pytest
import redis
from reactivex import operators as ops

from rxflow import Flow
from rxflow.connectors.postgres import postgres_sink
from rxflow.connectors.postgres.sink import database_of
from rxflow.errors import FlowStateError
from rxflow.state import PostgresStore, SQLiteStore
from tests.connectors.conftest import require_service
from tests.connectors.support import load_example, wait_until

example = load_example("exactly_once_postgres")

DSN = "postgresql://postgres@127.0.0.1:5432/test"
OTHER_DATABASE = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS_URL = "redis://127.0.0.1:6379"
COLUMNS = example.COLUMNS


def _sql(dsn: str, query: str, *args: Any) -> list[Any]:
    async def run() -> list[Any]:
        connection = await asyncpg.connect(dsn)
        try:
            return list(await connection.fetch(query, *args))
        finally:
            await connection.close()

    return asyncio.run(run())


async def sql(query: str, *args: Any, dsn: str = DSN) -> list[Any]:
    """asyncpg on a loop of its own in a worker thread: the test may run under trio."""
    return await anyio.to_thread.run_sync(lambda: _sql(dsn, query, *args))


async def rows_of(table: str) -> Counter[tuple[Any, ...]]:
    return Counter(
        tuple(record) for record in await sql(f'SELECT {", ".join(COLUMNS)} FROM "{table}"')
    )


@pytest.fixture
def name() -> Iterator[str]:
    """A fresh name for a stream, a table and a flow (its state's namespace); all removed
    after the test."""
    require_service("postgresql")
    require_service("redis")
    name = f"eo_{uuid.uuid4().hex[:12]}"
    _sql(DSN, f'CREATE TABLE "{name}" (customer text, n int, total bigint, order_id int)')
    client = redis.Redis.from_url(REDIS_URL)
    yield name
    client.delete(name)
    client.close()
    _sql(DSN, f'DROP TABLE "{name}"')
    for table in ("entries", "meta"):
        _sql(DSN, f"DELETE FROM rxflow_state_{table} WHERE namespace = $1", name)


def add_orders(stream: str, orders: list[dict[str, Any]]) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    for order in orders:
        client.xadd(stream, {"data": json.dumps(order)})
    client.close()


def pending(stream: str) -> int:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        return int(client.xpending(stream, example.GROUP)["pending"])
    finally:
        client.close()


def first_orders(count: int) -> list[dict[str, Any]]:
    orders = example.make_orders(seed=3)
    return [next(orders) for _ in range(count)]


@pytest.mark.anyio
async def test_rows_are_written_by_checkpoints_only_and_once(name: str) -> None:
    orders = first_orders(500)
    add_orders(name, orders[:300])
    # No checkpoint but the stop's: every row waits for it, and so does every XACK.
    async with postgres_sink(DSN, name, COLUMNS, exactly_once=True) as sink:
        flow = example.totals_flow(
            name, example.orders_source(REDIS_URL, name), sink, PostgresStore(DSN), every=3600
        )
        async with anyio.create_task_group() as tg:
            handle = flow.start(tg)
            await wait_until(lambda: sink.staged_rows == 300)
            assert await rows_of(name) == Counter()
            assert pending(name) == 300
            handle.stop()
        assert (sink.staged_rows, sink.rows_written) == (0, 300)
    assert await rows_of(name) == Counter(example.expected_rows(orders[:300]))
    assert pending(name) == 0

    # A second run goes on from the stored totals; its periodic checkpoints write the rows
    # while it runs.
    add_orders(name, orders[300:])
    async with postgres_sink(DSN, name, COLUMNS, exactly_once=True) as sink:
        flow = example.totals_flow(
            name, example.orders_source(REDIS_URL, name), sink, PostgresStore(DSN), every=0.05
        )
        async with anyio.create_task_group() as tg:
            handle = flow.start(tg)
            await wait_until(lambda: sink.rows_written == 200)
            assert await rows_of(name) == Counter(example.expected_rows(orders))
            await wait_until(lambda: pending(name) == 0)
            handle.stop()
    assert await rows_of(name) == Counter(example.expected_rows(orders))


@pytest.mark.anyio
async def test_a_commit_whose_rows_fail_writes_nothing(name: str) -> None:
    # The third value is no bigint: the commit fails, and neither the rows nor the state
    # nor the record of the messages covered are stored.
    store = PostgresStore(DSN)
    async with postgres_sink(DSN, name, COLUMNS, exactly_once=True) as sink:
        flow = (
            Flow(name)
            .source(["a", "b"])
            .pipe(ops.map(lambda value: (value, 1, "lots" if value == "b" else 5, 0)))
            .sink(sink)
            .checkpoint(store)
        )
        with pytest.raises(TypeError, match=r"item 1, column 'total': 'lots' cannot be written"):
            await flow.run()
    assert await rows_of(name) == Counter()
    assert await sql("SELECT * FROM rxflow_state_meta WHERE namespace = $1", name) == []


async def a_row() -> AsyncIterator[tuple[str, int, int, int]]:
    yield ("a", 1, 1, 0)


@pytest.mark.anyio
async def test_an_exactly_once_sink_refuses_to_write_outside_a_checkpoint(
    name: str, tmp_path: Path
) -> None:
    async with postgres_sink(DSN, name, COLUMNS, exactly_once=True) as sink:
        with pytest.raises(FlowStateError, match=r"writes only in the checkpoints of a check"):
            await sink.send_batch([("a", 1, 1, 0)])
        with pytest.raises(FlowStateError, match=r"add \.checkpoint\(PostgresStore"):
            await Flow(name).source(a_row()).sink(sink).run()
        flow = Flow(name).source(a_row()).sink(sink).checkpoint(SQLiteStore(tmp_path / "s.db"))
        with pytest.raises(FlowStateError, match="must be a PostgresStore on the sink's database"):
            await flow.run()
        prefix = f"{name}_state"
        other = PostgresStore(OTHER_DATABASE, table_prefix=prefix)
        try:
            flow = Flow(name).source(a_row()).sink(sink).checkpoint(other)
            with pytest.raises(
                FlowStateError, match=r"not PostgreSQL at 127\.0\.0\.1:5432/postgres"
            ):
                await flow.run()
        finally:
            for table in ("entries", "meta"):
                await sql(f'DROP TABLE "{prefix}_{table}"', dsn=OTHER_DATABASE)
    assert await rows_of(name) == Counter()


@pytest.mark.anyio
async def test_a_store_writes_the_rows_of_exactly_once_sinks_on_its_database(name: str) -> None:
    store = PostgresStore(DSN)
    other = PostgresStore(OTHER_DATABASE)
    async with (
        postgres_sink(DSN, name, COLUMNS) as plain,
        postgres_sink(DSN, name, COLUMNS, exactly_once=True) as sink,
        postgres_sink(
            "postgresql://127.0.0.1/test?user=postgres", name, COLUMNS, exactly_once=True
        ) as same,
    ):
        assert (store.can_write(sink), store.can_write(same)) == (True, True)
        assert (store.can_write(plain), other.can_write(sink)) == (False, False)
        sink.stage([(0, ("a", 1, 5, 0)), (1, {"customer": "a", "n": 2, "total": 7, "order_id": 1})])
        async with store:
            with pytest.raises(TypeError, match="writes must be the rows an exactly-once"):
                await store.commit(name, [], [[("a", 1, 5, 0)]])
            # Another database's store, handed them anyway, refuses before writing anything.
            taken = sink.take(0)
            with pytest.raises(TypeError, match="cannot be written in a transaction of Postgre"):
                await other.commit(name, [], [taken])
            sink.restage(taken)  # as a checkpoint whose commit failed does
            first = sink.take(0)
            assert first is not None
            await store.commit(name, [], [first])
            assert await rows_of(name) == Counter({("a", 1, 5, 0): 1})
            second = sink.take(1)
            sink.restage(second)  # a failed commit gives them back: taken again, in order
            sink.stage([(2, ("b", 1, 1, 2))])
            await store.commit(name, [], [sink.take(2)])
    assert await rows_of(name) == Counter({("a", 1, 5, 0): 1, ("a", 2, 7, 1): 1, ("b", 1, 1, 2): 1})
    assert sink.rows_written == 3


def test_database_of_reads_both_dsn_forms_without_the_password() -> None:
    assert database_of("postgresql://u:pw@DB:6543/app") == ("db", 6543, "app")
    assert database_of("host=db port=6543 dbname=app password=pw") == ("db", 6543, "app")
    assert database_of("postgresql://u@db/?dbname=app") == ("db", 5432, "app")
    assert database_of("postgresql://app@db") == ("db", 5432, "app")  # libpq: the user's


def test_killed_workers_write_each_row_once_with_exactly_once_and_twice_without() -> None:
    require_service("postgresql")
    require_service("redis")
    exactly = example.run_chaos(DSN, REDIS_URL, mode="exactly-once", kills=6, seed=11)
    at_least = example.run_chaos(DSN, REDIS_URL, mode="at-least-once", kills=6, seed=12)
    print(f"\n{exactly.line()}\n{at_least.line()}")
    assert (exactly.duplicates, exactly.missing, exactly.unexpected) == (0, 0, 0), exactly.line()
    assert exactly.rows == exactly.orders > 0
    # Some workers died between a commit and its XACKs, with entries pending, on both
    # backends: their next workers acknowledged those without counting them again.
    after_commit = {
        death.backend for death in exactly.deaths if death.kill == "self" and death.pending
    }
    assert after_commit == {"asyncio", "trio"}, exactly.line()
    # The same kills with a plain sink: nothing lost, but rows written twice.
    assert (at_least.missing, at_least.unexpected) == (0, 0), at_least.line()
    assert at_least.duplicates > 0, at_least.line()


@pytest.mark.anyio
async def test_a_row_map_async_emits_after_the_barrier_is_written_with_its_message(
    name: str,
) -> None:
    from rxflow import map_async

    (order,) = first_orders(1)
    add_orders(name, [order])
    entered, release = anyio.Event(), anyio.Event()

    async def slow(message: Any) -> tuple[str, int, int, int]:
        entered.set()
        await release.wait()
        value = message.value
        return (value["customer"], 1, value["amount"], value["id"])

    async with postgres_sink(DSN, name, COLUMNS, exactly_once=True) as sink:
        flow = (
            Flow(name)
            .source(example.orders_source(REDIS_URL, name))
            .pipe(map_async(slow))
            .sink(sink)
            .checkpoint(PostgresStore(DSN), every=3600)
        )
        async with anyio.create_task_group() as tg:
            handle = flow.start(tg)
            await entered.wait()
            # A checkpoint that starts while the order is inside map_async (the handle's
            # internals: the only way to place a checkpoint exactly). It takes its barrier
            # only once map_async emitted the row: the row is in this checkpoint.
            checkpointer = handle._checkpointer
            assert checkpointer is not None
            checkpointed = anyio.Event()

            async def checkpoint() -> None:
                await checkpointer.checkpoint()
                checkpointed.set()

            tg.start_soon(checkpoint)
            await wait_until(lambda: checkpointer._aligning)
            release.set()
            await checkpointed.wait()
            await wait_until(lambda: pending(name) == 0)  # covered by it, so acknowledged
            handle.abort()  # a crash before the next checkpoint: the order is not read again
    assert await rows_of(name) == Counter({(order["customer"], 1, order["amount"], order["id"]): 1})
