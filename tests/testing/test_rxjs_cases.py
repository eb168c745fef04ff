"""Cases from RxJS's own marble documentation and operator specs, against reactivex.

The diagrams and expected outputs are RxJS's (the guide "Testing RxJS Code with Marble
Diagrams", and spec/operators/debounceTime-spec.ts and bufferTime-spec.ts in
ReactiveX/rxjs); the code is ours. RxJS specs written before ``run()`` count 10 time units
per frame, so ``debounceTime(20)`` there is 2 frames here (0.002 s: one frame is 1 ms).
Where reactivex behaves differently from RxJS, the test says so and asserts reactivex.
"""

from __future__ import annotations

from typing import Any

import reactivex
from reactivex import operators as ops

from rxflow.testing import MarbleContext, parse
from rxflow.testing.marbles import parse_subscription

# -- the guide's syntax examples ------------------------------------------------------------


def frames(diagram: str) -> list[tuple[int, str]]:
    return [(e.frame, e.kind if e.kind != "N" else e.value) for e in parse(diagram).events]


def test_guide_values_and_completion() -> None:
    assert frames("--a--b--|") == [(2, "a"), (5, "b"), (8, "C")]


def test_guide_values_and_error() -> None:
    assert frames("--a--b--#") == [(2, "a"), (5, "b"), (8, "E")]


def test_guide_hot_frames_before_the_subscription_point_are_negative() -> None:
    assert frames("-a-^-b--|") == [(-2, "a"), (2, "b"), (5, "C")]


def test_guide_a_group_takes_its_width_in_frames() -> None:
    assert frames("--(abc)-|") == [(2, "a"), (2, "b"), (2, "c"), (8, "C")]
    assert frames("-----(a|)") == [(5, "a"), (5, "C")]


def test_guide_time_progression() -> None:
    # The guide says 'a 9ms b 9s c|' emits c "on frame 10,012"; by its own rules (b at 10
    # takes a frame, then 9 s = 9,000 frames) c is at 9,011, which is what RxJS computes.
    assert frames("a 9ms b 9s c|") == [(0, "a"), (10, "b"), (9011, "c"), (9012, "C")]
    assert frames("--a 2.5m b") == [(2, "a"), (150_003, "b")]


def test_guide_subscription_diagrams() -> None:
    assert parse_subscription("--^--") == (2, None)
    assert parse_subscription("--^--!-") == (2, 5)
    assert parse_subscription("500ms ^ 1s !") == (500, 1501)


# -- the guide's tests ----------------------------------------------------------------------


def test_guide_throttle_time() -> None:
    with MarbleContext() as m:
        e1 = m.cold("-a--b--c---|")
        # RxJS throttleTime(3) gives '-a-----c---|': b at frame 4 is still inside the
        # window opened at 1. reactivex's throttle_first lets an item through once the
        # duration has passed (4 - 1 >= 3), so b passes and c, 3 frames later, too.
        m.expect(e1.pipe(ops.throttle_first(0.003, scheduler=m.scheduler))).to_be("-a--b--c---|")
        m.expect_subscriptions(e1.subscriptions).to_be("^----------!")


def test_guide_hot_source_with_two_late_subscribers() -> None:
    with MarbleContext() as m:
        source = m.hot("--a--a--a--a--a--a--a--")
        m.expect(source, "--^-----------!").to_be("--a--a--a--a--")
        m.expect(source, "---------^--------!").to_be("-----------a--a--a-")


def test_guide_unsubscribing_from_an_endless_interval() -> None:
    with MarbleContext() as m:
        forever = reactivex.interval(0.001, scheduler=m.scheduler).pipe(ops.map(lambda _: "a"))
        m.expect(forever, "------ !").to_be("-aaaaa")


def test_guide_time_progression_with_concat_map_and_delay() -> None:
    with MarbleContext() as m:
        result = m.cold(" -a-b-c|").pipe(
            ops.concat_map(lambda d: reactivex.of(d).pipe(ops.delay(0.010, scheduler=m.scheduler)))
        )
        m.expect(result).to_be("-- 9ms a 9ms b 9ms (c|)")


# -- debounceTime-spec.ts -------------------------------------------------------------------


def debounce(m: MarbleContext, units: int) -> Any:
    return ops.debounce(units / 10 * 0.001, scheduler=m.scheduler)


def test_debounce_by_20_units() -> None:
    with MarbleContext() as m:
        e1 = m.hot("-a--bc--d---|")
        m.expect(e1.pipe(debounce(m, 20))).to_be("---a---c--d-|")


def test_debounce_delays_every_element() -> None:
    with MarbleContext() as m:
        e1 = m.hot("-a--------b------c----|")
        m.expect(e1.pipe(debounce(m, 50))).to_be("------a--------b------(c|)")
        m.expect_subscriptions(e1.subscriptions).to_be("^---------------------!")


def test_debounce_a_group_and_later_element() -> None:
    with MarbleContext() as m:
        e1 = m.hot("-a--(bc)-----------d-------|")
        m.expect(e1.pipe(debounce(m, 50))).to_be("---------c--------------d--|")
        m.expect_subscriptions(e1.subscriptions).to_be("^--------------------------!")


def test_debounce_completes_when_the_source_does_not_emit() -> None:
    with MarbleContext() as m:
        e1 = m.hot("-----|")
        m.expect(e1.pipe(debounce(m, 10))).to_be("-----|")
        m.expect_subscriptions(e1.subscriptions).to_be("^----!")


def test_debounce_of_empty_completes_at_once() -> None:
    with MarbleContext() as m:
        e1 = m.cold("|")
        m.expect(e1.pipe(debounce(m, 10))).to_be("|")
        m.expect_subscriptions(e1.subscriptions).to_be("(^!)")


def test_debounce_passes_an_error_when_the_source_only_fails() -> None:
    with MarbleContext() as m:
        e1 = m.hot("-----#")
        m.expect(e1.pipe(debounce(m, 10))).to_be("-----#")
        m.expect_subscriptions(e1.subscriptions).to_be("^----!")


def test_debounce_unsubscribed_early() -> None:
    with MarbleContext() as m:
        e1 = m.hot("--a--bc--d----|")
        m.expect(e1.pipe(debounce(m, 20)), "^------!").to_be("----a---")
        m.expect_subscriptions(e1.subscriptions).to_be("^------!")


def test_debounce_delays_until_the_source_fails() -> None:
    with MarbleContext() as m:
        e1 = m.hot("-a--------b------c----#")
        m.expect(e1.pipe(debounce(m, 50))).to_be("------a--------b------#")


def test_debounce_while_the_source_keeps_emitting() -> None:
    with MarbleContext() as m:
        e1 = m.hot("--a--b--c--d--e--f--g--h-|")
        m.expect(e1.pipe(debounce(m, 40))).to_be("-------------------------(h|)")


# -- bufferTime-spec.ts ---------------------------------------------------------------------


def test_buffer_time_emits_buffers_at_intervals() -> None:
    with MarbleContext() as m:
        e1 = m.hot("---a---b---c---d---e---f---g-----|")
        result = e1.pipe(ops.buffer_with_time(0.010, scheduler=m.scheduler))
        m.expect(result).to_be(
            "----------w---------x---------y--(z|)",
            {"w": ["a", "b"], "x": ["c", "d", "e"], "y": ["f", "g"], "z": []},
        )
        m.expect_subscriptions(e1.subscriptions).to_be("^--------------------------------!")


def test_buffer_time_emits_buffers_at_intervals_test_2() -> None:
    with MarbleContext() as m:
        e1 = m.hot("---------a---------b---------c---------d---------e---------g--------|")
        result = e1.pipe(ops.buffer_with_time(0.032, scheduler=m.scheduler))
        m.expect(result).to_be(
            "--------------------------------x-------------------------------y---(z|)",
            {"x": ["a", "b", "c"], "y": ["d", "e", "g"], "z": []},
        )


def test_buffer_time_or_when_the_buffer_is_full() -> None:
    # RxJS bufferTime(10, null, 2) closes a full buffer and keeps its timer running, so
    # windows end at 7, 15, 23 and the rest at completion. reactivex's
    # buffer_with_time_or_count restarts the timer when a buffer fills; on this input the
    # diagram comes out the same.
    with MarbleContext() as m:
        e1 = m.hot("---a---b---c---d---e---f---g-----|")
        result = e1.pipe(ops.buffer_with_time_or_count(0.010, 2, scheduler=m.scheduler))
        m.expect(result).to_be(
            "-------w-------x-------y---------(z|)",
            {"w": ["a", "b"], "x": ["c", "d"], "y": ["e", "f"], "z": ["g"]},
        )


def test_buffer_time_with_a_creation_interval() -> None:
    with MarbleContext() as m:
        e1 = m.hot("---a---b---c----d----e----f----g----h----i----(k|)")
        result = e1.pipe(ops.buffer_with_time(0.021, 0.020, scheduler=m.scheduler))
        m.expect(result).to_be(
            "---------------------x-------------------y----(z|)",
            {"x": ["a", "b", "c", "d", "e"], "y": ["e", "f", "g", "h", "i"], "z": ["i", "k"]},
        )


def test_buffer_time_passes_the_error_and_drops_the_open_buffer() -> None:
    with MarbleContext() as m:
        e1 = m.hot("---a---b---c---#")
        result = e1.pipe(ops.buffer_with_time(0.010, scheduler=m.scheduler))
        m.expect(result).to_be("----------w----#", {"w": ["a", "b"]})
        m.expect_subscriptions(e1.subscriptions).to_be("^--------------!")


def test_buffer_time_of_empty() -> None:
    with MarbleContext() as m:
        e1 = m.cold("|")
        result = e1.pipe(ops.buffer_with_time(0.010, scheduler=m.scheduler))
        m.expect(result).to_be("(b|)", {"b": []})
        m.expect_subscriptions(e1.subscriptions).to_be("(^!)")


def test_buffer_time_of_never() -> None:
    with MarbleContext() as m:
        e1 = m.cold("-")
        result = e1.pipe(ops.buffer_with_time(0.010, scheduler=m.scheduler))
        m.expect(result, "--------------------------------------------!").to_be(
            "----------a---------a---------a---------a----", {"a": []}
        )


def test_buffer_time_followed_by_take() -> None:
    with MarbleContext() as m:
        e1 = m.hot("---a---b---c---d---e---f---g-----|")
        result = e1.pipe(ops.buffer_with_time(0.010, scheduler=m.scheduler), ops.take(2))
        m.expect(result).to_be("----------w---------(x|)", {"w": ["a", "b"], "x": ["c", "d", "e"]})
        m.expect_subscriptions(e1.subscriptions).to_be("^-------------------!")
