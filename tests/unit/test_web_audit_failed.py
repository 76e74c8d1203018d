"""Never done but not audited (IEC 62443-4-2 CR 2.10, issue 16): a configuration change
whose audit row cannot be written is not made, and while the agent finds the audit log
unwritable the API refuses every change (503) and goes on answering reads and log-ins."""

from __future__ import annotations

import json

import peewee as pw
import pytest

from appliance.state.db import Audit, Revision
from appliance.state.live import LiveState

from . import factory
from .webkit import Web


def test_a_change_whose_audit_row_fails_is_not_made(
    ready: Web, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = ready.login("admin")
    h = ready.h(c)
    before = Revision.select().count()

    def full(*a: object, **kw: object) -> None:
        raise pw.OperationalError("database or disk is full")

    monkeypatch.setattr(Audit, "create", full)
    r = c.put("/api/config/draft", json=factory.base(), headers=h)
    assert r.status_code == 503, r.json
    assert r.json["error"].startswith("the audit log cannot be written (database or disk is full)")
    assert "was not done" in r.json["error"]
    assert Revision.select().count() == before  # the draft rolled back with its audit row
    monkeypatch.undo()
    assert c.put("/api/config/draft", json=factory.base(), headers=h).status_code == 200
    assert Revision.select().count() == before + 1


def _agent_says(web: Web, ok: bool) -> None:
    live = LiveState(web.paths.run_dir)
    live.write("agent", {"role": "agent", "audit": {"ok": ok, "reason": "disk I/O error"}})
    doc = json.loads(live.path("agent").read_text())
    doc["updated_at"] = web.clock.t
    live.path("agent").write_text(json.dumps(doc))


def test_while_the_audit_log_fails_changes_are_refused_and_reads_go_on(ready: Web) -> None:
    c = ready.login("admin")
    h = ready.h(c)
    _agent_says(ready, ok=False)
    r = c.put("/api/config/draft", json=factory.base(), headers=h)
    assert r.status_code == 503
    assert r.json == {
        "error": "changes are refused while the audit log cannot be written (disk I/O error)",
        "field": None,
    }
    assert c.post("/api/tokens", json={"name": "x", "role": "viewer"}, headers=h).status_code == 503
    assert c.get("/api/status").status_code == 200  # one can still see why
    assert ready.login("viewer").get("/api/status").status_code == 200  # and log in
    _agent_says(ready, ok=True)
    assert c.put("/api/config/draft", json=factory.base(), headers=h).status_code == 200


def test_a_stale_agent_document_refuses_nothing(ready: Web) -> None:
    _agent_says(ready, ok=False)
    ready.clock.advance(3600)  # the agent is gone: its old word decides nothing
    c = ready.login("admin")
    assert c.put("/api/config/draft", json=factory.base(), headers=ready.h(c)).status_code == 200
