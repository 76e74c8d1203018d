"""Decoding raw registers and bits into point values, and encoding them back for writes."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from propkit import examples

from appliance.config.points import Point, register_count
from appliance.field.decode import DecodeError, EncodeError, decode, encode


def pt(type_: str, **kw: Any) -> Point:
    kw.setdefault("table", "coil" if type_ == "bool" else "holding")
    kw.setdefault("address", 0)
    return Point(name="p", type=type_, **kw)


F15 = [0x3FC0, 0x0000]  # float32 1.5, most significant word and byte first


@pytest.mark.parametrize(
    ("byte_order", "word_order", "words"),
    [
        ("big", "big", [0x3FC0, 0x0000]),
        ("big", "little", [0x0000, 0x3FC0]),  # word-swapped ("CDAB")
        ("little", "big", [0xC03F, 0x0000]),  # byte-swapped ("BADC")
        ("little", "little", [0x0000, 0xC03F]),  # both ("DCBA")
    ],
)
def test_float32_one_and_a_half_in_every_order(byte_order: str, word_order: str, words: list[int]):
    p = pt("float32", byte_order=byte_order, word_order=word_order)
    assert decode(p, words) == 1.5
    assert encode(p, 1.5) == words


def test_int32_minus_two_big_and_word_swapped() -> None:
    assert decode(pt("int32"), [0xFFFF, 0xFFFE]) == -2
    assert decode(pt("int32", word_order="little"), [0xFFFE, 0xFFFF]) == -2
    assert decode(pt("uint32"), [0xFFFF, 0xFFFE]) == 0xFFFFFFFE


def test_int16_and_uint16_of_the_same_register() -> None:
    assert decode(pt("int16"), [0x8000]) == -32768
    assert decode(pt("uint16"), [0x8000]) == 32768
    assert decode(pt("uint16", byte_order="little"), [0x3412]) == 0x1234


@pytest.mark.parametrize(
    ("type_", "words", "value"),
    [
        ("uint64", [0, 0, 0, 0], 0),
        ("uint64", [0xFFFF] * 4, 2**64 - 1),
        ("uint64", [0x8000, 0, 0, 0], 2**63),
        ("int64", [0x8000, 0, 0, 0], -(2**63)),
        ("int64", [0x7FFF, 0xFFFF, 0xFFFF, 0xFFFF], 2**63 - 1),
        ("int64", [0xFFFF] * 4, -1),
        ("float64", [0x3FF8, 0, 0, 0], 1.5),
    ],
)
def test_64_bit_edge_values(type_: str, words: list[int], value: int) -> None:
    assert decode(pt(type_), words) == value
    assert encode(pt(type_), value) == words


def test_uint64_little_word_order_reverses_all_four_words() -> None:
    p = pt("uint64", word_order="little")
    assert decode(p, [4, 3, 2, 1]) == 0x0001_0002_0003_0004


def test_bit_15_of_0x8000_and_bit_0() -> None:
    assert decode(pt("bit", bit=15), [0x8000]) is True
    assert decode(pt("bit", bit=14), [0x8000]) is False
    assert decode(pt("bit", bit=0), [0x0001]) is True
    # Byte-swapped: the register as sent holds the low byte first.
    assert decode(pt("bit", bit=0, byte_order="little"), [0x0100]) is True


def test_bit_write_changes_only_its_bit() -> None:
    assert encode(pt("bit", bit=3), True, base=0xF000) == [0xF008]
    assert encode(pt("bit", bit=15), False, base=0xFFFF) == [0x7FFF]


def test_string_from_registers() -> None:
    words = [0x4C41, 0x422D, 0x504C, 0x432D, 0x3031]
    assert decode(pt("string", length=5), words) == "LAB-PLC-01"
    assert encode(pt("string", length=5), "LAB-PLC-01") == words


def test_string_nuls_stripped_and_padding() -> None:
    p = pt("string", length=4)
    assert decode(p, [0x4142, 0x4300, 0, 0]) == "ABC"
    assert encode(p, "ABC") == [0x4142, 0x4300, 0, 0]
    assert decode(pt("string", length=2, byte_order="little"), [0x4241, 0x0043]) == "ABC"


def test_bool_from_bits_at_an_offset() -> None:
    p = pt("bool", table="discrete")
    assert decode(p, [0, 1, 0], 1) is True
    assert decode(p, [False, True, False], 2) is False
    assert encode(p, True) == [1]


def test_scale_and_offset_apply_to_numbers() -> None:
    p = pt("int16", scale=0.1, offset=-40)
    assert decode(p, [0xFFFF]) == pytest.approx(-40.1)
    assert decode(p, [650]) == pytest.approx(25.0)
    assert encode(p, 25.0) == [650]
    assert decode(pt("uint16"), [7]) == 7 and isinstance(decode(pt("uint16"), [7]), int)


def test_decode_at_offset_inside_a_longer_read() -> None:
    assert decode(pt("float32"), [1, 2, *F15, 9], 2) == 1.5


@pytest.mark.parametrize(
    ("point", "data", "offset", "message"),
    [
        (pt("float32"), [0x3FC0], 0, "needs 2 register(s) at offset 0, but only 1"),
        (pt("int16"), [1, 2], 2, "needs 1 register(s) at offset 2"),
        (pt("int16"), [1], -1, "at offset -1"),
        (pt("bool"), [], 0, "needs 1 bit(s)"),
        (pt("uint16"), [70000], 0, "register 0 is 70000, not an integer 0-65535"),
        (pt("bool"), [2], 0, "bit 0 is 2, not an integer 0-1"),
        (pt("string", length=1), [0x41FF], 0, "byte 1 is 0xff, not ASCII"),
    ],
)
def test_decode_errors_are_clear(point: Point, data: list[int], offset: int, message: str):
    with pytest.raises(DecodeError, match=message.replace("(", r"\(").replace(")", r"\)")):
        decode(point, data, offset)


@pytest.mark.parametrize(
    ("point", "value", "message"),
    [
        (pt("uint16"), -1, "outside 0..65535"),
        (pt("int16"), 40000, "outside -32768..32767"),
        (pt("int16"), 1.5, "not a whole step"),
        (pt("int16", scale=0.5), 0.7, "at scale 0.5 and offset 0.0: 0.7 is not a whole step"),
        (pt("int16"), "7", "needs a number"),
        (pt("int16"), True, "needs a number"),
        (pt("float32"), 1e300, "cannot hold"),
        (pt("int64"), math.inf, "cannot hold"),
        (pt("string", length=1), "ABC", "holds 2 characters"),
        (pt("string", length=1), "é", "not ASCII"),
        (pt("bool"), 2, "needs true or false"),
    ],
)
def test_encode_errors_are_clear(point: Point, value: Any, message: str) -> None:
    with pytest.raises(EncodeError, match=message):
        encode(point, value)


# --- round trips ------------------------------------------------------------------------

ORDERS = st.sampled_from(["big", "little"])
NUMERIC = ["int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64"]


@st.composite
def points(draw: st.DrawFn) -> Point:
    type_ = draw(st.sampled_from(["bool", "bit", "string", *NUMERIC]))
    kw: dict[str, Any] = {"byte_order": draw(ORDERS), "word_order": draw(ORDERS)}
    if type_ == "bit":
        kw["bit"] = draw(st.integers(0, 15))
    if type_ == "string":
        kw["length"] = draw(st.integers(1, 8))
    return pt(type_, **kw)


@settings(max_examples=examples(300))
@given(points(), st.data())
def test_registers_round_trip_through_decode_and_encode(point: Point, data: st.DataObject):
    n = register_count(point)
    top = 1 if point.type == "bool" else 0xFFFF
    words = data.draw(st.lists(st.integers(0, top), min_size=n, max_size=n))
    if point.type == "string":
        raw = b"".join(w.to_bytes(2, point.byte_order) for w in words)
        if any(b > 0x7F for b in raw):
            with pytest.raises(DecodeError, match="not ASCII"):
                decode(point, words)
            return
    value = decode(point, words)
    if point.type == "bit":
        assert encode(point, value, base=words[0]) == words
        return
    if isinstance(value, float) and math.isnan(value):
        assert math.isnan(decode(point, encode(point, value)))  # NaN payloads may change
        return
    assert encode(point, value) == words


def _values(point: Point) -> st.SearchStrategy[Any]:
    if point.type in ("bool", "bit"):
        return st.booleans()
    if point.type == "string":
        ascii_ = st.characters(min_codepoint=1, max_codepoint=0x7F)
        return st.text(ascii_, max_size=2 * register_count(point))
    if point.type == "float32":
        return st.floats(width=32, allow_nan=False)
    if point.type == "float64":
        return st.floats(allow_nan=False)
    bits = int(point.type.removeprefix("u").removeprefix("int"))
    if point.type.startswith("u"):
        return st.integers(0, 2**bits - 1)
    return st.integers(-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)


@settings(max_examples=examples(300))
@given(points(), st.data())
def test_values_round_trip_through_encode_and_decode(point: Point, data: st.DataObject):
    value = data.draw(_values(point))
    assert decode(point, encode(point, value)) == value


@settings(max_examples=examples(100))
@given(
    st.sampled_from(["int16", "int32", "uint16", "uint32"]),
    st.sampled_from([0.1, 0.01, 0.5, 2.0, 10.0, -1.0]),
    st.sampled_from([0.0, -40.0, 273.15]),
    st.integers(0, 30000),
)
def test_scaled_values_round_trip(type_: str, scale: float, offset: float, raw: int) -> None:
    p = pt(type_, scale=scale, offset=offset)
    words = encode(pt(type_), raw)
    assert encode(p, decode(p, words)) == words
