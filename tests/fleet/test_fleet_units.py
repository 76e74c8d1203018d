"""The unit list at plant scale: 10,000 units paged, searched and filtered by site, group,
health, firmware and revision (API, page and CLI), and an operator's site and groups."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from argon2 import PasswordHasher
from flask import Flask
from flask.testing import FlaskClient
from testkit import Clock

from appliance.fleet import store
from appliance.fleet.app import create_app

from .test_fleet_cli import run
from .test_fleet_validate import T0

PASSWORD = "correct horse battery"
N = 10_000
STATES = ("ok", "ok", "ok", "degraded", "fault", None)  # None: no heartbeat yet


def fleet_of(n: int) -> None:
    """n units as heartbeats leave them: unit-00000.., 50 sites, 4 states and none, two
    firmware versions, revisions 1-5; every 10th in group line-a, every 25th in line-b."""
    rows = []
    for i in range(n):
        state = STATES[i % len(STATES)]
        rows.append(
            {
                "name": f"unit-{i:05d}",
                "token_hash": f"{i:064x}",
                "created_at": T0,
                "unit_name": f"press {i}",
                "site": f"plant-{i % 50:02d}",
                "serial": f"SN{i:06d}",
                "health": state,
                "firmware": None if state is None else ("0.2.0" if i % 3 == 0 else "0.1.0"),
                "revision_id": None if state is None else i % 5 + 1,
                "last_seen": None if state is None else T0,
            }
        )
    with store.fleet_db.atomic():
        for i in range(0, n, 500):
            store.Unit.insert_many(rows[i : i + 500]).execute()
        ids = dict(store.Unit.select(store.Unit.name, store.Unit.id).tuples())
        groups = [{"unit": ids[f"unit-{i:05d}"], "name": "line-a"} for i in range(0, n, 10)]
        groups += [{"unit": ids[f"unit-{i:05d}"], "name": "line-b"} for i in range(0, n, 25)]
        for i in range(0, len(groups), 500):
            store.UnitGroup.insert_many(groups[i : i + 500]).execute()


@pytest.fixture(autouse=True)
def cheap_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024))


@pytest.fixture
def app(fleet_url: str) -> Iterator[Flask]:
    app = create_app(fleet_url, clock=Clock(T0 + 30))
    app.config["TESTING"] = True
    with store.fleet_db.connection_context():
        store.set_password(PASSWORD)
    yield app


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    c = app.test_client()
    r = c.post("/api/v1/session", json={"password": PASSWORD})
    assert r.status_code == 200
    c.environ_base["HTTP_X_CSRF_TOKEN"] = r.json["csrf"]
    return c


@pytest.fixture
def big(app: Flask) -> None:
    with store.fleet_db.connection_context():
        fleet_of(N)


def get(client: FlaskClient, query: str) -> tuple[Any, Any, float]:
    t = time.perf_counter()
    r = client.get(f"/api/v1/units?{query}")
    return r, r.json, time.perf_counter() - t


def expected(pred: Any) -> int:
    return sum(1 for i in range(N) if pred(i))


@pytest.mark.usefixtures("big")
def test_10000_units_are_paged_searched_and_filtered_fast(client: FlaskClient) -> None:
    r, units, took = get(client, "per_page=50&page=3")
    assert r.status_code == 200 and took < 2, took
    assert [u["name"] for u in units] == [f"unit-{i:05d}" for i in range(100, 150)]
    assert r.headers["X-Total-Count"] == str(N) and r.headers["X-Pages"] == "200"
    assert 'page=2>; rel="prev"' in r.headers["Link"] and 'page=4>; rel="next"' in r.headers["Link"]
    r, units, _ = get(client, "")
    assert len(units) == 100 and r.headers["X-Total-Count"] == str(N)  # 100 by default
    assert units[0]["groups"] == ["line-a", "line-b"] and units[1]["groups"] == []

    cases = {
        "site=plant-07&per_page=1000": lambda i: i % 50 == 7,
        "group=line-a&per_page=1000": lambda i: i % 10 == 0,
        "group=line-b&site=plant-00": lambda i: i % 25 == 0 and i % 50 == 0,
        "health=fault&per_page=1000": lambda i: STATES[i % 6] == "fault",
        "health=none&per_page=1000": lambda i: STATES[i % 6] is None,
        "firmware=0.2.0&per_page=1000": lambda i: STATES[i % 6] and i % 3 == 0,
        "revision=r4&health=ok": lambda i: STATES[i % 6] == "ok" and i % 5 + 1 == 4,
        "search=unit-0042": lambda i: f"{i:05d}".startswith("0042"),
        "search=SN00995": lambda i: f"{i:06d}".startswith("00995"),
        "search=PRESS 999": lambda i: str(i).startswith("999"),
        "search=%25": lambda i: False,  # a LIKE wildcard is a plain character here
        "search=unit_0": lambda i: False,
    }
    for query, pred in cases.items():
        r, units, took = get(client, query)
        want = expected(pred)
        assert r.status_code == 200, (query, r.json)
        assert r.headers["X-Total-Count"] == str(want), query
        assert len(units) == min(want, 1000 if "per_page=1000" in query else 100), query
        assert took < 2, (query, took)
        assert units == sorted(units, key=lambda u: u["name"])


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("health=bogus", "health"),
        ("page=0", "page"),
        ("page=x", "page"),
        ("per_page=5000", "per_page"),
        ("revision=x", "revision"),
        ("group=no%20spaces", "group"),
        ("search=" + "x" * 201, "search"),
        ("site=a%00b", "site"),
    ],
)
def test_a_bad_filter_is_400_naming_it(client: FlaskClient, query: str, field: str) -> None:
    r = client.get(f"/api/v1/units?{query}")
    assert r.status_code == 400 and r.json["field"] == field, r.json
    page = client.get(f"/?{query}")
    assert page.status_code == 400 and f"{field}: " in page.get_data(as_text=True)


@pytest.mark.usefixtures("big")
def test_the_list_page_filters_and_pages(client: FlaskClient) -> None:
    t = time.perf_counter()
    r = client.get("/?group=line-a&health=ok")
    took = time.perf_counter() - t
    html = r.get_data(as_text=True)
    want = expected(lambda i: i % 10 == 0 and STATES[i % 6] == "ok")
    assert r.status_code == 200 and took < 3, took
    assert f'<span class="count">{want} matching</span>' in html
    assert f"page 1 of {-(-want // 100)}" in html
    nxt = re.search(r'<a href="([^"]+)" rel="next">', html)
    assert nxt, html[-1500:]
    link = dict(p.split("=") for p in nxt.group(1).split("?")[1].split("&amp;"))
    assert link == {"page": "2", "group": "line-a", "health": "ok"}
    assert "<option selected>line-a</option>" in html and "plant-49" in html
    empty = client.get("/?search=nothing-like-this").get_data(as_text=True)
    assert "No unit matches." in empty


def test_an_operator_places_a_unit_in_a_site_and_groups(client: FlaskClient) -> None:
    with store.fleet_db.connection_context():
        fleet_of(3)
    path = "/api/v1/units/unit-00001/placement"
    r = client.post(path, json={"site": "Hall 4", "groups": ["presses", "line-a", "presses"]})
    assert r.status_code == 200, r.json
    assert r.json["site"] == "Hall 4" and r.json["groups"] == ["line-a", "presses"]
    assert r.json["unit"]["site"] == "plant-01"  # what it reports stays
    found = client.get("/api/v1/units?site=Hall%204").json
    assert [u["name"] for u in found] == ["unit-00001"]
    assert client.get("/api/v1/units?site=plant-01").json == []
    r = client.post(path, json={"groups": ["presses"]})  # the site stays
    assert (r.json["site"], r.json["groups"]) == ("Hall 4", ["presses"])
    r = client.post(path, json={"site": None})  # back to the reported site
    assert (r.json["site"], r.json["groups"]) == ("plant-01", ["presses"])
    facets = client.get("/api/v1/facets").json
    assert facets["groups"] == ["line-a", "line-b", "presses"] and "plant-01" in facets["sites"]
    for body, field in (
        ({"groups": ["ok", "not ok"]}, "groups[1]"),
        ({"groups": "presses"}, "groups"),
        ({"site": 5}, "site"),
        ({"colour": "red"}, "colour"),
        ({}, "body"),
    ):
        r = client.post(path, json=body)
        assert r.status_code == 400 and r.json["field"] == field, (body, r.json)
    r = client.post(path, json={"site": "x"}, headers={"X-CSRF-Token": "wrong"})
    assert r.status_code == 403
    assert client.post("/api/v1/units/nobody/placement", json={"site": "x"}).status_code == 404


def test_the_unit_page_form_saves_site_and_groups(client: FlaskClient) -> None:
    with store.fleet_db.connection_context():
        fleet_of(2)
    page = client.get("/units/unit-00000").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    form = {"csrf_token": csrf, "site": "Hall 4", "groups": "line-a, presses"}
    r = client.post("/units/unit-00000/placement", data=form)
    assert r.status_code == 302
    with store.fleet_db.connection_context():
        unit = store.get_unit("unit-00000")
        assert unit.site_shown == "Hall 4"
        assert store.groups_of([unit.id])[unit.id] == ["line-a", "presses"]
    r = client.post("/units/unit-00000/placement", data={**form, "groups": "ok bad/name"})
    assert r.status_code == 400
    assert 'id="groups-error"' in r.get_data(as_text=True)


def test_the_cli_places_and_filters(capsys: pytest.CaptureFixture[str], fleet_url: str) -> None:
    store.open_db(fleet_url)
    with store.fleet_db.connection_context():
        fleet_of(60)
    code, out, err = run(
        capsys, "place", "unit-00003", "--db", fleet_url, "--site", "Hall 4", "--group", "presses"
    )
    assert (code, out) == (0, "unit 'unit-00003': site Hall 4, groups presses\n"), err
    code, out, _ = run(capsys, "units", "--db", fleet_url, "--group", "presses")
    assert [line.split()[0] for line in out.splitlines()[1:]] == ["unit-00003"]
    code, out, _ = run(capsys, "units", "--db", fleet_url, "--site", "plant-07", "--json")
    assert [u["name"] for u in __import__("json").loads(out)] == ["unit-00007", "unit-00057"]
    code, out, err = run(capsys, "units", "--db", fleet_url, "--per-page", "25", "--page", "3")
    assert len(out.splitlines()) == 11 and "page 3 of 3 (60 units)" in err
    for args, flag in (
        (["units", "--health", "bogus"], "--health"),
        (["units", "--per-page", "0"], "--per-page"),
        (["place", "unit-00003", "--group", "bad name"], "--group"),
        (["place", "unit-00003"], "--site"),
    ):
        code, _, err = run(capsys, *args, "--db", fleet_url)
        assert code == 2 and err.count("\n") == 1 and f"{flag}: " in err, (args, err)


def test_a_page_costs_the_same_few_queries_for_any_number_of_units(
    client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    with store.fleet_db.connection_context():
        fleet_of(120)
    db = store.fleet_db.obj
    seen: list[str] = []
    real = db.execute_sql

    def counting(sql: str, params: Any = None, *args: Any, **kw: Any) -> Any:
        seen.append(sql)
        return real(sql, params, *args, **kw)

    monkeypatch.setattr(db, "execute_sql", counting)
    counts = {}
    for per_page in (5, 100):
        for path in (f"/?per_page={per_page}", f"/api/v1/units?per_page={per_page}"):
            seen.clear()
            assert client.get(path).status_code == 200
            counts[path] = len(seen)
    assert counts["/?per_page=5"] == counts["/?per_page=100"] <= 12, counts
    assert counts["/api/v1/units?per_page=5"] == counts["/api/v1/units?per_page=100"] <= 6, counts
