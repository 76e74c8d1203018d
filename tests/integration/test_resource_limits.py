"""The unit files' resource limits (MemoryHigh, TasksMax) fit what each role really uses,
with room to spare: every role runs in the lab with devices polled at 4 Hz, a conduit and
the northbound OPC UA server on, and each role's peak memory (VmHWM of its process and
the processes it started: the web role's gunicorn workers) stays below half its unit's
MemoryHigh, its threads below half its TasksMax (IEC 62443-4-2 CR 7.1, 7.2). A limit set
below what a role needs would kill it on the unit; this test catches that before an image
is built."""

from __future__ import annotations

import re
import time
from pathlib import Path

from labkit import PLC1, PLC2, Appliance, config

from appliance.roles import ROLE_NAMES

SYSTEM = Path(__file__).resolve().parents[2] / "system" / "systemd"
SETTLE_S = 20.0

_UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def unit_limit(role: str, key: str) -> int:
    text = (SYSTEM / f"appliance-{role}.service").read_text()
    m = re.search(rf"^{key}=(\d+)([KMG]?)$", text, re.M)
    assert m, f"appliance-{role}.service has no {key}="
    return int(m.group(1)) * _UNITS.get(m.group(2), 1)


def _status(pid: int) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        out[key] = value.strip()
    return out


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        out.extend(int(c) for c in text)
    return out


def _tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(_children(p))
    return out


def role_pids(daemon: int) -> dict[str, int]:
    """The supervisor's children, by the role each runs (`appliance run --roles X`)."""
    found: dict[str, int] = {}
    for child in _children(daemon):
        argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
        if b"--roles" in argv:
            found[argv[argv.index(b"--roles") + 1].decode()] = child
    return found


def usage(pid: int) -> tuple[int, int]:
    """(peak memory in bytes, threads) of a role: its process and every one it started."""
    peak = threads = 0
    for p in _tree(pid):
        st = _status(p)
        peak += int(st["VmHWM"].split()[0]) * 1024
        threads += int(st["Threads"])
    return peak, threads


def test_every_role_stays_well_inside_its_unit_limits(every_role: Appliance) -> None:
    appliance = every_role
    tags = [
        {"name": f"r{n}", "table": "holding", "address": n, "publish": "every-poll"}
        for n in range(20)
    ]
    devices = [
        {"name": name, "protocol": "modbus-tcp", "address": f"{host}:502", "poll_interval": 0.25,
         "tags": [dict(t) for t in tags]}
        for name, host in (("plc1", PLC1), ("plc2", PLC2))
    ]  # fmt: skip
    appliance.commit(config(devices=devices))
    time.sleep(SETTLE_S)
    pids = role_pids(appliance.pid())
    assert sorted(pids) == sorted(ROLE_NAMES), pids
    rows, problems = [], []
    for role, pid in sorted(pids.items()):
        peak, threads = usage(pid)
        high, tasks = unit_limit(role, "MemoryHigh"), unit_limit(role, "TasksMax")
        rows.append(
            f"{role:12} peak {peak >> 20:4} MiB of {high >> 20} MiB, {threads:3} tasks of {tasks}"
        )
        if peak > high // 2:
            problems.append(f"{role}: peak {peak >> 20} MiB is over half of MemoryHigh")
        if threads > tasks // 2:
            problems.append(f"{role}: {threads} tasks is over half of TasksMax")
    print("\n".join(rows))
    assert problems == [], "\n".join(problems + rows)
