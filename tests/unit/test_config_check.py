"""Rules across the document (sides, names, NAT, one conduit per flow); the overlap finder."""

from __future__ import annotations

import ipaddress
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from propkit import examples

from appliance.config.check import Element, conduit_elements, find_overlaps
from appliance.config.model import Conduit
from appliance.config.services import Service

from .factory import NOW, conduit

# -- interfaces ---------------------------------------------------------------


def test_base_is_valid(valid, base) -> None:
    assert valid(base).warnings == []


def test_duplicate_interface_names(invalid, base) -> None:
    base["interfaces"][1]["name"] = "it0"
    assert invalid(base) == [
        ("interfaces[1].name", "name it0 is already used by interfaces[0]", None)
    ]


def test_duplicate_macs_compare_normalised(invalid, base) -> None:
    base["interfaces"][1]["mac"] = "02-A0-00-00-01-01"
    assert invalid(base) == [
        ("interfaces[1].mac", "MAC 02:a0:00:00:01:01 is already used by interfaces[0]", None)
    ]


def test_interfaces_without_mac_are_not_duplicates(valid, base) -> None:
    for i in base["interfaces"]:
        del i["mac"]
    valid(base)


def test_overlapping_subnets_on_two_interfaces(invalid, base) -> None:
    base["interfaces"].append({"name": "mgmt0", "role": "mgmt", "addresses": ["10.10.0.129/25"]})
    assert invalid(base) == [
        (
            "interfaces[2].addresses[0]",
            "10.10.0.129/25 overlaps 10.10.0.0/24 on it0: each side needs its own subnet",
            None,
        )
    ]


def test_gateway_outside_the_subnet(invalid, base) -> None:
    base["interfaces"][0]["gateway"] = "10.10.1.1"
    assert invalid(base) == [
        ("interfaces[0].gateway", "10.10.1.1 is not in a subnet of it0's addresses", None)
    ]


def test_gateway_of_the_other_ip_version(invalid, base) -> None:
    base["interfaces"][0]["gateway"] = "fd00::1"
    [(path, msg, _)] = invalid(base)
    assert path == "interfaces[0].gateway"
    assert msg == "fd00::1 is not in a subnet of it0's addresses"


def test_gateway_inside_the_subnet(valid, base) -> None:
    base["interfaces"][0]["gateway"] = "10.10.0.254"
    valid(base)


def test_one_gateway_per_ip_version(invalid, valid, base) -> None:
    base["interfaces"][0]["gateway"] = "10.10.0.254"
    base["interfaces"][1]["gateway"] = "192.168.50.254"
    assert invalid(base) == [
        (
            "interfaces[1].gateway",
            "only one IPv4 gateway is allowed (it0 has one already)",
            None,
        )
    ]
    base["interfaces"][1]["addresses"].append("fd00:50::1/64")
    base["interfaces"][1]["gateway"] = "fd00:50::fe"
    valid(base)


def test_conduits_need_it_and_ot_interfaces(invalid, base) -> None:
    base["interfaces"][1]["role"] = "mgmt"
    errors = invalid(base)
    assert ("conduits", "conduits need an interface with role it and one with role ot", None) in (
        errors
    )


def test_no_conduits_need_no_interfaces() -> None:
    # the document-wide rules ask for no interface when nothing crosses (the document
    # boundary asks for interfaces anyway: see test_config_load's required sections)
    from appliance.config.check import check
    from appliance.config.model import Config

    errors, _ = check(Config.model_validate({"interfaces": [], "conduits": []}), NOW)
    assert errors == []


# -- conduits -----------------------------------------------------------------


def test_duplicate_conduit_names(invalid, base) -> None:
    base["conduits"].append(conduit("scada-modbus", to=["192.168.50.11"]))
    assert invalid(base) == [
        ("conduits[1].name", "name scada-modbus is already used by conduits[0]", None)
    ]


def test_from_on_the_ot_side_is_refused(invalid, base) -> None:
    base["conduits"][0]["from"] = ["10.10.0.2", "192.168.50.0/25"]
    assert invalid(base) == [
        (
            "conduits[0].from[1]",
            "192.168.50.0/25 is on the OT side (ot0 192.168.50.0/24); `from` lists IT hosts",
            None,
        )
    ]


@pytest.mark.parametrize(
    ("role", "addr", "where"),
    [("it", "10.10.0.9", "it0 10.10.0.0/24"), ("mgmt", "10.99.0.1", "mgmt0 10.99.0.0/30")],
)
def test_to_on_the_it_or_mgmt_side_is_refused(invalid, base, role, addr, where) -> None:
    base["interfaces"].append({"name": "mgmt0", "role": "mgmt", "addresses": ["10.99.0.2/30"]})
    base["conduits"][0]["to"] = [addr]
    assert invalid(base) == [
        (
            "conduits[0].to[0]",
            f"{addr}/32 is not on the OT side ({where}); `to` lists OT hosts",
            None,
        )
    ]


def test_addresses_beyond_connected_subnets_are_allowed(valid, base) -> None:
    # Routed networks behind a gateway on either side are not known to be on one side.
    base["conduits"][0]["from"] = ["172.16.0.0/16"]
    base["conduits"][0]["to"] = ["192.168.60.0/24"]
    valid(base)


def test_any_it_host_is_allowed_though_it_contains_the_ot_subnet(valid, base) -> None:
    # Only networks inside a connected subnet are placed on a side; "any host"
    # still means any host *on the IT side*: the forward chain sorts by interface.
    base["conduits"][0]["from"] = ["0.0.0.0/0"]
    valid(base)


def test_from_and_to_of_different_ip_versions(invalid, base) -> None:
    base["conduits"][0]["to"] = ["fd00:50::10"]
    assert invalid(base) == [
        ("conduits[0]", "no address in `from` has the same IP version as one in `to`", None)
    ]


def test_overlapping_conduits_are_refused_naming_both(invalid, base) -> None:
    base["conduits"].append(
        conduit(
            "engineering", from_=["10.10.0.0/24"], to=["192.168.50.0/24"], services=["tcp/1-1024"]
        )
    )
    assert invalid(base) == [
        (
            "conduits[1]",
            "overlaps conduit 'scada-modbus' (conduits[0]) on 10.10.0.0/24 → 192.168.50.0/24 "
            "tcp/1-1024: a flow must belong to exactly one conduit",
            None,
        )
    ]


def test_overlap_is_reported_on_the_later_conduit_whatever_the_order(invalid, base) -> None:
    base["conduits"].insert(
        0,
        conduit("engineering", from_=["10.10.0.0/24"], to=["192.168.50.0/24"], services=["modbus"]),
    )
    [(path, msg, _)] = invalid(base)
    assert path == "conduits[1]"
    assert "'engineering' (conduits[0])" in msg


def test_two_entries_of_one_conduit_overlap(invalid, base) -> None:
    base["conduits"][0]["services"] = ["modbus", "tcp/500-510"]
    [(path, msg, _)] = invalid(base)
    assert path == "conduits[0]"
    assert msg.startswith("two of its entries overlap (")
    assert "tcp/502" in msg and "tcp/500-510" in msg


@pytest.mark.parametrize(
    "change",
    [
        {"services": ["udp/502"]},  # other protocol
        {"services": ["tcp/503"]},  # other port
        {"to": ["192.168.50.11"]},  # other destination
        {"from": ["10.10.0.3"]},  # other source
        {"enabled": False},  # disabled conduits pass nothing
        {"expires": (NOW - timedelta(seconds=1)).isoformat()},  # expired ones neither
        {"services": ["ping"]},  # ping is not tcp
    ],
)
def test_not_overlapping(valid, base, change: dict[str, Any]) -> None:
    base["conduits"].append(conduit("second", **change))
    valid(base)


def test_direction_both_overlaps_in_each_direction(invalid, base) -> None:
    base["conduits"][0]["direction"] = "both"
    base["conduits"].append(conduit("reverse", direction="both"))
    errors = invalid(base)
    assert [p for p, _, _ in errors] == ["conduits[1]", "conduits[1]"]
    msgs = " ".join(m for _, m, _ in errors)
    assert "10.10.0.2/32 → 192.168.50.10/32 tcp/502" in msgs
    assert "192.168.50.10/32 → 10.10.0.2/32 tcp/502" in msgs


def test_one_way_does_not_overlap_the_reverse_of_both(valid, base) -> None:
    # The OT→IT half of a `both` conduit is another zone than anyone's IT→OT flows.
    base["conduits"].append(
        conduit("reverse", from_=["10.10.0.3"], to=["192.168.50.10"], direction="both")
    )
    valid(base)


def test_expired_conduit_warns(valid, base) -> None:
    base["conduits"][0]["expires"] = "2025-12-31T23:59:59Z"
    assert valid(base).warnings == ["conduits[0].expires: already expired: passes nothing"]


def test_expiring_exactly_now_counts_as_expired(valid, base) -> None:
    base["conduits"][0]["expires"] = NOW.isoformat()
    assert valid(base).warnings == ["conduits[0].expires: already expired: passes nothing"]


def test_future_expiry_does_not_warn(valid, base) -> None:
    base["conduits"][0]["expires"] = "2026-01-01T01:00:00Z"
    assert valid(base).warnings == []


def test_without_now_no_expiry_warning(valid, base) -> None:
    base["conduits"][0]["expires"] = "2000-01-01T00:00:00Z"
    assert valid(base, now=None).warnings == []


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("owner", "  ", "must not be blank"),
        ("reason", "", "may not be empty"),
        ("from", [], "give at least one IT host or network"),
        ("services", [], "give at least one service (e.g. modbus or tcp/8080)"),
        ("direction", "reverse", "must be one-way or both, not 'reverse'"),
    ],
)
def test_conduit_field_rules(invalid, base, field: str, value: Any, message: str) -> None:
    base["conduits"][0][field] = value
    assert invalid(base) == [(f"conduits[0].{field}", message, None)]


@pytest.mark.parametrize("name", ["Upper", "-lead", "a b", "x" * 49, ""])
def test_conduit_names(invalid, base, name: str) -> None:
    base["conduits"][0]["name"] = name
    [(path, msg, _)] = invalid(base)
    assert path == "conduits[0].name"
    assert "must be 1-48 characters" in msg


@pytest.mark.parametrize("name", ["eth0.100", "x" * 15, "a_b-c"])
def test_interface_names_accepted(valid, base, name: str) -> None:
    base["interfaces"][0]["name"] = name
    valid(base)


@pytest.mark.parametrize("name", ["x" * 16, "eth 0", "eth/0", ""])
def test_interface_names_refused(invalid, base, name: str) -> None:
    base["interfaces"][0]["name"] = name
    [(path, msg, _)] = invalid(base)
    assert path == "interfaces[0].name"
    assert "is not a valid interface name" in msg


# -- NAT ------------------------------------------------------------------


def nat(base: dict[str, Any], **section: Any) -> dict[str, Any]:
    base["nat"] = section
    return base


def test_one_to_one_ok(valid, base) -> None:
    valid(nat(base, one_to_one=[{"it_address": "10.10.0.50", "ot_address": "192.168.50.10"}]))


def test_one_to_one_own_address(invalid, base) -> None:
    data = nat(base, one_to_one=[{"it_address": "10.10.0.1", "ot_address": "192.168.50.10"}])
    assert invalid(data) == [
        ("nat.one_to_one[0].it_address", "10.10.0.1 is the appliance's own", None)
    ]


def test_one_to_one_outside_it(invalid, base) -> None:
    data = nat(base, one_to_one=[{"it_address": "10.10.1.5", "ot_address": "10.10.0.9"}])
    assert invalid(data) == [
        ("nat.one_to_one[0].it_address", "10.10.1.5 is not in a subnet of an IT interface", None),
        ("nat.one_to_one[0].ot_address", "10.10.0.9 is on the IT side", None),
    ]


def test_one_to_one_duplicate(invalid, base) -> None:
    data = nat(
        base,
        one_to_one=[
            {"it_address": "10.10.0.50", "ot_address": "192.168.50.10"},
            {"it_address": "10.10.0.50", "ot_address": "192.168.50.11"},
        ],
    )
    assert invalid(data) == [
        (
            "nat.one_to_one[1].it_address",
            "address 10.10.0.50 is already used by nat.one_to_one[0]",
            None,
        )
    ]


def test_one_to_one_is_ipv4_only(invalid, base) -> None:
    data = nat(base, one_to_one=[{"it_address": "fd00::5", "ot_address": "192.168.50.10"}])
    assert invalid(data) == [
        (
            "nat.one_to_one[0].it_address",
            "fd00::5 is IPv6; NAT is IPv4 only (IPv6 needs no NAT)",
            None,
        )
    ]


def pf(**fields: Any) -> dict[str, Any]:
    return {"name": "pf", "port": 8502, "to_address": "192.168.50.10", "to_port": 502, **fields}


def test_port_forward_covered_by_a_conduit(valid, base) -> None:
    assert valid(nat(base, port_forwards=[pf()])).warnings == []


def test_port_forward_without_conduit_warns(valid, base) -> None:
    data = nat(base, port_forwards=[pf(to_address="192.168.50.11")])
    assert valid(data).warnings == [
        "nat.port_forwards[0]: no conduit allows tcp/502 to 192.168.50.11: "
        "its traffic will be dropped"
    ]


def test_port_forward_without_to_port_uses_port(valid, base) -> None:
    data = nat(base, port_forwards=[pf(to_port=None, port=502)])
    assert valid(data).warnings == []
    data["nat"]["port_forwards"][0]["port"] = 503
    assert valid(data).warnings[0].startswith("nat.port_forwards[0]: no conduit allows tcp/503")


def test_port_forward_other_protocol_is_not_covered(valid, base) -> None:
    data = nat(base, port_forwards=[pf(protocol="udp")])
    assert len(valid(data).warnings) == 1


def test_port_forward_on_a_management_port(invalid, base) -> None:
    data = nat(base, port_forwards=[pf(port=4840)])  # the OPC UA server for IT
    assert invalid(data) == [
        (
            "nat.port_forwards[0].port",
            "tcp/4840 is a service the appliance itself answers on the IT side",
            None,
        )
    ]


def test_port_forward_on_the_ui_port_when_the_ui_listens_on_it(invalid, base) -> None:
    data = nat(base, port_forwards=[pf(port=443)])
    data["web"] = {"listen_it": True}
    assert invalid(data) == [
        (
            "nat.port_forwards[0].port",
            "tcp/443 is a service the appliance itself answers on the IT side",
            None,
        )
    ]


def test_port_forward_on_a_port_the_it_side_does_not_serve(valid, base) -> None:
    base["interfaces"][0]["allow_in"] = ["ssh"]
    valid(nat(base, port_forwards=[pf(port=443)]))


def test_port_forward_duplicate(invalid, base) -> None:
    data = nat(base, port_forwards=[pf(), pf(name="pf2", to_address="192.168.50.11")])
    assert invalid(data) == [
        (
            "nat.port_forwards[1].port",
            "protocol/port tcp/8502 is already used by nat.port_forwards[0]",
            None,
        )
    ]


def test_port_forward_same_port_other_protocol(valid, base) -> None:
    base["conduits"][0]["services"] = ["modbus", "udp/502"]
    valid(nat(base, port_forwards=[pf(), pf(name="pf2", protocol="udp")]))


def test_port_forward_needs_an_it_interface(invalid, base) -> None:
    base["conduits"] = []
    base["interfaces"][0]["role"] = "mgmt"
    data = nat(base, port_forwards=[pf()])
    assert ("nat.port_forwards[0]", "needs an interface with role it", None) in invalid(data)


# -- conduit_elements -----------------------------------------------------------


def test_elements_cross_product_same_version_only() -> None:
    c = Conduit.model_validate(
        conduit(
            "x",
            from_=["10.10.0.2", "fd00:10::2"],
            to=["192.168.50.10", "192.168.50.11"],
            services=["modbus", "ping"],
        )
    )
    els = conduit_elements(c)
    assert len(els) == 4  # fd00:10::2 has no IPv6 destination
    assert {e.zone for e in els} == {"it_ot"}
    assert {str(e.dst) for e in els} == {"192.168.50.10/32", "192.168.50.11/32"}
    assert {str(e.service) for e in els} == {"tcp/502", "ping"}


def test_elements_both_directions_mirror() -> None:
    c = Conduit.model_validate(conduit("x", direction="both"))
    a, b = conduit_elements(c)
    assert (a.zone, str(a.src), str(a.dst)) == ("it_ot", "10.10.0.2/32", "192.168.50.10/32")
    assert (b.zone, str(b.src), str(b.dst)) == ("ot_it", "192.168.50.10/32", "10.10.0.2/32")
    assert a.service == b.service


# -- find_overlaps against brute force --------------------------------------

BLOCKS = [ipaddress.ip_network(n) for n in ("10.0.0.0/24", "10.0.1.0/24", "10.0.3.0/24")]


@st.composite
def networks(draw: st.DrawFn) -> ipaddress.IPv4Network:
    """Mostly tiny networks in 10.0.0.0/28 (where edges touch), some /22-/32 in a few /24s."""
    if draw(st.booleans()):
        host, prefix = draw(st.integers(0, 15)), draw(st.integers(28, 32))
        return ipaddress.ip_network(f"10.0.0.{host}/{prefix}", strict=False)
    block = draw(st.sampled_from(BLOCKS))
    prefix = draw(st.integers(22, 32))
    host = draw(st.integers(0, 255))
    return ipaddress.ip_network(f"{block.network_address + host}/{prefix}", strict=False)


@st.composite
def services(draw: st.DrawFn) -> Service:
    proto = draw(st.sampled_from(["tcp", "udp", "icmp"]))
    if proto == "icmp":
        return Service("icmp")
    lo = draw(st.integers(1, 12))
    return Service(proto, lo, lo + draw(st.sampled_from([0, 0, 0, 1, 3, 8])))


@st.composite
def elements(draw: st.DrawFn) -> Element:
    zone = draw(st.sampled_from(["it_ot", "ot_it"]))
    return Element(zone, draw(networks()), draw(networks()), draw(services()))


items_strategy = st.lists(st.tuples(st.integers(0, 5), elements()), max_size=14)


def _spans_meet(a: Any, b: Any) -> bool:
    return int(a.network_address) <= int(b.broadcast_address) and int(b.network_address) <= int(
        a.broadcast_address
    )


def really_overlap(a: Element, b: Element) -> bool:
    """Some packet matches both: the obvious definition, one pair at a time."""
    return (
        a.zone == b.zone
        and a.family == b.family
        and a.service.proto == b.service.proto
        and a.service.lo <= b.service.hi
        and b.service.lo <= a.service.hi
        and _spans_meet(a.src, b.src)
        and _spans_meet(a.dst, b.dst)
    )


@given(items_strategy)
def test_find_overlaps_agrees_with_brute_force(items: list[tuple[int, Element]]) -> None:
    brute = any(really_overlap(a, b) for i, (_, a) in enumerate(items) for _, b in items[i + 1 :])
    found = find_overlaps(items)
    assert bool(found) == brute
    for oa, a, ob, b in found:
        assert really_overlap(a, b)
        assert (oa, a) in items and (ob, b) in items


tiny = st.builds(
    lambda host, prefix: ipaddress.ip_network(f"10.0.0.{host}/{prefix}", strict=False),
    st.integers(0, 7),
    st.integers(29, 32),
)
same_service = st.lists(
    st.tuples(
        st.integers(0, 3),
        st.builds(Element, st.just("it_ot"), tiny, tiny, st.just(Service("tcp", 502, 502))),
    ),
    max_size=6,
)
same_nets = st.lists(
    st.tuples(
        st.integers(0, 3),
        st.builds(
            Element,
            st.just("it_ot"),
            st.just(ipaddress.ip_network("10.0.0.0/24")),
            st.just(ipaddress.ip_network("10.0.1.0/24")),
            st.builds(
                lambda lo, width: Service("tcp", lo, lo + width),
                st.integers(1, 20),
                st.integers(0, 6),
            ),
        ),
    ),
    max_size=6,
)


def _el(src: str, dst: str, lo: int = 502, hi: int = 502) -> Element:
    return Element(
        "it_ot", ipaddress.ip_network(src), ipaddress.ip_network(dst), Service("tcp", lo, hi)
    )


@given(st.one_of(same_service, same_nets))
# A destination that ends exactly where the next one starts.
@example([(0, _el("10.0.0.0/32", "10.0.0.0/31")), (1, _el("10.0.0.0/32", "10.0.0.1/32"))])
# A source that ended before the second started, overlapped by a later, wider one.
@example(
    [
        (0, _el("10.0.0.0/32", "10.0.0.1/32")),
        (1, _el("10.0.0.5/32", "10.0.0.2/32")),
        (2, _el("10.0.0.0/29", "10.0.0.1/32")),
    ]
)
# A port range nested in a wider one after a narrower one closed the cluster.
@example(
    [
        (0, _el("10.0.0.0/24", "10.0.1.0/24", 1, 10)),
        (1, _el("10.0.3.0/24", "10.0.1.0/24", 2, 3)),
        (2, _el("10.0.0.0/24", "10.0.1.0/24", 5, 5)),
    ]
)
def test_find_overlaps_agrees_with_brute_force_on_one_axis(
    items: list[tuple[int, Element]],
) -> None:
    """Only addresses vary (the sweep) or only ports vary (the clustering)."""
    test_find_overlaps_agrees_with_brute_force.hypothesis.inner_test(items)


@settings(max_examples=examples(50))
@given(st.lists(st.tuples(st.integers(0, 5), elements()), min_size=1, max_size=10))
def test_find_overlaps_reports_each_pair_once_and_never_an_element_with_itself(
    items: list[tuple[int, Element]],
) -> None:
    found = find_overlaps(items)
    pairs = [(id(a), id(b)) for _, a, _, b in found]
    assert all(x != y for x, y in pairs)
    assert len({frozenset(p) for p in pairs}) == len(pairs)


def test_find_overlaps_duplicates_of_one_element() -> None:
    el = Element(
        "it_ot",
        ipaddress.ip_network("10.0.0.0/24"),
        ipaddress.ip_network("10.0.1.5/32"),
        Service("tcp", 502, 502),
    )
    found = find_overlaps([(0, el), (1, el)])
    assert [(oa, ob) for oa, _, ob, _ in found] == [(0, 1)]


def test_find_overlaps_sweep_detects_nested_destinations() -> None:
    # Same service (the sweep path); the second source starts after the first
    # ends, the third overlaps the first only.
    svc = Service("tcp", 502, 502)
    net = ipaddress.ip_network
    items = [
        (0, Element("it_ot", net("10.0.0.0/25"), net("10.0.3.0/24"), svc)),
        (1, Element("it_ot", net("10.0.0.128/25"), net("10.0.3.0/24"), svc)),
        (2, Element("it_ot", net("10.0.0.64/26"), net("10.0.3.17/32"), svc)),
    ]
    assert [(oa, ob) for oa, _, ob, _ in find_overlaps(items)] == [(0, 2)]


def test_find_overlaps_is_capped() -> None:
    svc = Service("tcp", 1, 1)
    net = ipaddress.ip_network("10.0.0.0/24")
    items = [(k, Element("it_ot", net, net, svc)) for k in range(50)]
    assert len(find_overlaps(items)) == 20


def test_find_overlaps_of_many_disjoint_is_empty() -> None:
    svc = Service("tcp", 502, 502)
    items = [
        (
            k,
            Element(
                "it_ot",
                ipaddress.ip_network(f"10.{k // 256}.{k % 256}.0/24"),
                ipaddress.ip_network("192.168.0.0/16"),
                svc,
            ),
        )
        for k in range(3000)
    ]
    assert find_overlaps(items) == []


@pytest.mark.parametrize(
    ("mtu", "message"),
    [
        (575, "must be at least 576, not 575"),
        (576, None),
        (9216, None),
        (9217, "must be at most 9216, not 9217"),
    ],
)
def test_interface_mtu_bounds(valid, invalid, base, mtu: int, message: str | None) -> None:
    base["interfaces"][0]["mtu"] = mtu
    if message is None:
        assert valid(base).config.interfaces[0].mtu == mtu
    else:
        assert invalid(base) == [("interfaces[0].mtu", message, None)]
