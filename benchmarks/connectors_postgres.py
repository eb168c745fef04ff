"""PostgreSQL connector against raw asyncpg, on a local server.

``sink_copy`` / ``sink_insert``: rows per second written with ``postgres_sink`` and
``send_batch`` (batches of ``BATCH`` rows, one transaction each), against the same loop
written with asyncpg (``copy_records_to_table`` or ``executemany`` in a transaction).

``notify``: notifications per second from their commit to a consumer reading them through
``open_pipe(postgres_listen_source(...), ops.map(...))``, acking each, against an asyncpg
listener callback that puts each payload on an ``asyncio.Queue`` and a loop reading it.
The notifications are sent by one statement (one transaction) from another connection;
the clock runs from sending them to the consumer having taken the last one.

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
from rxflow.connectors.postgres import postgres_listen_source, postgres_sink, quote_ident

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


CASES = {
    "postgres_sink_copy": sink_copy,
    "postgres_sink_insert": sink_insert,
    "postgres_notify": notify,
}
