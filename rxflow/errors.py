"""Exceptions raised by rxflow.

Every rxflow failure is an :class:`RxflowError` subclass whose message says what went wrong
and what to do about it. Errors raised by *your* code (a source, an operator's function) are
never wrapped: they reach the consumer as the original exception, with a note added that
names the pipe they ended.

Example:
    >>> from rxflow.errors import SourceOverflowError, RxflowError
    >>> issubclass(SourceOverflowError, RxflowError)
    True
"""

from __future__ import annotations


class RxflowError(Exception):
    """Base class of every exception rxflow raises itself."""


class SourceOverflowError(RxflowError):
    """A source that cannot be paused pushed more items than its overflow buffer holds.

    Raised to the consumer of a pipe whose ``overflow`` policy is
    ``"error"``, after the items that fit were delivered.
    """


class NoTaskGroupError(RxflowError, RuntimeError):
    """An observable that needs a running task (an async source) was subscribed without one.

    Subscribe it inside :func:`rxflow.open_pipe`, or with an :class:`rxflow.AnyioScheduler`
    as the scheduler, or give it a ``task_group=`` explicitly.
    """


class WrongThreadError(RxflowError, RuntimeError):
    """rxflow was called from a thread other than the event loop's.

    Rx callbacks in rxflow run on the event-loop thread. From another thread, hand the call
    over with ``anyio.from_thread.run_sync(...)``.
    """


class DecodeError(RxflowError, ValueError):
    """A connector's codec rejected a record and the decode policy is ``"raise"``.

    The message names the source and the record; ``__cause__`` is the codec's exception.
    Pass ``on_decode_error="skip"`` or ``"dead_letter"`` to set such records aside instead.
    """


class ServiceUnavailableError(RxflowError, ConnectionError):
    """A connector could not reach its server (the message names the service and address)."""
