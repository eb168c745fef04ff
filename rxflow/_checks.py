"""Argument checks: refuse a bad argument at the call that got it, saying what to pass.

Every public function of rxflow (windows, strategies, ``map_async``, the flow, the
connectors) checks its arguments with these, so that the same mistake gets the same
message wherever it is made, rather than an error deep inside a client library or, worse,
a pipeline that runs and does the wrong thing (a window that ends at ``nan``).

Each check takes ``(where, name, value)``: the call (``"tumbling()"``), the parameter and
what was passed. It returns the value as the type it was checked to be. A value of the
wrong type raises :class:`TypeError`; one of the right type but out of range raises
:class:`ValueError`.

Example:
    >>> from rxflow._checks import check_seconds
    >>> check_seconds("f()", "span", 2)
    2.0
    >>> check_seconds("f()", "span", float("nan"))
    Traceback (most recent call last):
    ...
    ValueError: f(): span must be more than 0 seconds (a finite number or a timedelta), got nan
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import timedelta
from typing import Any, Literal, TypeGuard, overload

MAX_PORT = 65535


def check_name(where: str, name: str, value: object) -> str:
    """A non-empty str: a URL, host, subject, stream, consumer or field name."""
    if not isinstance(value, str):
        raise TypeError(f"{where}: {name} must be a non-empty str, got {value!r}")
    if not value:
        raise ValueError(f"{where}: {name} must be a non-empty str, got ''")
    return value


def _is_int(value: object) -> TypeGuard[int]:
    """An int, not a bool (``True`` is an int to Python, never a count to a user)."""
    return isinstance(value, int) and not isinstance(value, bool)


@overload
def check_count(
    where: str, name: str, value: object, *, minimum: int = ..., optional: Literal[False] = ...
) -> int: ...
@overload
def check_count(
    where: str, name: str, value: object, *, minimum: int = ..., optional: bool
) -> int | None: ...
def check_count(
    where: str, name: str, value: object, *, minimum: int = 1, optional: bool = False
) -> int | None:
    """An int of ``minimum`` or more (``None`` too, when ``optional``)."""
    if optional and value is None:
        return None
    also = " or None" if optional else ""
    if not _is_int(value):
        raise TypeError(f"{where}: {name} must be an int of {minimum} or more{also}, got {value!r}")
    if value < minimum:
        raise ValueError(
            f"{where}: {name} must be an int of {minimum} or more{also}, got {value!r}"
        )
    return value


def check_int_range(where: str, name: str, value: object, low: int, high: int) -> int:
    """An int from ``low`` to ``high``, both included."""
    if not _is_int(value):
        raise TypeError(f"{where}: {name} must be an int between {low} and {high}, got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{where}: {name} must be between {low} and {high}, got {value!r}")
    return value


def check_port(where: str, name: str, value: object, *, allow_zero: bool = False) -> int:
    """A TCP or UDP port number; 0 (``allow_zero``) lets the system pick a free one."""
    low = 0 if allow_zero else 1
    free = " (0: any free port)" if allow_zero else ""
    what = f"a port number, an int between {low} and {MAX_PORT}{free}"
    if not _is_int(value):
        raise TypeError(f"{where}: {name} must be {what}, got {value!r}")
    if not low <= value <= MAX_PORT:
        raise ValueError(f"{where}: {name} must be {what}, got {value!r}")
    return value


def check_host(where: str, name: str, value: object) -> str:
    """A host name or an IP address, as a non-empty str."""
    if not isinstance(value, str) or not value:
        raise TypeError(
            f"{where}: {name} must be a host name or an IP address as a non-empty str "
            f"(such as '127.0.0.1' or 'broker.local'), got {value!r}"
        )
    return value


@overload
def check_seconds(
    where: str, name: str, value: object, *, allow_zero: bool = ..., optional: Literal[False] = ...
) -> float: ...
@overload
def check_seconds(
    where: str, name: str, value: object, *, allow_zero: bool = ..., optional: bool
) -> float | None: ...
def check_seconds(
    where: str, name: str, value: object, *, allow_zero: bool = False, optional: bool = False
) -> float | None:
    """A duration: a finite number of seconds or a ``timedelta``, more than 0 (or 0 and
    more, with ``allow_zero``); ``None`` too, when ``optional``."""
    if optional and value is None:
        return None
    bound = "0 or more" if allow_zero else "more than 0"
    also = ", or None" if optional else ""
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(
            f"{where}: {name} must be seconds (a number or a timedelta), {bound}{also}, "
            f"got {value!r}"
        )
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(
            f"{where}: {name} must be {bound} seconds (a finite number or a timedelta){also}, "
            f"got {value!r}"
        )
    return float(value)


def check_fraction(where: str, name: str, value: object) -> float:
    """A number from 0 to 1, both included."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{where}: {name} must be a number from 0 to 1, got {value!r}")
    if not 0 <= value <= 1:  # False for nan too
        raise ValueError(f"{where}: {name} must be a number from 0 to 1, got {value!r}")
    return float(value)


@overload
def check_function(
    where: str, name: str, value: object, what: str, *, optional: Literal[False] = ...
) -> Callable[..., Any]: ...
@overload
def check_function(
    where: str, name: str, value: object, what: str, *, optional: bool
) -> Callable[..., Any] | None: ...
def check_function(
    where: str, name: str, value: object, what: str, *, optional: bool = False
) -> Callable[..., Any] | None:
    """Something callable; ``what`` says what it is called with and returns, for the
    message (``"of the item"``)."""
    if optional and value is None:
        return None
    if not callable(value):
        raise TypeError(f"{where}: {name} must be a function {what}, got {value!r}")
    return value
