"""``python -m rxflow run module:flow_factory``: run a flow with signal handling and progress.

The first Ctrl-C (or SIGTERM) stops the flow gracefully: sources are no longer read,
windows flush and sinks drain. A second one aborts. While the flow runs, a progress line
(items per stage, errors, drops, backlogs) is shown on stderr. The exit status is 0 when the
flow ended or was stopped, 1 when it failed, 2 for a bad command line, 130 when aborted.

Example (a file ``myflows.py`` with ``def clicks() -> rxflow.Flow: ...``)::

    python -m rxflow run myflows:clicks --backend trio --progress-every 2
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import signal
import sys
from typing import Any, TextIO

import anyio

from rxflow.flow import Flow, FlowHandle

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_ABORTED = 0, 1, 2, 130


class UsageError(Exception):
    """The command line named something that is not a flow."""


async def load_flow(target: str) -> Flow:
    """Import ``module:attribute`` and return the flow it is or makes (sync or async)."""
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


async def run_flow(flow: Flow, progress_every: float | None, out: TextIO) -> int:
    """Run ``flow`` until it ends, handling signals and showing progress; return the exit status."""
    handle = flow.prepare()
    async with anyio.create_task_group() as tg:
        tg.start_soon(_handle_signals, handle, out)
        if progress_every:
            tg.start_soon(_show_progress, handle, progress_every, out)
        try:
            await handle.run()
        except Exception as error:
            print(f"\nrxflow: flow {flow.name!r} failed: {error!r}", file=out)
            return EXIT_FAILED
        finally:
            tg.cancel_scope.cancel()  # the signal handler and the progress line
    state = "aborted" if handle.aborted else "ended"
    print(f"\nrxflow: flow {state}: {handle.snapshot().progress_line()}", file=out)
    return EXIT_ABORTED if handle.aborted else EXIT_OK


async def _handle_signals(handle: FlowHandle, out: TextIO) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        count = 0
        async for _ in signals:
            count += 1
            if count == 1:
                print("\nrxflow: stopping: draining the flow (interrupt again to abort)", file=out)
                handle.stop()
            else:
                print("\nrxflow: aborting", file=out)
                handle.abort()


async def _show_progress(handle: FlowHandle, every: float, out: TextIO) -> None:
    ending = "\r" if out.isatty() else "\n"
    while True:
        await anyio.sleep(every)
        out.write(handle.snapshot().progress_line() + ending)
        out.flush()


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m rxflow`` and of the ``rxflow`` command."""
    parser = argparse.ArgumentParser(prog="rxflow", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run a flow: rxflow run module:flow_factory")
    run.add_argument("target", help="module:attribute, a Flow or a function that returns one")
    run.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    run.add_argument(
        "--progress-every", type=float, default=1.0, metavar="SECONDS",
        help="seconds between progress lines on stderr (0: none)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    sys.path.insert(0, "")  # import flows from the current directory, as `python -m` does

    async def load_and_run() -> int:
        try:
            flow = await load_flow(args.target)
        except UsageError as error:
            print(f"rxflow: {error}", file=sys.stderr)
            return EXIT_USAGE
        return await run_flow(flow, args.progress_every or None, sys.stderr)

    return anyio.run(load_and_run, backend=args.backend)
