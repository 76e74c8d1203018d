"""`appliance audit verify` and `appliance audit list`, as a person and a script use them."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from test_cli import one_line_error, run

from appliance.state.db import Store


def unit(tmp_path: Path, rows: int = 3) -> Path:
    store = Store(tmp_path / "data")
    for i in range(rows):
        store.audit(f"cli:op{i}", "config.commit", target=f"revision {i + 1}", at=1e9 + i)
    store.audit("web:admin", "login", result="failed", detail="wrong password", at=1e9 + 9)
    store.close()
    return tmp_path


def test_verify_an_intact_log_prints_its_head(tmp_path: Path) -> None:
    cp = run("audit", "verify", data=unit(tmp_path))
    assert cp.returncode == 0, cp.stderr
    first, head = cp.stdout.splitlines()
    assert first.startswith("audit log: 4 rows, chain intact (last row 4, digest ")
    assert head.startswith("head: row 4 ") and len(head.split()[-1]) == 64
    cp = run("audit", "verify", "--json", data=tmp_path)
    got = json.loads(cp.stdout)
    assert got["intact"] is True and got["rows"] == 4 and got["head"] == head.split()[-1]


def test_verify_a_tampered_log_is_one_line_and_exit_11(tmp_path: Path) -> None:
    unit(tmp_path)
    db = sqlite3.connect(tmp_path / "data" / "config.db")
    with db:
        db.execute("UPDATE audit SET result = 'ok' WHERE action = 'login'")
    db.close()
    cp = run("audit", "verify", data=tmp_path)
    one_line_error(cp, 11, "the chain breaks at row 4", "changed after it was written")
    cp = run("audit", "verify", "--json", data=tmp_path)
    assert cp.returncode == 11
    got = json.loads(cp.stdout)
    assert got["intact"] is False and got["broken_at"] == 4 and got["head_id"] == 3


def test_list_newest_first_with_filters(tmp_path: Path) -> None:
    cp = run("audit", "list", data=unit(tmp_path))
    assert cp.returncode == 0, cp.stderr
    lines = cp.stdout.splitlines()
    assert len(lines) == 4
    assert lines[0].split()[0] == "4"
    assert "web:admin [cli] login: failed (wrong password)" in lines[0]
    assert "cli:op0 [cli] config.commit revision 1: ok" in lines[-1]
    cp = run("audit", "list", "--json", "--action", "config.", "-n", "2", data=tmp_path)
    got = json.loads(cp.stdout)
    assert [r["id"] for r in got] == [3, 2] and {r["action"] for r in got} == {"config.commit"}
    assert len(got[0]["digest"]) == 64
    cp = run("audit", "list", "--json", "--actor", "admin", data=tmp_path)
    assert [r["actor"] for r in json.loads(cp.stdout)] == ["web:admin"]


def test_list_refuses_a_bad_limit(tmp_path: Path) -> None:
    cp = run("audit", "list", "-n", "0", data=unit(tmp_path))
    assert cp.returncode == 2 and "Traceback" not in cp.stderr
    assert "--limit" in cp.stderr
