"""Old module paths that still work for one release: a module that moved keeps a shim at
its old path whose names resolve to the new module's, each with a DeprecationWarning."""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable

__all__ = ["forward_to"]


def forward_to(old: str, new: str) -> Callable[[str], object]:
    """A module ``__getattr__`` for the shim at ``old``: every public name is read from
    ``new``, with a DeprecationWarning naming the import to write instead.

    Example:
        >>> import warnings
        >>> __getattr__ = forward_to("rxflow.metrics", "rxflow.flow.metrics")
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     __getattr__("FlowSnapshot").__name__, str(caught[0].message)
        ('FlowSnapshot', 'rxflow.metrics is deprecated and will be removed in the next release: import FlowSnapshot from rxflow.flow.metrics')
    """  # noqa: E501 (the warning is one line)

    def __getattr__(name: str) -> object:
        if name.startswith("__"):  # the import system's own questions (__path__, __file__)
            raise AttributeError(f"module {old!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(new), name)  # AttributeError if it never was
        warnings.warn(
            f"{old} is deprecated and will be removed in the next release: "
            f"import {name} from {new}",
            DeprecationWarning,
            stacklevel=2,
        )
        return value

    return __getattr__
