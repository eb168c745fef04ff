"""Deprecated: moved to :mod:`rxflow.flow.cli` (this path works for one more release, with
a DeprecationWarning; the ``rxflow`` command and ``python -m rxflow`` use the new one)."""

from typing import TYPE_CHECKING

from rxflow._moved import forward_to
from rxflow.flow import cli as _moved_to

if TYPE_CHECKING:  # what type checkers see; at run time __getattr__ forwards and warns
    from rxflow.flow.cli import *  # noqa: F403

__all__ = list(_moved_to.__all__)

__getattr__ = forward_to(__name__, _moved_to.__name__)
