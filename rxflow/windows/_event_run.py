"""One subscription of an event-time window operator (:mod:`rxflow.windows.event_time`
says what it does): the open windows, the watermark, the late policies and, in a
checkpointed flow, the durable state (:mod:`rxflow.windows._durable`)."""

from __future__ import annotations

import heapq
import itertools
import math
import numbers
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from reactivex import abc
from reactivex.disposable import SerialDisposable

from rxflow._holds import NO_HOLDS, NoHolds, current_holds
from rxflow._source_time import current_source_time
from rxflow._state import StateTable
from rxflow.scheduler import AnyioScheduler
from rxflow.windows._durable import PROGRESS, ChangeMarks, ChunkKey, Progress, StoredLog
from rxflow.windows._open_window import OpenWindow  # also named here for older checkpoints
from rxflow.windows._window import Window
from rxflow.windows.processing import clock_of

if TYPE_CHECKING:
    from rxflow.windows.event_time import EventTimeWindows

__all__ = ["EventTimeRun", "OpenWindow"]


class EventTimeRun:
    """One subscription of an event-time window operator: its open windows, the watermark,
    and what closes windows."""

    def __init__(
        self,
        spec: EventTimeWindows[Any],
        observer: abc.ObserverBase[Window],
        scheduler: abc.SchedulerBase,
        table: StateTable[Any, Any] | None,
    ) -> None:
        self.spec = spec
        self.observer = observer
        self.scheduler = scheduler
        # Aligned windows by key, then by index (an int: cheaper to hash than a start time).
        self.windows: dict[Any, dict[int, OpenWindow]] = {}
        self.sessions: dict[Any, list[OpenWindow]] = {}  # sessions by key
        self.closing: list[tuple[float, int, OpenWindow]] = []  # (end, order, window) heap
        self.forgetting: list[tuple[float, int, OpenWindow]] = []  # closed, kept for updates
        self.order = itertools.count()
        self.max_seen = -math.inf
        self.watermark = -math.inf
        self.last_arrival = 0.0
        self.held = 0
        self.ended = False
        self.idle_timer = SerialDisposable()
        self.now = clock_of(scheduler)
        # Idleness is measured on the pipe's source time, which stands still while the
        # source is held back (a slow consumer, a broker at its in-flight limit): waiting
        # data is not late data. It is the loop's clock, so only for the pipe's scheduler.
        source_time = current_source_time()
        self.quiet_clock = (
            source_time.now
            if source_time is not None and isinstance(scheduler, AnyioScheduler)
            else self.now
        )
        # In a durable scope (a checkpointed flow) the windows are in `table`, marked changed
        # as they change, and no holds are taken: the checkpoints cover the items.
        self.table = table
        self.holds = current_holds() if table is None else NO_HOLDS
        if table is None and spec.aligned is not None and spec.aligned.sliding:
            self.holds.overlapping_windows(spec.metrics.name)  # refused where unrecoverable
        # Whether an item placed in a window needs an entry in its `holds`: a claim on its
        # source message (in a flow) or a change mark (in a durable scope); outside both,
        # nothing is appended, and an emission needs no holds context either.
        self.marks_items = table is not None or type(self.holds) is not NoHolds
        # Read once: on_next runs per item, and attribute chains cost there.
        aligned = spec.aligned
        self.tumbling_every = aligned.every if aligned is not None and not aligned.sliding else None
        self.session_gap = spec.gap if spec.gap is not None else 0.0
        self.sessions_unbounded = spec.max_duration is None  # no session splits for length
        if table is not None:
            self._restore(table)

    # -- items ---------------------------------------------------------------------------

    def on_next(self, item: Any) -> None:
        # The hot path of every event-time window: kept to plain local operations.
        if self.ended:
            return
        spec = self.spec
        t = spec.timestamp(item)
        kind = type(t)
        if (kind is not float and kind is not int) or t != t:  # t != t: NaN
            self._check_timestamp(item, t)
            if self.ended:
                return
        key = spec.key(item) if spec.key is not None else None
        spec.metrics.received += 1
        aligned = spec.aligned
        every = self.tumbling_every
        if every is not None:  # tumbling: exactly one window, no range to build
            by_index = self.windows.get(key)
            if by_index is None:
                by_index = self.windows[key] = {}
            index = int(t // every)
            window = by_index.get(index)
            if window is not None and not window.emitted:
                window.items.append(item)
                self.held += 1
                if self.marks_items:
                    window.holds.append(self.holds.hold())
                missed_a_window = False
            else:
                missed_a_window = not self._place(item, key, index, window)
        elif aligned is None:
            sessions = self.sessions.get(key)
            only = sessions[0] if sessions is not None and len(sessions) == 1 else None
            gap = self.session_gap
            if (
                only is not None
                and not only.emitted
                and t < only.last + gap
                and only.first < t + gap
                and self.sessions_unbounded
            ):  # the usual case, inlined as tumbling's: the key's one open session grows
                if t > only.last:
                    only.last = t
                    only.end = t + gap
                elif t < only.first:
                    only.first = only.start = t
                only.items.append(item)
                self.held += 1
                if self.marks_items:
                    only.holds.append(self.holds.hold())
                missed_a_window = False
            else:
                missed_a_window = not self._place_in_session(item, key, t)
        else:
            missed_a_window = False
            by_index = self.windows.get(key)
            if by_index is None:
                by_index = self.windows[key] = {}
            for index in aligned.windows_for(t):  # as for tumbling, per window (inlined:
                window = by_index.get(index)  # a method call per item costs ~10%)
                if window is not None and not window.emitted:
                    window.items.append(item)
                    self.held += 1
                    if self.marks_items:
                        window.holds.append(self.holds.hold())
                elif not self._place(item, key, index, window):
                    missed_a_window = True
        if missed_a_window and spec.late == "side":
            spec.late_items.on_next(item)
        if t > self.max_seen:
            self.max_seen = t
            watermark = t - spec.out_of_orderness
            closing = self.closing
            if (closing and closing[0][0] <= watermark) or self.forgetting:
                self._advance(watermark)
            elif watermark > self.watermark:
                self.watermark = watermark  # nothing to close or forget yet
        if spec.idle_timeout is not None:
            self.last_arrival = self.quiet_clock()
            if self.idle_timer.disposable is None:
                self._arm_idle_timer(spec.idle_timeout)

    def _check_timestamp(self, item: Any, t: Any) -> None:
        """Refuse a timestamp that is not a number (ints and floats pass the fast check;
        other real numbers, such as Decimal or numpy floats, are accepted here)."""
        if isinstance(t, bool) or not isinstance(t, numbers.Real) or math.isnan(t):
            self.on_error(
                TypeError(
                    f"the timestamp function returned {t!r} for item {item!r}; it must "
                    "return a number (seconds, in the event's own time)"
                )
            )

    def _place(self, item: Any, key: Any, index: int, window: OpenWindow | None) -> bool:
        """Put ``item`` in aligned window ``index`` of ``key`` (``window``, if it exists,
        was emitted already); False if the item was late for it."""
        aligned = self.spec.aligned
        assert aligned is not None
        start = index * aligned.every
        end = start + aligned.span
        if window is None:
            if end <= self.watermark:
                self._late_without_window(item, key, start, end)
                return False
            window = OpenWindow(key, start, end, [], next(self.order), index=index)
            self.windows[key][index] = window
            heapq.heappush(self.closing, (end, window.order, window))
            self._track(window)
            self._add(window, item)
            return True
        self._late_for(window, item)
        return False

    def _place_in_session(self, item: Any, key: Any, t: float) -> bool:
        spec = self.spec
        gap = spec.gap
        assert gap is not None
        sessions = self.sessions.get(key)
        if sessions is None:  # the key's first session (or first since its last closed)
            if t + gap <= self.watermark:
                self._late_without_window(item, key, t, t + gap)
                return False
            self._start_session(item, key, t)
            return True
        # (The usual case, the key's one open session in reach, grew it in on_next.)
        touching = [s for s in sessions if t < s.last + gap and s.first < t + gap]
        if len(touching) == 1 and not touching[0].emitted:
            return self._extend(touching[0], item, t)
        open_ones = [s for s in touching if not s.emitted]
        closed_ones = [s for s in touching if s.emitted]
        if not open_ones and t + gap <= self.watermark:
            if closed_ones:
                self._late_for(closed_ones[0], item, t)
            else:
                self._late_without_window(item, key, t, t + gap)
            return False
        first = min([t, *(s.first for s in open_ones)])
        last = max([t, *(s.last for s in open_ones)])
        if spec.max_duration is not None and last + gap - first > spec.max_duration:
            self._start_session(item, key, t)  # would run too long: a session of its own
            return True
        session = self._start_session(item, key, t, merging=open_ones)
        session.first, session.last = first, last
        session.start, session.end = first, last + gap
        return True

    def _start_session(
        self, item: Any, key: Any, t: float, merging: Sequence[OpenWindow] = ()
    ) -> OpenWindow:
        """A new session of ``key`` holding ``item`` (after the items of the sessions it
        merges)."""
        gap = self.spec.gap
        assert gap is not None
        sessions = self.sessions.get(key)
        if sessions is None:
            sessions = self.sessions[key] = []
        session = OpenWindow(key, t, t + gap, [], next(self.order), first=t, last=t)
        self._track(session)
        if merging:
            for merged in sorted(merging, key=lambda s: s.order):
                session.items.extend(merged.items)
                session.holds.extend(merged.holds)
                sessions.remove(merged)
                self._untrack(merged)
        self._add(session, item)
        sessions.append(session)
        heapq.heappush(self.closing, (session.end, session.order, session))
        return session

    def _extend(self, session: OpenWindow, item: Any, t: float) -> bool:
        """The common case: ``item`` falls in one open session, which grows in place. Its
        entry in the closing heap keeps the old end; :meth:`_advance` pushes it again."""
        gap = self.spec.gap
        assert gap is not None
        first, last = min(session.first, t), max(session.last, t)
        max_duration = self.spec.max_duration
        if max_duration is not None and last + gap - first > max_duration:
            self._start_session(item, session.key, t)
            return True
        session.first, session.last = first, last
        session.start, session.end = first, last + gap
        self._add(session, item)
        return True

    def _add(self, window: OpenWindow, item: Any) -> None:
        window.items.append(item)
        self.held += 1
        if self.marks_items:
            window.holds.append(self.holds.hold())

    # -- durable state (a checkpointed flow; see the module docs) -------------------------

    def _track(self, window: OpenWindow) -> None:
        """A new window: in a durable scope, keep its header in the table (its key there is
        its order, unique in the run) and its items in a log under the same key."""
        table = self.table
        if table is not None:
            window.holds = ChangeMarks(
                table, window.order, window.items, bounds_move=self.spec.aligned is None
            )
            table.put(window.order, window)

    def _untrack(self, window: OpenWindow) -> None:
        if self.table is not None:
            self.table.delete(window.order)
            assert isinstance(window.holds, ChangeMarks)
            window.holds.delete()

    def _progressed(self) -> None:
        if self.table is not None:
            self.table.touch(PROGRESS)

    def _restore(self, table: StateTable[Any, Any]) -> None:
        """Rebuild the windows and the progress a checkpoint stored in ``table`` (none if
        the flow starts afresh), as they were at that checkpoint."""
        aligned = self.spec.aligned is not None
        restored: list[OpenWindow] = []
        for slot, value in table.scan():
            if slot == PROGRESS:
                self.max_seen, self.watermark = Progress.restored(value)
            elif not isinstance(slot, ChunkKey):
                restored.append(value)
        logs = StoredLog.all_in(table)
        # By order: sessions of a key are listed in the order they were made; an order is
        # never reused, so the run's next window comes after every restored one.
        restored.sort(key=lambda window: window.order)
        for window in restored:
            log = logs.get(window.order)
            window.items = [] if log is None else log.items
            window.holds = ChangeMarks(
                table, window.order, window.items, log, bounds_move=not aligned
            )
            if aligned:
                self.windows.setdefault(window.key, {})[window.index] = window
            else:
                self.sessions.setdefault(window.key, []).append(window)
            if window.emitted:  # kept for updates
                heapq.heappush(self.forgetting, (window.kept_from_end, window.order, window))
            else:
                heapq.heappush(self.closing, (window.end, window.order, window))
            self.held += len(window.items)
        self.order = itertools.count(restored[-1].order + 1 if restored else 0)
        table.put(PROGRESS, Progress(self))
        timeout = self.spec.idle_timeout
        if timeout is not None and (self.closing or self.forgetting):
            # Processing time does not carry over a restart: quiet is counted from now.
            self.last_arrival = self.quiet_clock()
            self._arm_idle_timer(timeout)

    # -- late items ----------------------------------------------------------------------

    def _late_for(self, window: OpenWindow, item: Any, t: float | None = None) -> None:
        """``item`` belongs to ``window``, which was emitted already."""
        self._progressed()  # the item may move the watermark, whatever becomes of it
        if self.spec.late == "update" and window.end + self.spec.allowed_lateness > self.watermark:
            self._add(window, item)
            if t is not None:  # a session: it may grow at either end
                window.first, window.last = min(window.first, t), max(window.last, t)
                window.start, window.end = window.first, window.last + (self.spec.gap or 0.0)
            self._emit(window, update=True)
        elif self.spec.late != "side":  # a side output got the item already
            self._count_late_drop()

    def _late_without_window(self, item: Any, key: Any, start: float, end: float) -> None:
        """``item`` belongs to a window that closed and is forgotten (or never held items)."""
        self._progressed()  # the item may move the watermark, whatever becomes of it
        if self.spec.late == "update" and end + self.spec.allowed_lateness > self.watermark:
            window = OpenWindow(key, start, end, [], next(self.order), first=start, last=start)
            self._track(window)
            self._add(window, item)
            self._keep_for_updates(window)
            aligned = self.spec.aligned
            if aligned is not None:
                window.index = round(start / aligned.every)
                self.windows.setdefault(key, {})[window.index] = window
            else:
                self.sessions.setdefault(key, []).append(window)
            self._emit(window, update=True)
        elif self.spec.late != "side":
            self._count_late_drop()

    def _count_late_drop(self) -> None:
        self.spec.late_dropped += 1
        self.spec.metrics.dropped += 1

    # -- the watermark -------------------------------------------------------------------

    def _advance(self, watermark: float) -> None:
        if watermark <= self.watermark:
            return
        self.watermark = watermark
        self._progressed()
        closing = self.closing
        while closing and closing[0][0] <= watermark:
            end, order, window = heapq.heappop(closing)
            if window.emitted or not self._is_current(window):
                continue  # merged into another session since this entry was pushed
            if window.end > end:  # a session that grew: it closes later
                heapq.heappush(closing, (window.end, order, window))
                continue
            self._emit(window, update=False)
            self._keep_for_updates(window)
        forgetting = self.forgetting
        lateness = self.spec.allowed_lateness
        while forgetting and forgetting[0][0] + lateness <= watermark:
            _, _, window = heapq.heappop(forgetting)
            self._forget(window)

    def _is_current(self, window: OpenWindow) -> bool:
        if self.spec.aligned is not None:
            by_index = self.windows.get(window.key)
            return by_index is not None and by_index.get(window.index) is window
        return window in self.sessions.get(window.key, ())

    def _keep_for_updates(self, window: OpenWindow) -> None:
        window.emitted = True
        if self.spec.late == "update" and self.spec.allowed_lateness > 0:
            window.kept_from_end = window.end
            heapq.heappush(self.forgetting, (window.end, window.order, window))
            if self.table is not None:
                self.table.touch(window.order)
        else:
            self._forget(window)

    def _forget(self, window: OpenWindow) -> None:
        self.held -= len(window.items)
        window.items = []
        self._untrack(window)
        if self.spec.aligned is not None:
            by_index = self.windows.get(window.key)
            if by_index is not None and by_index.get(window.index) is window:
                del by_index[window.index]
                if not by_index:  # an idle key costs nothing
                    del self.windows[window.key]
        else:
            sessions = self.sessions.get(window.key)
            if sessions is not None and window in sessions:
                sessions.remove(window)
                if not sessions:
                    del self.sessions[window.key]

    def _emit(self, window: OpenWindow, *, update: bool) -> None:
        self.spec.metrics.emitted += 1
        emitted = Window(window.key, window.start, window.end, tuple(window.items), update=update)
        # The window's output now carries the claims on its items' source messages (in a
        # durable scope there are none, and the window keeps its ChangeMarks).
        if not self.marks_items:
            self.observer.on_next(emitted)
            return
        held = window.holds
        if self.table is None:
            window.holds = []
        with self.holds.emitting(held):
            self.observer.on_next(emitted)

    # -- idleness ------------------------------------------------------------------------

    def _arm_idle_timer(self, delay: float) -> None:
        self.idle_timer.disposable = self.scheduler.schedule_relative(delay, self._on_idle_timer)

    def _on_idle_timer(self, scheduler: abc.SchedulerBase, state: Any = None) -> None:
        timeout = self.spec.idle_timeout
        assert timeout is not None
        self.idle_timer.disposable = None
        if self.ended:
            return
        quiet_for = self.quiet_clock() - self.last_arrival
        if quiet_for < timeout:
            self._arm_idle_timer(timeout - quiet_for)
            return
        # Quiet long enough: let event time pass as fast as processing time since the
        # last item, and wake again when that closes the next window.
        self._advance(self.max_seen - self.spec.out_of_orderness + quiet_for)
        if self.closing:
            self._arm_idle_timer(max(self.closing[0][0] - self.watermark, 0.0))

    # -- the end -------------------------------------------------------------------------

    def on_completed(self) -> None:
        if self.ended:
            return
        # Every open window, oldest end first; a session may have several heap entries.
        pending = {id(entry[2]): entry[2] for entry in self.closing}.values()
        for window in sorted(pending, key=lambda window: (window.end, window.order)):
            if not window.emitted and self._is_current(window):
                self._emit(window, update=False)
                window.emitted = True
        if self.table is not None:  # every window is emitted: none is to be restored
            for slot in [slot for slot, _ in self.table.scan() if slot != PROGRESS]:  # logs too
                self.table.delete(slot)
        self._finish()
        if self.spec.late == "side":
            self.spec.late_items.on_completed()
        self.observer.on_completed()

    def on_error(self, error: Exception) -> None:
        if self.ended:
            return
        self._finish()
        self.observer.on_error(error)

    def _finish(self) -> None:
        self.ended = True
        self.idle_timer.dispose()
        self.windows.clear()
        self.sessions.clear()
        self.closing.clear()
        self.forgetting.clear()
        self.held = 0
        self.spec._runs.discard(self)

    def dispose(self) -> None:
        if not self.ended:
            self._finish()
