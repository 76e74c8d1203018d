"""Which established connections a withdrawn conduit ends (pure part of the conntrack adapter)."""

from __future__ import annotations

import ipaddress
import socket

from appliance.config.check import Element
from appliance.config.services import Service
from appliance.net.conntrack import Flow, allows, flows_to_cut

TCP, UDP, ICMP = socket.IPPROTO_TCP, socket.IPPROTO_UDP, socket.IPPROTO_ICMP


def el(src: str, dst: str, proto: str = "tcp", lo: int = 502, hi: int | None = None) -> Element:
    net = ipaddress.ip_network
    return Element("it_ot", net(src), net(dst), Service(proto, lo, lo if hi is None else hi))


def test_allows_matches_addresses_protocol_and_port_range() -> None:
    e = el("10.10.0.0/24", "192.168.50.10", "tcp", 500, 510)
    assert allows(e, Flow("10.10.0.7", "192.168.50.10", TCP, 505))
    assert not allows(e, Flow("10.10.1.7", "192.168.50.10", TCP, 505))  # other source
    assert not allows(e, Flow("10.10.0.7", "192.168.50.11", TCP, 505))  # other destination
    assert not allows(e, Flow("10.10.0.7", "192.168.50.10", UDP, 505))  # other protocol
    assert not allows(e, Flow("10.10.0.7", "192.168.50.10", TCP, 511))  # outside the range
    assert not allows(e, Flow("fd00::7", "fd00::10", TCP, 505))  # other family


def test_ping_elements_match_icmp_flows_without_ports() -> None:
    e = el("10.10.0.2", "192.168.50.10", "icmp", 0)
    assert allows(e, Flow("10.10.0.2", "192.168.50.10", ICMP, None))
    assert not allows(e, Flow("10.10.0.2", "192.168.50.10", TCP, 0))


def test_only_flows_of_withdrawn_elements_that_nothing_else_allows_are_cut() -> None:
    web = el("10.10.0.2", "192.168.50.10", "tcp", 8080)
    modbus = el("10.10.0.2", "192.168.50.10", "tcp", 502)
    flows = [
        Flow("10.10.0.2", "192.168.50.10", TCP, 8080, "a"),  # withdrawn: cut
        Flow("10.10.0.2", "192.168.50.10", TCP, 502, "b"),  # still allowed: kept
        Flow("10.10.0.9", "192.168.50.10", TCP, 8080, "c"),  # never ours: kept
    ]
    assert [f.handle for f in flows_to_cut(flows, [web], [modbus])] == ["a"]
    # the same flow re-allowed by another (renamed) conduit is not cut
    assert flows_to_cut(flows, [web], [modbus, web]) == []
    assert flows_to_cut(flows, [], [modbus]) == []


def test_answers_counts_each_conduits_connections_and_those_without_a_reply() -> None:
    from appliance.net.conntrack import answers

    plc = el("10.10.0.0/24", "192.168.50.10", "tcp", 502)
    cell = el("10.10.0.2", "192.168.60.0/24", "tcp", 502)  # a network: tried in turn
    silent = el("10.10.0.2", "192.168.50.99", "tcp", 502)
    flows = [
        Flow("10.10.0.7", "192.168.50.10", TCP, 502, replied=True),
        Flow("10.10.0.8", "192.168.50.10", TCP, 502, replied=False),  # a SYN not answered yet
        Flow("10.10.0.2", "192.168.60.5", TCP, 502, replied=True),
        Flow("10.10.0.2", "192.168.50.99", TCP, 502, replied=False),
        Flow("10.10.0.2", "192.168.50.99", TCP, 502, replied=False),
        Flow("10.10.0.2", "192.168.50.77", TCP, 502, replied=False),  # no conduit: not counted
    ]
    got = answers(
        flows,
        [
            ("plc", plc),
            ("cell", cell),
            ("silent", silent),
            ("idle", el("10.10.0.2", "192.168.50.5")),
        ],
    )
    assert got == {
        "plc": {"connections": 2, "unanswered": 1},
        "cell": {"connections": 1, "unanswered": 0},
        "silent": {"connections": 2, "unanswered": 2},
    }  # "idle": no flow, left out


def test_answers_finds_ipv6_hosts_however_the_kernel_spells_them() -> None:
    from appliance.net.conntrack import answers

    e = el("fd00:10::/64", "fd00:50::0:10", "tcp", 502)
    got = answers([Flow("fd00:10::7", "fd00:50:0:0::10", TCP, 502, replied=False)], [("v6", e)])
    assert got == {"v6": {"connections": 1, "unanswered": 1}}
