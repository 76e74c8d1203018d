"""POST /api/sql against hostile queries: stopped with a clear error, the rest of the API
answering meanwhile, one query at a time per server process (429 beyond)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from appliance.field import api
from appliance.web.views import field as field_views

from .webkit import Web

A = "printf('%.*c', {}, 'a')"
# 150 quadratic instr() calls in one row: one VM step of many seconds, no interrupt point
INSTR = (
    f"WITH s(x, y) AS (SELECT {A.format(200000)}, {A.format(100000)} || 'b') SELECT "
    + ", ".join(["instr(x, y)"] * 150)
    + " FROM s"
)
TIMEOUT_S = 1.0


def post_sql(web: Web, query: str, into: dict[str, Any]) -> None:
    c = web.login("viewer")  # a client of its own: test clients are not shared by threads
    t0 = time.monotonic()
    r = c.post("/api/sql", json={"query": query}, headers=web.h(c))
    into.update(status=r.status_code, body=r.json, headers=dict(r.headers))
    into["seconds"] = time.monotonic() - t0


def test_a_hostile_query_is_stopped_while_status_answers(
    ready: Web, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(field_views, "SQL_TIMEOUT_S", TIMEOUT_S, raising=False)
    v = ready.login("viewer")
    assert v.get("/api/status").status_code == 200  # warm
    hostile: dict[str, Any] = {}
    t = threading.Thread(target=post_sql, args=(ready, INSTR, hostile), daemon=True)
    t.start()
    latencies = []
    deadline = time.monotonic() + 15
    while t.is_alive() and time.monotonic() < deadline:
        t0 = time.monotonic()
        r = v.get("/api/status")
        latencies.append(time.monotonic() - t0)
        assert r.status_code == 200
        time.sleep(0.05)
    assert not t.is_alive(), "the hostile query was not stopped"
    assert hostile["status"] == 504, hostile
    assert "ran longer than 1 s and was stopped" in hostile["body"]["error"]
    assert hostile["seconds"] < TIMEOUT_S + api.WORKER_GRACE_S + 1.5
    assert len(latencies) >= 5, latencies
    assert max(latencies) < 0.5, latencies


@pytest.mark.parametrize(
    ("query", "says"),
    [
        (
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 8) "
            "SELECT zeroblob(9999000) FROM n",
            "a value would be longer than 1000000 bytes",
        ),
        (
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100) "
            "SELECT zeroblob(900000) FROM n",
            "the result is larger than 8 MB",
        ),
    ],
)
def test_limits_answer_400_naming_the_limit(ready: Web, query: str, says: str) -> None:
    got: dict[str, Any] = {}
    post_sql(ready, query, got)
    assert got["status"] == 400, got
    assert says in got["body"]["error"] and got["body"]["field"] == "sql"
    assert len(str(got["body"])) < 1000  # the error, not the data


def test_a_second_query_meanwhile_is_told_to_wait(
    ready: Web, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(field_views, "SQL_TIMEOUT_S", TIMEOUT_S, raising=False)
    first: dict[str, Any] = {}
    t = threading.Thread(target=post_sql, args=(ready, INSTR, first), daemon=True)
    t.start()
    deadline = time.monotonic() + 5
    while api._workers._value and time.monotonic() < deadline:  # type: ignore[attr-defined]
        time.sleep(0.01)
    second: dict[str, Any] = {}
    post_sql(ready, "SELECT 1", second)
    assert second["status"] == 429, second
    assert second["body"]["field"] == "sql" and "another SQL query" in error_of_body(second)
    assert second["headers"]["Retry-After"] == "1"
    t.join(TIMEOUT_S + 5)
    assert first["status"] == 504
    third: dict[str, Any] = {}
    post_sql(ready, "SELECT 1 AS one", third)
    assert third["status"] == 200 and third["body"]["rows"] == [[1]]


def error_of_body(got: dict[str, Any]) -> str:
    return str(got["body"].get("error", ""))
