"""At-least-once delivery inside a flow: which source messages each output depends on,
and acknowledging each message once nothing derived from it is unconfirmed.

A :class:`rxflow.Flow` acknowledges a source message (anything with an async ``ack()``, such
as a connector's :class:`~rxflow.connectors.Message`) once nothing derived from it is still
unconfirmed. It counts *claims* on each admitted message:

* the push: while the pump pushes the message through the operators;
* each output emitted during that push (a ``map``, a ``filter`` that passed it, a window
  that closed because of it) until every sink confirmed that output;
* each stateful rxflow operator holding it (an open window, a ``map_async`` call in
  flight) until the operator emits what it became; that output then claims it in turn.

When the count reaches zero the message is settled: handed to ``on_settled`` (the flow's
acker). A message a ``filter`` dropped is settled as soon as its push ends; one in an
open window when the flow is aborted is never acknowledged, so its system delivers it
again.

What is not seen: generic Rx operators that keep items across pushes (``buffer_with_count``,
``delay``, ``debounce``...) do not claim them, so a message they hold is acknowledged once
the outputs of its own push are confirmed. rxflow's windows and ``map_async`` do claim.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import partial
from typing import Any

import anyio
import attrs
from reactivex import Observable
from reactivex import operators as ops

logger = logging.getLogger("rxflow")

_current: ContextVar[Delivery | None] = ContextVar("rxflow_delivery", default=None)


def current_delivery() -> Delivery | None:
    """The delivery tracking of the flow this code runs in, if any (operators read it when
    they are subscribed; tasks a flow starts inherit it)."""
    return _current.get()


class Delivery:
    """Claims on the messages a flow admitted (see the module docstring)."""

    def __init__(self, on_settled: Callable[[Any], object]) -> None:
        self._on_settled = on_settled
        self._claims: dict[int, int] = {}
        self._messages: dict[int, Any] = {}
        self._next = 0
        self._pushing: int | None = None  # the message being pushed through the operators
        self._attached: tuple[int, ...] = ()  # what a holder's output being emitted carries

    @property
    def unsettled(self) -> int:
        """Messages admitted and not settled yet."""
        return len(self._claims)

    @contextmanager
    def activated(self) -> Iterator[Delivery]:
        """Make this the tracking that operators subscribed in this context see."""
        token = _current.set(self)
        try:
            yield self
        finally:
            _current.reset(token)

    # -- the pump's side -----------------------------------------------------------------

    def admit(self, message: Any) -> None:
        """``message`` is about to be pushed through the operators."""
        sequence = self._next
        self._next += 1
        self._claims[sequence] = 1
        self._messages[sequence] = message
        self._pushing = sequence

    def pushed(self) -> None:
        """The push of the admitted message is over (the pump asks for the next item)."""
        if self._pushing is not None:
            sequence, self._pushing = self._pushing, None
            self._release(sequence)

    # -- stateful operators --------------------------------------------------------------

    def hold(self) -> int | None:
        """Claim the message being pushed, for an operator that keeps its item; ``None``
        when no tracked message is being pushed. Hand the token to :meth:`emitting`."""
        sequence = self._pushing
        if sequence is not None:
            self._claims[sequence] += 1
        return sequence

    @contextmanager
    def emitting(self, tokens: Iterable[int | None]) -> Iterator[None]:
        """Around an operator's ``on_next`` of what its held items became: each output
        emitted inside claims them, then the operator's own claims are released."""
        held = tuple(token for token in tokens if token is not None)
        previous, self._attached = self._attached, self._attached + held
        try:
            yield
        finally:
            self._attached = previous
            for sequence in held:
                self._release(sequence)

    # -- outputs -------------------------------------------------------------------------

    def tag(self) -> tuple[int, ...]:
        """Claims for an output being emitted now: the push in progress, and whatever a
        holder emitting it attached. Pass the result to :meth:`confirm` once written."""
        tags = self._attached
        if self._pushing is not None:
            tags = (*tags, self._pushing)
        claims = self._claims
        for sequence in tags:
            claims[sequence] += 1
        return tags

    def confirm(self, tags: tuple[int, ...]) -> None:
        """Every sink confirmed (or deliberately dropped) the output tagged ``tags``."""
        for sequence in tags:
            self._release(sequence)

    def _release(self, sequence: int) -> None:
        remaining = self._claims[sequence] - 1
        if remaining:
            self._claims[sequence] = remaining
            return
        del self._claims[sequence]
        self._on_settled(self._messages.pop(sequence))


# -- a flow's side: admitting source items, tagging outputs, acknowledging ---------------


async def tracked(delivery: Delivery, items: AsyncIterable[Any]) -> AsyncIterator[Any]:
    """The merged source, admitting each acknowledgeable item to delivery tracking for the
    time the pump pushes it (until the pump asks for the next)."""
    iterator = aiter(items)
    try:
        async for item in iterator:
            if hasattr(item, "ack"):
                delivery.admit(item)
                try:
                    yield item
                finally:  # also when the pipe ended during this push (take(n), completion)
                    delivery.pushed()
            else:
                yield item
    finally:
        aclose = getattr(iterator, "aclose", None)
        if aclose is not None:
            with anyio.CancelScope(shield=True):
                await aclose()


@attrs.define(slots=True, eq=False)
class Output:
    """An output of the operators on its way to the sinks, with the claims it carries."""

    value: Any
    tags: tuple[int, ...]
    unconfirmed: int = 0  # sinks that have not confirmed it yet

    def done_by_one_sink(self, delivery: Delivery) -> None:
        self.unconfirmed -= 1
        if not self.unconfirmed and self.tags:
            delivery.confirm(self.tags)


def tag_outputs(delivery: Delivery) -> Callable[[Observable[Any]], Observable[Output]]:
    """The last operator of a flow: each output takes its claims with it."""
    return ops.map(lambda value: Output(value, delivery.tag()))


class Acker:
    """Acknowledges settled messages in order, in a task of its own, so that settling
    (a synchronous Rx callback) never waits for a broker."""

    def __init__(self) -> None:
        self._settled: deque[Any] = deque()
        self._wake = anyio.Event()
        self._closed = False
        self.acked = 0
        self.failed = 0

    def put(self, message: Any) -> None:
        self._settled.append(message)
        self._wake.set()

    def close(self) -> None:
        self._closed = True
        self._wake.set()

    async def run(self) -> None:
        while True:
            while self._settled:
                await self._acknowledge_settled()
            if self._closed:
                return
            self._wake = anyio.Event()
            await self._wake.wait()

    async def _acknowledge_settled(self) -> None:
        # Everything settled so far, in one go: messages whose source acknowledges in
        # batches (one XACK for many ids) share a round trip; the others go one by one.
        settled, self._settled = self._settled, deque()
        batches: dict[int, tuple[Any, list[Any]]] = {}
        for message in settled:
            acker = getattr(getattr(message, "settlement", None), "batch_acker", None)
            if acker is None:
                await self._acknowledge(message.ack, [message])
            else:
                batches.setdefault(id(acker), (acker, []))[1].append(message)
        for acker, messages in batches.values():
            await self._acknowledge(partial(acker.ack_many, messages), messages)

    async def _acknowledge(self, ack: Callable[[], Awaitable[object]], messages: list[Any]) -> None:
        try:
            await ack()
        except Exception:
            # Not acknowledged means delivered again: at-least-once still holds.
            self.failed += len(messages)
            logger.warning(
                "rxflow: could not acknowledge %d message(s)", len(messages), exc_info=True
            )
        else:
            self.acked += len(messages)
