"""A Decoder is typed by its codec, for a user's ``mypy --strict``: ``Decoder(Order)`` is a
``Decoder[Order]``, and what it decodes is an ``Order`` once ``SKIPPED`` is ruled out; a
source's ``codec=`` takes a record class.

The program below is type-checked (each ``assert_type`` must hold, and the ``type: ignore``
on a wrong call must still be needed) and run (so what it claims also happens).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent

PROGRAM = """
from __future__ import annotations

import dataclasses
from typing import Any, assert_type

import anyio
import msgspec
import pydantic

from rxflow.connectors import read_file
from rxflow.connectors.codecs import SKIPPED, Decoder, Encoder, resolve_encoder, sink_encoder


class Order(msgspec.Struct):
    id: int


class Customer(pydantic.BaseModel):
    name: str


@dataclasses.dataclass
class Line:
    n: int


def parse(data: bytes) -> Line:
    return Line(len(data))


def sources_take_record_classes() -> None:  # type-checked only
    read_file("orders.jsonl", codec=Order)
    read_file("orders.jsonl", codec=Customer, on_decode_error="skip")


def a_mistake_the_type_checker_catches() -> None:  # not called: it would raise ValueError
    Decoder(Order, on_decode_error="ignore")  # type: ignore[call-overload]


async def main() -> None:
    assert_type(Decoder(Order), Decoder[Order])
    assert_type(Decoder(Customer), Decoder[Customer])
    assert_type(Decoder(Line, on_decode_error="skip"), Decoder[Line])
    assert_type(Decoder(), Decoder[bytes])
    assert_type(Decoder("text", source="s"), Decoder[str])
    assert_type(Decoder("json"), Decoder[Any])
    assert_type(Decoder(parse), Decoder[Line])
    value = await Decoder(Order).decode(b'{"id": 1}')
    if value is not SKIPPED:
        assert_type(value, Order)
        assert value.id == 1
    encode: Encoder = resolve_encoder(Order, where="t")
    assert encode(Order(2)) == b'{"id":2}'
    assert sink_encoder("s()", None, default="json")([1]) == b"[1]"


anyio.run(main)
"""


def test_a_typed_codec_gives_a_typed_decoder(tmp_path: Path) -> None:
    program = tmp_path / "codec_user.py"
    program.write_text(PROGRAM)
    checked = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(program)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    ran = subprocess.run(
        [sys.executable, str(program)], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert ran.returncode == 0, ran.stderr
