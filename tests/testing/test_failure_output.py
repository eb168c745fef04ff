"""What a user sees when a marble test fails."""

from __future__ import annotations

import pytest
from reactivex import operators as ops

from rxflow.testing import MarbleContext, MarbleMismatch


def test_a_mismatch_draws_both_diagrams_aligned_and_lists_the_differences() -> None:
    m = MarbleContext()
    source = m.cold("-a--b-c|", values={"a": 1, "b": 2, "c": 3})
    m.expect(source.pipe(ops.map(lambda n: n * 10))).to_be(
        "-a--b--c|", values={"a": 10, "b": 20, "c": 30}
    )
    with pytest.raises(MarbleMismatch) as caught:
        m.flush()
    assert str(caught.value) == "\n".join(
        [
            "the observable did not match its marble diagram (1 frame = 1 ms); "
            "first difference at frame 6:",
            "  expected: -a--b--c|",
            "  actual:   -a--b-c|-",
            "                  ^",
            "differences:",
            "  frame 6: expected nothing, got on_next(30)",
            "  frame 7: expected on_next(30), got on_completed()",
            "  frame 8: expected on_completed(), got nothing",
        ]
    )


def test_values_without_a_character_get_a_legend() -> None:
    m = MarbleContext()
    m.expect(m.cold("-a-b|").pipe(ops.map(lambda c: {"key": c}))).to_be(
        "-x-y|", values={"x": {"key": "a"}, "y": {"key": "c"}}
    )
    with pytest.raises(MarbleMismatch) as caught:
        m.flush()
    message = str(caught.value)
    assert "  expected: -x-y|\n  actual:   -x-a|" in message
    assert "legend:\n  a = {'key': 'b'}" in message


def test_long_diagrams_stay_short() -> None:
    m = MarbleContext()
    m.expect(m.cold("a 999ms b|").pipe(ops.map(str.upper))).to_be("A 999ms b|")
    with pytest.raises(MarbleMismatch) as caught:
        m.flush()
    assert "  expected: A 999ms b|\n  actual:   A 999ms B|" in str(caught.value)


def test_subscription_mismatches_are_drawn_too() -> None:
    m = MarbleContext()
    source = m.cold("--a--|")
    m.expect(source.pipe(ops.take(1))).to_be("--(a|)")
    m.expect_subscriptions(source.subscriptions).to_be("^----!")
    with pytest.raises(MarbleMismatch, match=r"expected: \^----!\n  actual:   \^-!"):
        m.flush()


def test_an_expectation_without_to_be_is_reported() -> None:
    m = MarbleContext()
    m.expect(m.cold("a|"))
    with pytest.raises(AssertionError, match=r"without \.to_be"):
        m.flush()
