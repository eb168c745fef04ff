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

import shlex
import signal
import subprocess
from collections.abc import Awaitable, Callable, Sequence

__all__ = [
    "CodecNeedsAwait",
    "DecodeError",
    "FlowStateError",
    "FramingError",
    "HttpResponseError",
    "InFlightLimitError",
    "KeyedWindowsOnSharedWorkError",
    "MarbleMismatch",
    "MarbleSyntaxError",
    "MarbleTimeLimitError",
    "MissingExtraError",
    "NoTaskGroupError",
    "NotVirtualTimeError",
    "ProcessFailedError",
    "RecordInvalidError",
    "RecordRejected",
    "RecordsRefusedError",
    "RxflowError",
    "ScopeFencedError",
    "ServiceUnavailableError",
    "SettledAfterCloseError",
    "SourceNotRerunnableError",
    "SourceOverflowError",
    "StateNameError",
    "UsageError",
    "WrongThreadError",
]


class RxflowError(Exception):
    """Base class of every exception rxflow raises itself."""


class FlowStateError(RxflowError, RuntimeError):
    """A flow was used in a way its state does not allow (started twice, run without a
    source or a sink)."""


class UsageError(RxflowError):
    """The ``rxflow`` command line named something that is not a flow (``module:attribute``
    that cannot be imported, or that is not a :class:`rxflow.Flow` nor makes one)."""


class SourceOverflowError(RxflowError):
    """A source that cannot be paused pushed more items than its overflow buffer holds.

    Raised to the consumer of a pipe whose ``overflow`` policy is
    ``"error"``, after the items that fit were delivered.
    """


class SourceNotRerunnableError(RxflowError):
    """An operator subscribed to a pipe's source again after it ended (``repeat``,
    ``retry``, ``concat``, ``catch``), and the source can be read only once (an async
    generator, an iterator, a stream).

    Pass a source that can be read again: a list, an object whose ``__aiter__`` starts
    anew, a reactivex Observable, or a function that returns a fresh source.
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


class RecordRejected(RxflowError, ValueError):
    """Why a connector set a record aside before any codec saw it (a stream entry without
    its payload field, a frame over the size limit). Its message is the whole reason, said
    as it is in the ``DecodeError`` and in the log line of a skipped record.

    Example:
        >>> RecordRejected("entry 1-0 has no field 'data'; set field= to the payload's")
        RecordRejected("entry 1-0 has no field 'data'; set field= to the payload's")
    """


class FramingError(RecordRejected):
    """A frame of a byte stream that cannot be a record: a line longer than
    ``max_line_length``, a length-prefixed frame larger than ``max_frame_size``, or a frame
    cut short by the end of the stream. It goes to the source's decode policy like any
    record its codec rejects (the ``__cause__`` of the ``DecodeError`` under "raise");
    raise the limit if such records are expected.

    Example:
        >>> issubclass(FramingError, ValueError)
        True
    """


class RecordInvalidError(RxflowError, ValueError):
    """A record is not what its codec's type or schema says: a field of a typed record
    that fails validation, or an Avro record with a wrong magic byte, an unknown schema
    id or a body that does not match its schema.

    The message names the type (or schema id) and the field, never the record's values;
    a source applies its ``on_decode_error`` policy to it like to any decode failure.

    Example:
        >>> RecordInvalidError("not a valid Order: at $.qty: Expected `int`, got `str`")
        RecordInvalidError('not a valid Order: at $.qty: Expected `int`, got `str`')
    """


class CodecNeedsAwait(RxflowError):
    """Raised by a codec that must await something before it can decode a record (the
    writer's schema, from a registry), when it is called directly rather than through a
    :class:`~rxflow.connectors.codecs.Decoder`.

    A Decoder (every connector source has one) catches it, awaits ``prepare()`` and calls
    the codec again; what ``prepare`` raises ends the source (the record is not
    acknowledged), since it says nothing about the record. Calling such a codec yourself,
    decode through a Decoder instead.
    """

    def __init__(self, prepare: Callable[[], Awaitable[None]], what: str) -> None:
        super().__init__(f"the codec must await {what} first: decode through a Decoder")
        self.prepare = prepare


class ServiceUnavailableError(RxflowError, ConnectionError):
    """A connector could not reach its server (the message names the service and address)."""


class MissingExtraError(RxflowError, ModuleNotFoundError):
    """A connector's client library is not installed; the message names the extra that
    installs it (``pip install 'rxflow[postgres]'``).

    It is a :class:`ModuleNotFoundError`, raised when the connector's module is imported
    (``from rxflow.connectors import postgres_sink``), so code that checks for an optional
    module the usual way keeps working.
    """


class InFlightLimitError(RxflowError):
    """A flow's windows hold as many unacknowledged messages of a source as its system lets
    be in flight (JetStream's ``max_ack_pending``, RabbitMQ's ``prefetch``, MQTT's
    ``receive_maximum``).

    The source can then deliver nothing more, and only more messages would close those
    windows: the flow fails instead of stalling or dropping the waiting messages as late.
    The message names the source, the setting and both numbers. Nothing unwritten was
    acknowledged, so the held messages are delivered again when the flow runs again with
    a larger limit (or shorter windows).
    """


class SettledAfterCloseError(RxflowError, RuntimeError):
    """A connector message was acked or nacked after its source was closed.

    The settlement did not reach the system, which delivers the message again. Settle
    messages inside the source's ``async with`` block (a :class:`rxflow.Flow` does).
    """


class HttpResponseError(RxflowError):
    """The server answered, but not as asked: a non-2xx status (after the retries, for a
    status worth retrying), or an event stream that is not ``text/event-stream``.

    ``url`` and ``status_code`` say which; the message quotes the start of the body.

    Example:
        Tell a missing endpoint from a server that is down::

            try:
                await sink.send_batch(batch)
            except HttpResponseError as error:
                if error.status_code == 404:
                    raise SystemExit(f"no ingest endpoint at {error.url}") from error
                raise
    """

    def __init__(self, message: str, *, url: str, status_code: int) -> None:
        super().__init__(message)
        self.url = url
        self.status_code = status_code


class ProcessFailedError(RxflowError, subprocess.CalledProcessError):
    """A command exited with a non-zero code (or stopped reading its stdin).

    ``returncode``, ``cmd`` and ``stderr`` (the last bytes it wrote there) say which and why.
    It is a :class:`subprocess.CalledProcessError` too.

    Example:
        >>> from rxflow.errors import ProcessFailedError
        >>> print(ProcessFailedError("process:ls", ["ls", "/nope"], 2, b"ls: cannot access"))
        command ls /nope exited with code 2; its stderr ends with:
        ls: cannot access
    """

    def __init__(
        self, where: str, command: str | Sequence[str], returncode: int, stderr: bytes
    ) -> None:
        subprocess.CalledProcessError.__init__(self, returncode, command, None, stderr)
        self.where = where

    def __str__(self) -> str:
        if self.returncode < 0:
            try:
                how = f"was killed by {signal.Signals(-self.returncode).name}"
            except ValueError:
                how = f"was killed by signal {-self.returncode}"
        else:
            how = f"exited with code {self.returncode}"
        tail = self.stderr.decode("utf-8", "replace").strip() if self.stderr else ""
        said = f"; its stderr ends with:\n{tail}" if tail else "; it wrote nothing to stderr"
        command = self.cmd if isinstance(self.cmd, str) else shlex.join(self.cmd)
        return f"command {command} {how}{said}"


# -- marble testing (rxflow.testing re-exports these) -------------------------------------


class MarbleSyntaxError(RxflowError, ValueError):
    """A marble diagram could not be read; the message points at the character."""

    def __init__(self, diagram: str, position: int, problem: str) -> None:
        pointer = " " * position + "^"
        super().__init__(f"{problem} at position {position}:\n  {diagram}\n  {pointer}")
        self.diagram = diagram
        self.position = position


class MarbleMismatch(RxflowError, AssertionError):
    """What an observable did differed from its expected diagram (the message shows both).
    An ``AssertionError`` too, so that test runners report it as a failed assertion."""


class MarbleTimeLimitError(RxflowError, RuntimeError):
    """Virtual time reached a limit of :class:`~rxflow.testing.MarbleContext`
    (``max_frames`` or ``max_actions``) with work still scheduled; the message says which
    and how to raise it."""


class NotVirtualTimeError(RxflowError, RuntimeError):
    """An async marble test ran on a real clock, where it would sleep for real."""


# -- sinks --------------------------------------------------------------------------------


class RecordsRefusedError(RxflowError):
    """A system refused some records of a batch a sink wrote, and stored the others (Kafka
    stores or refuses each record on its own).

    Attributes:
        refused: each refused item with the system's reason, ``(item, exception)``.
        stored: how many records of the batch the system stored.

    Example:
        >>> refused = [("big", ValueError("too large"))]
        >>> error = RecordsRefusedError("1 of 2 refused", refused=refused, stored=1)
        >>> [item for item, _ in error.refused], error.stored
        (['big'], 1)
    """

    def __init__(
        self, message: str, *, refused: Sequence[tuple[object, BaseException]], stored: int
    ) -> None:
        super().__init__(message)
        self.refused = list(refused)
        self.stored = stored


class KeyedWindowsOnSharedWorkError(RxflowError, RuntimeError):
    """A flow runs a keyed window (a window with ``key=``, a session) over a source whose
    broker hands each message to any of several workers (a JetStream durable consumer, a
    Redis consumer group), and other workers are reading it too: each worker would see part
    of every key's items and emit partial windows as if whole. The message names the
    source, how many other workers were seen and the window stage, and what to do.

    Attributes:
        source: the source's name, as the flow's errors name it.
        other_workers: how many other workers the source saw reading.
        stage: the keyed window stage's name.

    Example:
        >>> error = KeyedWindowsOnSharedWorkError("...", source="redis:clicks",
        ...                                       other_workers=2, stage="session")
        >>> error.other_workers, isinstance(error, RxflowError)
        (2, True)
    """

    def __init__(self, message: str, *, source: str, other_workers: int, stage: str) -> None:
        super().__init__(message)
        self.source = source
        self.other_workers = other_workers
        self.stage = stage


class StateNameError(RxflowError, ValueError):
    """Two stateful operators of one checkpointed flow keep their state under the same
    name. State is stored by name, so each stateful operator (a window, ``aggregate``,
    ``deduplicate``, a join) needs a ``name=`` of its own, the same across restarts.

    Example:
        >>> isinstance(StateNameError("two operators are named 'tumbling'"), ValueError)
        True
    """


class ScopeFencedError(RxflowError):
    """A store refused a commit's changes of some scopes because another owner claimed them
    since this writer did (their stored owner epoch is newer than the commit's): the writer
    is a *zombie* for those scopes, such as a worker that lost a Kafka partition and still
    checkpoints it. The refused scopes are left as the newer owner keeps them; a commit's
    other scopes are committed, except that a commit that carried exactly-once sink rows
    writes nothing at all when any of its scopes is refused (``committed`` is then empty).

    A checkpointed :class:`rxflow.Flow` lets a fenced partition go, as a revocation does;
    it fails with this error when the scope is not a partition (two runs of one flow hold
    its state) or when the checkpoint carried exactly-once rows.

    Attributes:
        fenced: the refused scopes, in the commit's order.
        committed: the scopes whose changes were stored.

    Example:
        >>> error = ScopeFencedError("...", fenced=["orders/3"], committed=["orders/1"])
        >>> error.fenced, error.committed
        (['orders/3'], ['orders/1'])
    """

    def __init__(self, message: str, *, fenced: Sequence[str], committed: Sequence[str]) -> None:
        super().__init__(message)
        self.fenced = list(fenced)
        self.committed = list(committed)
