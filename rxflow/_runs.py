"""Runs: a source hands over what it already has in one await, instead of one per item.

A broker client fetches a batch; a file reader gets a chunk of lines. Pulled one item at a
time, such a source pays an ``await`` (and often a lock or a queue) per item for items it
already holds. A source that offers :meth:`RunSource.next_run` gives the pipe's pump the
whole run at once; the pump still pushes the items through the operators one by one and
still counts the pipe's bound in items: when the consumer has no room, it waits between
two items of a run, and pulls no new run until the last one is in.

Example:
    >>> import anyio
    >>> from rxflow import open_pipe
    >>> class Pages:
    ...     def __init__(self):
    ...         self.pages = [[1, 2, 3], [4, 5]]
    ...     async def next_run(self):
    ...         if not self.pages:
    ...             raise StopAsyncIteration
    ...         return self.pages.pop(0)
    >>> async def main():
    ...     async with open_pipe(Pages()) as pipe:
    ...         print([x async for x in pipe])
    >>> anyio.run(main)
    [1, 2, 3, 4, 5]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, TypeVar, runtime_checkable

__all__ = ["RunSource"]

T_co = TypeVar("T_co", covariant=True)


@runtime_checkable
class RunSource(Protocol[T_co]):
    """A source that hands over its items a run at a time.

    :meth:`next_run` returns the items the source has now, in order (an empty run is
    allowed: nothing arrived before a fetch timed out); it raises ``StopAsyncIteration``
    at the end of the source. :func:`rxflow.open_pipe` calls it whenever the consumer has
    room, in preference to ``__anext__`` when a source offers both. Exported as
    ``rxflow.RunSource``; the connector kit's sources implement it.
    """

    async def next_run(self) -> Sequence[T_co]: ...
