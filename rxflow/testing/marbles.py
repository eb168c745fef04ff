"""RxJS marble syntax: parse a diagram into timed notifications, and draw them back.

One character is one frame (1 ms of virtual time):

* ``-`` nothing happens in this frame; spaces are ignored (use them to align diagrams);
* ``a``, ``1``, any other character: a value, looked up in ``values`` (the character
  itself when ``values`` has no entry for it);
* ``|`` completion; ``#`` an error (``error=``, or a generic ``Exception("error")``);
* ``(ab|)`` several notifications in one frame; as in RxJS, the group then takes as many
  frames as it has characters, parentheses included;
* ``^`` the subscription point of a hot observable (frame 0; earlier frames are negative);
* ``!`` the unsubscription point (subscription diagrams, ``^---!``);
* ``10ms``, ``1.5s``, ``2m`` between spaces: time passes by that much.

Example:
    >>> from rxflow.testing.marbles import parse, render
    >>> diagram = parse("-a-(bc)-|", values={"a": 1, "b": 2, "c": 3})
    >>> [(event.frame, event.kind, event.value) for event in diagram.events]
    [(1, 'N', 1), (3, 'N', 2), (3, 'N', 3), (8, 'C', None)]
    >>> render(diagram.events, values={"a": 1, "b": 2, "c": 3})
    '-a-(bc)-|'
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

from rxflow.errors import RxflowError

FRAME_SECONDS = 0.001
"""Virtual time of one frame: 1 ms, as in RxJS."""

_TIME_PROGRESSION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m)")
_UNITS = {"ms": 1, "s": 1000, "m": 60_000}
# Rendering draws gaps longer than this as a time progression, so long diagrams stay short.
_LONG_GAP = 20


class MarbleSyntaxError(RxflowError, ValueError):
    """A marble diagram could not be read; the message points at the character."""

    def __init__(self, diagram: str, position: int, problem: str) -> None:
        pointer = " " * position + "^"
        super().__init__(f"{problem} at position {position}:\n  {diagram}\n  {pointer}")
        self.diagram = diagram
        self.position = position


@attrs.frozen
class Event:
    """One notification at one frame. ``kind`` is ``"N"`` (a value), ``"E"`` (an error,
    in ``value``) or ``"C"`` (completion)."""

    frame: int
    kind: str
    value: Any = None

    def describe(self) -> str:
        if self.kind == "N":
            return f"on_next({self.value!r})"
        if self.kind == "E":
            return f"on_error({self.value!r})"
        return "on_completed()"


@attrs.frozen
class Diagram:
    """A parsed diagram: its events, and where ``^`` and ``!`` were (frames, or None)."""

    events: tuple[Event, ...]
    subscribed: int | None = None
    unsubscribed: int | None = None


def parse(
    diagram: str,
    values: Mapping[str, Any] | None = None,
    error: BaseException | None = None,
    *,
    count_from_caret: bool = True,
) -> Diagram:
    """Read ``diagram`` (see the module's syntax). Frames count from ``^`` if there is one
    (the subscription point of a hot observable), unless ``count_from_caret`` is false."""
    values = values or {}
    origin = _subscription_origin(diagram) if count_from_caret else 0
    events: list[Event] = []
    positions: list[int] = []  # where each event's character is, for error messages
    subscribed = unsubscribed = None
    frame = -origin
    group_start: int | None = None  # the frame a "(" opened
    group_open_at = 0
    position = 0
    while position < len(diagram):
        char = diagram[position]
        if char == " ":
            progression = _TIME_PROGRESSION.match(diagram, position + 1)
            if progression and _ends_with_space_or_end(diagram, progression.end()):
                if group_start is not None:
                    raise MarbleSyntaxError(
                        diagram, position + 1, "time progression inside a group"
                    )
                frame += _frames_of(progression)
                position = progression.end()
                continue
            position += 1
            continue
        if position == 0:
            progression = _TIME_PROGRESSION.match(diagram, 0)
            if progression and _ends_with_space_or_end(diagram, progression.end()):
                frame += _frames_of(progression)
                position = progression.end()
                continue
        at = frame if group_start is None else group_start
        if char == "(":
            if group_start is not None:
                raise MarbleSyntaxError(diagram, position, "a group cannot contain a group")
            group_start, group_open_at = frame, position
        elif char == ")":
            if group_start is None:
                raise MarbleSyntaxError(diagram, position, "')' closes no group")
            if position == group_open_at + 1:
                raise MarbleSyntaxError(diagram, position, "an empty group '()'")
            # RxJS: the group takes as many frames as it has characters.
            frame = group_start + (position - group_open_at + 1)
            group_start = None
            position += 1
            continue
        elif char == "-":
            if group_start is not None:
                raise MarbleSyntaxError(diagram, position, "'-' inside a group")
        elif char == "|":
            events.append(Event(at, "C"))
            positions.append(position)
        elif char == "#":
            events.append(Event(at, "E", error if error is not None else Exception("error")))
            positions.append(position)
        elif char == "^":
            if subscribed is not None:
                raise MarbleSyntaxError(diagram, position, "a second '^'")
            subscribed = at
        elif char == "!":
            if unsubscribed is not None:
                raise MarbleSyntaxError(diagram, position, "a second '!'")
            unsubscribed = at
        else:
            events.append(Event(at, "N", values.get(char, char)))
            positions.append(position)
        if group_start is None:
            frame += 1
        position += 1
    if group_start is not None:
        raise MarbleSyntaxError(diagram, group_open_at, "'(' is never closed")
    _check_nothing_after_the_end(diagram, events, positions)
    return Diagram(tuple(events), subscribed, unsubscribed)


def _subscription_origin(diagram: str) -> int:
    """Frames before ``^``, so that ``^`` is frame 0."""
    return _frames_in(diagram[: diagram.index("^")]) if "^" in diagram else 0


def _frames_in(prefix: str) -> int:
    frames = 0
    position = 0
    while position < len(prefix):
        char = prefix[position]
        if char == " ":
            progression = _TIME_PROGRESSION.match(prefix, position + 1)
            if progression and _ends_with_space_or_end(prefix, progression.end()):
                frames += _frames_of(progression)
                position = progression.end()
                continue
        elif char == "(":
            close = prefix.find(")", position)
            if close < 0:  # "^" is inside this group: the group's frame is frame 0
                break
            frames += close - position + 1
            position = close + 1
            continue
        else:
            frames += 1
        position += 1
    return frames


def _ends_with_space_or_end(diagram: str, end: int) -> bool:
    return end == len(diagram) or diagram[end] == " "


def _frames_of(progression: re.Match[str]) -> int:
    return round(float(progression.group(1)) * _UNITS[progression.group(2)])


def _check_nothing_after_the_end(
    diagram: str, events: Sequence[Event], positions: Sequence[int]
) -> None:
    for index, event in enumerate(events[:-1]):
        if event.kind != "N":
            raise MarbleSyntaxError(diagram, positions[index + 1], "nothing may follow '|' or '#'")


def parse_subscription(diagram: str) -> tuple[int | None, int | None]:
    """A subscription diagram such as ``"--^---!"``: the frames of ``^`` and ``!``, counted
    from the diagram's start (None where there is none)."""
    parsed = parse(diagram, count_from_caret=False)
    if parsed.events:
        raise MarbleSyntaxError(diagram, 0, "a subscription diagram has only '-', '^' and '!'")
    return parsed.subscribed, parsed.unsubscribed


# -- drawing ---------------------------------------------------------------------------------


class Legend:
    """Characters for values: from ``values`` first, else the value itself if it is one
    character, else a fresh letter, remembered so both diagrams use the same one."""

    def __init__(self, values: Mapping[str, Any] | None = None) -> None:
        self.values = dict(values or {})
        self.assigned: dict[str, Any] = {}

    def char_for(self, value: Any) -> str:
        for char, known in (*self.values.items(), *self.assigned.items()):
            if _same(known, value):
                return char
        if (
            isinstance(value, str)
            and len(value) == 1
            and value not in "-|#()^! "
            and value not in self.values
            and value not in self.assigned
        ):
            return value
        char = next(
            c
            for c in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
            if c not in self.values and c not in self.assigned
        )
        self.assigned[char] = value
        return char

    def lines(self) -> list[str]:
        return [f"  {char} = {value!r}" for char, value in self.assigned.items()]


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(a == b) and type(a) is type(b)
    except Exception:
        return a is b


def token(events: Sequence[Event], legend: Legend) -> str:
    """The characters for the events of one frame: one character, or a group."""
    chars = "".join(
        legend.char_for(event.value) if event.kind == "N" else ("|" if event.kind == "C" else "#")
        for event in events
    )
    return chars if len(chars) == 1 else f"({chars})"


def by_frame(events: Iterable[Event]) -> dict[int, list[Event]]:
    frames: dict[int, list[Event]] = {}
    for event in events:
        frames.setdefault(event.frame, []).append(event)
    return frames


def render(
    events: Iterable[Event], values: Mapping[str, Any] | None = None, legend: Legend | None = None
) -> str:
    """Draw ``events`` as a diagram that :func:`parse` reads back to the same events
    (given the same ``values``), with long silences drawn as time progressions.

    Events closer together than a group's width cannot be drawn exactly; they are drawn
    right after the group (and :func:`parse` would read them later).
    """
    legend = legend or Legend(values)
    diagram = ""
    cursor = 0
    for frame, frame_events in sorted(by_frame(events).items()):
        diagram += _gap(frame - cursor, at_start=not diagram)
        drawn = token(frame_events, legend)
        diagram += drawn
        cursor = max(cursor, frame) + len(drawn)
    return diagram


def _gap(frames: int, *, at_start: bool) -> str:
    if frames <= 0:
        return ""
    if frames > _LONG_GAP:
        return f"{frames}ms " if at_start else f" {frames}ms "
    return "-" * frames
