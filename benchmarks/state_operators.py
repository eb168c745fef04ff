"""Keyed state: ``aggregate`` against a hand-written dict, in the same pipe.

100,000 orders over 10,000 customers, a running total per customer: ``open_pipe(orders,
aggregate(customer, add, int))`` against ``open_pipe(orders, ops.map(f))`` where ``f``
keeps the totals in a dict of its own. Both run outside a checkpointed flow, where the
operator's table is a dict in memory: the ratio is what the operator itself costs (its
table, its ``Keyed`` records, its metrics) on top of the pipe. The final totals are checked
equal. Best of a few runs, on both backends.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from typing import Any

import anyio
from reactivex import operators as ops

from benchmarks._measure import BACKENDS, best_rate, row
from rxflow import open_pipe
from rxflow.state import aggregate

ITEMS = 100_000
KEYS = 10_000

Order = tuple[int, int]  # customer, amount


def orders() -> list[Order]:
    rng = random.Random(7)
    return [(rng.randrange(KEYS), rng.randrange(1, 100)) for _ in range(ITEMS)]


def customer(order: Order) -> int:
    return order[0]


def add(total: int, order: Order) -> int:
    return total + order[1]


async def with_aggregate(items: list[Order]) -> dict[int, int]:
    last: dict[int, int] = {}
    async with open_pipe(items, aggregate(customer, add, int)) as pipe:
        async for keyed in pipe:
            last[keyed.key] = keyed.value
    return last


async def with_dict(items: list[Order]) -> dict[int, int]:
    totals: dict[int, int] = {}

    def running_total(order: Order) -> tuple[int, int]:
        key = order[0]
        value = totals[key] = totals.get(key, 0) + order[1]
        return key, value

    last: dict[int, int] = {}
    async with open_pipe(items, ops.map(running_total)) as pipe:
        async for key, value in pipe:
            last[key] = value
    return last


def rate(
    run: Callable[[list[Order]], Any], items: list[Order], backend: str, repeats: int
) -> float:
    return best_rate(len(items), lambda: anyio.run(run, items, backend=backend), repeats)


def keyed_aggregate(quick: bool) -> Iterator[dict[str, Any]]:
    items = orders()
    repeats = 2 if quick else 5
    for backend in BACKENDS:
        ours = anyio.run(with_aggregate, items, backend=backend)
        theirs = anyio.run(with_dict, items, backend=backend)
        if ours != theirs:
            raise AssertionError(f"aggregate's totals differ from the dict's on {backend}")
        yield row(
            f"keyed_aggregate_{KEYS}_keys",
            backend,
            len(items),
            rate(with_aggregate, items, backend, repeats),
            "handwritten_dict_in_map",
            rate(with_dict, items, backend, repeats),
            keys=len(ours),
        )


CASES = {"state_operators": keyed_aggregate}
