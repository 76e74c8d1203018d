"""The health gate of a trial boot and the report of a fallback (image units run these).

An update boots the new slot with a boot counter (appliance.update.boot). systemd-bless-boot
drops the counter, and so keeps the slot, only once boot-complete.target is reached; the
gate (`python -m appliance.update.gate gate`, appliance-boot-gate.service in the image) is
ordered before that target and passes only when the appliance itself is healthy:

- every role's unit is running (systemd: active/running), none failed, none restarted
  ``MAX_RESTARTS`` times or more;
- the net role has published and applied the confirmed revision (or, with none confirmed,
  the fail-closed ruleset); health has no fault and is past ``booting``;
- all of this holds for ``STABLE_S`` in a row, within ``GATE_WITHIN_S`` of the gate's start.

A role that failed or keeps restarting fails the gate at once; anything else that is not
met by the deadline fails it then. A failed gate is an event (``update.unhealthy``) and the
unit reboots (FailureAction=reboot): systemd-boot counts the next try, and after the last
one boots the previous slot. Back there, `report` (every boot) finds the slot whose tries
ran out above the booted one and reports it once: an event (``update.fallback``) and
``<data>/update/fallback.json``, which stays until a trial boot passes the gate again.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from appliance.paths import Paths
from appliance.roles import ROLE_NAMES
from appliance.update import boot

GATE_WITHIN_S = 600.0  # a unit is healthy within ~1 min; a first boot under TCG takes minutes
STABLE_S = 15.0  # the conditions hold this long in a row (a role crashing at start shows)
POLL_S = 2.0
MAX_RESTARTS = 3
SOURCE = "update"


@dataclass(frozen=True)
class UnitState:
    active: str  # systemd ActiveState
    sub: str  # SubState
    restarts: int  # NRestarts


@dataclass(frozen=True)
class Verdict:
    outcome: Literal["pass", "wait", "fail"]
    reason: str


# --- the pure core --------------------------------------------------------------------------


def judge(
    health: Mapping[str, Any],
    units: Mapping[str, UnitState],
    confirmed: int | None,
    net_applied: Mapping[str, Any] | None,
) -> Verdict:
    """Pass, wait or fail at once, from the health document, each role unit's state, the
    confirmed revision's id and what the net role says it applied."""
    for role, u in sorted(units.items()):
        if u.active == "failed":
            return Verdict("fail", f"the {role} role failed (systemd: {u.sub})")
        if u.restarts >= MAX_RESTARTS:
            return Verdict("fail", f"the {role} role restarted {u.restarts} times")
    for role, u in sorted(units.items()):
        if (u.active, u.sub) != ("active", "running"):
            return Verdict("wait", f"the {role} role is {u.active}/{u.sub}")
    if health.get("state") == "booting":
        return Verdict("wait", "health: still booting")
    for r in health.get("reasons") or []:
        if r.get("severity") == "fault":
            return Verdict("wait", f"health fault: {r.get('message')} ({r.get('code')})")
    applied = net_applied or {}
    if confirmed is None:
        if not applied:
            return Verdict("wait", "the net role has applied nothing yet")
    elif applied.get("fail_closed") or applied.get("revision") != confirmed:
        return Verdict("wait", f"the net role has not applied the confirmed revision {confirmed}")
    return Verdict("pass", f"healthy ({health.get('state')})")


def find_fallback(entries: Mapping[str, boot.Entry], booted: str) -> boot.Entry | None:
    """The slot that was made primary above the booted one and ran out of tries: the unit
    fell back from it. None when the booted slot is the newest one."""
    current = entries.get(booted)
    for e in boot.boot_order(entries.values()):
        if e.bootname != booted and e.bad and (current is None or e.version > current.version):
            return e
    return None


def run_gate(
    observe: Callable[[], Verdict],
    clock: Callable[[], float],
    sleep: Callable[[float], None],
    within: float = GATE_WITHIN_S,
    stable: float = STABLE_S,
) -> Verdict:
    """Observe until the verdict is pass for `stable` seconds in a row (pass), fail, or the
    deadline passes (fail, with the last reason)."""
    deadline = clock() + within
    passing_since: float | None = None
    last = Verdict("wait", "nothing observed yet")
    while True:
        now = clock()
        last = observe()
        if last.outcome == "fail":
            return last
        if last.outcome == "pass":
            passing_since = now if passing_since is None else passing_since
            if now - passing_since >= stable:
                return last
        else:
            passing_since = None
        if now >= deadline:
            return Verdict("fail", f"not healthy within {within:.0f} s: {last.reason}")
        sleep(POLL_S)


# --- the adapters ---------------------------------------------------------------------------


def unit_states(roles: tuple[str, ...] = ROLE_NAMES) -> dict[str, UnitState]:
    """Each role unit's state, from one `systemctl show`."""
    names = [f"appliance-{r}.service" for r in roles]
    cp = subprocess.run(
        ["systemctl", "show", "--property=Id,ActiveState,SubState,NRestarts", *names],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    found: dict[str, dict[str, str]] = {}
    for block in cp.stdout.strip().split("\n\n"):
        props = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        if props.get("Id"):
            found[props["Id"]] = props
    out = {}
    for role, name in zip(roles, names, strict=True):
        p = found.get(name, {})
        restarts = p.get("NRestarts", "0")
        out[role] = UnitState(
            p.get("ActiveState", "unknown"),
            p.get("SubState", "unknown"),
            int(restarts) if restarts.isdigit() else 0,
        )
    return out


def observe_appliance(paths: Paths) -> Verdict:
    from appliance.agent.role import compute_health
    from appliance.state import revisions as revs
    from appliance.state.db import borrowed_store
    from appliance.state.live import LiveState

    live = LiveState(paths.run_dir)
    agent = live.read("agent") or {}
    if live.alive("agent") and agent.get("health"):
        health = agent["health"]
    else:
        health = compute_health(paths).as_dict()
    with borrowed_store(paths.data_dir) as store:
        rev = revs.confirmed(store)
    net = live.read("net") or {}
    return judge(health, unit_states(), rev.id if rev else None, net.get("applied"))


def booted_slot(cmdline: Path) -> str:
    try:
        return boot.get_current(cmdline.read_text())
    except (OSError, boot.HandlerError):
        return "?"


def event(paths: Paths, kind: str, message: str, severity: str, data: dict) -> None:
    from appliance.state.db import borrowed_store

    with borrowed_store(paths.data_dir) as store:
        store.event(kind, message, source=SOURCE, severity=severity, data=data)


def fallback_file(paths: Paths) -> Path:
    return paths.data_dir / "update" / "fallback.json"


def cmd_gate(paths: Paths, within: float, cmdline: Path) -> int:
    slot = booted_slot(cmdline)
    print(f"gate: slot {slot}: waiting up to {within:.0f} s for the appliance to be healthy")
    verdict = run_gate(lambda: observe_appliance(paths), time.monotonic, time.sleep, within)
    if verdict.outcome == "pass":
        fallback_file(paths).unlink(missing_ok=True)
        event(paths, "update.healthy", f"slot {slot} is healthy: {verdict.reason}", "info",
              {"slot": slot})  # fmt: skip
        print(f"gate: slot {slot} passes: {verdict.reason}")
        return 0
    msg = f"slot {slot} is not healthy: {verdict.reason}; rebooting (the try is counted)"
    event(paths, "update.unhealthy", msg, "error", {"slot": slot, "reason": verdict.reason})
    print(f"gate: {msg}", file=sys.stderr)
    return 1


def cmd_report(paths: Paths, entries_json: Path, cmdline: Path) -> int:
    """`entries_json`: what `rauc-boot-handler list` printed (the ESP is root's only; the
    unit runs that part as root, this one as the appliance user, who owns the databases)."""
    slot = booted_slot(cmdline)
    try:
        entries = boot.entries_from_json(entries_json.read_text())
    except (OSError, ValueError, KeyError, TypeError) as e:
        print(f"update report: cannot read the loader entries ({entries_json}): {e}",
              file=sys.stderr)  # fmt: skip
        return 1
    fell = find_fallback(entries, slot)
    if fell is None:
        return 0
    key = f"{fell.filename} version {fell.version}"
    path = fallback_file(paths)
    try:
        if json.loads(path.read_text()).get("entry") == key:
            return 0  # reported already
    except (OSError, ValueError):
        pass
    msg = (
        f"the update in slot {fell.bootname} did not get healthy in its tries "
        f"({fell.tries_done or boot.TRIES} boots): the unit fell back to slot {slot}"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"entry": key, "slot": fell.bootname, "booted": slot,
                               "message": msg, "at": time.time()}))  # fmt: skip
    os.replace(tmp, path)
    event(paths, "update.fallback", msg, "warning", {"slot": fell.bootname, "booted": slot})
    print(f"update report: {msg}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m appliance.update.gate")
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("gate", help="wait for health; exit 0 when healthy, 1 when not")
    g.add_argument("--within", type=float, default=GATE_WITHIN_S, help="seconds")
    r = sub.add_parser("report", help="report a fallback from a slot whose tries ran out")
    r.add_argument("--entries", required=True, help="the JSON `rauc-boot-handler list` printed")
    args = ap.parse_args(argv)
    paths = Paths.resolve(None, None)
    cmdline = Path(os.environ.get("APPLIANCE_CMDLINE") or boot.DEFAULT_CMDLINE)
    if args.cmd == "gate":
        if not 0 < args.within <= 86400:
            ap.error("--within must be between 0 and 86400 seconds")
        return cmd_gate(paths, args.within, cmdline)
    return cmd_report(paths, Path(args.entries), cmdline)


if __name__ == "__main__":
    sys.exit(main())
