"""The net role in the lab: conduits, drops, NAT, expiry, commit-confirm, fail-closed, drift."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from labkit import (
    IT_HOST,
    PLC1,
    PLC2,
    Appliance,
    conduit,
    config,
    modbus_read,
    wait_for,
)

from appliance.lab import topology
from appliance.lab.topology import LabSpec
from appliance.state import revisions as revs

pytestmark = pytest.mark.integration

ECHO_PEER = r"""
import socket, sys
family = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
s = socket.socket(family); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(16)
while True:
    c, peer = s.accept(); c.sendall((peer[0] + "\n").encode()); c.close()
"""

READ_LINE = r"""
import socket, sys
family = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
s = socket.socket(family); s.settimeout(2)
try:
    s.connect((sys.argv[1], int(sys.argv[2]))); print(s.recv(100).decode().strip())
except OSError as e:
    print(f"failed: {e}")
"""


@pytest.fixture
def echo_peer(lab: LabSpec) -> Iterator[callable]:
    """Start listeners that answer with the peer address they saw; stopped after the test."""
    started: list[str] = []

    def start(ns: str, host: str, port: int) -> None:
        name = f"echo-{len(started)}"
        topology.spawn(lab, ns, name, [sys.executable, "-c", ECHO_PEER, host, str(port)])
        started.append(name)
        topology.wait_tcp(ns, host, port, timeout=10)

    yield start
    for name in started:
        topology.stop(lab, name)


CHAT_SERVER = r"""
import socket, sys, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(8)
def serve(c):
    with c:
        while data := c.recv(100):
            c.sendall(data)
while True:
    threading.Thread(target=serve, args=(s.accept()[0],), daemon=True).start()
"""

CHAT_CLIENT = r"""
import socket, sys, time
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2)
print("connected", flush=True)
end = time.monotonic() + 60
while time.monotonic() < end:
    try:
        s.sendall(b"x"); assert s.recv(10) == b"x"
        print("ok", flush=True)
    except (OSError, AssertionError) as e:
        print(f"broken {e!r} at {time.time():.2f}", flush=True); break
    time.sleep(0.2)
"""


def stepped_after(appliance: Appliance, t: float, timeout: float) -> None:
    """Wait until the net role has run a step that began after `t` (its clock is the wall
    clock). A step writes the live state last, once, and at least every second; so a
    state written after the first one written after `t` is from a step begun after `t`."""

    def written_after(since: float) -> float | None:
        at = float(appliance.live().get("updated_at", 0.0))
        return at if at > since else None

    first = wait_for(lambda: written_after(t), timeout, "a live state written after that time")
    wait_for(lambda: written_after(first), 3, "the net role's next step")


def read_line(lab: LabSpec, ns: str, host: str, port: int) -> str:
    cp = topology.ns_run(ns, [sys.executable, "-c", READ_LINE, host, str(port)])
    return cp.stdout.strip()


def test_conduit_passes_modbus_and_everything_else_is_dropped_and_counted(
    appliance: Appliance, lab: LabSpec
) -> None:
    appliance.commit(config())
    regs = modbus_read(lab, PLC1)
    assert regs.get("registers", [None] * 5)[2:5] == [1234, 5678, 42], regs
    assert appliance.probe(PLC1, 8080) == "dropped"  # same host, other service
    assert appliance.probe(PLC2, 502) == "dropped"  # same service, other host
    assert appliance.probe(IT_HOST, 22, ns=lab.ns_ot) == "dropped"  # OT → IT
    assert appliance.probe("192.168.50.1", 502) == "dropped"  # the appliance itself from IT

    def counted() -> dict | None:
        live = appliance.live()
        c = live.get("conduits", {}).get("scada-modbus", {})
        drops = live.get("drops", {})
        ok = (
            c.get("packets", 0) > 0
            and drops.get("drop_it_ot", {}).get("packets", 0) >= 2
            and drops.get("drop_ot_it", {}).get("packets", 0) >= 1
        )
        return live if ok else None

    def seen() -> dict:
        live = appliance.live()
        return {"conduits": live.get("conduits"), "drops": live.get("drops")}

    live = wait_for(counted, 10, "conduit and drop counters", seen)
    denied = {(d["src"], d["dst"], d["port"]) for d in live["denied"]}
    assert {(IT_HOST, PLC1, 8080), (IT_HOST, PLC2, 502), (PLC1, IT_HOST, 22)} <= denied
    wait_for(lambda: appliance.events("traffic.denied"), 5, "a traffic.denied event")


def test_links_are_owned_by_mac_and_reported(appliance: Appliance, lab: LabSpec) -> None:
    appliance.commit(config())
    links = {lk["name"]: lk for lk in appliance.live()["links"]}
    assert links["it0"]["present"] and links["it0"]["oper"] == "UP"
    assert "10.10.0.1/24" in links["it0"]["addresses"]
    assert "192.168.50.1/24" in links["ot0"]["addresses"]
    # an address the configuration does not hold is removed (the role owns the NIC)
    topology.ns_run(lab.ns_app, ["ip", "addr", "add", "10.10.0.99/24", "dev", "it0"])
    wait_for(
        lambda: (
            "10.10.0.99"
            not in topology.ns_run(lab.ns_app, ["ip", "-o", "addr", "show", "dev", "it0"]).stdout
        ),
        10,
        "the stray address to be removed",
    )


def test_ipv6_is_filtered_too(appliance: Appliance, lab: LabSpec, echo_peer) -> None:
    cfg = config()
    cfg["interfaces"][0]["addresses"].append("fd00:10::1/64")
    cfg["interfaces"][1]["addresses"].append("fd00:50::1/64")
    appliance.commit(cfg)
    topology.ns_run(
        lab.ns_it, ["ip", "-6", "addr", "replace", "fd00:10::2/64", "dev", "lan0", "nodad"]
    )
    topology.ns_run(lab.ns_it, ["ip", "-6", "route", "replace", "default", "via", "fd00:10::1"])
    topology.ns_run(
        lab.ns_ot, ["ip", "-6", "addr", "replace", "fd00:50::10/64", "dev", "plcnet0", "nodad"]
    )
    topology.ns_run(lab.ns_ot, ["ip", "-6", "route", "replace", "default", "via", "fd00:50::1"])
    echo_peer(lab.ns_ot, "fd00:50::10", 502)
    # IPv4 has a conduit for modbus; IPv6 has none: no bypass
    assert appliance.probe("fd00:50::10", 502) == "dropped"
    cfg["conduits"].append(
        {**conduit("v6-modbus", "fd00:50::10", ["modbus"]), "from": ["fd00:10::2"]}
    )
    appliance.commit(cfg)
    assert read_line(lab, lab.ns_it, "fd00:50::10", 502) == "fd00:10::2"


def test_nat_one_to_one_port_forward_and_masquerade(
    appliance: Appliance, lab: LabSpec, echo_peer
) -> None:
    echo_peer(lab.ns_ot, PLC2, 9000)
    cfg = config(
        conduits=[conduit("plc2-echo", PLC2, ["tcp/9000"])],
        nat={
            "one_to_one": [{"it_address": "10.10.0.50", "ot_address": PLC2}],
            "port_forwards": [{"name": "echo", "port": 9100, "to_address": PLC2, "to_port": 9000}],
        },
    )
    appliance.commit(cfg)
    # 1:1: the IT-side stand-in address reaches the PLC, which sees the real IT host
    assert read_line(lab, lab.ns_it, "10.10.0.50", 9000) == IT_HOST
    # port forward on the appliance's IT address
    assert read_line(lab, lab.ns_it, "10.10.0.1", 9100) == IT_HOST
    # NAT grants nothing by itself: a port without a conduit stays closed
    assert appliance.probe("10.10.0.50", 8080) == "dropped"
    cfg["nat"]["masquerade"] = True
    appliance.commit(cfg)
    assert read_line(lab, lab.ns_it, PLC2, 9000) == "192.168.50.1"


def test_expired_conduit_stops_passing_even_without_the_daemon(
    appliance: Appliance, lab: LabSpec
) -> None:
    expires = datetime.now(UTC) + timedelta(seconds=4)
    cfg = config(
        conduits=[
            config()["conduits"][0],
            conduit("temp-web", PLC1, ["tcp/8080"], expires=expires.isoformat()),
        ]
    )
    appliance.commit(cfg)
    assert appliance.probe(PLC1, 8080) == "open"
    # the kernel's own timeout closes it: kill the daemon first
    appliance.kill9()
    wait_for(lambda: datetime.now(UTC) > expires + timedelta(seconds=1), 10, "the expiry time")
    assert appliance.probe(PLC1, 8080) == "dropped"
    assert appliance.probe(PLC1, 502) == "open"
    # and a daemon that comes back records the expiry and renders without it
    appliance.start()
    wait_for(lambda: appliance.events("conduit.expired"), 10, "a conduit.expired event")
    live = wait_for(lambda: appliance.live().get("conduits", {}).get("temp-web"), 5, "status")
    assert live["active"] is False


def test_commit_not_confirmed_reverts_by_itself(appliance: Appliance) -> None:
    first = appliance.commit(config())
    cfg = config(conduits=[*config()["conduits"], conduit("web", PLC1, ["tcp/8080"])])
    second = appliance.commit(cfg, confirm_within=10)
    assert appliance.revision(second).state == "pending"
    assert appliance.probe(PLC1, 8080) == "open"
    wait_for(lambda: appliance.revision(second).state == "rolled-back", 15, "the revert")
    appliance.wait_applied(first)
    assert appliance.probe(PLC1, 8080) == "dropped"
    assert "deadline" in appliance.revision(second).reason
    assert appliance.events("config.reverted")


def test_revert_happens_on_time_across_a_kill9_restart(appliance: Appliance) -> None:
    first = appliance.commit(config())
    cfg = config(conduits=[*config()["conduits"], conduit("web", PLC1, ["tcp/8080"])])
    second = appliance.commit(cfg, confirm_within=10)
    deadline = appliance.revision(second).confirm_deadline
    appliance.kill9()
    assert appliance.probe(PLC1, 8080) == "open"  # the kernel keeps the pending ruleset
    appliance.start()
    wait_for(lambda: appliance.revision(second).state == "rolled-back", 15, "the revert")
    reverted_at = appliance.revision(second).ended_at
    assert reverted_at - deadline < 2.0, "the restarted daemon reverted late"
    appliance.wait_applied(first)
    assert appliance.probe(PLC1, 8080) == "dropped"


def test_confirmed_commit_stays(appliance: Appliance) -> None:
    appliance.commit(config())
    cfg = config(conduits=[*config()["conduits"], conduit("web", PLC1, ["tcp/8080"])])
    second = appliance.commit(cfg, confirm_within=10)
    revs.confirm(appliance.store, author="test", now=time.time())
    deadline = appliance.revision(second).confirm_deadline
    # the deadline passes and a step of the net role after it leaves the revision alone
    stepped_after(appliance, deadline, deadline - time.time() + 2)
    assert appliance.revision(second).state == "confirmed"
    assert appliance.probe(PLC1, 8080) == "open"


def test_killing_the_daemon_keeps_the_gate_closed(appliance: Appliance, lab: LabSpec) -> None:
    appliance.commit(config())
    appliance.kill9()
    assert appliance.probe(PLC1, 8080) == "dropped"
    assert appliance.probe(PLC2, 502) == "dropped"
    assert appliance.probe(IT_HOST, 22, ns=lab.ns_ot) == "dropped"
    assert appliance.probe(PLC1, 502) == "open"


def test_fail_closed_before_the_first_revision(appliance: Appliance, lab: LabSpec) -> None:
    # no revision committed: the table holds the fail-closed ruleset, forwarding drops all
    listing = json.loads(appliance.nft("-j", "list", "chain", "inet", "appliance", "forward"))
    rules = [o["rule"] for o in listing["nftables"] if "rule" in o]
    assert len(rules) == 1 and "drop" in rules[0]["expr"][-1]
    assert appliance.live()["applied"]["fail_closed"] is True
    assert appliance.events("net.fail-closed")


def test_flush_ruleset_is_detected_and_reasserted(appliance: Appliance, lab: LabSpec) -> None:
    appliance.commit(config())
    topology.ns_run(lab.ns_app, ["nft", "flush", "ruleset"])
    wait_for(lambda: appliance.events("net.drift"), 3, "a net.drift event")
    wait_for(
        lambda: "c_it_ot_4" in appliance.nft("list", "table", "inet", "appliance", check=False),
        3,
        "the table to be back",
    )
    assert appliance.probe(PLC1, 8080) == "dropped"
    assert appliance.probe(PLC1, 502) == "open"
    # a rule slipped into our table is drift too
    topology.ns_run(lab.ns_app, ["nft", "insert", "rule", "inet", "appliance", "forward", "accept"])
    wait_for(lambda: len(appliance.events("net.drift")) >= 2, 3, "a second net.drift event")
    assert appliance.probe(PLC1, 8080) == "dropped"


def test_bad_config_is_refused_and_running_rules_untouched(appliance: Appliance) -> None:
    from appliance.errors import ConfigInvalid

    appliance.commit(config())
    before = appliance.nft("list", "table", "inet", "appliance")
    bad = config(conduits=[conduit("broken", PLC1, ["tcp/70000"])])
    with pytest.raises(ConfigInvalid) as err:
        appliance.import_(bad)
    assert "conduits[0].services[0]" in str(err.value) and "1-65535" in str(err.value)
    overlapping = config(conduits=[*config()["conduits"], conduit("dup", PLC1, ["tcp/502"])])
    with pytest.raises(ConfigInvalid, match="overlaps conduit 'scada-modbus'"):
        appliance.import_(overlapping)
    stepped_after(appliance, time.time(), 3)  # the role has looked again since
    after = appliance.nft("list", "table", "inet", "appliance")
    strip = lambda text: [ln for ln in text.splitlines() if "packets" not in ln]  # noqa: E731
    assert strip(before) == strip(after)
    assert appliance.probe(PLC1, 502) == "open"


REFUSED_APPLY = r"""
import json, sys
from appliance.errors import ApplyFailed
from appliance.net.nft import Nft
nft = Nft()
before = json.dumps(nft.list_table(), sort_keys=True)
doc = json.loads(sys.stdin.read())
# a valid document whose very last command the kernel refuses (a jump to nowhere)
doc["nftables"].append({"add": {"rule": {"family": "inet", "table": "appliance",
    "chain": "forward", "expr": [{"jump": {"target": "no-such-chain"}}]}}})
try:
    nft.apply(doc)
    print("applied")
except ApplyFailed as e:
    after = json.dumps(nft.list_table(), sort_keys=True)
    print("unchanged" if after == before else "CHANGED", e)
"""


def test_a_refused_document_changes_nothing_in_the_kernel(
    appliance: Appliance, lab: LabSpec
) -> None:
    """The transaction is the check: the kernel takes all of a document or none of it."""
    from appliance.config.load import validate_data
    from appliance.net.render import render

    appliance.commit(config())
    appliance.stop()  # hold the table still while we poke at it
    other = config(conduits=[conduit("web", PLC1, ["tcp/8080"])])
    doc = render(validate_data(other).config, datetime.now(UTC)).document()
    cp = topology.ns_run(lab.ns_app, [sys.executable, "-c", REFUSED_APPLY], input=json.dumps(doc))
    out = cp.stdout.strip()
    assert out.startswith("unchanged"), out
    assert "nftables refused the ruleset" in out
    assert appliance.probe(PLC1, 8080) == "dropped"
    assert appliance.probe(PLC1, 502) == "open"


@pytest.mark.parametrize("how", ["removed", "expired"])
def test_withdrawn_conduit_ends_its_established_connections(
    appliance: Appliance, lab: LabSpec, how: str
) -> None:
    client, server = f"chat-client-{how}", f"chat-{how}"  # own logs per case
    topology.spawn(lab, lab.ns_ot, server, [sys.executable, "-c", CHAT_SERVER, PLC1, "9300"])
    try:
        topology.wait_tcp(lab.ns_ot, PLC1, 9300)
        extra = {}
        if how == "expired":
            extra["expires"] = (datetime.now(UTC) + timedelta(seconds=5)).isoformat()
        appliance.commit(
            config(conduits=[*config()["conduits"], conduit("chat", PLC1, ["tcp/9300"], **extra)])
        )
        topology.spawn(lab, lab.ns_it, client, [sys.executable, "-c", CHAT_CLIENT, PLC1, "9300"])

        def said(prefix: str) -> bool:  # the log starts with the script itself: whole lines
            lines = topology.log_tail(lab, client, 200).splitlines()
            return any(line.startswith(prefix) for line in lines)

        wait_for(lambda: said("ok"), 10, "the chat to run")
        if how == "removed":
            appliance.commit(config())
        wait_for(
            lambda: said("broken "),
            15,
            "the established connection to be cut",
            lambda: topology.log_tail(lab, client, 3),
        )
        wait_for(
            lambda: appliance.events("traffic.cut"),
            5,
            "a traffic.cut event",
            lambda: [e["message"] for e in appliance.events("")][:8],
        )
    finally:
        topology.stop(lab, client)
        topology.stop(lab, server)


def test_a_conduit_whose_destination_never_answers_is_flagged(
    appliance: Appliance, lab: LabSpec
) -> None:
    """A conduit to an address where nothing answers (no ARP reply, no SYN-ACK) counts its
    SYNs like a healthy one; conntrack shows nobody answered: `answering: false` and one
    conduit.not_answering event, while the conduit to the real PLC stays answered."""
    dead = "192.168.50.99"  # in the OT subnet, no host there
    cfg = config()
    cfg["conduits"].append(conduit("dead-plc", dead, ["modbus"]))
    appliance.commit(cfg)
    assert modbus_read(lab, PLC1).get("registers"), "the PLC answers through scada-modbus"

    def flagged() -> list[dict] | None:
        appliance.probe(dead, 502, timeout=0.5)  # one more SYN nobody answers
        return appliance.events("conduit.not_answering") or None

    [event] = wait_for(flagged, 30, "the conduit.not_answering event")
    assert event["data"]["conduit"] == "dead-plc" and event["severity"] == "warning"
    live = appliance.live()["conduits"]
    assert live["dead-plc"]["answering"] is False and live["dead-plc"]["unanswered"] >= 1
    assert live["dead-plc"]["packets"] > 0  # what made it look healthy before
    assert live["scada-modbus"]["answering"] is True
