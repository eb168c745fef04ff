"""PostgreSQL connector against raw asyncpg, on a local server.

``sink_copy`` / ``sink_insert``: rows per second written with ``postgres_sink`` and
``send_batch`` (batches of ``BATCH`` rows, one transaction each), against the same loop
written with asyncpg (``copy_records_to_table`` or ``executemany`` in a transaction).

``notify``: notifications per second from their commit to a consumer reading them through
``open_pipe(postgres_listen_source(...), ops.map(...))``, acking each, against an asyncpg
listener callback that puts each payload on an ``asyncio.Queue`` and a loop reading it.
The notifications are sent by one statement (one transaction) from another connection;
the clock runs from sending them to the consumer having taken the last one.

``outbox``: rows per second read from a table and deleted as they are acked, through
``open_pipe(postgres_table_source(...), ops.map(...))``, against the same loop with asyncpg
(read a batch after the last id, delete its rows in one statement before the next read).

Under trio, rxflow hosts asyncpg on an asyncio loop in a worker thread; the raw baseline
always runs on asyncio (asyncpg runs nowhere else), so the trio rows show the hosting cost.
Needs PostgreSQL at ``RXFLOW_POSTGRES_DSN`` (default ``postgresql://postgres@127.0.0.1/test``).
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import anyio
import asyncpg  # type: ignore[import-untyped,unused-ignore]
from reactivex import operators as ops

from benchmarks._measure import BACKENDS, row
from rxflow import open_pipe
from rxflow.connectors._asyncio_host import AsyncioHost
from rxflow.connectors.postgres import (
    postgres_listen_source,
    postgres_sink,
    postgres_table_source,
    quote_ident,
)

DSN = os.environ.get("RXFLOW_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
BATCH = 1000


def sql(query: str) -> None:
    """Run one statement on a connection of its own (set-up and clean-up)."""

    async def run() -> None:
        connection = await asyncpg.connect(DSN)
        try:
            await connection.execute(query)
        finally:
            await connection.close()

    asyncio.run(run())


def rows(count: int) -> list[tuple[int, str, float]]:
    return [(n, f"sensor-{n % 10}", n * 0.5) for n in range(count)]


# -- sink ---------------------------------------------------------------------------------------


async def sink_rxflow(table: str, method: Any, batches: list[list[Any]]) -> float:
    async with postgres_sink(DSN, table, ["id", "sensor", "value"], method=method) as sink:
        started = time.perf_counter()
        for batch in batches:
            await sink.send_batch(batch)
        return time.perf_counter() - started


async def sink_raw(table: str, method: str, batches: list[list[Any]]) -> float:
    connection = await asyncpg.connect(DSN)
    insert = f"INSERT INTO {quote_ident(table)} (id, sensor, value) VALUES ($1, $2, $3)"
    try:
        started = time.perf_counter()
        for batch in batches:
            async with connection.transaction():
                if method == "copy":
                    await connection.copy_records_to_table(
                        table, records=batch, columns=["id", "sensor", "value"]
                    )
                else:
                    await connection.executemany(insert, batch)
        return time.perf_counter() - started
    finally:
        await connection.close()


def sink_case(method: str, count: int) -> Iterator[dict[str, Any]]:
    table = f"bench_{uuid.uuid4().hex[:12]}"
    all_rows = rows(count)
    batches = [all_rows[start : start + BATCH] for start in range(0, count, BATCH)]
    sql(f"CREATE UNLOGGED TABLE {quote_ident(table)} (id int, sensor text, value float8)")
    try:
        for backend in BACKENDS:
            best_rxflow = best_raw = float("inf")
            for _ in range(3):
                sql(f"TRUNCATE {quote_ident(table)}")
                elapsed = anyio.run(sink_rxflow, table, method, batches, backend=backend)
                best_rxflow = min(best_rxflow, elapsed)
                sql(f"TRUNCATE {quote_ident(table)}")
                best_raw = min(best_raw, asyncio.run(sink_raw(table, method, batches)))
            yield row(
                f"postgres_sink_{method}",
                backend,
                count,
                count / best_rxflow,
                f"raw_asyncpg_{'copy_records_to_table' if method == 'copy' else 'executemany'}",
                count / best_raw,
                batch=BATCH,
            )
    finally:
        sql(f"DROP TABLE {quote_ident(table)}")


def sink_copy(quick: bool) -> Iterator[dict[str, Any]]:
    return sink_case("copy", 50_000 if quick else 500_000)


def sink_insert(quick: bool) -> Iterator[dict[str, Any]]:
    return sink_case("insert", 20_000 if quick else 200_000)


# -- notify -------------------------------------------------------------------------------------


NOTIFY_ALL = "SELECT pg_notify($1, n::text) FROM generate_series(1, $2) AS n"
"""One statement, so one transaction: every notification is sent at its commit."""


async def notify_rxflow(count: int) -> float:
    channel = f"bench_{uuid.uuid4().hex[:12]}"
    received = 0
    async with (
        AsyncioHost() as host,
        postgres_listen_source(DSN, channel, max_buffer_size=count) as source,
        open_pipe(source, ops.map(lambda message: message)) as pipe,
    ):
        sender = await host.call(asyncpg.connect, DSN)
        try:
            started = time.perf_counter()
            await host.call(sender.execute, NOTIFY_ALL, channel, count)
            async for message in pipe:
                await message.ack()
                received += 1
                if received == count:
                    break
            return time.perf_counter() - started
        finally:
            await host.call(sender.close)


async def notify_raw(count: int) -> float:
    """What one writes with asyncpg alone: the listener callback queues, a loop consumes."""
    channel = f"bench_{uuid.uuid4().hex[:12]}"
    queue: asyncio.Queue[str] = asyncio.Queue()
    listener, sender = await asyncpg.connect(DSN), await asyncpg.connect(DSN)
    try:
        await listener.add_listener(
            channel, lambda _c, _pid, _channel, payload: queue.put_nowait(payload)
        )
        started = time.perf_counter()
        await sender.execute(NOTIFY_ALL, channel, count)
        for _ in range(count):
            await queue.get()
        return time.perf_counter() - started
    finally:
        await listener.close()
        await sender.close()


def notify(quick: bool) -> Iterator[dict[str, Any]]:
    count = 20_000 if quick else 200_000
    for backend in BACKENDS:
        best_rxflow = min(anyio.run(notify_rxflow, count, backend=backend) for _ in range(3))
        best_raw = min(asyncio.run(notify_raw(count)) for _ in range(3))
        yield row(
            "postgres_listen_notify",
            backend,
            count,
            count / best_rxflow,
            "raw_asyncpg_listener_to_asyncio_queue",
            count / best_raw,
        )


# -- outbox table -------------------------------------------------------------------------------


def fill_outbox(table: str, count: int) -> None:
    sql(
        f"DROP TABLE IF EXISTS {quote_ident(table)}; "
        f"CREATE UNLOGGED TABLE {quote_ident(table)} (id bigserial PRIMARY KEY, payload text); "
        f"INSERT INTO {quote_ident(table)} (payload) "
        f"SELECT n::text FROM generate_series(1, {count}) n"
    )


async def outbox_rxflow(table: str, count: int) -> float:
    received = 0
    started = time.perf_counter()
    async with (
        postgres_table_source(DSN, table, id_column="id", batch_size=OUTBOX_BATCH) as source,
        open_pipe(source, ops.map(lambda message: message)) as pipe,
    ):
        async for message in pipe:
            await message.ack()
            received += 1
            if received == count:
                break
    return time.perf_counter() - started


async def outbox_raw(table: str, count: int) -> float:
    """The same loop with asyncpg alone: read a batch after the last id, handle each row,
    delete the batch's rows before reading the next one."""
    started = time.perf_counter()
    connection = await asyncpg.connect(DSN)
    select = f"SELECT * FROM {quote_ident(table)} WHERE id > $1 ORDER BY id LIMIT $2"
    delete = f"DELETE FROM {quote_ident(table)} WHERE id = ANY($1)"
    try:
        received, last = 0, 0
        done: list[int] = []
        while received < count:
            if done:
                await connection.execute(delete, done)
                done = []
            for row in await connection.fetch(select, last, OUTBOX_BATCH):
                last = row["id"]
                done.append(last)
                received += 1
        await connection.execute(delete, done)
        return time.perf_counter() - started
    finally:
        await connection.close()


OUTBOX_BATCH = 100


def outbox(quick: bool) -> Iterator[dict[str, Any]]:
    count = 20_000 if quick else 200_000
    table = f"bench_{uuid.uuid4().hex[:12]}"
    try:
        for backend in BACKENDS:
            best_rxflow = best_raw = float("inf")
            for _ in range(2 if quick else 3):
                fill_outbox(table, count)
                best_rxflow = min(
                    best_rxflow, anyio.run(outbox_rxflow, table, count, backend=backend)
                )
                fill_outbox(table, count)
                best_raw = min(best_raw, asyncio.run(outbox_raw(table, count)))
            yield row(
                "postgres_outbox_consume_ack",
                backend,
                count,
                count / best_rxflow,
                "raw_asyncpg_select_batch_then_delete_it",
                count / best_raw,
                batch=OUTBOX_BATCH,
            )
    finally:
        sql(f"DROP TABLE IF EXISTS {quote_ident(table)}")


CASES = {
    "postgres_sink_copy": sink_copy,
    "postgres_sink_insert": sink_insert,
    "postgres_notify": notify,
    "postgres_outbox": outbox,
}
