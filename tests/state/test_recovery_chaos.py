"""Recovery chaos (issue 14): windows over every broker source with acks, through SIGKILLs
and aborts, come out exactly as an uninterrupted run computes them.

The worker is examples/recovering_windows.py: event-time tumbling(10), sliding(10, every=5)
and session(gap 3) windows by key in one checkpointed Flow (SQLiteStore, a checkpoint every
0.2 s), each window written as a JSON line. Per broker and per backend (the test's backend
runs the test and every worker it starts, asyncio or trio):

- ``test_sigkilled_workers_*``: the inputs are published in slices; before each slice's
  run a worker process is started and SIGKILLed after a random delay (some land while it
  starts, some mid-checkpoint, some between); then the closing event (far in event time:
  it closes every window) and one last worker that drains, stopped by SIGTERM;
- ``test_aborted_flows_*``: the same in the test's process, with ``FlowHandle.abort()`` at
  a random moment of each run, and a new Flow of the same name and store each time;
- ``test_workers_sigkilled_mid_backlog_*`` (JetStream): every input published first, each
  worker killed while it reads them, so that the next one has thousands more to read
  while the killed one's unacknowledged messages wait for their redelivery.

What must hold, from the inputs alone (:func:`expected_windows`): 0 lost inputs (every
input is in every window that must hold it), 0 windows written twice with different
contents, 0 windows written with other contents than the whole window. Written again
identically (the work after the last checkpoint, redone) is allowed, and counted.

``RXFLOW_CHAOS_RUNS=n``: ``n`` aborts per abort test and ``max(n // 5, 5)`` kills per
kill test (CI default: 12 aborts, 5 kills). That the checks can fail is shown by the unit
tests of :func:`check` (a flow without checkpoints, whose windows they caught written
incomplete, is refused now).
"""

from __future__ import annotations

import logging
import math
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import anyio
import attrs
import pytest
import reactivex
import reactivex.operators as ops

from rxflow import Flow, Window, sliding, tumbling
from rxflow.connectors import Message
from rxflow.errors import FlowStateError
from tests.connectors.conftest import require_service
from tests.connectors.support import load_example

EXAMPLE = load_example("recovering_windows")
EXAMPLE_PATH = Path(__file__).parents[2] / "examples" / "recovering_windows.py"
BROKERS = EXAMPLE.BROKERS
SERVICE_OF = {
    "jetstream": "nats",
    "redis": "redis",
    "rabbitmq": "rabbitmq",
    "mqtt": "mqtt",
    "kafka": "kafka",
    "outbox": "postgresql",
}
RUNS = int(os.environ.get("RXFLOW_CHAOS_RUNS", "0"))
ABORTS = RUNS or 12
INPUTS = 2000
# Mosquitto keeps at most max_queued_messages (1000 by default) of a session's messages
# waiting beyond its in-flight window, and drops the rest (it logs "Outgoing messages are
# being dropped"): runs aborted before they read anything leave every slice queued, so over
# the broker's default configuration the MQTT runs stay below that.
MQTT_INPUTS = 900
KEYS = 50
DRAIN_TIMEOUT = 45.0  # seconds the last run may take to write every window
# The closing event must come after every input, redelivered ones too: JetStream delivers a
# killed or aborted consumer's unacknowledged messages again only after ack_wait, so the
# last run gets the closing event that much later (other brokers deliver them at once).
REDELIVERED_WITHIN = EXAMPLE.JETSTREAM_ACK_WAIT + 1.0

WindowId = tuple[str, str, float, float]  # kind, key, start, end


def inputs_for(broker: str) -> int:
    return MQTT_INPUTS if broker == "mqtt" else INPUTS


def kills_for(broker: str) -> int:
    return max(RUNS // 5, 5)


def url_of(broker: str) -> str:
    host, port = require_service(SERVICE_OF[broker])
    return {
        "jetstream": f"nats://{host}:{port}",
        "redis": f"redis://{host}:{port}",
        "rabbitmq": f"amqp://guest:guest@{host}:{port}/",
        "mqtt": f"mqtt://{host}:{port}",
        "kafka": f"{host}:{port}",
        "outbox": f"postgresql://postgres@{host}:{port}/test",
    }[broker]


# -- what an uninterrupted run writes, and the checks --------------------------------------


def expected_windows(events: Iterable[dict[str, Any]]) -> dict[WindowId, list[int]]:
    """Every window of ``events``, computed here from the windows' definitions: tumbling
    ``[10k, 10k + 10)``, sliding ``[5k, 5k + 10)``, and per key sessions that go on while
    the next event is less than the gap after the last one (``[first, last + gap)``)."""
    windows: dict[WindowId, list[int]] = defaultdict(list)
    by_key: dict[str, list[tuple[float, int]]] = defaultdict(list)
    span = EXAMPLE.TUMBLING
    length, every = EXAMPLE.SLIDING
    for event in events:
        key, t, n = event["key"], event["t"], event["n"]
        start = math.floor(t / span) * span
        windows["tumbling", key, start, start + span].append(n)
        last_start = math.floor(t / every) * every
        for k in range(math.ceil(length / every)):
            start = last_start - k * every
            if start <= t < start + length:
                windows["sliding", key, start, start + length].append(n)
        by_key[key].append((t, n))
    gap = EXAMPLE.SESSION_GAP
    for key, timed in by_key.items():
        timed.sort()
        first, last, members = timed[0][0], timed[0][0], [timed[0][1]]
        for t, n in timed[1:]:
            if t < last + gap:
                last = max(last, t)
                members.append(n)
                continue
            windows["session", key, first, last + gap] = members
            first, last, members = t, t, [n]
        windows["session", key, first, last + gap] = members
    return {window: sorted(numbers) for window, numbers in windows.items()}


@attrs.frozen
class Verdict:
    """What the written windows say against the expected ones."""

    written: int  # lines
    windows: int  # distinct windows written
    expected: int
    lost: tuple[int, ...]  # inputs missing from a window that must hold them
    differing: tuple[WindowId, ...]  # written more than once, not all copies identical
    wrong: tuple[WindowId, ...]  # written with other contents than the expected window
    missing: tuple[WindowId, ...]  # expected, never written
    copies: int  # identical copies written again
    doubled: tuple[WindowId, ...]  # of the wrong ones: holding an input more than once

    @property
    def ok(self) -> bool:
        return not (self.lost or self.differing or self.wrong or self.missing)

    def describe(self, limit: int = 5) -> str:
        return (
            f"{len(self.lost)} inputs lost {list(self.lost[:limit])}, "
            f"{len(self.differing)} windows written twice with different contents "
            f"{list(self.differing[:limit])}, {len(self.wrong)} windows with other contents "
            f"than expected {list(self.wrong[:limit])} (of which {len(self.doubled)} hold "
            f"an input twice), {len(self.missing)} never written {list(self.missing[:limit])}"
        )


def check(
    lines: Iterable[dict[str, Any]], expected: dict[WindowId, list[int]], kinds: Sequence[str] = ()
) -> Verdict:
    """Group the written windows by (kind, key, start, end) and compare with ``expected``
    (only windows of ``kinds``, if given); the closing event's windows are ignored."""
    written: dict[WindowId, list[list[int]]] = defaultdict(list)
    count = 0
    for line in lines:
        if line["key"] == EXAMPLE.END_KEY or (kinds and line["kind"] not in kinds):
            continue
        count += 1
        written[line["kind"], line["key"], line["start"], line["end"]].append(line["n"])
    if kinds:
        expected = {window: ns for window, ns in expected.items() if window[0] in kinds}
    lost = {
        n
        for window, numbers in expected.items()
        for n in set(numbers).difference(*written.get(window, [[]]))
    }
    differing = [w for w, copies in written.items() if any(c != copies[0] for c in copies)]
    wrong = [w for w, copies in written.items() if any(c != expected.get(w) for c in copies)]
    return Verdict(
        written=count,
        windows=len(written),
        expected=len(expected),
        lost=tuple(sorted(lost)),
        differing=tuple(sorted(differing)),
        wrong=tuple(sorted(wrong)),
        missing=tuple(sorted(set(expected) - set(written))),
        copies=sum(len(copies) - 1 for copies in written.values()),
        doubled=tuple(sorted(w for w in wrong if any(len(set(c)) < len(c) for c in written[w]))),
    )


def read_lines(path: Path) -> list[dict[str, Any]]:
    import json

    if not path.exists():
        return []
    text = path.read_text()
    # A SIGKILL cannot cut a line short (each batch is one os.write), but say so if it did.
    return [json.loads(line) for line in text.splitlines() if line]


def slices(events: Sequence[Any], count: int) -> list[Sequence[Any]]:
    size = math.ceil(len(events) / count)
    return [events[first : first + size] for first in range(0, len(events), size)]


def summary(what: str, kills: int, aborts: int, verdict: Verdict, seconds: float) -> str:
    return (
        f"\n{what}: kills {kills}, aborts {aborts}, windows {verdict.windows}/"
        f"{verdict.expected}, lines {verdict.written}, re-emitted identical copies "
        f"{verdict.copies}, lost {len(verdict.lost)}, differing {len(verdict.differing)}, "
        f"incomplete or wrong {len(verdict.wrong)} (an input twice: {len(verdict.doubled)}), "
        f"missing {len(verdict.missing)} "
        f"in {seconds:.1f} s"
    )


# -- the checks can fail ------------------------------------------------------------------


def _lines_of(expected: dict[WindowId, list[int]]) -> list[dict[str, Any]]:
    return [
        {"kind": kind, "key": key, "start": start, "end": end, "n": numbers}
        for (kind, key, start, end), numbers in expected.items()
    ]


def test_expected_windows_are_what_an_uninterrupted_flow_writes() -> None:
    events = EXAMPLE.make_events(600, keys=20, seed=3)
    events.append(EXAMPLE.end_event(events))
    written: list[dict[str, Any]] = []

    def write(batch: list[tuple[str, Window[Any]]]) -> None:
        import json

        written.extend(json.loads(EXAMPLE.window_line(kind, w)) for kind, w in batch)

    messages = [Message(event) for event in events]
    flow = Flow("plain").source(messages).pipe(EXAMPLE.three_windows()).sink(write, batch_size=10)
    anyio.run(flow.run)
    verdict = check(written, expected_windows(events[:-1]))
    assert verdict.ok, verdict.describe()
    assert verdict.copies == 0
    assert {kind for kind, *_ in expected_windows(events)} == {"tumbling", "sliding", "session"}


def test_each_check_catches_its_failure() -> None:
    events = EXAMPLE.make_events(300, keys=10, seed=4)
    expected = expected_windows(events)
    lines = _lines_of(expected)
    assert check(lines + lines[:3], expected).copies == 3
    assert check(lines + lines[:3], expected).ok
    # An input lost: a window without it (and so also other contents than expected).
    cut = [dict(lines[0], n=lines[0]["n"][1:]), *lines[1:]]
    verdict = check(cut, expected)
    assert verdict.lost == (lines[0]["n"][0],)
    assert not verdict.ok
    # A window written again with other contents: differing and wrong, nothing lost.
    sliding_line = next(line for line in lines if line["kind"] == "sliding" and len(line["n"]) > 1)
    again = dict(sliding_line, n=sliding_line["n"][:1])
    verdict = check([*lines, again], expected)
    assert len(verdict.differing) == 1
    assert len(verdict.wrong) == 1
    assert verdict.lost == ()
    # A window counted twice inside (an input pushed again): wrong, not lost.
    doubled = dict(lines[1], n=sorted([*lines[1]["n"], lines[1]["n"][0]]))
    verdict = check([lines[0], doubled, *lines[2:]], expected)
    assert verdict.wrong
    assert not verdict.lost
    # A window never written.
    assert len(check(lines[1:], expected).missing) == 1


def test_an_input_late_for_its_windows_is_logged_by_the_worker(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The example's settings make no input late, so a late one is an input lost: the
    # worker says which, for each kind of window, in the log a failed check prints.
    far = 10 * (EXAMPLE.OUT_OF_ORDERNESS + EXAMPLE.TUMBLING)
    events = [{"key": "a", "t": 1.0, "n": 0}, {"key": "a", "t": far, "n": 1}]
    events.append({"key": "a", "t": 2.0, "n": 2})
    with caplog.at_level(logging.WARNING, logger="recovering_windows"):
        reactivex.from_iterable([Message(event) for event in events]).pipe(
            EXAMPLE.three_windows()
        ).subscribe(lambda _: None)
    late = [record.getMessage() for record in caplog.records]
    assert all(line.startswith("input 2 (key a, t 2.0,") for line in late), late
    kinds = sorted(line.split(" its ")[1].split()[0] for line in late)
    assert kinds == ["session", "sliding", "tumbling"]


# -- SIGKILL ------------------------------------------------------------------------------


class Worker:
    """One worker process of the example, its stderr kept for a failure's message."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.args = args
        self.log = log
        self.process: anyio.abc.Process | None = None

    async def start(self) -> None:
        with self.log.open("ab") as stderr:
            self.process = await anyio.open_process(
                [sys.executable, str(EXAMPLE_PATH), "work", *self.args],
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )

    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None

    def stderr(self) -> str:
        """What the workers logged that says what happened: every line but the progress
        lines (starts, recoveries, late inputs, errors), then the end of the log."""
        if not self.log.exists():
            return ""
        text = self.log.read_text()
        notable = [line for line in text.splitlines() if " | " not in line]
        return "\n".join(notable[-80:]) + "\n...\n" + text[-1500:]

    async def kill(self) -> None:
        assert self.process is not None
        self.process.kill()  # SIGKILL: no last checkpoint, no acks, no goodbye
        await self.process.wait()

    async def stop(self) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        with anyio.fail_after(30):
            return await self.process.wait()


class KillRun:
    """One kill test's broker, events, worker and output."""

    def __init__(self, broker: str, inputs: int, backend: str, tmp_path: Path) -> None:
        self.broker, self.url = broker, url_of(broker)
        self.started = time.monotonic()
        self.name = f"chaos{uuid.uuid4().hex[:12]}"
        self.rng = random.Random(self.name)
        self.events = EXAMPLE.make_events(inputs, keys=KEYS, seed=self.rng.randrange(1 << 30))
        self.expected = expected_windows(self.events)
        self.output, store = tmp_path / "windows.jsonl", tmp_path / "state.db"
        args = [broker, "--url", self.url, "--name", self.name, "--store", str(store)]
        args += ["--output", str(self.output), "--backend", backend]
        self.worker = Worker(args, tmp_path / "worker.log")

    async def publish(self, events: Sequence[dict[str, Any]]) -> None:
        await EXAMPLE.publish(self.broker, self.url, self.name, events)

    async def kill(self, run: int) -> None:
        worker = self.worker
        assert worker.alive(), f"worker run {run} ended by itself:\n{worker.stderr()}"
        await worker.kill()

    async def drain(self, what: str, kills: int) -> Verdict:
        """A last worker, the closing event, every window written, a graceful stop."""
        worker = self.worker
        await worker.start()
        await anyio.sleep(REDELIVERED_WITHIN)
        await self.publish([EXAMPLE.end_event(self.events)])
        with anyio.move_on_after(DRAIN_TIMEOUT):
            while check(read_lines(self.output), self.expected).missing:
                assert worker.alive(), f"the last worker ended by itself:\n{worker.stderr()}"
                await anyio.sleep(0.2)
        assert await worker.stop() == 0, worker.stderr()
        verdict = check(read_lines(self.output), self.expected)
        print(summary(what, kills, 0, verdict, time.monotonic() - self.started))
        return verdict


@pytest.mark.anyio
@pytest.mark.parametrize("broker", BROKERS)
async def test_sigkilled_workers_recover_every_window_exactly(
    broker: str, anyio_backend: str, tmp_path: Path
) -> None:
    chaos = KillRun(broker, inputs_for(broker), anyio_backend, tmp_path)
    kills = kills_for(broker)
    await EXAMPLE.prepare(broker, chaos.url, chaos.name)
    parts = slices(chaos.events, kills)
    for run in range(kills):
        await chaos.publish(parts[run] if run < len(parts) else [])
        await chaos.worker.start()
        await anyio.sleep(chaos.rng.uniform(0.5, 2.5))  # a python start takes ~0.5-1 s of it
        await chaos.kill(run)
    verdict = await chaos.drain(f"{broker} {anyio_backend} SIGKILL", kills)
    assert verdict.ok, verdict.describe() + "\n" + chaos.worker.stderr()


# A backlog that a worker reads for seconds (~4,000 events/s here), every worker killed
# while it reads it.
BACKLOG_INPUTS = 20_000
BACKLOG_KILLS = 3


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


async def _windows_written_since(output: Path, worker: Worker, size: int) -> None:
    """Wait until ``worker`` wrote windows to ``output`` (past its ``size`` bytes)."""
    with anyio.fail_after(30):
        while _size(output) <= size:
            assert worker.alive(), f"the worker ended by itself:\n{worker.stderr()}"
            await anyio.sleep(0.05)


@pytest.mark.anyio
@pytest.mark.parametrize("broker", ["jetstream"])
async def test_workers_sigkilled_mid_backlog_recover_every_window_exactly(
    broker: str, anyio_backend: str, tmp_path: Path
) -> None:
    # The test above publishes one slice per run, which a worker reads within a second, so
    # its kills seldom land while a worker reads with much more waiting. Here every event
    # is published first, and each worker is killed while it reads. JetStream delivers a
    # killed worker's unacknowledged messages again only after ack_wait: a next worker that
    # read on past them meanwhile (thousands of newer events) dropped them as late, ~250
    # inputs lost in every run, until jetstream_source read them first.
    chaos = KillRun(broker, BACKLOG_INPUTS, anyio_backend, tmp_path)
    await EXAMPLE.prepare(broker, chaos.url, chaos.name)
    await chaos.publish(chaos.events)
    for run in range(BACKLOG_KILLS):
        size = _size(chaos.output)
        await chaos.worker.start()
        await _windows_written_since(chaos.output, chaos.worker, size)
        await anyio.sleep(chaos.rng.uniform(0.0, 0.3))
        await chaos.kill(run)
    verdict = await chaos.drain(f"{broker} {anyio_backend} SIGKILL mid-backlog", BACKLOG_KILLS)
    assert verdict.ok, verdict.describe() + "\n" + chaos.worker.stderr()


# -- aborts in process --------------------------------------------------------------------


class Collected:
    """The flow's sink in the test's process: every window, as the worker writes it;
    ``complete`` is set once every window of ``expected`` was written (right or not)."""

    def __init__(self, expected: dict[WindowId, list[int]], kinds: Sequence[str]) -> None:
        self.lines: list[dict[str, Any]] = []
        self.kinds = kinds
        self.expected = {w: ns for w, ns in expected.items() if not kinds or w[0] in kinds}
        self.complete = anyio.Event()

    def __call__(self, batch: list[tuple[str, Window[Any]]]) -> None:
        import json

        self.lines.extend(json.loads(EXAMPLE.window_line(kind, w)) for kind, w in batch)
        if len(self.lines) >= len(self.expected) and not self.verdict().missing:
            self.complete.set()

    def verdict(self) -> Verdict:
        return check(self.lines, self.expected, self.kinds)


async def run_aborted(
    broker: str,
    url: str,
    name: str,
    store: Path,
    write: Callable[[list[tuple[str, Window[Any]]]], object],
    delay: float,
    *,
    flow_of: Callable[..., Flow] | None = None,
) -> None:
    """One run of the flow, aborted after ``delay`` seconds."""
    make = flow_of or EXAMPLE.window_flow
    async with EXAMPLE.open_source(broker, url, name) as source, anyio.create_task_group() as tg:
        handle = make(name, source, store, write).start(tg)
        await anyio.sleep(delay)
        handle.abort()


async def run_to_the_end(
    broker: str,
    url: str,
    name: str,
    store: Path,
    collected: Collected,
    *,
    flow_of: Callable[..., Flow] | None = None,
    end: Sequence[dict[str, Any]],
) -> None:
    """One run of the flow that gets the closing event of ``end`` once what earlier runs
    left unacknowledged came again, until every window is written; then a graceful stop."""
    make = flow_of or EXAMPLE.window_flow
    async with EXAMPLE.open_source(broker, url, name) as source, anyio.create_task_group() as tg:
        handle = make(name, source, store, collected).start(tg)
        await anyio.sleep(REDELIVERED_WITHIN)
        await EXAMPLE.publish(broker, url, name, [EXAMPLE.end_event(end)])
        with anyio.move_on_after(DRAIN_TIMEOUT):
            await collected.complete.wait()
        handle.stop()


async def abort_chaos(
    broker: str,
    url: str,
    store: Path,
    events: list[dict[str, Any]],
    aborts: int,
    *,
    flow_of: Callable[..., Flow] | None = None,
    expected: dict[WindowId, list[int]] | None = None,
    kinds: Sequence[str] = (),
) -> Verdict:
    """Publish ``events`` in slices, a run aborted at random after each, then drain."""
    name = f"chaos{uuid.uuid4().hex[:12]}"
    rng = random.Random(name)
    expected = expected if expected is not None else expected_windows(events)
    collected = Collected(expected, kinds)
    await EXAMPLE.prepare(broker, url, name)
    parts = slices(events, aborts)
    for run in range(aborts):
        await EXAMPLE.publish(broker, url, name, parts[run] if run < len(parts) else [])
        delay = rng.choice([0.0, rng.uniform(0.0, 0.1), rng.uniform(0.05, 0.8)])
        await run_aborted(broker, url, name, store, collected, delay, flow_of=flow_of)
    await run_to_the_end(broker, url, name, store, collected, flow_of=flow_of, end=events)
    return collected.verdict()


@pytest.mark.anyio
@pytest.mark.parametrize("broker", BROKERS)
async def test_aborted_flows_recover_every_window_exactly(
    broker: str, anyio_backend: str, tmp_path: Path
) -> None:
    url = url_of(broker)
    started = time.monotonic()
    events = EXAMPLE.make_events(inputs_for(broker), keys=KEYS, seed=random.randrange(1 << 30))
    verdict = await abort_chaos(broker, url, tmp_path / "state.db", events, ABORTS)
    print(
        summary(f"{broker} {anyio_backend} abort", 0, ABORTS, verdict, time.monotonic() - started)
    )
    assert verdict.ok, verdict.describe()


# -- without checkpoints ------------------------------------------------------------------


def _tumbling_only(name: str, source: Any, store: Path, write: Any) -> Flow:
    windows = tumbling(
        EXAMPLE.TUMBLING,
        key=lambda m: m.value["key"],
        timestamp=lambda m: m.value["t"],
        out_of_orderness=EXAMPLE.OUT_OF_ORDERNESS,
        name="tumbling",
    )
    tagged = ops.map(lambda window: ("tumbling", window))
    return Flow(name).source(source).pipe(windows, tagged).sink(write, batch_size=100)


@pytest.mark.anyio
async def test_without_checkpoints_sliding_windows_over_redelivery_are_refused(
    anyio_backend: str,
) -> None:
    url = url_of("redis")
    name = f"chaos{uuid.uuid4().hex[:12]}"
    windows = sliding(*EXAMPLE.SLIDING, timestamp=lambda m: m.value["t"], name="sliding")
    async with EXAMPLE.open_source("redis", url, name) as source:
        flow = Flow(name).source(source).pipe(windows).sink(lambda window: None)
        with pytest.raises(FlowStateError, match="checkpoint"):
            await flow.run()


@pytest.mark.anyio
async def test_without_checkpoints_tumbling_windows_still_hold(
    anyio_backend: str, tmp_path: Path
) -> None:
    # At-least-once alone rebuilds tumbling windows whole: a window's messages are acked
    # together once it is written, so what comes again is a whole window or nothing of it.
    url = url_of("redis")
    events = EXAMPLE.make_events(1000, keys=KEYS, seed=5)
    verdict = await abort_chaos(
        "redis", url, tmp_path / "unused.db", events, ABORTS, flow_of=_tumbling_only,
        kinds=("tumbling",),
    )  # fmt: skip
    print(summary(f"redis {anyio_backend} tumbling, no checkpoint", 0, ABORTS, verdict, 0.0))
    assert verdict.ok, verdict.describe()


@pytest.mark.anyio
async def test_without_checkpoints_the_examples_nested_sliding_windows_are_refused(
    anyio_backend: str, tmp_path: Path
) -> None:
    # The same three windows with no checkpoint. The sliding stage is inside
    # three_windows(), not among the flow's own stages; the flow still sees it when it is
    # subscribed, and refuses to run rather than emit windows with part of their items
    # after aborts (measured before it did: most rounds of 12 aborts over Redis wrote
    # incomplete windows, which the checks above caught).
    url = url_of("redis")
    name = f"chaos{uuid.uuid4().hex[:12]}"
    async with EXAMPLE.open_source("redis", url, name) as source:
        flow = EXAMPLE.window_flow(name, source, tmp_path / "unused.db", print, checkpoint=False)
        with pytest.raises(FlowStateError, match=r"sliding.*checkpoint"):
            await flow.run()
