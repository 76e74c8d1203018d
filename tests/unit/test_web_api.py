"""The REST API over the real stores: configuration life, conduits, live data, metrics,
control calls to the field and agent roles (served by fake handlers on real sockets)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from appliance.errors import NotFound, PermissionDenied
from appliance.state.control import ControlServer, socket_path
from appliance.state.db import Audit
from appliance.state.live import LiveState
from appliance.web.openapi import build

from . import factory
from .webkit import Web, error_of


def admin(web: Web) -> tuple[Any, dict[str, str]]:
    c = web.login("admin")
    return c, web.h(c)


def base_doc() -> dict[str, Any]:
    doc = factory.base()
    doc["interfaces"].append({"name": "mgmt0", "role": "mgmt", "addresses": ["10.99.0.2/30"]})
    doc["fleet"] = {"url": "https://fleet.example/hb", "token": "s3cret-fleet-token"}
    return doc


def commit_base(web: Web) -> None:
    c, h = admin(web)
    assert c.put("/api/config/draft", json=base_doc(), headers=h).status_code == 200
    r = c.post("/api/config/commit", json={}, headers=h)
    assert r.status_code == 200, r.json


# -- configuration -----------------------------------------------------------------------


def test_draft_yaml_error_names_field_and_line(ready: Web) -> None:
    c, h = admin(ready)
    text = yaml.safe_dump(base_doc(), sort_keys=False).replace(
        "services:\n  - modbus", "services:\n  - modbsu"
    )
    r = c.put("/api/config/draft", data=text, headers={**h, "Content-Type": "text/yaml"})
    assert r.status_code == 422
    assert r.json["field"] == "conduits[0].services[0]"
    err = r.json["errors"][0]
    assert err["path"] == "conduits[0].services[0]" and "modbsu" in err["message"]
    assert err["line"] == text.splitlines().index("  - modbsu") + 1


def test_draft_json_error_names_field(ready: Web) -> None:
    c, h = admin(ready)
    doc = base_doc()
    doc["conduits"][0]["to"] = ["10.10.0.5"]  # an IT address on the OT side
    r = c.put("/api/config/draft", json=doc, headers=h)
    assert r.status_code == 422 and r.json["field"].startswith("conduits[0].to")
    doc = base_doc()
    doc["unit"]["nmae"] = "x"
    r = c.put("/api/config/draft", json=doc, headers=h)
    assert r.status_code == 422 and r.json["field"] == "unit.nmae"
    assert "did you mean 'name'" in r.json["errors"][0]["message"]


def test_commit_confirm_rollback_ring_and_audit(ready: Web, tmp_path: Path) -> None:
    live = LiveState(ready.paths.run_dir)
    bells = {role: live.bind_doorbell(role) for role in ("net", "field", "agent")}
    try:
        c, h = admin(ready)
        assert c.put("/api/config/draft", json=base_doc(), headers=h).status_code == 200
        r = c.post("/api/config/commit", json={"confirm_within": 60}, headers=h)
        assert r.status_code == 200
        assert r.json["confirm_deadline"] == pytest.approx(ready.clock() + 60)
        for role, s in bells.items():
            assert s.recv(16) == b"wake", role
        assert c.get("/api/status").json["revision"]["seconds_left"] == pytest.approx(60)
        o = ready.login("operator")
        r = o.post("/api/config/confirm", headers=ready.h(o))
        assert r.status_code == 200 and r.json["revision"]["state"] == "confirmed"
        r = o.post("/api/config/confirm", headers=ready.h(o))
        assert r.status_code == 409
        doc = base_doc()
        doc["unit"]["name"] = "renamed"
        assert c.put("/api/config/draft", json=doc, headers=h).status_code == 200
        assert c.post("/api/config/commit", json={}, headers=h).status_code == 200
        r = c.post("/api/config/rollback", json={"revision": 1}, headers=h)
        assert r.status_code == 409  # revision 2 is pending (not applied by a net role here)
        r = c.post("/api/config/rollback", headers=h)  # no body: drop the pending one
        assert r.status_code == 200, r.json
        assert r.json["revision"]["state"] == "rolled-back"
    finally:
        for s in bells.values():
            s.close()
    actions = [
        (a.action, a.actor, a.result)
        for a in Audit.select().order_by(Audit.id)
        if a.action.startswith("config.")
    ]
    assert ("config.commit", "admin", "ok") in actions
    assert ("config.confirm", "operator", "ok") in actions
    assert ("config.confirm", "operator", "failed") in actions
    assert ("config.rollback", "admin", "ok") in actions


def test_running_draft_diff_export_revisions(ready: Web) -> None:
    commit_base(ready)
    c, h = admin(ready)
    run = c.get("/api/config/running").json
    assert run["revision"]["id"] == 1 and run["document"]["unit"]["name"] == "test-unit"
    assert c.get("/api/config/draft").status_code == 404
    r = c.put("/api/config/draft/unit", json={"name": "edited", "site": "hall 3"}, headers=h)
    assert r.status_code == 200 and r.json["revision"]["state"] == "draft"
    sec = c.get("/api/config/draft/unit").json
    assert sec["unit"]["name"] == "edited" and sec["section"] == "unit"
    d = c.get("/api/config/diff").json
    assert d["a"]["id"] == 1 and d["b"]["id"] == 2
    assert any("unit" in line for line in d["changes"])
    assert "+  name: edited" in d["diff"]
    r = c.get("/api/config/export?revision=1")
    assert r.mimetype == "text/yaml" and "test-unit" in r.get_data(as_text=True)
    assert [x["id"] for x in c.get("/api/revisions").json] == [2, 1]
    one = c.get("/api/revisions/1").json
    assert one["id"] == 1 and one["document"]["unit"]["name"] == "test-unit"
    assert c.get("/api/revisions/99").status_code == 404
    r = c.put("/api/config/draft/interfaces", json=[{"name": "bad name!", "role": "it"}], headers=h)
    assert r.status_code == 422 and r.json["field"] == "interfaces[0].name"
    assert c.get("/api/config/draft/bogus").status_code == 404


def test_time_dns_and_bridge_are_sections(ready: Web) -> None:
    """The Interfaces page saves time, dns and the mode (bridge) one section each; unset,
    a section reads as its default (the document leaves it out)."""
    commit_base(ready)
    c, h = admin(ready)
    r = c.put("/api/config/draft/unit", json={"name": "edited"}, headers=h)
    assert r.status_code == 200
    assert c.get("/api/config/draft/time").json["time"]["ntp"] == []
    assert c.get("/api/config/draft/dns").json["dns"] == {"servers": [], "search": []}
    assert c.get("/api/config/draft/bridge").json["bridge"] is None
    r = c.put("/api/config/draft/time", json={"ntp": ["pool.example", "bad host!"]}, headers=h)
    assert r.status_code == 422 and r.json["field"] == "time.ntp[1]"
    r = c.put("/api/config/draft/time", json={"ntp": ["pool.example"]}, headers=h)
    assert r.status_code == 200
    r = c.put("/api/config/draft/dns", json={"servers": ["10.10.0.53"], "search": []}, headers=h)
    assert r.status_code == 200
    assert c.get("/api/config/draft/time").json["time"]["ntp"] == ["pool.example"]
    assert c.get("/api/config/draft/dns").json["dns"]["servers"] == ["10.10.0.53"]
    jh = {**h, "Content-Type": "application/json"}
    r = c.put("/api/config/draft/bridge", data="null", headers=jh)
    assert r.status_code == 200 and c.get("/api/config/draft/bridge").json["bridge"] is None


def test_secrets_only_for_admins(ready: Web) -> None:
    commit_base(ready)
    a, _ = admin(ready)
    assert a.get("/api/config/running").json["document"]["fleet"]["token"] == "s3cret-fleet-token"
    v = ready.login("viewer")
    r = v.get("/api/config/running")
    assert "s3cret-fleet-token" not in r.get_data(as_text=True)
    assert "s3cret-fleet-token" not in v.get("/api/config/export").get_data(as_text=True)
    assert "s3cret-fleet-token" not in v.get("/api/revisions/1").get_data(as_text=True)
    assert "s3cret-fleet-token" in a.get("/api/config/export").get_data(as_text=True)
    # who took a copy, with or without the secrets, is audited
    exports = Audit.select().where(Audit.action == "config.export").order_by(Audit.id)
    assert [(x.actor, x.target, x.detail) for x in exports] == [
        ("viewer", "revision 1", "redacted"),
        ("admin", "revision 1", ""),
    ]


# -- conduits ------------------------------------------------------------------------------


def test_conduits_edit_the_draft(ready: Web) -> None:
    commit_base(ready)
    LiveState(ready.paths.run_dir).write(
        "net", {"conduits": {"scada-modbus": {"packets": 7, "bytes": 420}}}
    )
    c, h = admin(ready)
    listed = c.get("/api/conduits").json
    assert listed[0]["name"] == "scada-modbus" and listed[0]["packets"] == 7
    assert listed[0]["active"] is True
    new = factory.conduit("hmi-web", services=["tcp/8080"])
    r = c.post("/api/conduits", json=new, headers=h)
    assert r.status_code == 201, r.json
    assert c.post("/api/conduits", json=new, headers=h).status_code == 409
    bad = factory.conduit("hmi-web2", services=["tcp/0"])
    r = c.post("/api/conduits", json=bad, headers=h)
    assert r.status_code == 422 and r.json["field"] == "conduits[2].services[0]"
    changed = {**new, "reason": "new reason"}
    assert c.put("/api/conduits/hmi-web", json=changed, headers=h).status_code == 200
    draft = c.get("/api/config/draft").json["document"]["conduits"]
    assert [x["reason"] for x in draft if x["name"] == "hmi-web"] == ["new reason"]
    assert c.put("/api/conduits/nope", json=changed, headers=h).status_code == 404
    assert c.delete("/api/conduits/hmi-web", headers=h).status_code == 200
    names = [x["name"] for x in c.get("/api/config/draft").json["document"]["conduits"]]
    assert names == ["scada-modbus"]
    assert c.get("/api/conduits").json[0]["name"] == "scada-modbus"  # running is unchanged


# -- live data --------------------------------------------------------------------------------


FIELD_DOC = {
    "role": "field",
    "devices": {
        "plc1": {
            "protocol": "modbus-tcp",
            "state": "ok",
            "last_ok": 1.0,
            "last_error": None,
            "error_count": 2,
        }
    },
    "tags": {
        "plc1.counter": {"value": 41, "quality": "good", "device": "plc1", "writable": False},
        "plc1.name": {"value": "LAB", "quality": "good", "device": "plc1", "writable": False},
    },
    "alarms": {
        "active": [{"id": 3, "key": "plc1.temp:high", "severity": "warning"}],
        "counts": {"critical": 0, "warning": 1},
    },
    "comm_loss": [],
    "history": {"queued": 5, "written": 100, "last_flush": 1.0},
}


def test_status_and_metrics(ready: Web) -> None:
    commit_base(ready)
    live = LiveState(ready.paths.run_dir)
    live.write("field", FIELD_DOC)
    live.write(
        "net",
        {
            "applied": {"revision": 1, "state": "pending"},
            "links": [
                {
                    "name": "it0",
                    "role": "it",
                    "present": True,
                    "oper": "UP",
                    "mac": "02:a0:00:00:01:01",
                    "addresses": ["10.10.0.1/24"],
                }
            ],
            "conduits": {"scada-modbus": {"packets": 3, "bytes": 180}},
            "drops": {"drop_it_ot": {"packets": 4, "bytes": 240}},
            "denied": [],
        },
    )
    v = ready.login("viewer")
    st = v.get("/api/status").json
    assert st["unit"]["name"] == "test-unit"
    assert st["revision"]["id"] == 1 and st["revision"]["state"] == "pending"
    assert st["links"][0] == {
        "name": "it0",
        "role": "it",
        "up": True,
        "mac": "02:a0:00:00:01:01",
        "addresses": ["10.10.0.1/24"],
    }
    assert st["conduits"][0]["packets"] == 3
    assert st["devices"][0]["state"] == "ok"
    assert st["alarms"]["counts"]["warning"] == 1
    assert st["health"]["state"] in ("booting", "fault", "pending-confirm", "degraded")
    m = v.get("/metrics")
    assert m.status_code == 200
    text = m.get_data(as_text=True)
    assert 'appliance_conduit_packets_total{conduit="scada-modbus"} 3.0' in text
    assert 'appliance_dropped_packets_total{direction="it_ot"} 4.0' in text
    assert 'appliance_tag_value{device="plc1",tag="counter"} 41.0' in text
    assert 'tag="name"} ' not in text.split("appliance_tag_quality_good")[0]  # not numeric
    assert 'appliance_device_up{device="plc1",protocol="modbus-tcp"} 1.0' in text
    assert 'appliance_alarms_active{severity="warning"} 1.0' in text
    assert "appliance_history_queued 5.0" in text


def test_status_links_carry_their_dhcp_lease(ready: Web) -> None:
    commit_base(ready)
    lease = {"bound": True, "address": "10.10.0.50/24", "server": "10.10.0.254"}
    lease |= {"router": "10.10.0.254", "expires_at": 2e9, "client_pid": 42}
    link = {"role": "it", "present": True, "oper": "UP", "addresses": []}
    LiveState(ready.paths.run_dir).write(
        "net",
        {"links": [{**link, "name": "it0", "dhcp": lease}, {**link, "name": "it1"}]},
    )
    links = ready.login("viewer").get("/api/status").json["links"]
    assert links[0]["dhcp"] == lease
    assert "dhcp" not in links[1]  # no DHCP there: no lease key at all


def test_metrics_access(ready: Web) -> None:
    c = ready.client()
    assert c.get("/metrics").status_code == 401
    secret = ready.token("viewer")
    assert c.get("/metrics", headers={"Authorization": f"Bearer {secret}"}).status_code == 200
    a, h = admin(ready)
    doc = base_doc()
    doc["web"] = {"metrics_allow": ["192.0.2.0/24"]}
    assert a.put("/api/config/draft", json=doc, headers=h).status_code == 200
    assert a.post("/api/config/commit", json={}, headers=h).status_code == 200
    assert c.get("/metrics", environ_base={"REMOTE_ADDR": "192.0.2.7"}).status_code == 200
    assert c.get("/metrics", environ_base={"REMOTE_ADDR": "192.0.3.7"}).status_code == 401


def test_devices_tags_alarms_from_live_state(ready: Web) -> None:
    LiveState(ready.paths.run_dir).write("field", FIELD_DOC)
    v = ready.login("viewer")
    devices = v.get("/api/devices").json
    assert devices[0]["name"] == "plc1" and devices[0]["state"] == "ok"
    tags = {t["name"]: t for t in v.get("/api/tags").json}
    assert tags["plc1.counter"]["value"] == 41
    assert [a["id"] for a in v.get("/api/alarms?active=1").json] == [3]


@pytest.fixture
def fake_field(ready: Web) -> Iterator[list[tuple[str, dict[str, Any]]]]:
    calls: list[tuple[str, dict[str, Any]]] = []

    def write(tag: str, value: Any, actor: str) -> dict[str, Any]:
        calls.append(("write", {"tag": tag, "value": value, "actor": actor}))
        if tag == "plc1.missing":
            raise NotFound(f"no tag {tag}")
        if tag == "plc1.counter":
            raise PermissionDenied(f"{tag} is not writable")
        return {"tag": tag, "value": value, "written_at": 1.0}

    def ack_alarm(id: int, actor: str) -> dict[str, Any]:
        calls.append(("ack_alarm", {"id": id, "actor": actor}))
        return {"id": id, "acked": True, "acked_by": actor}

    server = ControlServer(
        socket_path(ready.paths.run_dir, "field"), {"write": write, "ack_alarm": ack_alarm}
    )
    server.start()
    yield calls
    server.stop()


def test_tag_write_and_ack_go_to_the_field_role(ready: Web, fake_field: list[Any]) -> None:
    a, h = admin(ready)
    r = a.post("/api/tags/plc1.setpoint/write", json={"value": 12}, headers=h)
    assert r.status_code == 200 and r.json["value"] == 12
    assert fake_field[-1] == ("write", {"tag": "plc1.setpoint", "value": 12, "actor": "web:admin"})
    r = a.post("/api/tags/plc1.counter/write", json={"value": 1}, headers=h)
    assert r.status_code == 403 and "not writable" in error_of(r)
    r = a.post("/api/tags/plc1.missing/write", json={"value": 1}, headers=h)
    assert r.status_code == 404
    o = ready.login("operator")
    r = o.post("/api/alarms/3/ack", headers=ready.h(o))
    assert r.status_code == 200 and r.json["acked_by"] == "web:operator"
    rows = [(x.action, x.result) for x in Audit.select().order_by(Audit.id)]
    assert ("tag.write", "ok") in rows and ("tag.write", "failed") in rows
    assert ("alarm.ack", "ok") in rows


def test_field_role_down_is_503(ready: Web) -> None:
    a, h = admin(ready)
    r = a.post("/api/tags/plc1.x/write", json={"value": 1}, headers=h)
    assert r.status_code == 503 and "not running" in error_of(r)


def test_identify_calls_the_agent(ready: Web) -> None:
    got: list[dict[str, Any]] = []

    def identify(seconds: int = 15, actor: str = "cli") -> dict[str, Any]:
        got.append({"seconds": seconds, "actor": actor})
        return {"until": 100.0 + seconds}

    server = ControlServer(socket_path(ready.paths.run_dir, "agent"), {"identify": identify})
    server.start()
    try:
        o = ready.login("operator")
        r = o.post("/api/identify", json={"seconds": 30}, headers=ready.h(o))
        assert r.status_code == 200 and r.json == {"until": 130.0}
        assert got == [{"seconds": 30, "actor": "web:operator"}]
    finally:
        server.stop()


# -- events and audit paging -------------------------------------------------------------------


def test_events_paging_and_filters(ready: Web) -> None:
    store = ready.app.extensions["appliance"].store
    for i in range(7):
        store.event("test.thing" if i % 2 else "other.thing", f"n{i}", source="test")
    v = ready.login("viewer")
    page = v.get("/api/events?kind=test.&limit=2").json
    assert [e["message"] for e in page["items"]] == ["n5", "n3"]
    page2 = v.get(f"/api/events?kind=test.&limit=2&before_id={page['next_before_id']}").json
    assert [e["message"] for e in page2["items"]] == ["n1"] and page2["next_before_id"] is None
    o = ready.login("operator")
    audit = o.get("/api/audit?action=login&limit=1").json
    assert audit["items"][0]["actor"] == "operator" and audit["next_before_id"]


# -- OpenAPI -----------------------------------------------------------------------------------


def test_openapi_is_valid_3_1_and_complete(ready: Web) -> None:
    import jsonschema
    from schemathesis.specs.openapi.definitions import OPENAPI_31

    doc = ready.client().get("/api/openapi.json").json
    assert doc["openapi"].startswith("3.1")
    jsonschema.Draft202012Validator(OPENAPI_31).validate(doc)
    for _name, schema in doc["components"]["schemas"].items():
        jsonschema.Draft202012Validator.check_schema(schema)
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    from appliance.web.openapi import openapi_path

    from .test_web_authz import routes_of

    api_routes = {
        (m, openapi_path(r)[0])
        for m, r in routes_of(ready)
        if r.startswith("/api/") or r == "/metrics"
    }
    assert api_routes == documented
    for _p, ops in doc["paths"].items():
        for op in ops.values():
            assert op["x-role"] in ("public", "viewer", "operator", "admin")
            assert "500" in op["responses"]
    # request bodies are the validating models
    body = doc["paths"]["/api/users"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"] == {"$ref": "#/components/schemas/UserIn"}
    conduit = doc["paths"]["/api/conduits"]["post"]["requestBody"]["content"]
    assert conduit["application/json"]["schema"] == {"$ref": "#/components/schemas/Conduit"}
    assert "from" in doc["components"]["schemas"]["Conduit"]["properties"]
    assert json.dumps(doc) == json.dumps(build())


def test_sql_console_uses_field_api(ready: Web, monkeypatch: pytest.MonkeyPatch) -> None:
    import appliance.field.api as fapi

    seen: dict[str, Any] = {}

    def fake(paths: Any, sql: str, max_rows: int = 10000, timeout_s: float = 5) -> dict:
        seen.update(sql=sql, max_rows=max_rows)
        return {"columns": ["n"], "rows": [[1]], "truncated": False, "elapsed_ms": 0.1}

    monkeypatch.setattr(fapi, "sql_query", fake)
    v = ready.login("viewer")
    r = v.post("/api/sql", json={"query": "select 1 as n", "max_rows": 5}, headers=ready.h(v))
    assert r.status_code == 200 and r.json["rows"] == [[1]]
    assert seen == {"sql": "select 1 as n", "max_rows": 5}


def test_huge_ids_are_not_found(ready: Web) -> None:
    a, h = admin(ready)
    assert a.get(f"/api/revisions/{2**70}").status_code == 404
    assert a.get(f"/api/config/export?revision={'9' * 30}").status_code == 422
    r = a.post("/api/config/rollback", json={"revision": 2**70}, headers=h)
    assert r.status_code == 422 and r.json["field"] == "revision"


# -- users ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "status"),
    [("Bad Name!", 422), ("-dash-first", 422), ("admin", 409)],  # admin exists already
)
def test_user_create_errors_name_the_body_key(ready: Web, name: str, status: int) -> None:
    # the body's key is `name`; accounts says `username` (the setup form's key)
    c, h = admin(ready)
    r = c.post(
        "/api/users",
        json={"name": name, "role": "viewer", "password": "correct horse battery"},
        headers=h,
    )
    assert r.status_code == status, r.json
    assert r.json["field"] == "name", r.json
