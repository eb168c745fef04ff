"""One member of a Kafka consumer group, as the connector kit's reader: the partitions this
member owns (a :class:`~rxflow.partitions.Partition` per assignment, with its
:class:`~rxflow.connectors.kafka._offsets.PartitionOffsets`), the bounded fetch (partitions
paused between fetches), the commits, and the rebalance listener.

Two loops meet here. The aiokafka consumer lives on the client's loop (under trio, an asyncio
loop in a worker thread); the assignments' trackers live on the caller's loop, where the kit
settles records. So:

* ``_client_side`` (tp -> assignment) is read and written on the client's loop only: the
  fetch attributes records to assignments there, in the same step as ``getmany`` returns
  them, and the listener changes it there, so a record is never attributed to an
  assignment it was not fetched for.
* ``_assigned`` and the trackers are read and written on the caller's loop only; the
  listener reaches them through :func:`_on_caller`, a call that runs synchronously on the
  caller's loop while the client's loop waits for it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final, TypeVar

import anyio

from rxflow.connectors._asyncio_host import AsyncioHost
from rxflow.connectors._extras import requires_extra
from rxflow.connectors._kit import NO_HEADERS, Decoded, Incoming, Verb
from rxflow.connectors._message import InFlightLimit
from rxflow.connectors.kafka._client import CONNECTION_ERRORS, ClientOptions, unavailable
from rxflow.connectors.kafka._offsets import PartitionOffsets
from rxflow.partitions import Partition

with requires_extra("kafka"):
    import aiokafka.errors  # type: ignore[import-untyped]
    from aiokafka import ConsumerRebalanceListener, TopicPartition

__all__ = ["GroupMember", "Handle", "KeyCodec"]

log = logging.getLogger("rxflow.connectors.kafka")

T = TypeVar("T")

KeyCodec = str  # "text" or "bytes"
_new_tuple = tuple.__new__
POLL_MS: Final = 500
"""How long one ``getmany`` waits for records before the kit asks again."""
PROBE_EVERY_S: Final = 5.0
"""After how long without records a fetch checks that the cluster is still there."""
PROBE_TIMEOUT_S: Final = 5.0

COMMIT_RETRIED: Final = (
    aiokafka.errors.CommitFailedError,  # the group rebalanced: the listener commits
    aiokafka.errors.IllegalStateError,  # a partition is no longer assigned
    aiokafka.errors.KafkaError,  # the coordinator moved, a request timed out...
)


class _Assigned:
    """One assignment of a partition to this member: its Partition, and (from its first
    fetched record on) its offsets tracker."""

    __slots__ = ("next_offset", "offsets", "partition", "tp")

    def __init__(self, tp: Any) -> None:
        self.tp = tp
        self.partition = Partition(tp.topic, tp.partition)
        # Made at the first record fetched: the consumer's position at that time.
        self.offsets: PartitionOffsets | None = None
        self.next_offset = -1  # one past the last record fetched (or where it was sought)


Handle = tuple[_Assigned, int]
"""How the kit settles a Kafka record: its assignment and its offset."""


async def _on_caller(host: AsyncioHost, function: Callable[..., T], *args: Any) -> T:
    """From the client's loop: run ``function(*args)`` on the caller's loop, synchronously
    there, and wait for its result (at once when both are the same loop)."""
    if not host.hosted:
        return function(*args)
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(outcome: Callable[[], None]) -> None:
        if not future.done():
            outcome()

    def run() -> None:
        try:
            result = function(*args)
        except BaseException as error:  # handed to the waiting side
            failure = error
            loop.call_soon_threadsafe(settle, lambda: future.set_exception(failure))
        else:
            loop.call_soon_threadsafe(settle, lambda: future.set_result(result))

    host.call_soon_here(run)
    return await future


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    """aiokafka's rebalance listener: called on the client's loop by the group coordinator."""

    def __init__(self, member: GroupMember) -> None:
        self._member = member

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self._member.revoked(revoked)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self._member.assigned(assigned)


class GroupMember:
    """The kit's reader of one consumer-group member (see
    :class:`~rxflow.connectors._kit.Reader`).

    A fetch resumes the assigned partitions, takes at most ``count`` records with one
    ``getmany``, and pauses them again: between fetches the client fetches nothing, so what
    it holds is at most one fetch response (``fetch_max_bytes``, which follows the source's
    ``read_ahead_bytes``). Settling a record only updates its partition's tracker (no call
    to the client), except a requeue, which seeks the partition back to it. Commits are
    made by :meth:`commit`, per partition, at each tracker's commit point.
    """

    def __init__(
        self,
        host: AsyncioHost,
        options: ClientOptions,
        name: str,
        *,
        key_codec: KeyCodec,
        reconnect_timeout: float,
        poll_ms: int = POLL_MS,
    ) -> None:
        self._host = host
        self._options = options
        self.name = name
        self._text_keys = key_codec == "text"
        self._poll_ms = poll_ms
        self._reconnect_timeout = reconnect_timeout
        self._contact = time.monotonic()  # when the cluster last answered
        self.consumer: Any = None  # the aiokafka consumer, set as it is made
        # Kafka sets no limit on records delivered and not committed.
        self.in_flight_limit: InFlightLimit | None = None
        # A settlement is a tracker update on this loop: nothing to queue for a thread.
        self.queues_settlements = False
        self._client_side: dict[Any, _Assigned] = {}  # the client's loop only
        self._fetching = False  # a getmany runs (the client's loop only)
        self._assigned: dict[Any, _Assigned] = {}  # the caller's loop only
        self._advanced = False  # something was settled since the last commit
        self.committed: dict[tuple[str, int], int] = {}  # what this member committed
        self.commit_failures = 0

    def listener(self) -> Any:
        """The rebalance listener to subscribe the consumer with."""
        return _Listener(self)

    @property
    def assignment(self) -> list[Partition]:
        """The partitions assigned to this member now (caller's loop)."""
        return [assigned.partition for assigned in self._assigned.values()]

    # -- fetching ------------------------------------------------------------------------

    async def fetch(self, count: int, max_bytes: int) -> list[Incoming[Handle]]:
        try:
            records, runs = await self._host.call(self._fetch_there, count, max_bytes)
        except CONNECTION_ERRORS as error:
            raise unavailable(self._options, error, "was lost while reading") from error
        if not records:
            # aiokafka reconnects for ever, and a fetch without a cluster only comes back
            # empty: so an empty fetch checks, now and then, that the cluster is there.
            if time.monotonic() - self._contact >= PROBE_EVERY_S:
                await self._probe()
            return records
        self._contact = time.monotonic()
        for assigned, offsets in runs:  # the trackers learn what was fetched (caller's loop)
            tracker = assigned.offsets
            if tracker is None:
                tracker = assigned.offsets = PartitionOffsets(offsets[0])
            tracker.fetched_run(offsets)
            assigned.next_offset = offsets[-1] + 1
        return records

    async def _probe(self) -> None:
        """Ask the cluster for its metadata; raise ServiceUnavailableError if it has not
        answered for ``reconnect_timeout`` seconds."""
        try:
            with anyio.fail_after(PROBE_TIMEOUT_S):
                await self._host.call(self._consumer().topics)
        except (*CONNECTION_ERRORS, aiokafka.errors.KafkaError) as error:
            lost_for = time.monotonic() - self._contact
            if lost_for >= self._reconnect_timeout:
                raise unavailable(
                    self._options,
                    error,
                    f"was lost, and did not answer again for {lost_for:.0f} s",
                ) from error
        else:
            self._contact = time.monotonic()

    async def _fetch_there(
        self, count: int, max_bytes: int
    ) -> tuple[list[Incoming[Handle]], list[tuple[_Assigned, list[int]]]]:
        """On the client's loop: resume, one getmany, pause; the records as the kit's, at
        most ``max_bytes`` of values (plus the record that reaches it), and the offsets
        taken of each assignment, ascending (one tracker update per partition, not one
        per record).

        Kafka bounds a fetch in bytes only by whole record batches (a producer's batch
        can hold many records), so the bytes are bounded here: the partitions of what is
        left out are sought back to it, to be read again by a later fetch."""
        consumer = self._consumer()
        tps = consumer.assignment()
        if tps:
            consumer.resume(*tps)
        self._fetching = True  # partitions assigned meanwhile are not paused
        batches: dict[Any, list[Any]] = {}
        try:
            # Bounded: a getmany during a rebalance waits for its end, which a lost
            # cluster never brings.
            with anyio.move_on_after(self._poll_ms / 1000 + 1):
                batches = await consumer.getmany(timeout_ms=self._poll_ms, max_records=count)
        finally:
            self._fetching = False
            tps = consumer.assignment()
            if tps:
                consumer.pause(*tps)
        fetched: list[Incoming[Handle]] = []
        runs: list[tuple[_Assigned, list[int]]] = []
        text_keys, no_value = self._text_keys, Decoded(None)
        room = max_bytes
        for tp, records in batches.items():
            assigned = self._client_side.get(tp)
            if assigned is None or room <= 0:
                # Assigned a moment ago, and its listener has not run yet (read it again
                # once it has, as records of that assignment); or past the byte budget.
                consumer.seek(tp, records[0].offset)
                continue
            topic, index, partition = tp.topic, tp.partition, assigned.partition
            taken: list[int] = []
            runs.append((assigned, taken))
            add_offset = taken.append
            # One loop, locals only: this runs for every record.
            for record in records:
                if room <= 0:
                    consumer.seek(tp, record.offset)  # the rest of it comes again
                    break
                key, value, headers, offset = (
                    record.key,
                    record.value,
                    record.headers,
                    record.offset,
                )
                if key is not None and text_keys:
                    key = key.decode(errors="backslashreplace")
                fetched.append(
                    # tuple.__new__: Incoming's own __new__ is a Python function, called
                    # for every record.
                    _new_tuple(
                        Incoming,
                        (
                            # A tombstone (no value) is handed out as None, without codec.
                            value if value is not None else no_value,
                            (assigned, offset),  # handle
                            key,
                            {n: _text(v) for n, v in headers} if headers else NO_HEADERS,
                            record.timestamp / 1000,
                            (topic, index, offset),  # identity
                            size := len(value) if value is not None else 0,
                            None,  # redelivered: Kafka does not say
                            partition,
                            offset,
                        ),
                    )
                )
                add_offset(offset)
                room -= size
        return fetched, [run for run in runs if run[1]]

    # -- settling ------------------------------------------------------------------------

    async def settle(self, settlements: Sequence[tuple[Handle, Verb]]) -> None:
        """Trackers only: ack and reject settle the offset; requeue keeps it unsettled and
        seeks its partition back to it (it and what follows are read again). Settlements
        of a revoked partition are ignored: its new owner reads those records again.

        In order; a run of acks (and rejects) of one assignment is one tracker update."""
        rewinds: dict[_Assigned, int] | None = None
        done: list[int] = []  # offsets of `last` settled and not told to its tracker yet
        last: _Assigned | None = None
        for (assigned, offset), verb in settlements:
            if assigned is not last or verb == "requeue":
                if done:
                    _settle_offsets(last, done)
                    done = []
                last = assigned
            if verb != "requeue":
                done.append(offset)
                continue
            if assigned.partition.revoked:
                continue
            offsets = assigned.offsets
            assert offsets is not None  # made when its first record was fetched
            offsets.rewind(offset)
            if offset < assigned.next_offset:
                assigned.next_offset = offset
                rewinds = rewinds or {}
                rewinds[assigned] = offset
        if done:
            _settle_offsets(last, done)
        self._advanced = True
        if rewinds:
            await self._host.call(self._seek_there, rewinds)

    async def _seek_there(self, rewinds: dict[_Assigned, int]) -> None:
        consumer = self._consumer()
        for assigned, offset in rewinds.items():
            if self._client_side.get(assigned.tp) is assigned:  # still this assignment
                consumer.seek(assigned.tp, offset)

    async def release(self, unhanded: Sequence[Handle]) -> int:
        """Records fetched and never handed out (a requeue gave them back, or the source
        closes): their partitions are sought back to the first of them, so that they are
        read again in order. Nothing else to give back: they are not committed."""
        rewinds: dict[_Assigned, int] = {}
        for assigned, offset in unhanded:
            if not assigned.partition.revoked and offset < rewinds.get(
                assigned, assigned.next_offset
            ):
                rewinds[assigned] = offset
        for assigned, offset in rewinds.items():
            assigned.next_offset = offset
        if rewinds:
            await self._host.call(self._seek_there, rewinds)
        return len(unhanded)

    async def held_back(self) -> bool:
        return False  # Kafka sets no in-flight limit

    def link(self, handles: Sequence[Handle]) -> None:
        """These records made one output: commits never fall inside them (per partition)."""
        by_assignment: dict[_Assigned, list[int]] = {}
        for assigned, offset in handles:
            by_assignment.setdefault(assigned, []).append(offset)
        for assigned, offsets in by_assignment.items():
            if not assigned.partition.revoked and assigned.offsets is not None:
                assigned.offsets.link(offsets)

    # -- committing ----------------------------------------------------------------------

    def _commit_points(self, assignments: Iterable[_Assigned]) -> dict[_Assigned, int]:
        points = {}
        for assigned in assignments:
            offsets = assigned.offsets
            if offsets is not None:
                point = offsets.commit_point()
                if point > offsets.committed_offset:
                    points[assigned] = point
        return points

    async def commit(self) -> None:
        """Commit every assigned partition's commit point that moved (caller's loop). A
        commit the group refuses (it is rebalancing) is tried again at the next call."""
        if not self._advanced:
            return
        self._advanced = False
        points = self._commit_points(self._assigned.values())
        if not points:
            return
        try:
            await self._host.call(self._commit_there, points)
        except COMMIT_RETRIED as error:
            self.commit_failures += 1
            self._advanced = True
            log.debug("%s: commit not made, tried again later: %r", self.name, error)
            return
        self._committed_at(points)

    def _committed_at(self, points: dict[_Assigned, int]) -> None:
        for assigned, point in points.items():
            if assigned.offsets is not None:
                assigned.offsets.committed(point)
            self.committed[assigned.partition.topic, assigned.partition.index] = point

    async def _commit_there(self, points: dict[_Assigned, int]) -> None:
        await self._consumer().commit({a.tp: point for a, point in points.items()})

    # -- the rebalance listener's part (client's loop) -------------------------------------

    async def revoked(self, revoked: Iterable[Any]) -> None:
        """Partitions taken away: commit what is committable of them, then revoke their
        Partition objects and forget their trackers."""
        gone = [a for tp in revoked if (a := self._client_side.pop(tp, None)) is not None]
        if not gone:
            return
        points = await _on_caller(self._host, self._revoke, gone)
        if not points:
            return
        try:
            await self._consumer().commit({a.tp: point for a, point in points.items()})
        except aiokafka.errors.KafkaError as error:
            log.warning(
                "%s: could not commit revoked partitions (their new owner reads again what "
                "this worker acknowledged since its last commit): %r",
                self.name,
                error,
            )
            return
        self._host.call_soon_here(self._committed_at, points)

    def _revoke(self, gone: list[_Assigned]) -> dict[_Assigned, int]:
        """Caller's loop: the revoked partitions' commit points; they are revoked."""
        points = self._commit_points(gone)
        for assigned in gone:
            assigned.partition.revoke()
            if self._assigned.get(assigned.tp) is assigned:
                del self._assigned[assigned.tp]
        return points

    async def assigned(self, assigned: Iterable[Any]) -> None:
        """Partitions given to this member: paused until the next fetch, and a new
        Partition for each."""
        tps = list(assigned)
        if not tps:
            return
        if not self._fetching:  # a fetch waiting for records takes them at once
            self._consumer().pause(*tps)
        fresh = [_Assigned(tp) for tp in tps]
        for new in fresh:
            self._client_side[new.tp] = new
        await _on_caller(self._host, self._assign, fresh)

    def _assign(self, fresh: list[_Assigned]) -> None:
        for new in fresh:
            old = self._assigned.get(new.tp)
            if old is not None:  # assigned again without a revocation first: it is over
                old.partition.revoke()
            self._assigned[new.tp] = new

    async def prepare_to_leave(self) -> None:
        """Before the consumer stops: make sure it sends LeaveGroup, so that the group
        rebalances at once instead of waiting a session timeout for this member.

        aiokafka leaves only from generation 1 on (it takes 0 for "never joined"), but some
        brokers (tansu) number a group's first generation 0: such a member would stop
        without leaving."""

        async def there() -> None:
            coordinator = getattr(self._consumer(), "_coordinator", None)
            if getattr(coordinator, "generation", None) == 0:
                coordinator.generation = 1  # type: ignore[union-attr]  # only for the check

        await self._host.call(there)

    def _consumer(self) -> Any:
        consumer = self.consumer
        assert consumer is not None, "the consumer is attached before it starts"
        return consumer


def _settle_offsets(assigned: _Assigned | None, offsets: list[int]) -> None:
    """Acks and rejects of one assignment's records: its tracker forgets them (unless it
    was revoked: then its new owner reads them again)."""
    assert assigned is not None  # offsets come with the assignment they are of
    if assigned.partition.revoked:
        return
    tracker = assigned.offsets
    assert tracker is not None  # made when its first record was fetched
    tracker.settled_many(offsets)


def _text(data: bytes | None) -> str:
    return data.decode(errors="backslashreplace") if data is not None else ""


def topic_partition(topic: str, index: int) -> Any:
    """aiokafka's TopicPartition (for tests and tools)."""
    return TopicPartition(topic, index)
