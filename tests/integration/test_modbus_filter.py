"""A Modbus-restricted conduit in the lab: the net role's tproxy, the modbusproxy role, a
lab PLC. Reads pass; a write is refused (exception 01) also as the 2nd ADU of a segment and
split over two segments; the PLC's register is unchanged; with the proxy gone the conduit
passes nothing."""

from __future__ import annotations

import json
import socket
import struct
import sys
import time
from collections.abc import Iterator

import pytest
from labkit import IT_HOST, PLC1, Appliance, config, modbus_read, wait_for

from appliance.lab import topology
from appliance.lab.topology import LabSpec, in_netns
from appliance.net.render import TPROXY_MARK, TPROXY_TABLE
from appliance.state.live import LiveState

pytestmark = pytest.mark.integration

PROXY = "modbusproxy"
SETPOINT = 40  # a writable holding register of the lab PLC

MODBUS_WRITE = r"""
import json, sys
from pymodbus.client import ModbusTcpClient
c = ModbusTcpClient(sys.argv[1], port=502, timeout=2, retries=0)
if not c.connect():
    print(json.dumps({"error": "connect"})); sys.exit(0)
r = c.write_register(int(sys.argv[2]), int(sys.argv[3]), device_id=1)
print(json.dumps({"exception": r.exception_code} if r.isError() else {"written": True}))
c.close()
"""


def modbus_write(lab: LabSpec, address: int, value: int) -> dict:
    cp = topology.ns_run(
        lab.ns_it, [sys.executable, "-c", MODBUS_WRITE, PLC1, str(address), str(value)]
    )
    return json.loads(cp.stdout.strip().splitlines()[-1])


def adu(tid: int, fc: int, *values: int, fmt: str = "HH") -> bytes:
    body = bytes([fc]) + struct.pack(">" + fmt, *values)
    return struct.pack(">HHHB", tid, 0, len(body) + 1, 1) + body


def exchange(lab: LabSpec, segments: list[bytes], answers: int) -> list[bytes]:
    """Send each segment on its own (TCP_NODELAY, a pause between) from the IT host; read
    `answers` ADUs back."""

    def run() -> list[bytes]:
        s = socket.create_connection((PLC1, 502), timeout=3)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with s:
            for seg in segments:
                s.sendall(seg)
                time.sleep(0.2)
            out, buf = [], b""
            while len(out) < answers:
                buf += s.recv(4096)
                while len(buf) >= 6 and len(buf) >= 6 + struct.unpack(">H", buf[4:6])[0]:
                    n = 6 + struct.unpack(">H", buf[4:6])[0]
                    out.append(buf[:n])
                    buf = buf[n:]
            return out

    return in_netns(lab.ns_it, run)


def read_setpoint(lab: LabSpec) -> int:
    [answer] = exchange(lab, [adu(7, 3, SETPOINT, 1)], 1)
    assert answer[7] == 3, answer.hex()
    return struct.unpack(">H", answer[9:11])[0]


@pytest.fixture
def proxy(lab: LabSpec, appliance: Appliance) -> Iterator[LiveState]:
    """The modbusproxy role in its own process beside the net role (so that it can be
    killed alone). The policy route that delivers tproxy'd packets to it is the net
    role's (`Links._tproxy_route`, held from its first apply): taken away afterwards, so
    the next test's net role has to make it again, as a fresh unit's does."""
    ns = lab.ns_app
    mark, table = hex(TPROXY_MARK), str(TPROXY_TABLE)
    argv = [sys.executable, "-m", "appliance", "run", "--roles", PROXY]
    argv += ["--data-dir", str(appliance.paths.data_dir), "--run-dir", str(appliance.paths.run_dir)]
    live = LiveState(appliance.paths.run_dir)
    topology.spawn(lab, ns, PROXY, argv)
    try:
        wait_for(
            lambda: (live.read(PROXY) or {}).get("listening"),
            20,
            "the modbusproxy role to listen",
            detail=lambda: topology.log_tail(lab, PROXY, 10),
        )
        yield live
    finally:
        topology.stop(lab, PROXY)
        topology.ns_run(ns, ["ip", "rule", "del", "fwmark", mark, "lookup", table], check=False)
        topology.ns_run(ns, ["ip", "route", "flush", "table", table], check=False)


def restricted(modbus: object = "read-only") -> dict:
    cfg = config()
    cfg["conduits"][0]["modbus"] = modbus
    return cfg


def test_a_read_only_conduit_passes_reads_and_refuses_writes(
    appliance: Appliance, lab: LabSpec, proxy: LiveState
) -> None:
    # unrestricted first: the write goes through (so the refusals below are the proxy's)
    appliance.commit(config())
    assert modbus_write(lab, SETPOINT, 111) == {"written": True}
    assert read_setpoint(lab) == 111

    rev = appliance.commit(restricted())
    wait_for(lambda: (proxy.read(PROXY) or {}).get("revision") == rev, 10, "the proxy to apply")
    # the net role holds the policy route that brings the marked packets to the proxy
    rules = topology.ns_run(lab.ns_app, ["ip", "rule"]).stdout
    assert f"fwmark {TPROXY_MARK:#x} lookup {TPROXY_TABLE}" in rules, rules
    local = topology.ns_run(lab.ns_app, ["ip", "route", "show", "table", str(TPROXY_TABLE)])
    assert "local default dev lo" in local.stdout, local.stdout
    assert "registers" in modbus_read(lab, PLC1), "reads pass"
    assert modbus_write(lab, SETPOINT, 999) == {"exception": 1}

    # a write as the 2nd ADU of one segment: the read is answered, the write refused
    one_segment = adu(1, 3, 0, 2) + adu(2, 6, SETPOINT, 999)
    answers = {a[:2]: a for a in exchange(lab, [one_segment], 2)}
    assert answers[b"\x00\x01"][7] == 3
    assert answers[b"\x00\x02"] == bytes.fromhex("0002 0000 0003 01 86 01")

    # a write split over two segments
    write = adu(3, 16, SETPOINT, 1, 2, 999, fmt="HHBH")
    assert exchange(lab, [write[:9], write[9:]], 1) == [bytes.fromhex("0003 0000 0003 01 90 01")]

    assert read_setpoint(lab) == 111, "the PLC's register is unchanged"

    def counted() -> dict | None:
        doc = (proxy.read(PROXY) or {}).get("conduits", {}).get("scada-modbus")
        return doc if doc and doc["refused"].get("16") == 1 else None

    doc = wait_for(counted, 5, "the proxy's counters")
    assert doc["refused"] == {"6": 2, "16": 1}
    assert doc["allowed"] == {"3": 3}  # modbus_read, the packed read, the read-back
    events = appliance.events("modbus.refused")
    assert events, "refusals are events"
    assert {e["data"]["source"] for e in events} == {IT_HOST}


def test_the_plc_sees_the_real_client(appliance: Appliance, lab: LabSpec, proxy: LiveState) -> None:
    """The upstream connection comes from the IT host's own address (IP_TRANSPARENT), so a
    PLC's own access list keeps working behind a restricted conduit."""
    rev = appliance.commit(restricted())
    wait_for(lambda: (proxy.read(PROXY) or {}).get("revision") == rev, 10, "the proxy to apply")

    def peers_while_connected() -> str:
        s = socket.create_connection((PLC1, 502), timeout=3)
        with s:
            s.sendall(adu(1, 3, 0, 1))
            s.recv(100)
            cp = topology.ns_run(
                lab.ns_ot, ["ss", "-Htn", "state", "established", "sport", "= :502"]
            )
            return cp.stdout

    peers = in_netns(lab.ns_it, peers_while_connected)
    assert f"{IT_HOST}:" in peers, peers
    assert "192.168.50.1:" not in peers  # not the appliance's OT address


def test_with_the_proxy_gone_the_restricted_conduit_passes_nothing(
    appliance: Appliance, lab: LabSpec, proxy: LiveState
) -> None:
    rev = appliance.commit(restricted())
    wait_for(lambda: (proxy.read(PROXY) or {}).get("revision") == rev, 10, "the proxy to apply")
    assert "registers" in modbus_read(lab, PLC1)
    topology.stop(lab, PROXY)
    assert not proxy.alive(PROXY) or wait_for(lambda: not proxy.alive(PROXY), 10, "dead proxy")
    assert modbus_read(lab, PLC1) == {"error": "connect"}

    def denied() -> bool:
        return any(
            d.get("dst") == PLC1 and d.get("port") == 502
            for d in appliance.live().get("denied", [])
        )

    wait_for(denied, 10, "the attempt to show as denied", detail=lambda: appliance.live())


def learned(appliance: Appliance, name: str) -> dict | None:
    """`appliance conduits learned NAME --json` (in this process: the test's Store)."""
    from click.testing import CliRunner

    from appliance.modbusproxy.cli import conduits

    env = {
        "APPLIANCE_DATA_DIR": str(appliance.paths.data_dir),
        "APPLIANCE_RUN_DIR": str(appliance.paths.run_dir),
    }
    r = CliRunner().invoke(conduits, ["learned", name, "--json"], env=env)
    return json.loads(r.output) if r.exit_code == 0 else None


def test_learn_then_test_then_enforce(appliance: Appliance, lab: LabSpec, proxy: LiveState) -> None:
    """Learn a read pattern; the learned restriction in mode test counts a write as
    would-refuse and lets it through; in mode enforce the same write is refused."""
    rev = appliance.commit(restricted("learn"))
    wait_for(lambda: (proxy.read(PROXY) or {}).get("revision") == rev, 10, "the proxy to apply")
    assert "registers" in modbus_read(lab, PLC1)  # holding 0..4
    read_setpoint(lab)  # holding 40 (as an earlier test of the session left it)
    # a learning conduit passes everything, writes too
    assert modbus_write(lab, SETPOINT + 1, 5) == {"written": True}

    def learned_all() -> dict | None:
        doc = learned(appliance, "scada-modbus")
        return doc if doc and doc["requests"] >= 3 else None

    doc = wait_for(learned_all, 20, "what was learned to be saved")  # every SAVE_EVERY_S
    mapping = doc["modbus"]
    assert mapping == {
        "function_codes": [3, 6],
        "unit_ids": [1],
        "ranges": {"holding": [[0, 4], [40, 41]]},
        "mode": "test",
    }
    assert {o["client"] for o in doc["observed"]} == {IT_HOST}

    # the learned pattern, without the write: what production says it needs
    mapping["function_codes"] = [3]
    rev = appliance.commit(restricted(mapping))
    wait_for(lambda: (proxy.read(PROXY) or {}).get("revision") == rev, 10, "the proxy to apply")
    assert "registers" in modbus_read(lab, PLC1)
    assert modbus_write(lab, SETPOINT, 222) == {"written": True}, "test mode blocks nothing"
    assert read_setpoint(lab) == 222

    def would() -> dict | None:
        doc = (proxy.read(PROXY) or {}).get("conduits", {}).get("scada-modbus")
        return doc if doc and doc["would_refuse"].get("6") == 1 else None

    doc = wait_for(would, 5, "the would-be refusal to be counted")
    assert doc["mode"] == "test" and doc["refused"] == {}
    events = wait_for(lambda: appliance.events("modbus.would_refuse"), 5, "the event")
    assert events[0]["data"]["function"] == 6 and events[0]["data"]["source"] == IT_HOST
    assert not appliance.events("modbus.refused")

    rev = appliance.commit(restricted({**mapping, "mode": "enforce"}))
    wait_for(lambda: (proxy.read(PROXY) or {}).get("revision") == rev, 10, "the proxy to apply")
    assert "registers" in modbus_read(lab, PLC1), "the learned reads still pass"
    assert modbus_write(lab, SETPOINT, 333) == {"exception": 1}
    assert read_setpoint(lab) == 222, "the PLC's register is unchanged"
    assert wait_for(lambda: appliance.events("modbus.refused"), 5, "the refusal event")


def test_the_inventory_has_the_plc(appliance: Appliance, lab: LabSpec, proxy: LiveState) -> None:
    """A PLC reached through a restricted conduit is in `appliance inventory`, with the
    unit ids and function codes used, and a `modbus.device_new` event; identify: true
    makes the proxy ask it for its identification (the lab PLC's vendor, product, revision)."""
    from click.testing import CliRunner

    from appliance.modbusproxy.cli import inventory

    rev = appliance.commit(restricted({"preset": "read-only", "identify": True}))
    wait_for(lambda: (proxy.read(PROXY) or {}).get("revision") == rev, 10, "the proxy to apply")
    # the proxy asks for the identification on this connection: its answer must not come
    # to the client, whose later reads are answered as usual
    first = adu(1, 3, 0, 1)
    answers = exchange(lab, [first, adu(2, 3, 0, 1), adu(3, 4, 0, 1)], 3)
    assert [(a[:2], a[7]) for a in answers] == [
        (b"\x00\x01", 3),
        (b"\x00\x02", 3),
        (b"\x00\x03", 4),
    ]
    env = {
        "APPLIANCE_DATA_DIR": str(appliance.paths.data_dir),
        "APPLIANCE_RUN_DIR": str(appliance.paths.run_dir),
    }

    def listed() -> list | None:
        r = CliRunner().invoke(inventory, ["--json"], env=env)
        doc = json.loads(r.output) if r.exit_code == 0 else []
        return [d for d in doc if d["address"] == PLC1] or None

    [device] = wait_for(listed, 20, "the PLC in the inventory")  # saved every SAVE_EVERY_S
    assert device["units"] == [1] and device["functions"] == [3, 4]
    assert device["conduits"] == ["scada-modbus"] and device["clients"] == [IT_HOST]
    assert "1" in device["identity"], "the proxy asked unit 1 for its identification"
    got = device["identity"]["1"]
    assert (got.get("vendor"), got.get("product_code"), got.get("revision")) == (
        "appliance lab",
        "LAB-PLC",
        "1.0",
    ), got
    [event] = appliance.events("modbus.device_new")
    assert event["data"]["address"] == PLC1
