"""The Kafka source's commit point (``PartitionOffsets``): with acknowledgements in any order
and records linked into outputs, a commit never passes an unacknowledged record and never
splits an output; it is the highest offset that does neither, and it never moves back."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from rxflow.connectors.kafka._offsets import PartitionOffsets


def best_point(
    committed: int, fetched_to: int, unsettled: set[int], groups: list[tuple[int, int]]
) -> int:
    """The oracle: the highest offset at most the lowest unsettled one (or one past the last
    fetched) that splits no linked group (low < point <= high), but never below the commit."""
    highest = min(unsettled, default=fetched_to)
    for point in range(highest, committed - 1, -1):
        if not any(low < point <= high for low, high in groups):
            return point
    return committed


@st.composite
def histories(draw: st.DrawFn) -> tuple[int, list[tuple[str, int, list[int]]]]:
    """Records 0..count-1 fetched in order, interleaved with settlements in a random order,
    links among records still unsettled (a window's records, all held until it is
    written), and commits."""
    count = draw(st.integers(1, 40))
    order = draw(st.permutations(range(count)))
    steps: list[tuple[str, int, list[int]]] = []
    fetched = 0
    settled: set[int] = set()
    for offset in order:
        while fetched <= offset or (fetched < count and draw(st.booleans())):
            steps.append(("fetch", fetched, []))
            fetched += 1
        open_records = [n for n in range(fetched) if n not in settled]
        if len(open_records) >= 2 and draw(st.booleans()):
            linked = draw(st.lists(st.sampled_from(open_records), min_size=2, max_size=5))
            steps.append(("link", 0, linked))
        steps.append(("settle", offset, []))
        settled.add(offset)
        if draw(st.booleans()):
            steps.append(("commit", 0, []))
    return count, steps


@given(histories())
@settings(max_examples=300, deadline=None)
def test_the_commit_point_is_the_highest_safe_offset(
    history: tuple[int, list[tuple[str, int, list[int]]]],
) -> None:
    count, steps = history
    offsets = PartitionOffsets(start=0)
    unsettled: set[int] = set()
    groups: list[tuple[int, int]] = []
    fetched_to = committed = 0
    previous = 0
    for action, offset, linked in steps:
        if action == "fetch":
            offsets.fetched(offset)
            unsettled.add(offset)
            fetched_to = offset + 1
        elif action == "settle":
            offsets.settled(offset)
            unsettled.discard(offset)
        elif action == "link":
            offsets.link(linked)
            groups.append((min(linked), max(linked)))
        else:
            committed = offsets.commit_point()
            offsets.committed(committed)
        point = offsets.commit_point()
        assert all(point <= offset for offset in unsettled), "passed an unsettled record"
        # (Groups that share a record merge; their spans chain, so checking each linked
        # span on its own finds the same points inside them.)
        assert point == best_point(committed, fetched_to, unsettled, groups)
        assert point >= previous, "the commit point moved back"
        previous = point
    assert offsets.commit_point() == count  # everything settled: all of it is done
    assert offsets.unsettled == 0


def test_a_requeued_record_holds_the_commit_until_its_new_copy_is_settled() -> None:
    offsets = PartitionOffsets(start=5)
    for offset in (5, 6, 7):
        offsets.fetched(offset)
    offsets.settled(5)
    offsets.settled(7)
    offsets.rewind(6)  # requeued: it is read again from 6
    assert offsets.commit_point() == 6
    offsets.fetched(6)
    offsets.fetched(7)  # the copy of an acknowledged record is unsettled again
    offsets.settled(6)
    assert offsets.commit_point() == 7
    offsets.settled(7)
    assert offsets.commit_point() == 8


def test_a_commit_forgets_the_groups_below_it() -> None:
    offsets = PartitionOffsets(start=0)
    for offset in range(6):
        offsets.fetched(offset)
    offsets.link([0, 2])
    offsets.link([3, 5])
    for offset in range(4):
        offsets.settled(offset)
    assert offsets.commit_point() == 3  # 4 is open and inside [3, 5]: back to 3
    offsets.committed(3)
    offsets.settled(4)
    offsets.settled(5)
    assert offsets.commit_point() == 6
    assert offsets.committed_offset == 3
