"""The fleet receiver on a real PostgreSQL: what SQLite accepts and PostgreSQL does not.

PostgreSQL's BIGINT stops at 2**63-1, its text refuses a NUL, and psycopg2 refuses to send
a lone surrogate: each such heartbeat must be a 400 naming the field before anything is
stored (before the receiver checked, they were 503 "database not available" or 500).

Runs on the suite's throw-away cluster (tests/fleet/conftest.py: `pg_url`, a fresh
database per test; skipped where PostgreSQL is missing, a failure in CI). The rest of the
fleet suite runs on PostgreSQL too, through `fleet_url`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from argon2 import PasswordHasher
from flask.testing import FlaskClient

from appliance.fleet import store
from appliance.fleet.app import create_app

INT64_MAX = 2**63 - 1
PASSWORD = "correct horse battery"
T0 = 1_790_000_000.0


def event(i: int) -> dict[str, Any]:
    return {"id": i, "at": T0 + i, "kind": "net.applied", "message": f"event {i}"}


def heartbeat(
    seq: int, *, events: list[dict[str, Any]], events_cursor: int | None = None
) -> dict[str, Any]:
    """What the receiver itself reads of a heartbeat (its minimal schema: the agent's full
    contract is checked by the unit tests; what matters here is what reaches the database)."""
    return {
        "schema": "appliance-heartbeat/1",
        "id": f"hb-{seq}",
        "unit": {"id": "7d0e2f9a-4c1b-4a8e-9f3d-2b6c5e8a1f04", "name": "press-line-3"},
        "seq": seq,
        "sent_at": T0 + 60 * seq,
        "health": {"state": "ok", "reasons": []},
        "revision": {"id": 3, "sha256": "ab" * 32, "state": "confirmed"},
        "events": events,
        "events_cursor": max(e["id"] for e in events) if events_cursor is None else events_cursor,
    }


@pytest.fixture
def client(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[FlaskClient]:
    monkeypatch.setattr(store, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024))
    app = create_app(pg_url, heartbeat_schema=None, clock=lambda: T0 + 10_000)
    app.config["TESTING"] = True
    with store.fleet_db.connection_context():
        store.set_password(PASSWORD)
    yield app.test_client()


@pytest.fixture
def token(client: FlaskClient) -> str:
    with store.fleet_db.connection_context():
        return store.add_unit("press-3", now=T0)


def count(model: Any) -> int:
    with store.fleet_db.connection_context():
        return model.select().count()


def test_what_postgresql_cannot_hold_is_a_400_and_nothing_is_stored(
    client: FlaskClient, token: str
) -> None:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    good = json.dumps(heartbeat(1, events=[event(1)]))
    cases = [
        (good.replace('"events_cursor": 1', f'"events_cursor": {10**30}'), "events_cursor"),
        (good.replace('"events_cursor": 1', '"events_cursor": 1e30'), "events_cursor"),
        (good.replace('"events_cursor": 1', f'"events_cursor": {2**63}'), "events_cursor"),
        (good.replace('"id": 3,', f'"id": {10**30},'), "revision.id"),
        (good.replace('"id": 1,', f'"id": {2**63},'), "events[0].id"),
        (good.replace('"press-line-3"', '"press\\u0000line"'), "unit.name"),
        (good.replace('"event 1"', '"\\ud800"'), "events[0].message"),
        (b"[" * 100_000 + b"]" * 100_000, "body"),
    ]
    for data, field in cases:
        r = client.post("/api/v1/heartbeat", data=data, headers=headers)
        assert r.status_code == 400, (field, r.status_code, r.data[:200])
        assert r.json["field"] == field, r.json
    assert count(store.Heartbeat) == 0 and count(store.Event) == 0


def test_the_largest_bigint_is_stored(client: FlaskClient, token: str) -> None:
    body = heartbeat(1, events=[event(1)], events_cursor=INT64_MAX)
    body["revision"]["id"] = INT64_MAX
    r = client.post("/api/v1/heartbeat", json=body, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.json
    with store.fleet_db.connection_context():
        unit = store.get_unit("press-3")
    assert (unit.revision_id, unit.events_cursor) == (INT64_MAX, INT64_MAX)


def test_a_nul_in_a_unit_name_is_404_and_sessions_end_at_logout(
    client: FlaskClient, token: str
) -> None:
    login = client.post("/api/v1/session", json={"password": PASSWORD})
    assert login.status_code == 200
    r = client.get("/api/v1/units/a%00b")
    assert r.status_code == 404 and r.json["field"] == "unit"
    cookie = client.get_cookie("fleet_session")
    assert cookie is not None
    headers = {"X-CSRF-Token": login.json["csrf"]}
    assert client.delete("/api/v1/session", headers=headers).status_code == 200
    client.set_cookie("fleet_session", cookie.value)
    assert client.get("/api/v1/units").status_code == 401
