"""The ruleset renderer: golden files per case, and invariants that need none.

Golden files: tests/golden/<case>.yaml is the input, tests/golden/<case>.json the
expected `render(config, NOW)`. When a .json is missing, or UPDATE_GOLDEN=1 is
set, the test writes it and fails, naming the file to review and commit.
"""

from __future__ import annotations

import copy
import difflib
import json
import os
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from appliance.config.check import Element, conduit_elements
from appliance.config.load import load_text, validate_data
from appliance.config.model import Config
from appliance.config.services import Service
from appliance.net.render import (
    TABLE,
    Ruleset,
    element_key,
    render,
    render_fail_closed,
)

from .factory import NOW, base, conduit

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
CASES = ["demo", "nat", "ipv6", "expiring", "both-direction", "modbus", "bridge"]


# -- golden files ---------------------------------------------------------------


def golden_text(rs: Ruleset) -> str:
    """One command per line, so a review (and a diff) reads rule by rule."""

    def one(v: Any) -> str:
        return json.dumps(v, ensure_ascii=False)

    owners = sorted([name, key, conduit] for (name, key), conduit in rs.owners.items())
    nc = rs.next_change.isoformat() if rs.next_change else None

    def block(name: str, items: list[Any], last: bool = False) -> str:
        end = "" if last else ","
        if not items:
            return f'  "{name}": []{end}'
        body = ",\n".join(f"    {one(i)}" for i in items)
        return f'  "{name}": [\n{body}\n  ]{end}'

    parts = [
        "{",
        f'  "next_change": {one(nc)},',
        f'  "counters": {one(list(rs.counters))},',
        block("owners", owners),
        block("nftables", rs.commands, last=True),
        "}",
    ]
    return "\n".join(parts) + "\n"


def check_golden(case: str, rs: Ruleset) -> None:
    path = GOLDEN / f"{case}.json"
    actual = golden_text(rs)
    json.loads(actual)  # the golden file is plain JSON for other tools too
    if os.environ.get("UPDATE_GOLDEN") == "1" or not path.exists():
        path.write_text(actual)
        pytest.fail(
            f"wrote {path.relative_to(GOLDEN.parents[1])}: review it (is it what the kernel "
            "should hold?) and commit it",
            pytrace=False,
        )
    expected = path.read_text()
    if json.loads(actual) != json.loads(expected):  # key order and layout do not matter
        diff = "\n".join(
            difflib.unified_diff(
                expected.splitlines(), actual.splitlines(), str(path), "rendered", lineterm=""
            )
        )
        pytest.fail(
            f"render() differs from {path.name} (UPDATE_GOLDEN=1 rewrites it):\n{diff}",
            pytrace=False,
        )


def load_case(case: str) -> Config:
    text = (GOLDEN / f"{case}.yaml").read_text()
    return load_text(text, f"{case}.yaml", now=NOW).config


@pytest.mark.parametrize("case", CASES)
def test_golden(case: str) -> None:
    check_golden(case, render(load_case(case), NOW))


def test_golden_fail_closed() -> None:
    check_golden("fail-closed", render_fail_closed())


def test_golden_demo_is_the_example() -> None:
    example = load_text((EXAMPLES / "demo.yaml").read_text(), now=NOW).config
    assert example == load_case("demo"), "tests/golden/demo.yaml must follow examples/demo.yaml"


def test_golden_cases_say_what_they_cover() -> None:
    exp = render(load_case("expiring"), NOW)
    names = set(exp.owners.values())
    assert names == {"vendor-remote", "backup", "historian"}
    assert exp.next_change == NOW + timedelta(hours=1)
    assert set(render(load_case("both-direction"), NOW).owners.values()) == {"mqtt-broker"}
    nat = render(load_case("nat"), NOW)
    assert {c["add"]["chain"]["name"] for c in nat.commands if "chain" in c.get("add", {})} >= {
        "dstnat",
        "srcnat",
    }


# -- invariants -----------------------------------------------------------------


def cfg(data: dict[str, Any] | None = None) -> Config:
    return validate_data(base() if data is None else data, now=NOW).config


def adds(rs: Ruleset, kind: str) -> list[dict[str, Any]]:
    return [c["add"][kind] for c in rs.commands if kind in c.get("add", {})]


def set_elems(rs: Ruleset) -> dict[str, list[Any]]:
    return {s["name"]: s.get("elem", []) for s in adds(rs, "set")}


def rules_of(rs: Ruleset, chain: str) -> list[list[dict[str, Any]]]:
    return [r["expr"] for r in adds(rs, "rule") if r["chain"] == chain]


ALL_CONFIGS = [pytest.param(lambda: cfg(), id="base")] + [
    pytest.param(lambda case=case: load_case(case), id=case) for case in CASES
]


def every(rs: Ruleset) -> list[Ruleset]:
    return [rs, render_fail_closed()]


@pytest.mark.parametrize("make", ALL_CONFIGS)
def test_document_replaces_the_table(make) -> None:
    for rs in every(render(make(), NOW)):
        blocks = tables(rs)
        assert [family for family, _ in blocks] == (["inet", "bridge"] if rs.bridged else ["inet"])
        for family, commands in blocks:
            table = {"family": family, "name": TABLE}
            assert commands[:3] == [
                {"add": {"table": table}},
                {"delete": {"table": table}},
                {"add": {"table": table}},
            ]
            assert all("table" not in c.get("delete", {}) for c in commands[3:])
        assert rs.document() == {"nftables": rs.commands}
        json.dumps(rs.document())  # libnftables takes it as JSON


def tables(rs: Ruleset) -> list[tuple[str, list[dict[str, Any]]]]:
    """The document cut where each owned table is replaced: (family, its commands)."""
    out: list[tuple[str, list[dict[str, Any]]]] = []
    for cmd in rs.commands:
        table = cmd.get("add", {}).get("table")
        if table is not None and (not out or out[-1][1][-1].get("delete") is None):
            out.append((table["family"], []))
        out[-1][1].append(cmd)
    return out


def _refs(obj: Any, key: str) -> list[Any]:
    """Every value under `key` anywhere in obj."""
    out = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == key:
                out.append(v)
            out.extend(_refs(v, key))
    elif isinstance(obj, list):
        for v in obj:
            out.extend(_refs(v, key))
    return out


def _strings(obj: Any) -> list[str]:
    if isinstance(obj, str):
        return [obj]
    if isinstance(obj, dict):
        return [s for v in obj.values() for s in _strings(v)]
    if isinstance(obj, list):
        return [s for v in obj for s in _strings(v)]
    return []


@pytest.mark.parametrize("make", ALL_CONFIGS)
def test_every_chain_set_and_counter_is_declared_before_any_rule(make) -> None:
    rs = render(make(), NOW)
    for _family, commands in tables(rs):
        kinds = [next(iter(c[verb])) for c in commands for verb in c]
        first_rule = kinds.index("rule")
        assert set(kinds[first_rule:]) == {"rule"}, "a declaration follows a rule"


@pytest.mark.parametrize("make", ALL_CONFIGS)
def test_everything_referenced_is_declared_earlier(make) -> None:
    for rs in every(render(make(), NOW)):
        counters: set[str] = set()
        for family, commands in tables(rs):
            counters |= _declared_before_use(family, commands[3:])
        assert set(rs.counters) == counters


def _declared_before_use(family: str, commands: list[dict[str, Any]]) -> set[str]:
    """Check one table's commands; return the counters it declares."""
    chains: set[str] = set()
    sets: set[str] = set()
    counters: set[str] = set()
    for cmd in commands:
        [(verb, body)] = cmd.items()
        assert verb == "add"
        [(kind, obj)] = body.items()
        assert (obj["family"], obj["table"]) == (family, TABLE)
        if kind == "chain":
            chains.add(obj["name"])
        elif kind == "set":
            sets.add(obj["name"])
        elif kind == "counter":
            counters.add(obj["name"])
        else:
            assert kind == "rule"
            assert obj["chain"] in chains
            for jump in _refs(obj["expr"], "jump"):
                assert jump["target"] in chains
            for name in _refs(obj["expr"], "counter"):
                if isinstance(name, str):
                    assert name in counters
            for text in _strings(obj["expr"]):
                if text.startswith("@"):
                    assert text[1:] in sets, text
    return counters


@pytest.mark.parametrize("make", ALL_CONFIGS)
def test_base_chains_drop_by_default(make) -> None:
    for rs in every(render(make(), NOW)):
        hooked = {c["name"]: c for c in adds(rs, "chain") if "hook" in c}
        assert hooked["input"]["policy"] == "drop"
        assert hooked["forward"]["policy"] == "drop"
        # and each ends by counting what it drops
        for chain in ("input", "forward"):
            last = rules_of(rs, chain)[-1]
            assert last[-1] == {"drop": None}
            assert "counter" in last[0]


def listed_value(el: Element) -> Any:
    """How the kernel lists an element: hosts bare, networks as prefixes, ranges as ranges."""

    def addr(net: Any) -> Any:
        if net.prefixlen == net.max_prefixlen:
            return str(net.network_address)
        return {"prefix": {"addr": str(net.network_address), "len": net.prefixlen}}

    if el.service.proto == "icmp":
        return {"concat": [addr(el.src), addr(el.dst)]}
    lo, hi = el.service.lo, el.service.hi
    return {
        "concat": [
            addr(el.src),
            addr(el.dst),
            el.service.proto,
            lo if lo == hi else {"range": [lo, hi]},
        ]
    }


@pytest.mark.parametrize("make", ALL_CONFIGS)
def test_owners_map_every_conduit_element_to_its_conduit(make) -> None:
    config = make()
    rs = render(config, NOW)
    expected = {}
    for c in config.conduits:
        if c.active(NOW):
            for whole in conduit_elements(c):
                for kind, el in parts_of(c, whole):
                    expected[(f"{kind}_{el.zone}_{el.family}", element_key(listed_value(el)))] = (
                        c.name
                    )
    assert rs.owners == expected
    # and each conduit set holds exactly the owned elements
    held = {
        (name, element_key(item["elem"]["val"] if "elem" in item else item))
        for name, items in set_elems(rs).items()
        if name.split("_")[0] in ("c", "cr", "p", "m")
        for item in items
    }
    assert held == set(expected)
    conduit_sets = [v for k, v in set_elems(rs).items() if k.split("_")[0] in ("c", "cr", "p", "m")]
    assert sum(len(v) for v in conduit_sets) == len(held)


def parts_of(c, el) -> list[tuple[str, Element]]:
    """Where an element's flows go: a Modbus-restricted conduit's tcp/502 to the proxy's set
    (`m`), the ports around it in a range stay plain flows."""
    svc = el.service
    if c.modbus is None or svc.proto != "tcp" or not svc.lo <= 502 <= svc.hi:
        return [(kind_of(el), el)]
    out = [("m", el._replace(service=Service("tcp", 502, 502)))]
    for lo, hi in ((svc.lo, 501), (503, svc.hi)):
        if lo <= hi:
            out.append(
                (
                    kind_of(el._replace(service=Service("tcp", lo, hi))),
                    el._replace(service=Service("tcp", lo, hi)),
                )
            )
    return out


def kind_of(el) -> str:
    """Which set an element belongs in: exact flows in a hash set, ranges in an interval set."""
    if el.service.proto == "icmp":
        return "p"
    single = el.src.num_addresses == 1 and el.dst.num_addresses == 1
    return "c" if single and el.service.lo == el.service.hi else "cr"


def test_owners_of_the_base_conduit() -> None:
    rs = render(cfg(), NOW)
    key = element_key({"concat": ["10.10.0.2", "192.168.50.10", "tcp", 502]})
    assert rs.owners == {("c_it_ot_4", key): "scada-modbus"}
    assert set_elems(rs)["c_it_ot_4"] == [{"concat": ["10.10.0.2", "192.168.50.10", "tcp", 502]}]


def test_element_values() -> None:
    data = base()
    data["interfaces"][0]["addresses"].append("fd00:10::1/64")
    data["interfaces"][1]["addresses"].append("fd00:50::1/64")
    data["conduits"] = [
        conduit(
            "x",
            from_=["10.10.0.0/25", "fd00:10::/64"],
            to=["192.168.50.10", "fd00:50::10"],
            services=["udp/1000-2000", "ping"],
        )
    ]
    elems = set_elems(render(cfg(data), NOW))
    net4 = {"prefix": {"addr": "10.10.0.0", "len": 25}}
    net6 = {"prefix": {"addr": "fd00:10::", "len": 64}}
    assert elems["cr_it_ot_4"] == [
        {"concat": [net4, "192.168.50.10", "udp", {"range": [1000, 2000]}]}
    ]
    assert elems["c_it_ot_4"] == []  # nothing exact: the hash set stays empty
    assert elems["p_it_ot_4"] == [{"concat": [net4, "192.168.50.10"]}]
    assert elems["cr_it_ot_6"] == [
        {"concat": [net6, "fd00:50::10", "udp", {"range": [1000, 2000]}]}
    ]
    assert elems["p_it_ot_6"] == [{"concat": [net6, "fd00:50::10"]}]
    assert elems["c_ot_it_4"] == elems["c_ot_it_6"] == []


def test_both_direction_adds_the_mirror() -> None:
    data = base()
    data["conduits"][0]["direction"] = "both"
    elems = set_elems(render(cfg(data), NOW))
    assert elems["c_it_ot_4"] == [{"concat": ["10.10.0.2", "192.168.50.10", "tcp", 502]}]
    assert elems["c_ot_it_4"] == [{"concat": ["192.168.50.10", "10.10.0.2", "tcp", 502]}]


@pytest.mark.parametrize(
    "change",
    [{"enabled": False}, {"expires": "2025-12-31T23:00:00Z"}, {"expires": NOW.isoformat()}],
    ids=["disabled", "expired", "expiring-now"],
)
def test_inactive_conduits_render_nothing(change: dict[str, Any]) -> None:
    without = render(cfg(), NOW)
    data = base()
    data["conduits"].append(
        conduit("inactive", from_=["10.10.0.9"], to=["192.168.50.0/24"], services=["ssh"], **change)
    )
    with_it = render(cfg(data), NOW)
    assert with_it.commands == without.commands
    assert with_it.owners == without.owners
    assert with_it.next_change is None
    assert "inactive" not in json.dumps(with_it.commands)


@pytest.mark.parametrize(
    ("delta", "timeout"),
    [
        (timedelta(hours=1), 3600),
        (timedelta(seconds=1.5), 2),  # rounded up: never cut a conduit short
        (timedelta(milliseconds=200), 1),
        (timedelta(days=30), 30 * 86400),
    ],
)
def test_expiring_conduit_gets_a_kernel_timeout(delta: timedelta, timeout: int) -> None:
    data = base()
    data["conduits"][0]["expires"] = (NOW + delta).isoformat()
    rs = render(cfg(data), NOW)
    assert set_elems(rs)["c_it_ot_4"] == [
        {
            "elem": {
                "val": {"concat": ["10.10.0.2", "192.168.50.10", "tcp", 502]},
                "timeout": timeout,
            }
        }
    ]
    assert rs.next_change == NOW + delta
    # the owner key is the bare value, as the kernel lists it
    assert list(rs.owners) == [
        ("c_it_ot_4", element_key({"concat": ["10.10.0.2", "192.168.50.10", "tcp", 502]}))
    ]


def test_next_change_is_the_earliest_active_expiry() -> None:
    data = base()
    data["conduits"] += [
        conduit("a", to=["192.168.50.11"], expires="2026-01-03T00:00:00Z"),
        conduit("b", to=["192.168.50.12"], expires="2026-01-02T00:00:00Z"),
        conduit("c", to=["192.168.50.13"], expires="2025-01-01T00:00:00Z"),  # gone
        conduit("d", to=["192.168.50.14"], expires="2026-01-01T12:00:00Z", enabled=False),
    ]
    rs = render(cfg(data), NOW)
    assert rs.next_change == datetime.fromisoformat("2026-01-02T00:00:00+00:00")


def test_rendering_later_drops_what_expired_meanwhile() -> None:
    data = base()
    data["conduits"][0]["expires"] = "2026-01-01T01:00:00Z"
    config = cfg(data)
    assert render(config, NOW).owners
    later = render(config, NOW + timedelta(hours=1))
    assert later.owners == {}
    assert later.next_change is None


def test_render_is_pure() -> None:
    config = load_case("nat")
    snapshot = copy.deepcopy(config.canonical())
    a, b = render(config, NOW), render(config, NOW)
    assert a == b
    assert config.canonical() == snapshot


def test_input_dispatches_per_interface() -> None:
    rs = render(load_case("demo"), NOW)
    [vmap_rule] = [e for e in rules_of(rs, "input") if "vmap" in e[0]]
    entries = vmap_rule[0]["vmap"]["data"]["set"]
    assert entries == [
        ["it0", {"jump": {"target": "in_it0"}}],
        ["mgmt0", {"jump": {"target": "in_mgmt0"}}],
        ["ot0", {"jump": {"target": "in_ot0"}}],
    ]
    # OT answers nothing by default: its chain only counts and drops
    assert rules_of(rs, "in_ot0") == [[{"counter": "drop_in_ot0"}, {"drop": None}]]
    it_ports = rules_of(rs, "in_it0")[0][0]["match"]["right"]["set"]
    # IT: the northbound OPC UA server (on by default); the UI only with web.listen_it
    assert it_ports == [{"concat": ["tcp", 4840]}]
    # mgmt: the UI (https and its http redirect) and ping; no ssh: nothing runs an sshd
    mgmt_ports = rules_of(rs, "in_mgmt0")[0][0]["match"]["right"]["set"]
    assert mgmt_ports == [{"concat": ["tcp", 80]}, {"concat": ["tcp", 443]}]


def test_mgmt_answers_only_the_ui_ports_the_document_names() -> None:
    """IEC 62443-4-2 CR 7.7: mgmt opens 443 and the redirect on 80 only while it is on."""
    data = load_case("demo").canonical()
    data["web"] = {"https_port": 8443, "http_port": None}
    rs = render(validate_data(data, now=NOW).config, NOW)
    mgmt_ports = rules_of(rs, "in_mgmt0")[0][0]["match"]["right"]
    assert mgmt_ports in ({"set": [{"concat": ["tcp", 8443]}]}, {"concat": ["tcp", 8443]}), (
        mgmt_ports
    )


def test_services_the_document_turns_on_are_answered_where_they_listen() -> None:
    data = base()
    data["opcua_server"] = {"enabled": False}
    data["web"] = {"listen_it": True, "https_port": 8443, "http_port": None}
    rs = render(cfg(data), NOW)
    it_ports = rules_of(rs, "in_it0")[0][0]["match"]["right"]["set"]
    assert it_ports == [{"concat": ["tcp", 8443]}]
    assert rules_of(rs, "in_ot0") == [[{"counter": "drop_in_ot0"}, {"drop": None}]]


def test_allow_in_overrides_the_role_default() -> None:
    data = base()
    data["interfaces"][1]["allow_in"] = ["ntp"]
    data["interfaces"][0]["allow_in"] = []
    rs = render(cfg(data), NOW)
    assert rules_of(rs, "in_ot0")[0][0]["match"]["right"] == {"set": [{"concat": ["udp", 123]}]}
    assert rules_of(rs, "in_it0") == [[{"counter": "drop_in_it0"}, {"drop": None}]]


def test_zone_interface_sets() -> None:
    elems = set_elems(render(load_case("demo"), NOW))
    assert (elems["if_it"], elems["if_ot"], elems["if_mgmt"]) == (["it0"], ["ot0"], ["mgmt0"])


def test_forward_jumps_only_between_it_and_ot() -> None:
    rs = render(cfg(), NOW)
    jumps = [
        (e[0]["match"]["right"], e[1]["match"]["right"], e[2]["jump"]["target"])
        for e in rules_of(rs, "forward")
        if len(e) == 3 and "jump" in e[2]
    ]
    assert jumps == [("@if_it", "@if_ot", "fwd_it_ot"), ("@if_ot", "@if_it", "fwd_ot_it")]
    assert rules_of(rs, "forward")[0][0]["match"]["right"] == ["established", "related"]


def test_no_nat_chains_without_nat() -> None:
    names = {c["name"] for c in adds(render(cfg(), NOW), "chain")}
    assert not names & {"dstnat", "srcnat"}


def test_nat_rules() -> None:
    rs = render(load_case("nat"), NOW)
    hooked = {c["name"]: c for c in adds(rs, "chain") if "hook" in c}
    assert (hooked["dstnat"]["hook"], hooked["dstnat"]["prio"]) == ("prerouting", -100)
    assert (hooked["srcnat"]["hook"], hooked["srcnat"]["prio"]) == ("postrouting", 100)
    assert hooked["dstnat"]["policy"] == hooked["srcnat"]["policy"] == "accept"
    dst = rules_of(rs, "dstnat")
    src = rules_of(rs, "srcnat")
    assert {"dnat": {"family": "ip", "addr": "192.168.50.11"}} in dst[0]
    assert {"snat": {"family": "ip", "addr": "10.10.0.50"}} in src[0]
    assert {"dnat": {"family": "ip", "addr": "192.168.50.10", "port": 502}} in dst[1]
    daddr = {
        "match": {
            "op": "==",
            "left": {"payload": {"protocol": "ip", "field": "daddr"}},
            "right": {"set": ["10.10.0.1"]},
        }
    }
    assert daddr in dst[1]
    assert src[-1][-1] == {"masquerade": None}
    [pf_rule] = [r for r in adds(rs, "rule") if r.get("comment")]
    assert pf_rule["comment"] == "port-forward plc1"


def test_fail_closed_matches_the_file_the_image_loads() -> None:
    shipped = Path(__file__).resolve().parents[2] / "system" / "failclosed.json"
    assert json.loads(shipped.read_text()) == render_fail_closed().document(), (
        "system/failclosed.json is stale: `appliance net fail-closed` prints the current one"
    )


def test_fail_closed_forwards_nothing() -> None:
    rs = render_fail_closed()
    assert rules_of(rs, "forward") == [[{"counter": "drop_fwd_other"}, {"drop": None}]]
    assert not adds(rs, "set")
    assert rs.owners == {} and rs.next_change is None
    text = json.dumps(rules_of(rs, "input"))
    assert '"mgmt*"' in text and '"tcp", 22' in text


def test_golden_check_writes_missing_files_and_reports_differences(tmp_path, monkeypatch) -> None:
    golden = tmp_path / "tests" / "golden"
    golden.mkdir(parents=True)
    monkeypatch.setattr(sys.modules[__name__], "GOLDEN", golden)
    monkeypatch.delenv("UPDATE_GOLDEN", raising=False)
    rs = render(cfg(), NOW)
    with pytest.raises(pytest.fail.Exception, match=r"wrote tests/golden/x\.json: review it"):
        check_golden("x", rs)
    check_golden("x", rs)  # now it is there and equal
    data = base()
    data["conduits"][0]["services"] = ["tcp/503"]
    with pytest.raises(pytest.fail.Exception, match=r"(?s)differs from x\.json.*-.*502.*\+.*503"):
        check_golden("x", render(cfg(data), NOW))
    monkeypatch.setenv("UPDATE_GOLDEN", "1")
    with pytest.raises(pytest.fail.Exception, match="wrote"):
        check_golden("x", render(cfg(data), NOW))
    monkeypatch.delenv("UPDATE_GOLDEN")
    check_golden("x", render(cfg(data), NOW))


def test_element_key_is_the_same_for_protocol_names_and_numbers() -> None:
    # a minimal system without /etc/protocols lists 6 where a full one lists "tcp"
    from appliance.net.render import element_key

    named = {"concat": ["10.10.0.2", "192.168.50.10", "tcp", 502]}
    numbered = {"concat": ["10.10.0.2", "192.168.50.10", 6, 502]}
    assert element_key(named) == element_key(numbered)
    assert element_key(named) != element_key({"concat": ["10.10.0.2", "192.168.50.10", 17, 502]})


# -- Modbus-restricted conduits ---------------------------------------------------------


def test_a_restricted_conduit_forwards_none_of_its_modbus() -> None:
    """Its tcp/502 is only in the proxy's set: with no proxy listening, tproxy finds no
    socket, and forward has no element for the flow (fail closed)."""
    rs = render(load_case("modbus"), NOW)
    elems = set_elems(rs)
    forwarded = json.dumps([elems[k] for k in elems if k.split("_")[0] in ("c", "cr")])
    for host in ("10.10.0.2", "10.10.0.3"):
        assert host not in forwarded
    assert '"range": [500, 501]' in forwarded and '"range": [503, 510]' in forwarded
    assert "10.10.0.4" in forwarded  # the unrestricted conduit is forwarded as before
    assert len(elems["m_it_ot_4"]) == 3


def test_the_tproxy_chain_steers_and_accepts_nothing_else() -> None:
    rs = render(load_case("modbus"), NOW)
    [chain] = [c for c in adds(rs, "chain") if c["name"] == "modbus_tproxy"]
    assert (chain["hook"], chain["prio"], chain["policy"]) == ("prerouting", -90, "accept")
    steer, answers = rules_of(rs, "modbus_tproxy")
    assert {"tproxy": {"family": "ip", "addr": "127.0.0.1", "port": 15020}} in steer
    assert {"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "@if_it"}} in steer
    assert {"match": {"op": "==", "left": {"socket": {"key": "transparent"}}, "right": 1}} in (
        answers
    )
    mark = {"match": {"op": "==", "left": {"meta": {"key": "mark"}}, "right": 0x4D42}}
    assert [mark, {"accept": None}] in rules_of(rs, "input")


def test_without_a_restriction_there_is_no_proxy_path() -> None:
    rs = render(cfg(), NOW)
    assert "modbus_tproxy" not in {c["name"] for c in adds(rs, "chain")}
    assert "m_it_ot_4" not in set_elems(rs)
    assert "tproxy" not in json.dumps(rs.commands) and "19778" not in json.dumps(rs.commands)


def test_restricting_a_conduit_withdraws_its_forwarded_flow() -> None:
    """So the net role cuts the connections that ran unchecked before the restriction."""
    data = base()
    plain = render(cfg(data), NOW)
    data["conduits"][0]["modbus"] = "read-only"
    checked = render(cfg(data), NOW)
    assert [el.describe() for el in plain.withdrawn(checked)] == [
        "10.10.0.2/32 → 192.168.50.10/32 tcp/502"
    ]
    assert [el.describe() for el in checked.withdrawn(plain)] == [
        "10.10.0.2/32 → 192.168.50.10/32 tcp/502"
    ]
