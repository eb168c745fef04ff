"""``SourceAccount``: one source's messages inside a flow, counted against the in-flight
limit its system sets, and the error a flow fails with when its operators hold that many."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rxflow.errors import InFlightLimitError

__all__ = ["SourceAccount", "in_flight_limit_reached"]


class SourceAccount:
    """One source's messages inside a flow, against the in-flight limit its system sets.

    A broker delivers at most so many messages that are not acknowledged yet (JetStream's
    ``max_ack_pending``, RabbitMQ's ``prefetch``, MQTT's ``receive_maximum``); a connector
    source says so with an ``in_flight_limit`` attribute (an
    :class:`~rxflow.connectors.InFlightLimit`: ``count`` and ``setting``, the parameter's
    name). Two consequences for a flow, both enforced here:

    * while ``unsettled`` is at the limit, the source *cannot* deliver: it is held back,
      not idle, so the flow's :class:`~rxflow._source_time.SourceTime` stands still and
      event-time windows do not let event time pass on idleness;
    * when ``held`` (messages kept by stateful operators, such as open windows, which only
      new messages can close) reaches the limit, the flow can never make progress again:
      it fails with :class:`~rxflow.errors.InFlightLimitError` instead of stalling, and
      nothing it did not write is acknowledged.
    """

    __slots__ = ("held", "limit", "limit_setting", "lineage", "name", "redelivered", "unsettled")

    def __init__(
        self,
        name: str,
        in_flight_limit: Any = None,
        lineage: Callable[[list[Any]], object] | None = None,
    ) -> None:
        self.name = name
        # Told which of the source's messages made one output (a source whose commits must
        # not split an output: Kafka's link_many), or None.
        self.lineage = lineage
        count = getattr(in_flight_limit, "count", None)
        # None: the system sets no limit (Redis Streams), or the source is not a connector.
        self.limit: int | None = count if isinstance(count, int) and count > 0 else None
        self.limit_setting: str = getattr(in_flight_limit, "setting", "in-flight limit")
        self.unsettled = 0  # admitted, not settled; at `limit` the source is held back
        self.held = 0  # unsettled messages that a stateful operator keeps; < limit, or fail
        self.redelivered = 0  # copies delivered again while the first was still held


def in_flight_limit_reached(account: SourceAccount) -> InFlightLimitError:
    return InFlightLimitError(
        f"the flow's windows (and other stateful operators) hold {account.held} "
        f"unacknowledged messages of {account.name}, and its {account.limit_setting}="
        f"{account.limit} lets no more be in flight: the source cannot deliver the messages "
        "that would close those windows, so the flow would stall (or, with idle_timeout, "
        "drop them as late). Add .checkpoint(store) to the flow (rxflow.state.SQLiteStore "
        "needs no server): windows then keep their contents in the checkpoint and hold no "
        f"messages. Or raise {account.limit_setting} above the most messages your windows "
        "hold at once (about the event rate times the window length, for every window open "
        "at a time), or use shorter windows. Nothing that was not written was "
        "acknowledged: the held messages will be delivered again"
    )
