"""The connector kit's read-ahead bound, on every broker source: what a source fetched and
has not handed out yet (``buffered`` records, ``buffered_bytes`` of payload) stays within its
count bound (the system's own setting: ``batch``, ``prefetch``, ``receive_maximum``,
``batch_size``) and within ``read_ahead_bytes`` plus one record, so that a backlog of large
messages cannot fill memory; and a record larger than the budget still comes.

These need the kit (``rxflow/connectors/_kit.py``) in every broker source: they fail on a
source not ported to it yet.
"""

from __future__ import annotations

import pytest

from tests.connectors.contract.conftest import Rig, needs
from tests.connectors.support import take

pytestmark = [pytest.mark.anyio, needs("read_ahead")]

SIZE = 1000  # bytes of every payload here
COUNT_BOUND = 10


def payloads(count: int) -> list[bytes]:
    """``count`` payloads of SIZE bytes each, numbered."""
    return [b"%04d" % n + b"x" * (SIZE - 4) for n in range(count)]


async def test_a_source_holds_no_more_bytes_than_read_ahead_bytes(rig: Rig) -> None:
    sent = payloads(20)
    await rig.publish(*sent)
    budget = 3 * SIZE
    options = {rig.system.read_ahead_option: COUNT_BOUND, "read_ahead_bytes": budget}
    most_buffered, most_bytes = 0, 0
    async with rig.source(**options) as source:
        assert source.read_ahead_bytes == budget
        assert (source.buffered, source.buffered_bytes) == (0, 0)
        messages = aiter(source)
        taken = []
        for _ in sent:
            (message,) = await take(messages, 1)
            taken.append(message.value)
            assert source.buffered <= COUNT_BOUND
            assert source.buffered_bytes <= budget + SIZE  # the budget, plus one record
            assert source.buffered_bytes == source.buffered * SIZE
            most_buffered = max(most_buffered, source.buffered)
            most_bytes = max(most_bytes, source.buffered_bytes)
            await message.ack()
    assert taken == sent
    # Within the bound it does read ahead: a fetch is not one record at a time.
    assert most_buffered >= 2
    assert most_bytes >= 2 * SIZE


async def test_a_source_holds_no_more_records_than_its_count_bound(rig: Rig) -> None:
    sent = payloads(30)
    await rig.publish(*sent)
    async with rig.source(**{rig.system.read_ahead_option: 5}) as source:
        messages = aiter(source)
        for _ in sent:
            (message,) = await take(messages, 1)
            assert source.buffered <= 5
            await message.ack()


async def test_a_record_larger_than_the_budget_still_comes(rig: Rig) -> None:
    large = b"y" * (5 * SIZE)
    await rig.publish(large, b"small")
    async with rig.source(read_ahead_bytes=SIZE) as source:
        first, second = await take(aiter(source), 2)
        for message in (first, second):
            await message.ack()
    assert (first.value, second.value) == (large, b"small")


async def test_a_read_ahead_bytes_below_one_is_refused_naming_it(rig: Rig) -> None:
    with pytest.raises(ValueError, match="read_ahead_bytes"):
        async with rig.source(read_ahead_bytes=0):
            pass
