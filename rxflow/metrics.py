"""Deprecated: moved to :mod:`rxflow.flow.metrics` (this path works for one more release,
with a DeprecationWarning)."""

from typing import TYPE_CHECKING

from rxflow._moved import forward_to
from rxflow.flow import metrics as _moved_to

if TYPE_CHECKING:  # what type checkers see; at run time __getattr__ forwards and warns
    from rxflow.flow.metrics import *  # noqa: F403

__all__ = list(_moved_to.__all__)

__getattr__ = forward_to(__name__, _moved_to.__name__)
