"""Ack holds: how a stateful operator tells whoever acknowledges source messages that it
keeps an item (an open window, a ``map_async`` call in flight) and when it let it go.

A :class:`rxflow.Flow` acknowledges a source message only once nothing derived from it is
unconfirmed; an item kept across pushes is such a thing. So operators that keep items
call, through :func:`current_holds`:

* :meth:`AckHolds.hold` when an item arrives and they keep it: a :data:`Hold` for it
  (or :meth:`AckHolds.keep`, the item and its hold as one entry, for an operator that
  passes kept items down an Rx chain: :meth:`AckHolds.unpack` takes them apart again);
* :meth:`AckHolds.emitting` around the ``on_next`` of what the kept items became (each
  output emitted inside carries their claims; then the operator's holds are released);
* :meth:`AckHolds.attached` and :meth:`AckHolds.release` when one item is in several
  outputs (sliding windows) and the operator releases its hold after the last.

Outside a flow :func:`current_holds` is :data:`NO_HOLDS`, which holds nothing, so an
operator calls the same methods either way and never asks whether it runs in a flow.
The Flow's delivery tracking (``rxflow.flow._delivery.Delivery``) implements the protocol
and makes itself current while its operators are subscribed. The core defines the
protocol so that it never imports the flow: imports run one way.

Example:
    >>> from rxflow._holds import current_holds
    >>> holds = current_holds()  # outside a flow
    >>> hold = holds.hold()
    >>> with holds.emitting([hold]):
    ...     print("emitted", hold)
    emitted None
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar
from typing import Any, Protocol

__all__ = ["NO_HOLDS", "AckHolds", "Hold", "NoHolds", "current_holds", "holds_activated"]

Hold = int | None
"""An operator's claim on the source message of one item it keeps, as :meth:`AckHolds.hold`
returned it (``None``: nothing is held, such as outside a flow or for an item that cannot
be acknowledged). Opaque to the operator: it keeps it with the item and hands it back."""


class AckHolds(Protocol):
    """What a stateful operator reports about the items it keeps (see the module docs)."""

    def hold(self) -> Hold:
        """Claim the item being pushed now, which the operator keeps."""
        ...

    def keep(self, item: Any) -> Any:
        """``item`` and :meth:`hold` as one entry, to pass down an Rx chain. Outside a
        flow the entry is the item itself: nothing is allocated per item."""
        ...

    def item_of(self, entry: Any) -> Any:
        """The item of an entry that :meth:`keep` made."""
        ...

    def unpack(self, entries: Sequence[Any]) -> tuple[tuple[Any, ...], list[Hold]]:
        """The items and the holds of entries that :meth:`keep` made."""
        ...

    def emitting(self, holds: Iterable[Hold]) -> AbstractContextManager[None]:
        """Around the ``on_next`` of what the items of ``holds`` became: outputs emitted
        inside claim their messages; on leaving, the operator's holds are released."""
        ...

    def attached(self, holds: Iterable[Hold]) -> AbstractContextManager[None]:
        """Outputs emitted inside claim the messages of ``holds`` too; the operator keeps
        its holds, to :meth:`release` after the last output that contains them."""
        ...

    def release(self, holds: Iterable[Hold]) -> None:
        """The operator is done with the items it held under ``holds``."""
        ...

    def let_go(self, partition: object) -> None:
        """Operators dropped, without emitting, everything they kept of ``partition`` (a
        revoked :class:`~rxflow.partitions.Partition`): its items need nothing more here;
        the partition's new owner reads them again."""
        ...

    def overlapping_windows(self, stage: str) -> None:
        """Operator ``stage``, which keeps items in overlapping event-time windows by their
        holds, is being subscribed: raise if the flow could not rebuild such windows after a
        crash. An item's message is acknowledged once every window holding it was written,
        so messages delivered again would rebuild a window some of whose items were
        acknowledged with the window before it, and it would be emitted as if whole."""
        ...


class NoHolds:
    """The holds outside a flow: nothing is tracked, every method does nothing."""

    __slots__ = ()

    def hold(self) -> Hold:
        return None

    def keep(self, item: Any) -> Any:
        return item

    def item_of(self, entry: Any) -> Any:
        return entry

    def unpack(self, entries: Sequence[Any]) -> tuple[tuple[Any, ...], list[Hold]]:
        return tuple(entries), []

    def emitting(self, holds: Iterable[Hold]) -> AbstractContextManager[None]:
        return _NOTHING

    def attached(self, holds: Iterable[Hold]) -> AbstractContextManager[None]:
        return _NOTHING

    def release(self, holds: Iterable[Hold]) -> None:
        return None

    def let_go(self, partition: object) -> None:
        return None

    def overlapping_windows(self, stage: str) -> None:
        return None  # outside a flow nothing is acknowledged, and nothing delivered again


class _Nothing:
    """A reusable context manager that does nothing (``contextlib.nullcontext`` is made
    anew for each use; this one is shared, so an emission outside a flow allocates none)."""

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc_info: object) -> None:
        return None


_NOTHING = _Nothing()

NO_HOLDS: AckHolds = NoHolds()
"""The holds outside a flow."""

_current: ContextVar[AckHolds] = ContextVar("rxflow_ack_holds", default=NO_HOLDS)


def current_holds() -> AckHolds:
    """The holds of the flow this code runs in, or :data:`NO_HOLDS` outside one. Operators
    read it when they are subscribed; tasks a flow starts inherit it."""
    return _current.get()


@contextmanager
def holds_activated(holds: AckHolds) -> Iterator[AckHolds]:
    """Make ``holds`` what :func:`current_holds` returns in this context (a flow does this
    around subscribing its operators)."""
    token = _current.set(holds)
    try:
        yield holds
    finally:
        _current.reset(token)
