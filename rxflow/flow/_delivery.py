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
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Callable,
    Hashable,
    Iterable,
    Iterator,
    Sequence,
)
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import anyio
import attrs
from reactivex import Observable, abc

from rxflow._holds import AckHolds, holds_activated
from rxflow._source_time import SourceTime
from rxflow.flow._accounts import SourceAccount, in_flight_limit_reached
from rxflow.flow._lineage import SourcePosition

logger = logging.getLogger("rxflow")


class _Entry:
    """A message admitted to a flow and not settled yet."""

    __slots__ = ("account", "claims", "copies", "holds", "message", "sequence")

    def __init__(self, message: Any, account: SourceAccount, sequence: int) -> None:
        self.message = message
        self.sequence = sequence  # its place in admission order
        self.account = account
        self.claims = 1  # the push; the message settles when this reaches 0
        self.holds = 0  # of those claims, how many stateful operators have
        self.copies: list[Any] = []  # redeliveries of it that arrived meanwhile: acked with it


class Delivery(AckHolds):
    """Claims on the messages a flow admitted (see the module docstring). It is the
    flow's :class:`~rxflow._holds.AckHolds`: stateful operators reach it through
    :func:`rxflow._holds.current_holds` while :meth:`activated`."""

    def __init__(
        self,
        on_settled: Callable[[Any], object],
        source_time: SourceTime | None = None,
        *,
        acks_follow_checkpoints: bool = False,
    ) -> None:
        self._on_settled = on_settled
        self._source_time = source_time
        # Unsettled messages by sequence. Invariant: in admission order, so the first key is
        # the oldest unsettled message (a checkpoint's barrier waits on it).
        self._entries: dict[int, _Entry] = {}
        # With checkpoints: settled messages that no stored checkpoint covers yet, by
        # sequence; a checkpoint acknowledges those admitted before its barrier once it is
        # stored (acknowledge()). Without checkpoints, settled messages are acked at once.
        self._acks_follow_checkpoints = acks_follow_checkpoints
        self._awaiting: dict[int, _Entry] = {}
        self._settled_event: anyio.Event | None = None  # set on a settlement while awaited
        # Unsettled messages that some operator holds (entry.holds > 0): with checkpoints,
        # only operators that are not checkpointed hold (map_async's calls in flight).
        self._held_messages = 0
        # Called when a source's unacknowledged messages reach half its in-flight limit:
        # with checkpoints, time for one, so that the limit is never what stops the source.
        self.on_pressure: Callable[[], object] | None = None
        # Unsettled messages by (account, identity, partition): a redelivery of one is
        # recognised. The partition is the assignment it was read in (None for systems
        # without partitions): a partition revoked and assigned here again brings its
        # records again for a new chain of operators, not as redeliveries of the old one's.
        self._by_identity: dict[tuple[int, Hashable, object], int] = {}
        # Settled messages whose ack is not sent yet, by id(message): a copy that comes
        # meanwhile is acknowledged too, not pushed. See forget().
        self._acking: dict[int, tuple[int, Hashable, object]] = {}
        self._acking_keys: set[tuple[int, Hashable, object]] = set()
        self._next = 0
        self._pushing: int | None = None  # the message being pushed through the operators
        self._attached: tuple[int, ...] = ()  # what a holder's output being emitted carries
        self.linking = False  # some source wants to know which messages made one output
        # The error for overlapping windows: set over a redelivering source, no checkpoints.
        self.refuse_overlapping: Callable[[str], Exception] | None = None
        # The checkpoint epoch that outputs emitted now belong to: each checkpoint's barrier
        # ends one. A transactional sink writes an output with the checkpoint of its epoch.
        self.epoch = 0
        # Outputs emitted and not yet confirmed by every sink, per epoch (a checkpoint waits
        # for those of its epoch: a window a timer closed claims no message, but the stored
        # state says it was emitted).
        self._outputs_by_epoch: dict[int, int] = {}

    @property
    def unsettled(self) -> int:
        """Messages admitted and not acknowledged yet (with checkpoints: or settled and
        waiting for the checkpoint that covers them)."""
        return len(self._entries) + len(self._awaiting)

    def activated(self) -> AbstractContextManager[AckHolds]:
        """Make this the holds that operators subscribed in this context see."""
        return holds_activated(self)

    # -- the pump's side -----------------------------------------------------------------

    def admit(self, message: Any, account: SourceAccount) -> bool:
        """``message`` is about to be pushed through the operators; False if it is a
        redelivery of a message the flow still holds, which must not be pushed again (it
        is acknowledged together with the first copy)."""
        identity = getattr(message, "identity", None)
        if identity is not None:
            key = (id(account), identity, getattr(message, "partition", None))
            first = self._by_identity.get(key)
            if first is not None or key in self._acking_keys:
                account.redelivered += 1
                logger.debug("%s delivered %r again while it was held", account.name, identity)
                if first is not None:  # acked with the first
                    (self._entries.get(first) or self._awaiting[first]).copies.append(message)
                else:
                    self._on_settled(message)  # the first is being acked: ack this too
                return False
            self._by_identity[key] = self._next
        sequence = self._next
        self._next += 1
        self._entries[sequence] = _Entry(message, account, sequence)
        self._pushing = sequence
        account.unsettled += 1
        limit = account.limit
        if limit is not None:
            if account.unsettled == limit and self._source_time is not None:
                self._source_time.pause()  # the source cannot deliver until one settles
            if self.on_pressure is not None and account.unsettled * 2 >= limit:
                self.on_pressure()
        return True

    def pushed(self) -> None:
        """The push of the admitted message is over (the pump asks for the next item)."""
        if self._pushing is not None:
            sequence, self._pushing = self._pushing, None
            self._release(sequence)

    def push_failed(self) -> None:
        """The operators failed pushing the admitted message: it is never acknowledged."""
        self._pushing = None

    # -- stateful operators --------------------------------------------------------------

    def hold(self) -> int | None:
        """Claim the message being pushed, for an operator that keeps its item; ``None``
        when no tracked message is being pushed. Hand the token to :meth:`emitting`.

        Raises:
            InFlightLimitError: operators now hold as many messages of the source as its
                system lets be unacknowledged, so it can deliver nothing more.
        """
        sequence = self._pushing
        if sequence is not None:
            entry = self._entries[sequence]
            entry.claims += 1
            entry.holds += 1
            if entry.holds == 1:
                self._held_messages += 1
                account = entry.account
                account.held += 1
                if account.held == account.limit:
                    raise in_flight_limit_reached(account)
        return sequence

    def keep(self, item: Any) -> tuple[Any, int | None]:
        """``item`` with a hold on its message (see :meth:`hold`), as one entry."""
        return item, self.hold()

    def item_of(self, entry: tuple[Any, int | None]) -> Any:
        return entry[0]

    def unpack(
        self, entries: Sequence[tuple[Any, int | None]]
    ) -> tuple[tuple[Any, ...], list[int | None]]:
        """The items and the holds of entries that :meth:`keep` made."""
        return tuple(item for item, _ in entries), [token for _, token in entries]

    @contextmanager
    def emitting(self, tokens: Iterable[int | None]) -> Iterator[None]:
        """Around an operator's ``on_next`` of what its held items became: each output
        emitted inside claims them, then the operator's own claims are released."""
        held = tuple(token for token in tokens if token is not None)
        with self.attached(held):
            yield
        self.release(held)

    @contextmanager
    def attached(self, tokens: Iterable[int | None]) -> Iterator[None]:
        """Outputs emitted inside claim the messages of ``tokens`` too; the operator keeps
        its own claims (an item that is in more than one window: see release)."""
        held = tuple(token for token in tokens if token is not None)
        if self.linking and len(held) > 1:
            self._link(held)
        previous, self._attached = self._attached, self._attached + held
        try:
            yield
        finally:
            self._attached = previous

    def release(self, tokens: Iterable[int | None]) -> None:
        """An operator is done with the items it held under ``tokens``."""
        entries = self._entries
        for sequence in tokens:
            if sequence is None:
                continue
            entry = entries.get(sequence)
            if entry is None:
                continue  # let go with its partition (let_go)
            entry.holds -= 1
            if not entry.holds:
                entry.account.held -= 1
                self._held_messages -= 1
                if self._settled_event is not None:
                    self._settled_event.set()
            self._release(sequence)

    # -- outputs -------------------------------------------------------------------------

    def tag(self) -> tuple[int, ...]:
        """Claims for an output being emitted now: the push in progress, and whatever a
        holder emitting it attached. Pass the result to :meth:`confirm` once written."""
        tags = self._attached
        if self._pushing is not None:
            tags = (*tags, self._pushing)
        entries = self._entries
        for sequence in tags:
            entries[sequence].claims += 1
        return tags

    def sources_of(self, tags: tuple[int, ...]) -> tuple[SourcePosition, ...]:
        """Where the messages of an unconfirmed output's ``tags`` came from (lineage)."""
        positions = []
        for sequence in dict.fromkeys(tags):  # once each, in order
            entry = self._entries.get(sequence)
            if entry is not None:
                message = entry.message
                partition = getattr(message, "partition", None)
                positions.append(
                    SourcePosition(
                        entry.account.name,
                        "" if partition is None else f"{partition.topic}/{partition.index}",
                        getattr(message, "identity", None),
                        getattr(message, "offset", None),
                    )
                )
        return tuple(positions)

    def output(self, value: Any) -> Output:
        """``value``, emitted now by the operators, as an output with its claims."""
        epoch = self.epoch
        self._outputs_by_epoch[epoch] = self._outputs_by_epoch.get(epoch, 0) + 1
        return Output(value, self.tag(), epoch)

    def output_done(self, output: Output) -> None:
        """Every sink confirmed (or deliberately dropped) ``output``."""
        for sequence in output.tags:
            self._release(sequence)
        epoch = output.epoch
        left = self._outputs_by_epoch[epoch] - 1
        if left:
            self._outputs_by_epoch[epoch] = left
        else:
            del self._outputs_by_epoch[epoch]
            if self._settled_event is not None:
                self._settled_event.set()

    def _let_go_revoked(self) -> None:
        for entry in list(self._entries.values()):
            partition = getattr(entry.message, "partition", None)
            if partition is not None and partition.revoked:
                self.let_go(partition)

    def let_go(self, partition: object) -> None:
        """A revoked partition's operators were dropped without emitting: settle its
        messages now (their source ignores acknowledgements of a revoked partition; the new
        owner reads them again), so that nothing waits for claims that will never end."""
        for sequence, entry in list(self._entries.items()):
            if getattr(entry.message, "partition", None) is partition:
                if entry.holds:
                    entry.account.held -= 1
                    self._held_messages -= 1
                self._settle(sequence, entry)

    def overlapping_windows(self, stage: str) -> None:
        if self.refuse_overlapping is not None:
            raise self.refuse_overlapping(stage)

    def _link(self, held: tuple[int, ...]) -> None:
        """Tell each source which of its messages made the output being emitted."""
        by_source: dict[int, tuple[Callable[[list[Any]], object], list[Any]]] = {}
        for sequence in held:
            entry = self._entries.get(sequence)
            if entry is not None and (lineage := entry.account.lineage) is not None:
                by_source.setdefault(id(entry.account), (lineage, []))[1].append(entry.message)
        for lineage, messages in by_source.values():
            if len(messages) > 1:
                lineage(messages)

    def _release(self, sequence: int) -> None:
        entry = self._entries.get(sequence)
        if entry is None:
            return  # let go with its partition (let_go)
        entry.claims -= 1
        if not entry.claims:
            self._settle(sequence, entry)

    def _settle(self, sequence: int, entry: _Entry) -> None:
        del self._entries[sequence]
        if self._acks_follow_checkpoints:
            self._awaiting[sequence] = entry  # acknowledged by the checkpoint that covers it
            if self._settled_event is not None:
                self._settled_event.set()
            return
        self._acknowledge(entry)

    # -- checkpoints (acks follow checkpoints) --------------------------------------------

    @property
    def barrier(self) -> int:
        """A checkpoint's barrier, taken now: every message admitted so far has a sequence
        below it (and is not being pushed: the pump pushes synchronously)."""
        return self._next

    async def unheld(self) -> None:
        """Wait until no operator holds a message (``map_async``'s calls in flight have
        emitted what they became): a checkpoint then stores state that every message
        admitted so far has reached."""
        while self._held_messages:
            self._settled_event = anyio.Event()
            try:
                await self._settled_event.wait()
            finally:
                self._settled_event = None

    def end_epoch(self) -> int:
        """A checkpoint's barrier: end the epoch outputs are emitted in; return it."""
        ended = self.epoch
        self.epoch += 1
        return ended

    def _epoch_open(self, epoch: int) -> bool:
        return any(emitted <= epoch for emitted in self._outputs_by_epoch)

    async def settled_before(self, barrier: int, epoch: int) -> None:
        """Wait until every message admitted before ``barrier`` is settled (all its outputs
        are confirmed by the sinks, and no operator that is not checkpointed holds it, such
        as ``map_async``) and every output of ``epoch`` and earlier is confirmed. Then
        everything the state as it was at the barrier has emitted has reached the sinks."""
        while (self._entries and next(iter(self._entries)) < barrier) or self._epoch_open(epoch):
            self._settled_event = anyio.Event()
            try:
                await self._settled_event.wait()
            finally:
                self._settled_event = None

    def covered_by(self, barrier: int) -> list[Any]:
        """Take the settled messages admitted before ``barrier`` (after
        :meth:`settled_before`: every message admitted before it); hand them to
        :meth:`acknowledge` once the checkpoint is stored."""
        covered = [sequence for sequence in self._awaiting if sequence < barrier]
        return [self._awaiting.pop(sequence) for sequence in covered]

    def uncover(self, entries: Iterable[Any]) -> None:
        """A checkpoint that took these entries (:meth:`covered_by`) was not stored: the
        next one covers them."""
        for entry in entries:
            self._awaiting[entry.sequence] = entry

    def acknowledge(self, entries: Iterable[Any]) -> None:
        """A stored checkpoint covers these entries (from :meth:`covered_by`): ack them."""
        for entry in entries:
            self._acknowledge(entry)

    @staticmethod
    def message_of(entry: Any) -> Any:
        """The source message of an entry from :meth:`covered_by`."""
        return entry.message

    def _acknowledge(self, entry: _Entry) -> None:
        account = entry.account
        if account.unsettled == account.limit and self._source_time is not None:
            self._source_time.resume()  # room for one more: the source may deliver again
        account.unsettled -= 1
        message = entry.message
        identity = getattr(message, "identity", None)
        if identity is not None:
            key = (id(account), identity, getattr(message, "partition", None))
            del self._by_identity[key]
            self._acking[id(message)] = key
            self._acking_keys.add(key)
        self._on_settled(message)
        for copy in entry.copies:
            self._on_settled(copy)

    def forget(self, messages: Iterable[Any]) -> None:
        """The acker is done with ``messages`` (acknowledged, or failed to): a later copy
        of one is a new delivery again."""
        for message in messages:
            key = self._acking.pop(id(message), None)
            if key is not None:
                self._acking_keys.discard(key)


# -- a flow's side: admitting source items, tagging outputs, acknowledging ---------------


async def tracked(
    delivery: Delivery, items: AsyncIterable[tuple[SourceAccount, Any]]
) -> AsyncIterator[Any]:
    """The merged source, as ``(account, item)`` pairs, admitting each acknowledgeable
    item to delivery tracking for the time the pump pushes it (until the pump asks for the
    next). A redelivery of a message still held is not pushed again."""
    iterator = aiter(items)
    try:
        async for account, item in iterator:
            if hasattr(item, "ack"):
                if not delivery.admit(item, account):
                    continue
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
    epoch: int = 0  # the checkpoint epoch it was emitted in (Delivery.epoch)
    unconfirmed: int = 0  # sinks that have not confirmed it yet

    def done_by_one_sink(self, delivery: Delivery) -> None:
        self.unconfirmed -= 1
        if not self.unconfirmed:
            delivery.output_done(self)


def tag_outputs(delivery: Delivery) -> Callable[[Observable[Any]], Observable[Output]]:
    """The last operator of a flow: each output takes its claims with it, and an error of
    the operators during a push leaves the message being pushed unsettled (one operator,
    not map + do_action: it runs per output)."""
    output = delivery.output

    def operator(source: Observable[Any]) -> Observable[Output]:
        def subscribe(
            observer: abc.ObserverBase[Output], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            def on_next(value: Any) -> None:
                try:
                    tagged = output(value)
                except Exception as error:
                    on_error(error)
                    return
                observer.on_next(tagged)

            def on_error(error: Exception) -> None:
                delivery.push_failed()
                observer.on_error(error)

            return source.subscribe(on_next, on_error, observer.on_completed, scheduler=scheduler)

        return Observable(subscribe)

    return operator
