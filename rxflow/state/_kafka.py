"""The Kafka changelog store: :class:`KafkaChangelogStore` keeps each scope's state as a log
in a Kafka topic, from which a partition's next owner restores it (the Kafka Streams and
Faust model)."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Sequence
from typing import Any, Final

import anyio

from rxflow._checks import check_count, check_seconds
from rxflow.connectors._asyncio_host import AsyncioHost
from rxflow.connectors._extras import requires_extra
from rxflow.connectors.kafka._client import (
    CONNECT_TIMEOUT_S,
    CONNECTION_ERRORS,
    Bootstrap,
    ClientOptions,
    client_options,
    started,
)
from rxflow.errors import RecordsRefusedError, ServiceUnavailableError
from rxflow.state._kafka_index import Index
from rxflow.state._kafka_produce import Plan, produce_claim, produce_commit
from rxflow.state._kafka_records import MAX_TOPIC_LENGTH, changelog_of, commit_records, topic_name
from rxflow.state._kafka_snapshots import DEFAULT_SNAPSHOT_AFTER, Job, Tally, load_scope
from rxflow.state._kafka_topics import Changelog, Creation, changelog_partitions
from rxflow.state._store import ScopeChanges, ScopeSnapshot, Store

with requires_extra("kafka"):
    import aiokafka  # type: ignore[import-untyped]  # no py.typed
    import aiokafka.admin  # type: ignore[import-untyped]
    import aiokafka.errors  # type: ignore[import-untyped]

__all__ = ["DEFAULT_REQUEST_TIMEOUT_S", "KafkaChangelogStore"]

logger = logging.getLogger("rxflow.state")

MAX_BATCH_BYTES: Final = 1024 * 1024
FETCH_PARTITION_BYTES: Final = 8 * 1024 * 1024
FETCH_WAIT_MS: Final = 20
DEFAULT_REQUEST_TIMEOUT_S: Final = 30.0
UNREACHABLE: Final = (*CONNECTION_ERRORS, aiokafka.errors.NodeNotReadyError)
"""What a record fails with when the cluster could not be reached (NodeNotReadyError: no
connection to the partition's leader until the record expired)."""


class _Admin:
    """aiokafka's admin client with the ``start``/``stop`` pair :func:`started` expects."""

    def __init__(self, options: ClientOptions) -> None:
        self.client = aiokafka.admin.AIOKafkaAdminClient(**options)

    async def start(self) -> None:
        await self.client.start()

    async def stop(self) -> None:
        await self.client.close()


class KafkaChangelogStore(Store):
    """State kept in Kafka changelog topics, from which a partition's next owner restores
    it: the Kafka Streams and Faust model, for flows over Kafka sources.

    **Where.** A scope ``"<topic>/<index>"`` (partition ``<index>`` of source topic
    ``<topic>``) is kept in partition ``<index>`` of ``"<namespace>-<topic>-changelog"``:
    one changelog topic per source topic, made (if missing) with as many partitions as the
    source topic has (or ``partitions``), so a worker that takes over source partition 3
    restores from changelog partition 3 alone. Scope ``""`` is kept in partition 0 of
    ``"<namespace>-changelog"``. Names are made legal for Kafka (see :func:`changelog_of`).
    Every record names its commit, and every commit marker its namespace and scope, so
    scopes that share a partition (a fixed ``topic``, a changelog with fewer partitions than
    its source topic gained since) stay apart: a restore then only reads more.

    **Commits.** For each scope, :meth:`commit` produces a record per delete (a tombstone)
    and per put (value: the expiry time, then the value; key: the table's name, then the
    key), waits until the brokers acknowledged all of them (``acks="all"``), then produces
    the scope's commit marker (its meta, the commit's id and number of records) and waits
    for that too. :meth:`load` reads the partition from its beginning (or its newest
    snapshot, below) up to its end offset when the load starts (a fetch of whole batches
    at a time) and applies a commit's records only when its marker comes and every record
    it counts was seen. So a commit cut short (a crash, a cancellation, a refused record)
    is left out whatever follows it, and a record the producer sent twice counts once.
    Entries that had expired are not loaded.

    **Why log compaction is off.** Compaction keeps only the newest record of each key. A
    committed value followed by a newer record of the same key from a commit that never
    finished would be compacted away, and the unfinished commit's record ignored at load:
    the key would be lost, or worse, brought back to an older value. Kafka Streams is safe
    only with transactions (compaction respects aborted ones), which not every
    Kafka-protocol broker offers. So changelog topics are made with
    ``cleanup.policy=delete`` and no retention (``retention.ms=-1``,
    ``retention.bytes=-1``): the default 7-day retention would delete the state of a key
    not written for a week.

    **Snapshots: what bounds a restore and the topic.** When a scope's log, from where a
    load starts, holds more than ``2 * live entries + snapshot_after`` records, its owner
    (the store that claimed it, at its load or a commit) writes a snapshot: a commit of
    every live entry (with its expiry) and the meta, its marker flagged as a snapshot and
    carrying the owner's epoch, atomic like any commit. A load that meets a complete one
    replaces the scope's state with it, and its epoch fences later commits of older
    epochs as a claim would. So the log since the newest snapshot stays within a constant
    factor of the live state (each record written costs O(1) snapshot work, amortized).
    Where the partition holds this scope alone (nothing of another namespace or scope,
    nor anything else, from the start of the partition up to the snapshot's marker), the
    snapshot's first offset is committed as the offset of consumer group
    ``"rxflow-changelog-<namespace>"``, and loads start there (a load checks that a whole
    snapshot starts there, else reads from the beginning). Then the records before it are
    deleted with Kafka's DeleteRecords: on Apache Kafka the partition holds at most about
    ``3 * live + snapshot_after`` records. Brokers without DeleteRecords (tansu, the tests'
    broker) keep them, logged once at INFO: the topic grows, the restores do not. A
    partition that scopes share (a fixed ``topic``, namespaces whose names map to one
    topic) is never snapshotted, and is read whole. Measured with tansu (``python -m
    benchmarks --only state_store_kafka_load``): 1,000 keys changed by each of 100
    checkpoints load in 7-8 ms (2,002 records read) instead of 330 ms (100,101), on both
    backends; a load reads about 130,000 records a second, a commit of 100,000 keys of
    100 bytes takes 1.2-1.4 s.

    **Fencing at read.** Kafka partition ownership gives each scope one writer at a time,
    but a worker that lost its partition may still commit (a zombie), and a topic cannot
    compare and set. So :meth:`claim` produces a claim record into the scope's changelog
    partition and returns its offset as the epoch; every commit marker carries the epoch
    its writer claimed, and :meth:`load` leaves out every commit whose marker comes after a
    newer claim of the scope (with its records). The new owner claims before it loads, so
    what it loads is its predecessor's last commit before the claim, and no later restore
    ever applies the zombie's commits on top of the new owner's. Unlike the other stores,
    :meth:`commit` cannot refuse such a commit (it does not read the partition): it is
    written, then ignored. (The zombie's offset commit is refused by the group
    coordinator, as it belongs to an old generation of the consumer group.)

    Args:
        bootstrap: the cluster, ``"host:port"`` (several separated by commas, or a list).
        topic: one changelog topic for every scope instead of the names above.
        partitions: how many partitions a changelog topic of a source topic is made with;
            default: as many as the source topic has in this cluster (give it when the
            source topic is in another cluster).
        replication_factor: the changelog topics' replication; default: 3, or the number
            of brokers if the cluster has fewer. (Changelog topics are made with
            ``min.insync.replicas`` left to the brokers: set it to 2 on them for commits
            that survive the loss of a broker.)
        client_id: the clients' name in the brokers' logs.
        connect_timeout: seconds to reach the cluster in :meth:`open`.
        request_timeout: seconds a commit or a load may go without an answer from the
            cluster before ServiceUnavailableError.
        security_protocol: ``"PLAINTEXT"``, ``"SSL"``, ``"SASL_PLAINTEXT"`` or ``"SASL_SSL"``.
        sasl_mechanism: ``"PLAIN"``, ``"SCRAM-SHA-256"`` or ``"SCRAM-SHA-512"``.
        sasl_plain_username: the SASL user.
        sasl_plain_password: the SASL password (never shown in errors or logs).
        ssl_context: an ``ssl.SSLContext`` for ``SSL``/``SASL_SSL``.
        snapshot_after: the records a scope's log may hold beyond twice its live entries
            before its owner writes a snapshot; ``None``: never (loads read all the log).

    Raises:
        ServiceUnavailableError: the cluster cannot be reached, refuses the credentials, or
            stopped answering; it names the bootstrap servers, never credentials.
        RecordsRefusedError: from :meth:`commit`, when the brokers refused a record (a
            value over their size limit): ``refused`` names each scope left as it was,
            with the cause; the commit's other scopes are committed.
        TypeError: from :meth:`commit`, a key, value or meta that is not ``bytes`` (then
            nothing of the commit is sent).
        ValueError: a scope's source topic is not in the cluster and ``partitions`` was
            not given.

    Example (needs a Kafka broker)::

        async with KafkaChangelogStore("localhost:9092") as store:
            changes = ScopeChanges(
                "orders/0", puts={"totals": {b"ann": StoredEntry(b"3")}}, deletes={},
                meta=b"offsets",
            )
            await store.commit("billing", [changes])
            snapshot = await store.load("billing", "orders/0")
            assert snapshot.tables["totals"][b"ann"].value == b"3"
    """

    def __init__(
        self,
        bootstrap: Bootstrap,
        *,
        topic: str | None = None,
        partitions: int | None = None,
        replication_factor: int | None = None,
        client_id: str | None = None,
        connect_timeout: float = CONNECT_TIMEOUT_S,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT_S,
        security_protocol: str = "PLAINTEXT",
        sasl_mechanism: str | None = None,
        sasl_plain_username: str | None = None,
        sasl_plain_password: str | None = None,
        ssl_context: Any = None,
        snapshot_after: int | None = DEFAULT_SNAPSHOT_AFTER,
    ) -> None:
        where = "KafkaChangelogStore()"
        if topic is not None and (
            not isinstance(topic, str) or topic_name(topic) != topic or topic in (".", "..")
        ):
            raise ValueError(
                f"{where}: topic must be a Kafka topic name (letters, digits, '.', '_', '-'; "
                f"at most {MAX_TOPIC_LENGTH}), not {topic!r}"
            )
        self._topic = topic
        self._partitions = check_count(where, "partitions", partitions, optional=True)
        self._replication = check_count(
            where, "replication_factor", replication_factor, optional=True
        )
        self._floor = check_count(where, "snapshot_after", snapshot_after, minimum=0, optional=True)
        self._connect_timeout = check_seconds(where, "connect_timeout", connect_timeout)
        self._request_timeout = check_seconds(where, "request_timeout", request_timeout)
        self._options = client_options(
            where,
            bootstrap,
            client_id=client_id,
            security_protocol=security_protocol,
            sasl_mechanism=sasl_mechanism,
            sasl_plain_username=sasl_plain_username,
            sasl_plain_password=sasl_plain_password,
            ssl_context=ssl_context,
        )
        self._stack: contextlib.AsyncExitStack | None = None
        self._clients: _Clients | None = None
        self._counts: dict[str, int] = {}  # changelog topic -> its number of partitions
        self._creation = Creation(
            self.description, self._partitions, self._replication, self._request_timeout
        )
        self._claimed: dict[tuple[str, str], int] = {}  # the epochs this store claimed
        self._tallies: dict[tuple[str, str], Tally] = {}  # of the scopes it loaded
        self._scope_locks: dict[tuple[str, str], anyio.Lock] = {}
        self.records_read = 0
        """Changelog records the loads of this store read (their snapshots' checks too)."""
        self.snapshots = 0
        """Snapshots this store wrote, completely."""

    @property
    def description(self) -> str:
        return f"kafka changelog at {self._options.address}"

    def __repr__(self) -> str:
        return f"<KafkaChangelogStore {self._options.address}>"

    async def open(self) -> None:
        if self._stack is not None:
            raise RuntimeError(f"{self.description}: open() was called already")
        options, within = self._options, self._connect_timeout
        timeout_ms = round(self._request_timeout * 1000)

        def producer() -> Any:
            return aiokafka.AIOKafkaProducer(
                **options,
                acks="all",
                linger_ms=0,
                max_batch_size=MAX_BATCH_BYTES,
                max_request_size=MAX_BATCH_BYTES,
                request_timeout_ms=timeout_ms,
                enable_idempotence=False,  # not every Kafka-protocol broker has it
            )

        def consumer() -> Any:
            return aiokafka.AIOKafkaConsumer(
                **options,
                group_id=None,
                enable_auto_commit=False,
                # A load seeks to the offset it read; should records before the position
                # be deleted meanwhile (a retention someone set), it fails, rather than
                # skip them silently.
                auto_offset_reset="none",
                max_partition_fetch_bytes=FETCH_PARTITION_BYTES,
                # A load stops at the end offset it took at its start, so it never waits
                # for records that are not there; a fetch in flight after it holds the
                # connection (the next load's offset requests) no longer than this.
                fetch_max_wait_ms=FETCH_WAIT_MS,
                request_timeout_ms=timeout_ms,
            )

        stack = contextlib.AsyncExitStack()
        try:
            host = await stack.enter_async_context(AsyncioHost())
            self._clients = _Clients(
                host,
                await stack.enter_async_context(started(host, producer, options, within=within)),
                await stack.enter_async_context(started(host, consumer, options, within=within)),
                await stack.enter_async_context(
                    started(host, lambda: _Admin(options), options, within=within)
                ),
                Index(
                    host,
                    stack,
                    options,
                    within=within,
                    timeout=self._request_timeout,
                    description=self.description,
                ),
            )
        except BaseException as error:
            self._clients = None
            with anyio.CancelScope(shield=True):
                await stack.aclose()
            if isinstance(error, ServiceUnavailableError):  # it names the cluster
                raise ServiceUnavailableError(f"{self.description}: {error}") from error
            raise
        self._stack = stack

    async def close(self) -> None:
        stack, self._stack, self._clients = self._stack, None, None
        if stack is not None:
            with anyio.CancelScope(shield=True):
                await stack.aclose()

    def _lost(self, error: BaseException, what: str) -> ServiceUnavailableError:
        return ServiceUnavailableError(
            f"{self.description} {what} ({self._options.scrub(repr(error))}); check that "
            "the cluster is up and reachable"
        )

    def _opened(self) -> _Clients:
        if self._clients is None:
            raise RuntimeError(
                f"{self.description}: the store is not open; use it as "
                "`async with KafkaChangelogStore(...) as store:` (or await store.open())"
            )
        return self._clients

    # -- topics ------------------------------------------------------------------------

    async def _place(self, namespace: str, scope: str) -> tuple[str, int]:
        """The changelog topic and partition of a scope, the topic made if missing."""
        clients = self._opened()
        topic, source, index = changelog_of(namespace, scope, self._topic)
        count = self._counts.get(topic)
        if count is None:
            async with clients.topics_lock:
                count = self._counts.get(topic)
                if count is None:
                    count = await self._call(
                        clients,
                        changelog_partitions,
                        clients.admin.client,
                        Changelog(topic, source, index),
                        self._creation,
                    )
                    self._counts[topic] = count
        return topic, index % count

    async def _call(self, clients: _Clients, function: Any, *args: Any) -> Any:
        """``function(*args)`` on the clients' loop; a lost cluster is ServiceUnavailableError."""
        try:
            return await clients.host.call(function, *args)
        except UNREACHABLE as error:
            raise self._lost(error, "did not answer") from error

    # -- claim and load ------------------------------------------------------------------

    async def claim(self, namespace: str, scope: str) -> int:
        """A claim record in the scope's changelog partition, acknowledged; its offset is
        the new epoch (offsets only grow, so a later claim has a higher one)."""
        clients = self._opened()
        topic, partition = await self._place(namespace, scope)
        send = clients.producer.send
        try:
            epoch = int(
                await self._call(clients, produce_claim, send, topic, partition, namespace, scope)
            )
        except aiokafka.errors.KafkaError as error:
            raise self._lost(error, f"did not store the claim of scope {scope!r}") from error
        self._claimed[namespace, scope] = epoch
        return epoch

    async def load(self, namespace: str, scope: str) -> ScopeSnapshot:
        async with self._scope_lock(namespace, scope):
            job = await self._read(namespace, scope, self._claimed.get((namespace, scope)))
        return job.replay.snapshot(time.time())

    def _scope_lock(self, namespace: str, scope: str) -> anyio.Lock:
        """Held while a scope is committed or read: a snapshot holds the state the read
        found, so no commit of the scope may come between the two."""
        lock = self._scope_locks.get((namespace, scope))
        if lock is None:
            lock = self._scope_locks[namespace, scope] = anyio.Lock()
        return lock

    async def _read(self, namespace: str, scope: str, epoch: int | None) -> Job:
        """The scope rebuilt from its changelog, and a snapshot of it written if its log
        is long enough (only by the owner of ``epoch``); the scope's lock held."""
        clients = self._opened()
        topic, partition = await self._place(namespace, scope)
        async with clients.load_lock:  # one consumer, assigned one partition at a time
            indexer = None if self._floor is None else await clients.index.consumer(namespace)
            job = Job(
                namespace,
                scope,
                topic,
                partition,
                consumer=clients.consumer,
                send=clients.producer.send,
                indexer=indexer,
                epoch=epoch,
                floor=self._floor,
                timeout=self._request_timeout,
                description=self.description,
            )
            try:
                await self._call(clients, load_scope, job)
            finally:
                self.records_read += job.read
        if job.plan is not None:
            self.snapshots += 1
        if job.recorded and job.plan is not None:
            admin, lock = clients.admin.client, clients.topics_lock
            await clients.index.delete_before(admin, lock, topic, partition, job.plan.first)
        self._tallies[namespace, scope] = job.tally(time.time())
        return job

    # -- commit --------------------------------------------------------------------------

    async def commit(
        self, namespace: str, changes: Sequence[ScopeChanges], writes: Sequence[object] = ()
    ) -> None:
        clients = self._opened()
        plans: list[Plan] = []
        for scope_changes in changes:
            topic, partition = await self._place(namespace, scope_changes.scope)
            entries, marker = commit_records(os.urandom(8), namespace, scope_changes)
            plans.append(
                Plan(scope_changes.scope, topic, partition, entries, marker, scope_changes.epoch)
            )
        if not plans:
            return
        async with contextlib.AsyncExitStack() as locks:
            for scope in sorted({plan.scope for plan in plans}):
                await locks.enter_async_context(self._scope_lock(namespace, scope))
            failed: dict[str, BaseException] = await self._call(
                clients, produce_commit, clients.producer.send, plans
            )
            for plan in plans:
                if plan.scope not in failed:
                    await self._count(namespace, plan)
        if not failed:
            return
        scope, error = next(iter(failed.items()))
        if all(isinstance(e, UNREACHABLE) for e in failed.values()):
            raise self._lost(error, "did not confirm the commit") from error
        raise RecordsRefusedError(
            f"{self.description}: the commit of {len(failed)} of {len(plans)} scopes failed "
            f"and left them as they were (the others are committed); scope {scope!r}: "
            f"{self._options.scrub(repr(error))}",
            refused=list(failed.items()),
            stored=len(plans) - len(failed),
        ) from error

    async def _count(self, namespace: str, plan: Plan) -> None:
        """A commit's records counted into its scope's log; read again for a snapshot when
        the log may have grown long enough (the scope's lock held)."""
        tally = self._tallies.get((namespace, plan.scope))
        if tally is None or plan.epoch is None:
            return  # a scope this store did not load, or a writer without a claim
        tally.since += len(plan.entries) + 1
        if tally.since <= tally.check_at:
            return
        try:
            await self._read(namespace, plan.scope, plan.epoch)
        except (ServiceUnavailableError, aiokafka.errors.KafkaError) as error:
            # The commit is stored; its snapshot can wait for the next one.
            logger.warning(
                "%s: scope %r of %r was committed, but reading it for a snapshot failed: %s",
                self.description,
                plan.scope,
                namespace,
                self._options.scrub(str(error)),
            )


class _Clients:
    """An open store's clients, on ``host``'s loop, and the locks that order their use."""

    __slots__ = ("admin", "consumer", "host", "index", "load_lock", "producer", "topics_lock")

    def __init__(
        self, host: AsyncioHost, producer: Any, consumer: Any, admin: _Admin, index: Index
    ) -> None:
        self.host, self.producer, self.consumer, self.admin = host, producer, consumer, admin
        self.index = index
        self.load_lock = anyio.Lock()
        self.topics_lock = anyio.Lock()
