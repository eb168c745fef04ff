"""What a checkpointed flow does when its store fenced some of its scopes off (a newer owner
claimed them, :class:`~rxflow.errors.ScopeFencedError`): whether it can let them go as
revoked partitions, or must stop."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from rxflow.errors import ScopeFencedError

__all__ = ["fencing_failure"]


def fencing_failure(
    namespace: str,
    error: ScopeFencedError,
    partitions: Iterable[object],
    changed: Sequence[str],
    staged: bool,
) -> ScopeFencedError | None:
    """None when the flow may let the fenced scopes go (each is a partition it can revoke,
    no exactly-once rows were in the commit, every other changed scope was committed);
    else the error to fail the flow with. ``partitions``: the fenced scopes' partition
    objects (None for the unpartitioned scope); ``changed``: the scopes of the commit."""
    revocable = all(callable(getattr(partition, "revoke", None)) for partition in partitions)
    stored = {*error.fenced, *error.committed}
    if not staged and revocable and all(scope in stored for scope in changed):
        return None
    if staged:
        why = (
            "the checkpoint's exactly-once rows come from every partition, so none was "
            "written; the flow stops, and whoever owns its partitions now redoes what came "
            "after their last checkpoints"
        )
    elif not revocable:
        why = (
            "another run of this flow took its state: run one worker per flow name (over a "
            "source whose broker shares work), or give each worker a flow name of its own"
        )
    else:
        why = "the store did not commit the checkpoint's other scopes either; the flow stops"
    return ScopeFencedError(
        f"flow {namespace!r}: a newer owner claimed its state scope(s) "
        f"{', '.join(repr(scope) for scope in error.fenced)} ({why}); nothing of this "
        "checkpoint was acknowledged",
        fenced=error.fenced,
        committed=error.committed,
    )
