"""Checking what units send (pure): heartbeat bodies, tokens, idempotency keys, names.

A heartbeat body is checked twice: against the agent's published JSON Schema
(appliance/agent/heartbeat.schema.json, the full contract) when it is there,
and always against `MINIMAL_SCHEMA`, the fields this receiver reads and stores.
Fields the receiver does not know are kept (in the stored body), not refused:
a newer agent may report more than this receiver shows.

A refusal quotes at most a little of what it got (`jsontext.shown`: 80 characters),
and "too long"/"too many" give the count, not the value: its message goes back in the
400 and into the receiver's log, and a heartbeat of 600 long events must not put a
650 kB repr in either. Field paths are cut the same way (a key may be 100 kB too).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
from jsonschema.exceptions import ValidationError, relevance

from appliance import jsontext
from appliance.errors import ApplianceError, BadRequest
from appliance.jsontext import shown

SCHEMA_ID = "appliance-heartbeat/1"
AGENT_SCHEMA_PATH = Path(__file__).resolve().parent.parent / "agent" / "heartbeat.schema.json"
MAX_EVENTS = 1000  # the agent sends at most 500 per heartbeat

# Every number in a heartbeat fits a signed 64-bit integer (SQLite INTEGER, PostgreSQL
# BIGINT): ids, cursors and counters are stored as such, and a counter of 10^30 in the
# kept body is nonsense either way. Times are epoch seconds up to 1e11 (the year 5138);
# durations up to 1e10 s (three centuries). See `value_errors` for the checks made on
# every value of the body, whatever the schema says of it.
INT64_MAX = 2**63 - 1
TIME_MAX = 1e11
DURATION_MAX = 1e10

_STR = {"type": "string", "maxLength": 1000}
_OPT_STR = {"type": ["string", "null"], "maxLength": 1000}
_OPT_ID = {"type": ["integer", "null"], "minimum": 0, "maximum": INT64_MAX}
_OPT_TIME = {"type": ["number", "null"], "minimum": 0, "maximum": TIME_MAX}

MINIMAL_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "What the fleet receiver reads from a heartbeat",
    "type": "object",
    "required": ["schema", "unit", "seq", "sent_at", "health"],
    "properties": {
        "schema": {"const": SCHEMA_ID},
        "unit": {
            "type": "object",
            "required": ["id"],
            "properties": {
                "id": {"type": "string", "minLength": 1, "maxLength": 100},
                "name": _OPT_STR,
                "site": _OPT_STR,
                "serial": _OPT_STR,
            },
        },
        "seq": {"type": "integer", "minimum": 0, "maximum": 2**62},
        "sent_at": {"type": "number", "minimum": 0, "maximum": TIME_MAX},
        "firmware": {"type": ["string", "null"], "maxLength": 100},
        "uptime_s": {"type": ["number", "null"], "minimum": 0, "maximum": DURATION_MAX},
        "health": {
            "type": "object",
            "required": ["state"],
            "properties": {
                "state": {"type": "string", "pattern": "^[a-z][a-z-]{0,31}$"},
                "reasons": {
                    "type": "array",
                    "maxItems": 200,
                    "items": {
                        "type": "object",
                        "properties": {"code": _STR, "severity": _STR, "message": _STR},
                    },
                },
            },
        },
        "revision": {
            "type": ["object", "null"],
            "properties": {
                "id": _OPT_ID,
                "sha256": {"type": ["string", "null"], "maxLength": 64},
                "state": {"type": ["string", "null"], "maxLength": 32},
                "confirm_deadline": _OPT_TIME,
            },
        },
        "alarms": {
            "type": "array",
            "items": {"type": "object", "properties": {"id": _OPT_ID, "raised_at": _OPT_TIME}},
        },
        "events": {
            "type": "array",
            "maxItems": MAX_EVENTS,
            "items": {
                "type": "object",
                "required": ["id", "at", "kind", "message"],
                "properties": {
                    "id": {"type": "integer", "minimum": 0, "maximum": 2**62},
                    "at": {"type": "number", "minimum": 0, "maximum": TIME_MAX},
                    "kind": {"type": "string", "maxLength": 100},
                    "severity": {"type": ["string", "null"], "maxLength": 16},
                    "source": {"type": ["string", "null"], "maxLength": 32},
                    "message": {"type": "string", "maxLength": 4000},
                },
            },
        },
        "events_cursor": _OPT_ID,
        "id": {"type": "string", "minLength": 1, "maxLength": 200},
    },
}

TOKEN_RE = re.compile(r"^[A-Za-z0-9._~+/=-]{16,512}$")
UNIT_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
IDEMPOTENCY_RE = re.compile(r"^[\x21-\x7e]{1,200}$")
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")  # NUL, lone surrogates (see value_errors)
INTERVAL_MIN, INTERVAL_MAX = 5.0, 86400.0
PATH_PART_MAX = 80  # characters of one key in a field path


@dataclass(frozen=True)
class EventIn:
    id: int
    at: float
    kind: str
    severity: str
    source: str
    message: str


@dataclass(frozen=True)
class HeartbeatIn:
    """What the receiver stores and shows of one heartbeat (the body is kept whole too)."""

    unit_id: str
    unit_name: str | None
    site: str | None
    serial: str | None
    seq: int
    sent_at: float
    firmware: str | None
    health: str
    reasons: tuple[dict[str, Any], ...]
    revision_id: int | None
    revision_sha256: str | None
    revision_state: str | None
    events: tuple[EventIn, ...]
    events_cursor: int | None
    heartbeat_id: str | None
    body: dict[str, Any]


def field_path(path: Iterable[str | int]) -> str:
    """`["events", 3, "id"]` -> `events[3].id` (the style config errors use)."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            part = str(part)
            if not part.isprintable():  # a key with a NUL or a newline: shown escaped
                part = json.dumps(part[: PATH_PART_MAX + 1])[1:-1]
            if len(part) > PATH_PART_MAX:
                part = part[: PATH_PART_MAX - 3] + "..."
            out += f".{part}" if out else part
    return out


def _error_path(err: ValidationError) -> str:
    path = list(err.absolute_path)
    if err.validator == "required":
        # the message names the missing key; the path should too
        missing = [k for k in err.validator_value if k not in (err.instance or {})]
        if missing:
            path.append(missing[0])
    return field_path(path) or "body"


_BOUNDS = {
    "minimum": "at least",
    "maximum": "at most",
    "exclusiveMinimum": "greater than",
    "exclusiveMaximum": "less than",
}
_SIZES = {  # validator: (what is counted, too long/short, at most/least)
    "maxLength": ("characters", "is too long", "at most"),
    "minLength": ("characters", "is too short", "at least"),
    "maxItems": ("items", "is too long", "at most"),
    "minItems": ("items", "is too short", "at least"),
    "maxProperties": ("keys", "has too many keys", "at most"),
    "minProperties": ("keys", "has too few keys", "at least"),
}
MESSAGE_MAX = 200  # characters of a jsonschema message this module does not word itself


def _error_message(err: ValidationError) -> str:
    """What is wrong, in words that quote at most a little of the value (jsonschema's own
    messages carry the whole instance's repr: `[{...600 events...}] is too long`)."""
    kind, want, got = err.validator, err.validator_value, err.instance
    if kind == "required":
        return "is required"
    if kind == "const":
        return f"must be {shown(want)}"
    if kind == "type":
        kinds = " or ".join(want) if isinstance(want, list) else want
        return f"must be {kinds} (got {_kind(got)})"
    if kind in _SIZES and isinstance(got, str | list | dict):
        unit, problem, bound = _SIZES[kind]
        return f"{problem} ({len(got)} {unit}, {bound} {want})"
    if kind in _BOUNDS:
        return f"must be {_BOUNDS[kind]} {want} (got {shown(got, 40)})"
    if kind == "pattern":
        return f"must match {shown(want)} (got {shown(got)})"
    if kind == "enum":
        allowed = ", ".join(json.dumps(x) for x in want)  # the schema's words, not the input
        if len(allowed) > MESSAGE_MAX // 2:
            allowed = allowed[: MESSAGE_MAX // 2 - 3] + "..."
        return f"must be one of {allowed} (got {shown(got)})"
    if kind == "format":
        return f"must be a {shown(want)} (got {shown(got)})"
    if kind == "additionalProperties" and isinstance(got, dict):
        extra = _unknown_keys(got, err.schema)
        if extra:
            more = f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""
            return f"unknown key {shown(extra[0])}{more}"
    message = err.message
    return message if len(message) <= MESSAGE_MAX else message[: MESSAGE_MAX - 3] + "..."


def _unknown_keys(instance: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    """The keys of `instance` that neither `properties` nor `patternProperties` allow."""
    known = schema.get("properties", {})
    patterns = [re.compile(p) for p in schema.get("patternProperties", {})]
    return [k for k in instance if k not in known and not any(p.search(k) for p in patterns)]


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def load_agent_schema(path: Path = AGENT_SCHEMA_PATH) -> dict[str, Any] | None:
    """The agent's published heartbeat schema, or None when this tree has none."""
    try:
        schema = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise ApplianceError(f"{path}: unreadable heartbeat schema: {e}")
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as e:
        raise ApplianceError(f"{path}: not a valid JSON Schema: {e.message}")
    return schema


class HeartbeatValidator:
    """Validates heartbeat bodies against the agent's schema (if any) and MINIMAL_SCHEMA."""

    def __init__(self, agent_schema: dict[str, Any] | None) -> None:
        self.validators = []
        for schema in (agent_schema, MINIMAL_SCHEMA):
            if schema is not None:
                cls = jsonschema.validators.validator_for(schema)
                self.validators.append(cls(schema, format_checker=cls.FORMAT_CHECKER))

    def errors(self, body: Any) -> list[dict[str, str]]:
        """Every finding as {"path", "message"}, most relevant first, no duplicates: first
        values no database can hold (see `value_errors`), then the schemas' findings."""
        found: list[ValidationError] = []
        for v in self.validators:
            found.extend(v.iter_errors(body))
        found.sort(key=relevance, reverse=True)
        items = [(e["path"], e["message"]) for e in value_errors(body)]
        items += [(_error_path(err), _error_message(err)) for err in found]
        out: list[dict[str, str]] = []
        seen: set[tuple[str, str]] = set()
        for item in items:
            if item not in seen:
                seen.add(item)
                out.append({"path": item[0], "message": item[1]})
        return out

    def parse(self, raw: bytes) -> HeartbeatIn:
        """The heartbeat in `raw` (JSON bytes), or BadRequest naming the bad field."""
        body = parse_json(raw)
        errors = self.errors(body)
        if errors:
            first = errors[0]
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            raise BadRequest(f"{first['message']}{more}", first["path"], errors)
        return _heartbeat(body)


def parse_json(raw: bytes) -> Any:
    """The JSON in `raw` (appliance.jsontext: bounded size and depth, no NaN or Infinity,
    no key twice in one object), or BadRequest: naming the path of the number or the key
    when one is the trouble, else `body`."""
    try:
        return jsontext.loads(raw)
    except jsontext.BadJson as e:
        if e.path is not None:
            path = field_path(e.path) or "body"
            literal = e.literal
            if literal is None:
                raise BadRequest(f"key {shown(e.path[-1])} appears twice", path) from None
            shown_literal = literal if len(literal) <= 40 else literal[:20] + "..."
            if literal.lstrip("-") in ("NaN", "Infinity"):
                raise BadRequest(f"must be a finite number (got {shown_literal})", path) from None
            raise BadRequest(f"is out of range (got {shown_literal})", path) from None
        message = str(e)
        if not message.startswith(("is ", "nests ")):
            message = f"is not valid JSON ({message})"
        raise BadRequest(message, "body") from None


def value_errors(body: Any) -> list[dict[str, str]]:
    """Values no database column can hold, wherever they are in the body (the schemas do
    not bound every number, and a newer agent may send fields neither schema knows):
    numbers beyond a signed 64-bit integer, strings or keys with a NUL (PostgreSQL text
    refuses it) or a lone surrogate (not UTF-8: SQLite and PostgreSQL refuse it)."""
    out: list[dict[str, str]] = []

    def bad_text(s: str) -> str | None:
        m = _UNSTORABLE.search(s)
        if m is None:
            return None
        if m.group() == "\x00":
            return "must not contain a NUL character"
        return "must be valid Unicode (no lone surrogate)"

    def walk(value: Any, path: list[str | int]) -> None:
        if len(out) >= 20:
            return
        if isinstance(value, bool) or value is None:
            return
        if isinstance(value, int | float):
            if not (isinstance(value, int) or math.isfinite(value)) or abs(value) > INT64_MAX:
                got = f"{value:.6g}" if isinstance(value, float) else shown(value, 40)
                message = f"must be between -{INT64_MAX} and {INT64_MAX} (got {got})"
                out.append({"path": field_path(path) or "body", "message": message})
        elif isinstance(value, str):
            problem = bad_text(value)
            if problem:
                out.append({"path": field_path(path) or "body", "message": problem})
        elif isinstance(value, dict):
            for key, item in value.items():
                problem = bad_text(key)
                if problem:
                    out.append({"path": field_path([*path, key]), "message": f"key {problem}"})
                walk(item, [*path, key])
        elif isinstance(value, list):
            for i, item in enumerate(value):
                walk(item, [*path, i])

    walk(body, [])
    return out


def _opt_int(value: Any) -> int | None:
    """An integer field (jsonschema counts 3.0 as an integer) as a Python int."""
    return None if value is None else int(value)


def _heartbeat(body: dict[str, Any]) -> HeartbeatIn:
    unit = body["unit"]
    health = body["health"]
    rev = body.get("revision") or {}
    events = tuple(
        EventIn(
            id=int(e["id"]),
            at=float(e["at"]),
            kind=e["kind"],
            severity=e.get("severity") or "info",
            source=e.get("source") or "",
            message=e["message"],
        )
        for e in body.get("events") or []
    )
    sent_at = float(body["sent_at"])
    if not math.isfinite(sent_at):  # unreachable after parse_json; kept as a guard
        raise BadRequest("must be a finite number", "sent_at")
    return HeartbeatIn(
        unit_id=unit["id"],
        unit_name=unit.get("name"),
        site=unit.get("site"),
        serial=unit.get("serial"),
        seq=int(body["seq"]),
        sent_at=sent_at,
        firmware=body.get("firmware"),
        health=health["state"],
        reasons=tuple(health.get("reasons") or ()),
        revision_id=_opt_int(rev.get("id")),
        revision_sha256=rev.get("sha256"),
        revision_state=rev.get("state"),
        events=events,
        events_cursor=_opt_int(body.get("events_cursor")),
        heartbeat_id=body.get("id") if isinstance(body.get("id"), str) else None,
        body=body,
    )


def bearer_token(header: str | None) -> str:
    """The token of an `Authorization: Bearer <token>` header, or BadRequest (-> 401)."""
    if not header:
        raise BadRequest("missing (Bearer <unit token>)", "Authorization")
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise BadRequest("must be 'Bearer <unit token>'", "Authorization")
    return token


def token_hash(token: str) -> str:
    """What the receiver stores of a unit's token: its SHA-256 (hex)."""
    return hashlib.sha256(token.encode()).hexdigest()


def check_token(token: str, field: str = "token") -> str:
    token = token.strip()
    if not TOKEN_RE.match(token):
        raise BadRequest("must be 16-512 characters of letters, digits and . _ ~ + / = -", field)
    return token


def check_unit_name(name: str, field: str = "name") -> str:
    if not UNIT_NAME_RE.match(name):
        raise BadRequest(
            f"{shown(name)} must be 1-64 characters of letters, digits, '.', '_' and '-', "
            "starting with a letter or digit",
            field,
        )
    return name


def idempotency_key(header: str | None, hb: HeartbeatIn, raw: bytes) -> str:
    """The heartbeat's Idempotency-Key header, else its body's `id`, else a body digest.

    A unit resends an undelivered heartbeat with the same body and key, so a
    repeat is recognised even from a client that leaves the header out.
    """
    if header is None:
        if hb.heartbeat_id:
            return hb.heartbeat_id[:200]
        return "sha256:" + hashlib.sha256(raw).hexdigest()
    if not IDEMPOTENCY_RE.match(header):
        raise BadRequest(
            "must be 1-200 printable ASCII characters without spaces", "Idempotency-Key"
        )
    return header


def check_interval(value: Any, field: str = "interval") -> float | None:
    """A requested heartbeat interval in seconds (5..86400), or None to clear the request."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        raise BadRequest("must be a number of seconds", field)
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise BadRequest(f"must be a number of seconds (got {shown(value)})", field)
    if not math.isfinite(seconds) or not INTERVAL_MIN <= seconds <= INTERVAL_MAX:
        raise BadRequest(
            f"must be between {INTERVAL_MIN:.0f} and {INTERVAL_MAX:.0f} seconds "
            f"(got {shown(value, 40)})",
            field,
        )
    return seconds


LIMIT_DEFAULT, LIMIT_MAX = 100, 2000
KEEP_HEARTBEATS_MAX = 10_000_000
KEEP_DAYS_MAX = 36500.0


def check_limit(text: str | None, field: str = "limit") -> int:
    """A `?limit=` of rows to show: an integer, clamped to 1..2000 (absent: 100)."""
    if text is None or not text.strip():
        return LIMIT_DEFAULT
    text = text.strip()
    if not re.fullmatch(r"[+-]?[0-9]{1,40}", text):
        raise BadRequest(f"must be a whole number of rows (got {text[:40]!r})", field)
    return max(1, min(int(text), LIMIT_MAX))


def check_keep_days(value: float | None, field: str = "--keep-days") -> float | None:
    """Days of heartbeats to keep: 0 or None is forever, else a finite 0..36500.

    NaN matters: PostgreSQL orders NaN above every number, so pruning rows
    `received_at < now - NaN` would delete every one of them."""
    if value is None:
        return None
    if isinstance(value, bool) or not math.isfinite(value) or not 0 <= value <= KEEP_DAYS_MAX:
        raise BadRequest(f"must be a number of days from 0 (forever) to {KEEP_DAYS_MAX:.0f}", field)
    return value or None


def check_keep_heartbeats(value: int | str | None, field: str = "--keep-heartbeats") -> int | None:
    """Heartbeats to keep per unit (an int, or its text from a flag): 0 or None is no
    limit, else 1..KEEP_HEARTBEATS_MAX."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        # ASCII digits only: int() also reads '٣', '+5', '1_000'
        if not (text.isascii() and text.isdigit() and len(text) <= 12):
            raise BadRequest(f"must be a whole number of heartbeats (got {text[:40]!r})", field)
        value = int(text)
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest("must be a whole number of heartbeats", field)
    if not 0 <= value <= KEEP_HEARTBEATS_MAX:
        raise BadRequest(
            f"must be a number of heartbeats from 0 (no limit) to {KEEP_HEARTBEATS_MAX}", field
        )
    return value or None


# -- the unit list's filters and an operator's placement of a unit -------------------------

GROUP_RE = UNIT_NAME_RE  # the same shape as a unit name: letters, digits, . _ -
GROUPS_MAX = 50
SITE_MAX = 200
SEARCH_MAX = 200
PER_PAGE_DEFAULT, PER_PAGE_MAX = 100, 1000
PAGE_MAX = 1_000_000
HEALTH_FILTERS = ("ok", "identify", "booting", "pending-confirm", "degraded", "fault", "none")


def _text(value: Any, field: str, limit: int) -> str | None:
    """A free-text value: a string of at most `limit` printable characters (empty: None)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadRequest("must be a string", field)
    value = value.strip()
    if len(value) > limit:
        raise BadRequest(f"must be at most {limit} characters", field)
    if not value.isprintable():
        raise BadRequest("must not hold control characters", field)
    return value or None


def _whole(text: str | None, field: str, low: int, high: int, default: int) -> int:
    if text is None or not text.strip():
        return default
    text = text.strip()
    if not (text.isascii() and text.isdigit() and len(text) <= 19):
        raise BadRequest(f"must be a whole number (got {text[:40]!r})", field)
    value = int(text)
    if not low <= value <= high:
        raise BadRequest(f"must be {low}-{high}", field)
    return value


def check_group(value: Any, field: str = "group") -> str:
    if not isinstance(value, str) or not GROUP_RE.match(value):
        raise BadRequest(
            "must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit",
            field,
        )
    return value


KEEP: Any = object()  # store.set_placement: leave this part as it is


@dataclass(frozen=True)
class UnitQuery:
    """Which units the list shows (unit_query reads one from a request)."""

    search: str | None = None  # a substring of the name, reported name, site, serial, id
    site: str | None = None
    group: str | None = None
    health: str | None = None  # a state, or "none": no heartbeat yet
    firmware: str | None = None
    revision: int | None = None
    page: int = 1
    per_page: int | None = 100  # None: all


def unit_query(
    args: Mapping[str, Any], *, per_page_default: int | None = PER_PAGE_DEFAULT
) -> UnitQuery:
    """The unit list's query string (search, site, group, health, firmware, revision, page,
    per_page) -> UnitQuery; a bad value is BadRequest naming its parameter."""
    group = _text(args.get("group"), "group", 64)
    health = _text(args.get("health"), "health", 32)
    if health is not None and health not in HEALTH_FILTERS:
        raise BadRequest(f"must be one of {', '.join(HEALTH_FILTERS)}", "health")
    revision_text = _text(args.get("revision"), "revision", 24)
    revision = None
    if revision_text is not None:
        revision = _whole(revision_text.removeprefix("r"), "revision", 0, 2**63 - 1, 0)
    per_page: int | None = per_page_default
    if args.get("per_page") not in (None, ""):
        per_page = _whole(args.get("per_page"), "per_page", 1, PER_PAGE_MAX, PER_PAGE_DEFAULT)
    return UnitQuery(
        search=_text(args.get("search"), "search", SEARCH_MAX),
        site=_text(args.get("site"), "site", SITE_MAX),
        group=check_group(group) if group is not None else None,
        health=health,
        firmware=_text(args.get("firmware"), "firmware", 100),
        revision=revision,
        page=_whole(args.get("page"), "page", 1, PAGE_MAX, 1),
        per_page=per_page,
    )


def check_placement(data: Mapping[str, Any]) -> tuple[Any, list[str] | None]:
    """`{"site": str|null, "groups": [str]}` (each optional) -> (site or KEEP, groups or None)."""
    unknown = sorted(set(data) - {"site", "groups"})
    if unknown:
        raise BadRequest("unknown field (site, groups)", unknown[0])
    if not data:
        raise BadRequest("give site, groups or both", "body")
    site = _text(data["site"], "site", SITE_MAX) if "site" in data else KEEP
    groups = None
    if "groups" in data:
        raw = data["groups"]
        if not isinstance(raw, list):
            raise BadRequest("must be a list of group names", "groups")
        if len(raw) > GROUPS_MAX:
            raise BadRequest(f"at most {GROUPS_MAX} groups", "groups")
        groups = sorted({check_group(g, f"groups[{i}]") for i, g in enumerate(raw)})
    return site, groups
