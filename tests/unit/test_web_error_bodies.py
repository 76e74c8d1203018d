"""The web API's error bodies quote at most a little of what they got (keys and values)."""

from __future__ import annotations

from .test_web_api import admin, base_doc
from .webkit import Web

BIG = 100_000
BODY_MAX = 4000  # bytes of a refusal, whatever the request carried


def test_a_huge_unknown_key_is_not_echoed(ready: Web) -> None:
    c, h = admin(ready)
    for path, method in (("/api/session", "POST"), ("/api/tokens", "POST"), ("/api/sql", "POST")):
        r = c.open(path, method=method, json={"k" * BIG: 1}, headers=h)
        assert r.status_code == 422, (path, r.status_code)
        assert len(r.data) < BODY_MAX, (path, r.data[:300])
        assert any(e["message"].startswith("unknown key") for e in r.json["errors"]), r.json[
            "errors"
        ]


def test_a_huge_value_in_a_configuration_is_not_echoed(ready: Web) -> None:
    c, h = admin(ready)
    doc = base_doc()
    doc["interfaces"][0]["name"] = "x" * BIG
    r = c.put("/api/config/draft", json=doc, headers=h)
    assert r.status_code == 422 and len(r.data) < BODY_MAX, r.data[:300]
    assert r.json["field"] == "interfaces[0].name"
    assert "is not a valid interface name" in r.json["errors"][0]["message"]
    doc = base_doc()
    doc["unit"]["u" * BIG] = 1
    r = c.put("/api/config/draft", json=doc, headers=h)
    assert r.status_code == 422 and len(r.data) < BODY_MAX, r.data[:300]
    assert r.json["field"].startswith("unit.uuuu")


def test_a_duplicate_key_in_a_body_is_refused(ready: Web) -> None:
    c = ready.client()
    data = b'{"username": "admin", "password": "x", "username": "viewer"}'
    r = c.post("/api/session", data=data, content_type="application/json")
    assert r.status_code == 400 and r.json["field"] == "username"  # named where it is
    assert "key 'username' appears twice" in r.json["error"]
