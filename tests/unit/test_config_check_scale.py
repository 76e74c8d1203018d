"""Document-wide rules at scale (long host lists, many addresses), exact against brute force."""

from __future__ import annotations

import ipaddress
import time
from typing import Any
from unittest import mock

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from propkit import examples

from appliance.config import check as check_module
from appliance.config.check import check, conduit_elements, conduit_overlaps
from appliance.config.model import Config

from .factory import NOW, base, conduit
from .test_config_check import really_overlap

# A loaded 2-core machine; the list-product version took 20 s and 950 MB here.
BOUND_S = 2.0


@pytest.fixture(autouse=True)
def _no_flow_cap(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """These measure the overlap checks at sizes past the renderer's cap (MAX_FLOWS, tested
    below with it in force): the checks must stay fast whatever the cap is set to."""
    if "flow_cap" not in request.node.name:
        monkeypatch.setattr(check_module, "MAX_FLOWS", 10**12)


def hosts(prefix: str, n: int) -> list[str]:
    """n scattered hosts (every other address) in prefix.X.Y, so no two entries touch."""
    return [f"{prefix}.{k // 128}.{2 * (k % 128)}" for k in range(n)]


def big_conduit(name: str = "big", n: int = 1000, **fields: Any) -> dict[str, Any]:
    return conduit(
        name,
        from_=hosts("10.20", n),
        to=[f"192.168.{100 + k // 128}.{2 * (k % 128)}" for k in range(n)],
        services=["modbus", "http", "https"],
        **fields,
    )


def timed_check(data: dict[str, Any]) -> tuple[list[tuple[str, str]], float]:
    config = Config.model_validate(data)
    t0 = time.perf_counter()
    errors, _ = check(config, NOW)
    return [(e.path, e.message) for e in errors], time.perf_counter() - t0


# -- long lists in one conduit ---------------------------------------------------


def test_a_thousand_by_a_thousand_by_three_conduit_is_checked_quickly() -> None:
    data = base()
    data["conduits"] = [big_conduit(direction="both")]
    errors, took = timed_check(data)
    assert errors == []
    assert took < BOUND_S


def test_an_overlap_with_one_flow_of_a_big_conduit_is_found_quickly() -> None:
    data = base()
    data["conduits"] = [
        big_conduit(),
        conduit("one", from_=["10.20.7.102"], to=["192.168.103.8"], services=["tcp/440-450"]),
    ]
    errors, took = timed_check(data)
    assert errors == [
        (
            "conduits[1]",
            "overlaps conduit 'big' (conduits[0]) on 10.20.7.102/32 → 192.168.103.8/32 "
            "tcp/440-450: a flow must belong to exactly one conduit",
        )
    ]
    assert took < BOUND_S


def test_two_big_conduits_with_interleaved_hosts_do_not_overlap() -> None:
    # Odd and even hosts of the same ranges: every entry of one lies between two of the other.
    data = base()
    data["conduits"] = [
        conduit(
            name,
            from_=[f"10.20.{k // 128}.{2 * (k % 128) + odd}" for k in range(400)],
            to=[f"192.168.{100 + k // 128}.{2 * (k % 128) + odd}" for k in range(400)],
            services=["modbus"],
        )
        for odd, name in ((0, "even"), (1, "odd"))
    ]
    errors, took = timed_check(data)
    assert errors == []
    assert took < BOUND_S
    data["conduits"][1]["from"].append("10.20.0.0")  # even hosts: now they share a flow
    data["conduits"][1]["to"].append("192.168.100.4")
    errors, _ = timed_check(data)
    assert [p for p, _ in errors] == ["conduits[1]"]
    assert "on 10.20.0.0/32 → 192.168.100.4/32 tcp/502" in errors[0][1]


def test_two_entries_of_a_big_conduit_overlap() -> None:
    data = base()
    c = big_conduit()
    c["from"].append("10.20.3.0/24")
    data["conduits"] = [c]
    errors, took = timed_check(data)
    assert [p for p, _ in errors] == ["conduits[0]"]
    assert errors[0][1].startswith("two of its entries overlap (10.20.3.0/32 → ")
    assert "and 10.20.3.0/24 → " in errors[0][1]
    assert took < BOUND_S


def test_port_forward_to_a_big_conduit_is_checked_quickly() -> None:
    data = base()
    data["conduits"] = [big_conduit()]
    data["nat"] = {
        "port_forwards": [
            {
                "name": f"pf{k}",
                "port": 10000 + k,
                "to_address": f"192.168.107.{2 * k}",
                "to_port": 80,
            }
            for k in range(100)
        ]
        + [{"name": "odd", "port": 9999, "to_address": "192.168.107.1", "to_port": 80}]
    }
    config = Config.model_validate(data)
    t0 = time.perf_counter()
    errors, warnings = check(config, NOW)
    took = time.perf_counter() - t0
    assert errors == []
    assert [(w.path, w.message) for w in warnings] == [
        (
            "nat.port_forwards[100]",
            "no conduit allows tcp/80 to 192.168.107.1: its traffic will be dropped",
        )
    ]
    assert took < BOUND_S


# -- many addresses on one interface ---------------------------------------------


def many_addresses(n: int) -> dict[str, Any]:
    data = base()
    data["interfaces"][0]["addresses"] += [f"10.{100 + k // 256}.{k % 256}.1/24" for k in range(n)]
    return data


def test_twenty_thousand_addresses_are_checked_quickly() -> None:
    errors, took = timed_check(many_addresses(20000))
    assert errors == []
    assert took < BOUND_S


def test_an_overlap_among_twenty_thousand_addresses_is_found_quickly() -> None:
    data = many_addresses(20000)
    data["interfaces"][1]["addresses"].append("10.150.0.0/16")
    errors, took = timed_check(data)
    assert took < BOUND_S
    # every /24 of 10.150.0.0/16 is an earlier address: the first ones are named
    assert len(errors) == 20
    assert errors[0] == (
        "interfaces[1].addresses[1]",
        "10.150.0.0/16 overlaps 10.150.0.0/24 on it0: each side needs its own subnet",
    )
    assert errors[1][1].startswith("10.150.0.0/16 overlaps 10.150.1.0/24 on it0")


# -- exactly what the one-element-at-a-time definition says ----------------------


def _nets(prefix: str) -> st.SearchStrategy[str]:
    """Mostly hosts among 8, some small networks over them: entries that meet or touch."""
    host = st.integers(0, 7).map(lambda h: f"{prefix}.{h}")
    net = st.builds(
        lambda h, p: str(ipaddress.ip_network(f"{prefix}.{h}/{p}", strict=False)),
        st.integers(0, 7),
        st.integers(29, 31),
    )
    return st.one_of(host, host, host, net)


it6 = st.sampled_from(["fd00:20::/127", "fd00:20::1", "fd00:20::2"])
ot6 = st.sampled_from(["fd00:60::/126", "fd00:60::1", "fd00:60::5"])
svcs = st.sampled_from(
    ["modbus", "tcp/500-503", "tcp/503", "tcp/504", "udp/502", "ping", "ethernet-ip"]
)


def _fields(src: Any, dst: Any, services: Any) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {
            "from_": st.lists(src, min_size=1, max_size=4, unique=True),
            "to": st.lists(dst, min_size=1, max_size=4, unique=True),
            "services": st.lists(services, min_size=1, max_size=3, unique=True),
            "direction": st.sampled_from(["one-way", "one-way", "both"]),
            "enabled": st.sampled_from([True, True, True, False]),
        }
    )


# Any entries; or hosts only and services that never meet, so that a conduit's own
# entries are disjoint and what meets is two conduits (the runs and boxes).
conduit_fields = st.one_of(
    _fields(st.one_of(_nets("10.20.0"), it6), st.one_of(_nets("192.168.60"), ot6), svcs),
    *[
        _fields(
            st.integers(0, 7).map(lambda h: f"10.20.0.{h}"),
            st.integers(0, 7).map(lambda h: f"192.168.60.{h}"),
            st.sampled_from(["modbus", "tcp/503", "tcp/504", "udp/502", "ping", "http"]),
        )
    ]
    * 3,
)


meet = really_overlap  # the brute force's definition of two flows meeting


@settings(max_examples=examples(300))
@given(st.lists(conduit_fields, min_size=1, max_size=5))
@example(
    [
        {"from_": ["10.20.0.1"], "to": ["192.168.60.1"], "services": ["modbus"]},
        {"from_": ["10.20.0.2", "10.20.0.0/30"], "to": ["192.168.60.1"], "services": ["http"]},
        {"from_": ["10.20.0.3"], "to": ["192.168.60.0/31"], "services": ["tcp/500-503"]},
    ]
)
def test_conduit_overlaps_agree_with_brute_force(fields: list[dict[str, Any]]) -> None:
    data = base()
    data["conduits"] = [conduit(f"c{k}", **f) for k, f in enumerate(fields)]
    config = Config.model_validate(data)
    active = [(n, c) for n, c in enumerate(config.conduits) if c.enabled]
    els = [(n, el) for n, c in active for el in conduit_elements(c)]
    brute = any(meet(a, b) for i, (_, a) in enumerate(els) for _, b in els[i + 1 :])
    found = conduit_overlaps(active)
    assert bool(found) == brute
    for oa, a, ob, b in found:
        assert meet(a, b)
        assert a in conduit_elements(config.conduits[oa])
        assert b in conduit_elements(config.conduits[ob])
        # two entries of one conduit: two elements of it, not one element with itself
        assert oa != ob or conduit_elements(config.conduits[oa]).count(a) > 1 or a != b
    # and what check() says names exactly those conduits
    errors, _ = check(config, NOW)
    named = [e.path for e in errors if "overlap" in e.message]
    assert named == [f"conduits[{max(oa, ob)}]" for oa, _, ob, _ in found]


@settings(max_examples=examples(150))
@given(st.lists(conduit_fields, min_size=2, max_size=5))
def test_conduit_overlaps_pair_by_pair_agree_with_brute_force(
    fields: list[dict[str, Any]],
) -> None:
    """With BOX_LIMIT 0 every part is compared with every other axis by axis."""
    with mock.patch.object(check_module, "BOX_LIMIT", 0):
        test_conduit_overlaps_agree_with_brute_force.hypothesis.inner_test(fields)


addr = st.builds(
    lambda host, prefix: f"10.30.0.{host}/{prefix}", st.integers(0, 31), st.integers(26, 32)
) | st.sampled_from(["fd00:30::1/126", "fd00:30::5/127", "fd00:30::/64"])


@settings(max_examples=examples(300))
@given(st.lists(st.lists(addr, max_size=5), min_size=2, max_size=3))
def test_interface_overlaps_agree_with_brute_force(per_iface: list[list[str]]) -> None:
    data = base()
    data["conduits"] = []
    data["interfaces"] = [
        {"name": f"eth{k}", "role": "it" if k == 0 else "ot", "addresses": a}
        for k, a in enumerate(per_iface)
    ]
    config = Config.model_validate(data)
    errors, _ = check(config, NOW)
    got = [(e.path, e.message) for e in errors if "overlaps" in e.message]
    want = []
    seen: list[tuple[str, Any]] = []
    for n, iface in enumerate(config.interfaces):
        for k, a in enumerate(iface.addresses):
            for where, other in seen:
                if a.network.version == other.version and a.network.overlaps(other):
                    want.append(
                        (
                            f"interfaces[{n}].addresses[{k}]",
                            f"{a} overlaps {other} on {where}: each side needs its own subnet",
                        )
                    )
            seen.append((iface.name, a.network))
    assert got == want[:20]


@pytest.mark.parametrize("n", [1, 2, 3])
def test_side_of_hosts_in_big_lists(n: int) -> None:
    # One OT host among many IT ones is still named by its index.
    data = base()
    c = big_conduit(n=200)
    c["from"][n * 10] = "192.168.50.7"
    data["conduits"] = [c]
    errors, _ = timed_check(data)
    assert errors == [
        (
            f"conduits[0].from[{n * 10}]",
            "192.168.50.7/32 is on the OT side (ot0 192.168.50.0/24); `from` lists IT hosts",
        )
    ]


def test_the_flow_cap_refuses_a_conduit_the_kernel_should_not_be_given() -> None:
    doc = base()
    doc["conduits"] = [big_conduit()]
    t0 = time.perf_counter()
    errors, _ = check(Config.model_validate(doc), NOW)
    assert time.perf_counter() - t0 < 2.0
    assert [(e.path, e.message) for e in errors][:1] == [
        (
            "conduits[0]",
            "big is 3,000,000 flows (from x to x services), more than 200,000: name networks "
            "instead of long host lists",
        )
    ]
    assert check_module.flow_count(Config.model_validate(doc).conduits[0]) == len(
        conduit_elements(Config.model_validate(doc).conduits[0])
    )
