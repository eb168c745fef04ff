"""The diagram parser and renderer: syntax, errors that point, and the round trip."""

from __future__ import annotations

import re

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rxflow.testing import MarbleSyntaxError, parse, render
from rxflow.testing.marbles import Event


def test_values_come_from_the_mapping_or_are_the_characters() -> None:
    events = parse("a-1-b|", values={"a": {"id": 1}, "1": 1.5}).events
    assert [e.value for e in events[:3]] == [{"id": 1}, 1.5, "b"]


def test_spaces_are_ignored() -> None:
    assert parse("  -a - b|").events == parse("-a-b|").events


def test_the_error_given_is_the_one_raised() -> None:
    boom = KeyError("boom")
    (event,) = parse("---#", error=boom).events
    assert (event.frame, event.kind, event.value) == (3, "E", boom)


@pytest.mark.parametrize(
    ("diagram", "position", "problem"),
    [
        ("-a-(bc", 3, "'(' is never closed"),
        ("-a)-", 2, "')' closes no group"),
        ("-(a(b))", 3, "a group cannot contain a group"),
        ("-()-", 2, "an empty group"),
        ("-a|b", 3, "nothing may follow"),
        ("^-^", 2, "a second '^'"),
        ("(a 10ms b)", 3, "time progression inside a group"),
    ],
)
def test_errors_point_at_the_offending_character(diagram: str, position: int, problem: str) -> None:
    with pytest.raises(MarbleSyntaxError, match=re.escape(problem)) as caught:
        parse(diagram)
    assert caught.value.position == position
    assert str(caught.value).endswith(f"  {diagram}\n  {' ' * position}^")


def test_long_silences_are_drawn_as_time_progressions() -> None:
    events = [Event(0, "N", "a"), Event(500, "N", "b"), Event(501, "C")]
    assert render(events) == "a 499ms b|"
    assert parse(render(events)).events == tuple(events)


def test_values_that_are_not_characters_get_letters_from_the_mapping() -> None:
    events = [Event(1, "N", 10), Event(3, "N", 20)]
    assert render(events, values={"x": 10, "y": 20}) == "-x-y"


# -- the round trip ---------------------------------------------------------------------------


def test_a_hot_diagram_is_drawn_with_its_subscription_point() -> None:
    events = [Event(-3, "N", "a"), Event(-1, "N", "b"), Event(2, "N", "c"), Event(3, "C")]
    assert render(events) == "a-b^-c|"
    assert parse(render(events)).events == tuple(events)


def test_a_value_at_the_subscription_point_shares_its_group() -> None:
    events = [Event(-2, "N", "a"), Event(0, "N", "b"), Event(0, "N", "c"), Event(5, "C")]
    assert render(events) == "a-(^bc)|"
    assert parse(render(events)).events == tuple(events)


def test_a_hot_diagram_with_only_earlier_events_ends_with_its_subscription_point() -> None:
    events = [Event(-30, "N", "a"), Event(-2, "N", "b")]
    assert render(events) == "a 27ms b-^"
    assert parse(render(events)).events == tuple(events)


@pytest.mark.parametrize(
    "chars",
    ["1s", "5m", "10ms", "1.5s", "2m"],
)
def test_digit_values_before_a_long_silence_are_not_read_as_time(chars: str) -> None:
    events = [Event(i, "N", char) for i, char in enumerate(chars)]
    events.append(Event(100, "C"))
    diagram = render(events)
    assert parse(diagram).events == tuple(events), diagram


def test_digit_values_after_a_long_silence_are_not_read_as_time() -> None:
    events = [Event(0, "N", "a"), Event(50, "N", "1"), Event(51, "N", "s"), Event(90, "C")]
    diagram = render(events)
    assert parse(diagram).events == tuple(events), diagram


def test_fractional_frames_are_drawn_as_time_progressions() -> None:
    events = [Event(0.5, "N", "a"), Event(10.2, "N", "b"), Event(11.2, "C")]
    assert render(events) == "0.5ms a 8.7ms b|"


# RxJS characters that mean something when they follow a space: digits, a decimal point
# and the units, which make up time progressions.
values = st.sampled_from("abcd0123456789.ms")


def groups(draw: st.DrawFn, count: int) -> list[list[str]]:
    return [draw(st.lists(values, min_size=1, max_size=3)) for _ in range(count)]


def width(group: list[str], *, with_caret: bool = False) -> int:
    """Frames a drawn group takes: one character, or its characters and the parentheses."""
    chars = len(group) + with_caret
    return 1 if chars == 1 else chars + 2


@st.composite
def drawable_events(draw: st.DrawFn) -> list[Event]:
    """Events a diagram can express: one frame may hold several (a group), and the next
    frame with events comes after the group's width, as RxJS's syntax requires. A hot
    diagram's events before its subscription point have negative frames; '^' takes a frame
    of its own, or joins the group at frame 0."""
    events: list[Event] = []
    if draw(st.booleans()):  # hot, with events before "^"
        early: list[Event] = []
        frame = 0
        for group in groups(draw, draw(st.integers(1, 4))):
            early.extend(Event(frame, "N", value) for value in group)
            frame += width(group) + draw(st.integers(0, 40))
        events = [attrs.evolve(event, frame=event.frame - frame) for event in early]
    hot = bool(events)
    frame = draw(st.integers(0, 5))
    for group in groups(draw, draw(st.integers(0, 8))):
        events.extend(Event(frame, "N", value) for value in group)
        frame += width(group, with_caret=hot and frame == 0) + draw(st.integers(0, 40))
    ending = draw(st.sampled_from(["none", "complete", "error", "complete-in-group"]))
    if ending == "complete":
        events.append(Event(frame, "C"))
    elif ending == "error":
        events.append(Event(frame, "E", ERROR))
    elif ending == "complete-in-group" and events and events[-1].frame >= 0:
        last = events[-1].frame
        events = (
            [e for e in events if e.frame != last]
            + [e for e in events if e.frame == last]
            + [Event(last, "C")]
        )
    return events


ERROR = Exception("error")


@settings(max_examples=500)
@given(drawable_events())
def test_render_then_parse_gives_the_same_events(events: list[Event]) -> None:
    diagram = render(events)
    parsed = parse(diagram, error=ERROR).events
    assert parsed == tuple(events), diagram
