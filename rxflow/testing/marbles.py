"""RxJS marble syntax: parse a diagram into timed notifications, and draw them back.

The diagrams are read as RxJS 7's ``TestScheduler.run`` reads them. One character is one
frame (1 ms of virtual time):

* ``-`` nothing happens in this frame; spaces take no time (use them to align diagrams);
* ``a``, ``1``, any other character: a value, looked up in ``values`` (the character
  itself when ``values`` has no entry for it);
* ``|`` completion; ``#`` an error (``error=``, or a generic ``Exception("error")``);
* ``(ab|)`` several notifications in one frame; as in RxJS, the group then takes as many
  frames as it has characters, parentheses included and spaces not;
* ``^`` the subscription point of a hot observable (frame 0; earlier frames are negative);
* ``!`` the unsubscription point, only in subscription diagrams (``^---!``), where it
  takes no frame;
* ``10ms``, ``1.5s``, ``2m`` at the start or after a space, and followed by a space: time
  passes by that much, fractions kept (``0.5ms`` is half a frame).

Where RxJS accepts a diagram that cannot mean anything (``-a|b``, ``(a(b))``, ``(a-b)``, a
time progression inside a group), :class:`MarbleSyntaxError` says what is wrong instead.

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
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import attrs

from rxflow.errors import MarbleSyntaxError

__all__ = [
    "FRAME_SECONDS",
    "Diagram",
    "Event",
    "Legend",
    "MarbleSyntaxError",
    "parse",
    "parse_subscription",
    "render",
]

FRAME_SECONDS = 0.001
"""Virtual time of one frame: 1 ms, as in RxJS."""

# RxJS's pattern: the trailing space is part of it. ASCII digits only, as in RxJS.
_TIME_PROGRESSION = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m) ")
_DIGITS = "0123456789"
# Rendering draws gaps longer than this as a time progression, so long diagrams stay short.
_LONG_GAP = 20


@attrs.frozen
class Event:
    """One notification at one frame. ``kind`` is ``"N"`` (a value), ``"E"`` (an error,
    in ``value``) or ``"C"`` (completion)."""

    frame: float  # whole frames are ints; a fractional time progression makes a float
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
    subscribed: float | None = None
    unsubscribed: float | None = None


def parse(
    diagram: str,
    values: Mapping[str, Any] | None = None,
    error: BaseException | None = None,
    *,
    count_from_caret: bool = True,
) -> Diagram:
    """Read ``diagram`` (see the module's syntax). Frames count from ``^`` if there is one
    (the subscription point of a hot observable), unless ``count_from_caret`` is false.

    ``!`` is refused: it belongs in subscription diagrams (:func:`parse_subscription`).

    Example:
        >>> [(e.frame, e.value) for e in parse("-a-^-b 1.5ms c").events]
        [(-2, 'a'), (2, 'b'), (4.5, 'c')]
    """
    read = _read(diagram, values or {}, error, start=0)
    if not count_from_caret or read.subscribed is None or read.subscribed == 0:
        return read
    # Count again from minus the frames before "^", as RxJS starts its count, so that the
    # frames (fractions included) are the same floats as RxJS's.
    origin = read.subscribed
    return attrs.evolve(_read(diagram, values or {}, error, start=-origin), subscribed=0)


def _read(
    diagram: str, values: Mapping[str, Any], error: BaseException | None, start: float
) -> Diagram:
    events: list[Event] = []
    positions: list[int] = []  # where each event's character is, for error messages
    subscribed: float | None = None
    for position, char, at, grouped in _timeline(diagram, start, empty_groups=False):
        if char == "-":
            if grouped:
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
            raise MarbleSyntaxError(
                diagram,
                position,
                "'!' (unsubscription) belongs in a subscription diagram, as in RxJS: "
                "pass it to expect, e.g. m.expect(source, '^--!')",
            )
        else:
            events.append(Event(at, "N", values.get(char, char)))
            positions.append(position)
    _check_nothing_after_the_end(diagram, events, positions)
    return Diagram(tuple(events), subscribed, None)


@attrs.define
class _Group:
    frame: float
    position: int
    size: int = 0  # characters inside, spaces not counted


def _timeline(
    diagram: str, start: float, *, empty_groups: bool
) -> Iterator[tuple[int, str, float, bool]]:
    """``(position, character, frame, inside a group)`` for each character of ``diagram``
    but spaces, parentheses and time progressions, frames counted from ``start`` as RxJS
    counts them. Groups are checked here (no nesting, no time inside, closed; not empty
    unless ``empty_groups``); what a character means is the caller's."""
    frame = start
    group: _Group | None = None
    for position, char, duration in _scan(diagram):
        if not char:
            if group is not None:
                raise MarbleSyntaxError(diagram, position, "time progression inside a group")
            frame += duration
            continue
        if char == "(":
            if group is not None:
                raise MarbleSyntaxError(diagram, position, "a group cannot contain a group")
            group = _Group(frame, position)
        elif char == ")":
            if group is None:
                raise MarbleSyntaxError(diagram, position, "')' closes no group")
            if group.size == 0 and not empty_groups:
                raise MarbleSyntaxError(diagram, position, "an empty group '()'")
            group = None
        else:
            if group is not None:
                group.size += 1
            # The notifications of a group all happen at the group's first frame.
            yield position, char, frame if group is None else group.frame, group is not None
            if char == "!":
                continue  # RxJS: '!' takes no frame
        # As in RxJS, every other character but a space takes a frame, parentheses included.
        frame += 1
    if group is not None:
        raise MarbleSyntaxError(diagram, group.position, "'(' is never closed")


def _scan(diagram: str) -> Iterator[tuple[int, str, float]]:
    """``(position, character, 0)`` for each character that is not a space, and
    ``(position, "", frames)`` for a time progression. As in RxJS, a progression starts
    the diagram or follows a space, and a space ends it (``"a 10ms"`` is five values)."""
    position = 0
    while position < len(diagram):
        char = diagram[position]
        if char == " ":
            position += 1
            continue
        if char in _DIGITS and (position == 0 or diagram[position - 1] == " "):
            progression = _TIME_PROGRESSION.match(diagram, position)
            if progression:
                yield position, "", _frames_of(progression)
                position = progression.end()
                continue
        yield position, char, 0
        position += 1


def _frames_of(progression: re.Match[str]) -> float:
    """The progression's frames, computed as RxJS computes them (fractions kept)."""
    duration = float(progression.group(1))
    unit = progression.group(2)
    if unit == "s":
        duration = duration * 1000
    elif unit == "m":
        duration = duration * 1000 * 60
    return int(duration) if duration.is_integer() else duration


def _check_nothing_after_the_end(
    diagram: str, events: Sequence[Event], positions: Sequence[int]
) -> None:
    for index, event in enumerate(events[:-1]):
        if event.kind != "N":
            raise MarbleSyntaxError(diagram, positions[index + 1], "nothing may follow '|' or '#'")


def parse_subscription(diagram: str) -> tuple[float | None, float | None]:
    """A subscription diagram such as ``"--^---!"``: the frames of ``^`` and ``!``, counted
    from the diagram's start (None where there is none). As in RxJS, ``!`` takes no frame.

    Example:
        >>> parse_subscription("--^ 10ms !")
        (2, 13)
    """
    subscribed: float | None = None
    unsubscribed: float | None = None
    unsubscribed_at = 0
    for position, char, at, _grouped in _timeline(diagram, 0, empty_groups=True):
        if char == "^":
            if subscribed is not None:
                raise MarbleSyntaxError(diagram, position, "a second '^'")
            subscribed = at
        elif char == "!":
            if unsubscribed is not None:
                raise MarbleSyntaxError(diagram, position, "a second '!'")
            unsubscribed, unsubscribed_at = at, position
        elif char != "-":
            raise MarbleSyntaxError(
                diagram,
                position,
                f"a subscription diagram has only '-', '^', '!', groups and time "
                f"progressions, found {char!r}",
            )
    if subscribed is not None and unsubscribed is not None and unsubscribed < subscribed:
        raise MarbleSyntaxError(diagram, unsubscribed_at, "'!' comes before '^'")
    return subscribed, unsubscribed


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


def token(events: Sequence[Event], legend: Legend, *, caret: bool = False) -> str:
    """The characters for the events of one frame: one character, or a group (with the
    subscription point ``^`` first if ``caret``)."""
    chars = "^" if caret else ""
    chars += "".join(
        legend.char_for(event.value) if event.kind == "N" else ("|" if event.kind == "C" else "#")
        for event in events
    )
    return chars if len(chars) == 1 else f"({chars})"


def by_frame(events: Iterable[Event]) -> dict[float, list[Event]]:
    frames: dict[float, list[Event]] = {}
    for event in events:
        frames.setdefault(event.frame, []).append(event)
    return frames


def render(
    events: Iterable[Event], values: Mapping[str, Any] | None = None, legend: Legend | None = None
) -> str:
    """Draw ``events`` as a diagram that :func:`parse` reads back to the same events
    (given the same ``values``), with long silences drawn as time progressions. Events
    before frame 0 make a hot diagram: they come first, then ``^`` at frame 0.

    Events closer together than a group's width cannot be drawn exactly; they are drawn
    right after the group (and :func:`parse` would read them later).

    Example:
        >>> render([Event(-2, "N", "a"), Event(1, "N", "b"), Event(40, "C")])
        'a-^b 38ms |'
    """
    legend = legend or Legend(values)
    frames = sorted(by_frame(events).items())
    caret_due = bool(frames) and frames[0][0] < 0
    diagram = ""
    cursor = frames[0][0] if caret_due else 0
    for frame, frame_events in frames:
        caret = caret_due and frame == 0  # "^" joins this frame's group
        if caret_due and frame > 0:  # "^" takes a frame of its own, frame 0
            diagram += draw_gap(-cursor, before=diagram) + "^"
            cursor = max(cursor, 0) + 1
        caret_due = caret_due and frame < 0
        diagram += draw_gap(frame - cursor, before=diagram)
        drawn = token(frame_events, legend, caret=caret)
        diagram += drawn
        cursor = max(cursor, frame) + len(drawn)
    if caret_due:  # only events before the subscription point
        diagram += draw_gap(-cursor, before=diagram) + "^"
    return diagram


# A value character right after a space (or at the start) followed by more that reads as a
# time progression once a space comes: "1s" drawn before " 30ms " would be read as time.
_LOOKS_LIKE_TIME = re.compile(r"(?:^| )[0-9]+(?:\.[0-9]+)?(?:ms|s|m)$")


def draw_gap(frames: float, *, before: str = "") -> str:
    """``frames`` of silence, drawn after ``before``: dashes, or a time progression when the
    gap is long or not a whole number of frames."""
    if frames <= 0:
        return ""
    if (isinstance(frames, int) or frames.is_integer()) and frames <= _LONG_GAP:
        return "-" * int(frames)
    if frames >= 1 and _LOOKS_LIKE_TIME.search(before):
        # A dash first, so that the values before the space stay values.
        return "-" + draw_gap(frames - 1, before=before + "-")
    return f"{' ' if before else ''}{_number(frames)}ms "


def _number(frames: float) -> str:
    if isinstance(frames, int) or frames.is_integer():
        return str(int(frames))
    # Six decimals: far finer than reactivex's clock (a microsecond, 0.001 frame), and
    # short of the float noise of sums such as 0.1 + 0.2.
    return f"{frames:.6f}".rstrip("0").rstrip(".")


# -- comparing frames ---------------------------------------------------------------------------

_TICKS_PER_FRAME = 1000
"""reactivex's virtual clock counts whole microseconds (it converts to ``datetime``):
a thousandth of a frame. Frames are compared, and times read back, at that resolution."""


def frame_of_seconds(seconds: float) -> float:
    """The frame at ``seconds`` of virtual time, to the clock's microsecond: a whole
    number of frames is an ``int``.

    Example:
        >>> frame_of_seconds(0.0102), frame_of_seconds(0.0029999999)
        (10.2, 3)
    """
    return normalize_frame(seconds / FRAME_SECONDS)


def normalize_frame(frame: float) -> float:
    """``frame`` rounded to the clock's resolution (1 µs); whole frames become ``int``."""
    ticks = round(frame * _TICKS_PER_FRAME)
    whole, fraction = divmod(ticks, _TICKS_PER_FRAME)
    return whole if fraction == 0 else ticks / _TICKS_PER_FRAME
