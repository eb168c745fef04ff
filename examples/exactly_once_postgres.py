"""Exactly-once into PostgreSQL across SIGKILLs: a running total per customer, computed from
a Redis stream, whose rows are in a table once each however often the worker is killed.

The worker is a checkpointed ``rxflow.Flow``: ``redis_stream_source`` (a consumer of a
consumer group) → ``aggregate`` keyed by customer (its number of orders, their total and
the last order's id) → one row per order ``(customer, n, total, order_id)`` →
``postgres_sink(..., exactly_once=True)``, with the flow's state in a ``PostgresStore`` on
the same database. Each checkpoint (every ``--every`` seconds) writes in one PostgreSQL
transaction the totals that changed, the ids of the stream entries it covers and the rows
emitted before it; then it acknowledges those entries (``XACK``). A worker killed at any
moment leaves all of a checkpoint or none of it. The next worker loads the totals,
acknowledges without counting them again the entries the last commit covered (a kill
between a commit and its ``XACK``), and redoes only what came after.

The parent (``python examples/exactly_once_postgres.py``) produces orders into the stream
while it starts a worker, SIGKILLs it at a random moment (or right after new rows
appeared), starts another, and so on; workers alternate between asyncio and trio, and some
kill themselves right after a commit, before its acknowledgements reach Redis. A last
worker drains the stream and is stopped gracefully (SIGTERM). The parent then compares the
table with the rows an uninterrupted run writes. With exactly-once they are equal, each row
once. With ``--mode at-least-once`` (a plain ``postgres_sink``: rows written as they come,
entries still acknowledged at checkpoints) every row is there too, but those a killed
worker wrote after its last checkpoint are written again: duplicates.

Run, with Redis and PostgreSQL on localhost::

    python examples/exactly_once_postgres.py
    python examples/exactly_once_postgres.py --mode at-least-once --kills 8
    python examples/exactly_once_postgres.py --dsn postgresql://app@db/app --redis redis://cache

Each run makes a stream, a table and a flow state named ``eo_<random>`` and removes them at
the end (``--keep`` keeps them). Needs ``rxflow[redis,postgres]`` and ``trio``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import asyncpg
import attrs
import redis
from reactivex import operators as ops

from rxflow import Flow, FlowHandle
from rxflow.connectors import Message
from rxflow.connectors.postgres import postgres_sink
from rxflow.connectors.redis import redis_stream_source
from rxflow.state import Keyed, PostgresStore, aggregate

DSN = "postgresql://postgres@127.0.0.1:5432/test"
REDIS = "redis://127.0.0.1:6379"
GROUP = "totals"
CONSUMER = "worker"  # the same name in every run: a new worker re-reads what was pending
COLUMNS = ["customer", "n", "total", "order_id"]
CUSTOMERS = 17
STATE_PREFIX = "rxflow_state"  # PostgresStore's default tables

Row = tuple[str, int, int, int]
Totals = tuple[int, int, int]  # orders, total, last order id


# -- the flow ------------------------------------------------------------------------------


def _add(totals: Totals, message: Message[dict[str, Any]]) -> Totals:
    orders, total, _ = totals
    return orders + 1, total + message.value["amount"], message.value["id"]


def _as_row(keyed: Keyed[str, Totals]) -> Row:
    orders, total, last = keyed.value
    return keyed.key, orders, total, last


def totals_flow(name: str, source: Any, sink: Any, store: PostgresStore, every: float) -> Flow:
    """Orders in, one ``(customer, n, total, order_id)`` row per order out, checkpointed in
    ``store`` every ``every`` seconds."""
    totals = aggregate(lambda m: m.value["customer"], _add, lambda: (0, 0, -1), name="totals")
    return (
        Flow(name)
        .source(source, name="orders")
        .pipe(totals, ops.map(_as_row))
        .sink(sink)
        .checkpoint(store, every=every)
    )


def orders_source(redis_url: str, stream: str) -> Any:
    """The stream's orders (JSON), as consumer ``worker`` of group ``totals``."""
    # claim_idle_ms=None: only this consumer reads the group; what it leaves pending when it
    # dies it reads again itself when it starts.
    return redis_stream_source(redis_url, stream, GROUP, CONSUMER, codec="json", claim_idle_ms=None)


class CrashAfterCommit(PostgresStore):
    """A PostgresStore whose process SIGKILLs itself right after some commits, before the
    flow acknowledges the entries they cover: the crash that would write rows twice if the
    rows and the entries they came from were not stored together."""

    def __init__(self, dsn: str, commits: int) -> None:
        super().__init__(dsn)
        self._left = commits  # commits to go before the kill; 0: never

    async def commit(self, namespace: str, changes: Any, writes: Sequence[object] = ()) -> None:
        await super().commit(namespace, changes, writes)
        if self._left and (changes or writes):
            self._left -= 1
            if not self._left:
                print("killed after a commit", flush=True)
                os.kill(os.getpid(), signal.SIGKILL)


async def work(args: argparse.Namespace) -> None:
    """One worker: run the flow until SIGTERM stops it gracefully (or SIGKILL ends it)."""
    store = CrashAfterCommit(args.dsn, args.crash_after_commit)
    exactly_once = args.mode == "exactly-once"
    sink = postgres_sink(args.dsn, args.table, COLUMNS, exactly_once=exactly_once)
    flow = totals_flow(args.flow, orders_source(args.redis, args.stream), sink, store, args.every)
    async with anyio.create_task_group() as tg:
        handle = flow.start(tg)
        await tg.start(_stop_on_sigterm, handle)
        while not (handle.ready or handle.done):  # noqa: ASYNC110 (a state, no event)
            await anyio.sleep(0.01)
        print("ready", flush=True)  # connected, and SIGTERM stops the flow gracefully
        await handle.wait()
        tg.cancel_scope.cancel()


async def _stop_on_sigterm(
    handle: FlowHandle, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM) as signals:
        task_status.started()
        async for _ in signals:
            handle.stop()
            return


# -- the parent: produce, kill, restart, drain, compare ------------------------------------


KILLS = ("timer", "self", "rows")
"""How worker ``n`` dies: ``KILLS[n % 3]``. ``timer``: the parent SIGKILLs it at a random
moment; ``self``: it SIGKILLs itself right after a checkpoint's commit, before the
acknowledgements; ``rows``: the parent SIGKILLs it as soon as new rows appear."""


@attrs.frozen
class Death:
    """A worker's end: how, on which backend, and what Redis and the table held then."""

    kill: str  # one of KILLS
    backend: str
    pending: int  # entries delivered to the group and not acknowledged
    rows: int  # rows in the table


@attrs.frozen
class Report:
    """What a chaos run found."""

    mode: str
    orders: int
    rows: int  # rows in the table
    duplicates: int  # rows beyond the first copy of each
    missing: int  # rows an uninterrupted run writes that the table lacks
    unexpected: int  # rows in the table that no uninterrupted run writes
    deaths: tuple[Death, ...]
    seconds: float

    def line(self) -> str:
        deaths = ", ".join(
            f"{d.kill}/{d.backend} (pending {d.pending}, rows {d.rows})" for d in self.deaths
        )
        return (
            f"{self.mode}: {self.orders} orders, {self.rows} rows ({self.duplicates} "
            f"duplicates, {self.missing} missing, {self.unexpected} unexpected) in "
            f"{self.seconds:.1f} s; workers killed: {deaths}"
        )


def make_orders(seed: int) -> Iterator[dict[str, Any]]:
    """Orders without end, the same for the same seed."""
    rng = random.Random(seed)
    for n in itertools.count():
        yield {"id": n, "customer": f"c{rng.randrange(CUSTOMERS)}", "amount": rng.randint(1, 100)}


def expected_rows(orders: Sequence[dict[str, Any]]) -> list[Row]:
    """The rows an uninterrupted run writes: each customer's running totals."""
    totals: dict[str, tuple[int, int]] = {}
    rows = []
    for order in orders:
        count, total = totals.get(order["customer"], (0, 0))
        count, total = count + 1, total + order["amount"]
        totals[order["customer"]] = count, total
        rows.append((order["customer"], count, total, order["id"]))
    return rows


class _Database:
    """The parent's own PostgreSQL connection (asyncpg on an asyncio loop of its own)."""

    def __init__(self, dsn: str) -> None:
        self._runner = asyncio.Runner()
        self._connection = self._runner.run(asyncpg.connect(dsn))

    def execute(self, sql: str, *args: Any) -> None:
        self._runner.run(self._connection.execute(sql, *args))

    def count(self, table: str) -> int:
        return int(self._runner.run(self._connection.fetchval(f'SELECT count(*) FROM "{table}"')))

    def rows(self, table: str) -> list[Row]:
        records = self._runner.run(
            self._connection.fetch(f'SELECT {", ".join(COLUMNS)} FROM "{table}"')
        )
        return [tuple(record) for record in records]  # type: ignore[misc]

    def close(self) -> None:
        self._runner.run(self._connection.close())
        self._runner.close()


class _Worker:
    """A worker process, its output in files."""

    def __init__(self, args: list[str], folder: Path, number: int, kill: str, backend: str) -> None:
        self.kill = kill
        self.backend = backend
        self.stdout = folder / f"worker-{number}.out"
        self.stderr = folder / f"worker-{number}.err"
        with self.stdout.open("wb") as out, self.stderr.open("wb") as err:
            self.process = subprocess.Popen(args, stdout=out, stderr=err)
        self.started = time.monotonic()

    def output(self) -> str:
        return self.stdout.read_text() + self.stderr.read_text()


def run_chaos(
    dsn: str = DSN,
    redis_url: str = REDIS,
    *,
    mode: str = "exactly-once",
    kills: int = 6,
    rate: float = 300.0,
    every: float | None = None,
    seed: int = 7,
    keep: bool = False,
) -> Report:
    """Produce orders at ``rate`` a second while ``kills`` workers are killed one after the
    other (see :data:`KILLS`); then let a last worker drain the stream, and compare the
    table with what an uninterrupted run writes."""
    if every is None:  # at-least-once: long enough that rows are written again after a kill
        every = 0.3 if mode == "exactly-once" else 1.0
    rng = random.Random(seed)
    name = f"eo_{uuid.uuid4().hex[:12]}"
    orders = make_orders(seed)
    sent: list[dict[str, Any]] = []
    stream = redis.Redis.from_url(redis_url)
    database = _Database(dsn)
    database.execute(f'CREATE TABLE "{name}" (customer text, n int, total bigint, order_id int)')
    started = time.monotonic()
    workers: list[_Worker] = []
    deaths: list[Death] = []
    folder = Path(tempfile.mkdtemp(prefix=f"{name}-"))

    def produce() -> None:  # the orders whose time has come
        due = int((time.monotonic() - started) * rate) + 1 - len(sent)
        if due > 0:
            pipeline = stream.pipeline(transaction=False)
            for order in itertools.islice(orders, due):
                pipeline.xadd(name, {"data": json.dumps(order)})
                sent.append(order)
            pipeline.execute()

    def start(kill: str) -> _Worker:
        number = len(workers)
        backend = ("asyncio", "trio")[number % 2]
        command = [sys.executable, __file__, "worker", "--dsn", dsn, "--redis", redis_url]
        command += ["--stream", name, "--table", name, "--flow", name, "--mode", mode]
        command += ["--every", str(every), "--backend", backend, "--seed", str(seed + number)]
        commits = rng.randint(1, 3) if kill == "self" else 0
        command += ["--crash-after-commit", str(commits)]
        worker = _Worker(command, folder, number, kill, backend)
        workers.append(worker)
        return worker

    def pending() -> int:
        with contextlib.suppress(redis.ResponseError):  # no group yet
            return int(stream.xpending(name, GROUP)["pending"])
        return 0

    def died(worker: _Worker) -> None:
        code = worker.process.returncode
        if code != -signal.SIGKILL or (
            worker.kill == "self" and "killed after a commit" not in worker.output()
        ):
            raise RuntimeError(
                f"worker {workers.index(worker)} ended with {code}:\n{worker.output()}"
            )
        deaths.append(Death(worker.kill, worker.backend, pending(), database.count(name)))

    def kill_when_due(worker: _Worker) -> None:
        """Produce until the worker's time to die has come, then make sure it is dead."""
        ready_at: float | None = None
        rows_at_ready = 0
        patience = rng.uniform(0.1, 1.5)  # "timer": how long after it is ready
        while worker.process.poll() is None:
            produce()
            now = time.monotonic()
            if ready_at is None and "ready" in worker.output():
                ready_at, rows_at_ready = now, database.count(name)
            elif ready_at is not None:
                due = {
                    "timer": now > ready_at + patience,
                    "rows": database.count(name) > rows_at_ready,
                    "self": False,
                }[worker.kill]
                if due or now > ready_at + 10:  # "self" and "rows" have 10 s, then: killed
                    worker.process.send_signal(signal.SIGKILL)
            if now > worker.started + 60:
                raise TimeoutError(f"worker was never ready:\n{worker.output()}")
            time.sleep(0.005)
        died(worker)

    try:
        for number in range(kills):
            kill_when_due(start(KILLS[number % len(KILLS)]))
        last = start("none")
        while True:  # no more orders: the last worker drains the stream
            info = {group["name"]: group for group in stream.xinfo_groups(name)}
            state = info.get(GROUP.encode()) or info.get(GROUP)
            drained = state and state["pending"] == 0 and state["lag"] == 0
            if drained and "ready" in last.output():
                break
            if last.process.poll() is not None:
                raise RuntimeError(f"the last worker died before the end:\n{last.output()}")
            if time.monotonic() - started > 120:
                raise TimeoutError("the stream was not drained within 120 s:\n" + last.output())
            time.sleep(0.02)
        last.process.send_signal(signal.SIGTERM)
        if last.process.wait(timeout=30) != 0:
            raise RuntimeError(
                f"the last worker's graceful stop ended with {last.process.returncode}:\n"
                + last.output()
            )
        rows = Counter(database.rows(name))
        expected = Counter(expected_rows(sent))
        return Report(
            mode=mode,
            orders=len(sent),
            rows=sum(rows.values()),
            duplicates=sum(count - 1 for count in rows.values() if count > 1),
            missing=sum((expected - rows).values()),
            unexpected=sum(count for row, count in rows.items() if row not in expected),
            deaths=tuple(deaths),
            seconds=time.monotonic() - started,
        )
    finally:
        for worker in workers:
            if worker.process.poll() is None:
                worker.process.kill()
                worker.process.wait()
        if not keep:
            database.execute(f'DROP TABLE IF EXISTS "{name}"')
            for table in ("entries", "meta"):
                with contextlib.suppress(asyncpg.UndefinedTableError):
                    database.execute(
                        f'DELETE FROM "{STATE_PREFIX}_{table}" WHERE namespace = $1', name
                    )
            stream.delete(name)
            shutil.rmtree(folder, ignore_errors=True)
        database.close()
        stream.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("role", nargs="?", default="parent", choices=["parent", "worker"])
    parser.add_argument("--dsn", default=DSN)
    parser.add_argument("--redis", default=REDIS)
    parser.add_argument("--mode", default="exactly-once", choices=["exactly-once", "at-least-once"])
    parser.add_argument("--every", type=float, default=None, help="seconds between checkpoints")
    parser.add_argument("--rate", type=float, default=300.0, help="orders per second")
    parser.add_argument("--kills", type=int, default=6)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", action="store_true", help="keep the stream, table and state")
    # The worker's own arguments (the parent passes them).
    parser.add_argument("--stream")
    parser.add_argument("--table")
    parser.add_argument("--flow")
    parser.add_argument("--backend", default="asyncio", choices=["asyncio", "trio"])
    parser.add_argument(
        "--crash-after-commit", type=int, default=0, help="SIGKILL self after this many commits"
    )
    args = parser.parse_args(argv)
    if args.role == "worker":
        anyio.run(work, args, backend=args.backend)
        return
    report = run_chaos(
        args.dsn,
        args.redis,
        mode=args.mode,
        rate=args.rate,
        kills=args.kills,
        every=args.every,
        seed=args.seed,
        keep=args.keep,
    )
    print(report.line())
    if report.missing or report.unexpected or (args.mode == "exactly-once" and report.duplicates):
        sys.exit(1)


if __name__ == "__main__":
    main()
