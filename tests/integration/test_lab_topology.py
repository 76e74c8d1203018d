"""The lab for real: namespaces, veths with fixed MACs, live PLC simulators, up/down/up again."""

from __future__ import annotations

import json
import os
import struct
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.errors import LabError
from appliance.lab import topology
from appliance.lab.topology import LabSpec
from appliance.proc import run

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (creates network namespaces)"),
]

PREFIX = "tl"

# Reads every table of each PLC given on the command line, waits, reads holding again.
MODBUS_CLIENT = r"""
import json, sys, time
from pymodbus.client import ModbusTcpClient

def read(c, what, address, count, unit=1):
    r = getattr(c, "read_" + what)(address, count=count, device_id=unit)
    assert not r.isError(), f"{what}: {r}"
    return r.bits[:count] if what in ("coils", "discrete_inputs") else r.registers

clients = {h: ModbusTcpClient(h, port=502, timeout=3) for h in sys.argv[1:]}
out = {}
for host, c in clients.items():
    assert c.connect(), f"cannot connect to {host}"
    out[host] = {
        "first": read(c, "holding_registers", 0, 32),
        "input": read(c, "input_registers", 0, 32),
        "unit0": read(c, "holding_registers", 2, 3, unit=0),
        "coils": read(c, "coils", 0, 8),
        "di": read(c, "discrete_inputs", 0, 8),
    }
time.sleep(2.2)
for host, c in clients.items():
    out[host]["second"] = read(c, "holding_registers", 0, 32)
    c.close()
print(json.dumps(out))
"""

READ_LINE = r"""
import socket, sys
with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3) as s:
    print(s.makefile().readline(), end="")
"""


def _mgmt_busy() -> bool:
    """10.99.0.1 held by another lab (another prefix) on this host: test without mgmt then."""
    cp = run(["ip", "-j", "-4", "addr", "show", "to", "10.99.0.1/32"])
    holders = [i["ifname"] for i in json.loads(cp.stdout or "[]") if i.get("addr_info")]
    return any(name != f"{PREFIX}-mgmt" for name in holders)


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabSpec]:
    lab = LabSpec(prefix=PREFIX, plcs=2, mgmt=not _mgmt_busy(), root=tmp_path_factory.mktemp("lab"))
    yield lab
    topology.down(lab)
    assert not topology.exists(lab)


@pytest.fixture
def lab(spec: LabSpec) -> LabSpec:
    """The lab, up (again, if a test took it down)."""
    if not topology.alive(spec, "plc"):
        topology.up(spec)
    return spec


def _links(status: dict, ns: str) -> dict[str, dict]:
    return {link["name"]: link for link in status["links"][ns]}


def _decode_float(regs: list[int]) -> float:
    return struct.unpack(">f", struct.pack(">HH", *regs))[0]


def test_spec_rejects_bad_names() -> None:
    with pytest.raises(LabError):
        LabSpec(prefix="Bad/Name")
    with pytest.raises(LabError):
        LabSpec(prefix="muchtoolong")
    with pytest.raises(LabError):
        LabSpec(plcs=0)
    assert LabSpec(plcs=3).plc_addresses == ["192.168.50.10", "192.168.50.11", "192.168.50.12"]


def test_namespaces_and_links(lab: LabSpec) -> None:
    status = topology.status(lab)
    assert status["namespaces"] == {"tl-it": True, "tl-app": True, "tl-ot": True}
    assert status["processes"]["plc"]["alive"]

    it = _links(status, "tl-it")
    assert it["lan0"]["mac"] == "02:a0:00:00:01:02"
    assert it["lan0"]["addresses"] == ["10.10.0.2/24"]
    assert it["lo"]["up"]

    app = _links(status, "tl-app")
    assert app["it0"]["mac"] == topology.IT_MAC == "02:a0:00:00:01:01"
    assert app["ot0"]["mac"] == topology.OT_MAC == "02:a0:00:00:02:01"
    for name in ("it0", "ot0"):
        assert not app[name]["up"] and app[name]["addresses"] == []
    assert app["lo"]["up"]

    ot = _links(status, "tl-ot")
    assert ot["plcnet0"]["addresses"] == ["192.168.50.10/24", "192.168.50.11/24"]
    routes = topology.ns_run(lab.ns_ot, ["ip", "-j", "-4", "route", "show", "default"])
    assert json.loads(routes.stdout)[0]["gateway"] == "192.168.50.1"


def test_management_link(lab: LabSpec) -> None:
    if not lab.mgmt:
        pytest.skip("10.99.0.1 is held by another lab on this host; lab runs without mgmt")
    status = topology.status(lab)
    app = _links(status, "tl-app")
    assert app["mgmt0"]["mac"] == topology.MGMT_MAC == "02:a0:00:00:99:01"
    assert not app["mgmt0"]["up"] and app["mgmt0"]["addresses"] == []
    (root,) = status["links"]["root"]
    assert root["name"] == "tl-mgmt" and root["up"] and root["addresses"] == ["10.99.0.1/30"]
    v4 = json.loads(run(["ip", "-j", "-4", "route", "show", "dev", "tl-mgmt"]).stdout)
    assert [r["dst"] for r in v4] == ["10.99.0.0/30"]
    v6 = run(["ip", "-j", "-6", "route", "show", "table", "all", "dev", "tl-mgmt"])
    assert json.loads(v6.stdout or "[]") == []
    assert Path("/proc/sys/net/ipv4/conf/tl-mgmt/forwarding").read_text().strip() == "0"


def test_plcs_serve_live_registers(lab: LabSpec) -> None:
    cp = topology.ns_run(lab.ns_ot, [sys.executable, "-c", MODBUS_CLIENT, *lab.plc_addresses])
    result = json.loads(cp.stdout)
    for number, host in enumerate(lab.plc_addresses, start=1):
        plc = result[host]
        first, second = plc["first"], plc["second"]
        assert second[0] - first[0] >= 1, "the counter does not advance"
        assert first[2:5] == [1234, 5678, 42] == plc["unit0"]
        sine = struct.unpack(">h", struct.pack(">H", first[1]))[0]
        assert -1000 <= sine <= 1000
        assert 15 <= _decode_float(first[10:12]) <= 25
        name = struct.pack(">8H", *first[20:28]).rstrip(b"\0").decode()
        assert name == f"LAB-PLC-{number:02d}"
        assert first[30] in (0, 100)
        assert plc["input"][2:5] == first[2:5] and plc["input"][20:28] == first[20:28]
        assert sum(plc["coils"]) == 1
        assert plc["di"] == [True, False, True, False, False, True, False, True]


def test_other_service_answers(lab: LabSpec) -> None:
    for host in lab.plc_addresses:
        cp = topology.ns_run(lab.ns_ot, [sys.executable, "-c", READ_LINE, host, "8080"])
        assert cp.stdout == f"other-service {host}\n"


def test_wiring_through_a_configured_appliance(lab: LabSpec) -> None:
    """Configure the appliance's namespace by hand (as its net role would): IT reaches a PLC."""
    app = lab.ns_app
    setup = "addr add 10.10.0.1/24 dev it0\naddr add 192.168.50.1/24 dev ot0\n"
    setup += "link set it0 up\nlink set ot0 up\n"
    teardown = "link set it0 down\nlink set ot0 down\naddr flush dev it0\naddr flush dev ot0\n"
    try:
        topology.ns_run(app, ["ip", "-batch", "-"], input=setup)
        topology.ns_run(app, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
        topology.wait_tcp(lab.ns_it, "192.168.50.10", 502, timeout=5)
        cp = topology.ns_run(lab.ns_it, [sys.executable, "-c", READ_LINE, "192.168.50.11", "8080"])
        assert cp.stdout == "other-service 192.168.50.11\n"
        assert "connection from 10.10.0.2:" in topology.log_tail(lab, "plc", 5)
    finally:
        topology.ns_run(app, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=0"])
        topology.ns_run(app, ["ip", "-batch", "-"], input=teardown)
    with pytest.raises(LabError, match="accepts no connection"):
        topology.wait_tcp(lab.ns_it, "192.168.50.10", 502, timeout=0.3)


def test_spawn_stop_and_sigkill(lab: LabSpec) -> None:
    pid = topology.spawn(lab, lab.ns_app, "sleeper", ["sleep", "60"])
    assert topology.alive(lab, "sleeper")
    assert str(pid) in run(["ip", "netns", "pids", lab.ns_app]).stdout.split()
    topology.stop(lab, "sleeper")
    assert not topology.alive(lab, "sleeper")
    assert not (lab.root / "pids" / "sleeper.pid").exists()
    assert "start in tl-app: sleep 60" in topology.log_tail(lab, "sleeper")

    ignore_term = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN)"
    stubborn = [sys.executable, "-c", f"{ignore_term}; print('holding'); time.sleep(60)"]
    topology.spawn(lab, lab.ns_app, "stubborn", stubborn)
    deadline = time.monotonic() + 5
    while topology.log_tail(lab, "stubborn", 1) != "holding" and time.monotonic() < deadline:
        time.sleep(0.02)  # the trap is set once it has said so
    started = time.monotonic()
    topology.stop(lab, "stubborn", timeout=0.3)
    assert not topology.alive(lab, "stubborn")
    assert 0.3 <= time.monotonic() - started < 3  # SIGTERM ignored, SIGKILL after 0.3 s
    assert topology.log_tail(lab, "stubborn", 1) == "holding"


def test_up_again_replaces_the_lab_then_down_removes_all(lab: LabSpec) -> None:
    old_plc = int((lab.root / "pids" / "plc.pid").read_text().split()[0])
    stray = topology.spawn(lab, lab.ns_it, "stray", ["sleep", "60"])
    (lab.root / "pids" / "stray.pid").unlink()  # a process only `ip netns pids` still knows
    started = time.monotonic()
    topology.up(lab)
    took = time.monotonic() - started
    print(f"lab up (with leftovers) took {took:.2f} s")
    assert took < 10
    assert topology.alive(lab, "plc")
    assert _zombie_or_gone(old_plc) and _zombie_or_gone(stray)
    topology.wait_tcp(lab.ns_ot, "192.168.50.11", 502, timeout=1)

    topology.down(lab)
    topology.down(lab)  # idempotent
    assert not topology.exists(lab)
    assert not any((Path("/run/netns") / ns).exists() for ns in lab.namespaces)
    assert not Path("/sys/class/net/tl-mgmt").exists()
    assert not topology.alive(lab, "plc")
    assert list((lab.root / "pids").glob("*.pid")) == []


def test_failed_up_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    broken = LabSpec(prefix="tlf", mgmt=False, root=tmp_path)
    crash = [sys.executable, "-c", "print('plc: cannot start'); raise SystemExit(3)"]
    monkeypatch.setattr(topology, "_plc_argv", lambda spec: crash)
    with pytest.raises(LabError, match=r"PLC simulator exited.*cannot start"):
        topology.up(broken)
    assert not topology.exists(broken)


def _zombie_or_gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True
