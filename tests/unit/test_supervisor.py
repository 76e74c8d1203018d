"""The supervisor restarts a role that dies, with back-off, and says so in an event."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from appliance import daemon
from appliance.agent import reset
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
    reset.bump_generation(sup.paths.data_dir)  # what the reset does last
    sup.step(t0 + 1)
    after = {r: c.proc.pid for r, c in sup.children.items()}
    assert all(before[r] != after[r] for r in before)
    assert all(before_pid_gone(pid) for pid in before.values())
    assert Event.select().where(Event.kind == "role.restarted").count() == 1
    sup.step(t0 + 2)  # once: the new children belong to the new generation
    assert {r: c.proc.pid for r, c in sup.children.items()} == after
    assert Event.select().where(Event.kind == "role.restarted").count() == 1
    sup.shutdown(grace=5)


def before_pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


class ResetExits(daemon.Supervisor):
    """`agent` exits with EXIT_RESET (it saw the reset first), the others sleep."""

    def _spawn(self, child: daemon.Child, now: float) -> None:
        code = (
            f"import sys; sys.exit({daemon.EXIT_RESET})"
            if child.role == "agent" and child.restarts == 0
            else "import time; time.sleep(60)"
        )
        child.proc = subprocess.Popen([sys.executable, "-c", code])
        child.started_at = now


def test_a_role_that_exits_for_a_reset_is_restarted_at_once(tmp_path: Path) -> None:
    sup = ResetExits(Paths(tmp_path / "d", tmp_path / "r"), ["agent", "web"])
    t0 = time.time()
    sup.step(t0)
    sup.children["agent"].proc.wait(10)
    sup.step(t0 + 0.1)
    agent = sup.children["agent"]
    assert agent.proc is not None  # again at once: no back-off, not a death
    assert agent.in_a_row == 0 and agent.last_exit == daemon.EXIT_RESET
    (event,) = Event.select().where(Event.kind == "role.restarted")
    assert "agent role stopped for a factory reset" in event.message
    sup.shutdown(grace=5)
