"""The Kafka source's offsets tracker fed a fetch's records as one run (``fetched_run``) and
a batch of acks at once (``settled_many``), as the source feeds it: the same commit points
as record by record, whatever rewinds (requeues), links and commits come between."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from rxflow.connectors.kafka._offsets import PartitionOffsets

Step = tuple[str, list[int]]


@st.composite
def histories(draw: st.DrawFn) -> list[Step]:
    """Fetches of runs of consecutive offsets (from where reading is: after a rewind, from
    the rewound offset again), settlements of batches of fetched offsets, rewinds of
    fetched ones, links and commits."""
    steps: list[Step] = []
    position = 0  # where the next fetch reads
    fetched: list[int] = []
    for _ in range(draw(st.integers(1, 30))):
        action = draw(st.sampled_from(["fetch", "fetch", "settle", "rewind", "link", "commit"]))
        if action == "fetch" or not fetched:
            length = draw(st.integers(0, 8))
            run = list(range(position, position + length))
            steps.append(("fetch", run))
            fetched.extend(run)
            position += length
        elif action == "settle":
            steps.append(("settle", draw(st.lists(st.sampled_from(fetched), max_size=10))))
        elif action == "rewind":
            offset = draw(st.sampled_from(fetched))
            steps.append(("rewind", [offset]))
            position = min(position, offset)
        elif action == "link":
            steps.append(("link", draw(st.lists(st.sampled_from(fetched), min_size=2))))
        else:
            steps.append(("commit", []))
    return steps


@given(histories())
@settings(max_examples=400, deadline=None)
def test_runs_give_the_commit_points_of_records_one_by_one(history: list[Step]) -> None:
    by_runs, one_by_one = PartitionOffsets(start=0), PartitionOffsets(start=0)
    for action, offsets in history:
        if action == "fetch":
            by_runs.fetched_run(offsets)
            for offset in offsets:
                one_by_one.fetched(offset)
        elif action == "settle":
            by_runs.settled_many(offsets)
            for offset in offsets:
                one_by_one.settled(offset)
        elif action == "rewind":
            by_runs.rewind(offsets[0])
            one_by_one.rewind(offsets[0])
        elif action == "link":
            by_runs.link(offsets)
            one_by_one.link(offsets)
        else:
            by_runs.committed(by_runs.commit_point())
            one_by_one.committed(one_by_one.commit_point())
        assert by_runs.commit_point() == one_by_one.commit_point()
        assert by_runs.unsettled == one_by_one.unsettled


def test_a_commit_point_after_many_settled_records_is_the_lowest_unsettled() -> None:
    offsets = PartitionOffsets(start=0)
    offsets.fetched_run(range(10_000))
    offsets.settled_many(n for n in range(10_000) if n != 7_777)
    assert offsets.commit_point() == 7_777  # the settled ones below it are dropped at once
    offsets.settled(7_777)
    assert offsets.commit_point() == 10_000
    offsets.fetched_run([10_000, 10_001])
    assert offsets.commit_point() == 10_000
