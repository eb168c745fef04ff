"""Scale a pipeline out to several processes with a JetStream durable consumer.

Each worker process runs the same rxflow pipeline over ``jetstream_source`` with the same
durable consumer name, so JetStream shares the orders between them: each order goes to one
worker, and an order a worker took but did not acknowledge (because it died) goes to another
one after ``ack_wait``. Workers run on asyncio and on trio alike.

A worker "processes" an order by writing its result to its own log file, which the parent
reads, and acknowledges it afterwards. Midway, the parent kills one worker with SIGKILL: no
goodbye, no nack. Every order is still processed; an order is processed twice only if the
killed worker had written its result and not yet acknowledged it. Run (needs a NATS server
with JetStream on localhost:4222)::

    python examples/scale_out_jetstream.py                 # 3 workers, 2000 orders, 1 killed
    python examples/scale_out_jetstream.py --workers 4 --orders 10000 --no-kill
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import anyio
import attrs
from anyio.abc import Process
from reactivex import operators as ops

from rxflow import open_pipe
from rxflow.connectors import Message
from rxflow.connectors.nats import jetstream_sink, jetstream_source

URL = "nats://127.0.0.1:4222"
ACK_WAIT_S = 2.0  # how long JetStream waits for a dead worker's acks before re-sending
BATCH = 10  # orders a worker handles together (and at most 2 fetches' worth in hand)
PAUSE_S = 0.01  # what "processing" a batch costs


# -- the worker: one rxflow pipeline ----------------------------------------------------


def price(order: dict[str, Any]) -> int:
    return int(order["quantity"]) * int(order["unit_cents"])


def is_not_empty(batch: list[Message[Any]]) -> bool:
    return bool(batch)


async def process_orders(url: str, stream: str, durable: str, log: int) -> None:
    """Take orders in batches of up to BATCH, write each result to ``log``, then ack."""
    async with (
        jetstream_source(
            url,
            stream,
            f"{stream}.orders",
            durable,
            codec="json",
            batch=2 * BATCH,
            ack_wait=ACK_WAIT_S,
            confirm_acks=True,  # "acked" in the log means JetStream has it
        ) as orders,
        open_pipe(
            orders,
            ops.buffer_with_time_or_count(0.05, BATCH),  # a batch, or what came in 50 ms
            ops.filter(is_not_empty),
            max_buffer_size=1,  # pull orders only as fast as they are processed
        ) as batches,
    ):
        os.write(log, b"ready\n")
        async for batch in batches:
            await handle(batch, log)


async def handle(batch: Sequence[Message[Any]], log: int) -> None:
    ids = [message.value["id"] for message in batch]
    os.write(log, "".join(f"got {n}\n" for n in ids).encode())
    await anyio.sleep(PAUSE_S)  # the work itself
    results = [f"done {m.value['id']} {price(m.value)}\n" for m in batch]
    os.write(log, "".join(results).encode())  # the result is out: now it may be acked
    for message in batch:
        await message.ack()
    os.write(log, "".join(f"acked {n}\n" for n in ids).encode())


async def stop_on_sigterm(scope: anyio.CancelScope) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM) as signals:
        async for _ in signals:
            scope.cancel()  # leaving the blocks closes the pipe and the connection
            return


async def worker(url: str, stream: str, durable: str, log_path: str) -> None:
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(stop_on_sigterm, tg.cancel_scope)
            await process_orders(url, stream, durable, log)
    finally:
        os.close(log)


# -- the parent: start workers, publish, kill one, check --------------------------------


@attrs.frozen
class WorkerLog:
    """What a worker wrote: order ids it received, processed (with repeats) and acked."""

    ready: bool
    got: frozenset[int]
    done: tuple[int, ...]
    acked: frozenset[int]

    @classmethod
    def read(cls, path: Path) -> WorkerLog:
        got, done, acked, ready = set(), [], set(), False
        text = path.read_text() if path.exists() else ""
        for line in text.splitlines(keepends=True):
            if not line.endswith("\n"):
                break  # cut short by SIGKILL
            kind, *fields = line.split()
            if kind == "ready":
                ready = True
            elif kind == "got":
                got.add(int(fields[0]))
            elif kind == "done":
                done.append(int(fields[0]))
            elif kind == "acked":
                acked.add(int(fields[0]))
        return cls(ready, frozenset(got), tuple(done), frozenset(acked))


@attrs.frozen
class Report:
    orders: int
    processed: int  # distinct orders processed
    duplicates: int  # extra times orders were processed
    duplicate_ids: frozenset[int]
    killed_in_flight: frozenset[int]  # received by the killed worker and not acked
    killed_done_not_acked: frozenset[int]  # of those, results already written
    per_worker: tuple[int, ...]
    seconds: float


async def start_worker(
    backend: str, url: str, stream: str, durable: str, log_path: Path
) -> Process:
    command = [sys.executable, __file__, "--worker", "--backend", backend, "--url", url]
    command += ["--stream", stream, "--durable", durable, "--log", str(log_path)]
    return await anyio.open_process(command, stdout=None, stderr=None)


async def wait_for(condition: Callable[[], bool], what: str, patience: float) -> None:
    """Poll the workers' logs until ``condition()`` holds, for ``patience`` seconds."""
    try:
        with anyio.fail_after(patience):
            while True:
                if condition():
                    return
                await anyio.sleep(0.02)
    except TimeoutError:
        raise TimeoutError(f"waited {patience} s for {what}") from None


async def _delete_stream(url: str, stream: str) -> None:
    import nats  # the plain asyncio client: rxflow has no stream administration

    client = await nats.connect(url)
    try:
        await client.jetstream().delete_stream(stream)
    finally:
        await client.close()


async def scale_out(
    *,
    workers: int = 3,
    orders: int = 2000,
    kill: int | None = 0,
    backends: Sequence[str] = ("asyncio", "trio"),
    url: str = URL,
    log_dir: Path,
    patience: float = 25.0,
) -> Report:
    """Run ``workers`` processes on ``orders`` orders; SIGKILL worker ``kill`` midway."""
    if kill is not None and (workers < 2 or not 0 <= kill < workers):
        raise ValueError(
            f"scale_out(): kill={kill} needs another worker to take over: pass workers >= 2 "
            "and 0 <= kill < workers, or kill=None"
        )
    stream = f"SCALE_OUT_{uuid.uuid4().hex[:10]}"
    durable = "pricing"
    started = time.perf_counter()
    async with jetstream_sink(url, f"{stream}.orders", stream=stream, create=True) as sink:
        logs = [log_dir / f"worker-{n}.log" for n in range(workers)]
        processes = [
            await start_worker(backends[n % len(backends)], url, stream, durable, log)
            for n, log in enumerate(logs)
        ]
        try:
            await wait_for(
                lambda: all(WorkerLog.read(log).ready for log in logs), "workers", patience
            )
            for first in range(0, orders, 500):
                await sink.send_batch(
                    [
                        {"id": n, "quantity": n % 7 + 1, "unit_cents": 250}
                        for n in range(first, min(first + 500, orders))
                    ]
                )
            if kill is not None:
                victim = logs[kill]
                await wait_for(
                    lambda: len(WorkerLog.read(victim).done) >= orders // (4 * workers),
                    "the victim",
                    patience,
                )
                processes[kill].kill()  # SIGKILL: no ack, no nack, no goodbye

            def all_done() -> bool:
                seen: set[int] = set()
                for log in logs:
                    seen.update(WorkerLog.read(log).done)
                return len(seen) == orders

            await wait_for(all_done, "every order", patience)
        finally:
            for process in processes:
                if process.returncode is None:
                    process.terminate()
            with anyio.move_on_after(10, shield=True):
                for process in processes:
                    await process.wait()
            for process in processes:
                if process.returncode is None:
                    process.kill()
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(asyncio.run, _delete_stream(url, stream))

    read = [WorkerLog.read(log) for log in logs]
    counts = Counter(n for log in read for n in log.done)
    victim_log = read[kill] if kill is not None else WorkerLog(True, frozenset(), (), frozenset())
    return Report(
        orders=orders,
        processed=len(counts),
        duplicates=sum(counts.values()) - len(counts),
        duplicate_ids=frozenset(n for n, times in counts.items() if times > 1),
        killed_in_flight=victim_log.got - victim_log.acked,
        killed_done_not_acked=frozenset(victim_log.done) - victim_log.acked,
        per_worker=tuple(len(log.done) for log in read),
        seconds=time.perf_counter() - started,
    )


async def parent(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as log_dir:
        report = await scale_out(
            workers=args.workers,
            orders=args.orders,
            kill=None if args.no_kill else 0,
            url=args.url,
            log_dir=Path(log_dir),
        )
    print(f"{report.processed}/{report.orders} orders processed in {report.seconds:.1f} s")
    print(f"orders per worker: {list(report.per_worker)}")
    if args.no_kill:
        return
    print(
        f"worker 0 was killed midway, with {len(report.killed_in_flight)} orders in hand, "
        f"{len(report.killed_done_not_acked)} of them processed and not acked"
    )
    print(f"duplicates: {report.duplicates} ({sorted(report.duplicate_ids)})")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--url", default=URL)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--orders", type=int, default=2000)
    parser.add_argument("--no-kill", action="store_true", help="let every worker finish")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--backend", default="asyncio", help=argparse.SUPPRESS)
    parser.add_argument("--stream", help=argparse.SUPPRESS)
    parser.add_argument("--durable", help=argparse.SUPPRESS)
    parser.add_argument("--log", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        anyio.run(worker, args.url, args.stream, args.durable, args.log, backend=args.backend)
    else:
        anyio.run(parent, args)


if __name__ == "__main__":
    main()
