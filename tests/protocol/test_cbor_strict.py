"""protocol.cbor: the strict subset of CBOR a verifier accepts from outside."""

from __future__ import annotations

from typing import Any

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.cbor import ALLOWED_TAGS, MAX_DEPTH, decode, encode
from protocol.errors import BadCbor, DecodeError, TooLarge

LIMIT = 1 << 16


def strict(hex_or_bytes: str | bytes, **kwargs: Any) -> Any:
    data = bytes.fromhex(hex_or_bytes) if isinstance(hex_or_bytes, str) else hex_or_bytes
    kwargs.setdefault("max_size", LIMIT)
    return decode(data, **kwargs)


def test_accepts_plain_values() -> None:
    assert strict("a3 01 26 04 42 6869 63 656e74 a1 61 78 f5".replace(" ", "")) == {
        1: -7,
        4: b"hi",
        "ent": {"x": True},
    }


def test_tagged_cose_value_comes_back_as_plain_lists_and_dicts() -> None:
    item = strict(cbor2.dumps(cbor2.CBORTag(18, [b"", {4: b"k"}, b"p", b"s"])))
    assert item == cbor2.CBORTag(18, [b"", {4: b"k"}, b"p", b"s"])
    assert type(item.value) is list and type(item.value[1]) is dict


def test_accepts_bytes_likes() -> None:
    assert strict(bytearray(b"\x82\x01\x02")) == [1, 2]
    assert strict(memoryview(b"\x82\x01\x02")) == [1, 2]


@pytest.mark.parametrize("value", ["a0", None, 1, [b"\xa0"]], ids=["str", "none", "int", "list"])
def test_refuses_non_bytes(value: Any) -> None:
    with pytest.raises(BadCbor):
        decode(value, max_size=LIMIT)


def test_empty_input() -> None:
    with pytest.raises(BadCbor):
        strict(b"")


# --- size ---------------------------------------------------------------------------


def test_size_limit_is_inclusive() -> None:
    data = cbor2.dumps(b"x" * 100)
    assert strict(data, max_size=len(data)) == b"x" * 100
    with pytest.raises(TooLarge):
        strict(data, max_size=len(data) - 1)


def test_too_large_before_well_formedness() -> None:
    with pytest.raises(TooLarge):
        strict(b"\xff" * 11, max_size=10)


# --- trailing bytes -------------------------------------------------------------------


@pytest.mark.parametrize("hexdata", ["0100", "a000", "8001", "41aa00", "f6f6"])
def test_trailing_bytes(hexdata: str) -> None:
    with pytest.raises(BadCbor, match="trailing"):
        strict(hexdata)


# --- duplicate map keys -------------------------------------------------------------


DUPLICATES = {
    "int": "a2 01 00 01 00",
    "int-non-minimal-1-byte": "a2 01 00 18 01 00",
    "int-non-minimal-2-bytes": "a2 18 01 00 19 0001 00",
    "int-non-minimal-4-bytes": "a2 01 00 1a 00000001 00",
    "int-non-minimal-8-bytes": "a2 01 00 1b 0000000000000001 00",
    "negative-int-non-minimal": "a2 20 00 38 00 00",
    "text": "a2 61 61 00 61 61 00",
    "text-non-minimal-length": "a2 61 61 00 78 01 61 00",
    "bytes-non-minimal-length": "a2 41 61 00 59 0001 61 00",
    "not-adjacent": "a3 01 00 02 00 01 00",
    "nested-in-array": "81 a2 63 766572 01 63 766572 02",
    "nested-in-map-value": "a1 01 a2 02 00 02 01",
    "inside-tag": "d2 a2 01 00 01 01",
}


@pytest.mark.parametrize("hexdata", DUPLICATES.values(), ids=DUPLICATES.keys())
def test_duplicate_map_keys(hexdata: str) -> None:
    with pytest.raises(BadCbor, match="duplicate"):
        strict(hexdata.replace(" ", ""))


def test_same_key_in_sibling_maps_is_fine() -> None:
    assert strict("82 a1 01 00 a1 01 00".replace(" ", "")) == [{1: 0}, {1: 0}]


def test_keys_of_different_types_are_distinct() -> None:
    """1, -2, "1", h'31' and 0/-1 never collide, whatever their encodings."""
    data = "a6 01 00 21 00 61 31 00 41 31 00 00 00 20 00".replace(" ", "")
    assert strict(data) == {1: 0, -2: 0, "1": 0, b"1": 0, 0: 0, -1: 0}


@pytest.mark.parametrize(
    "hexdata",
    [
        "a1 f93c00 00",
        "a1 80 00",
        "a1 a0 00",
        "a1 f5 00",
        "a1 f6 00",
        "a1 d2 00 00",
        "a1 fb 3ff0000000000000 00",
    ],
    ids=["float", "array", "map", "bool", "null", "tagged", "double"],
)
def test_map_key_types(hexdata: str) -> None:
    with pytest.raises(BadCbor, match="map keys"):
        strict(hexdata.replace(" ", ""))


# --- indefinite lengths and reserved values -----------------------------------------


INDEFINITE = {
    "bytes": "5f 41 61 ff",
    "text": "7f 61 61 ff",
    "array": "9f 01 ff",
    "empty-array": "9f ff",
    "map": "bf 01 00 ff",
    "nested": "81 9f ff",
    "lone-break": "ff",
    "as-map-key": "a1 7f ff 00",
}


@pytest.mark.parametrize("hexdata", INDEFINITE.values(), ids=INDEFINITE.keys())
def test_indefinite_length(hexdata: str) -> None:
    with pytest.raises(BadCbor, match="indefinite"):
        strict(hexdata.replace(" ", ""))


@pytest.mark.parametrize("major", range(8))
@pytest.mark.parametrize("info", [28, 29, 30])
def test_reserved_additional_information(major: int, info: int) -> None:
    with pytest.raises(BadCbor, match="reserved"):
        strict(bytes([major << 5 | info]) + b"\x00" * 8)


@pytest.mark.parametrize("hexdata", ["f800", "f818", "f81f", "81f814"])
def test_two_byte_simple_value_below_32(hexdata: str) -> None:
    with pytest.raises(BadCbor):
        strict(hexdata)


def test_two_byte_simple_value_32_is_well_formed() -> None:
    assert strict("f820") == cbor2.CBORSimpleValue(32)


@pytest.mark.parametrize(
    "hexdata", ["62c328", "62c080", "63eda080"], ids=["invalid", "overlong", "surrogate"]
)
def test_invalid_utf8(hexdata: str) -> None:
    with pytest.raises(BadCbor):
        strict(hexdata)


# --- depth --------------------------------------------------------------------------


def test_nesting_at_max_depth_accepted() -> None:
    assert strict(b"\x81" * MAX_DEPTH + b"\x00") is not None
    assert strict(b"\x81" * MAX_DEPTH + b"\x80") is not None


@pytest.mark.parametrize(
    "inner", [b"\x00", b"\x80", b"\xa0"], ids=["int", "empty-array", "empty-map"]
)
def test_nesting_deeper_than_max_depth(inner: bytes) -> None:
    with pytest.raises(BadCbor, match="deeper"):
        strict(b"\x81" * (MAX_DEPTH + 1) + inner)


def test_nesting_through_maps_and_tags_counts() -> None:
    deep_maps = b"\xa1\x01" * (MAX_DEPTH + 1) + b"\x00"
    with pytest.raises(BadCbor, match="deeper"):
        strict(deep_maps)
    deep_tags = b"\xd2" * (MAX_DEPTH + 1) + b"\x00"
    with pytest.raises(BadCbor, match="deeper"):
        strict(deep_tags)


def test_custom_max_depth() -> None:
    assert strict("8101", max_depth=1) == [1]
    with pytest.raises(BadCbor):
        strict("818101", max_depth=1)


def test_very_deep_input_is_refused_without_recursion_error() -> None:
    with pytest.raises(BadCbor):
        strict(b"\x81" * 50_000 + b"\x00", max_size=1 << 20)


# --- truncation and lying lengths -----------------------------------------------


def test_every_truncation_of_a_token_is_bad_cbor(token: bytes) -> None:
    for end in range(len(token)):
        with pytest.raises(BadCbor):
            strict(token[:end])


@pytest.mark.parametrize(
    "hexdata",
    [
        "5bffffffffffffffff",
        "7b00000000ffffffff",
        "9bffffffffffffffff",
        "bbffffffffffffffff",
        "1b0000",
        "8201",
        "a101",
    ],
    ids=["bytes", "text", "array", "map", "int-head", "array-items", "map-value"],
)
def test_lengths_longer_than_input(hexdata: str) -> None:
    with pytest.raises(BadCbor):
        strict(hexdata)


# --- tags -------------------------------------------------------------------------


def test_allowed_tags_are_the_cose_ones() -> None:
    assert ALLOWED_TAGS == {18, 98}


REFUSED_TAGS = {
    "datetime-string": "c0 6161",
    "epoch": "c1 00",
    "bignum": "c2 4101",
    "negative-bignum": "c3 4101",
    "decimal-fraction-overflow": "c4 82 1b7fffffffffffffff 01",
    "bigfloat-overflow": "c5 82 1b7fffffffffffffff 01",
    "cbor-data-item": "d818 4101",
    "stringref": "d819 00",
    "shareable-cycle": "d81c 81 d81d 00",
    "sharedref": "d81d 00",
    "rational": "d81e 82 01 00",
    "regex": "d823 61 28",
    "mime": "d824 61 61",
    "uuid": "d825 50 00000000000000000000000000000000",
    "cwt": "d83d a0",
    "stringref-namespace": "d90100 00",
    "set": "d90102 80",
    "ipaddress": "d90104 44 7f000001",
    "self-describe": "d9d9f7 00",
}


@pytest.mark.parametrize("hexdata", REFUSED_TAGS.values(), ids=REFUSED_TAGS.keys())
def test_tags_outside_the_protocol_are_refused(hexdata: str) -> None:
    """cbor2's semantic decoders never see untrusted bytes (cycles, decimal errors, ...)."""
    with pytest.raises(BadCbor, match="tag"):
        strict(hexdata.replace(" ", ""))


# --- properties -------------------------------------------------------------------


@given(st.binary(max_size=512))
def test_arbitrary_bytes_raise_only_decode_errors(data: bytes) -> None:
    try:
        strict(data)
    except DecodeError:
        pass


keys = st.one_of(st.integers(-(2**64), 2**64 - 1), st.text(max_size=8), st.binary(max_size=8))
leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**64), 2**64 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.binary(max_size=20),
)
values = st.recursive(
    leaves,
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(keys, inner, max_size=5)),
    max_leaves=30,
)


@given(values)
def test_round_trip(value: Any) -> None:
    data = encode(value)
    decoded = strict(data, max_depth=64)
    assert decoded == value
    assert encode(decoded) == data  # canonical encoding is stable


@given(values, st.data())
def test_mutated_encodings_raise_only_decode_errors(value: Any, data: st.DataObject) -> None:
    raw = bytearray(encode(value))
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "insert", "delete"]))
        pos = data.draw(st.integers(0, len(raw)))
        if op == "insert":
            raw.insert(pos, data.draw(st.integers(0, 255)))
        elif raw and pos < len(raw):
            if op == "flip":
                raw[pos] ^= 1 << data.draw(st.integers(0, 7))
            else:
                del raw[pos]
    try:
        strict(bytes(raw))
    except DecodeError:
        pass
