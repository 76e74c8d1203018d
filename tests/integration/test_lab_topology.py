"""The lab for real: namespaces, veths with fixed MACs, live PLC simulators, up/down/up again;
and the full lab's extras (prefix "td"): the slow PLC, the RTU line over a socat pty, the OPC UA
simulator, the fleet receiver over HTTPS with the lab CA, the syslog sink."""

from __future__ import annotations

import json
import os
import struct
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from testkit import wait_for

from appliance.errors import LabError
from appliance.lab import topology
from appliance.lab.topology import LabSpec
from appliance.proc import run

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (creates network namespaces)"),
]

PREFIX = "tl"
FULL_PREFIX = "td"

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
    with pytest.raises(LabError, match="rtu"):
        LabSpec(rtu="yes")  # type: ignore[arg-type]
    assert LabSpec(plcs=3).plc_addresses == ["192.168.50.10", "192.168.50.11", "192.168.50.12"]


def test_spec_extras_and_their_addresses(tmp_path: Path) -> None:
    lean = LabSpec(root=tmp_path)
    assert lean.extras == [] and lean.ot_addresses == ["192.168.50.10"]
    full = LabSpec.full(plcs=2, root=tmp_path, rtu=False)
    assert full.extras == ["slow_plc", "opcua", "fleet", "syslog"]
    assert full.ot_addresses == ["192.168.50.10", "192.168.50.11", "192.168.50.19", "192.168.50.20"]
    # PLC hosts never take the extras' addresses, whatever the flags
    many = LabSpec(plcs=12).plc_addresses
    assert len(many) == len(set(many)) == 12
    assert "192.168.50.19" not in many and "192.168.50.20" not in many
    assert many[8:10] == ["192.168.50.18", "192.168.50.21"] and many[-1] == "192.168.50.23"
    assert full.rtu_app == tmp_path / "tty-rtu-app" and full.rtu_app.is_absolute()


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

    def pids_in_ns() -> list[str]:
        return run(["ip", "netns", "pids", lab.ns_app]).stdout.split()

    # `ip netns exec` joins the namespace, then execs sleep (same pid): wait for the join
    wait_for(lambda: str(pid) in pids_in_ns(), 10, f"pid {pid} in {lab.ns_app}", pids_in_ns)
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


def test_failed_extra_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    broken = LabSpec(prefix="tdf", mgmt=False, rtu=True, root=tmp_path)
    crash = [sys.executable, "-c", "print('rtu: no serial port'); raise SystemExit(1)"]
    monkeypatch.setattr(topology, "_rtu_argv", lambda spec: crash)
    with pytest.raises(LabError, match=r"RTU simulator exited.*no serial port"):
        topology.up(broken)
    assert not topology.exists(broken)
    assert not broken.rtu_app.is_symlink() and not broken.rtu_dev.is_symlink()
    assert not topology.alive(broken, "socat-rtu") and list(broken.pids.glob("*.pid")) == []
    assert topology.read_facts(broken) == {}


# -- the full lab: every extra -------------------------------------------------------------

SLOW_READ = r"""
import json, sys, time
from pymodbus.client import ModbusTcpClient
from pymodbus.exceptions import ModbusException

out = {"times": [], "regs": []}
c = ModbusTcpClient(sys.argv[1], port=502, timeout=5, retries=0)
assert c.connect(), "cannot connect"
for _ in range(2):
    started = time.monotonic()
    r = c.read_holding_registers(0, count=28, device_id=1)
    out["times"].append(time.monotonic() - started)
    assert not r.isError(), str(r)
    out["regs"].append(r.registers)
c.close()
impatient = ModbusTcpClient(sys.argv[1], port=502, timeout=0.3, retries=0)
assert impatient.connect()
try:
    r = impatient.read_holding_registers(0, count=1, device_id=1)
    out["impatient"] = "error" if r.isError() else "answered"
except ModbusException:
    out["impatient"] = "no answer"
impatient.close()
print(json.dumps(out))
"""

OPCUA_READ = r"""
import asyncio, json, sys
from asyncua import Client

async def main():
    async with Client(sys.argv[1], timeout=10) as client:
        node = lambda name: client.get_node(f"ns=2;s={name}")
        out = {n: await node(n).read_value() for n in ("Counter", "Temperature", "Running",
                                                      "Batch", "Setpoint")}
        await asyncio.sleep(2.2)
        out["Counter2"] = await node("Counter").read_value()
    print(json.dumps(out))

asyncio.run(main())
"""

FLEET_PROBE = r"""
import json, ssl, sys, urllib.error, urllib.request
url, ca, token = sys.argv[1:4]
ctx = ssl.create_default_context(cafile=ca)
out = {}
with urllib.request.urlopen(url + "/api/v1/ping", context=ctx, timeout=15) as r:
    out["ping"] = json.load(r)
try:
    urllib.request.urlopen(url + "/api/v1/ping", context=ssl.create_default_context(), timeout=15)
    out["system_ca"] = "accepted"
except urllib.error.URLError as e:
    out["system_ca"] = type(e.reason).__name__

def post(tok):
    req = urllib.request.Request(
        url + "/api/v1/heartbeat", data=b"{}", method="POST",
        headers={"Authorization": "Bearer " + tok, "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=15) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code

out["registered_token"] = post(token)
out["unknown_token"] = post("x" * 43)
print(json.dumps(out))
"""

SYSLOG_SEND = r"""
import socket, ssl, sys
host, ca = sys.argv[1], sys.argv[2]
def msg(text):
    return f"<134>1 2026-11-25T20:00:00Z lab-test appliance 1 test - {text}".encode()
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.sendto(msg("over udp"), (host, 514))
u.close()
with socket.create_connection((host, 514), timeout=10) as t:
    one, two = msg("tcp counted one"), msg("tcp counted two")
    t.sendall(b"%d %s%d %s" % (len(one), one, len(two), two))
    t.sendall(msg("tcp lf framed") + b"\n")
ctx = ssl.create_default_context(cafile=ca)
with socket.create_connection((host, 6514), timeout=10) as raw:
    with ctx.wrap_socket(raw, server_hostname=host) as s:
        m = msg("over tls, line\nbreak")
        s.sendall(b"%d %s" % (len(m), m))
print("sent")
"""


@pytest.fixture(scope="module")
def full(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabSpec]:
    """The lab with every extra (no management link: it may be another lab's)."""
    lab = LabSpec.full(prefix=FULL_PREFIX, mgmt=False, root=tmp_path_factory.mktemp("full"))
    facts = topology.up(lab)
    assert topology.read_facts(lab) == facts
    try:
        yield lab
    finally:
        topology.down(lab)


def _extras(lab: LabSpec) -> dict:
    return topology.read_facts(lab)["extras"]


def test_full_lab_runs_every_extra(full: LabSpec) -> None:
    status = topology.status(full)
    expected = {"plc", "socat-rtu", "rtu", "opcua", "fleet", "syslog-sink"}
    assert {name for name, p in status["processes"].items() if p["alive"]} == expected
    assert sorted(status["extras"]) == ["fleet", "opcua", "rtu", "slow_plc", "syslog"]
    ot = _links(status, "td-ot")
    addresses = ["192.168.50.10/24", "192.168.50.19/24", "192.168.50.20/24"]
    assert ot["plcnet0"]["addresses"] == addresses
    keys = [full.fleet_dir / "ca-key.pem", full.fleet_dir / "server-key.pem"]
    keys += [full.fleet_dir / "unit-token", full.fleet_dir / "operator-password"]
    for secret in keys:
        assert secret.stat().st_mode & 0o777 == 0o600, secret


def test_slow_plc_answers_slowly(full: LabSpec) -> None:
    cp = topology.ns_run(full.ns_ot, [sys.executable, "-c", SLOW_READ, "192.168.50.19"])
    out = json.loads(cp.stdout)
    assert all(t >= 0.75 for t in out["times"]), out["times"]
    first, second = out["regs"]
    name = struct.pack(">8H", *first[20:28]).rstrip(b"\0").decode()
    assert name == "LAB-PLC-SLOW" and first[2:5] == [1234, 5678, 42]
    assert second[0] >= first[0]  # the same live counter as the other PLCs
    assert out["impatient"] == "no answer"  # a 0.3 s timeout is too short for it


def test_rtu_device_answers_over_the_pty(full: LabSpec) -> None:
    from pymodbus.client import ModbusSerialClient
    from pymodbus.exceptions import ModbusException

    extras = _extras(full)["rtu"]
    assert extras["port"] == str(full.rtu_app)
    for end in (full.rtu_app, full.rtu_dev):
        assert end.is_symlink() and os.readlink(end).startswith("/dev/pts/"), end

    def client(timeout: float = 2, retries: int = 1) -> ModbusSerialClient:
        c = ModbusSerialClient(
            str(full.rtu_app),
            baudrate=19200,
            parity="N",
            stopbits=1,
            timeout=timeout,
            retries=retries,
        )
        assert c.connect(), f"cannot open {full.rtu_app}"
        return c

    def holding(c: ModbusSerialClient, address: int, count: int, unit: int) -> list[int]:
        r = c.read_holding_registers(address, count=count, device_id=unit)
        assert not r.isError(), f"unit {unit}: {r}"
        return r.registers

    c = client()
    try:
        for unit in (1, 2):
            regs = holding(c, 0, 32, unit)
            name = struct.pack(">8H", *regs[20:28]).rstrip(b"\0").decode()
            assert name == f"LAB-RTU-{unit:02d}" and regs[2:5] == [1234, 5678, 42]
            assert 15 <= _decode_float(regs[10:12]) <= 25
        inputs = c.read_input_registers(2, count=3, device_id=1)
        assert not inputs.isError() and inputs.registers == [1234, 5678, 42]
        assert not c.write_register(41, 4242, device_id=2).isError()
        assert holding(c, 41, 1, 2) == [4242] and holding(c, 41, 1, 1) == [0]
        first = holding(c, 0, 1, 1)[0]
    finally:
        c.close()
    # the appliance closing and reopening its end (a reconnect) does not break the line
    c = client()
    try:
        deadline = time.monotonic() + 10
        while holding(c, 0, 1, 1)[0] == first and time.monotonic() < deadline:
            time.sleep(0.2)
        assert holding(c, 0, 1, 1)[0] != first, "the RTU counter does not advance"
    finally:
        c.close()
    # a unit id nobody on the line has gets silence, as on RS-485
    c = client(timeout=0.5, retries=0)
    try:
        try:
            reply = c.read_holding_registers(0, count=1, device_id=7)
            assert reply.isError() and "no response" in str(reply).lower(), str(reply)
        except ModbusException as exc:
            assert "no response" in str(exc).lower(), str(exc)
    finally:
        c.close()


def test_opcua_simulator_answers(full: LabSpec) -> None:
    url = _extras(full)["opcua"]["url"]
    assert url == "opc.tcp://192.168.50.20:4840/"
    topology.wait_tcp(full.ns_ot, "192.168.50.20", 4840, timeout=5)
    cp = topology.ns_run(full.ns_ot, [sys.executable, "-c", OPCUA_READ, url], timeout=60)
    values = json.loads(cp.stdout)
    assert 15 <= values["Temperature"] <= 25
    assert values["Counter2"] > values["Counter"]
    assert isinstance(values["Running"], bool)
    assert values["Batch"].startswith("BATCH-") and values["Setpoint"] == 50.0


def test_fleet_receiver_answers_https_with_the_lab_ca(full: LabSpec) -> None:
    fleet = _extras(full)["fleet"]
    assert fleet["url"] == "https://10.10.0.2:8443"
    token = Path(fleet["token_file"]).read_text().strip()
    argv = [sys.executable, "-c", FLEET_PROBE, fleet["url"], fleet["ca_cert"], token]
    out = json.loads(topology.ns_run(full.ns_it, argv, timeout=90).stdout)
    assert out["ping"]["ok"] is True
    assert out["system_ca"] == "SSLCertVerificationError"  # only the lab CA vouches for it
    assert out["registered_token"] == 400  # the token is known; the empty body is refused
    assert out["unknown_token"] == 401


def test_syslog_sink_writes_each_message_as_a_line(full: LabSpec) -> None:
    sink = _extras(full)["syslog"]
    log = Path(sink["log"])
    assert log == full.syslog_log
    argv = [sys.executable, "-c", SYSLOG_SEND, sink["host"], sink["ca_cert"]]
    assert topology.ns_run(full.ns_it, argv).stdout.strip() == "sent"
    expected = ["over udp", "tcp counted one", "tcp counted two", "tcp lf framed"]
    expected.append("over tls, line\\nbreak")

    def lines() -> list[str]:
        return log.read_text().splitlines() if log.exists() else []

    wait_for(lambda: len(lines()) >= 5, 15, "5 syslog lines", lines)
    got = lines()
    assert all(line.startswith("<134>1 2026-11-25T20:00:00Z lab-test ") for line in got), got
    assert sorted(line.rsplit(" - ", 1)[1] for line in got) == sorted(expected)


def test_full_lab_down_removes_everything(full: LabSpec) -> None:
    pids = {
        name: int((full.pids / f"{name}.pid").read_text().split()[0])
        for name in ("plc", "socat-rtu", "rtu", "opcua", "fleet", "syslog-sink")
    }
    topology.down(full)
    for name, pid in pids.items():
        assert _zombie_or_gone(pid), f"{name} (pid {pid}) still runs"
    assert not topology.exists(full)
    for end in (full.rtu_app, full.rtu_dev):
        assert not end.exists() and not end.is_symlink(), end
    assert not full.fleet_dir.exists()
    assert topology.read_facts(full) == {} and not full.facts_file.exists()
    assert topology.status(full)["extras"] == {}
    assert list(full.pids.glob("*.pid")) == []


def _zombie_or_gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True
