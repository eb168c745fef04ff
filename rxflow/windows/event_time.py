"""Windows in event time: assigned by each item's own timestamp, closed by a watermark.

The watermark is the largest timestamp seen minus ``out_of_orderness``: the promise that
nothing older is still expected. A window ``[start, end)`` is emitted once the watermark
reaches ``end``. When the source is quiet for ``idle_timeout`` (processing time), event
time is taken to pass as fast as processing time, so windows still close. Inside a pipe,
"quiet" counts only time in which the source was free to deliver: not while the pump waits
for a slow consumer, nor while a flow's source is at its in-flight limit
(:mod:`rxflow._source_time`), since the data held back then is not late.

An item is *late* for a window that was already emitted. ``late=`` says what happens:

* ``"drop"``: it is left out of that window, and counted (``late_dropped``);
* ``"side"``: it is pushed to the operator's ``late_items`` observable, once;
* ``"update"``: if the window closed less than ``allowed_lateness`` ago (in event time),
  the window is emitted again with the item, marked ``update=True``; later than that, the
  item is dropped and counted.

Sessions of one key merge when an item bridges them, as in Beam and Flink.

On completion (and so on a pipe's graceful stop) every open window is emitted, oldest end
first. On error the error is passed on at once and open windows are discarded: an
incomplete window is never emitted as if it were whole.

In a checkpointed :class:`rxflow.Flow` the operator keeps its state in the flow's state
table named after the stage (``name=``; two window stages of one flow need distinct names):
every open window with its items (a session with its first and last timestamps), the
windows kept for updates (``late="update"``), the watermark and the largest timestamp seen.
A flow restored from a checkpoint rebuilds exactly those, so that with the messages after
the checkpoint delivered again the operator emits what an uninterrupted run would have
emitted after it: windows emitted before the checkpoint are not emitted again, and none is
emitted incomplete. Its items are then not held unacknowledged until their windows close:
the checkpoint covers them. Only ``idle_timeout`` counts from the restart, since processing
time does not carry over.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, Literal, TypeVar

import attrs
import reactivex
from reactivex import Observable, abc
from reactivex.disposable import CompositeDisposable, Disposable
from reactivex.scheduler import TimeoutScheduler
from reactivex.subject import Subject

from rxflow._typevars import TimedT
from rxflow.windows._event_run import EventTimeRun
from rxflow.windows._stage import WindowStage
from rxflow.windows._window import Window

__all__ = ["LATE_POLICIES", "Aligned", "EventTimeWindows", "LatePolicy"]

LatePolicy = Literal["drop", "side", "update"]
"""What an event-time window operator does with an item whose window was already emitted:
``"drop"`` it (counted), push it to the ``late_items`` ``"side"`` output, or ``"update"``
the window (emitted again with ``update=True``) within ``allowed_lateness``."""
LATE_POLICIES: tuple[LatePolicy, ...] = ("drop", "side", "update")

T = TypeVar("T")


@attrs.frozen
class Aligned:
    """Tumbling (``every == span``) or sliding windows aligned on multiples of ``every``."""

    span: float
    every: float

    @property
    def sliding(self) -> bool:
        return self.every != self.span

    def windows_for(self, t: float) -> range:
        """Indexes ``k`` of the windows that hold time ``t``: window ``k`` starts at
        ``k * every`` and holds ``k * every <= t < k * every + span``."""
        every = self.every
        return range(int((t - self.span) // every) + 1, int(t // every) + 1)


class EventTimeWindows(WindowStage[EventTimeRun], Generic[TimedT]):
    """The operator that :func:`rxflow.tumbling`, :func:`rxflow.sliding` and
    :func:`rxflow.session` return when given ``timestamp=``.

    Attributes:
        late_items: an observable of the items that were late for a window (``late="side"``).
        late_dropped: how many (item, window) placements were dropped as late.
        metrics: a :class:`rxflow.flow.metrics.StageMetrics`; its ``backlog`` is the number of
            items held in open windows (the operator's state size).
    """

    def __init__(
        self,
        *,
        timestamp: Callable[[TimedT], float],
        key: Callable[[TimedT], Any] | None,
        aligned: Aligned | None,
        gap: float | None,
        max_duration: float | None,
        out_of_orderness: float,
        allowed_lateness: float,
        idle_timeout: float | None,
        late: LatePolicy,
        scheduler: abc.SchedulerBase | None,
        name: str,
    ) -> None:
        super().__init__(name)
        self.timestamp = timestamp
        self.key = key
        self.aligned = aligned
        self.gap = gap
        self.max_duration = max_duration
        self.out_of_orderness = out_of_orderness
        self.allowed_lateness = allowed_lateness if late == "update" else 0.0
        self.idle_timeout = idle_timeout
        self.late = late
        self.scheduler = scheduler
        self.late_items: Subject[TimedT] = Subject()
        self.late_dropped = 0

    @property
    def keyed(self) -> bool:
        """Whether windows are per key (``key=``, and every session): such windows are
        only right when one worker sees all of a key's items (a :class:`rxflow.Flow` over
        a source that shares work among workers checks it)."""
        return self.key is not None

    def __call__(self, source: Observable[T]) -> Observable[Window[T]]:
        def subscribe(
            observer: abc.ObserverBase[Window[T]], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            chosen = self.scheduler or scheduler or TimeoutScheduler.singleton()
            run = EventTimeRun(self, observer, chosen, self.durable_table())
            self._runs.add(run)
            # Upstream gets the subscription's own scheduler: the fallback is only this
            # operator's clock, and would make a synchronous source push from timer threads.
            upstream = source.subscribe(
                run.on_next, run.on_error, run.on_completed, scheduler=scheduler
            )
            return CompositeDisposable(upstream, run.idle_timer, Disposable(run.dispose))

        return reactivex.create(subscribe)
