"""The diagram parser and renderer: syntax, errors that point, and the round trip."""

from __future__ import annotations

import re

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

values = st.sampled_from("abcdefgh")


@st.composite
def drawable_events(draw: st.DrawFn) -> list[Event]:
    """Events a diagram can express: one frame may hold several (a group), and the next
    frame with events comes after the group's width, as RxJS's syntax requires."""
    events: list[Event] = []
    frame = draw(st.integers(0, 5))
    for _ in range(draw(st.integers(0, 8))):
        group = draw(st.lists(values, min_size=1, max_size=3))
        events.extend(Event(frame, "N", value) for value in group)
        width = 1 if len(group) == 1 else len(group) + 2
        frame += width + draw(st.integers(0, 40))
    ending = draw(st.sampled_from(["none", "complete", "error", "complete-in-group"]))
    if ending == "complete":
        events.append(Event(frame, "C"))
    elif ending == "error":
        events.append(Event(frame, "E", ERROR))
    elif ending == "complete-in-group" and events:
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
