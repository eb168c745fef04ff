"""What a stage does when processing one item raises: fail, skip, dead-letter or retry.

A strategy is given to a stage that calls user code per item (``rxflow.map_async``, a
:class:`rxflow.Flow` sink) as ``on_error=``. Whatever it decides, the item is never lost
silently: a failure ends the pipeline with the item named in the exception's notes, a skip
is counted and logged, a dead letter carries the item and the exception to a sink of yours.

Example:
    >>> from rxflow.strategies import DeadLetter, Retry, Skip
    >>> policy = Retry(attempts=5, base=0.1, cap=2.0, on=(ConnectionError,), then=Skip())
    >>> [round(policy.delay(n, jitter=0.0), 2) for n in range(1, 5)]
    [0.1, 0.2, 0.4, 0.8]
"""

from __future__ import annotations

import inspect
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias

import anyio
import anyio.abc
import attrs

from rxflow._checks import check_count, check_fraction, check_seconds
from rxflow._stage_metrics import StageMetrics
from rxflow.errors import RecordsRefusedError

__all__ = ["DeadLetter", "ErrorStrategy", "FailFast", "Failure", "Retry", "SinkFunction", "Skip"]

logger = logging.getLogger("rxflow")


@attrs.frozen
class Failure:
    """An item whose processing failed, as a dead-letter sink receives it.

    Attributes:
        item: the input the stage was processing.
        error: the exception of the last attempt.
        stage: the stage's name.
        attempts: how many times the stage tried (more than 1 after retries).
    """

    item: Any
    error: BaseException
    stage: str
    attempts: int = 1


@attrs.frozen
class FailFast:
    """End the pipeline with the exception (the default). Its notes name the item."""


@attrs.frozen
class Skip:
    """Leave the item out; count it in the stage's ``skipped`` and log a warning."""


SinkFunction: TypeAlias = Callable[[Failure], Awaitable[object] | object]
"""A dead-letter function: called (sync or async) with each :class:`Failure`."""


@attrs.frozen
class DeadLetter:
    """Hand a :class:`Failure` to ``sink`` and go on with the next item.

    ``sink`` is a function (sync or async) or an anyio ``ObjectSendStream`` of failures. If
    the sink itself fails, the pipeline fails: dead letters are never dropped.
    """

    sink: SinkFunction | anyio.abc.ObjectSendStream[Failure]

    def __attrs_post_init__(self) -> None:
        if not (callable(self.sink) or isinstance(self.sink, anyio.abc.ObjectSendStream)):
            raise TypeError(
                "DeadLetter(): sink must be a function (sync or async) taking a Failure, or "
                "an anyio ObjectSendStream of failures (for a connector's sink, pass its "
                f"send method: DeadLetter(sink.send)), got {self.sink!r}"
            )


@attrs.frozen
class Retry:
    """Try again after an exponential backoff with full jitter, then apply ``then``.

    Attempt ``n`` (counting from 1) is followed by a wait of ``min(cap, base * 2**(n-1))``
    seconds scaled by a random factor in ``[1 - jitter, 1]``, on the event loop's clock (so
    trio's ``MockClock`` makes retries instant in tests).

    Attributes:
        attempts: the most attempts in all, the first included (at least 1).
        base: the first wait, in seconds.
        cap: the longest wait.
        jitter: how much of each wait is random, 0 (none) to 1 (full jitter).
        on: the exception types worth retrying; others go to ``then`` at once.
        then: what to do when attempts run out (FailFast, Skip or DeadLetter).
    """

    attempts: int = 3
    base: float = 0.1
    cap: float = 10.0
    jitter: float = 1.0
    on: tuple[type[BaseException], ...] = (Exception,)
    then: FailFast | Skip | DeadLetter = FailFast()

    def __attrs_post_init__(self) -> None:
        where = "Retry()"
        check_count(where, "attempts", self.attempts)
        base = check_seconds(where, "base", self.base, allow_zero=True)
        cap = check_seconds(where, "cap", self.cap, allow_zero=True)
        if cap < base:
            raise ValueError(f"Retry(base={self.base}, cap={self.cap}): need base <= cap (seconds)")
        check_fraction(where, "jitter", self.jitter)
        if not (
            isinstance(self.on, tuple)
            and self.on
            and all(isinstance(kind, type) and issubclass(kind, BaseException) for kind in self.on)
        ):
            raise TypeError(
                "Retry(): on must be a non-empty tuple of exception classes, such as "
                f"(ConnectionError,) or (ConnectionError, TimeoutError), got {self.on!r}"
            )
        if isinstance(self.then, Retry):
            raise TypeError("Retry(then=Retry(...)): say it once, with more attempts")
        if not isinstance(self.then, FailFast | Skip | DeadLetter):
            raise TypeError(
                "Retry(): then must be FailFast(), Skip() or DeadLetter(sink), what to do when "
                f"the attempts run out, got {self.then!r}"
            )

    def delay(self, attempt: int, jitter: float | None = None) -> float:
        """The wait after failed attempt ``attempt``; ``jitter`` is the random draw in [0, 1]."""
        draw = random.random() if jitter is None else jitter
        backoff: float = min(self.cap, self.base * 2.0 ** (attempt - 1))
        return backoff * (1.0 - self.jitter * draw)


ErrorStrategy: TypeAlias = FailFast | Skip | DeadLetter | Retry
"""What ``on_error=`` accepts."""

FAIL_FAST = FailFast()


def check_strategy(strategy: object, where: str) -> ErrorStrategy:
    """Refuse anything that is not a strategy, saying what is accepted."""
    if not isinstance(strategy, FailFast | Skip | DeadLetter | Retry):
        raise TypeError(
            f"{where}: on_error must be FailFast(), Skip(), DeadLetter(sink) or Retry(...), "
            f"got {strategy!r}"
        )
    return strategy


class _Skipped:
    """The result of a call whose failure the strategy handled: emit nothing for the item."""

    def __repr__(self) -> str:
        return "SKIPPED"


SKIPPED: Any = _Skipped()


async def call_with_strategy(
    function: Callable[[Any], Any],
    item: Any,
    strategy: ErrorStrategy,
    metrics: StageMetrics,
) -> Any:
    """Call ``function(item)`` (awaiting it if it is async) under ``strategy``.

    Returns the result, or :data:`SKIPPED` when the item failed and was skipped or
    dead-lettered. Raises the exception, with a note naming the stage and the item, when
    the strategy says to fail.

    A batch that failed in part (:class:`~rxflow.errors.RecordsRefusedError`: the system
    stored some records and refused others) is narrowed to the refused items: a retry sends
    only those, and a skip or a dead letter is about only those. Such an error is worth
    retrying when it is one of ``Retry.on``, or the cause of every refused record is.
    """
    attempt = 0
    while True:
        attempt += 1
        started = anyio.current_time()
        try:
            result = function(item)
            if inspect.isawaitable(result):
                result = await result
        except Exception as error:
            metrics.errors += 1
            if isinstance(error, RecordsRefusedError) and isinstance(item, list):
                item = [refused for refused, _ in error.refused]  # the rest was stored
            if (
                isinstance(strategy, Retry)
                and attempt < strategy.attempts
                and _worth_retrying(error, strategy.on)
            ):
                metrics.retries += 1
                wait = strategy.delay(attempt)
                logger.info(
                    "%s failed on %r (attempt %d of %d, %r); retrying in %.3gs",
                    metrics.name, item, attempt, strategy.attempts, error, wait,
                )  # fmt: skip
                await anyio.sleep(wait)
                continue
            final = strategy.then if isinstance(strategy, Retry) else strategy
            await handle_failure(final, Failure(item, error, metrics.name, attempt), metrics)
            return SKIPPED
        metrics.latency.observe(anyio.current_time() - started)
        return result


def _worth_retrying(error: Exception, kinds: tuple[type[BaseException], ...]) -> bool:
    if isinstance(error, kinds):
        return True  # Retry(on=(RecordsRefusedError,)) retries any refusal
    if isinstance(error, RecordsRefusedError):
        return all(isinstance(cause, kinds) for _, cause in error.refused)
    return False


async def handle_failure(
    strategy: FailFast | Skip | DeadLetter, failure: Failure, metrics: StageMetrics
) -> None:
    """Skip, dead-letter or raise ``failure`` as ``strategy`` says."""
    if isinstance(strategy, Skip):
        metrics.skipped += 1
        logger.warning(
            "%s skipped %r after %d attempt(s): %r",
            failure.stage, failure.item, failure.attempts, failure.error,
        )  # fmt: skip
        return
    if isinstance(strategy, DeadLetter):
        sink = strategy.sink
        if isinstance(sink, anyio.abc.ObjectSendStream):
            await sink.send(failure)
        else:
            outcome = sink(failure)
            if inspect.isawaitable(outcome):
                await outcome
        metrics.dead_lettered += 1
        logger.info(  # the item is in the user's dead-letter sink, not lost
            "%s dead-lettered %r: %r", failure.stage, failure.item, failure.error
        )
        return
    error = failure.error
    error.add_note(
        f"rxflow: stage {failure.stage!r} failed on item {failure.item!r}"
        + (f" after {failure.attempts} attempts" if failure.attempts > 1 else "")
    )
    raise error
