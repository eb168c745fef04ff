"""Window operators stated as marble diagrams (rxflow.testing's ``marbles`` fixture)."""

from __future__ import annotations

from reactivex import operators as ops

from rxflow import session, sliding, tumbling
from rxflow.testing import MarbleContext


def contents(window: object) -> str:
    return "".join(window.items)  # type: ignore[attr-defined]


def test_tumbling_in_processing_time(marbles: MarbleContext) -> None:
    source = marbles.hot("-a-b---c-d--e----|")
    windows = source.pipe(tumbling(0.005, scheduler=marbles.scheduler), ops.map(contents))
    # Windows close at 5, 10 and 15; [15, 17) is empty, so completion emits nothing.
    marbles.expect(windows).to_be("-----x----y----z-|", {"x": "ab", "y": "cd", "z": "e"})


def test_tumbling_with_max_count(marbles: MarbleContext) -> None:
    source = marbles.hot("abc-----d|")
    windows = source.pipe(
        tumbling(0.005, max_count=2, scheduler=marbles.scheduler), ops.map(contents)
    )
    # The first window fills at frame 1; reactivex then restarts the timer, so the next
    # window closes 5 frames later, at 6.
    marbles.expect(windows).to_be("-x----y--(z|)", {"x": "ab", "y": "c", "z": "d"})


def test_sliding_in_processing_time(marbles: MarbleContext) -> None:
    source = marbles.hot("-a---b---c---|")
    windows = source.pipe(sliding(0.008, 0.004, scheduler=marbles.scheduler), ops.map(contents))
    # Windows [0, 8), [4, 12), [8, 16): the last one is flushed at completion.
    marbles.expect(windows).to_be("--------x---y(z|)", {"x": "ab", "y": "bc", "z": "c"})


def test_processing_time_sessions_per_key(marbles: MarbleContext) -> None:
    source = marbles.hot("a-b-A-------B---|", values={"A": "a2", "B": "b2"})
    windows = source.pipe(
        session(lambda item: item[0], 0.004, scheduler=marbles.scheduler),
        ops.map(lambda w: f"{w.key}:{len(w)}"),
    )
    # a and A (key "a") are 4 frames apart: one session, closed 4 quiet frames after A.
    marbles.expect(windows).to_be("------x-y-------(z|)", {"x": "b:1", "y": "a:2", "z": "b:1"})


def test_event_time_windows_ignore_arrival_time(marbles: MarbleContext) -> None:
    # Items carry their own times; they arrive bunched up, out of order.
    source = marbles.hot(
        "--(ab)----(cd)-|", values={"a": ("a", 1), "b": ("b", 12), "c": ("c", 3), "d": ("d", 25)}
    )
    windows = source.pipe(
        tumbling(10, timestamp=lambda item: item[1], out_of_orderness=10),
        ops.map(lambda w: "".join(item[0] for item in w.items)),
    )
    # [0, 10) closes when d (25) moves the watermark to 15; the rest flush at the end.
    marbles.expect(windows).to_be("----------x----(yz|)", {"x": "ac", "y": "b", "z": "d"})
