"""The heartbeat: built from live documents, valid against its published schema, queued and
delivered in order through outages, the fleet's answer checked field by field."""

from __future__ import annotations

import copy
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from appliance import __version__
from appliance.agent.heartbeat import (
    EVENTS_MAX,
    SCHEMA_PATH,
    FleetError,
    FleetSender,
    HeartbeatInputs,
    build,
    parse_answer,
    read_serial,
    schema,
    unit_id,
    validate,
)
from appliance.agent.outbox import FLEET_ACK, FLEET_QUEUED, get_cursor
from appliance.config.agent import Fleet
from appliance.state.db import Store

from .test_agent_health import T0, net_doc

UNIT = {"id": str(uuid.uuid4()), "name": "unit-7", "site": "plant A", "serial": None}
HEALTH = {
    "state": "degraded",
    "reasons": [{"code": "comm-loss", "severity": "warning", "message": "no comm with plc2"}],
}


def field_doc() -> dict[str, Any]:
    return {
        "role": "field",
        "devices": {
            "plc1": {"protocol": "modbus-tcp", "state": "ok"},
            "plc2": {"protocol": "modbus-tcp", "state": "down"},
            "plc3": {"protocol": "modbus-tcp", "state": "disabled"},
        },
        "tags": {
            "plc1.counter": {"value": 3, "quality": "good"},
            "plc1.temp": {"value": 80.5, "quality": "good"},
            "plc2.level": {"value": None, "quality": "bad"},
            "plc1.flag": {"value": True, "quality": "uncertain"},
        },
        "alarms": {
            "active": [
                {
                    "id": 4,
                    "key": "plc1.temp:high",
                    "tag": "plc1.temp",
                    "device": "plc1",
                    "kind": "high",
                    "severity": "warning",
                    "state": "active",
                    "acked": False,
                    "raised_at": T0 - 100,
                    "cleared_at": None,
                    "acked_by": None,
                    "acked_at": None,
                    "value": 80.5,
                    "limit": 80,
                    "message": "plc1.temp high: 80.5 > 80",
                },
                {
                    "id": 5,
                    "key": "plc2:comm",
                    "tag": None,
                    "device": "plc2",
                    "kind": "comm",
                    "severity": "critical",
                    "state": "active",
                    "acked": True,
                    "raised_at": T0 - 50,
                    "message": "no answer from plc2",
                },
                {"id": "broken"},
            ],
            "counts": {"critical": 1, "warning": 1},
        },
        "comm_loss": ["plc2"],
    }


def full_net() -> dict[str, Any]:
    doc = net_doc()
    doc["conduits"] = {
        "scada": {"packets": 10, "bytes": 600},
        "historian": {"packets": 99, "bytes": 9000},
        "idle": {"packets": 0, "bytes": 0},
    }
    doc["drops"] = {"drop_it_ot": {"packets": 4, "bytes": 240}, "drop_ot_it": {"packets": 2}}
    return doc


def inputs(**over: Any) -> HeartbeatInputs:
    base = HeartbeatInputs(
        heartbeat_id=str(uuid.uuid4()),
        unit=UNIT,
        seq=1,
        sent_at=T0,
        uptime_s=1234.5,
        health=HEALTH,
        net=full_net(),
        field=field_doc(),
        conduit_count=3,
        events=[
            {
                "id": 7,
                "at": T0 - 5,
                "kind": "net.drift",
                "severity": "warning",
                "source": "net",
                "message": "drift repaired",
                "data": {"x": 1},
            },
        ],
        events_cursor=7,
        outbox_queued=2,
        outbox_dropped=1,
    )
    return HeartbeatInputs(**{**base.__dict__, **over})


def test_built_heartbeat_is_valid_and_summarises_the_roles() -> None:
    doc = build(inputs())
    assert validate(doc) == []
    assert doc["schema"] == "appliance-heartbeat/1"
    assert doc["firmware"] == __version__
    assert doc["revision"] == {
        "id": 3,
        "sha256": "ab" * 32,
        "state": "confirmed",
        "confirm_deadline": None,
    }
    assert doc["links"] == [
        {"name": "eth0", "role": "it", "up": True},
        {"name": "eth1", "role": "ot", "up": True},
        {"name": "eth2", "role": "mgmt", "up": True},
    ]
    assert doc["conduits"] == {
        "count": 3,
        "drops": {"it_ot": 4, "ot_it": 2},
        "top": [
            {"name": "historian", "packets": 99, "bytes": 9000},
            {"name": "scada", "packets": 10, "bytes": 600},
            {"name": "idle", "packets": 0, "bytes": 0},
        ],
    }
    assert doc["devices"] == {"total": 3, "ok": 1, "down": 1}
    assert doc["tags"] == {"total": 4, "good": 2, "bad": 1}
    assert [a["key"] for a in doc["alarms"]] == ["plc2:comm", "plc1.temp:high"]  # critical first
    assert doc["events"] == [
        {
            "id": 7,
            "at": T0 - 5,
            "kind": "net.drift",
            "severity": "warning",
            "source": "net",
            "message": "drift repaired",
        }
    ]
    assert doc["outbox"] == {"queued": 2, "dropped": 1}


def test_heartbeat_of_a_fresh_unit_is_valid() -> None:
    doc = build(
        inputs(
            net=None,
            field=None,
            events=[],
            events_cursor=0,
            conduit_count=0,
            uptime_s=None,
            health={"state": "booting", "reasons": []},
        )
    )
    assert validate(doc) == []
    assert doc["revision"] == {"id": None, "sha256": None, "state": None, "confirm_deadline": None}
    assert doc["links"] == [] and doc["alarms"] == [] and doc["events"] == []


@pytest.mark.parametrize(
    ("path", "value", "complaint"),
    [
        (("schema",), "appliance-heartbeat/2", "schema"),
        (("health", "state"), "fine", "health"),
        (("unit", "id"), "not-a-uuid", "unit.id"),
        (("seq",), 0, "seq"),
        (("revision", "sha256"), "xyz", "revision.sha256"),
        (("links", 0, "role"), "dmz", "links.0.role"),
        (("conduits", "drops", "it_ot"), -1, "conduits.drops.it_ot"),
        (("outbox",), {"queued": 1}, "outbox"),
        (("surprise",), 1, "(document)"),
    ],
)
def test_schema_refuses_what_a_fleet_must_not_accept(
    path: tuple[Any, ...], value: Any, complaint: str
) -> None:
    doc = copy.deepcopy(build(inputs()))
    target = doc
    for p in path[:-1]:
        target = target[p]
    target[path[-1]] = value
    problems = validate(doc)
    assert problems and problems[0].startswith(complaint), problems


def test_schema_file_is_2020_12_and_names_the_version() -> None:
    from jsonschema import Draft202012Validator

    s = json.loads(SCHEMA_PATH.read_text())
    Draft202012Validator.check_schema(s)
    assert s["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert s["properties"]["schema"] == {"const": "appliance-heartbeat/1"}
    assert schema() == s
    # every key is required but those added later in version 1 (older units omit them)
    assert set(s["required"]) | {"audit"} == set(build(inputs())) == set(s["properties"])


def test_the_audit_head_goes_in_the_heartbeat() -> None:
    assert build(inputs())["audit"] == {"head_id": None, "head": None}
    doc = build(inputs(audit_head=(41, "ab" * 32)))
    assert doc["audit"] == {"head_id": 41, "head": "ab" * 32}
    assert validate(doc) == []
    older = {k: v for k, v in doc.items() if k != "audit"}
    assert validate(older) == []  # a unit from before the audit head is still accepted
    assert validate({**doc, "audit": {"head_id": 41, "head": "not a digest"}})


def test_unit_id_is_made_once(tmp_path: Path) -> None:
    a = unit_id(tmp_path)
    assert uuid.UUID(a).version == 4
    assert unit_id(tmp_path) == a
    (tmp_path / "unit-id").write_text("garbage")
    b = unit_id(tmp_path)
    assert b != a and unit_id(tmp_path) == b


def test_serial(tmp_path: Path) -> None:
    p = tmp_path / "product_serial"
    assert read_serial(p) is None
    p.write_text("  \n")
    assert read_serial(p) is None
    p.write_text("SN-1234\n")
    assert read_serial(p) == "SN-1234"


# -- the fleet's answer -------------------------------------------------------------


def test_answer_fields() -> None:
    a = parse_answer(b'{"ack_cursor": 12, "interval": 30, "identify": true, "future": 1}')
    assert (a.ack_cursor, a.interval, a.identify, a.problems) == (12, 30.0, True, ())
    assert parse_answer(b"") == parse_answer(b"  ") == parse_answer(b"{}")


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (b"<html>oops</html>", "not JSON"),
        (b"[1, 2]", "JSON list"),
        (b'"ok"', "JSON str"),
        (b'{"ack_cursor": "12"}', "ack_cursor"),
        (b'{"ack_cursor": -1}', "ack_cursor"),
        (b'{"ack_cursor": true}', "ack_cursor"),
        (b'{"interval": 1}', "interval"),
        (b'{"interval": 86401}', "interval"),
        (b'{"interval": "60"}', "interval"),
        (b'{"interval": false}', "interval"),
        (b'{"identify": "yes"}', "identify"),
        (b"\xff\xfe", "not JSON"),
    ],
)
def test_malformed_answers_are_ignored_and_named(raw: bytes, problem: str) -> None:
    a = parse_answer(raw)
    assert (a.ack_cursor, a.interval, a.identify) == (None, None, None)
    assert len(a.problems) == 1 and problem in a.problems[0]


def test_one_bad_field_does_not_spoil_the_others() -> None:
    a = parse_answer(b'{"ack_cursor": 5, "interval": "soon", "identify": false}')
    assert (a.ack_cursor, a.interval, a.identify) == (5, None, False)
    assert a.problems == ("interval: 'soon' is not a number of seconds in 5..86400",)


# -- the sender, with a fake fleet --------------------------------------------------------


class FakeFleet:
    """Records POSTs; `down` makes it unreachable; `answer` is what it says."""

    def __init__(self) -> None:
        self.down = False
        self.tls_bad = False
        self.status = 200
        self.answer: Any = None  # None: ack what was sent
        self.posts: list[dict[str, Any]] = []
        self.attempts = 0

    def __call__(
        self, url: str, body: bytes, headers: dict[str, str], ctx: Any, timeout: float
    ) -> tuple[int, bytes]:
        self.attempts += 1
        if self.tls_bad:
            raise FleetError("tls", "certificate of fleet not trusted: self-signed")
        if self.down:
            raise FleetError("unreachable", "fleet: ConnectionRefusedError")
        doc = json.loads(body)
        self.posts.append({"headers": dict(headers), "doc": doc})
        if self.answer is None:
            return self.status, json.dumps({"ack_cursor": doc["events_cursor"]}).encode()
        return self.status, self.answer


FLEET = Fleet(url="https://fleet.example/api/v1/heartbeat", token="tok-123", outbox_max=10)


def sender(fake: FakeFleet, fleet: Fleet = FLEET, **kw: Any) -> tuple[FleetSender, list[tuple]]:
    events: list[tuple] = []
    identified: list[bool] = []
    s = FleetSender(
        fleet,
        event=lambda kind, message, **k: events.append((kind, message, k.get("severity"))),
        on_identify=lambda: identified.append(True),
        rand=lambda: 0.0,
        post=fake,
        **kw,
    )
    s.identified = identified  # type: ignore[attr-defined]
    s._context = object()  # type: ignore[assignment]  # no real TLS in unit tests
    return s, events


def make(now: float):
    def _make(
        heartbeat_id: str, seq: int, events: list, events_cursor: int, queued: int, dropped: int
    ) -> dict[str, Any]:
        return build(
            inputs(
                heartbeat_id=heartbeat_id,
                seq=seq,
                sent_at=now,
                events=events,
                events_cursor=events_cursor,
                outbox_queued=queued,
                outbox_dropped=dropped,
            )
        )

    return _make


def beat(s: FleetSender, now: float) -> None:
    if s.due(now):
        s.enqueue(now, make(now))
    s.deliver(now)


def test_delivery_sends_token_and_idempotency_key(store: Store) -> None:
    fake = FakeFleet()
    s, _ = sender(fake)
    store.event("net.drift", "drift repaired", source="net", severity="warning")
    beat(s, 100.0)
    assert len(fake.posts) == 1
    post = fake.posts[0]
    assert post["headers"]["Authorization"] == "Bearer tok-123"
    assert post["headers"]["Idempotency-Key"] == post["doc"]["id"]
    assert validate(post["doc"]) == []
    assert [e["kind"] for e in post["doc"]["events"]] == ["net.drift"]
    assert get_cursor(FLEET_ACK) == post["doc"]["events_cursor"] >= 1
    assert s.outbox.count() == 0 and s.status.last_ok == 100.0
    assert s.next_heartbeat == 100.0 + FLEET.interval


def test_outage_then_recovery_keeps_order_and_loses_nothing_within_the_bound(
    store: Store,
) -> None:
    fake = FakeFleet()
    s, events = sender(fake)
    beat(s, 0.0)
    fake.down = True
    now = 0.0
    for k in range(1, 8):  # seven intervals without the fleet, an event in each
        now = k * FLEET.interval
        store.event("test.tick", f"tick {k}", source="test")
        beat(s, now)
    assert s.outbox.count() == 7
    assert s.status.failures >= 1 and s.status.next_attempt is not None
    fake.down = False
    now += 1000
    s.deliver(now)
    seqs = [p["doc"]["seq"] for p in fake.posts]
    assert seqs == list(range(1, 9))  # in order, each once after recovery
    keys = [p["headers"]["Idempotency-Key"] for p in fake.posts]
    assert len(set(keys)) == len(keys)
    sent_events = [e["message"] for p in fake.posts for e in p["doc"]["events"]]
    assert [m for m in sent_events if m.startswith("tick")] == [f"tick {k}" for k in range(1, 8)]
    assert s.outbox.count() == 0 and s.status.dropped == 0
    assert not [e for e in events if e[0] == "fleet.tls_error"]


def test_retries_keep_the_same_body_and_key(store: Store) -> None:
    fake = FakeFleet()
    s, _ = sender(fake)
    fake.status = 503
    beat(s, 0.0)
    fake.status = 200
    s.deliver(10_000.0)
    assert len(fake.posts) == 2
    assert fake.posts[0] == fake.posts[1]


def test_backoff_between_attempts(store: Store) -> None:
    fake = FakeFleet()
    s, _ = sender(fake)
    fake.down = True
    beat(s, 0.0)
    assert s.status.next_attempt == 2.5  # backoff_delay(1, rand=0)
    s.deliver(2.0)
    assert fake.attempts == 1  # too early: not tried
    s.deliver(2.5)
    assert fake.attempts == 2 and s.status.next_attempt == 2.5 + 5.0
    s.deliver(7.5)
    assert s.status.next_attempt == 7.5 + 10.0


def test_the_bound_drops_oldest_and_counts_them_and_resends_their_events(store: Store) -> None:
    fake = FakeFleet()
    s, _ = sender(fake)
    fake.down = True
    for k in range(13):
        store.event("test.tick", f"tick {k}", source="test")
        s.enqueue(k * 60.0, make(k * 60.0))
    assert s.outbox.count() == 10
    assert s.status.dropped == 3
    fake.down = False
    s.enqueue(13 * 60.0, make(13 * 60.0))  # a full outbox again: one more dropped
    s.deliver(13 * 60.0)
    docs = [p["doc"] for p in fake.posts]
    assert [d["seq"] for d in docs] == list(range(5, 15))
    assert docs[-1]["outbox"]["dropped"] == 3  # reported in the heartbeat made after it
    assert s.status.dropped == 4
    got = {e["message"] for d in docs for e in d["events"]}
    assert {f"tick {k}" for k in range(13)} <= got  # events of dropped heartbeats went again


def test_events_cap_and_backlog(store: Store) -> None:
    fake = FakeFleet()
    s, _ = sender(fake)
    for k in range(EVENTS_MAX + 20):
        store.event("test.tick", f"e{k}", source="test")
    beat(s, 0.0)
    assert len(fake.posts[0]["doc"]["events"]) == EVENTS_MAX
    assert s.backlog and s.next_heartbeat == 5.0  # the rest soon, not an interval later
    beat(s, 5.0)
    assert len(fake.posts[1]["doc"]["events"]) == 20
    assert not s.backlog


def test_tls_failure_is_an_event_rate_limited_and_never_delivered(store: Store) -> None:
    fake = FakeFleet()
    s, events = sender(fake)
    fake.tls_bad = True
    beat(s, 0.0)
    s.deliver(100.0)
    s.deliver(200.0)
    tls = [e for e in events if e[0] == "fleet.tls_error"]
    assert len(tls) == 1 and tls[0][2] == "error"
    assert "not trusted" in tls[0][1]
    assert fake.posts == [] and s.outbox.count() == 1
    s.deliver(1000.0)
    assert len([e for e in events if e[0] == "fleet.tls_error"]) == 2


def test_malformed_answer_is_ignored_and_reported(store: Store) -> None:
    fake = FakeFleet()
    s, events = sender(fake)
    fake.answer = b'{"interval": "fast", "ack_cursor": 99999, "identify": 1}'
    beat(s, 0.0)
    assert s.outbox.count() == 0  # delivered all the same
    assert s.interval == FLEET.interval
    assert get_cursor(FLEET_ACK) == 0
    assert s.identified == []  # type: ignore[attr-defined]
    bad = [e for e in events if e[0] == "fleet.bad_answer"]
    assert len(bad) == 1
    assert "interval" in bad[0][1] and "identify" in bad[0][1] and "ack_cursor" in bad[0][1]
    fake.answer = b"not json"
    beat(s, 60.0)
    assert len([e for e in events if e[0] == "fleet.bad_answer"]) == 1  # rate-limited


def test_answer_sets_interval_and_asks_identify(store: Store) -> None:
    fake = FakeFleet()
    s, _ = sender(fake)
    fake.answer = b'{"interval": 300, "identify": true}'
    beat(s, 0.0)
    assert s.interval == 300.0 and s.next_heartbeat == 300.0
    assert s.identified == [True]  # type: ignore[attr-defined]
    assert s.status.interval == 300.0


def test_fleet_acking_less_gets_the_events_again(store: Store) -> None:
    fake = FakeFleet()
    s, _ = sender(fake)
    store.event("a", "one", source="test")
    store.event("a", "two", source="test")
    fake.answer = b'{"ack_cursor": 0}'
    beat(s, 0.0)
    assert get_cursor(FLEET_QUEUED) == 0
    fake.answer = None
    beat(s, 60.0)
    assert [e["message"] for e in fake.posts[1]["doc"]["events"]][-2:] == ["one", "two"]


@pytest.mark.parametrize("status", [400, 413, 415, 422])
def test_rejected_body_is_dropped_not_retried_forever(store: Store, status: int) -> None:
    fake = FakeFleet()
    s, events = sender(fake)
    fake.status = status
    beat(s, 0.0)
    assert s.outbox.count() == 0
    assert [e[0] for e in events] == ["fleet.rejected"]


def test_unauthorised_is_kept_and_retried(store: Store) -> None:
    fake = FakeFleet()
    s, events = sender(fake)
    fake.status = 401
    beat(s, 0.0)
    assert s.outbox.count() == 1
    assert "token" in next(e for e in events if e[0] == "fleet.rejected")[1]


def test_a_long_queue_goes_out_in_rounds(store: Store) -> None:
    fake = FakeFleet()
    s, _ = sender(fake)
    fake.down = True
    for k in range(7):
        s.enqueue(k * 60.0, make(k * 60.0))
    fake.down = False
    assert s.deliver(10_000.0, limit=3) == 3
    assert s.outbox.count() == 4
    assert s.deliver(10_000.0, limit=3) == 3
    assert s.deliver(10_000.0, limit=3) == 1
    assert [p["doc"]["seq"] for p in fake.posts] == list(range(1, 8))


def test_the_fleet_urls_credentials_reach_no_status_and_no_event(store: Store) -> None:
    # /api/system shows the status to viewers, and events go to syslog and the fleet
    url = "https://unit:fleetpass99@fleet.example/api/v1/heartbeat?key=k3y-abcdef123456"
    fake = FakeFleet()
    s, events = sender(fake, Fleet(url=url, token="tok-123", outbox_max=10))
    fake.tls_bad = True
    beat(s, 0.0)
    fake.tls_bad, fake.status = False, 401
    s.deliver(100.0)
    shown = [json.dumps(s.status.live()), *(e[1] for e in events)]
    assert [e[0] for e in events] == ["fleet.tls_error", "fleet.rejected"]
    for text in shown:
        assert "fleetpass99" not in text and "k3y-abcdef123456" not in text, text
        assert "fleet.example" in text
    assert fake.attempts == 2  # the real URL is still the one used
