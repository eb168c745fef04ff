"""The connector kit for brokers: one source loop and one sink shape, for every system.

Every broker source is the same loop: fetch a batch (no more than the pipe, the system's
in-flight limit and the read-ahead bound leave room for), decode each record with the
source's :class:`~rxflow.connectors.codecs.Decoder`, settle at once what the decode policy set
aside, hand out :class:`~rxflow.connectors.Message` records, and settle them (ack, nack) when
the flow or the user says so. :class:`BrokerSource` owns that loop; a broker module supplies
only a :class:`Reader`: its client's fetch, settle and release calls.

What the kit guarantees, for every system:

* **Bounded read-ahead.** Records fetched and not handed out (``buffered``) are at most
  ``read_ahead`` records, and their payloads at most ``read_ahead_bytes`` bytes plus one
  record: a fetch asks for no more records than the byte budget holds at the average size
  seen so far (the first fetch of a source asks for one record, unless the system reported
  its records' size beforehand: ``expected_size``), and a reader whose system can bound a
  fetch in bytes is told the budget too.
* **In-flight limits.** With the system's :class:`~rxflow.connectors.InFlightLimit`, a source
  never fetches past it: at the limit it waits for a settlement, and the pipe's source time
  stands still meanwhile (held back, not idle: event-time windows must not pass over it).
* **Settlements once, in batches.** Acks go through one :class:`Settler`: under trio a
  hosted client gets each run of queued settlements in one call to its thread, and a flow
  acks many messages with one :meth:`BrokerSource.ack_many`. Settling after the source
  closed raises :class:`~rxflow.errors.SettledAfterCloseError`: the system delivers the
  message again, which the caller must know.
* **Runs.** :meth:`BrokerSource.next_run` hands out what one fetch brought, decoded, as one
  list, so a pipe can move a fetched batch with one await.
* **Closing.** Records fetched and never handed out are given back to the system
  (:meth:`Reader.release`), queued settlements are written, shielded from cancellation.

Sinks: :class:`BrokerSink` encodes every item with the one encoder the sink was given and
hands the batch to a :class:`Publisher`, which returns once the system confirmed it.
"""

from __future__ import annotations

from rxflow.connectors._kit._records import (
    DEFAULT_READ_AHEAD_BYTES,
    NO_HEADERS,
    Decoded,
    HostedPushReader,
    Incoming,
    Payload,
    Reader,
    Verb,
)
from rxflow.connectors._kit._settle import BrokerSettlement
from rxflow.connectors._kit._sink import Address, AddressedPublisher, BrokerSink, Publisher
from rxflow.connectors._kit._source import BrokerSource, IdentityOf, PushedSource

__all__ = [
    "DEFAULT_READ_AHEAD_BYTES",
    "NO_HEADERS",
    "Address",
    "AddressedPublisher",
    "BrokerSettlement",
    "BrokerSink",
    "BrokerSource",
    "Decoded",
    "HostedPushReader",
    "IdentityOf",
    "Incoming",
    "Payload",
    "Publisher",
    "PushedSource",
    "Reader",
    "Verb",
]
