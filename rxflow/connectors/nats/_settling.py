"""What a JetStream source has at the server, and how it settles and gives it back: the
messages fetched and not settled (:class:`Pulls`), acks and naks in one hop per run, and the
stop of the subscription when the source closes. Every function runs on the client's loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine, Sequence
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

# After a pending fetch's pull request expired at the server: what it was sent by then
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
    yet, and the fetch under way. Touched on the client's loop only."""

    __slots__ = ("expires", "pending", "unsettled")

    def __init__(self) -> None:
        # By id; each is kept alive here, so no id is reused meanwhile. What is left when
        # the source closes was handed out and never settled, or fetched for a caller that
        # was cancelled: it is nakked then (source._Reader.give_back), or JetStream would
        # hold it back until ack_wait while the next run reads on past it.
        self.unsettled: dict[int, Msg] = {}
        # The fetch under way (see pull), a task of the client's loop; None between fetches.
        self.pending: asyncio.Task[list[Msg]] | None = None
        # The loop time the pending fetch's pull request expires at the server (None once
        # the fetch returned): until then JetStream may send it messages.
        self.expires: float | None = None

    async def pull(self, fetch: Callable[[], Coroutine[Any, Any, list[Msg]]]) -> list[Msg]:
        """What ``fetch()`` (a nats-py fetch that puts its messages in :attr:`unsettled`)
        returns, or what the pending fetch returns if a cancelled caller left one.

        A caller's cancellation does not reach the fetch: nats-py's fetch gathers what the
        server sends in a local list, so cancelled it would drop those messages, unacked,
        to come again only after ack_wait (after newer ones). It runs on to its end (its
        request expires within the fetch timeout) and the next pull returns its messages,
        or the source's close gives them back (:func:`stop_and_nak`)."""
        if self.pending is None:
            self.pending = asyncio.ensure_future(fetch())
            self.pending.add_done_callback(_retrieve_error)
        pending = self.pending
        try:
            msgs = await asyncio.shield(pending)
        except Exception:
            self.pending = None  # it failed: the next pull fetches anew
            raise
        self.pending = None
        return msgs


def _retrieve_error(task: asyncio.Task[list[Msg]]) -> None:
    # A fetch whose caller was cancelled may fail with no one awaiting it: its error is
    # retrieved here (asyncio would log it as never retrieved); the next pull raises it.
    if not task.cancelled():
        task.exception()


async def stop_and_nak(subscription: Any, unhanded: Sequence[Msg], pulls: Pulls) -> int:
    """Stop the pull subscription, then nak ``unhanded`` (the source is closing).

    A fetch still under way (its caller cancelled by the close) has a pull request
    waiting at the server, and JetStream hands a message (a nakked one first) to the oldest
    waiting request. So with messages to give back the fetch is awaited until that request
    expired, its messages given back too; with none, it is cancelled (a message sent to it
    meanwhile comes again after ack_wait)."""
    pending = pulls.pending
    if pending is not None:
        if not pending.done() and (unhanded or pulls.unsettled):
            loop = asyncio.get_running_loop()
            expires = loop.time() if pulls.expires is None else pulls.expires
            wait = max(0.0, expires - loop.time()) + PULL_EXPIRY_MARGIN_S
            await asyncio.wait([pending], timeout=wait)
        pending.cancel()  # nothing if it returned
        pulls.pending = None
    with contextlib.suppress(nats.errors.Error):
        await subscription.unsubscribe()
    # nats-py keeps what arrived in the subscription's private queue after unsubscribe.
    queue = getattr(getattr(subscription, "_sub", None), "_pending_queue", None)
    while queue is not None and not queue.empty():
        msg = queue.get_nowait()
        if (msg.reply or "").startswith("$JS.ACK."):  # not a status message (408...)
            pulls.unsettled[id(msg)] = msg
    return await nak_each(unhanded, pulls) if unhanded else 0
