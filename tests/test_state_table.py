"""StateTable: a dict with TTLs that records its changes for checkpoints."""

from __future__ import annotations

import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rxflow._state import DELETED, IN_MEMORY, StateTable


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_ttl_counts_from_the_last_put_and_frees_memory() -> None:
    clock = Clock()
    table: StateTable[str, int] = StateTable("t", clock=clock)
    table.put("a", 1, ttl=10.0)
    clock.now = 8.0
    table.put("a", 2, ttl=10.0)  # extended to 18
    clock.now = 12.0
    assert table.expire() == 0
    assert table.get("a") == 2
    clock.now = 18.0
    assert "a" not in table
    assert table.expire() == 0  # freed by the read already
    assert len(table) == 0


def test_the_heap_grows_with_the_keys_not_with_the_puts() -> None:
    clock = Clock()
    table: StateTable[int, int] = StateTable("t", clock=clock)
    for n in range(10_000):
        table.put(n % 10, n, ttl=3600.0)
        clock.now += 0.01
    assert len(table._deadlines) <= 20
    clock.now += 3600.0
    assert table.expire() == 10
    assert len(table) == 0


def test_a_put_without_ttl_clears_the_ttl() -> None:
    clock = Clock()
    table: StateTable[str, int] = StateTable("t", clock=clock)
    table.put("a", 1, ttl=1.0)
    table.put("a", 2)
    clock.now = 5.0
    assert table.expire() == 0
    assert table.get("a") == 2
    assert table.next_expiry() is None


def test_setting_the_clock_keeps_the_time_left() -> None:
    first, second = Clock(), Clock()
    second.now = 1000.0
    table: StateTable[str, int] = StateTable("t", clock=first)
    table.put("a", 1, ttl=5.0)
    table.clock = second
    assert table.next_expiry() == 1005.0
    second.now = 1005.0
    assert table.get("a") is None


def test_scan_by_prefix_of_tuples_strings_and_bytes() -> None:
    table: StateTable[object, int] = StateTable("t")
    for key in [("eu", "ann"), ("us", "bob"), ("eu", "cid"), "eu-x", b"eu-y"]:
        table.put(key, 1)
    assert [key for key, _ in table.scan(("eu",))] == [("eu", "ann"), ("eu", "cid")]
    assert [key for key, _ in table.scan("eu")] == ["eu-x"]
    assert [key for key, _ in table.scan(b"eu")] == [b"eu-y"]
    assert len(list(table.scan())) == 5


def test_an_in_memory_table_records_no_changes() -> None:
    table = IN_MEMORY.table("t", owner=None)
    table.put("a", 1)
    assert not table.durable
    assert table.take_changes() == []


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["put", "put_ttl", "delete", "touch", "tick"]),
            st.integers(0, 5),
            st.floats(0.5, 20.0),
        ),
        max_size=60,
    )
)
def test_changes_restored_into_a_new_table_give_the_same_contents(
    steps: list[tuple[str, int, float]],
) -> None:
    clock = Clock()
    table: StateTable[int, int] = StateTable("t", durable=True, clock=clock)
    copy: StateTable[int, int] = StateTable("t", durable=True, clock=clock)
    for step, (what, key, amount) in enumerate(steps):
        if what == "put":
            table.put(key, step)
        elif what == "put_ttl":
            table.put(key, step, ttl=amount)
        elif what == "delete":
            table.delete(key)
        elif what == "touch":
            table.touch(key)
        else:
            clock.now += amount
        if step % 7 == 0:  # a checkpoint: the copy loads what changed, as a store would
            changes = pickle.loads(pickle.dumps(table.take_changes()))
            for deleted in [key for key, value, _ in changes if value is DELETED]:
                copy.delete(deleted)
            copy.restore((key, value, ttl) for key, value, ttl in changes if value is not DELETED)
    changes = table.take_changes()
    for deleted in [key for key, value, _ in changes if value is DELETED]:
        copy.delete(deleted)
    copy.restore((key, value, ttl) for key, value, ttl in changes if value is not DELETED)
    assert dict(copy.scan()) == dict(table.scan())
    expected = table.next_expiry()
    assert copy.next_expiry() == (None if expected is None else pytest.approx(expected))
