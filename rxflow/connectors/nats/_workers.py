"""Who else reads a durable consumer: the count behind
:meth:`~rxflow.connectors.nats.JetStreamSource.other_workers`.

JetStream does not list the clients of a pull consumer, so two signals are combined:

* **Roll call** of rxflow's own workers. Every open :class:`JetStreamSource` answers on the
  core NATS subject ``_RXFLOW.WORKERS.<stream>.<durable>`` with its own id; a count
  publishes one request there and collects the answers for :data:`ROLL_CALL_WAIT_S`. It sees
  every rxflow worker of the durable, busy or idle, on any rxflow version that has it.
* **Waiting pulls** (``num_waiting`` of the consumer's info): the pull requests waiting at
  the server, less the one of this source's fetch if it has one. It sees any client,
  rxflow or not, but only while that client waits for messages (an idle stream, or one
  that the client reads faster than it fills); a client busy with what it fetched has no
  request waiting.

The count is the larger of the two.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any, Final

__all__ = ["ROLL_CALL_WAIT_S", "RollCall", "roll_call_subject"]

ROLL_CALL_WAIT_S: Final = 0.3
"""How long a count collects the other workers' answers: many round trips on a LAN, and
short enough for a check a flow makes when it starts."""


def roll_call_subject(stream: str, durable: str) -> str:
    """The subject the workers of one durable answer on (both names are single tokens)."""
    return f"_RXFLOW.WORKERS.{stream}.{durable}"


class RollCall:
    """One source's part in the roll call of a durable's workers: it answers the others'
    calls, and counts the workers that answer its own. Every method runs on the client's
    loop (the source's :class:`~rxflow.connectors._asyncio_host.AsyncioHost`)."""

    def __init__(self, client: Any, stream: str, durable: str) -> None:
        self._client = client
        self.subject = roll_call_subject(stream, durable)
        self.id = uuid.uuid4().hex
        self._answer = json.dumps({"rxflow_worker": self.id}).encode()
        self._subscription: Any = None
        # Pull requests this source has at the server: one while a fetch runs.
        self.fetching = 0

    async def join(self) -> None:
        """Answer the calls of the durable's other workers from now on."""
        self._subscription = await self._client.subscribe(self.subject, cb=self._answer_call)

    async def leave(self) -> None:
        if self._subscription is not None:
            subscription, self._subscription = self._subscription, None
            await subscription.unsubscribe()

    async def _answer_call(self, msg: Any) -> None:
        if msg.reply:
            await self._client.publish(msg.reply, self._answer)

    async def others(self, subscription: Any, wait: float = ROLL_CALL_WAIT_S) -> int:
        """How many other workers read the durable: the larger of the roll call's answers
        and the pull requests waiting at the server that are not this source's own."""
        answered = await self._answered(wait)
        fetching_before = self.fetching
        info = await subscription.consumer_info()
        # A fetch that started or ended during the request may or may not be counted by
        # the server: take it as counted (the count may miss a worker, not invent one).
        own = max(fetching_before, self.fetching)
        waiting = max(0, (info.num_waiting or 0) - own)
        return max(answered, waiting)

    async def _answered(self, wait: float) -> int:
        workers: set[str] = set()

        async def collect(msg: Any) -> None:
            try:
                worker = json.loads(msg.data).get("rxflow_worker")
            except (ValueError, AttributeError):  # not an answer (a stream captured the call)
                return
            if isinstance(worker, str):
                workers.add(worker)

        inbox = self._client.new_inbox()
        answers = await self._client.subscribe(inbox, cb=collect)
        try:
            await self._client.publish(self.subject, b"", reply=inbox)
            await asyncio.sleep(wait)
        finally:
            await answers.unsubscribe()
        workers.discard(self.id)
        return len(workers)
