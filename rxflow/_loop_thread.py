"""The event loop's thread, and handing calls to it from other threads.

Rx callbacks inside rxflow run on the event-loop thread. Some reactivex operators move
work to other threads (``observe_on(ThreadPoolScheduler())``, ``subscribe_on(...)``), so
items can reach a pipe's edges from a pool thread. There, nothing may touch the pipe's
state directly: the call is handed to the loop, in order, without blocking the thread,
the way ``anyio.from_thread`` enters a loop (``call_soon_threadsafe`` on asyncio,
``TrioToken.run_sync_soon`` on trio).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any

import sniffio

__all__ = ["LoopThread"]


class LoopThread:
    """The thread of the event loop running now; create it on that thread, in async code."""

    __slots__ = ("_call_soon", "ident")

    def __init__(self) -> None:
        self.ident = threading.get_ident()
        self._call_soon: Callable[..., Any]
        if sniffio.current_async_library() == "trio":
            import trio.lowlevel

            self._call_soon = trio.lowlevel.current_trio_token().run_sync_soon
        else:
            import asyncio

            self._call_soon = asyncio.get_running_loop().call_soon_threadsafe

    def is_current(self) -> bool:
        """Whether the caller runs on the loop's thread."""
        return threading.get_ident() == self.ident

    def call_soon(self, function: Callable[..., object], *args: Any) -> None:
        """Run ``function(*args)`` on the loop's thread soon; calls from one thread run in
        the order they were made. After the loop ended, the call is dropped: what it
        would have delivered has nobody left to receive it."""
        with contextlib.suppress(RuntimeError):  # asyncio: loop closed; trio: RunFinishedError
            self._call_soon(function, *args)
