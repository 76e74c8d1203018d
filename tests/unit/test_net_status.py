"""`appliance status`: the mode line and the DHCP leases, from the net role's snapshot."""

from __future__ import annotations

from appliance.cli import _dhcp_lines, _mode_line

BRIDGE = {
    "name": "br0",
    "ports": [{"name": "it0", "role": "it"}, {"name": "ot0", "role": "ot"}],
    "lldp": True,
    "stp": False,
    "filter": "br_netfilter",
    "error": None,
}


def test_mode_line() -> None:
    assert _mode_line({}) is None  # no revision ran yet
    assert _mode_line({"mode": "routed", "bridge": None}).startswith("routed")
    assert _mode_line({"mode": "bridge", "bridge": BRIDGE}) == (
        "bridge br0: it0 (it), ot0 (ot); ARP passes, LLDP passes, STP dropped; "
        "IP filtered through br_netfilter"
    )
    broken = {**BRIDGE, "filter": None, "error": "this kernel has no br_netfilter"}
    assert _mode_line({"mode": "bridge", "bridge": broken}).endswith(
        "NOTHING crosses: this kernel has no br_netfilter"
    )


def test_dhcp_lines() -> None:
    net = {
        "links": [
            {"name": "ot0", "role": "ot", "addresses": []},
            {
                "name": "it0",
                "dhcp": {
                    "bound": True,
                    "client_pid": 42,
                    "address": "10.10.0.100/24",
                    "server": "10.10.0.2",
                    "router": "10.10.0.2",
                    "expires_at": 1000.0 + 3725,
                },
            },
            {"name": "mgmt0", "dhcp": {"bound": False, "client_pid": None}},
        ]
    }
    assert _dhcp_lines(net, 1000.0) == [
        "it0      10.10.0.100/24 from 10.10.0.2, router 10.10.0.2, expires in 1 h 02 min",
        "mgmt0    no lease (NO client running)",
    ]
    net["links"][1]["dhcp"]["expires_at"] = 1000.0 + 75
    assert _dhcp_lines(net, 1000.0)[0].endswith("expires in 1 min 15 s")
    assert _dhcp_lines(net, 5000.0)[0].endswith("expires in 0 s")
