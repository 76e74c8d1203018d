"""The pure helpers over a table listing: fingerprint, counters, denied flows.

data/listing-*.json are real `nft -j list table inet appliance` output of
nftables 1.0.6 (the version Debian 12 ships), taken in a throw-away network
namespace after loading tests/golden/<case>.json:

    unshare -n sh -c 'nft -j -f doc.json && nft -j list table inet appliance'

listing-both-direction.json also has two flows added to denied4 by hand.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from appliance.config.load import load_text
from appliance.net.nft import denied, element_counters, fingerprint, named_counters
from appliance.net.render import element_key, render

from .factory import NOW

DATA = Path(__file__).parent / "data"
GOLDEN = Path(__file__).resolve().parents[1] / "golden"


def listing(case: str) -> list[dict[str, Any]]:
    """As Nft.list_table returns it: the objects without the metainfo header."""
    doc = json.loads((DATA / f"listing-{case}.json").read_text())
    return [o for o in doc["nftables"] if "metainfo" not in o]


def a_set(objs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(o["set"] for o in objs if "set" in o and o["set"]["name"] == name)


def rendered(case: str):
    config = load_text((GOLDEN / f"{case}.yaml").read_text(), now=NOW).config
    return render(config, NOW)


# -- element_counters -----------------------------------------------------------

ELEM_WITH_TIMEOUT = {
    "elem": {
        "val": {
            "concat": [{"prefix": {"addr": "10.10.0.0", "len": 24}}, "192.168.50.10", "tcp", 502]
        },
        "timeout": 3600,
        "expires": 3599,
        "counter": {"packets": 0, "bytes": 0},
    }
}


def set_obj(name: str, elems: list[Any]) -> dict[str, Any]:
    return {"set": {"family": "inet", "name": name, "table": "appliance", "elem": elems}}


def test_element_counters_of_the_sample_element() -> None:
    item = copy.deepcopy(ELEM_WITH_TIMEOUT)
    item["elem"]["counter"] = {"packets": 7, "bytes": 420}
    out = element_counters([set_obj("c_it_ot_4", [item])])
    key = element_key(
        {"concat": [{"prefix": {"addr": "10.10.0.0", "len": 24}}, "192.168.50.10", "tcp", 502]}
    )
    assert out == {("c_it_ot_4", key): {"packets": 7, "bytes": 420}}


def test_element_counters_of_plain_values_are_zero() -> None:
    plain = {"concat": ["10.10.0.2", "192.168.50.10", "tcp", 502]}
    out = element_counters([set_obj("c_it_ot_4", [plain]), set_obj("if_it", ["it0"])])
    assert out == {
        ("c_it_ot_4", element_key(plain)): {"packets": 0, "bytes": 0},
        ("if_it", element_key("it0")): {"packets": 0, "bytes": 0},
    }


def test_element_counters_of_an_elem_without_counter() -> None:
    item = {"elem": {"val": {"concat": ["10.10.0.2", "192.168.50.10"]}, "timeout": 60}}
    out = element_counters([set_obj("p_it_ot_4", [item])])
    assert out == {
        ("p_it_ot_4", element_key({"concat": ["10.10.0.2", "192.168.50.10"]})): {
            "packets": 0,
            "bytes": 0,
        }
    }


def test_element_counters_skip_sets_without_elements_and_other_objects() -> None:
    objs = [
        {"set": {"family": "inet", "name": "c_ot_it_4", "table": "appliance"}},
        {"counter": {"family": "inet", "name": "drop_it_ot", "packets": 3, "bytes": 9}},
        {"chain": {"family": "inet", "name": "forward", "table": "appliance"}},
    ]
    assert element_counters(objs) == {}


@pytest.mark.parametrize("case", ["both-direction", "expiring"])
def test_kernel_listing_attributes_every_rendered_element(case: str) -> None:
    """The keys the renderer writes are the keys the kernel lists back."""
    rs = rendered(case)
    counters = element_counters(listing(case))
    assert rs.owners
    assert set(rs.owners) <= set(counters)
    conduit_sets = {k for k in counters if k[0].split("_")[0] in ("c", "cr", "p")}
    assert conduit_sets == set(rs.owners)


def test_element_key_ignores_key_order() -> None:
    a = {"prefix": {"addr": "10.0.0.0", "len": 8}}
    b = {"prefix": {"len": 8, "addr": "10.0.0.0"}}
    assert element_key(a) == element_key(b)
    assert element_key(a) != element_key({"prefix": {"addr": "10.0.0.0", "len": 9}})


# -- named_counters -------------------------------------------------------------


def test_named_counters_from_a_real_listing() -> None:
    out = named_counters(listing("expiring"))
    assert set(out) == set(rendered("expiring").counters)
    assert all(v == {"packets": 0, "bytes": 0} for v in out.values())


def test_named_counters_values_and_defaults() -> None:
    objs = [
        {"counter": {"family": "inet", "name": "drop_it_ot", "packets": 3, "bytes": 180}},
        {"counter": {"family": "inet", "name": "drop_in_other"}},
        {"set": {"name": "if_it", "elem": ["it0"]}},
    ]
    assert named_counters(objs) == {
        "drop_it_ot": {"packets": 3, "bytes": 180},
        "drop_in_other": {"packets": 0, "bytes": 0},
    }


# -- denied -----------------------------------------------------------------


def test_denied_from_a_real_listing() -> None:
    assert denied(listing("both-direction")) == [
        {"src": "10.10.0.2", "dst": "192.168.50.11", "proto": "tcp", "port": 22, "packets": 0},
        {"src": "10.10.0.3", "dst": "192.168.50.12", "proto": "udp", "port": 161, "packets": 0},
    ]


def test_denied_sorts_by_packets_and_reads_both_families() -> None:
    def elem(src: str, dst: str, port: int, packets: int) -> dict[str, Any]:
        return {
            "elem": {
                "val": {"concat": [src, dst, "tcp", port]},
                "expires": 100,
                "counter": {"packets": packets, "bytes": 60 * packets},
            }
        }

    objs = [
        set_obj("denied4", [elem("10.10.0.2", "192.168.50.11", 22, 1)]),
        set_obj(
            "denied6",
            [
                elem("fd00:10::2", "fd00:50::10", 23, 9),
                {"concat": ["fd00:10::3", "fd00:50::1", "udp", 53]},
            ],
        ),
        set_obj("c_it_ot_4", [elem("10.10.0.9", "192.168.50.1", 502, 1000)]),  # not denied
    ]
    assert denied(objs) == [
        {"src": "fd00:10::2", "dst": "fd00:50::10", "proto": "tcp", "port": 23, "packets": 9},
        {"src": "10.10.0.2", "dst": "192.168.50.11", "proto": "tcp", "port": 22, "packets": 1},
        {"src": "fd00:10::3", "dst": "fd00:50::1", "proto": "udp", "port": 53, "packets": 0},
    ]


def test_denied_of_empty_sets() -> None:
    assert denied(listing("expiring")) == []
    assert denied([]) == []


# -- fingerprint ------------------------------------------------------------


def _walk_set(obj: Any, key: str, value: Any) -> None:
    if isinstance(obj, dict):
        for k in list(obj):
            if k == key:
                obj[k] = value
            else:
                _walk_set(obj[k], key, value)
    elif isinstance(obj, list):
        for v in obj:
            _walk_set(v, key, value)


@pytest.mark.parametrize("key", ["packets", "bytes", "expires", "handle"])
def test_fingerprint_ignores_volatile_fields(key: str) -> None:
    objs = listing("expiring")
    changed = copy.deepcopy(objs)
    _walk_set(changed, key, 12345)
    assert changed != objs
    assert fingerprint(changed) == fingerprint(objs)


def test_fingerprint_ignores_denied_flows() -> None:
    objs = listing("both-direction")
    fewer = copy.deepcopy(objs)
    a_set(fewer, "denied4")["elem"].pop()
    none = copy.deepcopy(objs)
    del a_set(none, "denied4")["elem"]
    assert fingerprint(fewer) == fingerprint(objs) == fingerprint(none)


def test_fingerprint_changes_with_a_rule() -> None:
    objs = listing("expiring")
    changed = copy.deepcopy(objs)
    rule = next(o["rule"] for o in changed if "rule" in o and o["rule"]["chain"] == "fwd_it_ot")
    rule["expr"][-1] = {"drop": None}
    assert fingerprint(changed) != fingerprint(objs)
    removed = [o for o in objs if not ("rule" in o and o["rule"]["chain"] == "in_it0")]
    assert fingerprint(removed) != fingerprint(objs)


def test_fingerprint_changes_with_a_conduit_element() -> None:
    objs = listing("both-direction")
    fewer = copy.deepcopy(objs)
    a_set(fewer, "cr_it_ot_4")["elem"].pop()
    assert fingerprint(fewer) != fingerprint(objs)
    other = copy.deepcopy(objs)
    a_set(other, "cr_ot_it_4")["elem"][0]["elem"]["val"]["concat"][3] = 1884
    assert fingerprint(other) != fingerprint(objs)


def test_fingerprint_changes_with_an_element_timeout() -> None:
    objs = listing("expiring")
    changed = copy.deepcopy(objs)
    a_set(changed, "c_it_ot_4")["elem"][0]["elem"]["timeout"] = 7200
    assert fingerprint(changed) != fingerprint(objs)


def test_fingerprint_changes_with_an_interface_set() -> None:
    objs = listing("expiring")
    changed = copy.deepcopy(objs)
    a_set(changed, "if_it")["elem"] = ["it1"]
    assert fingerprint(changed) != fingerprint(objs)


def test_fingerprint_does_not_change_its_input() -> None:
    objs = listing("both-direction")
    before = copy.deepcopy(objs)
    fingerprint(objs)
    assert objs == before
