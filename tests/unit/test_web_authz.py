"""Authorization matrix: every route of the app x anonymous, viewer, operator, admin.

The table is checked against the app's url_map, so a new route without an entry
here fails `test_every_route_has_an_entry` until someone decides who may call it.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from .webkit import ROLES, Web, error_of

PUBLIC = "public"
METRICS = "token-or-allowed"  # any authenticated principal, or web.metrics_allow
ANY = "any-authenticated"  # who am I: 401 for nobody, but also before setup

# (method, rule) -> the least role, PUBLIC, or METRICS
EXPECTED: dict[tuple[str, str], str] = {
    # pages (appliance.web.ui): the least role to open them
    ("GET", "/"): "viewer",
    ("GET", "/alarms"): "viewer",
    ("GET", "/events"): "viewer",
    ("GET", "/conduits"): "viewer",
    ("GET", "/nat"): "viewer",
    ("GET", "/interfaces"): "viewer",
    ("GET", "/inventory"): "viewer",
    ("GET", "/devices"): "viewer",
    ("GET", "/devices/setup"): "viewer",
    ("GET", "/sql"): "viewer",
    ("GET", "/config"): "viewer",
    ("GET", "/revisions"): "viewer",
    ("GET", "/settings"): "viewer",
    ("GET", "/users"): "admin",
    ("GET", "/tokens"): "viewer",
    ("GET", "/audit"): "operator",
    ("GET", "/system"): "viewer",
    ("GET", "/tags/<name>"): "viewer",
    ("GET", "/login"): PUBLIC,
    ("GET", "/setup"): PUBLIC,
    ("GET", "/logout"): PUBLIC,
    ("GET", "/assets/<path:filename>"): PUBLIC,
    # session and setup
    ("GET", "/api/session"): ANY,
    ("POST", "/api/session"): PUBLIC,
    ("DELETE", "/api/session"): PUBLIC,
    ("PUT", "/api/session/password"): "viewer",
    ("GET", "/api/setup"): PUBLIC,
    ("POST", "/api/setup"): PUBLIC,
    ("GET", "/api/openapi.json"): PUBLIC,
    ("GET", "/metrics"): METRICS,
    # reading
    ("GET", "/api/status"): "viewer",
    ("GET", "/api/system"): "viewer",
    ("GET", "/api/ports"): "viewer",
    ("GET", "/api/config/running"): "viewer",
    ("GET", "/api/config/draft"): "viewer",
    ("GET", "/api/config/draft/<section>"): "viewer",
    ("GET", "/api/config/diff"): "viewer",
    ("GET", "/api/config/export"): "viewer",
    ("GET", "/api/revisions"): "viewer",
    ("GET", "/api/revisions/<int:rev_id>"): "viewer",
    ("GET", "/api/conduits"): "viewer",
    ("GET", "/api/conduits/review"): "viewer",
    ("GET", "/api/modbus/inventory"): "viewer",
    ("GET", "/api/modbus/learned/<name>"): "viewer",
    ("GET", "/api/devices"): "viewer",
    ("POST", "/api/devices/probe"): "admin",
    ("GET", "/api/tags"): "viewer",
    ("GET", "/api/tags/<name>/history"): "viewer",
    ("GET", "/api/alarms"): "viewer",
    ("GET", "/api/events"): "viewer",
    ("POST", "/api/sql"): "viewer",
    ("GET", "/api/tokens"): "viewer",
    ("POST", "/api/tokens"): "viewer",
    ("DELETE", "/api/tokens/<int:token_id>"): "viewer",
    # operating
    ("GET", "/api/audit"): "operator",
    ("POST", "/api/alarms/<int:alarm_id>/ack"): "operator",
    ("POST", "/api/config/confirm"): "operator",
    ("POST", "/api/identify"): "operator",
    ("POST", "/api/ports/<name>/identify"): "operator",
    # administering
    ("PUT", "/api/config/draft"): "admin",
    ("PUT", "/api/config/draft/<section>"): "admin",
    ("POST", "/api/config/commit"): "admin",
    ("POST", "/api/config/rollback"): "admin",
    ("POST", "/api/conduits"): "admin",
    ("PUT", "/api/conduits/<name>"): "admin",
    ("DELETE", "/api/conduits/<name>"): "admin",
    ("POST", "/api/tags/<name>/write"): "admin",
    ("GET", "/api/users"): "admin",
    ("POST", "/api/users"): "admin",
    ("PATCH", "/api/users/<name>"): "admin",
    ("DELETE", "/api/users/<name>"): "admin",
    ("GET", "/api/diagnostics"): "admin",
}

SAMPLE = {"int": "1", "path": "plc1.counter", None: "x"}
SETUP_EXEMPT = {"/api/session", "/api/session/password", "/api/setup", "/api/openapi.json"}


def url_of(rule: str) -> str:
    def sub(m: re.Match[str]) -> str:
        conv, name = m.group(1), m.group(2)
        if name == "section":
            return "unit"
        if name == "filename":
            return "app.css"
        return SAMPLE.get(conv, "x")

    return re.sub(r"<(?:(\w+):)?(\w+)>", sub, rule)


def routes_of(web: Web) -> set[tuple[str, str]]:
    out = set()
    for rule in web.app.url_map.iter_rules():
        for m in rule.methods - {"HEAD", "OPTIONS"}:
            out.add((m, rule.rule))
    return out


def call(web: Web, client: Any, method: str, rule: str, headers: dict[str, str]) -> Any:
    kw: dict[str, Any] = {"headers": headers}
    if method in ("POST", "PUT", "PATCH"):
        kw["json"] = {}
    return client.open(url_of(rule), method=method, **kw)


def is_denied(resp: Any, page: bool) -> str | None:
    """Why the response is an authorization failure, None when it is not one."""
    if page:
        if resp.status_code == 302 and "/login" in resp.headers.get("Location", ""):
            return "redirect to login"
        if resp.status_code == 403:
            return "403"
        return None
    if resp.status_code == 401:
        return "401"
    if resp.status_code == 403 and error_of(resp).startswith(("needs the", "setup required")):
        return f"403 {error_of(resp)}"
    return None


def test_every_route_has_an_entry(ready: Web) -> None:
    have = routes_of(ready)
    missing = sorted(have - EXPECTED.keys())
    stale = sorted(EXPECTED.keys() - have)
    assert not missing, f"routes without an authorization entry: {missing}"
    assert not stale, f"entries for routes that do not exist: {stale}"


@pytest.mark.parametrize("key", sorted(EXPECTED), ids=lambda k: f"{k[0]} {k[1]}")
def test_matrix(ready: Web, key: tuple[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    import appliance.agent.diagnostics as diag

    monkeypatch.setattr(diag, "build", lambda paths, now=None: b"archive")  # slow otherwise
    method, rule = key
    need = EXPECTED[key]
    page = not rule.startswith("/api") and rule != "/metrics"
    clients = {"anonymous": (ready.client(), {})}
    for role in ROLES:
        c = ready.login(role)
        clients[role] = (c, ready.h(c))
    for who, (client, headers) in clients.items():
        resp = call(ready, client, method, rule, headers)
        denied = is_denied(resp, page)
        if need == PUBLIC:
            allowed = True
        elif need in (METRICS, ANY):
            allowed = who != "anonymous"
        elif who == "anonymous":
            allowed = False
        else:
            allowed = ROLES.index(who) >= ROLES.index(need)
        if allowed and need == PUBLIC and page:
            assert resp.status_code < 500, f"{who} {method} {rule}"
        elif allowed:
            assert denied is None, f"{who} {method} {rule}: {denied} {resp.get_json(silent=True)}"
            if not page:
                # 503: the role that would do it (agent, field) is not running in unit tests
                assert resp.status_code < 500 or resp.status_code == 503, (
                    f"{who} {method} {rule}: {resp.get_json()}"
                )
        else:
            assert denied, f"{who} {method} {rule} allowed: {resp.status_code}"
            if not page and who == "anonymous":
                assert resp.status_code == 401
            elif not page:
                assert resp.status_code == 403


def test_diagnostics_for_admin_only(ready: Web, monkeypatch: pytest.MonkeyPatch) -> None:
    import appliance.agent.diagnostics as diag

    monkeypatch.setattr(diag, "build", lambda paths, now=None: b"archive")
    for role in ROLES:
        c = ready.login(role)
        r = c.get("/api/diagnostics")
        assert r.status_code == (200 if role == "admin" else 403)
    assert r.data == b"archive" and r.mimetype == "application/gzip"
    # CR 2.8: the download is audited, with who took it and how big it was
    from appliance.state.db import Audit

    last = Audit.select().where(Audit.action == "diagnostics").order_by(Audit.id.desc()).first()
    assert last is not None and last.actor == "admin" and last.detail == "7 bytes"


@pytest.mark.parametrize("key", sorted(EXPECTED), ids=lambda k: f"{k[0]} {k[1]}")
def test_before_setup(web: Web, key: tuple[str, str]) -> None:
    """Until an admin exists: API 403 `setup required` (but setup, session, openapi), pages
    redirect to /setup."""
    method, rule = key
    if EXPECTED[key] in (PUBLIC, ANY):
        return
    resp = call(web, web.client(), method, rule, {})
    if rule.startswith("/api") and rule not in SETUP_EXEMPT:
        assert resp.status_code == 403 and error_of(resp) == "setup required", rule
    elif not rule.startswith("/api") and rule != "/metrics":
        assert resp.status_code == 302 and resp.headers["Location"].endswith("/setup"), rule


@pytest.mark.parametrize("role", ROLES)
def test_tokens_carry_their_role(ready: Web, role: str) -> None:
    secret = ready.token("admin", role)
    c = ready.client()
    auth = {"Authorization": f"Bearer {secret}"}
    assert c.get("/api/status", headers=auth).status_code == 200
    r = c.get("/api/audit", headers=auth)
    assert r.status_code == (403 if role == "viewer" else 200)
    r = c.get("/api/users", headers=auth)
    assert r.status_code == (200 if role == "admin" else 403)
