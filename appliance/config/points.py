"""Frozen, typed descriptions of what to read from a field device and the device's limits."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from appliance.config.base import Finite

Table = Literal["coil", "discrete", "input", "holding"]
PointType = Literal[
    "bool",
    "bit",
    "int16",
    "uint16",
    "int32",
    "uint32",
    "int64",
    "uint64",
    "float32",
    "float64",
    "string",
]
Order = Literal["big", "little"]

BIT_TABLES: frozenset[str] = frozenset({"coil", "discrete"})
REGISTER_TABLES: frozenset[str] = frozenset({"input", "holding"})
NUMERIC_TYPES: frozenset[str] = frozenset(
    {"int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64"}
)

# Registers per value, for the fixed-size register types.
_WORDS: dict[str, int] = {
    "bit": 1,
    "int16": 1,
    "uint16": 1,
    "int32": 2,
    "uint32": 2,
    "float32": 2,
    "int64": 4,
    "uint64": 4,
    "float64": 4,
}

MAX_ADDRESS = 65535
MAX_READ_REGISTERS = 125  # Modbus FC3/FC4: at most 125 registers per request
MAX_READ_BITS = 2000  # Modbus FC1/FC2: at most 2000 coils or inputs per request


class _Strict(BaseModel):
    """Unknown keys are errors; models are immutable once validated."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Point(_Strict):
    """One value on a device: where it lives (table, address) and how its words decode.

    `byte_order` is the order of the two bytes inside each register, `word_order` the
    order of the registers of a multi-register value ("big" = most significant first;
    float32 1.5 big/big is 0x3FC0 0x0000). Strings are ASCII, two characters per
    register in `byte_order`; `word_order` does not apply to them. A `bit` point is bit
    `bit` (0 = least significant) of a register read as uint16. `scale` and `offset`
    turn a raw number into an engineering value: value = raw * scale + offset.
    """

    name: str = Field(min_length=1, max_length=128)
    table: Table
    address: int = Field(ge=0, le=MAX_ADDRESS)
    type: PointType
    bit: int | None = Field(None, ge=0, le=15, description="bit index, for type bit")
    length: int | None = Field(
        None, ge=1, le=MAX_READ_REGISTERS, description="registers, for type string"
    )
    byte_order: Order = "big"
    word_order: Order = "big"
    scale: Annotated[float, Finite] = 1.0
    offset: Annotated[float, Finite] = 0.0

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("point name must not be blank")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Point:
        what = f"point {self.name!r}"
        if self.type == "bool" and self.table not in BIT_TABLES:
            raise ValueError(
                f"{what}: type bool lives in the coil or discrete table, not {self.table}; "
                "for one bit of a register use type bit with a bit index"
            )
        if self.type != "bool" and self.table not in REGISTER_TABLES:
            raise ValueError(
                f"{what}: type {self.type} lives in the input or holding table, "
                f"not {self.table}; coils and discrete inputs are type bool"
            )
        if self.type == "bit" and self.bit is None:
            raise ValueError(f"{what}: type bit needs a bit index 0-15")
        if self.type != "bit" and self.bit is not None:
            raise ValueError(f"{what}: a bit index only applies to type bit, not {self.type}")
        if self.type == "string" and self.length is None:
            raise ValueError(f"{what}: type string needs a length in registers")
        if self.type != "string" and self.length is not None:
            raise ValueError(f"{what}: a length only applies to type string, not {self.type}")
        if self.type not in NUMERIC_TYPES and (self.scale != 1 or self.offset != 0):
            raise ValueError(
                f"{what}: scale and offset apply to numeric types only, not {self.type}"
            )
        if self.scale == 0:
            raise ValueError(f"{what}: scale must not be 0")
        last = self.address + register_count(self) - 1
        if last > MAX_ADDRESS:
            raise ValueError(
                f"{what}: {register_count(self)} registers from address {self.address} "
                f"end at {last}, past the last address {MAX_ADDRESS}"
            )
        return self


class DeviceLimits(_Strict):
    """What one device accepts per read request, and how many unused addresses to read over."""

    max_registers: int = Field(MAX_READ_REGISTERS, ge=1, le=MAX_READ_REGISTERS)
    max_bits: int = Field(MAX_READ_BITS, ge=1, le=MAX_READ_BITS)
    max_gap: int = Field(16, ge=0, le=MAX_READ_BITS)


def register_count(point: Point) -> int:
    """How many addresses the point occupies: registers, or bits for bool points."""
    if point.type == "bool":
        return 1
    if point.type == "string":
        assert point.length is not None  # checked by Point
        return point.length
    return _WORDS[point.type]
