"""802.1Q VLANs (issue 12): a cell on VLAN 30 of the OT cable, a zone with its own conduit.

The lab's OT host gets a VLAN 30 sub-interface on its cable (plcnet0.30, 192.168.30.10)
with a source route back through the appliance's VLAN address, so that its answers go
out tagged. The appliance adds ot0.30 when the document has the VLAN, removes it when
the document drops it, and a commit that drops it and is not confirmed brings it back."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest
from labkit import PLC1, Appliance, conduit, config, tcp_listener, wait_for

from appliance.lab import topology
from appliance.lab.topology import LabSpec

pytestmark = pytest.mark.integration

CELL = "192.168.30.10"
PORT = 8502  # a TCP service of the cell (a listener started here)
VLAN = {"id": 30, "role": "ot", "addresses": ["192.168.30.1/24"]}
CELL_SETUP = [
    ["ip", "link", "add", "link", "plcnet0", "name", "plcnet0.30", "type", "vlan", "id", "30"],
    ["ip", "addr", "add", f"{CELL}/24", "dev", "plcnet0.30", "nodad"],
    ["ip", "link", "set", "plcnet0.30", "up"],
    ["ip", "route", "add", "default", "via", "192.168.30.1", "dev", "plcnet0.30", "table", "130"],
    ["ip", "rule", "add", "from", CELL, "lookup", "130"],
]


def kernel_makes_vlans() -> bool:
    """Whether this kernel has 802.1Q (CONFIG_VLAN_8021Q): tried in a namespace of our own.
    These CI machines' kernel has not; Debian's kernel in the image has."""
    ns = "t-vlanprobe"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        run = ["ip", "-n", ns, "link", "add"]
        subprocess.run([*run, "v0", "type", "veth", "peer", "name", "v1"], check=True)
        made = subprocess.run([*run, "link", "v0", "name", "v0.30", "type", "vlan", "id", "30"])
        return made.returncode == 0
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


VLANS = kernel_makes_vlans()


@pytest.fixture
def cell(lab: LabSpec) -> Iterator[str]:
    if not VLANS:  # no VLAN link on either side: the tests check the refusal
        yield CELL
        return
    for argv in CELL_SETUP:
        topology.ns_run(lab.ns_ot, argv)
    try:
        with tcp_listener(lab.ns_ot, CELL, PORT):
            yield CELL
    finally:
        topology.ns_run(
            lab.ns_ot, ["ip", "rule", "del", "from", CELL, "lookup", "130"], check=False
        )
        topology.ns_run(lab.ns_ot, ["ip", "route", "flush", "table", "130"], check=False)
        topology.ns_run(lab.ns_ot, ["ip", "link", "del", "plcnet0.30"], check=False)


def with_vlan(vlan: bool = True) -> dict:
    cfg = config()
    if vlan:
        cfg["interfaces"][1]["vlans"] = [VLAN]
    cfg["conduits"].append(conduit("cell-30", CELL, [f"tcp/{PORT}"]))
    return cfg


def vlan_link(lab: LabSpec) -> str:
    out = topology.ns_run(lab.ns_app, ["ip", "-d", "-o", "link", "show"]).stdout
    return next((line for line in out.splitlines() if " ot0.30@ot0:" in line), "")


def reached(appliance: Appliance) -> bool:
    return appliance.probe(CELL, PORT) == "open"


def test_a_vlan_zone_has_its_own_conduit(appliance: Appliance, lab: LabSpec, cell: str) -> None:
    if not VLANS:
        return without_8021q(appliance, lab)
    appliance.commit(with_vlan(vlan=False))
    assert vlan_link(lab) == "" and not reached(appliance), "no VLAN: out of reach"

    appliance.commit(with_vlan())
    link = vlan_link(lab)
    assert "vlan protocol 802.1Q id 30" in link and "state UP" in link, link
    addrs = topology.ns_run(lab.ns_app, ["ip", "-o", "addr", "show", "dev", "ot0.30"]).stdout
    assert "192.168.30.1/24" in addrs
    assert wait_for(lambda: reached(appliance), 5, "the VLAN 30 cell through its conduit")
    # the conduit decides as for any OT host: another service does not pass
    assert appliance.probe(CELL, 8080) == "dropped"
    links = {lk["name"]: lk for lk in appliance.live()["links"]}
    assert links["ot0.30"]["role"] == "ot" and links["ot0.30"]["present"]

    appliance.commit(with_vlan(vlan=False))  # the document no longer has it: it goes
    assert vlan_link(lab) == "" and not reached(appliance)


def test_an_unconfirmed_commit_that_drops_the_vlan_brings_it_back(
    appliance: Appliance, lab: LabSpec, cell: str
) -> None:
    if not VLANS:  # the error ends with the document that asked for the VLAN
        appliance.commit(with_vlan())
        assert wait_for(lambda: appliance.live().get("last_error"), 5, "the VLAN's error")
        appliance.commit(with_vlan(vlan=False))
        assert wait_for(lambda: not appliance.live().get("last_error"), 5, "the error to end")
        return
    first = appliance.commit(with_vlan())
    assert wait_for(lambda: reached(appliance), 5, "the cell on its VLAN")
    second = appliance.commit(with_vlan(vlan=False), confirm_within=10)
    assert vlan_link(lab) == "" and not reached(appliance)
    wait_for(lambda: appliance.revision(second).state == "rolled-back", 15, "the revert")
    appliance.wait_applied(first)
    assert "id 30" in vlan_link(lab)
    assert wait_for(lambda: reached(appliance), 5, "the cell again after the revert")


def without_8021q(appliance: Appliance, lab: LabSpec) -> None:
    """A kernel with no 802.1Q: the VLAN is an error that says so, shown absent, and the
    rest of the document is held as usual (its NICs, conduits, the Modbus proxy's route)."""
    appliance.commit(with_vlan())
    want = "ot0.30: VLAN 30 on ot0 cannot be made: this kernel has no 802.1Q VLAN support"
    assert wait_for(
        lambda: any(want in e["message"] for e in appliance.events("net.error")), 5, "the error"
    )
    assert appliance.live()["last_error"].startswith(want)

    def links() -> dict[str, dict]:
        return {lk["name"]: lk for lk in appliance.live()["links"]}

    assert wait_for(lambda: links()["it0"]["oper"] == links()["ot0"]["oper"] == "UP", 5, "NICs")
    assert links()["ot0.30"]["role"] == "ot" and not links()["ot0.30"]["present"]
    assert appliance.probe(PLC1, 502) == "open"  # the document's other conduit
    rules = topology.ns_run(lab.ns_app, ["ip", "rule", "show"]).stdout
    assert "lookup 77" in rules  # done beside the VLAN's failure, not stopped by it
