"""The systems the contract suite runs against, one :class:`System` each.

A system makes a fresh, uniquely named channel (a stream, a queue, a topic, a table) and
deletes it after; publishes raw records into it with the system's own client (never through
rxflow, so that the suite tests rxflow's source against the real system); opens rxflow's
source and sink on it; reads back what the sink wrote; and says which capabilities it lacks,
and why, so that a contract test skips only where the system truly cannot do what it states.

The system's own client runs on an asyncio loop of its own in a worker thread
(:func:`on_own_loop`), the same under both backends; every call makes its own connection.
A later system (Kafka) joins the suite by adding one class here and one entry to
:data:`SYSTEMS`.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, ClassVar, TypeVar

import anyio
import attrs

from rxflow.connectors import (
    jetstream_sink,
    jetstream_source,
    mqtt_sink,
    mqtt_source,
    postgres_listen_source,
    postgres_sink,
    postgres_table_source,
    rabbitmq_sink,
    rabbitmq_source,
    redis_stream_sink,
    redis_stream_source,
)

__all__ = ["CAPABILITIES", "SYSTEMS", "Channel", "System", "on_own_loop"]

T = TypeVar("T")

CAPABILITIES = {
    "ack": "the source acknowledges records",
    "redelivery": "records not acknowledged are delivered again to the next source",
    "nack_requeue": "a record nacked with requeue comes again to the same source",
    "reject": "a record nacked without requeue never comes again, to any source",
    "identity": "a record names itself across redeliveries (message.identity)",
    "read_ahead": "a count bound on records fetched and not handed out",
    "sink": "an rxflow sink that writes into the system",
    "checks_password": "the local server checks passwords",
}
"""What a contract test may need of a system; a system lists what it lacks, with why."""

WAIT_S = 15.0  # the most a system call may take, a redelivery after ack_wait included


async def on_own_loop(function: Callable[..., Awaitable[T]], *args: Any) -> T:
    """``await function(*args)`` on a fresh asyncio loop in a worker thread: the system's own
    client, the same under asyncio and trio, and never on the test's loop."""

    async def bounded() -> T:
        return await asyncio.wait_for(function(*args), WAIT_S)

    return await anyio.to_thread.run_sync(lambda: asyncio.run(bounded()))


@attrs.define
class Channel:
    """One test's own place in a system, and what the test did there."""

    name: str  # unique per test; the system derives its stream, queue, topic, table from it
    url: str  # the system's URL (DSN), without credentials but the default ones
    published: int = 0  # records published into it so far


class System(abc.ABC):
    """A broker as the contract suite sees it. Subclasses are stateless: everything a test
    made lives in its :class:`Channel`."""

    name: ClassVar[str]  # the test id, and how skips name it
    service: ClassVar[str]  # the local service (tests/connectors/conftest.py SERVICES)
    lacks: ClassVar[Mapping[str, str]] = {}  # capability -> why this system does not have it
    read_ahead_option: ClassVar[str] = ""  # the source's count bound on what it reads ahead
    fail_fast: ClassVar[Mapping[str, Any]] = {}  # options that give up on a server at once
    # Source options that put the system's own redelivery of unacked records (after a
    # timeout) beyond a test's reach, so that what comes again came by a nack.
    no_timed_redelivery: ClassVar[Mapping[str, Any]] = {}
    counting_takes: ClassVar[bool] = False  # held() takes what it counts: call it once

    def missing(self, capability: str) -> str | None:
        """The skip reason if this system lacks ``capability``, else None."""
        assert capability in CAPABILITIES, f"unknown capability {capability!r}"
        why = self.lacks.get(capability)
        return None if why is None else f"{self.name} has no {capability}: {why}"

    @abc.abstractmethod
    def url(self, host: str, port: int, credentials: str | None = None) -> str:
        """The URL of a server at ``host:port``; ``credentials`` (``"user:password"``)
        replace the default ones."""

    @abc.abstractmethod
    async def create(self, channel: Channel) -> None:
        """Make the channel's stream, queue, topic session or table (and the sink's)."""

    @abc.abstractmethod
    async def delete(self, channel: Channel) -> None:
        """Remove everything :meth:`create` and the test made."""

    @abc.abstractmethod
    async def publish(self, channel: Channel, payloads: Sequence[bytes]) -> list[str]:
        """Publish raw records, in order, with the system's own client; the keys the
        source's messages carry for them (``message.key``)."""

    @abc.abstractmethod
    def source(
        self, url: str, channel: Channel, *, worker: str = "a", **options: Any
    ) -> AbstractAsyncContextManager[Any]:
        """rxflow's source on the channel, as a worker of one consumer group: the same
        durable (NATS), queue (RabbitMQ), session (MQTT: one connection at a time) or table,
        or, in Redis, the group's member named ``worker``. The same worker again gets what
        it left unacknowledged; another worker gets what the system hands back."""

    def sink(self, url: str, channel: Channel, **options: Any) -> AbstractAsyncContextManager[Any]:
        """rxflow's sink into the channel's output (items from :meth:`item`)."""
        raise NotImplementedError(self.missing("sink"))

    def item(self, payload: bytes) -> Any:
        """What the sink takes to write ``payload``."""
        return payload

    async def written(self, channel: Channel, count: int) -> list[bytes]:
        """The first ``count`` payloads the sink wrote (fewer if it wrote fewer), read with
        the system's own client. What a sink confirmed is there at once; a system that
        pushes (MQTT) is waited for."""
        raise NotImplementedError(self.missing("sink"))

    async def held(self, channel: Channel) -> int:
        """Records the system still holds for the source's consumer (delivered and not
        acknowledged, or not delivered yet). Called once the source is closed; where the
        system cannot be asked (MQTT), it takes them to count them, so call it last."""
        raise NotImplementedError(self.missing("ack"))

    async def delivered(self, channel: Channel, source: Any) -> int:
        """Records the system delivered to ``source`` and that are not acknowledged yet
        (where the system cannot say, the client's own count of them)."""
        raise NotImplementedError(self.missing("read_ahead"))

    def __repr__(self) -> str:
        return self.name


# -- NATS JetStream ---------------------------------------------------------------------------

ACK_WAIT_S = 2.0  # JetStream delivers a message handed out and not acked again after this


class JetStream(System):
    name = "nats"
    service = "nats"
    lacks: ClassVar[Mapping[str, str]] = {
        "checks_password": "the local nats-server has no accounts and accepts any credentials",
    }
    read_ahead_option = "batch"
    fail_fast: ClassVar[Mapping[str, Any]] = {"connect_timeout": 0.5}
    no_timed_redelivery: ClassVar[Mapping[str, Any]] = {"ack_wait": 60.0}
    durable = "contract"

    def url(self, host: str, port: int, credentials: str | None = None) -> str:
        return f"nats://{credentials + '@' if credentials else ''}{host}:{port}"

    async def _on_client(self, channel: Channel, use: Callable[[Any], Awaitable[T]]) -> T:
        import nats

        async def run() -> T:
            client = await nats.connect(channel.url)
            try:
                return await use(client.jetstream())
            finally:
                await client.close()

        return await on_own_loop(run)

    async def create(self, channel: Channel) -> None:
        name = channel.name
        await self._on_client(channel, lambda js: js.add_stream(name=name, subjects=[f"{name}.>"]))

    async def delete(self, channel: Channel) -> None:
        import nats.js.errors

        async def delete(js: Any) -> None:
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await js.delete_stream(channel.name)

        await self._on_client(channel, delete)

    async def publish(self, channel: Channel, payloads: Sequence[bytes]) -> list[str]:
        subject = f"{channel.name}.in"

        async def publish(js: Any) -> None:
            for payload in payloads:
                await js.publish(subject, payload, stream=channel.name)

        await self._on_client(channel, publish)
        channel.published += len(payloads)
        return [subject] * len(payloads)

    def source(
        self, url: str, channel: Channel, *, worker: str = "a", **options: Any
    ) -> AbstractAsyncContextManager[Any]:
        name = channel.name
        options = {"ack_wait": ACK_WAIT_S, "fetch_timeout": 0.5, **options}
        return jetstream_source(url, name, f"{name}.in", self.durable, **options)

    def sink(self, url: str, channel: Channel, **options: Any) -> AbstractAsyncContextManager[Any]:
        return jetstream_sink(url, f"{channel.name}.out", stream=channel.name, **options)

    async def written(self, channel: Channel, count: int) -> list[bytes]:
        async def read(js: Any) -> list[bytes]:
            subscription = await js.pull_subscribe(f"{channel.name}.out", stream=channel.name)
            payloads: list[bytes] = []
            while len(payloads) < count:
                for msg in await subscription.fetch(count - len(payloads), timeout=WAIT_S):
                    payloads.append(msg.data)
                    await msg.ack()
            return payloads

        return await self._on_client(channel, read)

    async def held(self, channel: Channel) -> int:
        async def held(js: Any) -> int:
            info = await js.consumer_info(channel.name, self.durable)
            return int(info.num_pending + info.num_ack_pending)

        return await self._on_client(channel, held)

    async def delivered(self, channel: Channel, source: Any) -> int:
        async def out(js: Any) -> int:
            return int((await js.consumer_info(channel.name, self.durable)).num_ack_pending)

        return await self._on_client(channel, out)


# -- Redis Streams ----------------------------------------------------------------------------


class RedisStreams(System):
    name = "redis"
    service = "redis"
    read_ahead_option = "batch"
    group = "contract"

    def url(self, host: str, port: int, credentials: str | None = None) -> str:
        return f"redis://{credentials + '@' if credentials else ''}{host}:{port}/0"

    async def _on_client(self, channel: Channel, use: Callable[[Any], Awaitable[T]]) -> T:
        import redis.asyncio

        async def run() -> T:
            client = redis.asyncio.Redis.from_url(channel.url)
            try:
                return await use(client)
            finally:
                await client.aclose()

        return await on_own_loop(run)

    async def create(self, channel: Channel) -> None:
        pass  # the first XADD makes the stream, the source its group

    async def delete(self, channel: Channel) -> None:
        await self._on_client(channel, lambda r: r.delete(channel.name, f"{channel.name}:out"))

    async def publish(self, channel: Channel, payloads: Sequence[bytes]) -> list[str]:
        async def publish(client: Any) -> list[str]:
            return [(await client.xadd(channel.name, {"data": p})).decode() for p in payloads]

        keys = await self._on_client(channel, publish)
        channel.published += len(payloads)
        return keys

    def source(
        self, url: str, channel: Channel, *, worker: str = "a", **options: Any
    ) -> AbstractAsyncContextManager[Any]:
        options = {"block_ms": 100, **options}
        return redis_stream_source(url, channel.name, self.group, worker, **options)

    def sink(self, url: str, channel: Channel, **options: Any) -> AbstractAsyncContextManager[Any]:
        return redis_stream_sink(url, f"{channel.name}:out", **options)

    async def written(self, channel: Channel, count: int) -> list[bytes]:
        async def read(client: Any) -> list[bytes]:
            entries = await client.xrange(f"{channel.name}:out", count=count)
            return [fields[b"data"] for _, fields in entries]

        return await self._on_client(channel, read)

    async def held(self, channel: Channel) -> int:
        async def held(client: Any) -> int:
            groups = {g["name"].decode(): g for g in await client.xinfo_groups(channel.name)}
            group = groups[self.group]
            return int(group["pending"]) + int(group["lag"])

        return await self._on_client(channel, held)

    async def delivered(self, channel: Channel, source: Any) -> int:
        async def pending(client: Any) -> int:
            return int((await client.xpending(channel.name, self.group))["pending"])

        return await self._on_client(channel, pending)


# -- RabbitMQ ---------------------------------------------------------------------------------


class RabbitMQ(System):
    name = "rabbitmq"
    service = "rabbitmq"
    lacks: ClassVar[Mapping[str, str]] = {
        "identity": "AMQP gives a redelivered message a new delivery tag and no stable id",
    }
    read_ahead_option = "prefetch"

    def url(self, host: str, port: int, credentials: str | None = None) -> str:
        return f"amqp://{credentials or 'guest:guest'}@{host}:{port}/"

    async def _on_channel(self, channel: Channel, use: Callable[[Any], Awaitable[T]]) -> T:
        import aio_pika

        async def run() -> T:
            async with await aio_pika.connect(channel.url) as connection:
                return await use(await connection.channel())

        return await on_own_loop(run)

    async def create(self, channel: Channel) -> None:
        async def declare(amqp: Any) -> None:
            for queue in (channel.name, f"{channel.name}.out"):
                await amqp.declare_queue(queue, durable=False)

        await self._on_channel(channel, declare)

    async def delete(self, channel: Channel) -> None:
        async def delete(amqp: Any) -> None:
            for queue in (channel.name, f"{channel.name}.out"):
                await amqp.queue_delete(queue)

        await self._on_channel(channel, delete)

    async def publish(self, channel: Channel, payloads: Sequence[bytes]) -> list[str]:
        import aio_pika

        async def publish(amqp: Any) -> None:
            for payload in payloads:
                message = aio_pika.Message(payload)
                await amqp.default_exchange.publish(message, routing_key=channel.name)

        await self._on_channel(channel, publish)
        channel.published += len(payloads)
        return [channel.name] * len(payloads)

    def source(
        self, url: str, channel: Channel, *, worker: str = "a", **options: Any
    ) -> AbstractAsyncContextManager[Any]:
        return rabbitmq_source(url, channel.name, durable=False, **options)

    def sink(self, url: str, channel: Channel, **options: Any) -> AbstractAsyncContextManager[Any]:
        return rabbitmq_sink(url, routing_key=f"{channel.name}.out", **options)

    async def written(self, channel: Channel, count: int) -> list[bytes]:
        async def read(amqp: Any) -> list[bytes]:
            queue = await amqp.declare_queue(f"{channel.name}.out", passive=True)
            payloads: list[bytes] = []
            while len(payloads) < count:
                message = await queue.get(no_ack=True, fail=False)
                if message is None:
                    break  # confirmed means queued: there is no more
                payloads.append(message.body)
            return payloads

        return await self._on_channel(channel, read)

    async def _ready(self, channel: Channel) -> int:
        async def ready(amqp: Any) -> int:
            queue = await amqp.declare_queue(channel.name, passive=True)
            return int(queue.declaration_result.message_count)

        return await self._on_channel(channel, ready)

    async def held(self, channel: Channel) -> int:
        return await self._ready(channel)  # the closed source's unacked went back to ready

    async def delivered(self, channel: Channel, source: Any) -> int:
        # Nothing acked yet: what is not ready is out with the consumer.
        return channel.published - await self._ready(channel)


# -- MQTT -------------------------------------------------------------------------------------

SESSION_EXPIRY_S = 300


class MQTT(System):
    """QoS 1 over persistent sessions: one for the source (what it leaves unacked comes
    again to its next connection), one that subscribes to the sink's topic beforehand (a
    broker keeps a message only for the sessions subscribed when it was published)."""

    name = "mqtt"
    service = "mqtt"
    lacks: ClassVar[Mapping[str, str]] = {
        "nack_requeue": "MQTT has no negative ack: a nacked message stays unacked and comes "
        "again only with the session's next connection",
        "reject": "MQTT has no negative ack: a message nacked without requeue comes again "
        "with the session's next connection",
        "identity": "a redelivered PUBLISH carries a new packet id and nothing stable",
        "checks_password": "the local mosquitto allows anonymous clients with any password",
    }
    read_ahead_option = "receive_maximum"
    counting_takes = True

    def url(self, host: str, port: int, credentials: str | None = None) -> str:
        return f"mqtt://{credentials + '@' if credentials else ''}{host}:{port}"

    @staticmethod
    def _topic(channel: Channel, side: str) -> str:
        return f"rxflow-contract/{channel.name}/{side}"

    @staticmethod
    def _session(channel: Channel, side: str) -> str:
        return f"{channel.name}-{side}"

    async def _with_session(
        self,
        channel: Channel,
        side: str,
        use: Callable[[Any], Awaitable[T]],
        *,
        keep: bool = True,
    ) -> T:
        """``use(client)`` connected as the ``side`` session (resumed; ended unless
        ``keep``)."""
        import aiomqtt
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        host, port = channel.url.removeprefix("mqtt://").rsplit(":", 1)
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = SESSION_EXPIRY_S if keep else 0

        async def run() -> T:
            async with aiomqtt.Client(
                host,
                int(port),
                identifier=self._session(channel, side),
                protocol=aiomqtt.ProtocolVersion.V5,
                clean_start=not keep,
                properties=properties,
            ) as client:
                return await use(client)

        return await on_own_loop(run)

    async def create(self, channel: Channel) -> None:
        for side in ("in", "out"):
            topic = self._topic(channel, side)
            await self._with_session(channel, side, lambda c, t=topic: c.subscribe(t, qos=1))

    async def delete(self, channel: Channel) -> None:
        for side in ("in", "out"):
            await self._with_session(channel, side, _nothing, keep=False)

    async def publish(self, channel: Channel, payloads: Sequence[bytes]) -> list[str]:
        topic = self._topic(channel, "in")

        async def publish(client: Any) -> None:
            for payload in payloads:
                await client.publish(topic, payload, qos=1)

        await self._with_session(channel, "publisher", publish, keep=False)
        channel.published += len(payloads)
        return [topic] * len(payloads)

    def source(
        self, url: str, channel: Channel, *, worker: str = "a", **options: Any
    ) -> AbstractAsyncContextManager[Any]:
        topic, session = self._topic(channel, "in"), self._session(channel, "in")
        options = {"session_expiry": SESSION_EXPIRY_S, **options}
        return mqtt_source(url, topic, client_id=session, **options)

    def sink(self, url: str, channel: Channel, **options: Any) -> AbstractAsyncContextManager[Any]:
        return mqtt_sink(url, self._topic(channel, "out"), **options)

    async def _take(self, channel: Channel, side: str, until: Callable[[list[bytes]], bool]) -> Any:
        async def take(client: Any) -> list[bytes]:
            payloads: list[bytes] = []
            async for message in client.messages:  # acked as they come (paho's default)
                payloads.append(bytes(message.payload))
                if until(payloads):
                    break
            return payloads

        return await self._with_session(channel, side, take)

    async def written(self, channel: Channel, count: int) -> list[bytes]:
        payloads: list[bytes] = await self._take(channel, "out", lambda got: len(got) == count)
        return payloads

    async def held(self, channel: Channel) -> int:
        # A session cannot be inspected: publish an end mark after what it holds and take
        # everything up to it (it comes last: the session delivers in order).
        mark = f"end-{channel.name}".encode()
        await self.publish(channel, [mark])
        taken: list[bytes] = await self._take(channel, "in", lambda got: got[-1] == mark)
        return len(taken) - 1

    async def delivered(self, channel: Channel, source: Any) -> int:
        return int(source.unacked)  # counted by the client as each PUBLISH arrives


async def _nothing(client: Any) -> None:
    pass


# -- PostgreSQL -------------------------------------------------------------------------------


class _Postgres(System):
    service = "postgresql"
    fail_fast: ClassVar[Mapping[str, Any]] = {"connect_timeout": 0.5}

    def url(self, host: str, port: int, credentials: str | None = None) -> str:
        return f"postgresql://{credentials or 'postgres'}@{host}:{port}/test"

    async def _sql(self, channel: Channel, use: Callable[[Any], Awaitable[T]]) -> T:
        import asyncpg  # type: ignore[import-untyped,unused-ignore]

        async def run() -> T:
            connection = await asyncpg.connect(channel.url)
            try:
                return await use(connection)
            finally:
                await connection.close()

        return await on_own_loop(run)


class PostgresTable(_Postgres):
    """An outbox table: rows in id order, an acked row deleted; the sink writes another."""

    name = "postgres-table"
    lacks: ClassVar[Mapping[str, str]] = {
        "reject": "a row nacked without requeue is set aside for the run only and stays in "
        "the table, so the next source reads it again",
        "checks_password": "the local server trusts every local connection",
    }
    read_ahead_option = "batch_size"

    async def create(self, channel: Channel) -> None:
        name = channel.name
        await self._sql(
            channel,
            lambda c: c.execute(
                f"CREATE TABLE {name} (id bigserial PRIMARY KEY, payload bytea);"
                f"CREATE TABLE {name}_out (id bigserial PRIMARY KEY, v bytea)"
            ),
        )

    async def delete(self, channel: Channel) -> None:
        name = channel.name
        await self._sql(channel, lambda c: c.execute(f"DROP TABLE IF EXISTS {name}, {name}_out"))

    async def publish(self, channel: Channel, payloads: Sequence[bytes]) -> list[str]:
        async def insert(connection: Any) -> list[str]:
            keys: list[str] = []
            async with connection.transaction():
                for payload in payloads:
                    query = f"INSERT INTO {channel.name} (payload) VALUES ($1) RETURNING id"
                    keys.append(str(await connection.fetchval(query, payload)))
            return keys

        keys = await self._sql(channel, insert)
        channel.published += len(payloads)
        return keys

    def source(
        self, url: str, channel: Channel, *, worker: str = "a", **options: Any
    ) -> AbstractAsyncContextManager[Any]:
        options = {"codec": "bytes", "poll_interval": 0.05, **options}
        return postgres_table_source(
            url, channel.name, id_column="id", value_column="payload", **options
        )

    def sink(self, url: str, channel: Channel, **options: Any) -> AbstractAsyncContextManager[Any]:
        return postgres_sink(url, f"{channel.name}_out", ["v"], **options)

    def item(self, payload: bytes) -> Any:
        return (payload,)

    async def written(self, channel: Channel, count: int) -> list[bytes]:
        async def read(connection: Any) -> list[bytes]:
            query = f"SELECT v FROM {channel.name}_out ORDER BY id LIMIT $1"
            return [bytes(row[0]) for row in await connection.fetch(query, count)]

        return await self._sql(channel, read)

    async def held(self, channel: Channel) -> int:
        query = f"SELECT count(*) FROM {channel.name}"
        return int(await self._sql(channel, lambda c: c.fetchval(query)))

    async def delivered(self, channel: Channel, source: Any) -> int:
        # Rows read and not acked (the table cannot say which rows a source has read): the
        # kit's count of them, or, before the kit, the rows read so far (none acked yet).
        unsettled = getattr(source, "unsettled", None)
        return int(source.fetched if unsettled is None else unsettled)


class PostgresListen(_Postgres):
    """LISTEN/NOTIFY: a push source that cannot acknowledge; only what applies to it."""

    name = "postgres-listen"
    _no_ack = "a NOTIFY is not stored: there is nothing to acknowledge or deliver again"
    lacks: ClassVar[Mapping[str, str]] = {
        "ack": _no_ack,
        "redelivery": _no_ack,
        "nack_requeue": _no_ack,
        "reject": _no_ack,
        "identity": _no_ack,
        "read_ahead": "notifications are pushed; the overflow policy bounds what is held",
        "sink": "NOTIFY has no rxflow sink (postgres-table covers postgres_sink)",
        "checks_password": "the local server trusts every local connection",
    }

    async def create(self, channel: Channel) -> None:
        pass  # a channel exists while someone listens

    async def delete(self, channel: Channel) -> None:
        pass

    async def publish(self, channel: Channel, payloads: Sequence[bytes]) -> list[str]:
        async def notify(connection: Any) -> None:
            for payload in payloads:
                await connection.execute("SELECT pg_notify($1, $2)", channel.name, payload.decode())

        await self._sql(channel, notify)
        channel.published += len(payloads)
        return [channel.name] * len(payloads)

    def source(
        self, url: str, channel: Channel, *, worker: str = "a", **options: Any
    ) -> AbstractAsyncContextManager[Any]:
        return postgres_listen_source(url, channel.name, **options)


# -- Kafka ------------------------------------------------------------------------------------


class Kafka(System):
    """A topic of one partition (the suite checks order) read by a consumer group of its
    own; the sink writes to a second topic. Credentials in the URL become SASL/PLAIN."""

    name = "kafka"
    service = "kafka"
    lacks: ClassVar[Mapping[str, str]] = {
        "checks_password": "the tests' broker (tansu, or a plain RXFLOW_KAFKA_BOOTSTRAP) "
        "listens without SASL, so it has no password to check",
    }
    read_ahead_option = "batch"

    def url(self, host: str, port: int, credentials: str | None = None) -> str:
        return f"kafka://{credentials + '@' if credentials else ''}{host}:{port}"

    @staticmethod
    def _connection(url: str) -> dict[str, Any]:
        """kafka_source/kafka_sink's connection arguments for ``url``."""
        address = url.removeprefix("kafka://")
        credentials, at, bootstrap = address.rpartition("@")
        if not at:
            return {"bootstrap": bootstrap}
        user, _, password = credentials.partition(":")
        return {
            "bootstrap": bootstrap,
            "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": "PLAIN",
            "sasl_plain_username": user,
            "sasl_plain_password": password,
        }

    @staticmethod
    def _out(channel: Channel) -> str:
        return f"{channel.name}-out"

    @staticmethod
    def _group(channel: Channel) -> str:
        return f"{channel.name}-group"

    async def _admin(self, channel: Channel, use: Callable[[Any], Awaitable[T]]) -> T:
        from aiokafka.admin import AIOKafkaAdminClient

        async def run() -> T:
            admin = AIOKafkaAdminClient(**self._client(channel))
            await admin.start()
            try:
                return await use(admin)
            finally:
                await admin.close()

        return await on_own_loop(run)

    def _client(self, channel: Channel) -> dict[str, Any]:
        return {"bootstrap_servers": self._connection(channel.url)["bootstrap"]}

    async def create(self, channel: Channel) -> None:
        from aiokafka.admin import NewTopic

        topics = [NewTopic(name, 1, 1) for name in (channel.name, self._out(channel))]
        await self._admin(channel, lambda admin: admin.create_topics(topics))

    async def delete(self, channel: Channel) -> None:
        async def delete(admin: Any) -> None:
            with contextlib.suppress(Exception):  # a broker without deletes keeps them
                await admin.delete_topics([channel.name, self._out(channel)])

        await self._admin(channel, delete)

    async def publish(self, channel: Channel, payloads: Sequence[bytes]) -> list[str]:
        from aiokafka import AIOKafkaProducer

        keys = [f"{channel.name}-{channel.published + n}" for n in range(len(payloads))]

        async def publish() -> None:
            producer = AIOKafkaProducer(**self._client(channel), acks="all")
            await producer.start()
            try:
                for key, payload in zip(keys, payloads, strict=True):
                    await producer.send(channel.name, payload, key=key.encode())
                await producer.flush()
            finally:
                await producer.stop()

        await on_own_loop(publish)
        channel.published += len(payloads)
        return keys

    def source(
        self, url: str, channel: Channel, *, worker: str = "a", **options: Any
    ) -> AbstractAsyncContextManager[Any]:
        from rxflow.connectors.kafka import kafka_source

        connection = self._connection(url)
        bootstrap = connection.pop("bootstrap")
        options = {"client_id": f"{channel.name}-{worker}", **connection, **options}
        return kafka_source(bootstrap, channel.name, self._group(channel), **options)

    def sink(self, url: str, channel: Channel, **options: Any) -> AbstractAsyncContextManager[Any]:
        from rxflow.connectors.kafka import kafka_sink

        connection = self._connection(url)
        bootstrap = connection.pop("bootstrap")
        return kafka_sink(bootstrap, self._out(channel), **connection, **options)

    async def written(self, channel: Channel, count: int) -> list[bytes]:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        async def read() -> list[bytes]:
            consumer = AIOKafkaConsumer(**self._client(channel), enable_auto_commit=False)
            await consumer.start()
            try:
                partition = TopicPartition(self._out(channel), 0)
                consumer.assign([partition])
                await consumer.seek_to_beginning(partition)
                end = (await consumer.end_offsets([partition]))[partition]
                payloads: list[bytes] = []
                while len(payloads) < min(count, end):
                    for records in (await consumer.getmany(timeout_ms=500)).values():
                        payloads += [record.value for record in records]
                return payloads[:count]
            finally:
                await consumer.stop()

        return await on_own_loop(read)

    async def held(self, channel: Channel) -> int:
        # What the group has not committed: Kafka keeps every record; the group's
        # committed offset says how far it is done (nothing committed: from the start).
        from aiokafka import AIOKafkaConsumer, TopicPartition

        partition = TopicPartition(channel.name, 0)

        async def held() -> int:
            # A member of the group that never joins it: it asks for the committed offset
            # (OffsetFetch through the group's coordinator), then fetches from there for the
            # partition's high watermark (tansu's ListOffsets answers the last batch's first
            # offset + 1 for "latest", not the high watermark: end_offsets() is wrong there).
            consumer = AIOKafkaConsumer(
                **self._client(channel),
                group_id=self._group(channel),
                enable_auto_commit=False,
                fetch_max_wait_ms=100,
            )
            await consumer.start()
            try:
                start = (await consumer.beginning_offsets([partition]))[partition]
                committed = await consumer.committed(partition)
                done = start if committed is None else max(start, committed)
                consumer.assign([partition])
                consumer.seek(partition, done)
                await consumer.getmany(partition, timeout_ms=300, max_records=1)
                end = consumer.highwater(partition)
            finally:
                await consumer.stop()
            return 0 if end is None else int(end - done)

        return await on_own_loop(held)

    async def delivered(self, channel: Channel, source: Any) -> int:
        # Kafka keeps no count of records handed to a consumer and not committed (a
        # consumer only has a position): the source's own count of them.
        return int(source.unsettled)


SYSTEMS: list[System] = [
    JetStream(),
    RedisStreams(),
    RabbitMQ(),
    MQTT(),
    PostgresTable(),
    PostgresListen(),
    Kafka(),
]
"""Every system the contract runs against."""
