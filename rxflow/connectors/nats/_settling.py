"""What a JetStream source has at the server, and how it settles and gives it back: the
messages fetched and not settled (:class:`Pulls`), acks and naks in one hop per run, and the
stop of the subscription when the source closes. Every function runs on the client's loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any, Final

from rxflow.connectors._extras import requires_extra
from rxflow.connectors._kit import Verb

with requires_extra("nats"):
    import nats.errors
    from nats.aio.msg import Msg

__all__ = [
    "PULL_EXPIRY_MARGIN_S",
    "Pulls",
    "in_progress_each",
    "nak_each",
    "settle_all",
    "stop_and_nak",
]

# After a cancelled fetch's pull request expired at the server: what it was sent by then
# has arrived (a round trip on a LAN is well below this).
PULL_EXPIRY_MARGIN_S: Final = 0.1


async def settle_all(
    settlements: Sequence[tuple[Msg, Verb]], confirm_acks: bool, pulls: Pulls
) -> None:
    for msg, verb in settlements:
        pulls.unsettled.pop(id(msg), None)
        if verb == "ack":
            # ack_sync waits for the server's reply; the others only reach the connection.
            await (msg.ack_sync() if confirm_acks else msg.ack())
        elif verb == "requeue":
            await msg.nak()  # delivered again at once, not after ack_wait
        else:
            await msg.term()  # never delivered again


async def in_progress_each(msgs: Sequence[Msg]) -> None:
    """Restart each message's ack_wait (a message that cannot be told keeps its own)."""
    for msg in msgs:
        with contextlib.suppress(nats.errors.Error):
            await msg.in_progress()


async def nak_each(msgs: Sequence[Msg], pulls: Pulls) -> int:
    """Nak what can be nakked; a nak that cannot be sent leaves its message to ack_wait."""
    nakked = 0
    for msg in msgs:
        pulls.unsettled.pop(id(msg), None)
        with contextlib.suppress(nats.errors.Error):
            await msg.nak()
            nakked += 1
    return nakked


class Pulls:
    """What this source has at the server: the messages fetched and not settled or released
    yet, and when the pull request of a cancelled fetch expires. Touched on the client's
    loop only."""

    __slots__ = ("expires", "unsettled")

    def __init__(self) -> None:
        # By id; each is kept alive here, so no id is reused meanwhile. What is left when
        # the source closes was handed out and never settled: it is nakked then
        # (source._Reader.give_back), or JetStream would hold it back until ack_wait while the
        # next run reads on past it.
        self.unsettled: dict[int, Msg] = {}
        # The loop time the pull request of a fetch expires at the server, while the fetch
        # waits (None once it returned). A fetch cancelled leaves its request waiting
        # there until then: JetStream still sends it messages, to this subscription.
        self.expires: float | None = None


async def stop_and_nak(subscription: Any, unhanded: Sequence[Msg], pulls: Pulls) -> int:
    """Stop the pull subscription, then nak ``unhanded`` (the source is closing).

    A fetch cancelled by the close leaves its pull request waiting at the server, and
    JetStream hands a message (a nakked one first) to the oldest waiting request: to this
    subscription, which would drop it, leaving it to ack_wait (seen: the first message
    nakked after the unsubscribe). So with messages to give back the subscription stays
    until that request expired, and what it was sent meanwhile is given back too."""
    loop = asyncio.get_running_loop()
    if (unhanded or pulls.unsettled) and pulls.expires is not None:
        await asyncio.sleep(max(0.0, pulls.expires - loop.time()) + PULL_EXPIRY_MARGIN_S)
    with contextlib.suppress(nats.errors.Error):
        await subscription.unsubscribe()
    # nats-py keeps what arrived in the subscription's private queue after unsubscribe.
    queue = getattr(getattr(subscription, "_sub", None), "_pending_queue", None)
    while queue is not None and not queue.empty():
        msg = queue.get_nowait()
        if (msg.reply or "").startswith("$JS.ACK."):  # not a status message (408...)
            pulls.unsettled[id(msg)] = msg
    return await nak_each(unhanded, pulls) if unhanded else 0
