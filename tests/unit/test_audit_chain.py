"""The audit log's hash chain: written by every `Store.audit`, checked by `verify_audit`,
broken where a row was changed, removed or inserted, and added to an older database."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from appliance.errors import AuditBroken
from appliance.state import auditlog
from appliance.state.db import Audit, AuditAnchor, Store


def fill(store: Store, n: int = 5) -> None:
    for i in range(n):
        store.audit(f"user{i}", "config.commit", target=f"revision {i}", detail="ü", at=1000.0 + i)


def sql(store: Store, statement: str, *args: object) -> None:
    """What someone with write access to config.db could do behind the appliance's back."""
    db = sqlite3.connect(store.data_dir / "config.db")
    with db:
        db.execute(statement, args)
    db.close()


def test_an_empty_log_is_intact(store: Store) -> None:
    v = store.verify_audit()
    assert (v.rows, v.intact, v.head_id, v.head) == (0, True, None, auditlog.GENESIS)
    assert v.line() == "audit log: empty"


def test_each_row_links_to_the_one_before(store: Store) -> None:
    fill(store)
    rows = list(Audit.select().order_by(Audit.id))
    assert [r.id for r in rows] == [1, 2, 3, 4, 5]
    prev = auditlog.GENESIS
    for r in rows:
        assert r.digest == auditlog.link(prev, r.id, r.__data__)
        prev = r.digest
    v = store.verify_audit()
    assert v.intact and v.rows == 5 and v.head_id == 5 and v.head == rows[-1].digest
    assert v.line() == f"audit log: 5 rows, chain intact (last row 5, digest {v.head[:16]})"


def test_an_integer_time_and_non_text_detail_chain_as_stored(store: Store) -> None:
    store.audit("alice", "tag.write", detail=42, at=1000)  # type: ignore[arg-type]
    assert store.verify_audit().intact


@pytest.mark.parametrize(
    ("statement", "args", "broken_at", "problem"),
    [
        (
            "UPDATE audit SET detail = ? WHERE id = 3",
            ("nothing to see",),
            3,
            "it, or the row before it, was changed after it was written",
        ),
        ("UPDATE audit SET at = at + 1 WHERE id = 1", (), 1, "it, or the row before it, was"),
        # a row rewritten with a digest recomputed for its new content breaks the next one
        ("UPDATE audit SET actor = 'mallory', digest = ? WHERE id = 2", (), 3, "the row before"),
        ("DELETE FROM audit WHERE id = 3", (), 4, "row 3 before it was removed"),
        ("DELETE FROM audit WHERE id IN (2, 3)", (), 4, "rows 2..3 before it were removed"),
        ("DELETE FROM audit WHERE id = 1", (), 2, "row 1 before it was removed"),
    ],
)
def test_a_tampered_row_breaks_the_chain_there(
    store: Store, statement: str, args: tuple[object, ...], broken_at: int, problem: str
) -> None:
    fill(store)
    if "digest = ?" in statement:
        one = Audit.get_by_id(1)
        two = Audit.get_by_id(2)
        forged = {**two.__data__, "actor": "mallory"}
        args = (auditlog.link(one.digest, 2, forged),)
    sql(store, statement, *args)
    v = store.verify_audit()
    assert not v.intact and v.broken_at == broken_at and problem in (v.problem or "")
    assert v.line().startswith(f"audit log: the chain breaks at row {broken_at}: ")


def test_an_inserted_row_breaks_the_chain(store: Store) -> None:
    fill(store, 3)
    sql(
        store,
        "INSERT INTO audit (id, at, actor, source, action, target, result, detail, digest)"
        " VALUES (10, 2000, 'mallory', 'cli', 'login', '', 'ok', '', ?)",
        "f" * 64,
    )
    v = store.verify_audit()
    assert not v.intact and v.broken_at == 10


def test_a_cut_off_end_is_a_shorter_whole_chain_whose_head_differs(store: Store) -> None:
    fill(store)
    before = store.verify_audit()
    sql(store, "DELETE FROM audit WHERE id > 3")
    after = store.verify_audit()
    # what only an outside record of the head shows
    assert after.intact and after.head_id == 3 and after.head != before.head


def test_rows_written_by_many_threads_make_one_chain(tmp_path: Path) -> None:
    store = Store(tmp_path / "data")

    def write(n: int) -> None:  # each thread on its own connection (peewee's per thread)
        for i in range(20):
            store.audit(f"t{n}", "x", detail=str(i))

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    v = store.verify_audit()
    assert v.intact and v.rows == 80
    store.close()


def test_a_database_from_before_the_chain_gets_one(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    db = sqlite3.connect(data / "config.db")
    db.execute(
        "CREATE TABLE audit (id INTEGER NOT NULL PRIMARY KEY, at REAL NOT NULL,"
        " actor TEXT NOT NULL, source TEXT NOT NULL, action TEXT NOT NULL,"
        " target TEXT NOT NULL, result TEXT NOT NULL, detail TEXT NOT NULL)"
    )
    db.executemany(
        "INSERT INTO audit VALUES (?, ?, ?, 'cli', 'config.commit', '', 'ok', '')",
        [(1, 1000.0, "alice"), (2, 1001.0, "bob"), (4, 1002.0, "carol")],
    )
    db.commit()
    db.close()
    store = Store(data)
    v = store.verify_audit()
    assert v.intact and v.rows == 3 and v.head_id == 4
    store.audit("dave", "login")
    v = store.verify_audit()
    assert v.intact and v.rows == 4 and v.head_id == 5
    store.close()
    again = Store(data)  # upgrading twice is a no-op
    assert again.verify_audit().head == v.head
    again.close()


def test_pruning_keeps_the_quota_and_the_chain(store: Store) -> None:
    fill(store, 30)  # at 1000 .. 1029
    assert store.prune_audit(max_rows=40, keep_s=0, now=5000) == 0  # within the quota
    gone = store.prune_audit(max_rows=20, keep_s=0, now=5000)
    assert gone == 12  # down to 90 % of 20
    assert [a.id for a in Audit.select().order_by(Audit.id)][:1] == [13]
    v = store.verify_audit()
    assert v.intact and v.rows == 18 and v.head_id == 30
    store.audit("later", "login")
    assert store.verify_audit().intact
    # an anchor that counts every row pruned
    store.prune_audit(max_rows=10, keep_s=0, now=5000)
    assert AuditAnchor.get_by_id(1).pruned_rows == 12 + 10 and store.verify_audit().intact


def test_pruning_never_takes_a_row_younger_than_the_retention(store: Store) -> None:
    fill(store, 30)  # at 1000 .. 1029
    # only the rows at least 1020 s old at 2025 (at <= 1005) may go: 6 of the 12 wanted
    assert store.prune_audit(max_rows=20, keep_s=1020, now=2025) == 6
    assert store.prune_audit(max_rows=20, keep_s=1e6, now=2025) == 0
    assert Audit.select().count() == 24 and store.verify_audit().intact


def test_after_pruning_a_row_removed_behind_the_anchor_still_shows(store: Store) -> None:
    fill(store, 30)
    store.prune_audit(max_rows=20, keep_s=0, now=5000)
    sql(store, "DELETE FROM audit WHERE id = 13")  # the first row the chain goes on with
    v = store.verify_audit()
    assert not v.intact and v.broken_at == 14 and v.problem == "row 13 before it was removed"


# -- security events ------------------------------------------------------------------


@pytest.fixture
def repeats(monkeypatch: pytest.MonkeyPatch) -> auditlog.Repeats:
    fresh = auditlog.Repeats()
    monkeypatch.setattr("appliance.state.db.SECURITY_REPEATS", fresh)
    return fresh


def security(store: Store) -> list[tuple[str, str, str]]:
    return [(e.kind, e.source, e.message) for e in reversed(store.events(100, "security."))]


def test_a_failed_login_or_refusal_is_a_security_event_too(
    store: Store, repeats: auditlog.Repeats
) -> None:
    store.audit("alice", "login", result="ok", source="web:10.0.0.5", at=1000)
    store.audit("config.commit", "config.commit", result="failed", at=1001)  # not security
    store.audit(
        "unknown user",
        "login",
        result="failed",
        detail="name #ab12",
        source="web:10.0.0.9",
        at=1002,
    )
    store.audit(
        "bob",
        "auth.denied",
        target="POST /api/users",
        result="denied",
        detail="needs the admin role (is viewer)",
        source="web:10.0.0.7",
        at=1003,
    )
    assert security(store) == [
        ("security.login", "web", "login failed for unknown user from web:10.0.0.9 (name #ab12)"),
        (
            "security.auth.denied",
            "web",
            "auth.denied denied for bob from web:10.0.0.7: POST /api/users "
            "(needs the admin role (is viewer))",
        ),
    ]
    assert {e.severity for e in store.events(100, "security.")} == {"warning"}


def test_a_client_retrying_makes_one_event_a_minute_that_counts_the_rest(
    store: Store, repeats: auditlog.Repeats
) -> None:
    for i in range(601):  # every 100 ms for a minute: 1000.0 .. 1060.0
        store.audit(
            "admin", "login", result="throttled", source="opcua:10.0.0.66", at=1000 + i / 10
        )
    store.audit(
        "admin", "login", result="failed", source="opcua:10.0.0.67", at=1001
    )  # another source
    got = [m for _, _, m in security(store)]
    assert got == [
        "login throttled for admin from opcua:10.0.0.66",
        "login throttled for admin from opcua:10.0.0.66; 599 more like it in the last 60 s",
        "login failed for admin from opcua:10.0.0.67",
    ]
    assert len(list(Audit.select())) == 602  # the audit table keeps every row


def test_repeats_forgets_the_oldest_sources_beyond_its_bound() -> None:
    r = auditlog.Repeats(window=60, keys_max=10)
    for i in range(25):
        assert r.offer(("login", "x", f"web:10.0.0.{i}"), 1000) == 0
    assert len(r._last) <= 10
    assert r.offer(("login", "x", "web:10.0.0.24"), 1001) is None  # a recent one is held


def test_rows_whose_chain_is_broken_are_never_pruned(store: Store) -> None:
    """Pruning past a changed row would put it behind an anchor that vouches for it."""
    fill(store, 30)
    sql(store, "UPDATE audit SET detail = 'rewritten' WHERE id = 5")
    with pytest.raises(AuditBroken, match="not pruned: the chain breaks at row 5"):
        store.prune_audit(max_rows=20, keep_s=0, now=5000)
    assert Audit.select().count() == 30 and AuditAnchor.get_or_none(AuditAnchor.id == 1) is None
    assert store.verify_audit().broken_at == 5
