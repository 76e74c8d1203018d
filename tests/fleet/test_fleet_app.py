"""The fleet receiver through Flask's test client: units' heartbeats and the operator's side."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher
from flask import Flask
from flask.testing import FlaskClient
from testkit import Clock
from unit.test_redirects import HOSTILE

from appliance.errors import ApplianceError
from appliance.fleet import store
from appliance.fleet.app import LOGIN_MAX_FAILURES, SESSION_HOURS, create_app
from appliance.fleet.validate import UNIT_NAME_RE

from .test_fleet_validate import T0, UNIT_UUID, event, heartbeat

PASSWORD = "correct horse battery"
HB = "/api/v1/heartbeat"


@pytest.fixture(autouse=True)
def cheap_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    """argon2id with small costs: the hash format and checks are the same, ten times faster."""
    monkeypatch.setattr(store, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024))


@pytest.fixture
def clock() -> Clock:
    return Clock(T0 + 10_000)


def make_app(url: str, clock: Clock, **kw: Any) -> Flask:
    app = create_app(url, clock=clock, **kw)
    app.config["TESTING"] = True
    return app


@pytest.fixture
def app(fleet_url: str, clock: Clock) -> Iterator[Flask]:
    app = make_app(fleet_url, clock)
    with store.fleet_db.connection_context():
        store.set_password(PASSWORD)
    yield app


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def token(app: Flask) -> str:
    with store.fleet_db.connection_context():
        return store.add_unit("press-3", now=T0)


def post_hb(client: FlaskClient, token: str, body: Any, key: str | None = None) -> Any:
    headers = {"Authorization": f"Bearer {token}"}
    if key is not None:
        headers["Idempotency-Key"] = key
    return client.post(HB, json=body, headers=headers)


def unit(name: str = "press-3") -> store.Unit:
    with store.fleet_db.connection_context():
        return store.get_unit(name)


def count(model: Any) -> int:
    with store.fleet_db.connection_context():
        return model.select().count()


def csrf_of(html: str) -> str:
    m = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert m, "no CSRF token in the page"
    return m.group(1)


def login(client: FlaskClient, password: str = PASSWORD) -> Any:
    page = client.get("/login")
    return client.post("/login", data={"password": password, "csrf_token": csrf_of(page.text)})


# -- the unit side ---------------------------------------------------------------------


def test_a_heartbeat_without_a_valid_token_is_refused(client: FlaskClient, token: str) -> None:
    for headers in ({}, {"Authorization": "Basic eDp5"}, {"Authorization": "Bearer " + "x" * 43}):
        r = client.post(HB, json=heartbeat(), headers=headers)
        assert r.status_code == 401
        assert r.json["field"] == "Authorization"
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
    assert count(store.Heartbeat) == 0
    assert unit().last_seen is None


def test_a_heartbeat_is_stored_and_answered(client: FlaskClient, token: str, clock: Clock) -> None:
    r = post_hb(client, token, heartbeat(1, state="degraded", events=[event(1), event(2)]), "k1")
    assert r.status_code == 200, r.json
    assert r.json == {"ack_cursor": 2, "interval": None, "identify": False}
    u = unit()
    assert (u.health, u.last_seq, u.revision_id, u.firmware) == ("degraded", 1, 3, "0.1.0")
    assert u.last_seen == clock.t
    assert u.unit_id == UNIT_UUID and u.site == "Plant 2"
    assert count(store.Heartbeat) == 1 and count(store.Event) == 2


def test_a_bad_body_gets_400_naming_the_field_and_nothing_is_stored(
    client: FlaskClient, token: str
) -> None:
    body = heartbeat()
    body["health"] = {"state": "exploded", "reasons": []}
    r = post_hb(client, token, body)
    assert r.status_code == 400
    assert r.json["field"] == "health.state"
    assert r.json["error"].startswith("health.state: ")
    r = client.post(
        HB,
        data=b"{oops",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    assert r.status_code == 400 and r.json["field"] == "body"
    r = post_hb(client, token, heartbeat(), key="two words")
    assert r.status_code == 400 and r.json["field"] == "Idempotency-Key"
    assert count(store.Heartbeat) == 0
    assert unit().heartbeat_count == 0


def test_a_repeat_is_not_stored_twice(client: FlaskClient, token: str) -> None:
    body = heartbeat(1, events=[event(1), event(2), event(3)])
    first = post_hb(client, token, body, body["id"])  # the agent's key is the body's id
    again = post_hb(client, token, body, body["id"])
    assert first.json == {"ack_cursor": 3, "interval": None, "identify": False}
    assert again.status_code == 200
    assert again.json == {"ack_cursor": 3, "interval": None, "identify": False, "duplicate": True}
    # without the header the body's id is the key
    assert post_hb(client, token, body).json["duplicate"] is True
    # another key is another heartbeat, even with the same body
    assert "duplicate" not in post_hb(client, token, body, "other-key").json
    assert count(store.Heartbeat) == 2 and count(store.Event) == 3
    assert unit().heartbeat_count == 2


def test_late_heartbeats_are_stored_and_the_newest_sent_at_wins(
    client: FlaskClient, token: str, clock: Clock
) -> None:
    post_hb(client, token, heartbeat(3, state="fault", revision=5))
    clock.t += 30
    # the outbox delivers two older ones late, out of order
    post_hb(client, token, heartbeat(1, state="ok", revision=4))
    post_hb(client, token, heartbeat(2, state="degraded", revision=4))
    u = unit()
    assert (u.health, u.last_seq, u.revision_id) == ("fault", 3, 5)
    assert u.last_sent_at == T0 + 180
    assert u.last_seen == clock.t  # heard from it just now, whatever it sent
    assert u.heartbeat_count == 3
    with store.fleet_db.connection_context():
        assert [h.seq for h in store.heartbeats(u)] == [3, 2, 1]
    clock.t += 30
    post_hb(client, token, heartbeat(4, state="ok", revision=5))
    u = unit()
    assert (u.health, u.last_seq) == ("ok", 4)
    assert u.last_gap == 60


def test_the_ack_cursor_is_the_newest_event_stored_not_beyond_the_heartbeat(
    client: FlaskClient, token: str
) -> None:
    assert post_hb(client, token, heartbeat(1)).json["ack_cursor"] is None
    r = post_hb(client, token, heartbeat(2, events=[event(i) for i in range(1, 6)]))
    assert r.json["ack_cursor"] == 5
    # an older heartbeat arriving late acknowledges only what it carried
    late = post_hb(client, token, heartbeat(1, sent_at=T0 - 60, events=[event(1), event(2)]))
    assert late.json["ack_cursor"] == 2
    # the next one has no new events: the cursor stays
    assert post_hb(client, token, heartbeat(3, events_cursor=5)).json["ack_cursor"] == 5
    assert count(store.Event) == 5


def test_event_ids_that_start_again_after_a_factory_reset_are_kept(
    client: FlaskClient, token: str
) -> None:
    post_hb(client, token, heartbeat(50, events=[event(i) for i in range(1, 11)]))
    # a dropped heartbeat's events come again: the cursor goes back, the numbering does not
    r = post_hb(client, token, heartbeat(51, events=[event(9), event(10)]))
    assert r.json["ack_cursor"] == 10 and count(store.Event) == 10
    # the unit's history was wiped: heartbeat numbers and event ids begin at 1 again
    fresh = [event(1, "agent.factory_reset", at=T0 + 5000), event(2, at=T0 + 5001)]
    r = post_hb(client, token, heartbeat(1, sent_at=T0 + 6000, events=fresh))
    assert r.json["ack_cursor"] == 2
    assert count(store.Event) == 12
    with store.fleet_db.connection_context():
        kinds = [e.kind for e in store.events(unit(), 3)]
    assert kinds[1] == "agent.factory_reset"
    # and its next heartbeats stay in the new numbering
    r = post_hb(client, token, heartbeat(2, sent_at=T0 + 6060, events=[event(3)]))
    assert r.json["ack_cursor"] == 3 and count(store.Event) == 13


def test_identify_is_answered_once(client: FlaskClient, token: str) -> None:
    login(client)
    page = client.get("/units/press-3")
    r = client.post("/units/press-3/identify", data={"csrf_token": csrf_of(page.text)})
    assert r.status_code == 302
    assert unit().identify_request is True
    assert post_hb(client, token, heartbeat(1)).json["identify"] is True
    assert post_hb(client, token, heartbeat(2)).json["identify"] is False
    u = unit()
    assert u.identify_request is False and u.identify_delivered_at is not None


def test_an_interval_request_is_answered_until_withdrawn(client: FlaskClient, token: str) -> None:
    login(client)
    csrf = csrf_of(client.get("/units/press-3").text)
    r = client.post("/units/press-3/interval", data={"csrf_token": csrf, "interval": "30"})
    assert r.status_code == 302
    assert post_hb(client, token, heartbeat(1)).json["interval"] == 30
    assert post_hb(client, token, heartbeat(2)).json["interval"] == 30
    bad = client.post("/units/press-3/interval", data={"csrf_token": csrf, "interval": "2"})
    assert bad.status_code == 400
    assert 'id="interval"' in bad.text and 'class="invalid"' in bad.text
    assert "interval: must be between 5 and 86400 seconds" in bad.text
    assert unit().interval_request == 30
    client.post("/units/press-3/interval", data={"csrf_token": csrf, "interval": ""})
    assert post_hb(client, token, heartbeat(3)).json["interval"] is None


def test_a_huge_body_is_refused_with_json(client: FlaskClient, token: str) -> None:
    r = client.post(
        HB,
        data=b"x" * (5 * 1024 * 1024),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    assert r.status_code == 413
    assert r.json["field"] == "body"


# -- the operator side ------------------------------------------------------------------


def test_pages_need_a_login(client: FlaskClient, token: str) -> None:
    r = client.get("/")
    assert r.status_code == 302 and r.headers["Location"].startswith("/login")
    assert client.get("/units/press-3").status_code == 302
    assert client.get("/api/v1/units").status_code == 401
    assert client.post("/units/press-3/identify").status_code == 302
    assert unit().identify_request is False


def test_login_needs_the_csrf_token_and_the_password(client: FlaskClient, token: str) -> None:
    r = client.post("/login", data={"password": PASSWORD})
    assert r.status_code == 403 and "CSRF" in r.text
    r = login(client, "wrong password!")
    assert r.status_code == 401 and "wrong operator name or password" in r.text
    assert 'class="invalid"' in r.text
    r = login(client)
    assert r.status_code == 302 and r.headers["Location"] == "/"
    cookie = r.headers["Set-Cookie"]
    for attr in ("Secure", "HttpOnly", "SameSite=Strict"):
        assert attr in cookie, cookie
    assert client.get("/").status_code == 200


def test_units_list_shows_last_seen_health_revision_firmware(
    client: FlaskClient, token: str, clock: Clock
) -> None:
    post_hb(client, token, heartbeat(1, state="degraded", revision=7))
    with store.fleet_db.connection_context():
        store.add_unit("silent-unit", now=T0)
    clock.t += 42
    login(client)
    html = client.get("/").text
    row = html[html.index("press-3") :]
    assert "42 s ago" in row
    assert "degraded" in row and "ot0 is down" in row
    assert "r7 confirmed abababababab" in row
    assert "0.1.0" in row
    assert "no heartbeat yet" in html  # silent-unit
    assert "<script" not in html and "style=" not in html  # CSP: stylesheet only


def test_a_unit_that_stops_reporting_is_marked_overdue(
    client: FlaskClient, token: str, clock: Clock
) -> None:
    post_hb(client, token, heartbeat(1))
    post_hb(client, token, heartbeat(2))  # 60 s apart
    login(client)
    clock.t += 120
    assert "overdue" not in client.get("/").text
    clock.t += 120
    assert "overdue" in client.get("/").text


def test_unit_page_shows_history_events_and_latest_report(client: FlaskClient, token: str) -> None:
    post_hb(client, token, heartbeat(1, state="ok", events=[event(1, "net.applied")]))
    post_hb(client, token, heartbeat(2, state="fault", events=[event(2, "field.device_down")]))
    login(client)
    html = client.get("/units/press-3").text
    assert html.count('class="tick ') == 2
    assert html.index('class="tick ok"') < html.index('class="tick bad"')  # oldest first
    assert "field.device_down" in html and "net.applied" in html
    report = html[html.index("Latest report") : html.index("Raw heartbeat")]
    assert "ot0" in report and "it0" in report  # links
    assert "<dt>down</dt><dd>0</dd>" in report  # devices summary
    assert "Active alarms" in report
    assert "<script" not in html and "style=" not in html
    assert client.get("/units/nope").status_code == 404


def test_operator_forms_refuse_a_missing_or_wrong_csrf_token(
    client: FlaskClient, token: str
) -> None:
    login(client)
    for data in ({}, {"csrf_token": "forged"}):
        r = client.post("/units/press-3/identify", data=data)
        assert r.status_code == 403
    assert unit().identify_request is False


def test_a_new_password_ends_old_sessions(client: FlaskClient, token: str) -> None:
    login(client)
    assert client.get("/").status_code == 200
    with store.fleet_db.connection_context():
        store.set_password("another long password")
    assert client.get("/").status_code == 302


def test_logins_are_throttled(client: FlaskClient, token: str) -> None:
    for _ in range(LOGIN_MAX_FAILURES):
        assert login(client, "wrong password!").status_code == 401
    r = login(client)  # even the right password waits
    assert r.status_code == 429 and "too many failed logins" in r.text


def test_a_burst_of_concurrent_wrong_logins_gets_no_more_guesses(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The outside review: 40 wrong logins at once from one address had 26 passwords
    checked (the count was read before the hash and written after it), not 10. Each
    attempt is counted before its hash now, so a burst gets the same guesses as a row."""
    slow_verify = store.verify_password

    def verify(password: str, name: str = "admin") -> Any:
        time.sleep(0.05)  # argon2 at its real cost: every attempt is in flight at once
        return slow_verify(password, name)

    monkeypatch.setattr(store, "verify_password", verify)
    results: list[int] = []

    def attempt() -> None:
        c = app.test_client()
        csrf = c.get("/api/v1/session").json["csrf"]
        r = c.post(
            "/api/v1/session", json={"password": "wrong guess!"}, headers={"X-CSRF-Token": csrf}
        )
        results.append(r.status_code)

    threads = [threading.Thread(target=attempt) for _ in range(3 * LOGIN_MAX_FAILURES)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(set(results)) == [401, 429]
    assert results.count(401) <= LOGIN_MAX_FAILURES
    # a refused attempt does not count: the window is the same as after ten in a row
    with store.fleet_db.connection_context():
        assert store.LoginFailure.select().count() == results.count(401)


def test_a_right_password_after_failures_is_not_counted(client: FlaskClient) -> None:
    for _ in range(LOGIN_MAX_FAILURES - 1):
        assert login(client, "wrong password!").status_code == 401
    assert login(client).status_code == 302
    assert count(store.LoginFailure) == 0


def test_failed_logins_older_than_a_day_are_pruned(client: FlaskClient, clock: Clock) -> None:
    for _ in range(3):
        assert login(client, "wrong password!").status_code == 401
    clock.advance(86400 + 1)
    assert login(client, "wrong password!").status_code == 401  # prunes the old ones
    assert count(store.LoginFailure) == 1


def test_without_a_password_nobody_logs_in(fleet_url: str, clock: Clock) -> None:
    client = make_app(fleet_url, clock).test_client()
    page = client.get("/login")
    assert "No operator password is set" in page.text
    r = client.post("/login", data={"password": "", "csrf_token": csrf_of(page.text)})
    assert r.status_code == 401
    assert client.get("/").status_code == 302


def test_open_mode_needs_no_login_but_forms_keep_csrf(fleet_url: str, clock: Clock) -> None:
    app = make_app(fleet_url, clock, open_access=True)
    with store.fleet_db.connection_context():
        store.add_unit("lab-unit", now=T0)
    client = app.test_client()
    page = client.get("/")
    assert page.status_code == 200 and "lab-unit" in page.text and "open access" in page.text
    assert client.post("/units/lab-unit/identify", data={}).status_code == 403
    csrf = csrf_of(client.get("/units/lab-unit").text)
    r = client.post("/units/lab-unit/identify", data={"csrf_token": csrf})
    assert r.status_code == 302
    assert unit("lab-unit").identify_request is True


# -- the JSON twins ---------------------------------------------------------------------------


def test_json_api_login_units_and_requests(client: FlaskClient, token: str) -> None:
    post_hb(client, token, heartbeat(1, state="degraded", events=[event(1)]))
    r = client.post("/api/v1/session", json={"password": "nope nope nope"})
    assert r.status_code == 401 and r.json["field"] == "password"
    r = client.post("/api/v1/session", json={"password": PASSWORD})
    assert r.status_code == 200
    csrf = r.json["csrf"]
    units = client.get("/api/v1/units").json
    assert [u["name"] for u in units] == ["press-3"]
    assert units[0]["health"]["state"] == "degraded"
    assert units[0]["revision"]["id"] == 3
    detail = client.get("/api/v1/units/press-3").json
    assert detail["history"][0]["seq"] == 1 and detail["events"][0]["id"] == 1
    # state changes need the CSRF header and a JSON body
    r = client.post("/api/v1/units/press-3/interval", json={"interval": 45})
    assert r.status_code == 403 and r.json["field"] == "csrf"
    r = client.post(
        "/api/v1/units/press-3/interval", data="interval=45", headers={"X-CSRF-Token": csrf}
    )
    assert r.status_code == 400 and r.json["field"] == "Content-Type"
    r = client.post(
        "/api/v1/units/press-3/interval", json={"interval": 1}, headers={"X-CSRF-Token": csrf}
    )
    assert r.status_code == 400 and r.json["field"] == "interval"
    r = client.post(
        "/api/v1/units/press-3/interval", json={"interval": 45}, headers={"X-CSRF-Token": csrf}
    )
    assert r.status_code == 200 and r.json["requests"]["interval"] == 45
    r = client.post("/api/v1/units/press-3/identify", json={}, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 200 and r.json["requests"]["identify"] is True
    assert post_hb(client, token, heartbeat(2, events_cursor=1)).json == {
        "ack_cursor": 1,
        "interval": 45,
        "identify": True,
    }
    r = client.get("/api/v1/units/nope")
    assert r.status_code == 404 and r.json["field"] == "unit"
    assert client.delete("/api/v1/session", headers={"X-CSRF-Token": csrf}).status_code == 200
    assert client.get("/api/v1/units").status_code == 401


def test_heartbeats_older_than_the_retention_are_pruned(fleet_url: str, clock: Clock) -> None:
    app = make_app(fleet_url, clock, keep_days=1)
    with store.fleet_db.connection_context():
        tok = store.add_unit("press-3", now=T0)
    client = app.test_client()
    post_hb(client, tok, heartbeat(1, events=[event(1), event(2)]))
    clock.t += 2 * 86400
    post_hb(client, tok, heartbeat(2, events_cursor=2))
    # the old heartbeat is gone; the newest event stays (it carries the cursor)
    assert count(store.Heartbeat) == 1
    with store.fleet_db.connection_context():
        assert [e.event_id for e in store.Event.select()] == [2]
    assert post_hb(client, tok, heartbeat(3, events_cursor=2)).json["ack_cursor"] == 2


def test_each_request_closes_its_database_connection(client: FlaskClient, token: str) -> None:
    post_hb(client, token, heartbeat(1))
    client.get("/login")
    assert store.fleet_db.is_closed()


def test_a_broken_heartbeat_schema_is_one_clear_error(
    fleet_url: str, tmp_path: Path, clock: Clock
) -> None:
    bad = tmp_path / "schema.json"
    bad.write_text('{"type": 12}')
    with pytest.raises(ApplianceError, match="not a valid JSON Schema"):
        make_app(fleet_url, clock, heartbeat_schema=bad)
    # without the agent's schema the receiver still checks what it stores
    app = make_app(fleet_url, clock, heartbeat_schema=tmp_path / "missing.json")
    assert app.config["FLEET_SCHEMA"] == "minimal"


# -- where a login sends its user, and how long a session lasts ----------------------------


@pytest.mark.parametrize("target", HOSTILE, ids=lambda t: repr(t)[:30])
def test_login_only_sends_back_to_a_local_page(client: FlaskClient, target: str | None) -> None:
    query = {} if target is None else {"next": target}
    page = client.get("/login", query_string=query)
    assert page.status_code == 200
    assert 'name="next" value="/"' in page.text
    form = {"password": PASSWORD, "csrf_token": csrf_of(page.text)}
    if target is not None:
        form["next"] = target
    r = client.post("/login", data=form)
    assert r.status_code == 302 and r.headers["Location"] == "/", r.headers.get("Location")
    r = client.get("/login", query_string=query)  # logged in already: straight on
    assert r.status_code == 302 and r.headers["Location"] == "/"


def test_login_goes_back_to_the_page_that_asked(client: FlaskClient, token: str) -> None:
    r = client.get("/units/press-3?limit=5")
    assert r.status_code == 302
    page = client.get(r.headers["Location"])
    assert 'name="next" value="/units/press-3"' in page.text
    r = client.post(
        "/login",
        data={"password": PASSWORD, "csrf_token": csrf_of(page.text), "next": "/units/press-3"},
    )
    assert r.headers["Location"] == "/units/press-3"


def _cookie(client: FlaskClient) -> str:
    cookie = client.get_cookie("fleet_session")
    assert cookie is not None
    return cookie.value


def test_logout_ends_the_session_for_good(app: Flask, client: FlaskClient, token: str) -> None:
    login(client)
    stolen = _cookie(client)  # a copy of the cookie, as a proxy log or a shared PC keeps it
    csrf = csrf_of(client.get("/").text)
    r = client.post("/logout", data={"csrf_token": csrf})
    assert r.status_code == 302
    other = app.test_client()
    other.set_cookie("fleet_session", stolen)
    assert other.get("/").status_code == 302
    assert other.get("/api/v1/units").status_code == 401


def test_api_logout_ends_the_session_for_good(app: Flask, client: FlaskClient) -> None:
    r = client.post("/api/v1/session", json={"password": PASSWORD})
    assert r.status_code == 200
    stolen = _cookie(client)
    headers = {"X-CSRF-Token": r.json["csrf"]}
    assert client.delete("/api/v1/session", headers=headers).status_code == 200
    other = app.test_client()
    other.set_cookie("fleet_session", stolen)
    assert other.get("/api/v1/units").status_code == 401
    assert other.get("/api/v1/session").json["authenticated"] is False


def test_a_session_expires_on_the_server_and_is_pruned(
    app: Flask, client: FlaskClient, clock: Clock
) -> None:
    login(client)
    assert client.get("/").status_code == 200
    clock.t += SESSION_HOURS * 3600 - 60
    assert client.get("/").status_code == 200
    clock.t += 120
    assert client.get("/").status_code == 302  # the cookie is still signed; the server says no
    assert count(store.OperatorSession) == 1
    login(app.test_client())  # a new login prunes the expired one
    assert count(store.OperatorSession) == 1
    with store.fleet_db.connection_context():
        assert store.OperatorSession.select().first().expires_at > clock.t


def test_a_forged_or_tampered_session_id_is_refused(app: Flask, client: FlaskClient) -> None:
    login(client)
    with client.session_transaction() as sess:
        sess["sid"] = "x" * 43
    assert client.get("/").status_code == 302


# -- hostile input everywhere: bodies, numbers, strings, query strings ------------------------


def test_hostile_heartbeats_are_400_naming_the_field_and_store_nothing(
    client: FlaskClient, token: str
) -> None:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    good = json.dumps(heartbeat(1, events=[event(1)]))
    cases = [
        (b"[" * 100_000 + b"]" * 100_000, "body"),
        (good.replace('"events_cursor": 1', '"events_cursor": ' + "1" + "0" * 30), "events_cursor"),
        (good.replace('"events_cursor": 1', '"events_cursor": 1e30'), "events_cursor"),
        (good.replace('"id": 3,', '"id": 1000000000000000000000000000000,'), "revision.id"),
        (good.replace('"sent_at": ', '"sent_at": NaN, "x": '), "sent_at"),
        (good.replace('"uptime_s": ', '"uptime_s": Infinity, "x": '), "uptime_s"),
        (good.replace('"press-line-3"', '"press\\u0000line"'), "unit.name"),
        (good.replace('"event 1"', '"\\ud800"'), "events[0].message"),
    ]
    for data, field in cases:
        r = client.post(HB, data=data, headers=headers)
        assert r.status_code == 400, (field, r.status_code, r.data[:200])
        assert r.json["field"] == field, r.json
    assert count(store.Heartbeat) == 0 and count(store.Event) == 0
    assert unit().last_seen is None


def test_operator_json_bodies_are_bounded_too(client: FlaskClient, token: str) -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    r = client.post("/api/v1/session", data=deep, content_type="application/json")
    assert r.status_code == 400 and r.json["field"] == "body"
    r = client.post("/api/v1/session", data=b'{"password": NaN}', content_type="application/json")
    assert r.status_code == 400 and r.json["field"] == "password"
    r = client.post(
        "/api/v1/session", data=b'{"password": "\\ud800"}', content_type="application/json"
    )
    assert r.status_code == 400 and r.json["field"] == "password"
    r = client.post("/api/v1/session", json={"password": PASSWORD})
    csrf = r.json["csrf"]
    url = "/api/v1/units/press-3/interval"
    for data, field in ((deep, "body"), (b'{"interval": NaN}', "interval")):
        r = client.post(
            url, data=data, content_type="application/json", headers={"X-CSRF-Token": csrf}
        )
        assert r.status_code == 400 and r.json["field"] == field, r.json
    assert unit().interval_request is None


def test_a_limit_that_is_not_a_number_is_400(client: FlaskClient, token: str) -> None:
    login(client)
    for limit in ("abc", "1e3", "5.5", "nan"):
        r = client.get(f"/api/v1/units/press-3?limit={limit}")
        assert r.status_code == 400 and r.json["field"] == "limit", limit
        assert client.get(f"/units/press-3?limit={limit}").status_code == 400
    for limit in ("1", str(10**30), "-5"):  # numbers are clamped to 1..2000
        assert client.get(f"/api/v1/units/press-3?limit={limit}").status_code == 200
        assert client.get(f"/units/press-3?limit={limit}").status_code == 200


def test_a_name_no_unit_can_have_never_reaches_the_database(
    client: FlaskClient, token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # PostgreSQL refuses a NUL in a query parameter (psycopg2 raises ValueError: a 500)
    login(client)
    real = store.Unit.get_or_none

    def guarded(expr: Any, *args: Any, **kw: Any) -> Any:
        name = getattr(expr, "rhs", None)
        assert not isinstance(name, str) or UNIT_NAME_RE.match(name), name
        return real(expr, *args, **kw)

    monkeypatch.setattr(store.Unit, "get_or_none", guarded)
    for name in ("a%00b", "x" * 65):
        r = client.get(f"/api/v1/units/{name}")
        assert r.status_code == 404 and r.json["field"] == "unit"
        assert client.get(f"/units/{name}").status_code == 404


def test_api_logout_needs_the_csrf_token(client: FlaskClient) -> None:
    # a page elsewhere must not log the operator out (POST /logout checks the token too)
    csrf = client.post("/api/v1/session", json={"password": PASSWORD}).json["csrf"]
    for headers in ({}, {"X-CSRF-Token": "x" * 43}):
        r = client.delete("/api/v1/session", headers=headers)
        assert r.status_code == 403 and r.json["field"] == "csrf"
        assert client.get("/api/v1/units").status_code == 200
    r = client.delete("/api/v1/session", headers={"X-CSRF-Token": csrf})
    assert r.status_code == 200 and r.json["authenticated"] is False
    assert client.get("/api/v1/units").status_code == 401
    # without a session there is nothing to end, and nothing to protect
    assert client.delete("/api/v1/session").status_code == 200


def test_a_heartbeat_with_a_key_twice_is_refused(client: FlaskClient, token: str) -> None:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    data = json.dumps(heartbeat(1))[:-1] + ', "seq": 99999}'
    r = client.post(HB, data=data, headers=headers)
    assert r.status_code == 400
    assert r.json["field"] == "seq" and r.json["error"] == "seq: key 'seq' appears twice"
    assert count(store.Heartbeat) == 0 and unit().last_seq is None
    data = b'{"password": "wrong", "password": "%s"}' % PASSWORD.encode()
    r = client.post("/api/v1/session", data=data, content_type="application/json")
    assert r.status_code == 400 and r.json["field"] == "password"


def test_a_refused_heartbeat_is_not_echoed_in_the_answer_or_the_log(
    client: FlaskClient, token: str, caplog: pytest.LogCaptureFixture
) -> None:
    many = heartbeat(1, events=[{**event(i), "message": "m" * 1000} for i in range(1, 601)])
    huge_state = heartbeat(1, state="x" * 100_000)
    huge_key = heartbeat(1)
    huge_key["tags"]["\x00" + "k" * 100_000] = 1
    for body, field in ((many, "events"), (huge_state, "health.state"), (huge_key, "tags")):
        caplog.clear()
        with caplog.at_level("WARNING", logger="appliance.fleet"):
            r = post_hb(client, token, body)
        assert r.status_code == 400 and r.json["field"].startswith(field), r.json["field"][:200]
        assert len(r.data) < 4000, r.data[:300]
        refused = [rec.getMessage() for rec in caplog.records if "refused" in rec.getMessage()]
        assert refused and all(len(m) < 400 for m in refused), [m[:300] for m in refused]
    assert count(store.Heartbeat) == 0


def test_a_long_unit_name_is_not_echoed(client: FlaskClient, token: str) -> None:
    login(client)
    r = client.get("/api/v1/units/" + "n" * 50_000)
    assert r.status_code == 404 and len(r.json["error"]) < 200


def audit(head_id: int | None, head: str | None) -> dict[str, Any]:
    return {"audit": {"head_id": head_id, "head": head}}


def fleet_events() -> list[tuple[str, str, str]]:
    with store.fleet_db.connection_context():
        rows = store.Event.select().where(store.Event.source == "fleet").order_by(store.Event.id)
        return [(e.kind, e.severity, e.message) for e in rows]


def test_an_audit_log_cut_or_rewritten_between_heartbeats_is_a_critical_event(
    client: FlaskClient, token: str
) -> None:
    a, b = "a" * 64, "b" * 64
    post_hb(client, token, heartbeat(1, **audit(None, None)))
    post_hb(client, token, heartbeat(2, **audit(10, a)))  # grew: fine
    post_hb(client, token, heartbeat(3, **audit(12, b)))
    assert fleet_events() == []
    r = post_hb(client, token, heartbeat(4, events=[event(1)], **audit(8, a)))
    assert r.json["ack_cursor"] == 1  # the fleet's own event is not the unit's cursor
    post_hb(client, token, heartbeat(5, **audit(8, b)))
    post_hb(client, token, heartbeat(6, **audit(9, b)))  # grew again from there: fine
    got = fleet_events()
    assert [(k, s) for k, s, _ in got] == [("fleet.audit_rewound", "critical")] * 2
    assert got[0][2].startswith(
        "the unit's audit log went back from row 12 to row 8 since its heartbeat 3 ("
    )
    assert got[1][2].startswith("the unit's audit log row 8 was rewritten since its heartbeat 4 (")
    # a heartbeat that arrives late compares with the one before it, not with the newest
    post_hb(client, token, heartbeat(7, sent_at=T0 + 60 * 3 + 1, **audit(12, b)))
    assert len(fleet_events()) == 2


def test_an_audit_log_that_starts_again_after_a_factory_reset_is_no_event(
    client: FlaskClient, token: str
) -> None:
    post_hb(client, token, heartbeat(50, **audit(300, "a" * 64)))
    post_hb(client, token, heartbeat(1, sent_at=T0 + 6000, **audit(2, "c" * 64)))
    post_hb(client, token, heartbeat(2, sent_at=T0 + 6060, **audit(3, "d" * 64)))
    assert fleet_events() == []


def test_a_unit_without_an_audit_head_is_no_event(client: FlaskClient, token: str) -> None:
    post_hb(client, token, heartbeat(1, **audit(10, "a" * 64)))
    post_hb(client, token, heartbeat(2))
    assert fleet_events() == []


@pytest.mark.parametrize(
    "content_type", [None, "text/plain", "application/x-www-form-urlencoded", "application/jsonx"]
)
def test_a_heartbeat_that_is_not_application_json_is_415(
    client: FlaskClient, token: str, content_type: str | None
) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    if content_type is not None:
        headers["Content-Type"] = content_type
    r = client.post(HB, data=json.dumps(heartbeat()), headers=headers)
    assert r.status_code == 415, r.data
    assert r.json["field"] == "Content-Type"
    assert "application/json" in r.json["error"]
    assert count(store.Heartbeat) == 0
    # with a charset it is JSON all the same
    headers["Content-Type"] = "application/json; charset=utf-8"
    assert client.post(HB, data=json.dumps(heartbeat()), headers=headers).status_code == 200


def test_each_unit_keeps_its_newest_heartbeats_pruned_by_one_worker_in_batches(
    fleet_url: str, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store, "PRUNE_BATCH", 3)
    app = make_app(fleet_url, clock, keep_heartbeats=4)
    with store.fleet_db.connection_context():
        tok = store.add_unit("press-3", now=T0)
    client = app.test_client()
    for seq in range(1, 11):
        post_hb(client, tok, heartbeat(seq))
    assert count(store.Heartbeat) == 10  # the first heartbeat claimed this hour's pruning
    clock.t += 3600
    post_hb(client, tok, heartbeat(11))
    with store.fleet_db.connection_context():
        assert sorted(h.seq for h in store.Heartbeat.select()) == [8, 9, 10, 11]
        assert store.get_unit("press-3").heartbeat_count == 11


def test_stats_api_reports_size_counts_and_retention(client: FlaskClient, token: str) -> None:
    post_hb(client, token, heartbeat(1, events=[event(1)]))
    assert client.get("/api/v1/stats").status_code == 401
    assert client.post("/api/v1/session", json={"password": PASSWORD}).status_code == 200
    found = client.get("/api/v1/stats").json
    assert (found["units"], found["heartbeats"], found["events"]) == (1, 1, 1)
    assert found["size_bytes"] > 0 and found["schema_version"] == store.SCHEMA_VERSION
    assert found["retention"] == {"keep_days": 90, "keep_heartbeats": 1000}
