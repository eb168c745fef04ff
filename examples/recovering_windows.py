"""Windows that recover exactly: a checkpointed worker over a broker, to be killed at will.

The worker reads JSON events ``{"key", "t", "n"}`` (``t``: event time in seconds, ``n``: a
unique input number) from one broker source and runs three event-time window stages by key
in one checkpointed :class:`rxflow.Flow`: ``tumbling(10)``, ``sliding(10, every=5)`` and
``session(gap 3)``. Every window emitted is appended to the output file as one JSON line
``{"kind", "key", "start", "end", "n": [sorted input numbers]}``. The state (open windows,
watermarks) lives in a SQLite file; a worker killed with SIGKILL and started again goes on
from its last checkpoint, so no window is lost, emitted incomplete, or emitted twice with
other contents (tests/state/test_recovery_chaos.py checks exactly that). SIGTERM stops it
gracefully: a last checkpoint keeps the open windows for the next run.

Brokers: ``jetstream``, ``redis``, ``rabbitmq``, ``mqtt`` (QoS 1, persistent session),
``kafka`` (a topic of one partition) and ``outbox`` (a PostgreSQL table read as a queue).
``--name`` names the stream, queue, topic, table, group or session alike. Each message
must have an identity, by which a redelivery that a stored checkpoint covers is recognised
(see docs/connectors.md): RabbitMQ messages carry the event's number as their
``message_id``, and MQTT ones are named by the payload's ``n`` (``identity=``). Mosquitto
keeps at most ``max_queued_messages`` (1000 by default) of a session's messages waiting and
drops the rest: publish no more than that ahead of the MQTT worker. With Redis::

    python examples/recovering_windows.py publish redis --name demo --count 2000
    python examples/recovering_windows.py work redis --name demo \\
        --store /tmp/demo.db --output /tmp/demo.jsonl --backend trio
    # kill -9 it, start it again as often as you like; then close every window:
    python examples/recovering_windows.py publish redis --name demo --end

``--url`` defaults to the local service of each broker (see ``DEFAULT_URLS``); ``publish``
makes the stream, queue, topic, table or session first (``--count 0`` only makes it). The
events of ``publish`` are :func:`make_events` with ``--seed``, the same for the same
arguments; ``--end`` publishes the closing event :func:`end_event`, whose time is far past
every window, so the watermark closes them all (its own key ``END_KEY`` is ignored).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import random
import signal
import sys
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from functools import partial
from typing import Any

import anyio
import reactivex
from reactivex import Observable
from reactivex import operators as ops

from rxflow import Flow, FlowHandle, Window, session, sliding, tumbling
from rxflow.connectors import Message
from rxflow.state import SQLiteStore

__all__ = [
    "BROKERS",
    "DEFAULT_URLS",
    "END_KEY",
    "OUT_OF_ORDERNESS",
    "SESSION_GAP",
    "SLIDING",
    "TUMBLING",
    "JsonLines",
    "end_event",
    "main",
    "make_events",
    "open_source",
    "prepare",
    "publish",
    "three_windows",
    "window_flow",
    "work",
]

logger = logging.getLogger("recovering_windows")

BROKERS = ("jetstream", "redis", "rabbitmq", "mqtt", "kafka", "outbox")
DEFAULT_URLS = {
    "jetstream": "nats://127.0.0.1:4222",
    "redis": "redis://127.0.0.1:6379",
    "rabbitmq": "amqp://guest:guest@127.0.0.1:5672/",
    "mqtt": "mqtt://127.0.0.1:1883",
    "kafka": os.environ.get("RXFLOW_KAFKA_BOOTSTRAP", "127.0.0.1:9092"),
    "outbox": "postgresql://postgres@127.0.0.1:5432/test",
}

TUMBLING = 10.0
SLIDING = (10.0, 5.0)  # span, every
SESSION_GAP = 3.0
# Event time advances 0.05 s per input (plus up to 1 s of jitter): 30 s of allowed
# out-of-orderness is 600 inputs, more than any broker here redelivers out of order
# (in-flight limits of 100), so no input is ever late.
OUT_OF_ORDERNESS = 30.0
STEP = 0.05
JITTER = 1.0
END_KEY = "__end__"  # the closing event's key: its windows never close, and are ignored
# Each source's in-flight limit (prefetch, receive maximum, max_ack_pending). It bounds how
# far out of order redelivered messages come (JetStream redelivers a killed worker's only
# after ack_wait: the next worker's source holds newer messages back until then).
IN_FLIGHT = 100
JETSTREAM_ACK_WAIT = 2.0  # a killed worker's unacked messages come again after this long
# A run that stops (or is aborted) with messages unacknowledged gives them back when its
# source closes, after the pull request of its last fetch expired (so that they come again
# at once, before newer messages): a short fetch keeps that wait short.
JETSTREAM_FETCH_TIMEOUT = 0.5
KAFKA_SESSION_TIMEOUT_MS = 6_000  # a killed worker leaves the group after this long

Event = dict[str, Any]


def make_events(count: int, *, keys: int = 50, seed: int = 0, first: int = 0) -> list[Event]:
    """``count`` events over ``keys`` keys, ``n`` from ``first``; event time rises by
    ``STEP`` per input with up to ``JITTER`` seconds of jitter (so slightly out of order).

    Example:
        >>> [sorted(e) for e in make_events(2)]
        [['key', 'n', 't'], ['key', 'n', 't']]
        >>> [e["n"] for e in make_events(3, first=10)]
        [10, 11, 12]
    """
    rng = random.Random(seed)
    return [
        {
            "key": f"k{rng.randrange(keys):02d}",
            "t": round(n * STEP + rng.uniform(0.0, JITTER), 3),
            "n": n,
        }
        for n in range(first, first + count)
    ]


def end_event(events: Sequence[Event]) -> Event:
    """The closing event: far past every window of ``events``, under its own key.

    Example:
        >>> end_event(make_events(10))["key"] == END_KEY
        True
    """
    latest = max((event["t"] for event in events), default=0.0)
    return {"key": END_KEY, "t": latest + 10 * (OUT_OF_ORDERNESS + TUMBLING + SLIDING[0]), "n": -1}


# -- the worker's flow -----------------------------------------------------------------


def _key(message: Message[Event]) -> str:
    return str(message.value["key"])


def _time(message: Message[Event]) -> float:
    return float(message.value["t"])


def three_windows() -> Callable[[Observable[Any]], Observable[tuple[str, Window[Any]]]]:
    """The three window stages over one subscription of the messages, each output tagged
    with its stage: ``("tumbling" | "sliding" | "session", window)``. Each stage has its
    own ``name=``: a checkpointed flow stores each one's open windows under its name.

    Example:
        >>> import reactivex
        >>> from types import SimpleNamespace as M
        >>> events = [M(value={"key": "a", "t": t, "n": t}) for t in (1, 2, 40)]
        >>> out = []
        >>> _ = reactivex.from_iterable(events).pipe(three_windows()).subscribe(out.append)
        >>> for kind, w in sorted(out, key=lambda o: (o[0], o[1].start))[:3]:
        ...     print(kind, w.key, w.start, w.end, len(w))
        session a 1.0 5.0 2
        session a 40.0 43.0 1
        sliding a -5.0 5.0 2
    """
    # late="side": an input late for a window it belongs to is logged (see _log_late), not
    # dropped silently; with these settings none ever is, so such a line means an input lost.
    common: dict[str, Any] = {
        "timestamp": _time, "out_of_orderness": OUT_OF_ORDERNESS, "late": "side",
    }  # fmt: skip
    windows = {
        "tumbling": tumbling(TUMBLING, key=_key, name="tumbling", **common),
        "sliding": sliding(*SLIDING, key=_key, name="sliding", **common),
        "session": session(_key, SESSION_GAP, name="session", **common),
    }
    for kind, operator in windows.items():
        operator.late_items.subscribe(partial(_log_late, kind))

    def stages(shared: Observable[Any]) -> Observable[tuple[str, Window[Any]]]:
        def tagged(kind: str, operator: Any) -> Observable[tuple[str, Window[Any]]]:
            return shared.pipe(operator, ops.map(lambda window: (kind, window)))

        return reactivex.merge(*(tagged(kind, operator) for kind, operator in windows.items()))

    return ops.publish(stages)


def _log_late(kind: str, message: Message[Event]) -> None:
    event = message.value
    logger.warning(
        "input %s (key %s, t %s, identity %r) came after its %s window was emitted: left out",
        event["n"], event["key"], event["t"], getattr(message, "identity", None), kind,
    )  # fmt: skip


def window_line(kind: str, window: Window[Any]) -> str:
    """One output line: the window's stage, key, bounds and sorted input numbers."""
    numbers = sorted(int(message.value["n"]) for message in window.items)
    record = {"kind": kind, "key": window.key, "start": window.start, "end": window.end}
    return json.dumps({**record, "n": numbers}) + "\n"


class JsonLines:
    """A sink appending each window as a JSON line to ``path``; returning from a batch
    confirms it, so every line is written (``os.write``, unbuffered) before its messages
    can be acknowledged."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)

    def __call__(self, batch: list[tuple[str, Window[Any]]]) -> None:
        lines = "".join(window_line(kind, window) for kind, window in batch)
        os.write(self._fd, lines.encode())

    def close(self) -> None:
        os.close(self._fd)


def window_flow(
    name: str,
    source: Any,
    store_path: str | os.PathLike[str],
    write: Callable[[list[tuple[str, Window[Any]]]], object],
    *,
    every: float = 0.2,
    checkpoint: bool = True,
    log_every: float | None = None,
) -> Flow:
    """The worker's flow: ``source`` through :func:`three_windows` into ``write`` (batches),
    checkpointed every ``every`` seconds into the SQLite file ``store_path`` (with
    ``checkpoint=False``: not, to show what goes wrong without), logging progress every
    ``log_every`` seconds."""
    flow = Flow(name, log_every=log_every).source(source, name="events").pipe(three_windows())
    flow = flow.sink(write, batch_size=100, name="windows")
    return flow.checkpoint(SQLiteStore(store_path), every=every) if checkpoint else flow


# -- the brokers -----------------------------------------------------------------------


def _subject(name: str) -> str:
    return f"chaos.{name}"


def _topic(name: str) -> str:
    return f"chaos/{name}"


def _event_number(message: Message[Event]) -> int:
    """An MQTT message's identity: its event's unique number (the payload's ``n``)."""
    return int(message.value["n"])


def _number_text(event: Event) -> str:
    """A RabbitMQ message's ``message_id``: its event's unique number."""
    return str(event["n"])


@contextlib.asynccontextmanager
async def open_source(broker: str, url: str, name: str) -> AsyncIterator[Any]:
    """The broker's source of the events, as every run of the worker opens it."""
    from rxflow import connectors as c

    if broker == "jetstream":
        source: Any = c.jetstream_source(
            url, name, _subject(name), name, codec="json", create=True,
            ack_wait=JETSTREAM_ACK_WAIT, max_ack_pending=IN_FLIGHT,
            fetch_timeout=JETSTREAM_FETCH_TIMEOUT,
        )  # fmt: skip
    elif broker == "redis":
        source = c.redis_stream_source(url, name, name, "worker", codec="json")
    elif broker == "rabbitmq":
        # Each message's identity is its AMQP message_id, which publish() sets: by it a
        # redelivered message that a stored checkpoint covers is recognised.
        source = c.rabbitmq_source(url, name, codec="json", prefetch=IN_FLIGHT)
    elif broker == "mqtt":
        # MQTT messages have no id of their own: the event's unique number names it.
        source = c.mqtt_source(
            url, _topic(name), client_id=name, codec="json", receive_maximum=IN_FLIGHT,
            identity=_event_number,
        )  # fmt: skip
    elif broker == "kafka":
        source = c.kafka_source(
            url, name, name, codec="json", commit_interval=0.2,
            session_timeout_ms=KAFKA_SESSION_TIMEOUT_MS, heartbeat_interval_ms=1_000,
        )  # fmt: skip
    elif broker == "outbox":
        source = c.postgres_table_source(
            url, name, id_column="id", value_column="payload", codec="json", poll_interval=0.1
        )
    else:
        raise ValueError(f"unknown broker {broker!r}: choose one of {', '.join(BROKERS)}")
    async with source as opened:
        yield opened


async def _on_asyncio(work: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """``work()`` on an asyncio loop of its own in a thread (asyncpg's and aiokafka's
    admin calls), so that the caller runs on either backend."""
    await anyio.to_thread.run_sync(asyncio.run, work())


async def prepare(broker: str, url: str, name: str) -> None:
    """Make what the events go to: the stream, queue, topic of one partition, table, or
    the persistent MQTT session that keeps them while no worker runs."""
    if broker == "kafka":

        async def topic() -> None:
            from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # type: ignore[import-untyped]

            admin = AIOKafkaAdminClient(bootstrap_servers=url)
            await admin.start()
            try:
                await admin.create_topics([NewTopic(name, 1, 1)])
            finally:
                await admin.close()

        await _on_asyncio(topic)
    elif broker == "outbox":

        async def table() -> None:
            import asyncpg  # type: ignore[import-untyped,unused-ignore]

            connection = await asyncpg.connect(url)
            try:
                await connection.execute(
                    f'CREATE TABLE IF NOT EXISTS "{name}" '
                    "(id bigserial PRIMARY KEY, payload jsonb NOT NULL)"
                )
            finally:
                await connection.close()

        await _on_asyncio(table)
    elif broker in {"jetstream", "rabbitmq", "mqtt"}:
        async with open_source(broker, url, name):
            pass  # the stream and consumer, the queue, or the session now exist


async def publish(broker: str, url: str, name: str, events: Sequence[Event]) -> None:
    """Publish ``events`` in order, each confirmed by the broker."""
    from rxflow import connectors as c

    if broker == "outbox":

        async def insert() -> None:
            import asyncpg

            connection = await asyncpg.connect(url)
            try:
                await connection.executemany(
                    f'INSERT INTO "{name}" (payload) VALUES ($1::jsonb)',
                    [(json.dumps(event),) for event in events],
                )
            finally:
                await connection.close()

        await _on_asyncio(insert)
        return
    if broker == "jetstream":
        sink: Any = c.jetstream_sink(url, _subject(name), encoder="json", stream=name)
    elif broker == "redis":
        sink = c.redis_stream_sink(url, name, encoder="json")
    elif broker == "rabbitmq":
        # The event's number as message_id: the same if the event is published again.
        sink = c.rabbitmq_sink(url, routing_key=name, encoder="json", message_id=_number_text)
    elif broker == "mqtt":
        sink = c.mqtt_sink(url, _topic(name), qos=1, encoder="json")
    elif broker == "kafka":
        sink = c.kafka_sink(url, name, encoder="json")
    else:
        raise ValueError(f"unknown broker {broker!r}: choose one of {', '.join(BROKERS)}")
    async with sink as opened:
        for first in range(0, len(events), 100):
            await opened.send_batch(list(events[first : first + 100]))


# -- the worker ------------------------------------------------------------------------


async def _stop_on_sigterm(handle: FlowHandle) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM) as signals:
        async for _ in signals:
            handle.stop()  # a last checkpoint keeps the open windows for the next run
            return


async def work(
    broker: str, url: str, name: str, store: str, output: str, every: float = 0.2
) -> None:
    """Run the worker until SIGTERM (or its flow fails), logging its progress to stderr."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(process)d %(message)s")
    write = JsonLines(output)
    try:
        async with open_source(broker, url, name) as source, anyio.create_task_group() as tg:
            flow = window_flow(name, source, store, write, every=every, log_every=1.0)
            handle = flow.start(tg)
            tg.start_soon(_stop_on_sigterm, handle)
            await handle.wait()  # a failed flow raises here: its traceback goes to stderr
            tg.cancel_scope.cancel()
    finally:
        write.close()


def main(argv: Sequence[str] | None = None) -> None:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("command", choices=("work", "publish"))
    parser.add_argument("broker", choices=BROKERS)
    parser.add_argument("--url", help="the broker (default: the local service)")
    parser.add_argument("--name", required=True, help="stream, queue, topic, table, group")
    parser.add_argument("--store", help="work: the SQLite file of the checkpoints")
    parser.add_argument("--output", help="work: the file the windows are appended to")
    parser.add_argument("--every", type=float, default=0.2, help="seconds between checkpoints")
    parser.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio")
    parser.add_argument("--count", type=int, default=2000, help="publish: how many events")
    parser.add_argument("--seed", type=int, default=0, help="publish: the events' seed")
    parser.add_argument("--end", action="store_true", help="publish: the closing event only")
    args = parser.parse_args(argv)
    url = args.url or DEFAULT_URLS[args.broker]
    if args.command == "work":
        if not args.store or not args.output:
            parser.error("work needs --store and --output")
        anyio.run(
            work, args.broker, url, args.name, args.store, args.output, args.every,
            backend=args.backend,
        )  # fmt: skip
        return
    events = make_events(args.count, seed=args.seed)

    async def publishing() -> None:
        if args.end:
            await publish(args.broker, url, args.name, [end_event(events)])
            return
        await prepare(args.broker, url, args.name)
        await publish(args.broker, url, args.name, events)

    anyio.run(publishing, backend=args.backend)


if __name__ == "__main__":
    main(sys.argv[1:])
