"""The supervisor restarts a role that dies, with back-off, and says so in an event."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from appliance import daemon
from appliance.errors import ApplianceError
from appliance.paths import Paths
from appliance.state.db import Event


def test_restart_delay_doubles_and_caps() -> None:
    assert [daemon.restart_delay(n) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]


def test_unknown_role_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ApplianceError, match="unknown role 'nett'"):
        daemon.run(Paths(tmp_path / "d", tmp_path / "r"), ["nett"])


class Scripted(daemon.Supervisor):
    """Children are tiny Python processes: `die` exits 3 at once, others sleep."""

    def _spawn(self, child: daemon.Child, now: float) -> None:
        code = "import sys; sys.exit(3)" if child.role == "field" else "import time; time.sleep(60)"
        child.proc = subprocess.Popen([sys.executable, "-c", code])
        child.started_at = now


def test_a_dying_role_is_restarted_with_back_off_and_an_event(tmp_path: Path) -> None:
    sup = Scripted(Paths(tmp_path / "d", tmp_path / "r"), ["field", "agent"])
    t0 = time.time()
    sup.step(t0)  # both start
    agent_pid = sup.children["agent"].proc.pid
    sup.children["field"].proc.wait(10)
    sup.step(t0 + 0.1)  # field died: restart scheduled in 1 s
    assert sup.children["field"].proc is None
    assert sup.children["field"].next_start == pytest.approx(t0 + 1.1)
    sup.step(t0 + 0.5)
    assert sup.children["field"].proc is None  # not before the back-off
    sup.step(t0 + 1.2)
    assert sup.children["field"].proc is not None
    sup.children["field"].proc.wait(10)
    sup.step(t0 + 1.3)
    assert sup.children["field"].next_start == pytest.approx(t0 + 3.3)  # 2 s the second time
    assert sup.children["agent"].proc.pid == agent_pid  # the others are left alone
    events = list(Event.select().where(Event.kind == "role.restarted"))
    assert len(events) == 2
    assert "field role died (exit status 3)" in events[0].message
    assert events[0].severity == "warning"
    sup.shutdown(grace=5)
    assert sup.children["agent"].proc.poll() is not None


def test_run_stops_children_when_asked(tmp_path: Path) -> None:
    sup = Scripted(Paths(tmp_path / "d", tmp_path / "r"), ["agent", "web"])
    stop = threading.Event()
    t = threading.Thread(target=sup.run, args=(stop,))
    t.start()
    deadline = time.time() + 10
    while time.time() < deadline and not all(c.proc for c in sup.children.values()):
        time.sleep(0.05)
    doc = sup.live.read("supervisor")
    assert doc and doc["roles"] == ["agent", "web"]
    procs = [c.proc for c in sup.children.values()]
    stop.set()
    t.join(15)
    assert not t.is_alive()
    assert all(p.poll() is not None for p in procs)
    assert sup.live.read("supervisor") is None


def test_a_factory_reset_restarts_every_role(tmp_path: Path) -> None:
    sup = Scripted(Paths(tmp_path / "d", tmp_path / "r"), ["agent", "web"])
    t0 = time.time()
    sup.step(t0)
    before = {r: c.proc.pid for r, c in sup.children.items()}
    sup.paths.run_dir.mkdir(parents=True, exist_ok=True)
    (sup.paths.run_dir / "factory-reset.json").write_text("{}")
    sup.step(t0 + 1)
    after = {r: c.proc.pid for r, c in sup.children.items()}
    assert all(before[r] != after[r] for r in before)
    assert not (sup.paths.run_dir / "factory-reset.json").exists()
    assert Event.select().where(Event.kind == "role.restarted").count() == 1
    sup.shutdown(grace=5)
