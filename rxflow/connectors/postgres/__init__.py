"""PostgreSQL through asyncpg: LISTEN/NOTIFY and outbox tables as sources, a table as a sink.

One connector per module:

* :func:`postgres_listen_source` (:mod:`.listen`) yields the notifications sent on a
  channel: at most once (NOTIFY keeps no copy), pushed into a bounded buffer with an
  overflow policy.
* :func:`postgres_table_source` (:mod:`.outbox`) reads a table as a queue: rows in id order,
  each deleted when its message is acked; at least once. It is a broker source of the
  connector kit.
* :func:`postgres_sink` (:mod:`.sink`) writes batches of rows, each batch in one transaction,
  with ``COPY`` or ``INSERT``; a batch is confirmed when it is committed.

asyncpg runs only on asyncio; under trio they all run it through
:class:`~rxflow.connectors._asyncio_host.AsyncioHost`.
"""

from __future__ import annotations

from rxflow.connectors.postgres._connection import (
    DEFAULT_APPLICATION_NAME,
    MAX_IDENTIFIER_BYTES,
    describe_server,
    quote_ident,
)
from rxflow.connectors.postgres.listen import PostgresListenSource, postgres_listen_source
from rxflow.connectors.postgres.outbox import PostgresTableSource, postgres_table_source
from rxflow.connectors.postgres.sink import (
    OnConflict,
    PostgresSink,
    SinkMethod,
    postgres_sink,
)

__all__ = [
    "DEFAULT_APPLICATION_NAME",
    "MAX_IDENTIFIER_BYTES",
    "OnConflict",
    "PostgresListenSource",
    "PostgresSink",
    "PostgresTableSource",
    "SinkMethod",
    "describe_server",
    "postgres_listen_source",
    "postgres_sink",
    "postgres_table_source",
    "quote_ident",
]
