"""DHCP client (issue 12): the unit's IT side takes its address from a DHCP server in the lab.

dnsmasq runs on the lab's IT host (bound to its veth lan0 only, no DNS: --port=0), handing
out 10.10.0.100-150 with the IT host as router and 10.10.0.53 as DNS server. The unit's IT
side has `dhcp: true` and no static address: the net role's udhcpc gets a lease, the role
puts the address (with the lease's lifetime), the default route and the DNS server in
place, and a conduit from the IT host works through the leased address. The server gone
and the lease taken back (SIGUSR2 to the client: the lease is released) is `dhcp.lost`,
and the address goes; a revision without dhcp stops the client and takes the address
away, and commit-confirm brings both back."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from labkit import IT_HOST, PLC1, Appliance, config, wait_for

from appliance.lab import topology
from appliance.lab.topology import LabSpec

pytestmark = pytest.mark.integration

DNS = "10.10.0.53"


@pytest.fixture
def dhcp_server(lab: LabSpec, tmp_path: Path) -> Iterator[Path]:
    """dnsmasq as the IT network's DHCP server; yields its lease file."""
    d = tmp_path / "dnsmasq"
    d.mkdir()
    leases = d / "leases"
    argv = [
        "dnsmasq",
        "--no-daemon",
        "--conf-file=/dev/null",
        "--port=0",  # no DNS: DHCP only
        "--interface=lan0",
        "--bind-interfaces",
        "--except-interface=lo",
        "--user=root",
        "--group=root",
        "--dhcp-authoritative",
        "--no-ping",  # (an address is offered at once, not after a ping of it)
        "--dhcp-range=10.10.0.100,10.10.0.150,255.255.255.0,2m",
        f"--dhcp-option=option:router,{IT_HOST}",
        f"--dhcp-option=option:dns-server,{DNS}",
        f"--dhcp-leasefile={leases}",
        f"--pid-file={d / 'pid'}",
        "--log-dhcp",
        f"--log-facility={d / 'log'}",
    ]
    topology.spawn(lab, lab.ns_it, "dnsmasq", argv)
    try:
        yield leases
    finally:
        topology.stop(lab, "dnsmasq")


@pytest.fixture
def it_host_route(lab: LabSpec) -> Iterator[None]:
    """The IT host's default route goes back to 10.10.0.1 after the test moves it."""
    try:
        yield
    finally:
        topology.ns_run(lab.ns_it, ["ip", "route", "replace", "default", "via", "10.10.0.1"])


def with_dhcp(dhcp: bool = True) -> dict[str, Any]:
    cfg = config()
    if dhcp:
        cfg["interfaces"][0]["dhcp"] = True
        cfg["interfaces"][0]["addresses"] = []
    return cfg


def it0(appliance: Appliance) -> dict[str, Any]:
    return next((lk for lk in appliance.live().get("links", []) if lk["name"] == "it0"), {})


def lease(appliance: Appliance) -> dict[str, Any] | None:
    got = it0(appliance).get("dhcp") or {}
    return got if got.get("bound") else None


def kernel(lab: LabSpec, *argv: str) -> str:
    return topology.ns_run(lab.ns_app, ["ip", *argv]).stdout


def bound(appliance: Appliance, lab: LabSpec) -> dict[str, Any]:
    got = wait_for(lambda: lease(appliance), 20, "a DHCP lease")
    address = got["address"]
    wait_for(lambda: address in kernel(lab, "-4", "addr", "show", "dev", "it0"), 5, "")
    return got


def test_the_it_side_takes_its_address_from_dhcp(
    appliance: Appliance, lab: LabSpec, dhcp_server: Path, it_host_route: None
) -> None:
    appliance.commit(with_dhcp())
    got = bound(appliance, lab)
    ip = got["address"].split("/")[0]
    assert got["address"].endswith("/24")
    assert 100 <= int(ip.rsplit(".", 1)[1]) <= 150
    assert (got["router"], got["server"], got["dns"]) == (IT_HOST, IT_HOST, [DNS])
    assert 100 <= got["lease_s"] <= 120 and got["expires_at"] > got["obtained_at"]
    # the address carries the lease's lifetime; the default route is the lease's router
    addr = kernel(lab, "-4", "addr", "show", "dev", "it0")
    assert f"inet {got['address']}" in addr and "valid_lft forever" not in addr
    assert kernel(lab, "-4", "route", "show", "default").strip() == (
        f"default via {IT_HOST} dev it0 proto dhcp"
    )
    assert f"nameserver {DNS}" in (appliance.paths.run_dir / "resolv.conf").read_text()
    assert ip in dhcp_server.read_text()  # the server's own record of the lease
    [event] = appliance.events("dhcp.bound")
    assert event["message"].startswith(f"it0: DHCP lease {got['address']} from {IT_HOST}")

    # the conduit works through the leased address
    topology.ns_run(lab.ns_it, ["ip", "route", "replace", "default", "via", ip])
    assert wait_for(lambda: appliance.probe(PLC1, 502) == "open", 5, "the conduit")
    assert appliance.probe(PLC1, 8080) == "dropped"

    # the server is gone and the lease taken back: lost, and the address and route go
    topology.stop(lab, "dnsmasq")
    os.kill(it0(appliance)["dhcp"]["client_pid"], signal.SIGUSR2)
    [lost] = wait_for(lambda: appliance.events("dhcp.lost"), 10, "the lost lease")
    assert lost["severity"] == "warning" and got["address"] in lost["message"]
    wait_for(lambda: ip not in kernel(lab, "-4", "addr", "show", "dev", "it0"), 5, "")
    assert kernel(lab, "-4", "route", "show", "default").strip() == ""
    wait_for(lambda: (it0(appliance).get("dhcp") or {}).get("bound") is False, 5, "")
    assert it0(appliance)["dhcp"]["client_pid"] is not None  # it goes on asking


def test_a_revision_without_dhcp_stops_the_client_and_is_rolled_back(
    appliance: Appliance, lab: LabSpec, dhcp_server: Path
) -> None:
    appliance.commit(with_dhcp())
    got = bound(appliance, lab)
    ip = got["address"].split("/")[0]
    pid = it0(appliance)["dhcp"]["client_pid"]

    appliance.commit(with_dhcp(dhcp=False), confirm_within=10)
    wait_for(lambda: appliance.events("dhcp.released"), 10, "the lease given back")
    addr = kernel(lab, "-4", "addr", "show", "dev", "it0")
    assert ip not in addr and "10.10.0.1/24" in addr
    assert "dhcp" not in it0(appliance)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    # udhcpc released it: the server's lease record ends now (expiry 0 or the line gone)
    wait_for(lambda: ip not in dhcp_server.read_text() or dhcp_server.read_text()[0] == "0", 5, "")

    # not confirmed: the revision with dhcp comes back, and so does a lease
    wait_for(lambda: appliance.events("config.reverted"), 20, "the revert")
    again = wait_for(lambda: lease(appliance), 20, "a lease again")
    assert again["address"].startswith("10.10.0.1")
    wait_for(lambda: "10.10.0.1/24" not in kernel(lab, "-4", "addr", "show", "dev", "it0"), 5, "")


def clients(lab: LabSpec) -> list[str]:
    """The udhcpc processes on it0 of this machine (pgrep: the unit's run in its netns)."""
    out = topology.ns_run(lab.ns_app, ["pgrep", "-f", "udhcpc -f -i it0"], check=False)
    return out.stdout.split()


def test_a_restarted_net_role_keeps_the_lease_and_one_client(
    appliance: Appliance, lab: LabSpec, dhcp_server: Path
) -> None:
    appliance.commit(with_dhcp())
    got = bound(appliance, lab)
    seen = max(e["id"] for e in appliance.events(""))
    appliance.kill9()  # its udhcpc lives on, in a session of its own
    assert len(clients(lab)) == 1
    appliance.start()
    # the new role ends the old client, starts its own, and the address never went
    wait_for(lambda: (lease(appliance) or {}).get("address") == got["address"], 20, "the lease")
    wait_for(lambda: len(clients(lab)) == 1 and lease(appliance)["client_pid"], 10, "one client")
    assert clients(lab) == [str(lease(appliance)["client_pid"])]
    after = [e for e in appliance.events("") if e["id"] > seen]
    assert not [e for e in after if e["kind"] == "dhcp.lost"]
    assert not [e for e in after if e["kind"] == "net.links" and "removed" in e["message"]]
    assert got["address"] in kernel(lab, "-4", "addr", "show", "dev", "it0")
