"""Argument checks shared by the window operators: refuse bad input when the pipeline is built."""

from __future__ import annotations

from datetime import timedelta
from typing import Any


def seconds(value: Any, name: str, where: str, *, allow_zero: bool = False) -> float:
    """``value`` as seconds (a number or a ``timedelta``), refusing what is not a duration."""
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{where}: {name} must be seconds (a number or a timedelta), got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        bound = "0 or more" if allow_zero else "more than 0"
        raise ValueError(f"{where}: {name} must be {bound} seconds, got {value!r}")
    return float(value)


def optional_seconds(value: Any, name: str, where: str) -> float | None:
    return None if value is None else seconds(value, name, where)


def positive_count(value: Any, name: str, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{where}: {name} must be an int of 1 or more, got {value!r}")
    return value
