"""Heartbeat validation on the fleet receiver: the agent's schema, the receiver's minimum, names."""

from __future__ import annotations

import copy
import functools
import json
import uuid
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from appliance.fleet.validate import (
    AGENT_SCHEMA_PATH,
    BadRequest,
    HeartbeatValidator,
    bearer_token,
    check_interval,
    check_token,
    check_unit_name,
    field_path,
    idempotency_key,
    load_agent_schema,
    value_errors,
)

UNIT_UUID = "0f4c6a8e-1b2d-4e5f-8a9b-0c1d2e3f4a5b"
T0 = 1_790_000_000.0


def heartbeat(
    seq: int = 1,
    *,
    sent_at: float | None = None,
    state: str = "ok",
    events: list[dict[str, Any]] | None = None,
    events_cursor: int | None = None,
    unit_id: str = UNIT_UUID,
    revision: int = 3,
    **changes: Any,
) -> dict[str, Any]:
    """A heartbeat as the agent makes it (appliance/agent/heartbeat.schema.json)."""
    events = events or []
    cursor = events_cursor
    if cursor is None:
        cursor = max((e["id"] for e in events), default=0)
    body: dict[str, Any] = {
        "schema": "appliance-heartbeat/1",
        "id": str(uuid.uuid4()),
        "unit": {"id": unit_id, "name": "press-line-3", "site": "Plant 2", "serial": "SN123"},
        "seq": seq,
        "sent_at": T0 + 60 * seq if sent_at is None else sent_at,
        "firmware": "0.1.0",
        "uptime_s": 3600.0 + 60 * seq,
        "health": {
            "state": state,
            "reasons": (
                []
                if state == "ok"
                else [{"code": "link.down", "severity": "warning", "message": "ot0 is down"}]
            ),
        },
        "revision": {"id": revision, "sha256": "ab" * 32, "state": "confirmed"},
        "links": [
            {"name": "it0", "role": "it", "up": True},
            {"name": "ot0", "role": "ot", "up": True},
        ],
        "conduits": {
            "count": 1,
            "drops": {"it_ot": 4},
            "top": [{"name": "scada", "packets": 10, "bytes": 600}],
        },
        "devices": {"total": 2, "ok": 2, "down": 0},
        "tags": {"total": 10, "good": 10, "bad": 0},
        "alarms": [],
        "events": events,
        "events_cursor": cursor,
        "outbox": {"queued": 0, "dropped": 0},
    }
    body.update(changes)
    return body


def event(i: int, kind: str = "net.applied", at: float | None = None) -> dict[str, Any]:
    return {
        "id": i,
        "at": T0 + i if at is None else at,
        "kind": kind,
        "severity": "info",
        "source": "net",
        "message": f"event {i}",
    }


def raw(body: Any) -> bytes:
    return json.dumps(body).encode()


@pytest.fixture(scope="module")
def agent_schema() -> dict[str, Any]:
    schema = load_agent_schema()
    assert schema is not None, f"{AGENT_SCHEMA_PATH} is missing: the agent publishes it"
    return schema


@pytest.fixture(scope="module")
def full(agent_schema: dict[str, Any]) -> HeartbeatValidator:
    return HeartbeatValidator(agent_schema)


@pytest.fixture(scope="module")
def minimal() -> HeartbeatValidator:
    return HeartbeatValidator(None)


def test_a_heartbeat_as_the_agent_makes_it_is_accepted_by_both(
    full: HeartbeatValidator, minimal: HeartbeatValidator
) -> None:
    body = heartbeat(7, state="degraded", events=[event(1), event(2)])
    for v in (full, minimal):
        hb = v.parse(raw(body))
        assert (hb.seq, hb.health, hb.unit_id, hb.revision_id) == (7, "degraded", UNIT_UUID, 3)
        assert [e.id for e in hb.events] == [1, 2]
        assert hb.events_cursor == 2
        assert hb.heartbeat_id == body["id"]
        assert hb.reasons[0]["code"] == "link.down"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"seq": "7"}, "seq"),
        ({"sent_at": "yesterday"}, "sent_at"),
        ({"schema": "appliance-heartbeat/2"}, "schema"),
        ({"health": {"reasons": []}}, "health.state"),
        ({"unit": {"name": "x", "site": "", "serial": None}}, "unit.id"),
        ({"events": [{"id": "one", "at": T0, "kind": "k", "message": "m"}]}, "events[0].id"),
    ],
)
def test_a_bad_field_is_named(
    minimal: HeartbeatValidator, full: HeartbeatValidator, change: dict, field: str
) -> None:
    body = heartbeat()
    body.update(change)
    for v in (minimal, full):
        with pytest.raises(BadRequest) as exc:
            v.parse(raw(body))
        paths = [e["path"] for e in exc.value.errors]
        assert field in paths, paths
    # the receiver's own minimum names exactly this field first
    with pytest.raises(BadRequest) as exc:
        minimal.parse(raw(body))
    assert exc.value.field == field
    assert str(exc.value).startswith(f"{field}: ")


def test_a_missing_top_level_field_names_the_field_not_the_body(
    minimal: HeartbeatValidator,
) -> None:
    body = heartbeat()
    del body["seq"]
    with pytest.raises(BadRequest) as exc:
        minimal.parse(raw(body))
    assert exc.value.field == "seq"
    assert exc.value.as_dict()["error"] == "seq: is required"


def test_the_agents_schema_is_applied_when_present(
    full: HeartbeatValidator, minimal: HeartbeatValidator
) -> None:
    body = heartbeat()
    del body["outbox"]  # the receiver does not need it; the contract does
    minimal.parse(raw(body))
    with pytest.raises(BadRequest) as exc:
        full.parse(raw(body))
    assert exc.value.field == "outbox"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"{not json", "is not valid JSON"),
        (b"\xff\xfe", "is not UTF-8"),
        (b"{" * 33 + b"}" * 33, "nests deeper than 32 levels"),
        (b"[]", "must be object"),
    ],
)
def test_a_body_that_is_not_a_json_object_is_refused(
    minimal: HeartbeatValidator, data: bytes, message: str
) -> None:
    with pytest.raises(BadRequest) as exc:
        minimal.parse(data)
    assert message in str(exc.value)
    assert exc.value.field == "body"


def test_booleans_are_not_numbers(minimal: HeartbeatValidator) -> None:
    with pytest.raises(BadRequest) as exc:
        minimal.parse(raw(heartbeat(sent_at=True)))  # type: ignore[arg-type]
    assert exc.value.field == "sent_at"


def test_field_path() -> None:
    assert field_path(["events", 3, "id"]) == "events[3].id"
    assert field_path([]) == ""
    assert field_path(["unit", "id"]) == "unit.id"


def test_bearer_token() -> None:
    assert bearer_token("Bearer abc.def") == "abc.def"
    assert bearer_token("bearer   tok  ") == "tok"
    for bad in (None, "", "Basic dXNlcg==", "Bearer", "Bearer "):
        with pytest.raises(BadRequest) as exc:
            bearer_token(bad)
        assert exc.value.field == "Authorization"


def test_idempotency_key_from_header_body_id_or_digest(minimal: HeartbeatValidator) -> None:
    body = heartbeat()
    data = raw(body)
    hb = minimal.parse(data)
    assert idempotency_key("k-1", hb, data) == "k-1"
    assert idempotency_key(None, hb, data) == body["id"]
    no_id = copy.deepcopy(body)
    del no_id["id"]
    data2 = raw(no_id)
    hb2 = minimal.parse(data2)
    key = idempotency_key(None, hb2, data2)
    assert key.startswith("sha256:") and key == idempotency_key(None, hb2, data2)
    for bad in ("", "has space", "x" * 201, "tab\t"):
        with pytest.raises(BadRequest) as exc:
            idempotency_key(bad, hb, data)
        assert exc.value.field == "Idempotency-Key"


def test_interval_bounds() -> None:
    assert check_interval("30") == 30.0
    assert check_interval(5) == 5.0
    assert check_interval(86400) == 86400.0
    assert check_interval("") is None
    assert check_interval(None) is None
    for bad in ("4.9", 86401, "abc", True, "nan", "inf", [1]):
        with pytest.raises(BadRequest) as exc:
            check_interval(bad)
        assert exc.value.field == "interval"


def test_tokens_and_unit_names() -> None:
    assert check_token("  " + "a" * 43 + "\n") == "a" * 43
    for bad in ("short", "has space in it here!", "x" * 513):
        with pytest.raises(BadRequest):
            check_token(bad)
    assert check_unit_name("press-line-3") == "press-line-3"
    for bad in ("", "-x", "a/b", "x" * 65, "ü"):
        with pytest.raises(BadRequest) as exc:
            check_unit_name(bad, "NAME")
        assert exc.value.field == "NAME"


# -- hostile JSON: depth, NaN/Infinity, numbers out of range, strings a database refuses -------

INT64_MAX = 2**63 - 1


def text_with(body: dict[str, Any], path: str, literal: str) -> bytes:
    """The JSON of `body` with the value at `path` (a dotted path, `[i]` for items) replaced by
    `literal` as written (NaN, 1e999, 10**30 digits...), which json.dumps would not write."""
    marker = "__REPLACE_ME__"
    target: Any = body
    parts = path.replace("[", ".[").split(".")
    for part in parts[:-1]:
        target = target[int(part[1:-1])] if part.startswith("[") else target[part]
    last = parts[-1]
    if last.startswith("["):
        target[int(last[1:-1])] = marker
    else:
        target[last] = marker
    return json.dumps(body).replace(f'"{marker}"', literal).encode()


def test_a_deeply_nested_body_is_refused_as_the_body(
    minimal: HeartbeatValidator, full: HeartbeatValidator
) -> None:
    for data in (
        b"[" * 100_000 + b"]" * 100_000,
        text_with(heartbeat(), "unit.site", "[" * 40 + "]" * 40),
    ):
        for v in (minimal, full):
            with pytest.raises(BadRequest) as exc:
                v.parse(data)
            assert exc.value.field == "body"
            assert "nests deeper" in str(exc.value)


@pytest.mark.parametrize(
    ("path", "literal"),
    [
        ("seq", "NaN"),
        ("sent_at", "NaN"),
        ("sent_at", "Infinity"),
        ("uptime_s", "-Infinity"),
        ("uptime_s", "1e999"),
        ("revision.id", "NaN"),
        ("events_cursor", "Infinity"),
        ("events[0].at", "NaN"),
        ("conduits.top[0].bytes", "1e400"),
        ("revision.confirm_deadline", "NaN"),
    ],
)
def test_nan_and_infinity_are_refused_naming_the_field(
    minimal: HeartbeatValidator, full: HeartbeatValidator, path: str, literal: str
) -> None:
    body = heartbeat(events=[event(1)])
    body["revision"]["confirm_deadline"] = None
    data = text_with(body, path, literal)
    for v in (minimal, full):
        with pytest.raises(BadRequest) as exc:
            v.parse(data)
        assert exc.value.field == path, exc.value.as_dict()
        assert literal.lstrip("-") in str(exc.value) or "out of range" in str(exc.value)


@pytest.mark.parametrize(
    ("path", "literal"),
    [
        ("events_cursor", str(10**30)),
        ("events_cursor", "1e30"),
        ("events_cursor", str(2**63)),
        ("events_cursor", "-1"),
        ("revision.id", str(10**30)),
        ("revision.id", "9.3e18"),
        ("revision.id", "-5"),
        ("seq", str(10**30)),
        ("events[0].id", str(10**30)),
        ("sent_at", "1e300"),
        ("sent_at", "-1"),
        ("events[0].at", "1e300"),
        ("uptime_s", "1e300"),
        ("revision.confirm_deadline", "1e300"),
        ("alarms[0].raised_at", "1e300"),
        ("alarms[0].id", str(10**30)),
        ("conduits.count", "1e300"),
        ("conduits.top[0].bytes", str(10**30)),
        ("conduits.drops.it_ot", str(-(10**30))),
        ("outbox.queued", str(2**64)),
        ("tags.total", "1e19"),
    ],
)
def test_numbers_out_of_range_are_refused_naming_the_field(
    minimal: HeartbeatValidator, full: HeartbeatValidator, path: str, literal: str
) -> None:
    body = heartbeat(events=[event(1)])
    body["revision"]["confirm_deadline"] = None
    body["alarms"] = [
        {
            "id": 1,
            "key": "k",
            "tag": None,
            "device": None,
            "kind": "high",
            "severity": "warning",
            "raised_at": T0,
            "acked": False,
            "message": "m",
        }
    ]
    data = text_with(body, path, literal)
    for v in (minimal, full):
        with pytest.raises(BadRequest) as exc:
            v.parse(data)
        paths = [e["path"] for e in exc.value.errors]
        assert path in paths, exc.value.as_dict()
    with pytest.raises(BadRequest) as exc:
        minimal.parse(data)
    assert exc.value.field == path, exc.value.as_dict()


def test_the_largest_database_integers_are_accepted(minimal: HeartbeatValidator) -> None:
    body = heartbeat(events_cursor=INT64_MAX)
    body["revision"]["id"] = INT64_MAX
    hb = minimal.parse(raw(body))
    assert (hb.events_cursor, hb.revision_id) == (INT64_MAX, INT64_MAX)


def test_integral_floats_become_integers(minimal: HeartbeatValidator) -> None:
    data = text_with(heartbeat(events=[event(1)]), "revision.id", "3.0")
    hb = minimal.parse(data)
    assert hb.revision_id == 3 and type(hb.revision_id) is int
    data = text_with(heartbeat(events=[event(1)]), "events_cursor", "1.0")
    hb = minimal.parse(data)
    assert hb.events_cursor == 1 and type(hb.events_cursor) is int
    data = text_with(heartbeat(events=[event(1)]), "events[0].id", "1.0")
    assert type(minimal.parse(data).events[0].id) is int


@pytest.mark.parametrize(
    ("path", "literal"),
    [
        ("unit.name", r'"press\u0000line"'),
        ("events[0].message", r'"bad \ud800 half"'),
        ("health.reasons[0].message", r'"\u0000"'),
        ("firmware", r'"\udfff"'),
    ],
)
def test_strings_a_database_cannot_store_are_refused_naming_the_field(
    minimal: HeartbeatValidator, full: HeartbeatValidator, path: str, literal: str
) -> None:
    data = text_with(heartbeat(state="degraded", events=[event(1)]), path, literal)
    for v in (minimal, full):
        with pytest.raises(BadRequest) as exc:
            v.parse(data)
        assert exc.value.field == path, exc.value.as_dict()


def test_a_bad_key_is_named_too(minimal: HeartbeatValidator) -> None:
    data = raw(heartbeat()).replace(b'"tags"', b'"t\\u0000ags"', 1)
    with pytest.raises(BadRequest) as exc:
        minimal.parse(data)
    assert exc.value.field == "t\\u0000ags"


_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)
_fields = st.sampled_from(
    ["seq", "sent_at", "uptime_s", "events_cursor", "firmware", "conduits", "tags", "unit"]
)


@functools.cache
def _full_validator() -> HeartbeatValidator:
    return HeartbeatValidator(load_agent_schema())


@given(field=_fields, value=_json_values)
def test_any_value_anywhere_is_a_heartbeat_a_database_holds_or_a_bad_request(
    field: str, value: Any
) -> None:
    validator = _full_validator()
    body = heartbeat(events=[event(1)])
    body[field] = value
    try:
        hb = validator.parse(raw(body))
    except BadRequest as e:
        assert e.field
        return
    for number in (hb.seq, hb.revision_id, hb.events_cursor, *(e.id for e in hb.events)):
        assert number is None or (type(number) is int and 0 <= number <= INT64_MAX)
    assert not value_errors(hb.body)


# -- refusals quote at most a little of what they got ------------------------------------------

BIG = 100_000
MESSAGE_MAX = 300  # characters of a refusal's `error`, and of each finding's path and message


def _hostile_bodies() -> list[tuple[str, bytes, str]]:
    """(name, body, field) of heartbeats whose offending value is huge."""
    many = heartbeat(events=[{**event(i), "message": "m" * 1000} for i in range(1, 601)])
    out = [("600 events", raw(many), "events")]
    for path, value in [
        ("health.state", "x" * BIG),
        ("unit.id", "u" * BIG),
        ("firmware", "f" * BIG),
        ("seq", "7" * BIG),
        ("seq", ["x" * 1000] * 1000),
        ("revision.state", "s" * BIG),
        ("events_cursor", -(10**4000)),
    ]:
        body = heartbeat()
        target = body
        *parents, last = path.split(".")
        for part in parents:
            target = target[part]
        target[last] = value
        out.append((f"huge {path}", raw(body), path))
    body = heartbeat()
    body["outbox"]["k" * BIG] = 1  # a key the contract does not allow
    out.append(("huge unknown key", raw(body), "outbox"))
    body = heartbeat()
    body["tags"]["\x00" + "k" * BIG] = 1
    out.append(("huge key with a NUL", raw(body), "tags.\\u0000" + "k" * 10))
    out.append(
        (
            "huge number literal",
            text_with(heartbeat(), "sent_at", "1" + "0" * BIG + ".5"),
            "sent_at",
        )
    )
    out.append(("huge integer literal", text_with(heartbeat(), "seq", "1" + "0" * 5000), "seq"))
    return out


@pytest.mark.parametrize(
    ("data", "field"),
    [(d, f) for _, d, f in _hostile_bodies()],
    ids=[n for n, _, _ in _hostile_bodies()],
)
def test_a_refusal_does_not_echo_a_huge_value(
    minimal: HeartbeatValidator, full: HeartbeatValidator, data: bytes, field: str
) -> None:
    refused = 0
    for v in (minimal, full):
        try:
            v.parse(data)
        except BadRequest as e:
            found = e.as_dict()
            refused += 1
        else:
            continue  # 600 events: the receiver's own minimum allows 1000, the agent's 500
        assert len(found["error"]) <= MESSAGE_MAX, found["error"][:400]
        assert found["field"].startswith(field[:20]), found["field"][:400]
        for e in found["errors"]:
            assert len(e["path"]) <= MESSAGE_MAX and len(e["message"]) <= MESSAGE_MAX, (
                e["path"][:400],
                e["message"][:400],
            )
    assert refused, "neither validator refused it"


def test_too_long_and_too_many_report_the_count(
    minimal: HeartbeatValidator, full: HeartbeatValidator
) -> None:
    many = heartbeat(events=[event(i) for i in range(1, 1002)])
    for v in (minimal, full):
        with pytest.raises(BadRequest) as exc:
            v.parse(raw(many))
        assert exc.value.field == "events"
        assert "1001 items" in exc.value.message, exc.value.message
    body = heartbeat()
    body["unit"]["id"] = "u" * 150
    with pytest.raises(BadRequest) as exc:
        minimal.parse(raw(body))
    assert exc.value.field == "unit.id"
    assert exc.value.message == "is too long (150 characters, at most 100)"


def test_a_bad_value_is_quoted_shortened(minimal: HeartbeatValidator) -> None:
    body = heartbeat(state="Broken" + "!" * 200)
    with pytest.raises(BadRequest) as exc:
        minimal.parse(raw(body))
    assert exc.value.field == "health.state"
    assert "'Broken!!!" in exc.value.message and "..." in exc.value.message
    assert len(exc.value.message) <= MESSAGE_MAX


def test_a_duplicate_key_is_refused_naming_its_path(
    minimal: HeartbeatValidator, full: HeartbeatValidator
) -> None:
    text = raw(heartbeat(seq=5))
    data = text[:-1] + b', "seq": 99999}'
    for v in (minimal, full):
        with pytest.raises(BadRequest) as exc:
            v.parse(data)
        assert exc.value.field == "seq"
        assert exc.value.message == "key 'seq' appears twice"
    data = text.replace(b'"unit": {', b'"unit": {"id": "x", ', 1)
    with pytest.raises(BadRequest) as exc:
        minimal.parse(data)
    assert exc.value.field == "unit.id"


def test_interval_and_unit_name_refusals_are_short() -> None:
    for value in ("x" * BIG, "9" * BIG, ["1"] * BIG):
        with pytest.raises(BadRequest) as exc:
            check_interval(value)
        assert len(str(exc.value)) <= MESSAGE_MAX
    with pytest.raises(BadRequest) as exc:
        check_unit_name("!" * BIG)
    assert len(str(exc.value)) <= MESSAGE_MAX
