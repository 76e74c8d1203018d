"""Request and response models of the REST API: they validate the bodies and query
strings, and the OpenAPI document is generated from them (one source).

Every number a request carries has bounds: NaN and Infinity are refused (`In` sets
`allow_inf_nan=False`; a query string's `nan`/`inf` would otherwise parse), times are
epoch seconds of the years 1970..9999 (`Epoch`), ids fit SQLite's integers (`MAX_ID`),
counts and durations have a documented range. A value outside is a 422 naming the field,
never a 500 further down nor a NaN stored as "never".

A JSON body's values have JSON's types (`Body` is strict): `"60"` is not a number and
`"false"` or `0` not a boolean (lax parsing turned `{"disabled": "false"}` into False and
`{"max_rows": "5"}` into 5); an integer is a fine float. A query string is text, so query
models (`In`) still parse numbers from it. Free text that reaches the audit log (token
names, comments) is one line without control or format characters (`OneLine`): a CR LF
in a token's name printed as a second, forged row in `appliance audit list`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
)

from appliance.config.base import _one_line
from appliance.field.probe import ProbeRequest
from appliance.net.identify import IDENTIFY_DEFAULT_S, IDENTIFY_MAX_S

Role = Literal["viewer", "operator", "admin"]
MAX_ID = 2**62  # ids are SQLite integers
MAX_EPOCH = 253_402_300_799  # 9999-12-31T23:59:59Z: datetime and every client can show it
MAX_TEXT_VALUE = 4096  # characters of a text tag's value
REV_REF = r"^(running|pending|confirmed|draft|[0-9]{1,18})$"


def _refuse_bool(v: Any) -> Any:
    # a lax (query) model read `true` as 1.0: a boolean is no time, whatever the model
    if isinstance(v, bool):
        raise ValueError(f"must be epoch seconds, not a boolean ({str(v).lower()})")
    return v


Epoch = Annotated[
    float, BeforeValidator(_refuse_bool), Field(ge=0, le=MAX_EPOCH, allow_inf_nan=False)
]
# one line of text: no control (Cc), format (Cf) or line-separator characters (the
# configuration's own rule, appliance/config/base.py)
OneLine = Annotated[str, AfterValidator(_one_line)]


class In(BaseModel):
    """A request body or query: unknown keys are errors, no NaN or Infinity."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class Body(In):
    """A JSON request body: also strict, each value of the JSON type its field has."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)


class Out(BaseModel):
    """An answer: documented keys, more may come in later versions."""

    model_config = ConfigDict(extra="allow")


# -- errors -------------------------------------------------------------------------------


class FieldError(Out):
    path: str
    message: str
    line: int | None = None


class Error(Out):
    """Every 4xx/5xx answer under /api."""

    error: str = Field(description="one line for a person")
    field: str | None = Field(None, description="path of the bad field, when one is to blame")
    errors: list[FieldError] | None = Field(None, description="every error of a document")


# -- session and setup --------------------------------------------------------------


class LoginIn(Body):
    username: str = Field(min_length=1, max_length=48)
    password: str = Field(min_length=1, max_length=1024)


class SessionOut(Out):
    user: str
    role: Role
    csrf: str | None = Field(description="send as X-CSRF-Token on every non-GET request")
    idle_expires_at: float | None
    expires_at: float | None
    via: Literal["session", "token"]


class PasswordIn(Body):
    current_password: str = Field(min_length=1, max_length=1024)
    new_password: str = Field(min_length=1, max_length=1024)


class SetupState(Out):
    required: bool


class SetupIn(Body):
    code: str = Field(min_length=1, max_length=64)
    username: str = Field(min_length=1, max_length=48)
    password: str = Field(min_length=1, max_length=1024)


class UserOut(Out):
    name: str
    role: Role
    created_at: float
    created_by: str
    disabled: bool
    last_login_at: float | None
    last_login_from: str | None
    password_changed_at: float | None


# -- users and tokens -----------------------------------------------------------------


class UserIn(Body):
    name: str = Field(min_length=1, max_length=48)
    role: Role
    password: str = Field(min_length=1, max_length=1024)


class UserPatch(Body):
    role: Role | None = None
    password: str | None = Field(None, min_length=1, max_length=1024)
    current_password: str | None = Field(
        None,
        min_length=1,
        max_length=1024,
        description="required to change your own password (also with a token)",
    )
    disabled: bool | None = None


class TokenIn(Body):
    name: OneLine = Field("", max_length=100, description="what the token is for")
    role: Role | None = Field(None, description="default: your role; at most your role")
    expires_at: Epoch | None = Field(
        None,
        description="epoch seconds; default: never (with a token: at most the token's own)",
    )


class TokenOut(Out):
    id: int
    parent: int | None = Field(
        description="the id of the token this one was made with (revoked with it); "
        "null: made at a login"
    )
    user: str
    name: str
    role: Role
    prefix: str
    created_at: float
    expires_at: float | None
    last_used_at: float | None
    last_used_from: str | None
    revoked_at: float | None
    revoked_by: str | None


class TokenCreated(TokenOut):
    token: str = Field(description="the secret: shown this once, send as `Bearer <token>`")


# -- configuration ------------------------------------------------------------------


class RevisionOut(Out):
    id: int
    state: str
    author: str
    comment: str
    created_at: float
    committed_at: float | None
    committed_by: str | None
    confirmed_at: float | None
    confirmed_by: str | None
    confirm_deadline: float | None
    sha256: str
    reason: str


class RevisionDoc(RevisionOut):
    document: dict[str, Any]
    yaml: str


class ConfigDoc(Out):
    revision: RevisionOut
    document: dict[str, Any] = Field(description="the configuration (JSON)")
    yaml: str = Field(description="the text as stored (YAML)")


class DraftSaved(Out):
    revision: RevisionOut
    warnings: list[str]


class Section(Out):
    revision: RevisionOut
    section: str


class DiffQuery(In):
    a: str = Field(
        "running",
        pattern=REV_REF,
        description="revision number or running, pending, confirmed, draft",
    )
    b: str = Field("draft", pattern=REV_REF)


class DiffOut(Out):
    a: RevisionOut
    b: RevisionOut
    diff: str
    changes: list[str]


class CommitIn(Body):
    confirm_within: float | None = Field(
        None,
        ge=10,
        le=86400,
        allow_inf_nan=False,
        description="seconds; without confirmation it reverts",
    )
    comment: OneLine = Field("", max_length=500)


class CommitOut(Out):
    revision: RevisionOut
    confirm_deadline: float | None


class RollbackIn(Body):
    revision: int | None = Field(
        None,
        ge=1,
        le=MAX_ID,
        description="go back to this revision; none: drop the pending one, "
        "else the previous confirmed",
    )


class ExportQuery(In):
    revision: str = Field("running", pattern=REV_REF)


# -- field data ---------------------------------------------------------------------------


class HistoryQuery(In):
    from_: Epoch | None = Field(None, alias="from", description="epoch seconds")
    to: Epoch | None = Field(None, description="epoch seconds")
    limit: int = Field(1000, ge=1, le=100_000)
    format: Literal["json", "csv"] = "json"

    model_config = ConfigDict(extra="forbid", populate_by_name=True, allow_inf_nan=False)


class Sample(Out):
    t: float
    value: Any
    quality: str


class WriteIn(Body):
    """The field role checks a value against its tag's type and range; this bounds what
    any tag could hold: finite floats, integers of 64 bits (signed or unsigned), short text."""

    value: float | int | bool | str

    @field_validator("value", mode="before")
    @classmethod
    def _bounded(cls, v: Any) -> Any:
        # before the union: an int too large would otherwise become a float, and a union's
        # errors name each member (value.float, value.str ...), not the field
        if isinstance(v, int) and not isinstance(v, bool) and not -(2**63) <= v < 2**64:
            raise ValueError("integers must fit in 64 bits")
        if isinstance(v, str) and len(v) > MAX_TEXT_VALUE:
            raise ValueError(f"text must be at most {MAX_TEXT_VALUE} characters")
        return v


class ProbeIn(ProbeRequest):
    """A test connection: `device` as in the configuration's devices (name optional, tags
    ignored); for Modbus `read` a range (default: holding register 0), for OPC UA
    `browse` a node whose children to list (empty or null: the Objects folder)."""


class ProbeReadOut(Out):
    table: str
    address: int
    count: int
    values: list[int] | list[bool]


class ProbeChild(Out):
    node_id: str
    name: str | None
    # "class" is a Python keyword: the JSON key is class
    node_class: str = Field(alias="class")
    value: Any = None
    type: str | None = None
    writable: bool | None = None


class ProbeBrowseOut(Out):
    node: str
    children: list[ProbeChild]
    truncated: bool = False


class ProbeOut(Out):
    """What a test connection found; a device that did not answer is ok false, the stage
    that failed (connect, read, browse) and a plain sentence saying what happened."""

    ok: bool
    protocol: Literal["modbus-tcp", "modbus-rtu", "opcua"]
    target: str
    elapsed_ms: float
    stage: Literal["connect", "read", "browse"] | None
    message: str
    read: ProbeReadOut | None = None
    browse: ProbeBrowseOut | None = None


class AlarmsQuery(In):
    active: Literal["0", "1", "true", "false"] = "0"
    limit: int = Field(200, ge=1, le=10_000)


class AckIn(Body):
    comment: OneLine = Field("", max_length=500)


class SqlIn(Body):
    query: str = Field(min_length=1, max_length=20_000)
    max_rows: int = Field(1000, ge=1, le=10_000)


class SqlOut(Out):
    columns: list[str]
    rows: list[list[Any]]
    truncated: bool
    elapsed_ms: float


# -- events and audit ---------------------------------------------------------------


class EventsQuery(In):
    kind: str | None = Field(None, max_length=48, description="kinds starting with this")
    severity: str | None = Field(None, max_length=8)
    source: str | None = Field(None, max_length=16)
    before_id: int | None = Field(None, ge=1, le=MAX_ID)
    limit: int = Field(100, ge=1, le=1000)


class EventOut(Out):
    id: int
    at: float
    source: str
    kind: str
    severity: str
    message: str
    data: Any


class EventsPage(Out):
    items: list[EventOut]
    next_before_id: int | None


class AuditQuery(In):
    actor: str | None = Field(None, max_length=100)
    action: str | None = Field(None, max_length=100, description="actions starting with this")
    before_id: int | None = Field(None, ge=1, le=MAX_ID)
    limit: int = Field(100, ge=1, le=1000)


class AuditOut(Out):
    id: int
    at: float
    actor: str
    source: str
    action: str
    target: str
    result: str
    detail: str


class AuditPage(Out):
    items: list[AuditOut]
    next_before_id: int | None


# -- system -------------------------------------------------------------------------------


class IdentifyIn(Body):
    seconds: int = Field(15, ge=1, le=3600)


class IdentifyOut(Out):
    until: float


class Status(Out):
    unit: dict[str, Any]
    version: str
    uptime_s: float | None
    health: dict[str, Any]
    revision: dict[str, Any] | None
    links: list[dict[str, Any]]
    conduits: list[dict[str, Any]]
    drops: dict[str, Any]
    denied: list[dict[str, Any]]
    devices: list[dict[str, Any]]
    alarms: dict[str, Any]
    identify_until: float | None
    cert_fingerprint: str | None


class PortCounters(Out):
    rx_bytes: int
    rx_packets: int
    rx_errors: int
    rx_dropped: int
    tx_bytes: int
    tx_packets: int
    tx_errors: int
    tx_dropped: int


class PortOut(Out):
    """One NIC of the unit, configured or not (the net role's `ports`)."""

    name: str = Field(description="the kernel's name of the NIC now")
    mac: str | None
    driver: str | None = Field(description="the kernel driver (veth for the lab's NICs)")
    pci_path: str | None = Field(description="the PCI address of the device, 0000:02:00.0")
    label: str | None = Field(description="the name on the case, from the hardware profile")
    kind: str | None = Field(description="veth for a virtual NIC, null for hardware")
    role: Literal["mgmt", "it", "ot"] | None = Field(
        description="the role of the running configuration's interface on this NIC"
    )
    interface: str | None = Field(description="that interface's name")
    admin_up: bool
    carrier: bool | None = Field(description="a link (cable); null: unknown, the port is down")
    operstate: str = Field(description="UP, DOWN, LOWERLAYERDOWN, UNKNOWN... (RFC 2863)")
    speed: int | None = Field(description="Mb/s while there is a carrier, when the NIC says")
    duplex: Literal["full", "half"] | None
    counters: PortCounters
    index: int = Field(description="the kernel's interface index")


class PortsOut(Out):
    ports: list[PortOut]
    updated_at: float = Field(description="when the net role read them (epoch seconds)")


class PortIdentifyIn(Body):
    seconds: int = Field(
        IDENTIFY_DEFAULT_S, ge=1, le=IDENTIFY_MAX_S, description="how long the LED blinks"
    )


class PortIdentifyOut(Out):
    port: str
    until: float = Field(description="when it stops blinking (epoch seconds)")


class System(Out):
    version: str
    uptime_s: float | None
    disk: dict[str, Any]
    cert_fingerprint: str | None
    cert_not_after: float | None
    fleet: dict[str, Any] | None
    syslog: list[Any]
    history: dict[str, Any] | None
    roles: dict[str, bool]
