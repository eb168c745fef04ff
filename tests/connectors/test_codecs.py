"""The codec layer: JSON (either library), typed records, encoders and sink_encoder.

Typed records are tested with each kind of class (msgspec Struct, pydantic model, pydantic
dataclass, dataclass, attrs class) through a real Decoder under each decode policy, and
the JSON library's two paths (msgspec and the stdlib fallback) against the same inputs.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import logging
import math
import subprocess
import sys
import warnings
from typing import Any

import attrs
import msgspec
import pydantic
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rxflow.connectors import codecs as codecs_from_package
from rxflow.connectors.codecs import (
    SKIPPED,
    DecodeFailure,
    Decoder,
    RecordRejected,
    encode_auto,
    encode_json,
    is_record_type,
    resolve_codec,
    resolve_encoder,
    sink_encoder,
)
from rxflow.connectors.codecs import _json as json_layer
from rxflow.errors import DecodeError, RecordInvalidError, RxflowError

# -- record classes, one of each kind, all saying the same thing ----------------------------


class StructItem(msgspec.Struct):
    sku: str
    qty: int


class StructOrder(msgspec.Struct):
    id: int
    user: str
    items: list[StructItem]


class ModelItem(pydantic.BaseModel):
    sku: str
    qty: int


class ModelOrder(pydantic.BaseModel):
    id: int
    user: str
    items: list[ModelItem]


@dataclasses.dataclass
class DataItem:
    sku: str
    qty: int


@dataclasses.dataclass
class DataOrder:
    id: int
    user: str
    items: list[DataItem]


@pydantic.dataclasses.dataclass
class PydanticDataOrder:
    id: int
    user: str
    items: list[DataItem]


@attrs.frozen
class AttrsItem:
    sku: str
    qty: int


@attrs.frozen
class AttrsOrder:
    id: int
    user: str
    items: list[AttrsItem]


class Status(enum.Enum):
    OPEN = "open"


class Ticket(msgspec.Struct):
    status: Status


ORDER_CLASSES = [StructOrder, ModelOrder, DataOrder, PydanticDataOrder, AttrsOrder]
GOOD = b'{"id": 7, "user": "ann", "items": [{"sku": "A-1", "qty": 2}]}'
# qty is a word, and a secret sits in another field: neither may reach a log line.
BAD_FIELD = b'{"id": 7, "user": "hunter2", "items": [{"sku": "A-1", "qty": "two"}]}'


def as_plain(order: Any) -> dict[str, Any]:
    return {
        "id": order.id,
        "user": order.user,
        "items": [{"sku": item.sku, "qty": item.qty} for item in order.items],
    }


def skip_logs(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "rxflow.connectors"]


# -- typed records: decoding -----------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("cls", ORDER_CLASSES, ids=lambda cls: cls.__name__)
async def test_a_record_class_as_codec_decodes_json_into_it(cls: type[Any]) -> None:
    decoder = Decoder(cls, source="orders")
    order = await decoder.decode(GOOD)
    assert isinstance(order, cls)
    assert as_plain(order) == {"id": 7, "user": "ann", "items": [{"sku": "A-1", "qty": 2}]}
    assert decoder.decoded == 1


@pytest.mark.anyio
@pytest.mark.parametrize("cls", ORDER_CLASSES, ids=lambda cls: cls.__name__)
async def test_a_record_that_fails_validation_is_skipped_naming_the_field_not_the_values(
    cls: type[Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="rxflow.connectors")
    decoder = Decoder(cls, on_decode_error="skip", source="orders")
    assert await decoder.decode(BAD_FIELD, key="k1") is SKIPPED
    assert await decoder.decode(GOOD, key="k2") != SKIPPED
    assert (decoder.skipped, decoder.decoded) == (1, 1)
    (line,) = skip_logs(caplog)
    assert line.startswith(
        f"orders: skipped record 'k1' (on_decode_error='skip'): is not a valid {cls.__name__}: "
    )
    assert "$.items[0].qty" in line
    assert "hunter2" not in line
    assert "two" not in line


@pytest.mark.anyio
@pytest.mark.parametrize("cls", ORDER_CLASSES, ids=lambda cls: cls.__name__)
async def test_a_record_that_fails_validation_raises_decode_error_by_default(
    cls: type[Any],
) -> None:
    decoder = Decoder(cls, source="orders")
    with pytest.raises(DecodeError, match=r"record 'k1' is not a valid \w+: .*qty") as raised:
        await decoder.decode(BAD_FIELD, key="k1")
    cause = raised.value.__cause__
    assert isinstance(cause, RecordInvalidError)
    assert isinstance(cause, RxflowError)
    assert isinstance(cause, ValueError)
    # The library's own error (pydantic's quotes the input) is not chained under it.
    assert cause.__cause__ is None
    assert cause.__suppress_context__
    assert "hunter2" not in str(cause)


@pytest.mark.anyio
@pytest.mark.parametrize("cls", ORDER_CLASSES, ids=lambda cls: cls.__name__)
async def test_a_record_that_is_not_json_at_all_is_a_decode_failure_too(cls: type[Any]) -> None:
    dead: list[DecodeFailure] = []
    decoder = Decoder(cls, on_decode_error="dead_letter", dead_letter=dead.append, source="s")
    assert await decoder.decode(b"{oops", key="k") is SKIPPED
    assert await decoder.decode(b'{"id": 1}', key="k") is SKIPPED  # fields missing
    assert [type(failure.error) for failure in dead] == [RecordInvalidError] * 2
    assert dead[0].data == b"{oops"
    assert decoder.dead_lettered == 2


@pytest.mark.anyio
async def test_msgspec_enum_errors_leave_the_value_out() -> None:
    failures: list[DecodeFailure] = []
    decoder = Decoder(Ticket, on_decode_error="dead_letter", dead_letter=failures.append)
    await decoder.decode(b'{"status": "s3cret"}')
    assert str(failures[0].error) == "not a valid Ticket: at `$.status`: Invalid enum value"


def test_record_classes_are_told_from_functions() -> None:
    for cls in ORDER_CLASSES:
        assert is_record_type(cls)
    for other in (str, bytes, int, json.loads, object, StructOrder(1, "a", [])):
        assert not is_record_type(other)
    # A plain class is still a function bytes -> value, as before.
    assert resolve_codec(bytes.upper, where="t")(b"a") == b"A"


def test_a_dataclass_without_msgspec_is_validated_by_pydantic() -> None:
    # In a child process where msgspec cannot be imported: the fallback, for real.
    code = """
import sys
sys.modules["msgspec"] = None  # import msgspec -> ModuleNotFoundError
import dataclasses
from rxflow.connectors.codecs import resolve_codec, _json
from rxflow.errors import RecordInvalidError

@dataclasses.dataclass
class Order:
    id: int

decode = resolve_codec(Order, where="t")
assert decode(b'{"id": 3}') == Order(3), decode(b'{"id": 3}')
try:
    decode(b'{"id": "x"}')
except RecordInvalidError as error:
    print(_json.LIBRARY, error)
"""
    assert run_python(code) == (
        "json not a valid Order: at `$.id`: Input should be a valid integer, "
        "unable to parse string as an integer"
    )


def test_a_missing_extra_names_what_to_install() -> None:
    code = """
import sys
sys.modules["msgspec"] = None
sys.modules["pydantic"] = None
sys.modules["fastavro"] = None
import dataclasses
from rxflow.connectors.codecs import avro_reader, resolve_codec
from rxflow.errors import MissingExtraError

@dataclasses.dataclass
class Order:
    id: int

for attempt in (lambda: resolve_codec(Order, where="t"), lambda: avro_reader({1: "long"})):
    try:
        attempt()
    except MissingExtraError as error:
        print(error)
"""
    assert run_python(code).splitlines() == [
        "typed records (codec=<class>) needs msgspec, which is not installed: "
        "pip install 'rxflow[msgspec]'",
        "Avro (rxflow.connectors.codecs.avro) needs fastavro, which is not installed: "
        "pip install 'rxflow[avro]'",
    ]


def run_python(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


# -- typed records: encoding -----------------------------------------------------------------


@pytest.mark.parametrize("cls", ORDER_CLASSES, ids=lambda cls: cls.__name__)
def test_records_round_trip_through_their_encoder_and_codec(cls: type[Any]) -> None:
    decode = resolve_codec(cls, where="t")
    order = decode(GOOD)
    for encode in (resolve_encoder(cls, where="t"), encode_auto, encode_json):
        data = encode(order)
        assert json.loads(data) == json.loads(GOOD)
        assert b" " not in data
        assert decode(data) == order


def test_a_record_encoder_refuses_other_values() -> None:
    encode = resolve_encoder(DataOrder, where="file_sink()")
    with pytest.raises(
        TypeError, match=r"file_sink\(\): encoder=DataOrder writes DataOrder records, got dict"
    ):
        encode({"id": 1})


def test_records_inside_containers_are_written_too() -> None:
    value = {"orders": [ModelOrder(id=1, user="a", items=[]), DataItem("x", 1)]}
    expected = {"orders": [{"id": 1, "user": "a", "items": []}, {"sku": "x", "qty": 1}]}
    assert json.loads(encode_auto(value)) == expected
    assert json.loads(json_layer._stdlib_dumps(value)) == expected


# -- JSON: one semantics whichever library ------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=st.characters(blacklist_categories=["Cs"])),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.text(alphabet=st.characters(blacklist_categories=["Cs"])), inner, max_size=4
        )
    ),
    max_leaves=12,
)


@given(JSON_VALUES)
def test_both_json_paths_read_and_write_the_same_json(value: Any) -> None:
    fast, stdlib = json_layer.dumps(value), json_layer._stdlib_dumps(value)
    assert json_layer.LIBRARY == "msgspec"  # the test extra installs it
    for data in (fast, stdlib):
        assert b"\n" not in data
        assert json.loads(data) == value  # compact RFC 8259 JSON, read back the same
        assert json_layer.loads(data) == json_layer._stdlib_loads(data) == value
    # Floats may be spelled differently (1e+16 / 1e16); everything else is byte-identical.
    if not any(isinstance(leaf, float) for leaf in leaves(value)):
        assert fast == stdlib


def leaves(value: Any) -> list[Any]:
    if isinstance(value, list):
        return [leaf for item in value for leaf in leaves(item)]
    if isinstance(value, dict):
        return [leaf for item in value.values() for leaf in leaves(item)]
    return [value]


@pytest.mark.parametrize(
    "data", [b"NaN", b"[Infinity]", b"-Infinity", b'{"a": 1} x', b"{oops", b""]
)
def test_both_json_paths_refuse_what_is_not_json(data: bytes) -> None:
    for loads in (json_layer.loads, json_layer._stdlib_loads):
        with pytest.raises(json.JSONDecodeError):
            loads(data)


def test_json_is_utf8_compact_and_keeps_big_integers() -> None:
    value = {"city": "Zürich", "n": 2**70 + 1, "list": [1, 2]}  # not a float: exact
    assert (
        encode_json(value) == '{"city":"Zürich","n":1180591620717411303425,"list":[1,2]}'.encode()
    )
    assert json_layer.loads(encode_json(value)) == value
    assert json_layer.loads(b'"\\u00e9\\ud83d\\ude00"') == "é😀"
    for loads in (json_layer.loads, json_layer._stdlib_loads):
        # UnicodeDecodeError or JSONDecodeError, as the library version has it.
        with pytest.raises(ValueError, match=r"(?i)utf-8"):
            loads(b'"\xff"')


def test_the_stdlib_path_refuses_a_nan_rather_than_write_invalid_json() -> None:
    with pytest.raises(ValueError, match="not JSON compliant"):
        json_layer._stdlib_dumps(math.nan)
    assert json_layer.dumps(math.nan) == b"null"  # msgspec's choice, documented


# -- encoders and sink_encoder ------------------------------------------------------------------


def test_auto_writes_bytes_as_they_are_text_as_utf8_and_the_rest_as_json() -> None:
    encode = resolve_encoder("auto", where="t")
    assert encode(b"raw") == b"raw"
    assert encode(bytearray(b"ba")) == b"ba"
    assert encode("é") == "é".encode()
    assert encode({"n": [1, None]}) == b'{"n":[1,null]}'
    assert encode(StructItem("a", 1)) == b'{"sku":"a","qty":1}'
    assert json.loads(encode(AttrsItem("a", 1))) == {"sku": "a", "qty": 1}


def test_named_encoders_refuse_the_wrong_type_and_unknown_names() -> None:
    with pytest.raises(TypeError, match="encoder 'bytes' writes bytes, got str"):
        resolve_encoder("bytes", where="t")("x")
    with pytest.raises(TypeError, match="encoder 'text' writes str, got int"):
        resolve_encoder("text", where="t")(1)
    with pytest.raises(ValueError, match=r"t: unknown encoder 'yaml'; use one of 'auto', 'bytes'"):
        resolve_encoder("yaml", where="t")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="t: encoder must be a name, a record class or a function"):
        resolve_encoder(42, where="t")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"t: unknown codec 'yaml'"):
        resolve_codec("yaml", where="t")  # type: ignore[arg-type]


def test_sink_encoder_takes_encoder_or_the_default() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert sink_encoder("s()", None, default="text")("é") == "é".encode()
        assert sink_encoder("s()", "json", default="text")([1]) == b"[1]"
        assert sink_encoder("s()", DataItem)(DataItem("a", 1)) == b'{"sku":"a","qty":1}'
        assert sink_encoder("s()", None)(b"x") == b"x"  # "auto" by default


def call_a_sink(**kwargs: Any) -> Any:
    """Stands for a sink function: the warning must point at *its* caller."""
    return sink_encoder("mqtt_sink()", kwargs.pop("encoder", None), **kwargs)


def test_the_old_names_still_work_with_a_deprecation_warning_naming_the_sink() -> None:
    with pytest.warns(
        DeprecationWarning, match=r"mqtt_sink\(\): encode= is deprecated; pass encoder=dumps"
    ) as caught:
        encode = call_a_sink(encode=json.dumps)
    assert caught[0].filename == __file__  # the line that called the sink
    assert encode([1]) == "[1]"
    with pytest.warns(DeprecationWarning, match=r"codec= is deprecated; pass encoder='json'"):
        assert call_a_sink(codec="json")({"a": 1}) == b'{"a":1}'


def test_two_spellings_at_once_are_refused() -> None:
    with pytest.raises(TypeError, match=r"pass only encoder= \(got encoder= and codec=\)"):
        call_a_sink(encoder="json", codec="text")
    with pytest.raises(TypeError, match=r"got codec= and encode="):
        call_a_sink(codec="json", encode="text")


# -- the package keeps its names ----------------------------------------------------------------


def test_record_rejected_lives_in_errors_and_is_re_exported() -> None:
    from rxflow import errors

    assert RecordRejected is errors.RecordRejected is codecs_from_package.RecordRejected
    assert issubclass(RecordRejected, RxflowError)
    assert issubclass(RecordRejected, ValueError)


def test_skipped_reads_as_its_name() -> None:
    assert (repr(SKIPPED), str(SKIPPED), f"{SKIPPED}") == ("SKIPPED",) * 3


@pytest.mark.anyio
async def test_a_rejected_record_still_follows_the_policy() -> None:
    decoder = Decoder("json", on_decode_error="skip")
    assert await decoder.reject(b"", RecordRejected("no field 'data'"), key="1-0") is SKIPPED
    assert decoder.skipped == 1


def test_every_public_name_imports_from_the_package() -> None:
    for name in codecs_from_package.__all__:
        assert getattr(codecs_from_package, name) is not None
