"""Keyed windows over a source that shares its work: a Flow refuses to run them while other
workers read the same source.

A JetStream durable consumer or a Redis consumer group hands each message to any of its
workers. A keyed window (``key=``, a session) run by several workers over such a source sees
only part of each key's items on each worker, and every worker would emit partial windows as
if they were whole. Kafka avoids this with partitions (a key stays on one worker, see
:mod:`rxflow.partitions`); these systems cannot, so a Flow checks.

A source says it shares work with ``shares_work = True`` and counts the other workers
reading it with ``async def other_workers() -> int`` (best effort: see each connector). A
Flow with a keyed window stage over such a source asks when it starts, before it reads
anything, and then every :data:`CHECK_EVERY_S` seconds while it runs; as soon as another
worker is seen, the flow fails with :class:`~rxflow.errors.KeyedWindowsOnSharedWorkError`.
A flow without keyed windows, or whose sources do not share work, is not checked.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Final, Protocol, TypeGuard

import anyio
import anyio.abc

from rxflow.errors import KeyedWindowsOnSharedWorkError

__all__ = ["CHECK_EVERY_S", "SharedWorkSource", "SharedWorkWatch", "keyed_stages"]

logger = logging.getLogger("rxflow")

CHECK_EVERY_S: Final = 10.0
"""How often a running flow asks its work-sharing sources whether other workers appeared:
a worker started next to this one is refused within about this time (a check is one small
request to the broker)."""


class SharedWorkSource(Protocol):
    """A source whose broker shares its messages among workers (duck-typed: the Flow does
    not import the connectors)."""

    shares_work: bool

    async def other_workers(self) -> int: ...


def keyed_stages(operators: Iterable[object]) -> list[str]:
    """The names of the keyed window stages among a flow's operators (those with a true
    ``keyed`` attribute: :class:`rxflow.windows.ProcessingTimeWindows`,
    :class:`rxflow.windows.EventTimeWindows`). A window composed inside another operator
    (``reactivex.compose``, ``per_partition``) is not seen."""
    names = []
    for operator in operators:
        if getattr(operator, "keyed", False) is True:
            metrics = getattr(operator, "metrics", None)
            name = getattr(metrics, "name", None)
            names.append(name if isinstance(name, str) else type(operator).__name__)
    return names


def _shares_work(items: object) -> TypeGuard[SharedWorkSource]:
    return getattr(items, "shares_work", False) is True and callable(
        getattr(items, "other_workers", None)
    )


class SharedWorkWatch:
    """The check of one flow: its keyed window stages against its work-sharing sources.

    Example:
        >>> import anyio
        >>> from rxflow import session
        >>> class Group:  # a source shared with two other workers
        ...     shares_work = True
        ...     async def other_workers(self):
        ...         return 2
        >>> watch = SharedWorkWatch.of("clicks", [session(len, 5.0)], [("source 'in'", Group())])
        >>> try:
        ...     anyio.run(watch.check)
        ... except Exception as error:
        ...     print(type(error).__name__, error.other_workers, error.stage)
        KeyedWindowsOnSharedWorkError 2 session
    """

    def __init__(
        self, flow: str, stages: Sequence[str], sources: Sequence[tuple[str, SharedWorkSource]]
    ) -> None:
        self.flow = flow
        self.stages = list(stages)
        self.sources = list(sources)
        self.every = CHECK_EVERY_S

    @classmethod
    def of(
        cls, flow: str, operators: Iterable[object], sources: Iterable[tuple[str, object]]
    ) -> SharedWorkWatch | None:
        """The watch a flow needs (``sources``: each source's name and entered object), or
        None when it has no keyed window stage or no source that shares work."""
        stages = keyed_stages(operators)
        shared = [(name, items) for name, items in sources if _shares_work(items)]
        return cls(flow, stages, shared) if stages and shared else None

    async def start(self, tg: anyio.abc.TaskGroup, every: float | None = None) -> None:
        """Check now (raising if other workers read a source), then every ``every``
        seconds (default :data:`CHECK_EVERY_S`) in a task of ``tg``, which fails with the
        error when one appears."""
        if every is not None:
            self.every = every
        await self.check()
        tg.start_soon(self.watch, name=self._task)

    @property
    def _task(self) -> str:
        return f"rxflow flow {self.flow} shared-work check"

    async def watch(self) -> None:
        """Check every :attr:`every` seconds, until cancelled or until the check fails."""
        while True:
            await anyio.sleep(self.every)
            await self.check()

    async def check(self) -> None:
        """Raise :class:`~rxflow.errors.KeyedWindowsOnSharedWorkError` if another worker
        reads one of the sources. A source that cannot tell now (its broker did not answer)
        is logged at WARNING and asked again at the next check: its own reads fail soon
        enough if the broker is really gone."""
        for name, source in self.sources:
            try:
                others = await source.other_workers()
            except Exception as error:
                logger.warning(
                    "flow %s: could not count the other workers of %s, which keyed window "
                    "stage(s) %s need to run alone (%r); asking again in %g s",
                    self.flow,
                    name,
                    ", ".join(repr(stage) for stage in self.stages),
                    error,
                    self.every,
                )
                continue
            if others > 0:
                raise self._error(name, others)

    def _error(self, source: str, others: int) -> KeyedWindowsOnSharedWorkError:
        stage = self.stages[0]
        stages = ", ".join(repr(name) for name in self.stages)
        workers = "another worker reads" if others == 1 else f"{others} other workers read"
        return KeyedWindowsOnSharedWorkError(
            f"flow {self.flow!r}: keyed window stage(s) {stages} cannot run here: {source} "
            f"shares its messages among workers, and {workers} it now, so each worker would "
            "see only part of every key's items and emit partial windows as if they were "
            "whole. Run a single worker for keyed windows over this source; or read the "
            "events from Kafka, whose partitions keep a key on one worker (re-key them into "
            "a Kafka topic with rxflow.connectors.kafka.kafka_repartition, and window that "
            "topic). Tumbling and sliding windows without key= (one window for all keys) "
            "may run on any number of workers",
            source=source,
            other_workers=others,
            stage=stage,
        )
