"""The case table: every public operator of ``reactivex.operators``, each in a chain with
sensible arguments, and the two lists of exceptions to "same result as reactivex".

A case's ``make`` builds a fresh chain for each run; its id is the operator's name, with a
label in brackets when an operator has more than one case (``merge[max_concurrent]``).
Operators that emit Observables (windows, groups) are followed by a ``flat_map`` that turns
each inner Observable into a list, which is how such results are read.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable
from typing import Any

import reactivex
import sniffio
from conformance_harness import Case, Operator, Timeline, thread_pool, untimed
from reactivex import Observable
from reactivex import operators as ops
from reactivex.subject import Subject

FIVE = untimed(1, 2, 3, 4, 5)
# One item: what an operator does with the inner Observable of one item, and with the source
# failing after it, is the same whether the source's items come at once or one at a time.
ONE = untimed(1)

# Items at their times (seconds), no two at the same instant and none on a multiple of the
# spans below (0.2, 0.25, 0.4, 0.5, 1.0), so that no result depends on which of two things
# due at the same time goes first.
TIMED = Timeline(((0.13, 1), (0.32, 2), (0.47, 3), (1.21, 4), (1.36, 5)), end=2.07)


def inner(x: int) -> Observable[int]:
    """A synchronous inner Observable, as flat_map's and concat_map's users write them."""
    return reactivex.of(x, 10 * x)


def three_ticks(period: float) -> Observable[int]:
    """0, 1, 2 at ``period`` intervals, then the end (a toggle's openings, a join's right)."""
    return reactivex.interval(period).pipe(ops.take(3))


def doubled_below(limit: int) -> Callable[[int], Observable[int]]:
    """expand's mapper: each value doubled, until ``limit``."""
    return lambda x: reactivex.of(2 * x) if x < limit else reactivex.empty()


def negate(x: int) -> int:
    return -x


def negated(source: Observable[int]) -> Observable[int]:
    """Both the source and its negation, merged: an operator subscribes twice to what a
    ``publish``-like operator shares."""
    return reactivex.merge(source, source.pipe(ops.map(negate)))


def as_lists() -> Operator:
    """Each inner Observable (a window) as the list of its items, when it completes."""
    return ops.flat_map(lambda window: window.pipe(ops.to_list()))


def keyed_lists() -> Operator:
    """Each group as (key, items), when it completes."""
    return ops.flat_map(
        lambda group: group.pipe(ops.to_list(), ops.map(lambda items: (group.key, items)))
    )


def paired_lists() -> Operator:
    """group_join's (left, Observable of rights) as (left, rights)."""
    return ops.flat_map(
        lambda pair: pair[1].pipe(ops.to_list(), ops.map(lambda rights: (pair[0], rights)))
    )


def times(count: int) -> Callable[[Any], bool]:
    """A loop condition (do_while, while_do) that holds for its first ``count`` checks."""
    checks = 0

    def condition(_: Any) -> bool:
        nonlocal checks
        checks += 1
        return checks <= count

    return condition


def then_log(log: list[Any]) -> Operator:
    """After the source completes, the log of side effects that the chain recorded."""
    return ops.concat(reactivex.defer(lambda _: reactivex.of(tuple(log))))


def with_log(make: Callable[[list[Any]], Operator]) -> list[Operator]:
    """A side-effect operator that records into a log, followed by the log itself."""
    log: list[Any] = []
    return [make(log), ops.map(lambda x: (x, len(log))), then_log(log)]


def partitioned(partition: Callable[[Observable[Any]], list[Observable[Any]]]) -> Operator:
    """The two halves of a partition one after the other (the second reads the source again)."""
    return lambda source: reactivex.concat(*partition(source))


def to_future() -> Callable[[Observable[Any]], Any]:
    """``ops.to_future()``, as a user writes it. Under trio, with a future that needs no
    asyncio loop: the bare one would make a loop for its asyncio Future and leave it open."""
    if sniffio.current_async_library() == "asyncio":
        return ops.to_future()
    # reactivex uses only set_result/set_exception/cancelled: a concurrent Future has them.
    return ops.to_future(concurrent.futures.Future)  # type: ignore[arg-type]


def c(
    operator: str,
    make: Callable[[], Any],
    *,
    label: str = "",
    source: Timeline = FIVE,
    threads: bool = False,
    refused: tuple[type[Exception], str] | None = None,
) -> Case:
    """A case of ``operator``, on :data:`FIVE` unless told; ``make`` gives its chain, one
    operator or a list of them."""

    def chain() -> list[Operator]:
        made = make()
        return list(made) if isinstance(made, list | tuple) else [made]

    return Case(operator, chain, source, label=label, threads=threads, refused=refused)


def t(operator: str, make: Callable[[], Any], *, label: str = "") -> Case:
    """A timed case: ``operator`` on :data:`TIMED`, compared to the virtual timestamp."""
    return c(operator, make, label=label, source=TIMED)


def even(x: int) -> bool:
    return x % 2 == 0


CASES: list[Case] = [
    c("all", lambda: ops.all(lambda x: x < 4)),
    c("amb", lambda: ops.amb(reactivex.of(10, 20))),
    c("amb", lambda: ops.amb(reactivex.never()), label="never"),
    c("as_observable", lambda: ops.as_observable()),
    c("average", lambda: ops.average()),
    t("buffer", lambda: ops.buffer(reactivex.interval(0.5))),
    t(
        "buffer_toggle",
        lambda: ops.buffer_toggle(three_ticks(0.4), lambda _: reactivex.timer(0.25)),
    ),
    t("buffer_when", lambda: ops.buffer_when(lambda: reactivex.timer(0.5))),
    c("buffer_with_count", lambda: ops.buffer_with_count(2)),
    c("buffer_with_count", lambda: ops.buffer_with_count(3, 1), label="skip"),
    t("buffer_with_time", lambda: ops.buffer_with_time(0.5)),
    t("buffer_with_time", lambda: ops.buffer_with_time(0.5, 0.25), label="sliding"),
    t("buffer_with_time_or_count", lambda: ops.buffer_with_time_or_count(0.5, 2)),
    # catch re-reads the source after an error (here the map's, on 3).
    c(
        "catch",
        lambda: [
            ops.map(lambda x: 10 // (x - 3)),
            ops.catch(lambda _error, source: source.pipe(ops.take(2))),
        ],
    ),
    c("catch", lambda: ops.catch(reactivex.of(-1)), label="observable"),
    c("combine_latest", lambda: ops.combine_latest(reactivex.of(10, 20))),
    t("combine_latest", lambda: ops.combine_latest(reactivex.timer(0.4)), label="timer"),
    c("concat", lambda: ops.concat(reactivex.of(10, 20)), label="of"),
    c("concat", lambda: lambda source: source.pipe(ops.concat(source))),
    c("concat_all", lambda: [ops.map(inner), ops.concat_all()]),
    c("concat_map", lambda: ops.concat_map(inner)),
    c("contains", lambda: ops.contains(3)),
    c("count", lambda: ops.count(even)),
    t("debounce", lambda: ops.debounce(0.2)),
    c("default_if_empty", lambda: [ops.filter(lambda x: x > 10), ops.default_if_empty(-1)]),
    t("delay", lambda: ops.delay(0.25)),
    t("delay_subscription", lambda: ops.delay_subscription(0.5)),
    t(
        "delay_with_mapper",
        lambda: ops.delay_with_mapper(lambda x: reactivex.timer(0.1 * x)),
    ),
    t(
        "delay_with_mapper",
        lambda: ops.delay_with_mapper(reactivex.timer(0.3), lambda x: reactivex.timer(0.1 * x)),
        label="subscription delay",
    ),
    c("dematerialize", lambda: [ops.materialize(), ops.dematerialize()]),
    c("distinct", lambda: ops.distinct(lambda x: x % 3)),
    c("distinct_until_changed", lambda: ops.distinct_until_changed(lambda x: x // 2)),
    c("do", lambda: with_log(lambda log: ops.do(reactivex.Observer(log.append)))),
    c(
        "do_action",
        lambda: with_log(lambda log: ops.do_action(log.append, on_completed=lambda: log.append(0))),
    ),
    c("do_while", lambda: ops.do_while(times(1))),
    c("element_at", lambda: ops.element_at(2)),
    c("element_at_or_default", lambda: ops.element_at_or_default(10, -1)),
    c("exclusive", lambda: [ops.map(inner), ops.exclusive()], source=ONE),
    c("exclusive", lambda: [ops.map(inner), ops.exclusive()], label="items"),
    c("expand", lambda: ops.expand(doubled_below(8)), source=ONE),
    c("expand", lambda: ops.expand(doubled_below(8)), label="items", source=untimed(1, 3)),
    c("filter", lambda: ops.filter(even)),
    c("filter_indexed", lambda: ops.filter_indexed(lambda _x, i: i % 2 == 0)),
    c("finally_action", lambda: with_log(lambda log: ops.finally_action(lambda: log.append(0)))),
    c("find", lambda: ops.find(lambda x, _i, _source: x > 2)),
    c("find_index", lambda: ops.find_index(lambda x, _i, _source: x > 2)),
    c("first", lambda: ops.first(lambda x: x > 2)),
    c("first_or_default", lambda: ops.first_or_default(lambda x: x > 10, -1)),
    c("flat_map", lambda: ops.flat_map(inner)),
    c("flat_map_indexed", lambda: ops.flat_map_indexed(lambda x, i: reactivex.of(x, i))),
    c("flat_map_latest", lambda: ops.flat_map_latest(inner), source=ONE),
    c("flat_map_latest", lambda: ops.flat_map_latest(inner), label="items"),
    c("fork_join", lambda: ops.fork_join(reactivex.of(10, 20))),
    c("group_by", lambda: [ops.group_by(lambda x: x % 2), keyed_lists()]),
    t(
        "group_by_until",
        lambda: [
            ops.group_by_until(lambda x: x % 2, None, lambda _group: reactivex.timer(0.5)),
            keyed_lists(),
        ],
    ),
    t(
        "group_join",
        lambda: [
            ops.group_join(
                three_ticks(0.4),
                lambda _left: reactivex.timer(0.3),
                lambda _right: reactivex.timer(0.3),
            ),
            paired_lists(),
        ],
    ),
    c("ignore_elements", lambda: ops.ignore_elements()),
    c("is_empty", lambda: ops.is_empty()),
    t(
        "join",
        lambda: ops.join(
            three_ticks(0.4),
            lambda _left: reactivex.timer(0.3),
            lambda _right: reactivex.timer(0.3),
        ),
    ),
    c("last", lambda: ops.last(lambda x: x < 4)),
    c("last_or_default", lambda: ops.last_or_default(-1, lambda x: x > 10)),
    c("map", lambda: ops.map(lambda x: x * 10)),
    # Consecutive simple operators, which a pipe may fuse into one function.
    c(
        "map",
        lambda: [ops.map(lambda x: x + 1), ops.filter(even), ops.scan(lambda a, x: a + x, 0)],
        label="fused map-filter-scan",
    ),
    c("map_indexed", lambda: ops.map_indexed(lambda x, i: x * i)),
    c("materialize", lambda: ops.materialize()),
    c("max", lambda: ops.max()),
    c("max_by", lambda: ops.max_by(lambda x: x % 3)),
    c("merge", lambda: ops.merge(reactivex.of(10, 20))),
    c("merge", lambda: [ops.map(inner), ops.merge(max_concurrent=1)], label="max_concurrent"),
    t("merge", lambda: ops.merge(reactivex.timer(0.4)), label="timer"),
    c("merge_all", lambda: [ops.map(inner), ops.merge_all()]),
    c("min", lambda: ops.min()),
    c("min_by", lambda: ops.min_by(lambda x: x % 3)),
    c("multicast", lambda: ops.multicast(subject_factory=lambda _: Subject(), mapper=negated)),
    c("observe_on", lambda: ops.observe_on(thread_pool()), threads=True),
    c("on_error_resume_next", lambda: ops.on_error_resume_next(reactivex.of(-1))),
    c("pairwise", lambda: ops.pairwise()),
    c("partition", lambda: partitioned(ops.partition(even))),
    c("partition_indexed", lambda: partitioned(ops.partition_indexed(lambda _x, i: i < 2))),
    c("pluck", lambda: ops.pluck("n"), source=untimed(*({"n": n} for n in range(3)))),
    c("pluck_attr", lambda: ops.pluck_attr("imag"), source=untimed(1j, 2 + 3j)),
    c("publish", lambda: ops.publish(negated)),
    c("publish_value", lambda: ops.publish_value(0, negated)),
    c("reduce", lambda: ops.reduce(lambda acc, x: acc + x, 100)),
    c("ref_count", lambda: [ops.publish(), ops.ref_count()]),
    c("repeat", lambda: ops.repeat(2)),
    # The second subscription comes after the first completed: it gets the replayed last two.
    c("replay", lambda: ops.replay(2, mapper=lambda s: s.pipe(ops.concat(s)))),
    c("retry", lambda: ops.retry(2)),
    t("sample", lambda: ops.sample(0.5)),
    t("sample", lambda: ops.sample(reactivex.interval(0.4)), label="observable"),
    c("scan", lambda: ops.scan(lambda acc, x: acc + x, 100)),
    c("sequence_equal", lambda: ops.sequence_equal(reactivex.of(1, 2, 3, 4, 5))),
    c("sequence_equal", lambda: ops.sequence_equal([1, 2, 3]), label="iterable"),
    c("share", lambda: lambda source: negated(source.pipe(ops.share()))),
    c("single", lambda: ops.single(lambda x: x == 3)),
    c("single_or_default", lambda: ops.single_or_default(lambda x: x > 10, -1)),
    c(
        "single_or_default_async",
        lambda: [ops.filter(lambda x: x == 3), ops.single_or_default_async(True, -1)],
    ),
    c("skip", lambda: ops.skip(2)),
    c("skip_last", lambda: ops.skip_last(2)),
    t("skip_last_with_time", lambda: ops.skip_last_with_time(0.5)),
    c("skip_until", lambda: ops.skip_until(reactivex.of(0))),
    t("skip_until", lambda: ops.skip_until(reactivex.timer(0.4)), label="timer"),
    t("skip_until_with_time", lambda: ops.skip_until_with_time(0.4)),
    c("skip_while", lambda: ops.skip_while(lambda x: x < 3)),
    c("skip_while_indexed", lambda: ops.skip_while_indexed(lambda _x, i: i < 2)),
    t("skip_with_time", lambda: ops.skip_with_time(0.4)),
    c("slice", lambda: ops.slice(1, 4)),
    c("slice", lambda: ops.slice(-2), label="negative"),
    c("some", lambda: ops.some(lambda x: x > 4)),
    c("starmap", lambda: ops.starmap(lambda a, b: a * b), source=untimed((1, 2), (3, 4))),
    c(
        "starmap_indexed",
        lambda: ops.starmap_indexed(lambda a, b: a - b),
        source=untimed((1, 2), (5, 3)),
    ),
    c("start_with", lambda: ops.start_with(-1, 0)),
    c("subscribe_on", lambda: ops.subscribe_on(thread_pool()), threads=True),
    c("sum", lambda: ops.sum()),
    c("switch_latest", lambda: [ops.map(inner), ops.switch_latest()], source=ONE),
    c("switch_latest", lambda: [ops.map(inner), ops.switch_latest()], label="items"),
    c("switch_map", lambda: ops.switch_map(inner), source=ONE),
    c("switch_map", lambda: ops.switch_map(inner), label="items"),
    c(
        "switch_map_indexed",
        lambda: ops.switch_map_indexed(lambda x, i: reactivex.of(x, i)),
        label="items",
    ),
    c("take", lambda: ops.take(3)),
    c("take_last", lambda: ops.take_last(2)),
    c("take_last_buffer", lambda: ops.take_last_buffer(2)),
    t("take_last_with_time", lambda: ops.take_last_with_time(1.0)),
    c("take_until", lambda: ops.take_until(reactivex.never())),
    t("take_until", lambda: ops.take_until(reactivex.timer(1.0)), label="timer"),
    t("take_until_with_time", lambda: ops.take_until_with_time(1.0)),
    c("take_while", lambda: ops.take_while(lambda x: x < 3, inclusive=True)),
    c("take_while_indexed", lambda: ops.take_while_indexed(lambda _x, i: i < 2)),
    t("take_with_time", lambda: ops.take_with_time(1.0)),
    c("tap", lambda: with_log(lambda log: ops.tap(log.append))),
    t("throttle_first", lambda: ops.throttle_first(0.5)),
    t("throttle_with_mapper", lambda: ops.throttle_with_mapper(lambda _: reactivex.timer(0.3))),
    t("throttle_with_timeout", lambda: ops.throttle_with_timeout(0.2)),
    t("time_interval", lambda: ops.time_interval()),
    t("timeout", lambda: ops.timeout(0.5)),
    t("timeout", lambda: ops.timeout(0.5, reactivex.of(-1)), label="other"),
    t(
        "timeout_with_mapper",
        lambda: ops.timeout_with_mapper(reactivex.timer(1.0), lambda _: reactivex.timer(0.5)),
    ),
    t("timestamp", lambda: ops.timestamp()),
    c("to_dict", lambda: ops.to_dict(lambda x: x % 3)),
    # Not an operator: it returns a Future. open_pipe refuses it, naming it.
    c("to_future", to_future, refused=(TypeError, "ops.to_future")),
    c("to_iterable", lambda: ops.to_iterable()),
    c("to_list", lambda: ops.to_list()),
    t("to_marbles", lambda: ops.to_marbles(0.1)),
    c("to_set", lambda: ops.to_set()),
    c("while_do", lambda: ops.while_do(times(2))),
    t("window", lambda: [ops.window(reactivex.interval(0.5)), as_lists()]),
    t(
        "window_toggle",
        lambda: [
            ops.window_toggle(three_ticks(0.4), lambda _: reactivex.timer(0.25)),
            as_lists(),
        ],
    ),
    t("window_when", lambda: [ops.window_when(lambda: reactivex.timer(0.5)), as_lists()]),
    c("window_with_count", lambda: [ops.window_with_count(2), as_lists()]),
    t("window_with_time", lambda: [ops.window_with_time(0.5), as_lists()]),
    t("window_with_time_or_count", lambda: [ops.window_with_time_or_count(0.5, 2), as_lists()]),
    c("with_latest_from", lambda: ops.with_latest_from(reactivex.of(10, 20))),
    c("zip", lambda: ops.zip(reactivex.of(10, 20))),
    c("zip_latest", lambda: ops.zip_latest(reactivex.of(10, 20))),
    t("zip_latest", lambda: ops.zip_latest(reactivex.timer(0.4)), label="timer"),
    c("zip_with_iterable", lambda: ops.zip_with_iterable([10, 20, 30])),
    c("zip_with_list", lambda: ops.zip_with_list([10, 20, 30])),
]


# Cases whose result differs from plain reactivex's by the nature of a pipe's pulled source
# (a list, an async iterable): the pump reads it one item at a time, and what the operators
# scheduled to run at once (a synchronous inner or other Observable, such as of(...)) runs
# before the next item is read. reactivex.from_iterable, on reactivex's current-thread
# scheduler, emits all of its items before any of that work. For these cases the suite checks
# the documented rule instead, with every pulled source: the result is reactivex's with a
# Subject as the source, pushed item by item after the chain subscribed. (An Observable source
# is subscribed as reactivex subscribes it: its results must be reactivex's.)
# docs/operators.md lists the same operators.
INHERENT_DIFFERENCES: dict[str, str] = {
    "amb": "the synchronous of(...) emits before the source's first item and wins",
    "combine_latest": "the synchronous of(...) has emitted its last value before the "
    "source's first item, so every item combines with that value",
    "merge": "the synchronous of(...) emits all of its items before the source's first item",
    "skip_until": "the synchronous of(...) has emitted before the source's first item, so "
    "nothing is skipped",
    "zip_latest": "the synchronous of(...) has emitted its last value before the source's "
    "first item, so the items pair with that value",
    "exclusive[items]": "each item's inner Observable completes before the next item comes, "
    "so no item is ignored",
    "expand[items]": "each item is expanded to the end before the next item comes (depth "
    "first, where from_iterable goes breadth first)",
    "flat_map_latest[items]": "each item's inner Observable completes before the next item "
    "comes, so none is cut short",
    "switch_latest[items]": "each inner Observable completes before the next one comes, so "
    "none is cut short",
    "switch_map[items]": "each item's inner Observable completes before the next item comes, "
    "so none is cut short",
    "switch_map_indexed[items]": "each item's inner Observable completes before the next "
    "item comes, so none is cut short",
}

# The cases the issue (#16) found broken in the core. They state reactivex's result, like
# every other case; they are grouped here only so that test_core_regressions.py runs them
# together, apart from test_conformance.py.
CORE_REGRESSIONS: list[str] = [
    # non-determinism under trio
    "publish",
    "multicast",
    "with_latest_from",
    "zip",
    "sequence_equal",
    "sequence_equal[iterable]",
    # resubscription
    "repeat",
    "retry",
    "do_while",
    "while_do",
    "catch",
    "catch[observable]",
    "concat",
    "concat[of]",
    # inner outputs lost before a source error
    "flat_map",
    "flat_map_indexed",
    "flat_map_latest",
    "concat_map",
    "concat_all",
    "merge_all",
    "merge[max_concurrent]",
    "switch_latest",
    "switch_map",
    "exclusive",
    "expand",
    # threads
    "observe_on",
    "subscribe_on",
    # not an operator
    "to_future",
]

CASES_BY_ID: dict[str, Case] = {case.id: case for case in CASES}
