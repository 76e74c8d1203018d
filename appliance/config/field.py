"""The `devices` and `history` sections: field devices, their tags, and how history is kept.

A tag's full name is `<device>.<tag>` (names cannot contain dots, so it is
unambiguous); that name is used by the live state, the history DB, the REST
API, the SQL views and the northbound OPC UA server.

Rules about one tag live on `Tag`, rules that need the device (protocol, overlaps,
what one request can hold) on `Device`; both report every problem at once with the
path of the bad field (`devices[0].tags[3].type`). Rules across devices (unique
names, one setting per serial line) are in `check_field`.
"""

from __future__ import annotations

import itertools
import re
from collections import defaultdict
from collections.abc import Sequence
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from appliance.config.base import (
    Bool,
    Finding,
    Float,
    Int,
    Line,
    Secret,
    Strict,
    Text,
    check_name,
    refuse_bool,
)
from appliance.config.points import (
    BIT_TABLES,
    MAX_READ_BITS,
    MAX_READ_REGISTERS,
    NUMERIC_TYPES,
    Order,
    Point,
    PointType,
    Table,
    register_count,
)

Protocol = Literal["modbus-tcp", "modbus-rtu", "opcua"]

MODBUS_TCP_PORT = 502
_HOST_PORT = re.compile(
    r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9._-]+))(?::(?P<port>\d+))?$"
)

Problem = tuple[tuple[str | int, ...], str]


def _raise(problems: list[Problem], model: object) -> None:
    """Raise every problem at once, each at its own path below the model being validated."""
    if not problems:
        return
    raise ValidationError.from_exception_data(
        type(model).__name__,
        [
            InitErrorDetails(
                type=PydanticCustomError("field_rule", "{message}", {"message": msg}),
                loc=loc,
                input=None,
            )
            for loc, msg in problems
        ],
    )


def parse_host_port(address: str, default_port: int = MODBUS_TCP_PORT) -> tuple[str, int]:
    """`host[:port]` or `[v6]:port` -> (host, port); ValueError saying what is wrong."""
    m = _HOST_PORT.match(address.strip())
    if not m:
        raise ValueError(f"{address!r} is not host:port (e.g. 192.168.50.10:502)")
    host = m.group("v6") or m.group("host")
    port = int(m.group("port")) if m.group("port") else default_port
    if not 1 <= port <= 65535:
        raise ValueError(f"port must be 1-65535 (got {port})")
    return host, port


class Serial(Strict):
    """A serial line for Modbus RTU. Devices on the same `port` share one bus lock."""

    port: Line = Field(min_length=1, description="device path, e.g. /dev/ttyS1")
    baud: Int = Field(19200, ge=300, le=921600)
    parity: Literal["N", "E", "O"] = "E"
    stop_bits: Annotated[Literal[1, 2], BeforeValidator(refuse_bool)] = 1
    data_bits: Annotated[Literal[7, 8], BeforeValidator(refuse_bool)] = 8

    def char_time(self) -> float:
        """Seconds one character takes on the line: start + data + parity + stop bits."""
        bits = 1 + self.data_bits + (0 if self.parity == "N" else 1) + self.stop_bits
        return bits / self.baud

    def frame_gap(self) -> float:
        """The silence between frames: 3.5 character times, 1.75 ms above 19200 baud."""
        return 0.00175 if self.baud > 19200 else 3.5 * self.char_time()


class OpcUaSecurity(Strict):
    """How the appliance logs on to an OPC UA device (client side)."""

    policy: Literal["None", "Basic256Sha256"] = "None"
    mode: Literal["None", "Sign", "SignAndEncrypt"] = "None"
    username: Line | None = None
    password: Secret | None = Field(None, description="secret: redacted in exports for support")

    @model_validator(mode="after")
    def _consistent(self) -> OpcUaSecurity:
        if (self.policy == "None") != (self.mode == "None"):
            need = "None" if self.policy == "None" else "Sign or SignAndEncrypt"
            _raise([(("mode",), f"policy {self.policy} needs mode {need}")], self)
        if (self.username is None) != (self.password is None):
            missing = "password" if self.password is None else "username"
            _raise([((missing,), "username and password go together")], self)
        return self


class Deadband(Strict):
    """A change smaller than this is not stored (history) nor published as a change."""

    absolute: Float | None = Field(None, ge=0)
    percent: Float | None = Field(None, ge=0, le=100, description="of the previous stored value")

    @model_validator(mode="after")
    def _given(self) -> Deadband:
        # with both, a change must exceed both (appliance.field.publish)
        if self.absolute is None and self.percent is None:
            _raise([((), "give absolute, percent or both")], self)
        return self


class AlarmLimits(Strict):
    """Limit alarms; `hysteresis` is how far back a value must come to clear, `delay`
    how long (seconds) a limit must be violated before the alarm is raised."""

    low_low: Float | None = None
    low: Float | None = None
    high: Float | None = None
    high_high: Float | None = None
    hysteresis: Float = Field(0.0, ge=0)
    delay: Float = Field(0.0, ge=0, le=3600)

    @model_validator(mode="after")
    def _ordered(self) -> AlarmLimits:
        order = [("low_low", self.low_low), ("low", self.low), ("high", self.high)]
        order.append(("high_high", self.high_high))
        given = [(n, v) for n, v in order if v is not None]
        problems: list[Problem] = []
        if not given:
            problems.append(((), "give at least one of low_low, low, high, high_high"))
        for (n1, v1), (n2, v2) in itertools.pairwise(given):
            if v1 > v2:
                problems.append(((n2,), f"{n2} ({v2:g}) is below {n1} ({v1:g})"))
        _raise(problems, self)
        return self


def _point_problem(e: Exception) -> Problem:
    """A Point validation error as (field, message) for the tag it came from."""
    msg = str(e)
    if isinstance(e, ValidationError) and e.errors():
        err = e.errors()[0]
        msg = str(err["msg"]).removeprefix("Value error, ")
        if err["loc"]:
            return (str(err["loc"][0]),), msg
    msg = re.sub(r"^point '[^']*': ", "", msg)
    for key, fld in (
        ("lives in", "type"),
        ("bit index", "bit"),
        ("a length", "length"),
        ("needs a length", "length"),
        ("scale", "scale"),
        ("past the last address", "address"),
    ):
        if key in msg:
            return (fld,), msg
    return ("type",), msg


class Tag(Strict):
    """One value of a device. Modbus tags have table+address+type; OPC UA tags have node.

    A Modbus tag without `type` is bool in the coil/discrete tables and uint16 in the
    input/holding tables.
    """

    name: Line
    unit: Line = Field("", max_length=32, description="engineering unit, e.g. degC")
    description: Text = ""
    # Modbus source
    table: Table | None = None
    address: Int | None = Field(None, ge=0, le=65535)
    # OPC UA source
    node: Line | None = Field(None, description="OPC UA node id, e.g. ns=2;s=Temperature")
    type: PointType | None = None
    bit: Int | None = Field(None, ge=0, le=15)
    length: Int | None = Field(None, ge=1, le=MAX_READ_REGISTERS)
    byte_order: Order = "big"
    word_order: Order = "big"
    scale: Float = 1.0  # finite, as every Float
    offset: Float = 0.0
    deadband: Deadband | None = None
    publish: Literal["every-poll", "on-change"] = "on-change"
    max_silence: Float | None = Field(
        None, gt=0, description="with on-change: store at least this often (seconds)"
    )
    alarms: AlarmLimits | None = None
    writable: Bool = False

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_name(v, "tag name")

    @model_validator(mode="after")
    def _consistent(self) -> Tag:
        problems: list[Problem] = []
        modbus = self.table is not None or self.address is not None
        if modbus and self.node is not None:
            problems.append(
                (("node",), "a tag reads either a Modbus table+address or an OPC UA node, not both")
            )
        elif modbus and (self.table is None or self.address is None):
            missing = "table" if self.table is None else "address"
            problems.append(((missing,), "a Modbus tag needs both table and address"))
        elif modbus:
            try:
                self.point()
            except (ValueError, ValidationError) as e:
                problems.append(_point_problem(e))
            if self.writable and self.table in ("discrete", "input"):
                problems.append(
                    (
                        ("writable",),
                        f"the {self.table} table is read-only in Modbus; only coil and "
                        "holding tags can be writable",
                    )
                )
        kind = self.effective_type()
        numeric = kind is None or kind in NUMERIC_TYPES
        if self.deadband is not None and not numeric:
            problems.append((("deadband",), f"a deadband applies to numbers, not {kind}"))
        if self.alarms is not None and not numeric:
            problems.append((("alarms",), f"limit alarms apply to numbers, not {kind}"))
        if self.max_silence is not None and self.publish != "on-change":
            problems.append((("max_silence",), "max_silence only applies with publish: on-change"))
        _raise(problems, self)
        return self

    def effective_type(self) -> PointType | None:
        """The type the tag decodes to: `type`, or the table's default (bool, uint16)."""
        if self.type is not None:
            return self.type
        if self.table is None:
            return None
        return "bool" if self.table in BIT_TABLES else "uint16"

    def point(self) -> Point:
        """The planner/decoder's view of a Modbus tag."""
        if self.table is None or self.address is None:
            raise ValueError(f"tag {self.name!r} has no Modbus source (table, address)")
        return Point(
            name=self.name,
            table=self.table,
            address=self.address,
            type=self.effective_type() or "uint16",
            bit=self.bit,
            length=self.length,
            byte_order=self.byte_order,
            word_order=self.word_order,
            scale=self.scale,
            offset=self.offset,
        )


class Device(Strict):
    """A field device the appliance polls (or subscribes to)."""

    name: Line
    protocol: Protocol
    address: Line | None = Field(
        None, description="host:port for modbus-tcp, opc.tcp://host:port[/path] for opcua"
    )
    serial: Serial | None = None
    unit_id: Int = Field(1, ge=0, le=255)
    poll_interval: Float = Field(1.0, ge=0.05, le=86400)
    timeout: Float = Field(1.0, gt=0, le=60)
    retries: Int = Field(1, ge=0, le=10)
    max_registers: Int = Field(MAX_READ_REGISTERS, ge=1, le=MAX_READ_REGISTERS)
    max_gap: Int = Field(16, ge=0, le=2000)
    poll_offset: Float = Field(0.0, ge=0, description="seconds into each interval (staggering)")
    reconnect_max: Float | None = Field(
        None,
        gt=0,
        le=3600,
        description="longest wait between reconnect attempts to a dead device (seconds); "
        "the wait starts at poll_interval and doubles, never above max(poll_interval, this); "
        "default twice the poll interval, so recovery is seen within two intervals",
    )

    security: OpcUaSecurity | None = None
    enabled: Bool = True
    description: Text = ""
    tags: list[Tag] = Field(default_factory=list)

    def backoff_cap(self) -> float:
        """The longest wait between attempts at a dead device."""
        cap = 2 * self.poll_interval if self.reconnect_max is None else self.reconnect_max
        return max(self.poll_interval, cap)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_name(v, "device name")

    @model_validator(mode="after")
    def _consistent(self) -> Device:
        problems: list[Problem] = []
        self._check_source(problems)
        names: dict[str, int] = {}
        for i, tag in enumerate(self.tags):
            if tag.name in names:
                problems.append(
                    (
                        ("tags", i, "name"),
                        f"tag name {tag.name} is already used by tags[{names[tag.name]}]",
                    )
                )
            else:
                names[tag.name] = i
        if self.protocol == "opcua":
            for i, tag in enumerate(self.tags):
                if tag.table is not None or tag.address is not None:
                    problems.append(
                        (("tags", i, "table"), "an OPC UA tag has a node, not a table and address")
                    )
                elif tag.node is None:
                    problems.append((("tags", i, "node"), "an OPC UA tag needs a node id"))
        else:
            self._check_modbus_tags(problems)
        _raise(problems, self)
        return self

    def _check_source(self, problems: list[Problem]) -> None:
        if self.protocol == "modbus-tcp":
            if self.address is None:
                problems.append((("address",), "a modbus-tcp device needs address host:port"))
            else:
                try:
                    parse_host_port(self.address)
                except ValueError as e:
                    problems.append((("address",), str(e)))
            if self.serial is not None:
                problems.append((("serial",), "modbus-tcp: use address, not serial"))
        elif self.protocol == "modbus-rtu":
            if self.serial is None:
                problems.append((("serial",), "modbus-rtu needs a serial line (port, ...)"))
            if self.address is not None:
                problems.append((("address",), "modbus-rtu: use serial, not address"))
            if not 1 <= self.unit_id <= 247:
                problems.append(
                    (
                        ("unit_id",),
                        f"a serial unit id is 1-247 (0 is broadcast), not {self.unit_id}",
                    )
                )
        else:
            if self.address is None or not re.match(r"^opc\.tcp://[^/\s]+", self.address):
                problems.append(
                    (("address",), "an opcua device needs address opc.tcp://host:port[/path]")
                )
            if self.serial is not None:
                problems.append((("serial",), "an opcua device has an address, not a serial line"))
        if self.security is not None and self.protocol != "opcua":
            problems.append((("security",), "security applies to opcua devices only"))

    def _check_modbus_tags(self, problems: list[Problem]) -> None:
        # (table, address) -> what uses it: (tag index, register-level kind, bit or None)
        used: dict[tuple[str, int], list[tuple[int, str, int | None]]] = defaultdict(list)
        for i, tag in enumerate(self.tags):
            if tag.node is not None:
                problems.append((("tags", i, "node"), "a Modbus tag has table+address, not node"))
                continue
            if tag.table is None or tag.address is None:
                problems.append((("tags", i, "table"), "a Modbus tag needs table and address"))
                continue
            point = tag.point()
            size = register_count(point)
            cap = MAX_READ_BITS if tag.table in BIT_TABLES else self.max_registers
            if size > cap:
                what = "length" if point.type == "string" else "type"
                problems.append(
                    (
                        ("tags", i, what),
                        f"{point.type} reads {size} registers, more than one request to this "
                        f"device may read (max_registers {cap})",
                    )
                )
            for a in range(point.address, point.address + size):
                for j, kind, bit in used[(point.table, a)]:
                    if _compatible(point.type, point.bit, kind, bit, size, self.tags[j]):
                        continue
                    other = self.tags[j]
                    problems.append(
                        (
                            ("tags", i, "address"),
                            f"{tag.name} ({point.type} at {point.table} {point.address}) overlaps "
                            f"tags[{j}] {other.name} at {point.table} {a}",
                        )
                    )
                    break
                else:
                    continue
                break
            for a in range(point.address, point.address + size):
                used[(point.table, a)].append((i, point.type, point.bit))

    def points(self) -> list[Point]:
        """The Modbus tags as planner points (empty for OPC UA devices)."""
        if self.protocol == "opcua":
            return []
        return [t.point() for t in self.tags if t.table is not None]

    def host_port(self) -> tuple[str, int]:
        """(host, port) of a modbus-tcp device."""
        return parse_host_port(self.address or "")


def _compatible(
    kind: str, bit: int | None, other_kind: str, other_bit: int | None, size: int, other: Tag
) -> bool:
    """May two tags share one address? Bits of one register may, and so may a register's
    bits and the whole register read as a 16-bit number (a status word and its flags)."""
    if kind == "bit" and other_kind == "bit":
        return bit != other_bit
    if kind == "bit":
        return other_kind in ("uint16", "int16")
    if other_kind == "bit":
        return kind in ("uint16", "int16") and size == 1
    return False


def check_field(devices: Sequence[Device], errors: list[Finding], warnings: list[Finding]) -> None:
    """Cross-document checks for the document's `devices`, appending Findings with their
    paths (called by `config.check.check`)."""
    seen: dict[str, int] = {}
    lines: dict[str, tuple[int, Serial]] = {}
    units: dict[tuple[str, int], int] = {}
    endpoints: dict[tuple[str, int, int], int] = {}
    for i, dev in enumerate(devices):
        if dev.name in seen:
            errors.append(
                Finding(
                    f"devices[{i}].name",
                    f"device name {dev.name} is already used by devices[{seen[dev.name]}]",
                )
            )
        else:
            seen[dev.name] = i
        if not dev.tags:
            warnings.append(
                Finding(f"devices[{i}].tags", f"{dev.name} has no tags: nothing is read")
            )
        if dev.protocol == "modbus-rtu" and dev.serial is not None:
            s = dev.serial
            if s.port in lines:
                j, first = lines[s.port]
                for key in ("baud", "parity", "stop_bits", "data_bits"):
                    if getattr(s, key) != getattr(first, key):
                        errors.append(
                            Finding(
                                f"devices[{i}].serial.{key}",
                                f"{s.port} is set to {key} {getattr(first, key)} by devices[{j}]; "
                                "devices on one line share its settings",
                            )
                        )
            else:
                lines[s.port] = (i, s)
            key2 = (s.port, dev.unit_id)
            if key2 in units:
                errors.append(
                    Finding(
                        f"devices[{i}].unit_id",
                        f"unit id {dev.unit_id} on {s.port} is already used by "
                        f"devices[{units[key2]}]",
                    )
                )
            else:
                units[key2] = i
        if dev.protocol == "modbus-tcp" and dev.address is not None:
            host, port = dev.host_port()
            key3 = (host, port, dev.unit_id)
            if key3 in endpoints:
                warnings.append(
                    Finding(
                        f"devices[{i}].address",
                        f"devices[{endpoints[key3]}] polls the same device ({host}:{port} unit "
                        f"{dev.unit_id}); they share nothing, so it is asked twice",
                    )
                )
            else:
                endpoints[key3] = i


class History(Strict):
    """How long tag history is kept: by age and by size, whichever limit is hit first; and
    the quotas of the event and audit tables (a warning event at 80 %, the oldest rows
    pruned at the limit; an audit row younger than `audit_days` is never pruned)."""

    retention_days: Float = Field(90, gt=0, le=3650)
    max_mb: Int = Field(1024, ge=1, le=1_000_000)
    events_days: Float = Field(365, gt=0, le=3650, description="events older than this go")
    events_max: Int = Field(500_000, ge=1000, le=100_000_000, description="events kept at most")
    audit_days: Float = Field(
        365, ge=1, le=3650, description="audit rows younger than this are never pruned"
    )
    audit_max: Int = Field(
        200_000, ge=1000, le=100_000_000, description="audit rows kept at most (beyond audit_days)"
    )
    flush_interval: Float = Field(1.0, gt=0, le=60, description="seconds between batch writes")
    flush_samples: Int = Field(500, ge=1, le=100_000, description="or after this many samples")


class Northbound(Strict):
    """The OPC UA server the appliance offers IT: every tag, read-only unless writable."""

    enabled: Bool = True
    port: Int = Field(4840, ge=1, le=65535)
    allow_anonymous: Bool = Field(False, description="anonymous read access (off by default)")
    security: list[Literal["None", "Basic256Sha256-Sign", "Basic256Sha256-SignAndEncrypt"]] = Field(
        default_factory=lambda: ["Basic256Sha256-SignAndEncrypt", "Basic256Sha256-Sign"],
        description=(
            "endpoints offered; None (no signature, no encryption) only when listed here. "
            "Passwords are always sent encrypted; values are written only over SignAndEncrypt"
        ),
    )
