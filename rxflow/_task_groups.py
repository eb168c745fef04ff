"""Background tasks beside a body, with the body's own exception coming out as itself.

An async context manager that yields while tasks run beside it (a pipe's pump, a
subprocess's stderr drain, a server's connections) must yield *inside* a task group. Then
an exception raised in the caller's ``async with`` body travels through that task group,
which wraps it in an ``ExceptionGroup``: the caller wrote ``except ValueError`` and gets a
group instead. :func:`background_tasks` takes the body's exception out of the group's way
and raises it, unwrapped, once the group has finished.

Example:
    >>> import anyio
    >>> from contextlib import asynccontextmanager
    >>> from rxflow._task_groups import background_tasks
    >>> @asynccontextmanager
    ... async def ticking():
    ...     async with background_tasks() as tasks:
    ...         tasks.start_soon(anyio.sleep_forever)
    ...         yield "ready"
    >>> async def main():
    ...     try:
    ...         async with ticking():
    ...             raise KeyError("mine")
    ...     except KeyError as error:  # not an ExceptionGroup
    ...         print("caught", error)
    >>> anyio.run(main)
    caught 'mine'
"""

from __future__ import annotations

from types import TracebackType

import anyio
from anyio.abc import TaskGroup

__all__ = ["BackgroundTasks", "background_tasks"]


def background_tasks() -> BackgroundTasks:
    """A task group whose body's exception is raised as itself, not in an ExceptionGroup.

    On entry it opens an anyio task group and returns it. When the body raises an
    ``Exception``, the remaining tasks are cancelled (as a task group does for an error in
    its body), the group is awaited, and the body's exception is raised again, unwrapped.
    Exceptions from the tasks themselves, and ``BaseException`` such as cancellation, take
    the task group's usual path.
    """
    return BackgroundTasks()


class BackgroundTasks:
    """What :func:`background_tasks` returns: entered once, it opens one task group."""

    def __init__(self) -> None:
        self._group: TaskGroup | None = None  # set on entry; one entry per instance

    async def __aenter__(self) -> TaskGroup:
        if self._group is not None:
            raise RuntimeError("background_tasks() is entered once; make a new one")
        self._group = anyio.create_task_group()
        return await self._group.__aenter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool:
        group = self._group
        assert group is not None  # entered
        if not isinstance(exc, Exception):
            return bool(await group.__aexit__(exc_type, exc, traceback))
        group.cancel_scope.cancel()
        # The group ends with no error of its own in flight: what its tasks raised, if
        # anything, comes out of this await; otherwise the body's exception goes on as is.
        await group.__aexit__(None, None, None)
        return False
