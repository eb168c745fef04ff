"""How far a MarbleContext runs virtual time: as far as the test needs (RxJS's run mode has
no frame limit), and an error naming the limit when one is set and reached."""

from __future__ import annotations

import re

import pytest
import reactivex
from reactivex import operators as ops

from rxflow.testing import MarbleContext, MarbleTimeLimitError


def test_a_minute_long_diagram_runs_to_its_end() -> None:
    with MarbleContext() as m:
        m.expect(m.cold("a 1m b|")).to_be("a 1m b|")


def test_an_hour_of_virtual_time_is_no_problem() -> None:
    with MarbleContext() as m:
        late = m.cold("a|").pipe(ops.delay(3600.0, scheduler=m.scheduler))
        m.expect(late).to_be("3600s a|")


def test_a_frame_limit_that_is_reached_is_an_error_naming_it() -> None:
    m = MarbleContext(max_frames=100)
    m.expect(m.cold("a 200ms b|")).to_be("a 200ms b|")
    with pytest.raises(MarbleTimeLimitError) as caught:
        m.flush()
    message = str(caught.value)
    assert "max_frames=100" in message
    assert "MarbleContext(max_frames=" in message  # how to raise it
    assert "frame 201" in message  # where the next work was due


def test_a_frame_limit_that_is_not_reached_changes_nothing() -> None:
    with MarbleContext(max_frames=201) as m:
        m.expect(m.cold("a 200ms b")).to_be("a 200ms b")


def test_an_endless_source_is_stopped_with_advice() -> None:
    m = MarbleContext(max_actions=1000)
    m.expect(reactivex.interval(0.001, scheduler=m.scheduler)).to_be("-")
    with pytest.raises(MarbleTimeLimitError) as caught:
        m.flush()
    message = str(caught.value)
    assert "max_actions=1000" in message
    assert "MarbleContext(max_actions=" in message
    assert re.search(r"'\^-*!'", message)  # unsubscribe it with a subscription diagram


def test_an_endless_source_with_an_unsubscription_needs_no_limit() -> None:
    with MarbleContext(max_actions=10) as m:
        m.expect(reactivex.interval(0.001, scheduler=m.scheduler), "^--!").to_be(
            "-01", {"0": 0, "1": 1}
        )


@pytest.mark.parametrize(
    ("arguments", "problem"),
    [
        ({"max_frames": 0}, "max_frames must be a positive number of frames or None"),
        ({"max_frames": -5}, "max_frames must be a positive number of frames or None"),
        ({"max_actions": 0}, "max_actions must be a positive whole number or None"),
        ({"max_actions": 1.5}, "max_actions must be a positive whole number or None"),
    ],
)
def test_bad_limits_are_refused(arguments: dict[str, float], problem: str) -> None:
    with pytest.raises(ValueError, match=re.escape(problem)):
        MarbleContext(**arguments)  # type: ignore[arg-type]
