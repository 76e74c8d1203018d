"""The databases of a data directory: pragmas, events, audit rows."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from appliance.agent import outbox
from appliance.errors import ApplianceError, PermissionDenied
from appliance.field import store as field_store
from appliance.fleet.store import Unit as FleetUnit
from appliance.state.db import Audit, Event, Revision, Store
from appliance.web import accounts


def test_a_new_data_dir_gets_both_databases(tmp_path: Path) -> None:
    s = Store(tmp_path / "a" / "b", field_store.MODELS)
    try:
        assert (tmp_path / "a" / "b" / "config.db").exists()
        assert (tmp_path / "a" / "b" / "history.db").exists()
        assert s.config.execute_sql("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert s.config.execute_sql("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert s.history.execute_sql("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert s.history.execute_sql("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
        assert {"revision", "audit"} <= set(s.config.get_tables())
        history_tables = {"event", "tag_name", "sample", "sample_recent", "alarm", "history_meta"}
        assert history_tables <= set(s.history.get_tables())
        views = {"samples", "tags", "alarms", "events"}
        assert views <= {v.name for v in s.history.get_views()}
    finally:
        s.close()


def test_reopening_keeps_the_data(tmp_path: Path) -> None:
    s = Store(tmp_path)
    s.audit("alice", "config.import", at=1.0)
    s.close()
    s = Store(tmp_path)
    try:
        assert Audit.select().count() == 1
    finally:
        s.close()


def test_unwritable_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # root may write anywhere, so the kernel's answer is faked at the one call that asks it
    import appliance.state.db as db

    monkeypatch.setattr(db.os, "access", lambda path, mode: False)
    with pytest.raises(PermissionDenied, match="not writable"):
        Store(tmp_path)


def test_data_dir_that_cannot_be_created(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ApplianceError, match="cannot create data directory"):
        Store(blocker / "data")


def test_audit_rows(store: Store) -> None:
    row = store.audit(
        "alice", "config.commit", target="revision 3", detail="window 60 s", source="web", at=5.0
    )
    got = Audit.get_by_id(row.id)
    assert (got.at, got.actor, got.source, got.action) == (5.0, "alice", "web", "config.commit")
    assert (got.target, got.result, got.detail) == ("revision 3", "ok", "window 60 s")
    failed = store.audit("bob", "config.confirm", result="conflict")
    assert Audit.get_by_id(failed.id).result == "conflict"
    assert Audit.get_by_id(failed.id).source == "cli"
    assert Audit.get_by_id(failed.id).at > 1e9  # the wall clock when not given


def test_events_newest_first_with_prefix_and_limit(store: Store) -> None:
    store.event("config.draft", "one", source="config", at=1.0)
    store.event("net.applied", "two", source="net", at=2.0)
    store.event("config.committed", "three", source="config", at=3.0, severity="warning")
    assert [e.message for e in store.events()] == ["three", "two", "one"]
    assert [e.message for e in store.events(kind_prefix="config.")] == ["three", "one"]
    assert [e.message for e in store.events(limit=1)] == ["three"]
    assert store.events(kind_prefix="field.") == []


def test_event_as_dict(store: Store) -> None:
    e = store.event(
        "net.drift", "table changed", source="net", severity="warning", data={"n": 1}, at=7.5
    )
    assert Event.get_by_id(e.id).as_dict() == {
        "id": e.id,
        "at": 7.5,
        "source": "net",
        "kind": "net.drift",
        "severity": "warning",
        "message": "table changed",
        "data": {"n": 1},
    }


def test_event_data_that_json_cannot_take_is_written_as_text(store: Store) -> None:
    e = store.event("x", "y", source="t", data={"path": Path("/tmp/a")})
    assert Event.get_by_id(e.id).as_dict()["data"] == {"path": "/tmp/a"}


def test_revision_as_dict_leaves_out_the_documents(store: Store) -> None:
    rev = Revision.create(
        created_at=1.0, author="a", sha256="0" * 64, document="{}", source="x: 1", state="draft"
    )
    d = Revision.get_by_id(rev.id).as_dict()
    assert d["id"] == rev.id
    assert d["state"] == "draft"
    assert "document" not in d and "source" not in d
    assert d["auto_confirm"] is False


def test_a_store_makes_the_core_tables_and_those_it_is_handed(tmp_path: Path) -> None:
    core = Store(tmp_path / "core")
    try:
        assert set(core.config.get_tables()) == {"revision", "audit", "auditanchor", "auditprobe"}
        assert set(core.history.get_tables()) == {"event"}
        core.ensure([*outbox.MODELS, *accounts.MODELS])  # idempotent, each in its database
        core.ensure(outbox.MODELS)
        assert "web_user" in core.config.get_tables()
        assert {"agent_outbox", "agent_cursor"} <= set(core.history.get_tables())
        with pytest.raises(TypeError, match="neither"):
            core.ensure([FleetUnit])
    finally:
        core.close()


def test_the_net_roles_store_loads_no_other_area(tmp_path: Path) -> None:
    """The store is below the roles: opening one (as the net role does) imports neither the
    field, agent or web tables nor argon2, which the web accounts need."""
    code = (
        "import sys; from appliance.state.db import Store; "
        f"Store({str(tmp_path / 'd')!r}).close(); "
        "print(sorted(m for m in sys.modules if m.startswith(('argon2', 'appliance.field', "
        "'appliance.agent', 'appliance.web', 'flask'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_an_audit_row_that_cannot_be_written_is_audit_failed_and_undoes_the_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """IEC 62443-4-2 CR 2.10: inside the caller's transaction the audit row is a
    savepoint; when it fails, AuditFailed (503, exit 12) and the change rolls back."""
    import peewee as pw

    from appliance.errors import AuditFailed
    from appliance.state.db import Audit, AuditProbe

    store = Store(tmp_path / "d")
    try:
        assert store.probe_audit(1.0) is None
        assert AuditProbe.get_by_id(1).at == 1.0

        def full(*a: object, **kw: object) -> None:
            raise pw.OperationalError("database or disk is full")

        monkeypatch.setattr(Audit, "create", full)
        with pytest.raises(AuditFailed, match="database or disk is full"), store.config.atomic():
            AuditProbe.insert(id=1, at=2.0).on_conflict_replace().execute()
            store.audit("alice", "config.draft")
        assert AuditProbe.get_by_id(1).at == 1.0  # the change went with its audit row
        monkeypatch.undo()
        store.config.execute_sql("PRAGMA query_only = ON")
        assert "readonly" in (store.probe_audit(3.0) or "")
        store.config.execute_sql("PRAGMA query_only = OFF")
    finally:
        store.close()
