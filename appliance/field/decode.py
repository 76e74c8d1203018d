"""Turn raw registers or bits into a point's value, and back for writes (pure, no I/O)."""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence

from appliance.config.points import NUMERIC_TYPES, Point, register_count
from appliance.intrange import INT_RANGE

Value = bool | int | float | str

# The struct format character of each numeric point type.
STRUCT_FORMAT: dict[str, str] = {
    "int16": "h",
    "uint16": "H",
    "int32": "i",
    "uint32": "I",
    "int64": "q",
    "uint64": "Q",
    "float32": "f",
    "float64": "d",
}
# How far (value - offset) / scale may sit from a whole number and still be written.
_INT_TOLERANCE = 1e-6


class DecodeError(ValueError):
    """The registers or bits given cannot be a value of the point (wrong length or range)."""


class EncodeError(ValueError):
    """The value cannot be written to the point (wrong kind, out of range, not representable)."""


def _words_to_bytes(point: Point, words: Sequence[int]) -> bytes:
    if point.word_order == "little" and point.type != "string":
        words = words[::-1]
    return b"".join(w.to_bytes(2, point.byte_order) for w in words)


def _bytes_to_words(point: Point, data: bytes) -> list[int]:
    words = [int.from_bytes(data[i : i + 2], point.byte_order) for i in range(0, len(data), 2)]
    if point.word_order == "little" and point.type != "string":
        words.reverse()
    return words


def _take(point: Point, data: Sequence[int | bool], offset: int) -> list[int]:
    n = register_count(point)
    unit = "bit" if point.type == "bool" else "register"
    if offset < 0 or offset + n > len(data):
        raise DecodeError(
            f"point {point.name!r} needs {n} {unit}(s) at offset {offset}, "
            f"but only {len(data)} were read"
        )
    out = []
    top = 1 if point.type == "bool" else 0xFFFF
    for i, v in enumerate(data[offset : offset + n]):
        if isinstance(v, bool):
            v = int(v)
        if not isinstance(v, int) or not 0 <= v <= top:
            raise DecodeError(
                f"point {point.name!r}: {unit} {offset + i} is {v!r}, not an integer 0-{top}"
            )
        out.append(v)
    return out


def decode(point: Point, registers_or_bits: Sequence[int | bool], offset: int = 0) -> Value:
    """The value of `point` from a read that holds its registers (or bits) at `offset`.

    Numbers get `raw * scale + offset` (ints stay ints when scale is 1 and offset 0);
    bool and bit points give bool; strings are ASCII with trailing NULs removed.
    """
    raw = _take(point, registers_or_bits, offset)
    if point.type == "bool":
        return bool(raw[0])
    if point.type == "bit":
        assert point.bit is not None  # checked by Point
        word = int.from_bytes(raw[0].to_bytes(2, "big"), point.byte_order)
        return bool(word >> point.bit & 1)
    data = _words_to_bytes(point, raw)
    if point.type == "string":
        try:
            return data.decode("ascii").rstrip("\x00")
        except UnicodeDecodeError as e:
            raise DecodeError(
                f"point {point.name!r}: byte {e.start} is 0x{data[e.start]:02x}, not ASCII"
            ) from None
    (number,) = struct.unpack(">" + STRUCT_FORMAT[point.type], data)
    if point.scale == 1 and point.offset == 0:
        return number
    return number * point.scale + point.offset


def _raw_number(point: Point, value: Value) -> int | float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise EncodeError(f"point {point.name!r} is {point.type}: needs a number, not {value!r}")
    scaled = point.scale != 1 or point.offset != 0
    try:
        raw: int | float = (value - point.offset) / point.scale if scaled else value
        if point.type.startswith("float"):
            return float(raw)
    except OverflowError:
        raw = math.inf
    if isinstance(raw, float) and not math.isfinite(raw):
        raise EncodeError(f"point {point.name!r} is {point.type}: cannot hold {value!r}")
    whole = round(raw)
    if abs(raw - whole) > _INT_TOLERANCE:
        unit = f" at scale {point.scale} and offset {point.offset}" if scaled else ""
        raise EncodeError(
            f"point {point.name!r} is {point.type}{unit}: {value!r} is not a whole step"
        )
    lo, hi = INT_RANGE[point.type]
    if not lo <= whole <= hi:
        raise EncodeError(
            f"point {point.name!r} is {point.type}: raw value {whole} is outside {lo}..{hi}"
        )
    return whole


def encode(point: Point, value: Value, base: int = 0) -> list[int]:
    """The registers (or bits, 0/1) that make `decode` give `value`: the inverse, for writes.

    A bit point changes one bit of a register: `base` is that register as last read
    (the write is read-modify-write; the caller owns the race). Strings are padded
    with NULs to the point's length.
    """
    if point.type == "bool":
        if not isinstance(value, bool | int) or value not in (0, 1):
            raise EncodeError(f"point {point.name!r} is bool: needs true or false, not {value!r}")
        return [int(value)]
    if point.type == "bit":
        assert point.bit is not None  # checked by Point
        if not isinstance(value, bool | int) or value not in (0, 1):
            raise EncodeError(f"point {point.name!r} is a bit: needs true or false, not {value!r}")
        if isinstance(base, bool) or not isinstance(base, int) or not 0 <= base <= 0xFFFF:
            raise EncodeError(f"point {point.name!r}: base register {base!r} is not 0-65535")
        word = int.from_bytes(base.to_bytes(2, "big"), point.byte_order)
        word = word | 1 << point.bit if value else word & ~(1 << point.bit)
        return [int.from_bytes(word.to_bytes(2, point.byte_order), "big")]
    if point.type == "string":
        if not isinstance(value, str):
            raise EncodeError(f"point {point.name!r} is a string: needs text, not {value!r}")
        try:
            data = value.encode("ascii")
        except UnicodeEncodeError as e:
            raise EncodeError(
                f"point {point.name!r}: {value[e.start]!r} at {e.start} is not ASCII"
            ) from None
        size = 2 * register_count(point)
        if len(data) > size:
            raise EncodeError(
                f"point {point.name!r} holds {size} characters; {value!r} has {len(data)}"
            )
        return _bytes_to_words(point, data.ljust(size, b"\x00"))
    assert point.type in NUMERIC_TYPES
    raw = _raw_number(point, value)
    try:
        data = struct.pack(">" + STRUCT_FORMAT[point.type], raw)
    except (OverflowError, struct.error):
        raise EncodeError(f"point {point.name!r} is {point.type}: cannot hold {value!r}") from None
    return _bytes_to_words(point, data)
