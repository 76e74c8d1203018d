"""appliance.update.gate: the health gate's verdicts, its timing, and the fallback report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from appliance.paths import Paths
from appliance.roles import ROLE_NAMES
from appliance.update import boot, gate

RUNNING = gate.UnitState("active", "running", 0)
OK = {"state": "degraded", "reasons": [{"code": "not-configured", "severity": "warning",
                                        "message": "no configuration applied yet"}]}  # fmt: skip


def units(**changed: gate.UnitState) -> dict[str, gate.UnitState]:
    return {r: changed.get(r, RUNNING) for r in ROLE_NAMES}


def test_a_factory_unit_with_every_role_running_passes() -> None:
    v = gate.judge(OK, units(), None, {"fail_closed": True})
    assert v == gate.Verdict("pass", "healthy (degraded)")


def test_the_confirmed_revision_must_be_applied() -> None:
    assert gate.judge(OK, units(), 4, {"revision": 4, "state": "confirmed"}).outcome == "pass"
    v = gate.judge(OK, units(), 4, {"revision": 3})
    assert v == gate.Verdict("wait", "the net role has not applied the confirmed revision 4")
    assert gate.judge(OK, units(), 4, {"fail_closed": True}).outcome == "wait"
    assert gate.judge(OK, units(), None, None).outcome == "wait"


@pytest.mark.parametrize(
    ("unit", "outcome", "reason"),
    [
        (gate.UnitState("failed", "failed", 5), "fail", "the field role failed (systemd: failed)"),
        (gate.UnitState("active", "running", 3), "fail", "the field role restarted 3 times"),
        (gate.UnitState("activating", "auto-restart", 1), "wait",
         "the field role is activating/auto-restart"),
        (gate.UnitState("inactive", "dead", 0), "wait", "the field role is inactive/dead"),
    ],
)  # fmt: skip
def test_a_role_that_failed_fails_at_once_one_not_running_waits(
    unit: gate.UnitState, outcome: str, reason: str
) -> None:
    assert gate.judge(OK, units(field=unit), None, {"fail_closed": True}) == gate.Verdict(
        outcome, reason
    )


def test_health_booting_or_with_a_fault_waits() -> None:
    booting = {"state": "booting", "reasons": []}
    assert gate.judge(booting, units(), None, {"fail_closed": True}).outcome == "wait"
    fault = {"state": "fault", "reasons": [{"code": "forwarding-off", "severity": "fault",
                                            "message": "IP forwarding is off"}]}  # fmt: skip
    v = gate.judge(fault, units(), None, {"fail_closed": True})
    assert v == gate.Verdict("wait", "health fault: IP forwarding is off (forwarding-off)")


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.t += s


def test_the_gate_passes_only_after_the_verdict_held_for_the_window() -> None:
    clock = Clock()
    seen = []

    def observe() -> gate.Verdict:
        seen.append(clock.t)
        # waits 10 s, passes 4 s, a blip, then passes for good
        elapsed = clock.t - 1000
        if elapsed < 10 or 14 <= elapsed < 16:
            return gate.Verdict("wait", "not yet")
        return gate.Verdict("pass", "healthy")

    v = gate.run_gate(observe, clock, clock.sleep, within=600, stable=15)
    assert v.outcome == "pass"
    assert 16 + 15 <= clock.t - 1000 <= 16 + 15 + gate.POLL_S, "the window restarts after a blip"


def test_the_gate_fails_at_the_deadline_with_the_last_reason_or_at_once() -> None:
    clock = Clock()
    v = gate.run_gate(lambda: gate.Verdict("wait", "the opcua role is activating/start"),
                      clock, clock.sleep, within=60)  # fmt: skip
    assert v == gate.Verdict("fail", "not healthy within 60 s: the opcua role is activating/start")
    assert 60 <= clock.t - 1000 <= 62
    clock = Clock()
    v = gate.run_gate(lambda: gate.Verdict("fail", "the web role failed"), clock, clock.sleep)
    assert v.reason == "the web role failed" and clock.t == 1000


def E(name: str, left: int | None, done: int, version: int) -> boot.Entry:
    return boot.Entry(name, left, done, version)


def test_a_fallback_is_the_newer_slot_whose_tries_ran_out() -> None:
    fell = {"a": E("a", None, 0, 2), "b": E("b", 0, 3, 3)}
    assert gate.find_fallback(fell, "a") == E("b", 0, 3, 3)
    assert gate.find_fallback({"a": E("a", None, 0, 2), "b": E("b", None, 0, 3)}, "b") is None
    # marked bad by hand (an older slot): no fallback from it
    assert gate.find_fallback({"a": E("a", None, 0, 4), "b": E("b", 0, 0, 3)}, "a") is None


def test_the_report_says_it_once_and_the_gate_clears_it(tmp_path: Path) -> None:
    paths = Paths(tmp_path / "data", tmp_path / "run")
    paths.data_dir.mkdir()
    cmdline = tmp_path / "cmdline"
    cmdline.write_text("root=PARTUUID=x ro rauc.slot=a\n")
    entries = tmp_path / "entries.json"
    entries.write_text(json.dumps({
        "a": {"tries_left": None, "tries_done": 0, "version": 2},
        "b": {"tries_left": 0, "tries_done": 3, "version": 3},
    }))  # fmt: skip
    assert gate.cmd_report(paths, entries, cmdline) == 0
    assert gate.cmd_report(paths, entries, cmdline) == 0
    from appliance.state.db import borrowed_store

    with borrowed_store(paths.data_dir) as store:
        got = [e for e in store.events(10) if e.kind == "update.fallback"]
    assert len(got) == 1, "reported twice"
    assert got[0].message == (
        "the update in slot b did not get healthy in its tries (3 boots): "
        "the unit fell back to slot a"
    )
    report = json.loads(gate.fallback_file(paths).read_text())
    assert report["slot"] == "b" and report["booted"] == "a"


def test_the_report_with_unreadable_entries_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = Paths(tmp_path / "data", tmp_path / "run")
    assert gate.cmd_report(paths, tmp_path / "missing.json", tmp_path / "cmdline") == 1
    err = capsys.readouterr().err
    assert err.startswith("update report: cannot read the loader entries") and err.count("\n") == 1
