"""The codec layer's JSON against the JSON libraries a user could pick, on the same records.

* ``codecs_json``: decode (bytes -> dict) and encode (dict -> compact UTF-8 bytes) of a
  typical order record (nine fields, a nested list of two items, a non-ASCII string):
  rxflow's ``"json"`` codec and encoder against the standard library's ``json``, msgspec
  and orjson called directly. The figures chose the library in
  ``rxflow/connectors/codecs/_json.py``.
* ``codecs_typed``: decoding the same record into a typed, validated record: rxflow's
  ``codec=<class>`` for a msgspec Struct and for a pydantic model, against ``json.loads``
  then building a dataclass by hand (no validation: the floor of doing it yourself).

Each row's ``ratio`` is rxflow / the baseline in that row; ``backend`` is ``"none"``: codecs
are synchronous. A library that is not installed gives a row with ``"skipped"``.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import time
import typing
from collections.abc import Callable, Iterator
from typing import Any

from benchmarks._measure import row
from rxflow.connectors.codecs import _json, as_json, encode_json, resolve_codec

RECORD: dict[str, Any] = {
    "order_id": 0,
    "user": "ann-42",
    "total": 99.95,
    "currency": "EUR",
    "paid": True,
    "items": [
        {"sku": "A-1", "qty": 2, "price": 10.5},
        {"sku": "B-7", "qty": 1, "price": 78.95},
    ],
    "note": "leave at the door ✓",
    "ts": "2026-12-03T13:00:00Z",
}


def records(count: int) -> list[dict[str, Any]]:
    return [dict(RECORD, order_id=n) for n in range(count)]


def rates(
    ours: Callable[[Any], Any], theirs: Callable[[Any], Any], inputs: list[Any], repeats: int
) -> tuple[float, float]:
    """Items per second of each function over ``inputs``, the best of ``repeats`` runs,
    the runs taken in turns so that both see the same load on a shared machine."""
    best = [float("inf"), float("inf")]
    for _ in range(repeats):
        for which, function in enumerate((ours, theirs)):
            started = time.perf_counter()
            for item in inputs:
                function(item)
            best[which] = min(best[which], time.perf_counter() - started)
    return len(inputs) / best[0], len(inputs) / best[1]


def _stdlib_loads(data: bytes) -> Any:
    return json.loads(data.decode("utf-8"))


def _stdlib_dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def json_libraries() -> Iterator[tuple[str, Callable[[bytes], Any], Callable[[Any], bytes]]]:
    """(name, loads, dumps) of each library installed, the stdlib first."""
    yield "json (stdlib)", _stdlib_loads, _stdlib_dumps
    for name in ("msgspec", "orjson"):
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError:
            continue
        if name == "msgspec":
            yield name, module.json.Decoder().decode, module.json.Encoder().encode
        else:
            yield name, module.loads, module.dumps


def codecs_json(quick: bool) -> Iterator[dict[str, Any]]:
    count = 20_000 if quick else 200_000
    repeats = 3 if quick else 5
    values = records(count)
    data = [_stdlib_dumps(value) for value in values]
    assert [as_json(item) for item in data[:10]] == values[:10]
    for name, loads, dumps in json_libraries():
        assert loads(dumps(values[0])) == values[0]
        for op, ours, theirs, inputs in (
            ("decode", as_json, loads, data),
            ("encode", encode_json, dumps, values),
        ):
            ours_per_s, theirs_per_s = rates(ours, theirs, inputs, repeats)
            yield row(
                f"codecs_json_{op}",
                "none",
                count,
                ours_per_s,
                name,
                theirs_per_s,
                json_library=_json.LIBRARY,
            )
    for missing in {"msgspec", "orjson"} - {name for name, _, _ in json_libraries()}:
        yield {"name": "codecs_json", "baseline": missing, "skipped": "not installed"}


@dataclasses.dataclass
class Item:
    sku: str
    qty: int
    price: float


@dataclasses.dataclass
class Order:
    order_id: int
    user: str
    total: float
    currency: str
    paid: bool
    items: list[Item]
    note: str
    ts: str


def by_hand(data: bytes) -> Order:
    fields = json.loads(data.decode("utf-8"))
    fields["items"] = [Item(**item) for item in fields["items"]]
    return Order(**fields)


def typed_record_classes() -> Iterator[tuple[str, type[Any]]]:
    try:
        import msgspec
    except ModuleNotFoundError:
        pass
    else:
        item = msgspec.defstruct("Item", [("sku", str), ("qty", int), ("price", float)])
        fields = [*typing.get_type_hints(Order).items()]
        fields[5] = ("items", list[item])  # type: ignore[valid-type]
        yield "msgspec Struct", msgspec.defstruct("Order", fields)
    yield "dataclass", Order
    try:
        import pydantic
    except ModuleNotFoundError:
        return
    model_item = pydantic.create_model("Item", sku=(str, ...), qty=(int, ...), price=(float, ...))
    definitions: dict[str, Any] = {
        name: (hint, ...) for name, hint in typing.get_type_hints(Order).items()
    }
    definitions["items"] = (list[model_item], ...)  # type: ignore[valid-type]
    yield "pydantic model", pydantic.create_model("Order", **definitions)


def codecs_typed(quick: bool) -> Iterator[dict[str, Any]]:
    count = 20_000 if quick else 200_000
    repeats = 3 if quick else 5
    data = [_stdlib_dumps(value) for value in records(count)]
    for name, cls in typed_record_classes():
        decode = resolve_codec(cls, where="bench")
        assert decode(data[1]).order_id == 1
        ours_per_s, floor_per_s = rates(decode, by_hand, data, repeats)
        yield row(
            "codecs_typed_decode",
            "none",
            count,
            ours_per_s,
            "json.loads + dataclass by hand",
            floor_per_s,
            record_class=name,
        )


CASES = {"codecs_json": codecs_json, "codecs_typed": codecs_typed}

if __name__ == "__main__":
    for case in CASES.values():
        for result in case(True):
            print(json.dumps(result))
