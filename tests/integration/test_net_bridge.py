"""Bridge (transparent) mode in the lab (issue 12): the bridge topology (`LabSpec(bridge=True)`:
the IT host 192.168.50.2 in the PLCs' subnet), the appliance a bridge between it0 and ot0.

The conduit passes exactly its flow, OT→IT and every other flow is dropped and counted, ARP
works, other ethertypes are dropped and counted, LLDP crosses only when asked, the bridge is
closed before the first revision and stays closed when the daemon is killed, bridged IP that
the inet hooks never saw (br_netfilter's sysctl off) is dropped, and a routed revision takes
the bridge away again."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from labkit import PLC1, PLC2, Appliance, modbus_read, tcp_listener, wait_for
from test_net_role import CHAT_CLIENT, CHAT_SERVER

from appliance.lab import topology
from appliance.lab.topology import (
    BRIDGE_IT_HOST,
    IT_HOST_MAC,
    IT_MAC,
    OT_HOST_MAC,
    OT_MAC,
    LabSpec,
)

pytestmark = pytest.mark.integration

IT = BRIDGE_IT_HOST
BRIDGED: dict[str, Any] = {
    "version": 1,
    "unit": {"name": "bridge-unit"},
    "interfaces": [
        {"name": "it0", "role": "it", "mac": IT_MAC},
        {"name": "ot0", "role": "ot", "mac": OT_MAC},
    ],
    "bridge": {"ports": ["it0", "ot0"]},
    "conduits": [
        {
            "name": "scada-modbus",
            "owner": "ot-team",
            "reason": "SCADA polls PLC 1 through the bridge",
            "from": [IT],
            "to": [PLC1],
            "services": ["modbus"],
        }
    ],
}

# A raw Ethernet frame from one lab host, and a listener on the other side that says
# whether one with that ethertype arrived.
SEND_FRAME = r"""
import socket, sys
mac = lambda text: bytes.fromhex(text.replace(":", ""))
dst, src, etype = mac(sys.argv[2]), mac(sys.argv[3]), int(sys.argv[4], 16)
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((sys.argv[1], 0))
for _ in range(int(sys.argv[5])):
    s.send(dst + src + etype.to_bytes(2, "big") + b"appliance-test".ljust(46, b"."))
"""
SNIFF = r"""
import socket, sys, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(int(sys.argv[2], 16)))
s.bind((sys.argv[1], 0)); s.settimeout(0.2)
print("ready", flush=True)
end, n = time.monotonic() + float(sys.argv[3]), 0
while time.monotonic() < end:
    try:
        if b"appliance-test" in s.recv(2048):
            n += 1
    except socket.timeout:
        pass
print(n, flush=True)
"""


def bridged(**changes: Any) -> dict[str, Any]:
    out = json.loads(json.dumps(BRIDGED))
    out.update(changes)
    return out


@pytest.fixture(scope="module")
def blab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabSpec]:
    import os

    if os.geteuid() != 0:
        pytest.skip("integration tests need root: they create network namespaces and nftables")
    spec = LabSpec(prefix="tb", plcs=2, mgmt=False, bridge=True, root=tmp_path_factory.mktemp("bl"))
    topology.up(spec)
    try:
        yield spec
    finally:
        topology.down(spec)


@pytest.fixture
def app(blab: LabSpec, tmp_path: Path) -> Iterator[Appliance]:
    a = Appliance(blab, tmp_path)
    a.start()
    try:
        yield a
    finally:
        a.stop()
        # the next test starts from a fresh unit's kernel: no table, no bridge
        for family in ("inet", "bridge"):
            topology.ns_run(
                blab.ns_app, ["nft", "delete", "table", family, "appliance"], check=False
            )
        topology.ns_run(blab.ns_app, ["ip", "link", "del", "br0"], check=False)
        a.store.close()


def frames_cross(spec: LabSpec, dst: str, etype: str, count: int = 5) -> int:
    """Send `count` frames with this destination MAC and ethertype from the IT host; how many
    reached the OT host."""
    import subprocess

    sniff = subprocess.Popen(
        ["ip", "netns", "exec", spec.ns_ot, sys.executable, "-c", SNIFF, "plcnet0", etype, "1.5"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert sniff.stdout is not None and sniff.stdout.readline().strip() == "ready"
        topology.ns_run(
            spec.ns_it,
            [sys.executable, "-c", SEND_FRAME, "lan0", dst, IT_HOST_MAC, etype, str(count)],
        )
        return int(sniff.stdout.readline().strip())
    finally:
        sniff.wait(5)


def drops(app: Appliance) -> dict[str, int]:
    return {k: v["packets"] for k, v in (app.live().get("drops") or {}).items()}


def neighbour(spec: LabSpec, ns: str, host: str) -> str | None:
    cp = topology.ns_run(ns, ["ip", "-j", "neigh", "show", host])
    entries = json.loads(cp.stdout or "[]")
    return entries[0].get("lladdr") if entries else None


def test_closed_before_the_first_revision(app: Appliance, blab: LabSpec) -> None:
    wait_for(lambda: app.live().get("applied"), 10, "the net role's first state")
    assert app.live()["applied"]["fail_closed"] is True
    assert app.probe(PLC1, 502) != "open"
    assert topology.ns_run(blab.ns_app, ["ip", "link", "show", "br0"], check=False).returncode != 0


def test_the_conduit_passes_exactly_its_flow(app: Appliance, blab: LabSpec) -> None:
    app.commit(bridged())
    live = app.live()
    assert live["mode"] == "bridge"
    assert live["bridge"]["filter"] == "br_netfilter", live["bridge"]
    regs = wait_for(
        lambda: (r := modbus_read(blab, PLC1)).get("registers") and r,
        10,
        "Modbus through the bridge",
    )
    assert regs["registers"][2:5] == [1234, 5678, 42]
    assert app.probe(PLC1, 8080) == "dropped"  # same host, other service
    assert app.probe(PLC2, 502) == "dropped"  # same service, other host
    with tcp_listener(blab.ns_it, IT, 2222):
        assert app.probe(IT, 2222, ns=blab.ns_ot) == "dropped"  # OT → IT

    def counted() -> dict | None:
        live = app.live()
        c = live.get("conduits", {}).get("scada-modbus", {})
        d = drops(app)
        ok = c.get("packets", 0) > 0 and d.get("drop_it_ot", 0) >= 2 and d.get("drop_ot_it", 0) >= 1
        return live if ok else None

    live = wait_for(counted, 10, "conduit and drop counters", lambda: drops(app))
    denied = {(d["src"], d["dst"], d["port"]) for d in live["denied"]}
    assert {(IT, PLC1, 8080), (IT, PLC2, 502), (PLC1, IT, 2222)} <= denied
    wait_for(lambda: app.events("traffic.denied"), 5, "a traffic.denied event")
    # ARP crossed: each side knows the other's MAC though neither has a route via the unit
    assert neighbour(blab, blab.ns_it, PLC1) == OT_HOST_MAC
    assert neighbour(blab, blab.ns_ot, IT) == IT_HOST_MAC
    # the unit itself is invisible on the bridge: no address on br0 or its ports
    for link in ("br0", "it0", "ot0"):
        cp = topology.ns_run(blab.ns_app, ["ip", "-j", "addr", "show", "dev", link])
        assert json.loads(cp.stdout)[0].get("addr_info") == [], link


def test_other_ethertypes_are_dropped_and_counted_lldp_only_when_asked(
    app: Appliance, blab: LabSpec
) -> None:
    app.commit(bridged())
    before = drops(app).get("drop_l2_other", 0)
    assert frames_cross(blab, "ff:ff:ff:ff:ff:ff", "88b5") == 0  # IEEE local experimental
    wait_for(
        lambda: drops(app).get("drop_l2_other", 0) >= before + 5,
        5,
        "drop_l2_other",
        lambda: drops(app),
    )
    assert frames_cross(blab, "01:80:c2:00:00:0e", "88cc") == 0  # LLDP: not asked for
    app.commit(bridged(bridge={"ports": ["it0", "ot0"], "pass_l2": {"lldp": True}}))
    wait_for(lambda: frames_cross(blab, "01:80:c2:00:00:0e", "88cc") == 5, 10, "LLDP to cross")
    assert frames_cross(blab, "ff:ff:ff:ff:ff:ff", "88b5") == 0  # the rest still does not


def test_killing_the_daemon_keeps_the_bridge_closed(app: Appliance, blab: LabSpec) -> None:
    app.commit(bridged())
    app.kill9()
    assert modbus_read(blab, PLC1).get("registers"), "the conduit still passes"
    assert app.probe(PLC1, 8080) == "dropped"
    assert app.probe(PLC2, 502) == "dropped"
    assert frames_cross(blab, "ff:ff:ff:ff:ff:ff", "88b5") == 0


def test_bridged_ip_the_inet_table_never_saw_is_dropped(app: Appliance, blab: LabSpec) -> None:
    # br_netfilter's sysctl turned off behind the unit's back: bridged IP would skip the
    # conduits; the bridge table's l2_decided drops it instead (and the role sets it again)
    app.commit(bridged())
    app.kill9()  # (so that the role does not put the sysctl back while we look)
    sysctl = "net.bridge.bridge-nf-call-iptables"
    topology.ns_run(blab.ns_app, ["sysctl", "-q", "-w", f"{sysctl}=0"])
    try:
        assert app.probe(PLC1, 502) == "dropped"
        listing = json.loads(
            app.nft("-j", "list", "counter", "bridge", "appliance", "drop_l2_unfiltered")
        )
        [counter] = [o["counter"] for o in listing["nftables"] if "counter" in o]
        assert counter["packets"] >= 1
    finally:
        topology.ns_run(blab.ns_app, ["sysctl", "-q", "-w", f"{sysctl}=1"])


def test_a_withdrawn_conduit_ends_its_bridged_connections(app: Appliance, blab: LabSpec) -> None:
    chat = {
        "name": "chat",
        "owner": "t",
        "reason": "t",
        "from": [IT],
        "to": [PLC1],
        "services": ["tcp/9300"],
    }
    topology.spawn(blab, blab.ns_ot, "chat", [sys.executable, "-c", CHAT_SERVER, PLC1, "9300"])
    try:
        topology.wait_tcp(blab.ns_ot, PLC1, 9300)
        app.commit(bridged(conduits=[*BRIDGED["conduits"], chat]))
        argv = [sys.executable, "-c", CHAT_CLIENT, PLC1, "9300"]
        topology.spawn(blab, blab.ns_it, "chat-client", argv)

        def said(prefix: str) -> bool:
            lines = topology.log_tail(blab, "chat-client", 200).splitlines()
            return any(line.startswith(prefix) for line in lines)

        wait_for(lambda: said("ok"), 10, "the chat to run through the bridge")
        app.commit(bridged())
        wait_for(
            lambda: said("broken "),
            15,
            "the bridged connection to be cut",
            lambda: topology.log_tail(blab, "chat-client", 3),
        )
        wait_for(lambda: app.events("traffic.cut"), 5, "a traffic.cut event")
    finally:
        topology.stop(blab, "chat-client")
        topology.stop(blab, "chat")


def test_a_routed_revision_takes_the_bridge_away(app: Appliance, blab: LabSpec) -> None:
    app.commit(bridged())
    routed = bridged(
        interfaces=[
            {"name": "it0", "role": "it", "mac": IT_MAC, "addresses": ["10.10.0.1/24"]},
            {"name": "ot0", "role": "ot", "mac": OT_MAC, "addresses": ["192.168.50.1/24"]},
        ],
        conduits=[],
    )
    del routed["bridge"]
    app.commit(routed)

    def gone() -> bool:
        cp = topology.ns_run(blab.ns_app, ["ip", "link", "show", "br0"], check=False)
        return cp.returncode != 0

    wait_for(gone, 10, "br0 to be removed")
    assert app.live()["mode"] == "routed"
    # the bridge table stays, closed: nothing crosses any bridge now
    listing = json.loads(app.nft("-j", "list", "table", "bridge", "appliance"))
    chains = [o["chain"]["name"] for o in listing["nftables"] if "chain" in o]
    assert chains == ["l2_forward"]
