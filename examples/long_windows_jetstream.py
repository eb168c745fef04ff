"""Long event-time windows over JetStream with a bounded in-flight limit: acks follow
checkpoints, not window closes (issue 14).

A publisher sends events to a JetStream stream at ``--rate`` events a second, in real time,
for ``--minutes``; each event carries its own time (``t``, the wall clock when it was
published), a key (``k``, one of ``--keys``) and a number (``n``). Meanwhile a checkpointed
``rxflow.Flow`` reads the stream through a durable consumer with ``max_ack_pending=1000``
and counts the events in ``--window``-second event-time tumbling windows by key, which it
writes to a sink (one line per window on stdout, and the events' numbers kept to check).

A 60-second window at 1,000 events a second holds 60 times what JetStream lets the flow
keep unacknowledged. Without checkpoints the flow could acknowledge an event only once its
window is written, so it fails at once with ``InFlightLimitError`` (pass ``--no-checkpoints``
to see it). With ``.checkpoint(SQLiteStore(...))`` the open windows are stored, every second
or as soon as half the limit is unacknowledged, and the events a stored checkpoint covers
are acknowledged: the limit bounds only what is not checkpointed yet.

Once the publisher is done, ``idle_timeout`` lets event time pass so the last windows
close; the flow is stopped when every published event is in a written window, or when it
made no progress (no ack, no window) for ``--patience`` seconds: a stall. Then it prints:
events published, events in windows, lost, duplicated inside windows, windows, events
dropped as late, the most unacknowledged messages seen (by the flow, and by JetStream), the
longest time with messages unacknowledged and no ack made (the stall detector), the longest
gap between window outputs, the checkpoints stored (with their longest commit and the bytes
written), and how far the flow was behind the publisher.

Run (needs a NATS server with JetStream on localhost:4222)::

    python examples/long_windows_jetstream.py                  # 5 minutes at 1,000/s
    python examples/long_windows_jetstream.py --minutes 1 --window 10 --backend trio
    python examples/long_windows_jetstream.py --minutes 0.5 --no-checkpoints

Measured (2 cores, local nats-server, the defaults: 5 minutes at 1,000/s, 60 s windows by
4 keys; asyncio / trio): 300,000 published, 300,000 in 24 windows, 0 lost, 0 duplicated,
0 late; at most 546 / 529 unacknowledged (JetStream, of 1,000 allowed) and never more than
1.0 s without an ack. The flow kept up: it acknowledged 999 events a second while
publishing and was 215 / 228 events behind when publishing ended; its last window came
49 / 59 s later, when event time (``idle_timeout``) reached that window's end. 620 / 635
checkpoints wrote 44 MB in all (longest commit 73 / 77 ms): each stores what the windows
gained since the one before, not the windows whole (before that, the same run wrote 2.9 GB
and acknowledged only about 500 events a second).

tests/connectors/test_long_windows.py runs the same flow on 30 seconds of synthetic event
time published at once (``Scenario(real_time=False)``), and asserts every window exact.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import math
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import attrs

from rxflow import Flow, FlowHandle, tumbling
from rxflow.connectors import Message
from rxflow.connectors.nats import JetStreamSink, JetStreamSource, jetstream_sink, jetstream_source
from rxflow.errors import InFlightLimitError
from rxflow.state import ScopeChanges, SQLiteStore
from rxflow.windows import Window

__all__ = ["Report", "Scenario", "WrittenWindow", "long_windows", "main"]

URL = "nats://127.0.0.1:4222"
TICK_S = 0.01  # the real-time publisher sends what is due every 10 ms
BURST = 1000  # events per send_batch when publishing as fast as possible
SAMPLE_S = 0.01  # how often the watch reads the flow's ack counters
BROKER_SAMPLE_S = 0.25  # how often it asks JetStream for the consumer's state


@attrs.frozen
class Scenario:
    """What to run. ``real_time``: publish at ``rate`` events a second for ``seconds``, each
    event timed by the wall clock; otherwise publish ``rate * seconds`` events at once
    before the flow starts, event ``n`` at ``t = n / rate`` (synthetic event time)."""

    seconds: float = 300.0
    rate: float = 1000.0
    window: float = 60.0
    keys: int = 4
    max_ack_pending: int = 1000
    checkpoints: bool = True
    checkpoint_every: float = 1.0
    idle_timeout: float = 5.0
    real_time: bool = True
    patience: float = 60.0  # seconds without an ack or a window that count as a stall
    echo: bool = False  # print each window as it is written

    @property
    def events(self) -> int:
        return round(self.rate * self.seconds)


@attrs.frozen
class WrittenWindow:
    """A window as the sink got it: its key, bounds, and the numbers of its events."""

    key: str
    start: float
    end: float
    numbers: tuple[int, ...]


@attrs.frozen
class Report:
    published: int
    in_windows: int  # events in written windows, repeats included
    lost: int  # published, in no written window
    duplicated: int  # extra times events were in written windows
    windows: tuple[WrittenWindow, ...]
    late: int  # events the window operator dropped as late
    max_unacked_flow: int  # the most messages the flow had unacknowledged at once
    max_unacked_broker: int  # the most JetStream reported pending an ack (sampled)
    longest_ack_gap: float  # the longest time with messages unacknowledged and no ack made
    longest_window_gap: float  # the longest time between two window outputs
    acknowledged: int
    checkpoints: int
    longest_commit: float  # seconds, the slowest checkpoint commit to SQLite
    committed_bytes: int
    publish_lag: float  # real time: how far the publisher fell behind its schedule, at most
    behind_at_publish_end: int  # events published and not yet acknowledged, then
    catch_up: float  # seconds from the publisher's end to the last event written
    stalled: bool  # stopped for want of progress, not because every event was written
    seconds: float  # from the flow's start to its end


class MeteredStore(SQLiteStore):
    """The SQLite store, counting its commits (one per stored checkpoint that changed
    anything), their time and the bytes they wrote."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.commits = 0
        self.longest_commit = 0.0
        self.bytes = 0

    async def commit(
        self, namespace: str, changes: Sequence[ScopeChanges], writes: Sequence[object] = ()
    ) -> None:
        started = time.perf_counter()
        await super().commit(namespace, changes, writes)
        self.longest_commit = max(self.longest_commit, time.perf_counter() - started)
        self.commits += 1
        self.bytes += sum(
            len(key) + len(entry.value)
            for change in changes
            for entries in change.puts.values()
            for key, entry in entries.items()
        )


class Tally:
    """The flow's sink: keeps every written window and says when ``expected`` distinct
    events have been written."""

    def __init__(self, echo: bool) -> None:
        self.echo = echo
        self.counts: Counter[int] = Counter()
        self.windows: list[WrittenWindow] = []
        self.output_times: list[float] = []
        self.expected: int | None = None  # set once publishing is over
        self.all_written = anyio.Event()

    def write(self, window: Window) -> None:
        numbers = tuple(int(message.value["n"]) for message in window.items)
        self.windows.append(WrittenWindow(str(window.key), window.start, window.end, numbers))
        self.counts.update(numbers)
        self.output_times.append(anyio.current_time())
        if self.echo:
            print(f"  window {window.key} [{window.start:.0f}, {window.end:.0f}): {len(numbers)}")
        self.check()

    def check(self) -> None:
        if self.expected is not None and len(self.counts) >= self.expected:
            self.all_written.set()

    def longest_gap(self) -> float:
        times = self.output_times
        return max((b - a for a, b in itertools.pairwise(times)), default=0.0)


class Watch:
    """Samples the running flow: the most unacknowledged messages (the flow's count and
    JetStream's), the longest time with messages unacknowledged and no ack made, and when
    the flow last made progress (an ack or a window)."""

    def __init__(self, handle: FlowHandle, source: JetStreamSource, tally: Tally) -> None:
        self.handle = handle
        self.source = source
        self.tally = tally
        self.max_unacked_flow = 0
        self.max_unacked_broker = 0
        self.longest_ack_gap = 0.0
        self.progressed = anyio.current_time()

    async def flow(self) -> None:
        handle = self.handle
        acked, since, windows = handle.acknowledged, anyio.current_time(), 0
        while True:
            await anyio.sleep(SAMPLE_S)
            now, unacked, acknowledged = (
                anyio.current_time(),
                handle.unacknowledged,
                handle.acknowledged,
            )
            self.max_unacked_flow = max(self.max_unacked_flow, unacked)
            if acknowledged != acked or len(self.tally.windows) != windows:
                self.progressed = now
            windows = len(self.tally.windows)
            if acknowledged != acked or unacked == 0:
                acked, since = acknowledged, now  # an ack came, or none was owed
            else:
                self.longest_ack_gap = max(self.longest_ack_gap, now - since)

    async def stalled(self, patience: float) -> None:
        """Return once the flow made no progress for ``patience`` seconds."""
        while True:
            left = self.progressed + patience - anyio.current_time()
            if left <= 0:
                return
            await anyio.sleep(left)  # then look again: it may have progressed meanwhile

    async def broker(self) -> None:
        while True:
            info = await self.source.consumer_info()
            self.max_unacked_broker = max(self.max_unacked_broker, info.num_ack_pending)
            await anyio.sleep(BROKER_SAMPLE_S)


def event(n: int, keys: int, t: float) -> dict[str, Any]:
    return {"n": n, "k": f"k{n % keys}", "t": t}


async def publish_at_once(sink: JetStreamSink, scenario: Scenario) -> None:
    for first in range(0, scenario.events, BURST):
        last = min(first + BURST, scenario.events)
        await sink.send_batch(
            [event(n, scenario.keys, n / scenario.rate) for n in range(first, last)]
        )


async def publish_in_real_time(sink: JetStreamSink, scenario: Scenario) -> float:
    """Publish ``scenario.events`` at ``scenario.rate`` a second; return the largest lag
    behind the schedule (seconds)."""
    total, rate = scenario.events, scenario.rate
    started, sent, lag = anyio.current_time(), 0, 0.0
    while sent < total:
        now = anyio.current_time()
        due = min(total, math.floor((now - started) * rate) + 1)
        if due > sent:
            lag = max(lag, (now - started) - sent / rate)
            stamp = time.time()
            await sink.send_batch([event(n, scenario.keys, stamp) for n in range(sent, due)])
            sent = due
        await anyio.sleep(TICK_S)
    return lag


@attrs.define
class Ending:
    """How the run ended, as :func:`publish_then_stop` saw it."""

    publish_lag: float = 0.0
    behind: int = 0
    catch_up: float = 0.0
    stalled: bool = False


async def publish_then_stop(
    sink: JetStreamSink, scenario: Scenario, handle: FlowHandle, watch: Watch, ending: Ending
) -> None:
    """Publish (in real time), wait until every event is written or the flow stalls, then
    stop the flow (a checkpointed flow's graceful stop stores open windows, if any)."""
    if scenario.real_time:
        ending.publish_lag = await publish_in_real_time(sink, scenario)
    published = anyio.current_time()
    ending.behind = scenario.events - handle.acknowledged
    watch.tally.expected = scenario.events
    watch.tally.check()
    async with anyio.create_task_group() as tg:

        async def stalled() -> None:
            await watch.stalled(scenario.patience)
            ending.stalled = True
            tg.cancel_scope.cancel()

        tg.start_soon(stalled)
        await watch.tally.all_written.wait()
        ending.catch_up = anyio.current_time() - published
        tg.cancel_scope.cancel()
    handle.stop()


def timestamp(message: Message[Any]) -> float:
    return float(message.value["t"])


def key(message: Message[Any]) -> str:
    return str(message.value["k"])


async def long_windows(scenario: Scenario, *, url: str = URL, state_dir: Path) -> Report:
    """Run ``scenario`` on a fresh stream (deleted afterwards) and report what was written.

    Raises what the flow raised: with ``checkpoints=False``, ``InFlightLimitError``.
    """
    stream = f"LONGWIN_{uuid.uuid4().hex[:10]}"
    subject = f"{stream.lower()}.events"
    store = MeteredStore(state_dir / f"{stream}.db")
    tally = Tally(scenario.echo)
    created = False
    try:
        async with jetstream_sink(url, subject, stream=stream, create=True) as sink:
            created = True
            if not scenario.real_time:
                await publish_at_once(sink, scenario)
            async with jetstream_source(
                url,
                stream,
                subject,
                "windows",
                codec="json",
                max_ack_pending=scenario.max_ack_pending,
            ) as source:
                flow = (
                    Flow("long-windows")
                    .source(source)
                    .pipe(
                        tumbling(
                            scenario.window,
                            key=key,
                            timestamp=timestamp,
                            idle_timeout=scenario.idle_timeout,
                        )
                    )
                    .sink(tally.write)
                )
                if scenario.checkpoints:
                    flow.checkpoint(store, every=scenario.checkpoint_every)
                handle = flow.prepare()
                watch = Watch(handle, source, tally)
                ending = Ending()
                failure: Exception | None = None
                started = anyio.current_time()
                async with anyio.create_task_group() as tg:
                    tg.start_soon(watch.flow)
                    tg.start_soon(watch.broker)
                    tg.start_soon(publish_then_stop, sink, scenario, handle, watch, ending)
                    try:
                        await handle.run()
                    except Exception as error:  # raised below, outside the task group
                        failure = error
                    tg.cancel_scope.cancel()
                seconds = anyio.current_time() - started
                if failure is not None:
                    raise failure
    finally:
        if created:  # (a server that could not be reached has nothing to delete)
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(asyncio.run, _delete_stream(url, stream))
    in_windows = sum(tally.counts.values())
    return Report(
        published=scenario.events,
        in_windows=in_windows,
        lost=sum(1 for n in range(scenario.events) if n not in tally.counts),
        duplicated=in_windows - len(tally.counts),
        windows=tuple(tally.windows),
        late=handle.snapshot()["tumbling"].dropped,
        max_unacked_flow=watch.max_unacked_flow,
        max_unacked_broker=watch.max_unacked_broker,
        longest_ack_gap=watch.longest_ack_gap,
        longest_window_gap=tally.longest_gap(),
        acknowledged=handle.acknowledged,
        checkpoints=store.commits,
        longest_commit=store.longest_commit,
        committed_bytes=store.bytes,
        publish_lag=ending.publish_lag,
        behind_at_publish_end=ending.behind,
        catch_up=ending.catch_up,
        stalled=ending.stalled,
        seconds=seconds,
    )


async def _delete_stream(url: str, stream: str) -> None:
    import nats  # the plain asyncio client: rxflow has no stream administration

    client = await nats.connect(url)
    try:
        await client.jetstream().delete_stream(stream)
    finally:
        await client.close()


def print_report(scenario: Scenario, report: Report) -> None:
    print(
        f"{scenario.seconds / 60:g} min at {scenario.rate:g}/s, {scenario.window:g} s windows "
        f"by {scenario.keys} keys, max_ack_pending={scenario.max_ack_pending}, "
        f"checkpoints {'on' if scenario.checkpoints else 'off'}"
    )
    print(f"events published:             {report.published}")
    print(f"events in windows:            {report.in_windows}")
    print(f"lost:                         {report.lost}")
    print(f"duplicated inside windows:    {report.duplicated}")
    print(f"windows:                      {len(report.windows)}")
    print(f"dropped as late:              {report.late}")
    print(f"max unacknowledged (flow):    {report.max_unacked_flow}")
    print(f"max unacknowledged (JetStream, sampled): {report.max_unacked_broker}")
    print(f"longest time unacked, no ack: {report.longest_ack_gap:.2f} s")
    print(f"longest gap between windows:  {report.longest_window_gap:.2f} s")
    print(f"messages acknowledged:        {report.acknowledged}")
    print(
        f"checkpoints stored:           {report.checkpoints} (longest commit "
        f"{report.longest_commit * 1000:.0f} ms, {report.committed_bytes / 1e6:.1f} MB written)"
    )
    print(f"publisher's largest lag:      {report.publish_lag:.3f} s")
    print(f"unacked when publishing ended: {report.behind_at_publish_end}")
    kept_up = (report.published - report.behind_at_publish_end) / scenario.seconds
    print(f"acknowledged while publishing: {kept_up:.0f} events/s")
    if report.stalled:
        print(f"STALLED: no ack and no window for {scenario.patience:g} s; stopped")
    else:
        print(f"last event written:           {report.catch_up:.1f} s after publishing ended")
    print(
        f"flow ran:                     {report.seconds:.1f} s "
        f"({report.acknowledged / report.seconds:.0f} events/s acknowledged)"
    )


async def run(args: argparse.Namespace) -> None:
    scenario = Scenario(
        seconds=args.minutes * 60,
        rate=args.rate,
        window=args.window,
        keys=args.keys,
        max_ack_pending=args.max_ack_pending,
        checkpoints=not args.no_checkpoints,
        echo=True,
    )
    with tempfile.TemporaryDirectory() as state_dir:
        try:
            report = await long_windows(scenario, url=args.url, state_dir=Path(state_dir))
        except InFlightLimitError as error:
            print(f"the flow failed: {error}")
            raise SystemExit(1) from None
    print_report(scenario, report)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--url", default=URL)
    parser.add_argument("--minutes", type=float, default=5.0, help="how long to publish")
    parser.add_argument("--rate", type=float, default=1000.0, help="events a second")
    parser.add_argument("--window", type=float, default=60.0, help="window length, seconds")
    parser.add_argument("--keys", type=int, default=4, help="how many keys the events have")
    parser.add_argument("--max-ack-pending", type=int, default=1000)
    parser.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio")
    parser.add_argument("--no-checkpoints", action="store_true", help="see it fail")
    args = parser.parse_args(argv)
    anyio.run(run, args, backend=args.backend)


if __name__ == "__main__":
    main()
