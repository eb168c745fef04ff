"""Type variables of rxflow's public generic types, with a default of ``Any`` (PEP 696).

The default is what a type checker uses when it cannot infer the type: a window operator
given ``timestamp=lambda e: e.at`` says nothing about its items, and without a default
mypy would infer ``Never`` and refuse the pipeline; with it the items are ``Any``, while a
typed function (``def at(e: Click) -> float``) still makes them ``Click``. It also lets a
user write ``Window`` without a parameter under ``mypy --strict``.
"""

from __future__ import annotations

import sys
from typing import Any, Never

if sys.version_info >= (3, 13):
    from typing import TypeVar
else:  # TypeVar defaults came with Python 3.13; typing_extensions has them before
    from typing_extensions import TypeVar

ItemT = TypeVar("ItemT", default=Any)
"""The type of the items an operator takes."""

ResultT = TypeVar("ResultT", default=Any)
"""The type of what an operator emits per item."""

TimedT = TypeVar("TimedT", default=Never)
"""The item type an event-time window operator learns from its typed ``timestamp=`` (or
``key=``) function, for its ``late_items``. Lambdas say nothing, and then it is ``Never``
rather than ``Any``: a type checker treats an operator with ``Any`` inside as matching
every form of ``open_pipe`` and gives up on the pipe's type, while with ``Never`` the
windows are still typed by the source (``Window[Click]``) and ``late_items`` still takes
any subscriber."""

ValueT = TypeVar("ValueT", default=Any)
"""The type of the values a connector's codec makes of its records (``Decoder[Order]``)."""

__all__ = ["ItemT", "ResultT", "TimedT", "ValueT"]
