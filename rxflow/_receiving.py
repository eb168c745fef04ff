"""The consumer's wait of a one-consumer channel (a pipe's end, an :class:`OverflowBuffer`):
take an item at once if there is one, else wait until the producer wakes it.

Both channels keep the event their producer sets as ``None`` until a consumer waits, so a
producer that nobody waits for pays one ``is None`` per item; the consumer makes it here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import anyio

__all__ = ["receive_when_ready"]

T = TypeVar("T")


async def receive_when_ready(
    receive_nowait: Callable[[], T], wakeup: Callable[[], anyio.Event]
) -> T:
    """What ``receive_nowait()`` returns (or raises), waiting on ``wakeup()`` each time it
    raises ``anyio.WouldBlock``: the event the producer sets when it adds an item or ends.

    Example:
        >>> import anyio
        >>> from rxflow._overflow import OverflowBuffer
        >>> async def main():
        ...     buffer = OverflowBuffer("error", 4, overflow_message="full")
        ...     received = []
        ...     async def consume():
        ...         received.append(await receive_when_ready(buffer.receive_nowait, buffer.arrival))
        ...     async with anyio.create_task_group() as tasks:
        ...         tasks.start_soon(consume)
        ...         await anyio.sleep(0)  # the consumer waits: nothing is buffered yet
        ...         buffer.add("item")
        ...     return received
        >>> anyio.run(main)
        ['item']
    """
    while True:
        try:
            return receive_nowait()
        except anyio.WouldBlock:
            pass
        await wakeup().wait()
