"""Argument checks shared by the broker connectors, so that a bad argument fails at the call
with the same message whichever connector was given it (rather than deep inside a client)."""

from __future__ import annotations

import math


def check_name(where: str, name: str, value: object) -> None:
    """A non-empty str: a URL, subject, stream, consumer or field name."""
    if not isinstance(value, str) or not value:
        raise TypeError(f"{where}: {name} must be a non-empty str, got {value!r}")


def check_count(where: str, name: str, value: object, *, optional: bool = False) -> None:
    """An int of 1 or more (``None`` too, when ``optional``)."""
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        also = " or None" if optional else ""
        raise ValueError(f"{where}: {name} must be an int of 1 or more{also}, got {value!r}")


def check_seconds(where: str, name: str, value: object, *, optional: bool = False) -> None:
    """A finite number of seconds above zero (``None`` too, when ``optional``)."""
    if optional and value is None:
        return
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        also = " or None" if optional else ""
        raise ValueError(f"{where}: {name} must be a number of seconds > 0{also}, got {value!r}")
