"""Snapshots of a Kafka changelog scope, so that its log stays within a constant factor of
its live state: when to write one, how a load starts at the newest (:func:`load_scope`),
and how the records before it go (see :class:`~rxflow.state.KafkaChangelogStore`)."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from collections.abc import Callable
from typing import Any, Final

from rxflow.connectors._extras import requires_extra
from rxflow.errors import ServiceUnavailableError
from rxflow.state._kafka_produce import Plan, Send, produce_commit
from rxflow.state._kafka_records import ENTRY_HEADER, MARKER_HEADER, Replay, commit_records
from rxflow.state._store import ScopeChanges

with requires_extra("kafka"):
    import aiokafka  # type: ignore[import-untyped]  # no py.typed
    import aiokafka.errors  # type: ignore[import-untyped]
    import aiokafka.structs  # type: ignore[import-untyped]

__all__ = [
    "DEFAULT_SNAPSHOT_AFTER",
    "Job",
    "Tally",
    "load_scope",
    "read_range",
]

logger = logging.getLogger("rxflow.state")

DEFAULT_SNAPSHOT_AFTER: Final = 1000
"""A scope's log gets a snapshot once it holds more than twice the scope's live entries
plus this many records."""

Add = Callable[[Any, Any, Any, int], None]
"""What a read hands each record to: ``(key, value, headers, offset)``."""


class Tally:
    """What a store knows of a scope's log since the place a load starts at: ``since``
    records (read by the last load, written since), of which ``live`` entries were live
    then; a commit that brings ``since`` over ``check_at`` reads the scope again to decide
    on a snapshot."""

    __slots__ = ("check_at", "live", "since")

    def __init__(self, since: int, live: int, check_at: float) -> None:
        self.since, self.live, self.check_at = since, live, check_at


class Job:
    """One load of a scope, on the clients' loop: what it needs and what it found."""

    __slots__ = (
        "consumer",
        "description",
        "end",
        "epoch",
        "floor",
        "indexer",
        "namespace",
        "partition",
        "plan",
        "read",
        "recorded",
        "replay",
        "scope",
        "send",
        "timeout",
        "topic",
    )

    def __init__(
        self,
        namespace: str,
        scope: str,
        topic: str,
        partition: int,
        *,
        consumer: Any,
        send: Send,
        indexer: Any,
        epoch: int | None,
        floor: int | None,
        timeout: float,
        description: str,
    ) -> None:
        self.namespace, self.scope, self.topic, self.partition = namespace, scope, topic, partition
        self.consumer, self.send, self.indexer = consumer, send, indexer
        self.epoch, self.floor = epoch, floor
        self.timeout, self.description = timeout, description
        self.replay = Replay(namespace, scope)
        self.read = 0  # records read, the replay's and the check's
        self.end = 0  # the partition's end offset when the load started
        self.plan: Plan | None = None  # the snapshot written, if one was
        self.recorded = False  # and whether a load now starts at it

    def tally(self, now: float) -> Tally:
        """What the next commits count from."""
        replay, never = self.replay, math.inf
        live = replay.live(now)
        if self.plan is not None:
            return Tally(len(self.plan.entries) + 1, live, 2 * live + (self.floor or 0))
        if self.floor is None or self.epoch is None or not self.replay.alone:
            return Tally(replay.records, live, never)
        # Not worth one yet: read again once the log doubled, so that reads that end
        # without a snapshot cost O(1) per record written, amortized.
        return Tally(replay.records, live, max(2 * live + self.floor, 2 * replay.records))


async def read_range(job: Job, start: int, end: int, add: Add) -> None:
    """On the clients' loop: the records of the job's partition from ``start`` up to
    ``end``, each handed to ``add``."""
    consumer = job.consumer
    where = aiokafka.TopicPartition(job.topic, job.partition)
    consumer.assign([where])
    try:
        consumer.seek(where, start)
        loop = asyncio.get_running_loop()
        answered, position = loop.time(), start
        while position < end:
            fetched = await consumer.getmany(where, timeout_ms=500)
            for record in fetched.get(where, ()):
                if record.offset >= end:
                    break
                job.read += 1
                add(record.key, record.value, record.headers, record.offset)
            reached = await consumer.position(where)
            if reached > position:
                position, answered = reached, loop.time()
            elif loop.time() - answered > job.timeout:
                raise ServiceUnavailableError(
                    f"{job.description} sent nothing of {job.topic!r} partition "
                    f"{job.partition} for {job.timeout:g} s (at offset {position} of {end}); "
                    "check that the cluster is up"
                )
    finally:
        consumer.unsubscribe()  # fetch nothing more of it meanwhile


async def load_scope(job: Job) -> None:
    """On the clients' loop: the scope rebuilt into ``job.replay``, from the newest
    snapshot recorded for it if there is one, then a snapshot written if its log is
    long enough (see :func:`_snapshot`)."""
    consumer = job.consumer
    where = aiokafka.TopicPartition(job.topic, job.partition)
    # The offsets first: once a partition is assigned, the consumer fetches, and a broker
    # answers a connection's requests in order (behind a fetch's wait).
    first = (await consumer.beginning_offsets([where]))[where]
    job.end = end = (await consumer.end_offsets([where]))[where]
    recorded = None
    if job.indexer is not None:
        try:
            recorded = await job.indexer.committed(where)
        except aiokafka.errors.KafkaError as error:  # (the group coordinator, say)
            logger.warning(
                "%s: could not fetch where the newest snapshot of %r starts (%r); reading "
                "all of its changelog partition",
                job.description,
                job.scope,
                error,
            )
    if recorded is not None and first < recorded < end:
        await read_range(job, recorded, end, job.replay.add)
        if job.replay.snapshot_at == recorded:
            await _snapshot(job)
            return
        # Not the snapshot it was recorded for (the offset was committed by something
        # else, or the partition was made again): read all of it.
        job.replay = Replay(job.namespace, job.scope)
    if first < end:
        await read_range(job, first, end, job.replay.add)
    await _snapshot(job)


async def _snapshot(job: Job) -> None:
    """A snapshot of the scope, when its writer owns the scope (it claimed it: ``epoch``),
    the partition holds nothing but the scope's records, and the log read holds more than
    ``2 * live + floor`` records; then, if nothing but the snapshot came after the log
    read, the place it starts at is recorded for loads to start at."""
    replay, epoch, floor = job.replay, job.epoch, job.floor
    if floor is None or epoch is None or replay.meta is None or not replay.alone:
        return
    if replay.fence > epoch:
        return  # claimed again since: the scope is another owner's
    now = time.time()
    state = replay.snapshot(now)
    live = sum(len(entries) for entries in state.tables.values())
    if replay.records <= 2 * live + floor:
        return
    changes = ScopeChanges(job.scope, puts=state.tables, deletes={}, meta=replay.meta)
    entries, marker = commit_records(os.urandom(8), job.namespace, changes)
    plan = Plan(job.scope, job.topic, job.partition, entries, marker, epoch, snapshot=True)
    failed = await produce_commit(job.send, [plan])
    if failed:
        logger.warning(
            "%s: the snapshot of scope %r of %r was not stored (%r); the next load reads "
            "the whole log again",
            job.description,
            job.scope,
            job.namespace,
            next(iter(failed.values())),
        )
        return
    job.plan = plan
    if job.indexer is None:
        return
    # A load that starts at the snapshot never sees what came before it: so record it only
    # if nothing came between the end of the log read and the snapshot's marker but the
    # snapshot itself (no claim of the scope, no commit, no other scope's record).
    alone = [True]
    commit_id = marker[1][:8]

    def witness(key: Any, value: Any, headers: Any, offset: int) -> None:
        kind, data = headers[0] if headers else ("", b"")
        if kind not in (ENTRY_HEADER, MARKER_HEADER) or data[:8] != commit_id:
            alone[0] = False

    await read_range(job, job.end, plan.last, witness)
    if not alone[0]:
        return
    where = aiokafka.TopicPartition(job.topic, job.partition)
    indexer = job.indexer
    indexer.assign([where])
    indexer.pause(where)  # it commits the offset, it fetches nothing
    try:
        await indexer.commit({where: aiokafka.structs.OffsetAndMetadata(plan.first, "")})
    except aiokafka.errors.KafkaError as error:
        logger.warning(
            "%s: could not record where the snapshot of %r starts (%r); loads read its "
            "changelog partition from an older snapshot",
            job.description,
            job.scope,
            error,
        )
        return
    finally:
        indexer.unsubscribe()
    job.recorded = True
