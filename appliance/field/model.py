"""The `devices` and `history` sections: field devices, their tags, and how history is kept.

A tag's full name is `<device>.<tag>` (names cannot contain dots, so it is
unambiguous); that name is used by the live state, the history DB, the REST
API, the SQL views and the northbound OPC UA server.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, field_validator, model_validator

from appliance.config.base import Strict, check_name
from appliance.field.points import MAX_READ_REGISTERS, Order, Point, PointType, Table

Protocol = Literal["modbus-tcp", "modbus-rtu", "opcua"]


class Serial(Strict):
    """A serial line for Modbus RTU. Devices on the same `port` share one bus lock."""

    port: str = Field(min_length=1, description="device path, e.g. /dev/ttyS1")
    baud: int = Field(19200, ge=300, le=921600)
    parity: Literal["N", "E", "O"] = "E"
    stop_bits: Literal[1, 2] = 1
    data_bits: Literal[7, 8] = 8


class OpcUaSecurity(Strict):
    """How the appliance logs on to an OPC UA device (client side)."""

    policy: Literal["None", "Basic256Sha256"] = "None"
    mode: Literal["None", "Sign", "SignAndEncrypt"] = "None"
    username: str | None = None
    password: str | None = Field(None, description="secret: redacted in exports for support")


class Deadband(Strict):
    """A change smaller than this is not stored (history) nor published as a change."""

    absolute: float | None = Field(None, ge=0)
    percent: float | None = Field(None, ge=0, le=100, description="of the previous stored value")


class AlarmLimits(Strict):
    """Limit alarms; `hysteresis` is how far back a value must come to clear, `delay`
    how long (seconds) a limit must be violated before the alarm is raised."""

    low_low: float | None = None
    low: float | None = None
    high: float | None = None
    high_high: float | None = None
    hysteresis: float = Field(0.0, ge=0)
    delay: float = Field(0.0, ge=0, le=3600)


class Tag(Strict):
    """One value of a device. Modbus tags have table+address+type; OPC UA tags have node."""

    name: str
    unit: str = Field("", max_length=32, description="engineering unit, e.g. degC")
    description: str = ""
    # Modbus source
    table: Table | None = None
    address: int | None = Field(None, ge=0, le=65535)
    # OPC UA source
    node: str | None = Field(None, description="OPC UA node id, e.g. ns=2;s=Temperature")
    type: PointType | None = None
    bit: int | None = Field(None, ge=0, le=15)
    length: int | None = Field(None, ge=1, le=MAX_READ_REGISTERS)
    byte_order: Order = "big"
    word_order: Order = "big"
    scale: float = 1.0
    offset: float = 0.0
    deadband: Deadband | None = None
    publish: Literal["every-poll", "on-change"] = "on-change"
    max_silence: float | None = Field(
        None, gt=0, description="with on-change: store at least this often (seconds)"
    )
    alarms: AlarmLimits | None = None
    writable: bool = False

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_name(v, "tag name")

    @field_validator("scale", "offset")
    @classmethod
    def _finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError(f"must be a finite number, not {v}")
        return v

    def point(self) -> Point:
        """The planner/decoder's view of a Modbus tag."""
        return Point(
            name=self.name,
            table=self.table,
            address=self.address,
            type=self.type,
            bit=self.bit,
            length=self.length,
            byte_order=self.byte_order,
            word_order=self.word_order,
            scale=self.scale,
            offset=self.offset,
        )


class Device(Strict):
    """A field device the appliance polls (or subscribes to)."""

    name: str
    protocol: Protocol
    address: str | None = Field(
        None, description="host:port for modbus-tcp, opc.tcp://host:port[/path] for opcua"
    )
    serial: Serial | None = None
    unit_id: int = Field(1, ge=0, le=255)
    poll_interval: float = Field(1.0, ge=0.05, le=86400)
    timeout: float = Field(1.0, gt=0, le=60)
    retries: int = Field(1, ge=0, le=10)
    max_registers: int = Field(MAX_READ_REGISTERS, ge=1, le=MAX_READ_REGISTERS)
    max_gap: int = Field(16, ge=0, le=2000)
    poll_offset: float = Field(0.0, ge=0, description="seconds into each interval (staggering)")
    security: OpcUaSecurity | None = None
    enabled: bool = True
    description: str = ""
    tags: list[Tag] = Field(default_factory=list)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_name(v, "device name")

    @model_validator(mode="after")
    def _consistent(self) -> Device:
        # The field helper completes these checks (source per protocol, types per table,
        # overlaps, points the device cannot hold), each raising with the tag's path.
        return self


class History(Strict):
    """How long tag history is kept: by age and by size, whichever limit is hit first."""

    retention_days: float = Field(90, gt=0, le=3650)
    max_mb: int = Field(1024, ge=1, le=1_000_000)
    flush_interval: float = Field(1.0, gt=0, le=60, description="seconds between batch writes")
    flush_samples: int = Field(500, ge=1, le=100_000, description="or after this many samples")


class Northbound(Strict):
    """The OPC UA server the appliance offers IT: every tag, read-only unless writable."""

    enabled: bool = True
    port: int = Field(4840, ge=1, le=65535)
    allow_anonymous: bool = Field(False, description="anonymous read access (off by default)")
    security: list[Literal["None", "Basic256Sha256-Sign", "Basic256Sha256-SignAndEncrypt"]] = Field(
        default_factory=lambda: ["Basic256Sha256-SignAndEncrypt", "Basic256Sha256-Sign", "None"]
    )


def check_field(config: object, errors: list, warnings: list) -> None:
    """Cross-document checks for `devices` (unique names, ...), appending config Findings."""
