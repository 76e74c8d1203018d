"""Bridge mode in the ruleset and the net role (issue 12), with fakes at the edges.

The renderer's golden case is tests/golden/bridge.yaml (test_render.py); here are the
properties a review of that file should find, stated so that they cannot rot.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from testkit import Clock

from appliance.config.load import validate_data
from appliance.config.model import Config
from appliance.errors import ApplyFailed
from appliance.net import nft as nftlib
from appliance.net.render import (
    BRIDGE_POST_PRIO,
    BRIDGE_PRE_PRIO,
    MARK_IT_OT,
    MARK_OT_IT,
    MARK_PASSED,
    Ruleset,
    render,
    render_fail_closed,
)
from appliance.net.role import NetRole
from appliance.state import revisions as revs
from appliance.state.db import Store
from appliance.state.live import LiveState

from .factory import NOW, base
from .test_config_bridge import BRIDGED


def bridged(**bridge: Any) -> Config:
    data = copy.deepcopy(BRIDGED)
    data["bridge"] = bridge
    data["conduits"].append(
        {
            "name": "ping-both",
            "owner": "t",
            "reason": "t",
            "from": ["192.168.50.2"],
            "to": ["192.168.50.8/29"],
            "services": ["ping"],
            "direction": "both",
        }
    )
    return validate_data(data, now=NOW).config


def of(rs: Ruleset, family: str, kind: str) -> list[dict[str, Any]]:
    return [
        c["add"][kind]
        for c in rs.commands
        if kind in c.get("add", {}) and c["add"][kind].get("family") == family
    ]


def rules(rs: Ruleset, family: str, chain: str) -> list[list[dict[str, Any]]]:
    return [r["expr"] for r in of(rs, family, "rule") if r["chain"] == chain]


def test_the_bridge_table_hooks_before_and_after_br_netfilter() -> None:
    rs = render(bridged(), NOW)
    assert rs.bridged
    chains = {c["name"]: c for c in of(rs, "bridge", "chain")}
    assert (chains["l2_forward"]["hook"], chains["l2_forward"]["prio"]) == (
        "forward",
        BRIDGE_PRE_PRIO,
    )
    assert chains["l2_forward"]["policy"] == "drop"
    assert (chains["l2_decided"]["prio"], chains["l2_decided"]["policy"]) == (
        BRIDGE_POST_PRIO,
        "accept",
    )
    assert BRIDGE_PRE_PRIO < 0 < BRIDGE_POST_PRIO  # br_netfilter's hook is at 0


def test_ip_is_marked_by_direction_arp_passes_the_rest_is_counted_and_dropped() -> None:
    rs = render(bridged(), NOW)
    l2 = rules(rs, "bridge", "l2_forward")
    assert l2[0] == [
        {
            "match": {
                "op": "==",
                "left": {"payload": {"protocol": "ether", "field": "type"}},
                "right": "arp",
            }
        },
        {"accept": None},
    ]
    marks = {}
    for expr in l2:
        text = json.dumps(expr)
        for mark in (MARK_IT_OT, MARK_OT_IT):
            if f'"value": {mark}' in text:
                ins = [
                    e["match"]["right"]["set"]
                    for e in expr
                    if "match" in e and e["match"]["left"] == {"meta": {"key": "iifname"}}
                ]
                marks[mark] = ins[0]
    assert marks == {MARK_IT_OT: ["it0"], MARK_OT_IT: ["ot0"]}
    assert l2[-1] == [{"counter": "drop_l2_other"}, {"drop": None}]
    assert "drop_l2_other" in rs.counters and "drop_l2_unfiltered" in rs.counters


def test_ip_crosses_only_with_the_inet_tables_accept() -> None:
    rs = render(bridged(), NOW)
    [decided] = rules(rs, "bridge", "l2_decided")
    assert {
        "match": {"op": "!=", "left": {"meta": {"key": "mark"}}, "right": MARK_PASSED}
    } in decided
    assert decided[-2:] == [{"counter": "drop_l2_unfiltered"}, {"drop": None}]
    # every accept of the inet forward chains marks the packet passed first
    accepts = 0
    for r in of(rs, "inet", "rule"):
        if r["chain"] == "forward" or r["chain"].startswith("fwd_"):
            for k, e in enumerate(r["expr"]):
                if e == {"accept": None}:
                    accepts += 1
                    assert r["expr"][k - 1] == {
                        "mangle": {"key": {"meta": {"key": "mark"}}, "value": MARK_PASSED}
                    }, r
    assert accepts >= 8


def test_forward_dispatches_on_the_direction_mark_not_the_interfaces() -> None:
    fwd = rules(render(bridged(), NOW), "inet", "forward")
    jumps = {
        json.dumps(e["jump"]): expr[0]["match"]["right"]
        for expr in fwd
        for e in expr
        if "jump" in e
    }
    assert jumps == {'{"target": "fwd_it_ot"}': MARK_IT_OT, '{"target": "fwd_ot_it"}': MARK_OT_IT}
    assert "iifname" not in json.dumps(fwd)
    # neighbour discovery crosses (hosts on both ports share one link)
    assert any("nd-neighbor-solicit" in json.dumps(expr) for expr in fwd)


def test_routed_forward_is_unchanged_and_marks_nothing() -> None:
    rs = render(validate_data(base(), now=NOW).config, NOW)
    assert not rs.bridged
    assert "mangle" not in json.dumps(rules(rs, "inet", "forward"))
    assert of(rs, "bridge", "table") == []


@pytest.mark.parametrize(
    ("lldp", "stp"), [(False, False), (True, False), (False, True), (True, True)]
)
def test_lldp_and_stp_pass_only_when_asked(lldp: bool, stp: bool) -> None:
    text = json.dumps(
        rules(render(bridged(pass_l2={"lldp": lldp, "stp": stp}), NOW), "bridge", "l2_forward")
    )
    assert ("01:80:c2:00:00:0e" in text) is lldp
    assert ("01:80:c2:00:00:00" in text) is stp


def test_conduit_sets_and_counters_are_the_routed_modes() -> None:
    rs = render(bridged(), NOW)
    assert set(rs.owners.values()) == {"scada-modbus", "ping-both"}
    sets = {s["name"]: s.get("elem", []) for s in of(rs, "inet", "set")}
    assert sets["c_it_ot_4"] == [{"concat": ["192.168.50.2", "192.168.50.10", "tcp", 502]}]
    assert sets["p_ot_it_4"] == [
        {"concat": [{"prefix": {"addr": "192.168.50.8", "len": 29}}, "192.168.50.2"]}
    ]


def test_a_unit_that_bridged_keeps_a_closed_bridge_table() -> None:
    routed = validate_data(base(), now=NOW).config
    for rs in (render(routed, NOW, keep_bridge=True), render_fail_closed(bridge=True)):
        assert rs.bridged
        assert [c["name"] for c in of(rs, "bridge", "chain")] == ["l2_forward"]
        assert rules(rs, "bridge", "l2_forward") == [[{"counter": "drop_l2_other"}, {"drop": None}]]
    assert not render_fail_closed().bridged  # what the image loads at boot: no bridge yet


def test_holds_bridge_table() -> None:
    assert not nftlib.holds_bridge_table(None)
    assert not nftlib.holds_bridge_table([{"table": {"family": "inet", "name": "appliance"}}])
    assert nftlib.holds_bridge_table(
        [
            {"table": {"family": "inet", "name": "appliance"}},
            {"table": {"family": "bridge", "name": "appliance"}},
        ]
    )


# -- the net role ---------------------------------------------------------------------


class TablesNft:
    """A kernel holding tables by family: each document replaces the tables it names."""

    def __init__(self) -> None:
        self.tables: dict[str, list[dict[str, Any]]] = {}
        self.applied: list[dict[str, Any]] = []

    def apply(self, document: dict[str, Any], *, check_only: bool = False) -> None:
        tables: dict[str, list[dict[str, Any]]] = {}
        for cmd in document["nftables"]:
            [(verb, body)] = cmd.items()
            [(kind, obj)] = body.items()
            family = obj["family"]
            if kind == "table":
                tables[family] = [] if verb == "delete" or family not in tables else tables[family]
                if verb == "add" and not tables[family]:
                    tables[family] = [{"table": copy.deepcopy(obj)}]
                continue
            tables[family].append({kind: copy.deepcopy(obj)})
        self.tables.update(tables)
        self.applied.append(document)

    def bridge_conntrack(self) -> bool:
        return False

    def list_table(self) -> list[dict[str, Any]] | None:
        if "inet" not in self.tables:
            return None
        return copy.deepcopy(self.tables["inet"] + self.tables.get("bridge", []))


class BridgeForwarding:
    def __init__(self, available: bool = True) -> None:
        self.on = False
        self.available = available
        self.asked: list[str] = []

    def enabled(self) -> bool:
        return self.on

    def set(self, enabled: bool) -> None:
        self.on = enabled

    def bridge_filter(self, bridge: str, ports: list[str]) -> list[str]:
        self.asked.append(bridge)
        self.ports = ports
        if not self.available:
            raise ApplyFailed("this kernel has no br_netfilter")
        return ["net.bridge.bridge-nf-call-iptables=1"]

    def ipv6_back(self, links: list[str]) -> list[str]:
        self.back = links
        return []


class FakeLinks:
    def __init__(self) -> None:
        self.reconciled: list[str] = []

    def reconcile(self, config: Config, leases: Any = None, now: Any = None) -> list[str]:
        self.reconciled.append(config.mode)
        return []

    def observe(self, config: Config) -> list[Any]:
        return []

    def nics(self) -> list[Any]:
        return []


@pytest.fixture
def env(tmp_path: Path):
    store = Store(tmp_path / "data")
    nft, clock, fwd = TablesNft(), Clock(), BridgeForwarding()
    role = NetRole(
        store, LiveState(tmp_path / "run"), nft, FakeLinks(), clock=clock, forwarding=fwd
    )
    role.dhcp = None
    role.blinker = None
    yield store, nft, clock, role, fwd
    store.close()


def commit(store: Store, clock: Clock, data: dict[str, Any]) -> None:
    rev = revs.import_text(store, yaml.safe_dump(data), author="t", now=clock.t).revision
    revs.commit(store, author="t", now=clock.t, ref=rev.id)


def test_the_role_applies_both_tables_sets_br_netfilter_and_shows_the_mode(env) -> None:
    store, nft, clock, role, fwd = env
    role.start()
    commit(store, clock, BRIDGED)
    role.step()
    assert set(nft.tables) == {"inet", "bridge"}
    assert fwd.asked == ["br0"] and fwd.ports == ["it0", "ot0"]
    snap = role.snapshot(clock.t)
    assert snap["mode"] == "bridge"
    assert snap["bridge"]["ports"] == [{"name": "it0", "role": "it"}, {"name": "ot0", "role": "ot"}]
    assert snap["bridge"]["filter"] == "br_netfilter" and snap["bridge"]["error"] is None
    assert snap["bridge"]["kernel"] == {"br_netfilter": True, "nf_conntrack_bridge": False}
    assert {"drop_l2_other", "drop_l2_unfiltered"} <= set(snap["drops"])


def test_no_br_netfilter_is_an_error_shown_in_the_mode(env) -> None:
    store, _nft, clock, role, fwd = env
    fwd.available = False
    role.start()
    commit(store, clock, BRIDGED)
    role.step()
    snap = role.snapshot(clock.t)
    assert snap["bridge"]["filter"] is None
    assert "br_netfilter" in snap["bridge"]["error"] and "br_netfilter" in snap["last_error"]
    assert store.events(10, "net.error")


def test_back_to_routed_keeps_the_bridge_table_closed_and_drift_is_checked_on_it(env) -> None:
    store, nft, clock, role, _fwd = env
    role.start()
    commit(store, clock, BRIDGED)
    role.step()
    clock.t += 40  # (links are reconciled every 30 s, and at once after an apply)
    commit(store, clock, base())
    role.step()
    assert role.snapshot(clock.t)["mode"] == "routed"
    assert _fwd.back == ["it0", "ot0"]  # IPv6 back on the former ports
    bridge = nft.tables["bridge"]
    assert [o["chain"]["name"] for o in bridge if "chain" in o] == ["l2_forward"]
    # someone deletes our bridge table: drift, and it is put back (closed)
    del nft.tables["bridge"]
    clock.t += 10
    role.step()
    assert store.events(10, "net.drift")
    assert [o["chain"]["name"] for o in nft.tables["bridge"] if "chain" in o] == ["l2_forward"]


def test_a_restarted_role_falling_back_to_fail_closed_keeps_the_bridge_closed(
    env, tmp_path
) -> None:
    store, nft, clock, role, _fwd = env
    role.start()
    commit(store, clock, BRIDGED)
    role.step()
    from appliance.state.db import Revision

    for rev in Revision.select():
        rev.delete_instance()  # a factory reset's wipe
    again = NetRole(
        store, LiveState(tmp_path / "run2"), nft, None, clock=clock, forwarding=BridgeForwarding()
    )
    again.dhcp = None
    again.start()
    assert nft.applied[-1] == render_fail_closed(bridge=True).document()
    assert [o["chain"]["name"] for o in nft.tables["bridge"] if "chain" in o] == ["l2_forward"]


def test_bridge_filter_writes_the_sysctls_of_its_namespace(tmp_path: Path) -> None:
    from appliance.net.links import Forwarding

    proc = tmp_path / "net"
    for key, value in (
        ("bridge/bridge-nf-call-iptables", "0"),
        ("bridge/bridge-nf-call-ip6tables", "1"),
        ("bridge/bridge-nf-call-arptables", "1"),
        ("ipv6/conf/br0/disable_ipv6", "0"),
        ("ipv6/conf/it0/disable_ipv6", "0"),
    ):
        (proc / key).parent.mkdir(parents=True, exist_ok=True)
        (proc / key).write_text(value + "\n")
    fwd = Forwarding(proc)
    assert fwd.bridge_filter("br0", ["it0", "ot0"]) == [
        "net.bridge.bridge-nf-call-iptables=1",
        "net.bridge.bridge-nf-call-arptables=0",
        "net.ipv6.conf.br0.disable_ipv6=1",
        "net.ipv6.conf.it0.disable_ipv6=1",  # (ot0 absent: skipped)
    ]
    assert fwd.bridge_filter("br0", ["it0", "ot0"]) == []  # nothing to change
    assert fwd.ipv6_back(["it0"]) == ["net.ipv6.conf.it0.disable_ipv6=0"]
    with pytest.raises(ApplyFailed, match="no br_netfilter"):
        Forwarding(tmp_path / "bare").bridge_filter("br0", [])
