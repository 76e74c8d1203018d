"""Operator accounts and roles: every route of the URL map checked with each role (viewer,
operator, admin) and with no session; roles change live sessions; the CLI's accounts."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from argon2 import PasswordHasher
from flask import Flask
from flask.testing import FlaskClient
from testkit import Clock

from appliance.errors import ApplianceError
from appliance.fleet import app as fleet_app
from appliance.fleet import store
from appliance.fleet.app import ENDPOINT_ROLES, PUBLIC_ENDPOINTS, create_app

from .test_fleet_cli import run
from .test_fleet_validate import T0

PW = {"vera": "viewer password", "otto": "operator password", "ada": "admin password!"}
ROLE_OF = {"vera": "viewer", "otto": "operator", "ada": "admin"}


@pytest.fixture(autouse=True)
def cheap_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024))


@pytest.fixture
def app(fleet_url: str) -> Iterator[Flask]:
    app = create_app(fleet_url, clock=Clock(T0 + 30))
    app.config["TESTING"] = True
    with store.fleet_db.connection_context():
        for name, password in PW.items():
            store.set_password(password, name, ROLE_OF[name])
        store.add_unit("press-3", now=T0)
    yield app


def login(app: Flask, name: str | None) -> FlaskClient:
    """A client logged in as `name` (None: anonymous), sending its CSRF token."""
    c = app.test_client()
    csrf = c.get("/api/v1/session").json["csrf"]
    if name is not None:
        r = c.post("/api/v1/session", json={"name": name, "password": PW[name]})
        assert r.status_code == 200 and r.json["operator"] == {"name": name, "role": ROLE_OF[name]}
        csrf = r.json["csrf"]
    c.environ_base["HTTP_X_CSRF_TOKEN"] = csrf
    c.csrf = csrf  # type: ignore[attr-defined]
    return c


def calls(app: Flask) -> list[tuple[str, str, str]]:
    """(endpoint, method, url) of every operator route, with names that exist."""
    out = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint in PUBLIC_ENDPOINTS:
            continue
        args = {a: "press-3" for a in rule.arguments}
        if rule.endpoint == "api_operator_delete":
            args = {"name": "nobody"}
        with app.test_request_context():
            from flask import url_for

            url = url_for(rule.endpoint, **args)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            out.append((rule.endpoint, method, url))
    return out


def send(c: FlaskClient, method: str, url: str) -> Any:
    if method == "GET":
        return c.get(url)
    if url.startswith("/api/"):
        return c.open(url, method=method, json={})
    return c.open(url, method=method, data={"csrf_token": c.csrf})  # type: ignore[attr-defined]


def test_every_route_has_a_role_or_is_public(app: Flask) -> None:
    endpoints = {r.endpoint for r in app.url_map.iter_rules()}
    assert endpoints == set(ENDPOINT_ROLES) | PUBLIC_ENDPOINTS
    assert set(ENDPOINT_ROLES.values()) == set(store.ROLES)


def test_a_route_without_a_role_stops_the_receiver(
    fleet_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    roles = dict(ENDPOINT_ROLES)
    del roles["api_stats"]
    monkeypatch.setattr(fleet_app, "ENDPOINT_ROLES", roles)
    with pytest.raises(ApplianceError, match="routes without a role in ENDPOINT_ROLES: api_stats"):
        create_app(fleet_url)


def test_each_role_reaches_exactly_its_routes(app: Flask) -> None:
    clients = {name: login(app, name) for name in (None, "vera", "otto", "ada")}
    checked = 0
    for endpoint, method, url in calls(app):
        needed = store.role_rank(ENDPOINT_ROLES[endpoint])
        for name, c in clients.items():
            r = send(c, method, url)
            what = (endpoint, method, name, r.status_code, r.get_data(as_text=True)[:200])
            if name is None:
                if url.startswith("/api/"):
                    assert r.status_code == 401 and r.json["field"] == "session", what
                else:
                    assert r.status_code == 302 and "/login" in r.headers["Location"], what
            elif store.role_rank(ROLE_OF[name]) < needed:
                assert r.status_code == 403, what
                if url.startswith("/api/"):
                    assert r.json["field"] == "role", what
                else:
                    assert "needs the" in r.get_data(as_text=True), what
            else:
                assert r.status_code not in (401, 403), what
            checked += 1
    assert checked == 4 * len(ENDPOINT_ROLES)  # each route has one method here


def test_a_new_role_applies_to_a_live_session(app: Flask) -> None:
    otto, ada = login(app, "otto"), login(app, "ada")
    assert otto.post("/api/v1/units/press-3/identify", json={}).status_code == 200
    r = ada.post("/api/v1/operators", json={"name": "otto", "role": "viewer"})
    assert r.status_code == 200 and r.json["role"] == "viewer"
    assert otto.post("/api/v1/units/press-3/identify", json={}).status_code == 403
    assert otto.get("/api/v1/units").status_code == 200
    # a new password or removing the account ends the sessions
    r = ada.post("/api/v1/operators", json={"name": "otto", "password": "another password"})
    assert r.status_code == 200
    assert otto.get("/api/v1/units").status_code == 401


def test_admins_manage_operators(app: Flask) -> None:
    ada, vera = login(app, "ada"), login(app, "vera")
    r = ada.post(
        "/api/v1/operators", json={"name": "max", "role": "operator", "password": "x" * 12}
    )
    assert r.status_code == 200 and r.json["role"] == "operator"
    names = [o["name"] for o in ada.get("/api/v1/operators").json]
    assert names == ["ada", "max", "otto", "vera"]
    assert "password_hash" not in json.dumps(ada.get("/api/v1/operators").json)
    for body, field in (
        ({"name": "new-one", "role": "viewer"}, "password"),
        ({"name": "max", "role": "root"}, "role"),
        ({"name": "bad name", "role": "viewer", "password": "x" * 12}, "name"),
        ({"name": "max", "password": "short"}, "password"),
        ({"name": "max", "colour": "red"}, "colour"),
    ):
        r = ada.post("/api/v1/operators", json=body)
        assert r.status_code == 400 and r.json["field"] == field, (body, r.json)
    assert ada.delete("/api/v1/operators/ada").status_code == 409
    assert ada.delete("/api/v1/operators/max", headers={"X-CSRF-Token": "x"}).status_code == 403
    assert ada.delete("/api/v1/operators/max").status_code == 200
    assert vera.get("/api/v1/operators").status_code == 403
    r = app.test_client().post("/api/v1/session", json={"name": "max", "password": "x" * 12})
    assert r.status_code == 401 and r.json["error"] == "password: wrong operator name or password"


def test_the_cli_manages_operators(
    capsys: pytest.CaptureFixture[str], fleet_url: str, tmp_path: Any
) -> None:
    pw = tmp_path / "pw"
    pw.write_text("a long operator password\n")
    base = ["--db", fleet_url, "--password-file", str(pw)]
    code, _, err = run(capsys, "set-password", *base)
    assert code == 0 and "operator 'admin' (admin): password set" in err, err
    code, _, err = run(capsys, "set-password", *base, "--operator", "otto")
    assert code == 0 and "operator 'otto' (viewer)" in err, err  # not the first: a viewer
    code, _, err = run(capsys, "set-password", *base, "--operator", "otto", "--role", "operator")
    assert code == 0 and "operator 'otto' (operator)" in err, err
    code, out, _ = run(capsys, "operators", "--db", fleet_url)
    assert out.split() == ["admin", "admin", "otto", "operator"]
    code, _, err = run(capsys, "set-password", *base, "--role", "root")
    assert code == 2 and err.count("\n") == 1 and "--role: must be one of" in err
    code, out, _ = run(capsys, "remove-operator", "otto", "--db", fleet_url)
    assert code == 0 and "removed" in out
    code, _, err = run(capsys, "remove-operator", "otto", "--db", fleet_url)
    assert code == 3 and "no operator named 'otto'" in err
