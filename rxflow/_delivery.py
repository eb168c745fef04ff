"""At-least-once delivery inside a flow: which source messages each output depends on.

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

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

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
