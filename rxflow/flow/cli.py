"""``python -m rxflow run module:flow_factory``: run a flow with signal handling, progress,
logs and health endpoints.

The first Ctrl-C (or SIGTERM) stops the flow gracefully: sources are no longer read,
windows flush and sinks drain (for at most ``--drain-timeout`` seconds, if given; past that
the flow is aborted). A second one aborts.

On a terminal, a status line at the bottom of stderr shows the progress (items per stage,
errors, drops, backlogs) while the flow's own output and the logs scroll above it (drawn by
rich). Off a terminal, the progress is logged, only when it changed. ``--serve HOST:PORT``
serves ``/metrics``, ``/health/live`` and ``/health/ready`` (:func:`rxflow.serve_health`).

Exit status: 0 when the flow ended or was stopped, 1 when it failed, 2 for a bad command
line (or a ``--serve`` address it cannot listen on), 124 when the drain timed out, 130 when
aborted, 141 when stdout's reader closed it (``rxflow run ... | head -1``).

Example (a file ``myflows.py`` with ``def clicks() -> rxflow.Flow: ...``)::

    python -m rxflow run myflows:clicks --backend trio --drain-timeout 30 --serve 127.0.0.1:9100
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import inspect
import logging
import math
import os
import signal
import sys
from collections.abc import Callable
from functools import partial
from typing import Any, TextIO, cast

import anyio
from rich.console import Console
from rich.live import Live
from rich.logging import RichHandler
from rich.text import Text

from rxflow.errors import UsageError
from rxflow.flow import Flow, FlowHandle

__all__ = ["UsageError", "load_flow", "main", "run_flow", "show_progress"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_DRAIN_TIMED_OUT = 124  # what timeout(1) returns when the command ran out of time
EXIT_ABORTED = 130  # 128 + SIGINT
EXIT_STDOUT_CLOSED = 141  # 128 + SIGPIPE: what a shell reports for a writer `| head` closed

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")

logger = logging.getLogger("rxflow.cli")


async def load_flow(target: str) -> Flow:
    """Import ``module:attribute`` and return the flow it is or makes (sync or async).

    Example:
        >>> import anyio
        >>> anyio.run(load_flow, "rxflow")
        Traceback (most recent call last):
        ...
        rxflow.errors.UsageError: expected module:attribute (such as myflows:clicks), got 'rxflow'
    """
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise UsageError(f"expected module:attribute (such as myflows:clicks), got {target!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise UsageError(f"cannot import {module_name!r}: {error}") from error
    try:
        made: Any = getattr(module, attribute)
    except AttributeError:
        raise UsageError(f"module {module_name!r} has no attribute {attribute!r}") from None
    if not isinstance(made, Flow) and callable(made):
        made = made()
        if inspect.isawaitable(made):
            made = await made
    if not isinstance(made, Flow):
        raise UsageError(f"{target} gave {made!r}, not an rxflow.Flow")
    return made


async def run_flow(
    flow: Flow,
    *,
    progress_every: float | None = None,
    show: Callable[[str], None] | None = None,
    drain_timeout: float | None = None,
    serve: tuple[str, int] | None = None,
    stdout: StdoutGuard | None = None,
) -> int:
    """Run ``flow`` until it ends, handling SIGINT and SIGTERM; return the exit status.

    Every ``progress_every`` seconds the flow's progress line goes to ``show`` if it
    changed. ``serve`` is the ``(host, port)`` of the health and metrics endpoints. A
    failure is logged once, by the flow (with its traceback), and not again here.

    Example:
        >>> import anyio
        >>> from rxflow import Flow
        >>> anyio.run(run_flow, Flow("once").source(range(3)).sink(lambda item: None))
        0
    """
    handle = flow.prepare()
    if stdout is not None:
        stdout.on_closed = handle.stop  # the reader has what it wanted: drain and end
    async with anyio.create_task_group() as tg:
        tg.start_soon(_handle_signals, handle, drain_timeout)
        if serve is not None:
            from rxflow.flow._serve import serve_health

            try:
                await tg.start(serve_health, handle, *serve)
            except OSError as error:
                logger.error("cannot serve on %s:%d: %s", *serve, error)  # noqa: TRY400
                tg.cancel_scope.cancel()
                return EXIT_USAGE
        if progress_every and show is not None:
            read = partial(_progress_line, handle)
            tg.start_soon(show_progress, read, progress_every, show)
        try:
            await handle.run()
        except Exception:
            return EXIT_FAILED  # the flow logged it with its traceback: once is enough
        finally:
            tg.cancel_scope.cancel()  # the signal handler, the progress line, the server
            if stdout is not None:
                stdout.on_closed = None
    if stdout is not None and stdout.closed_by_reader:
        return EXIT_STDOUT_CLOSED
    if handle.drain_timed_out:
        logger.error(
            "the flow was aborted: its drain did not finish within --drain-timeout %gs",
            drain_timeout,
        )
        return EXIT_DRAIN_TIMED_OUT
    return EXIT_ABORTED if handle.aborted else EXIT_OK


def _progress_line(handle: FlowHandle) -> str:
    return handle.snapshot().progress_line()


async def show_progress(read: Callable[[], str], every: float, show: Callable[[str], None]) -> None:
    """Every ``every`` seconds, pass the line ``read()`` returns to ``show``, unless it is
    the line shown last: an idle flow does not repeat itself.

    Example:
        >>> import anyio
        >>> lines = ["a 1", "a 1", "a 2"]
        >>> async def main():
        ...     with anyio.CancelScope() as scope:
        ...         def read():
        ...             if len(lines) == 1:
        ...                 scope.cancel()  # the last line: stop after showing it
        ...             return lines.pop(0)
        ...         await show_progress(read, 0.01, print)
        >>> anyio.run(main)
        a 1
        a 2
    """
    last = None
    while True:
        await anyio.sleep(every)
        line = read()
        if line != last:
            show(line)
            last = line


async def _handle_signals(handle: FlowHandle, drain_timeout: float | None) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        count = 0
        async for signum in signals:
            count += 1
            name = signal.Signals(signum).name
            if count == 1:
                limit = "" if drain_timeout is None else f" for at most {drain_timeout:g}s"
                logger.warning(
                    "%s: stopping: draining the flow%s (interrupt again to abort)", name, limit
                )
                handle.stop(drain_timeout=drain_timeout)
            else:
                logger.warning("%s: aborting", name)
                handle.abort()


class StdoutGuard:
    """``sys.stdout`` while the CLI runs. When its reader closes the pipe
    (``rxflow run ... | head -1``), the rest of the output goes to ``/dev/null`` and the flow
    is asked to stop, instead of a ``BrokenPipeError`` failing the flow's sink with a
    traceback, or Python complaining at exit (the recipe of Python's ``signal`` docs, "Note
    on SIGPIPE").

    Example:
        >>> import os
        >>> read_end, write_end = os.pipe()
        >>> guard = StdoutGuard(open(write_end, "w"))
        >>> guard.on_closed = lambda: print("stop the flow")
        >>> os.close(read_end)  # the reader has had enough
        >>> guard.write("more\\n"); guard.flush()
        5
        stop the flow
        >>> guard.closed_by_reader
        True
        >>> guard.write("and more\\n"); guard.close()  # to /dev/null, quietly
        9
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self.closed_by_reader = False
        self.on_closed: Callable[[], None] | None = None

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._reader_gone()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._reader_gone()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    def _reader_gone(self) -> None:
        if self.closed_by_reader:
            return
        self.closed_by_reader = True
        logger.debug("stdout was closed by its reader: stopping the flow")
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(devnull, self._stream.fileno())  # so that the final flush succeeds
            finally:
                os.close(devnull)
        except (OSError, ValueError):
            pass  # a stream without a file descriptor: nothing will flush to it at exit
        if self.on_closed is not None:
            self.on_closed()


def _terminal() -> Console | None:
    """A rich console on stderr when stderr is a terminal that can redraw a line."""
    console = Console(stderr=True)
    return console if console.is_terminal and not console.is_dumb_terminal else None


def _log_handler(console: Console | None) -> logging.Handler:
    if console is not None:
        # Printed above the status line, through the console that draws it.
        handler: logging.Handler = RichHandler(console=console, show_path=False)
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    return handler


async def _load_and_run(args: argparse.Namespace, console: Console | None, out: StdoutGuard) -> int:
    try:
        flow = await load_flow(args.target)
    except UsageError as error:
        logger.error("%s", error)  # noqa: TRY400 (a bad command line, not a crash)
        return EXIT_USAGE
    run = partial(
        run_flow,
        flow,
        progress_every=args.progress_every or None,
        drain_timeout=args.drain_timeout,
        serve=args.serve,
        stdout=out,
    )
    if console is None or not args.progress_every:
        return await run(show=partial(logger.info, "%s"))
    # The status line stays at the bottom: whatever the flow prints to stderr (and to
    # stdout, when it is the same terminal) is printed above it. Refreshed by show_progress,
    # not by rich's own thread.
    live = Live(
        console=console,
        transient=True,
        auto_refresh=False,
        redirect_stdout=sys.stdout.isatty(),
        redirect_stderr=True,
    )
    with live:
        return await run(show=lambda line: live.update(Text(line), refresh=True))


def _seconds(text: str, *, zero: bool) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero):
        bound = "0 or more" if zero else "more than 0"
        raise argparse.ArgumentTypeError(f"expected seconds, {bound}, got {text!r}")
    return value


def _address(text: str) -> tuple[str, int]:
    host, colon, port = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")  # [::1]:9100
    if not colon or not host or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(
            f"expected HOST:PORT (such as 127.0.0.1:9100, or [::1]:9100), got {text!r}"
        )
    return host, int(port)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rxflow", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--version", action="version", version=f"rxflow {importlib.metadata.version('rxflow')}"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run a flow: rxflow run module:flow_factory")
    run.add_argument("target", help="module:attribute, a Flow or a function that returns one")
    run.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    run.add_argument(
        "--progress-every", type=partial(_seconds, zero=True), default=1.0, metavar="SECONDS",
        help="seconds between progress updates on stderr (0: none); default 1",
    )  # fmt: skip
    run.add_argument(
        "--log-level", type=str.upper, choices=LOG_LEVELS, default="INFO",
        help="the least severe log records shown on stderr; default INFO",
    )  # fmt: skip
    run.add_argument(
        "--drain-timeout", type=partial(_seconds, zero=True), default=None, metavar="SECONDS",
        help="on SIGINT or SIGTERM, abort the flow if its drain takes longer than this "
        "(exit status 124); default: wait for the drain",
    )  # fmt: skip
    run.add_argument(
        "--serve", type=_address, default=None, metavar="HOST:PORT",
        help="serve /metrics (Prometheus), /health/live and /health/ready on this address",
    )  # fmt: skip
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m rxflow`` and of the ``rxflow`` command; returns the exit
    status.

    Example:
        >>> main(["--version"])  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        SystemExit: 0
    """
    args = _parser().parse_args(argv)
    if "" not in sys.path:
        sys.path.insert(0, "")  # import flows from the current directory, as `python -m` does
    console = _terminal()
    handler = _log_handler(console)
    root = logging.getLogger()
    previous_level = root.level
    root.addHandler(handler)
    root.setLevel(args.log_level)
    real_stdout = sys.stdout
    out = StdoutGuard(real_stdout)
    sys.stdout = cast(TextIO, out)
    try:
        return anyio.run(_load_and_run, args, console, out, backend=args.backend)
    finally:
        out.flush()  # now, so that a closed stdout does not fail the interpreter's exit
        sys.stdout = real_stdout
        root.removeHandler(handler)
        root.setLevel(previous_level)
