"""The parser reads diagrams as RxJS 7's ``TestScheduler.run`` does (``parseMarbles`` and
``parseMarblesAsSubscriptions`` in rxjs/src/internal/testing/TestScheduler.ts).

In run mode one frame is 1 ms, spaces take no time, every other character of a diagram
takes one frame (a group's parentheses too, its notifications all at the group's frame), a
time progression adds its duration as it is written (fractions kept), and ``!`` belongs only
in subscription diagrams, where it takes no frame. The expected frames below are computed
the way RxJS computes them: the same float additions in the same order.
"""

from __future__ import annotations

import re

import pytest
from reactivex import operators as ops

from rxflow.testing import MarbleContext, MarbleSyntaxError, parse
from rxflow.testing.marbles import parse_subscription


def frames(diagram: str) -> list[tuple[float, str]]:
    return [(e.frame, e.kind if e.kind != "N" else e.value) for e in parse(diagram).events]


# -- time progressions ------------------------------------------------------------------------


def test_a_fractional_time_progression_keeps_its_fraction() -> None:
    # RxJS: frame 10.2 for a, which takes one frame, then 1.2 * 1000 frames.
    assert frames("10.2ms a 1.2s b") == [(10.2, "a"), (10.2 + 1 + 1.2 * 1000, "b")]
    # Half frames are not rounded to even (banker's rounding made these 0 and 2).
    assert frames("0.5ms a") == [(0.5, "a")]
    assert frames("2.5ms a") == [(2.5, "a")]


def test_minutes_are_multiplied_as_rxjs_does() -> None:
    # duration * 1000 * 60, left to right, as in RxJS.
    assert frames("0.7m a") == [(0.7 * 1000 * 60, "a")]
    assert frames("1m a") == [(60_000, "a")]


def test_whole_progressions_stay_whole_frames() -> None:
    (event,) = parse("1.5s a").events
    assert event.frame == 1500
    assert isinstance(event.frame, int)


def test_a_time_progression_needs_a_space_after_it() -> None:
    # RxJS's pattern is /^([0-9]+(?:\.[0-9]+)?)(ms|s|m) /: at the end of a diagram, or
    # followed by anything but a space, the characters are values.
    assert frames("a 10ms") == [(0, "a"), (1, "1"), (2, "0"), (3, "m"), (4, "s")]
    assert frames("a 5ms|") == [(0, "a"), (1, "5"), (2, "m"), (3, "s"), (4, "C")]


def test_a_time_progression_needs_a_space_or_the_start_before_it() -> None:
    assert frames("a5ms b") == [(0, "a"), (1, "5"), (2, "m"), (3, "s"), (4, "b")]
    assert frames("5ms a") == [(5, "a")]
    assert frames("   5ms a") == [(5, "a")]


def test_consecutive_progressions_add_up() -> None:
    assert frames("a 1ms 2ms b") == [(0, "a"), (4, "b")]


# -- groups and spaces ------------------------------------------------------------------------


def test_spaces_inside_a_group_take_no_frame() -> None:
    # '(' ')' and a and b: four frames; the space none.
    assert frames("(a b)-c|") == [(0, "a"), (0, "b"), (5, "c"), (6, "C")]
    assert frames("( a  b )c") == frames("(ab)c")


def test_spaces_in_a_group_before_the_subscription_point_take_no_frame() -> None:
    assert frames("(a b)^c") == [(-4, "a"), (-4, "b"), (1, "c")]


# -- '!' and '^' ------------------------------------------------------------------------------


@pytest.mark.parametrize("diagram", ["-a-!", "^-a-!-|", "(a!)"])
def test_unsubscription_is_refused_in_notification_diagrams(diagram: str) -> None:
    with pytest.raises(MarbleSyntaxError, match=r"'!' .*subscription diagram") as caught:
        parse(diagram)
    assert caught.value.position == diagram.index("!")


def test_hot_and_cold_refuse_unsubscription_as_rxjs_does() -> None:
    m = MarbleContext()
    with pytest.raises(MarbleSyntaxError, match=re.escape("m.expect(source, '^--!')")):
        m.hot("-a-^-b-!")
    with pytest.raises(MarbleSyntaxError, match="'!'"):
        m.cold("-a-!")
    with pytest.raises(MarbleSyntaxError, match="'!'"):
        m.expect(m.cold("-a|")).to_be("-a!")


def test_cold_refuses_a_subscription_point_and_says_what_to_use() -> None:
    with pytest.raises(MarbleSyntaxError, match=r"hot\(\)") as caught:
        MarbleContext().cold("--^-a|")
    assert caught.value.position == 2


def test_unsubscription_takes_no_frame_in_a_subscription_diagram() -> None:
    # RxJS advances the frame for '^' but not for '!'.
    assert parse_subscription("--!^") == (2, 2)
    assert parse_subscription("^-!") == (0, 2)
    assert parse_subscription("(^!)") == (0, 0)


def test_subscription_diagrams_ignore_spaces_and_keep_fractions() -> None:
    assert parse_subscription("-- ^ -- !") == (2, 5)
    assert parse_subscription("0.5ms ^ 1.5ms !") == (0.5, 0.5 + 1 + 1.5)


@pytest.mark.parametrize(
    ("diagram", "position", "problem"),
    [
        ("^-a-!", 2, "found 'a'"),
        ("^-|", 2, "found '|'"),
        ("^-^", 2, "a second '^'"),
        ("^-!-!", 4, "a second '!'"),
        ("--!-^", 2, "'!' comes before '^'"),
    ],
)
def test_subscription_diagram_errors_point_at_the_character(
    diagram: str, position: int, problem: str
) -> None:
    with pytest.raises(MarbleSyntaxError, match=re.escape(problem)) as caught:
        parse_subscription(diagram)
    assert caught.value.position == position


# -- the same in virtual time -----------------------------------------------------------------


def test_fractional_frames_run_in_virtual_time() -> None:
    with MarbleContext() as m:
        source = m.cold("0.5ms a 0.25ms b|")
        m.expect(source).to_be("0.5ms a 0.25ms b|")
        m.expect(m.cold("a|").pipe(ops.delay(0.0005, scheduler=m.scheduler))).to_be("0.5ms a|")


def test_fractional_frames_that_float_sums_blur_still_match() -> None:
    # 0.1 + 0.2 is 0.30000000000000004; reactivex's clock counts whole microseconds (a
    # thousandth of a frame), so the expectation is compared at that resolution.
    with MarbleContext() as m:
        m.expect(m.cold("0.3ms a|")).to_be("0.1ms 0.2ms a|")


def test_a_fractional_mismatch_is_drawn_with_its_fractions() -> None:
    m = MarbleContext()
    m.expect(m.cold("0.5ms a|")).to_be("1.5ms a|")
    with pytest.raises(AssertionError) as caught:
        m.flush()
    message = str(caught.value)
    assert "first difference at frame 0.5" in message
    assert "frame 0.5: expected nothing, got on_next('a')" in message


# -- where rxflow follows the diagram rather than RxJS's character count ------------------------


def test_the_subscription_point_is_frame_0_whatever_comes_before_it() -> None:
    # RxJS computes the offset of '^' in characters, so spaces and time progressions before
    # it shift its hot events; the diagram says '^' is frame 0, and so it is here.
    assert frames("-a 10ms ^ b") == [(-11, "a"), (1, "b")]
    assert frames("- a - ^ b") == [(-2, "a"), (1, "b")]
    assert frames("(^a)-b") == [(0, "a"), (5, "b")]


def test_hot_events_long_before_the_subscription_point_reach_nobody() -> None:
    with MarbleContext() as m:
        source = m.hot("a 2s ^-b|")
        m.expect(source).to_be("--b|")
        m.expect_subscriptions(source.subscriptions).to_be("^--!")
