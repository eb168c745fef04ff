"""A batch sink that stores some records and refuses others (``RecordsRefusedError``, as
Kafka does per record): a Flow sink's ``on_error`` acts on the refused items only, and
never writes a stored one twice."""

from __future__ import annotations

import collections

import pytest

from rxflow import DeadLetter, Failure, Flow, Retry, Skip
from rxflow.errors import RecordsRefusedError


class PickySink:
    """Stores what it accepts; refuses each item in ``refuse`` the first ``times`` times."""

    def __init__(self, refuse: set[int], times: int, cause: type[Exception]) -> None:
        self.refusals_left = dict.fromkeys(refuse, times)
        self.cause = cause
        self.stored: list[int] = []
        self.calls: list[list[int]] = []

    def __call__(self, batch: list[int]) -> None:
        self.calls.append(list(batch))
        refused = [n for n in batch if self.refusals_left.get(n, 0) > 0]
        self.stored += [n for n in batch if n not in refused]
        if refused:
            for n in refused:
                self.refusals_left[n] -= 1
            causes = [(n, self.cause(f"record {n} refused")) for n in refused]
            raise RecordsRefusedError("refused", refused=causes, stored=len(batch) - len(refused))


def times_given(sink: PickySink) -> dict[int, int]:
    return dict(sorted(collections.Counter(n for call in sink.calls for n in call).items()))


@pytest.mark.anyio
async def test_a_retry_sends_only_the_refused_records_again() -> None:
    sink = PickySink({1, 3}, times=1, cause=ConnectionError)
    retry = Retry(attempts=3, base=0.0, on=(ConnectionError,))
    await Flow("partial").source(range(5)).sink(sink, batch_size=5, on_error=retry).run()
    # (Batches are whatever waits when the sink is ready, so count calls per item.)
    assert times_given(sink) == {0: 1, 1: 2, 2: 1, 3: 2, 4: 1}
    assert sorted(sink.stored) == [0, 1, 2, 3, 4]  # each stored once


@pytest.mark.anyio
async def test_refusals_not_worth_retrying_go_to_the_fallback_alone() -> None:
    sink = PickySink({1, 3}, times=5, cause=ValueError)  # not one of Retry.on
    letters: list[Failure] = []
    strategy = Retry(attempts=3, base=0.0, on=(ConnectionError,), then=DeadLetter(letters.append))
    await Flow("partial").source(range(5)).sink(sink, batch_size=5, on_error=strategy).run()
    assert times_given(sink) == dict.fromkeys(range(5), 1)  # no retry
    assert sorted(n for letter in letters for n in letter.item) == [1, 3]
    assert all(set(letter.item) <= {1, 3} for letter in letters)
    assert sorted(sink.stored) == [0, 2, 4]


@pytest.mark.anyio
async def test_a_skip_skips_only_the_refused_records() -> None:
    sink = PickySink({2}, times=5, cause=ValueError)
    snapshot = (
        await Flow("partial").source(range(4)).sink(sink, batch_size=4, on_error=Skip()).run()
    )
    assert sorted(sink.stored) == [0, 1, 3]
    assert snapshot["sink1"].skipped == 1


@pytest.mark.anyio
async def test_retry_on_the_refusal_itself_retries_whatever_the_causes() -> None:
    sink = PickySink({2}, times=1, cause=ValueError)
    retry = Retry(attempts=2, base=0.0, on=(RecordsRefusedError,))
    await Flow("partial").source(range(4)).sink(sink, batch_size=4, on_error=retry).run()
    assert times_given(sink) == {0: 1, 1: 1, 2: 2, 3: 1}
