"""Render a configuration into one libnftables-JSON ruleset for the table we own.

A pure function of (config, now): no kernel, no clock, no daemon state, so it is
golden-tested. The document replaces `table inet appliance` in one transaction
(add + delete + add everything), like fw4's flush-and-reload, so the kernel
never holds half of a ruleset.

Shape of the table:
  input     policy drop; lo, established; IPv6 neighbour discovery; then one
            vmap lookup on the input interface to `in_<nic>` holding that NIC's
            management services. Nothing is allowed in from OT unless configured.
  forward   policy drop; established/related accept; invalid drop; IT→OT and
            OT→IT jump to `fwd_it_ot`/`fwd_ot_it`, where one lookup in a
            concatenated interval set (saddr . daddr . l4proto . dport) per
            family decides. Set elements carry counters (per-conduit figures)
            and, for conduits that expire, a kernel timeout: an expired conduit
            stops passing traffic even if the daemon is gone. What is dropped is
            counted per direction and remembered in the dynamic `denied4/6`
            sets (source, destination, protocol, port) for the event monitor.
  dstnat/srcnat  only when NAT is configured (1:1 NAT, port forwards, masquerade).
  modbus_tproxy  only when a conduit has a Modbus restriction (`modbus:`): prerouting,
            after dstnat. The restricted conduit's tcp/502 flows are not in the forward
            sets but in `m_it_ot_4`; a packet of one is handed by `tproxy` to the
            modbusproxy role's transparent socket (127.0.0.1:MODBUS_PROXY_PORT) and
            marked TPROXY_MARK, and `socket transparent` marks the PLC's answers to
            the proxy's upstream connections; input accepts what carries the mark. With
            no proxy listening, tproxy finds no socket, the packet goes on to forward,
            which has no element for it: the restricted conduit passes nothing (fail
            closed) and the attempt is counted and remembered as denied. Marked packets
            reach the local socket only with the policy route the net role holds
            (`links.Links._tproxy_route`, from its first apply): `ip rule fwmark
            TPROXY_MARK lookup TPROXY_TABLE` and `local 0.0.0.0/0 dev lo` in that table
            (without it they are forwarded, and dropped: closed, too).

Bridge mode (`bridge:` in the document: the IT and OT NICs are ports of one Linux bridge)
adds a second owned table, `table bridge appliance`, replaced in the same transaction:
  l2_forward   bridge forward hook, prio BRIDGE_PRE_PRIO, policy drop: ARP passes; IPv4 and
            IPv6 between an IT and an OT port are marked with their direction (MARK_IT_OT,
            MARK_OT_IT) and go on; LLDP and STP BPDUs pass when `pass_l2` says so; every
            other frame (any other ethertype, 802.1Q tagged frames, unknown 802.3) is
            counted in `drop_l2_other` and dropped.
  l2_decided   bridge forward hook, prio BRIDGE_POST_PRIO (after br_netfilter's hook at 0),
            policy accept: an IPv4/IPv6 frame passes only if the inet forward chain
            accepted it (it then carries MARK_PASSED); any other is counted in
            `drop_l2_unfiltered` and dropped. So the bridge stays closed even where the inet
            hooks never see bridged packets (no br_netfilter, or its sysctls off).
This kernel has no conntrack in the bridge family (CONFIG_NF_CONNTRACK_BRIDGE unset), so the
IP decision is the inet table's: with br_netfilter and net.bridge.bridge-nf-call-ip(6)tables=1
(set by the net role) bridged IPv4 and IPv6 traverse the inet forward hook with conntrack.
There `forward` dispatches on the direction mark instead of the interfaces (br_netfilter shows
the bridge, not the port, as in- and output interface), and every accept sets MARK_PASSED;
the conduit sets, counters and denied sets are the routed mode's, unchanged. IPv6 neighbour
discovery crosses (it is how hosts on one link find each other).

A unit that ran as a bridge keeps a closed bridge table (`l2_forward` dropping everything)
once routed again or fail-closed (`render(keep_bridge=True)`, `render_fail_closed(bridge=True)`):
until its bridge link is gone nothing crosses it.
"""

from __future__ import annotations

import functools
import gc
import json
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from appliance.config.check import Element, conduit_elements
from appliance.config.model import Config, IPNet
from appliance.config.services import Service

FAMILY = "inet"
TABLE = "appliance"
ZONES = ("it_ot", "ot_it")
ZONES_ROLES = ("it", "ot")
DENIED_TIMEOUT_S = 3600
DENIED_SIZE = 65535
FAIL_CLOSED_MGMT_GLOB = "mgmt*"
FAIL_CLOSED_SERVICES = (("tcp", 22), ("tcp", 443), ("tcp", 80))
# The modbusproxy role listens here (IP_TRANSPARENT, loopback only: nothing reaches it
# but what tproxy hands it). The mark and routing table steer tproxy'd packets to it.
MODBUS_PROXY_ADDRESS = "127.0.0.1"
MODBUS_PROXY_PORT = 15020
MODBUS_PORT = 502
TPROXY_MARK = 0x4D42  # "MB"
TPROXY_TABLE = 77
TPROXY_PRIO = -90  # after dstnat (-100): 1:1 NAT and port forwards have rewritten daddr
BRIDGE_FAMILY = "bridge"
# skb marks set in the bridge table (direction) and by inet forward's accepts (passed)
MARK_IT_OT = 0x4201
MARK_OT_IT = 0x4202
MARK_PASSED = 0x4250
BRIDGE_PRE_PRIO = -200  # before br_netfilter (NF_BR_PRI_BRNF = 0), which runs inet forward
BRIDGE_POST_PRIO = 200  # after it: the inet table's verdict is known (MARK_PASSED)
LLDP_MAC = "01:80:c2:00:00:0e"
LLDP_ETHERTYPE = 0x88CC
STP_MAC = "01:80:c2:00:00:00"
ICMPV6_ND = [
    "nd-router-solicit",
    "nd-router-advert",
    "nd-neighbor-solicit",
    "nd-neighbor-advert",
    "mld-listener-query",
]

Json = dict[str, Any]


@dataclass(frozen=True)
class Ruleset:
    """The rendered document plus what the daemon needs to read it back."""

    commands: list[Json]
    # (set name, element value, conduit name, element) for every conduit element rendered
    owned: tuple[tuple[str, Any, str, Element], ...] = ()
    # the earliest expiry among conduits rendered as active (re-render then)
    next_change: datetime | None = None
    counters: tuple[str, ...] = ()
    # whether the document holds `table bridge appliance` (bridge mode, or kept closed)
    bridged: bool = False

    def document(self) -> Json:
        return {"nftables": self.commands}

    @functools.cached_property
    def owners(self) -> dict[tuple[str, str], str]:
        """(set name, canonical element key) -> conduit name, to attribute counters.

        Computed on first use (by the net role when it reads counters), not while
        rendering: applying a ruleset does not need it.
        """
        return {(name, element_key(val)): conduit for name, val, conduit, _el in self.owned}

    def withdrawn(self, newer: Ruleset) -> list[Element]:
        """Elements this ruleset allowed that `newer` does not (their flows get cut)."""
        keep = newer.owners
        return [el for name, val, _c, el in self.owned if (name, element_key(val)) not in keep]

    def elements(self) -> list[Element]:
        return [el for _n, _v, _c, el in self.owned]


# -- small builders: one libnftables-JSON shape each -------------------------


def _t() -> Json:
    return {"family": FAMILY, "table": TABLE}


def _match(left: Json, right: Any, op: str = "==") -> Json:
    return {"match": {"op": op, "left": left, "right": right}}


def _meta(key: str) -> Json:
    return {"meta": {"key": key}}


def _payload(proto: str, fld: str) -> Json:
    return {"payload": {"protocol": proto, "field": fld}}


def _ct_state(*states: str) -> Json:
    return _match({"ct": {"key": "state"}}, list(states), "in")


def _rule(chain: str, *expr: Json, comment: str | None = None) -> Json:
    rule: Json = {**_t(), "chain": chain, "expr": list(expr)}
    if comment:
        rule["comment"] = comment
    return {"add": {"rule": rule}}


def _chain(name: str, hook: str | None = None, prio: int = 0, kind: str = "filter") -> Json:
    chain: Json = {"family": FAMILY, "table": TABLE, "name": name}
    if hook:
        chain.update({"type": kind, "hook": hook, "prio": prio, "policy": "drop"})
        if kind == "nat":
            chain["policy"] = "accept"
    return {"add": {"chain": chain}}


def _set(name: str, type_: Any, flags: list[str], elem: list[Any] | None = None, **kw: Any) -> Json:
    s: Json = {"family": FAMILY, "table": TABLE, "name": name, "type": type_}
    if flags:
        s["flags"] = flags
    s.update(kw)
    if elem:
        s["elem"] = elem
    return {"add": {"set": s}}


def _counter(name: str) -> Json:
    return {"add": {"counter": {"family": FAMILY, "table": TABLE, "name": name}}}


ACCEPT: Json = {"accept": None}
DROP: Json = {"drop": None}


@functools.lru_cache(maxsize=65536)
def _addr(net: IPNet) -> Any:  # cached: the same hosts recur across conduits
    if net.prefixlen == net.max_prefixlen:
        return str(net.network_address)
    return {"prefix": {"addr": str(net.network_address), "len": net.prefixlen}}


def _port(svc: Service) -> Any:
    return svc.lo if svc.lo == svc.hi else {"range": [svc.lo, svc.hi]}


L4PROTO_NUMBERS = {"tcp": 6, "udp": 17, "icmp": 1, "ipv6-icmp": 58}


def element_key(val: Any) -> str:
    """A canonical string for a set element value, equal for rendered and listed forms.

    libnftables lists protocols by name only where /etc/protocols exists (a
    minimal system lists 6, not "tcp"), so names become numbers here.
    """
    if isinstance(val, dict) and "concat" in val:
        val = {
            "concat": [
                L4PROTO_NUMBERS.get(v, v) if isinstance(v, str) else v for v in val["concat"]
            ]
        }
    return json.dumps(val, sort_keys=True, separators=(",", ":"))


def set_name(kind: str, zone: str, family: int) -> str:
    """The conduit set of a kind for a zone and IP version, e.g. `c_it_ot_4`.

    Kinds: `c` exact flows (one host to one host on one port) in a hash set; `cr`
    flows with a network or a port range, in an interval set; `p` ping. Interval
    (pipapo) sets cost new connections and applies far more than hash sets (bench/:
    0.67x new connections/s and 2.4 s vs 0.15 s to load 10k elements), so only what
    needs ranges goes there. `m` (IT→OT, IPv4 only) the tcp/502 flows of conduits with a
    Modbus restriction, which the modbusproxy role checks (`modbus_tproxy`).
    """
    return f"{kind}_{zone}_{family}"


def _kind(el: Element) -> str:
    if el.service.proto == "icmp":
        return "p"
    exact = (
        el.src.prefixlen == el.src.max_prefixlen
        and el.dst.prefixlen == el.dst.max_prefixlen
        and el.service.lo == el.service.hi
    )
    return "c" if exact else "cr"


def _element_value(el: Element) -> Any:
    if el.service.proto == "icmp":
        return {"concat": [_addr(el.src), _addr(el.dst)]}
    return {"concat": [_addr(el.src), _addr(el.dst), el.service.proto, _port(el.service)]}


def _split_modbus(el: Element) -> list[tuple[str, Element]]:
    """A restricted conduit's element as (set kind, element) parts: its tcp/502 goes to the
    proxy (kind `m`), the rest of a port range around it stays a plain flow."""
    svc = el.service
    if not (el.zone == "it_ot" and el.family == 4 and svc.proto == "tcp"):
        return [(_kind(el), el)]
    if not svc.lo <= MODBUS_PORT <= svc.hi:
        return [(_kind(el), el)]
    out = [("m", el._replace(service=Service("tcp", MODBUS_PORT, MODBUS_PORT)))]
    for lo, hi in ((svc.lo, MODBUS_PORT - 1), (MODBUS_PORT + 1, svc.hi)):
        if lo <= hi:
            part = el._replace(service=Service("tcp", lo, hi))
            out.append((_kind(part), part))
    return out


def restricted(config: Config) -> bool:
    """Whether any conduit has a Modbus restriction (the proxy's set and chain exist)."""
    return any(c.modbus is not None for c in config.conduits)


def _conduit_sets(config: Config, now: datetime) -> tuple[list[Json], tuple, datetime | None]:
    elems: dict[str, list[Any]] = {}
    owned: list[tuple[str, Any, str, Element]] = []
    next_change: datetime | None = None
    for conduit in config.conduits:
        if not conduit.active(now):
            continue
        timeout = None
        if conduit.expires is not None:
            timeout = max(1, math.ceil((conduit.expires - now).total_seconds()))
            next_change = (
                conduit.expires if next_change is None else min(next_change, conduit.expires)
            )
        for whole in conduit_elements(conduit):
            parts = _split_modbus(whole) if conduit.modbus else [(_kind(whole), whole)]
            for kind, el in parts:
                name = set_name(kind, el.zone, el.family)
                val = _element_value(el)
                owned.append((name, val, conduit.name, el))
                item = {"elem": {"val": val, "timeout": timeout}} if timeout else val
                elems.setdefault(name, []).append(item)
    out: list[Json] = []
    for zone in ZONES:
        for fam, addr_t in ((4, "ipv4_addr"), (6, "ipv6_addr")):
            for kind, flags in (("c", ["timeout"]), ("cr", ["interval", "timeout"])):
                out.append(
                    _set(
                        set_name(kind, zone, fam),
                        [addr_t, addr_t, "inet_proto", "inet_service"],
                        flags,
                        elems.get(set_name(kind, zone, fam)),
                        stmt=[{"counter": None}],
                    )
                )
            out.append(
                _set(
                    set_name("p", zone, fam),
                    [addr_t, addr_t],
                    ["interval", "timeout"],
                    elems.get(set_name("p", zone, fam)),
                    stmt=[{"counter": None}],
                )
            )
    if restricted(config):
        out.append(
            _set(
                set_name("m", "it_ot", 4),
                ["ipv4_addr", "ipv4_addr", "inet_proto", "inet_service"],
                ["interval", "timeout"],
                elems.get(set_name("m", "it_ot", 4)),
                stmt=[{"counter": None}],
            )
        )
    return out, tuple(owned), next_change


def _tproxy() -> list[Json]:
    """The restricted conduits' Modbus to the proxy, and the PLC's answers to its upstream
    connections back to it (see the module docstring)."""
    mark = {"mangle": {"key": _meta("mark"), "value": TPROXY_MARK}}
    key = {
        "concat": [
            _payload("ip", "saddr"),
            _payload("ip", "daddr"),
            _meta("l4proto"),
            _payload("th", "dport"),
        ]
    }
    to = {"tproxy": {"family": "ip", "addr": MODBUS_PROXY_ADDRESS, "port": MODBUS_PROXY_PORT}}
    return [
        {
            "add": {
                "chain": {
                    **{"family": FAMILY, "table": TABLE, "name": "modbus_tproxy"},
                    **{"type": "filter", "hook": "prerouting", "prio": TPROXY_PRIO},
                    "policy": "accept",  # it only steers: what passes is forward's and input's
                }
            }
        },
        _rule(
            "modbus_tproxy",
            _match(_meta("iifname"), "@if_it"),
            _match(_meta("l4proto"), "tcp"),  # tproxy needs it said, not only in the concat
            _match(key, "@" + set_name("m", "it_ot", 4)),
            to,
            mark,
            ACCEPT,
        ),
        _rule(
            "modbus_tproxy",
            _match(_meta("l4proto"), "tcp"),
            _match({"socket": {"key": "transparent"}}, 1),
            mark,
            ACCEPT,
        ),
    ]


def _zone_ifsets(config: Config) -> list[Json]:
    out = []
    for role in ("it", "ot", "mgmt"):
        names = sorted(i.name for i in config.interfaces_by_role(role))
        out.append(_set(f"if_{role}", "ifname", [], names))
    return out


def _input(config: Config) -> tuple[list[Json], list[str]]:
    out = [
        _chain("input", "input"),
        _rule("input", _match(_meta("iifname"), "lo"), ACCEPT),
        _rule("input", _ct_state("established", "related"), ACCEPT),
        _rule("input", _ct_state("invalid"), DROP),
        _rule("input", _match(_payload("icmpv6", "type"), {"set": ICMPV6_ND}), ACCEPT),
    ]
    if restricted(config):  # handed to the Modbus proxy by modbus_tproxy
        out.append(_rule("input", _match(_meta("mark"), TPROXY_MARK), ACCEPT))
    counters = []
    vmap = []
    for iface in sorted(config.links(), key=lambda i: i.name):
        chain = f"in_{iface.name}"
        counter = f"drop_in_{iface.name}"
        counters.append(counter)
        out.append(_chain(chain))
        out.extend(_allow_services(chain, config.effective_allow_in(iface)))
        out.append(_rule(chain, {"counter": counter}, DROP))
        vmap.append([iface.name, {"jump": {"target": chain}}])
    if vmap:
        out.append(_rule("input", {"vmap": {"key": _meta("iifname"), "data": {"set": vmap}}}))
    counters.append("drop_in_other")
    out.append(_rule("input", {"counter": "drop_in_other"}, DROP))
    return out, counters


def _allow_services(chain: str, services: tuple[Service, ...]) -> list[Json]:
    out = []
    ports = [{"concat": [s.proto, _port(s)]} for s in services if s.proto != "icmp"]
    if ports:
        key = {"concat": [_meta("l4proto"), _payload("th", "dport")]}
        out.append(_rule(chain, _match(key, {"set": ports}), ACCEPT))
    if any(s.proto == "icmp" for s in services):
        out.append(_rule(chain, _match(_payload("icmp", "type"), "echo-request"), ACCEPT))
        out.append(_rule(chain, _match(_payload("icmpv6", "type"), "echo-request"), ACCEPT))
    return out


def _mark(value: int) -> Json:
    return {"mangle": {"key": _meta("mark"), "value": value}}


def _forward(bridged: bool = False) -> tuple[list[Json], list[str]]:
    """The forward chain; `bridged`: dispatch on the bridge table's direction marks, and
    mark every accepted packet MARK_PASSED (the bridge's `l2_decided` lets only those by)."""
    ok = [_mark(MARK_PASSED), ACCEPT] if bridged else [ACCEPT]
    out = [
        _chain("forward", "forward"),
        _rule("forward", _ct_state("established", "related"), *ok),
        _rule("forward", _ct_state("invalid"), DROP),
    ]
    if bridged:  # hosts on both ports are on one link: neighbour discovery crosses
        out.append(_rule("forward", _match(_payload("icmpv6", "type"), {"set": ICMPV6_ND}), *ok))
    for zone, src, dst in (("it_ot", "it", "ot"), ("ot_it", "ot", "it")):
        if bridged:
            mark = MARK_IT_OT if zone == "it_ot" else MARK_OT_IT
            out.append(
                _rule("forward", _match(_meta("mark"), mark), {"jump": {"target": f"fwd_{zone}"}})
            )
            continue
        out.append(
            _rule(
                "forward",
                _match(_meta("iifname"), f"@if_{src}"),
                _match(_meta("oifname"), f"@if_{dst}"),
                {"jump": {"target": f"fwd_{zone}"}},
            )
        )
    out.append(_rule("forward", {"counter": "drop_fwd_other"}, DROP))
    counters = ["drop_fwd_other"]
    for zone in ZONES:
        chain = f"fwd_{zone}"
        out.append(_chain(chain))
        for fam, proto in ((4, "ip"), (6, "ip6")):
            key = {
                "concat": [
                    _payload(proto, "saddr"),
                    _payload(proto, "daddr"),
                    _meta("l4proto"),
                    _payload("th", "dport"),
                ]
            }
            for kind in ("c", "cr"):
                out.append(_rule(chain, _match(key, "@" + set_name(kind, zone, fam)), *ok))
        for fam, proto, icmp in ((4, "ip", "icmp"), (6, "ip6", "icmpv6")):
            key = {"concat": [_payload(proto, "saddr"), _payload(proto, "daddr")]}
            out.append(
                _rule(
                    chain,
                    _match(_payload(icmp, "type"), "echo-request"),
                    _match(key, "@" + set_name("p", zone, fam)),
                    *ok,
                )
            )
        for fam, proto in ((4, "ip"), (6, "ip6")):
            key = {
                "concat": [
                    _payload(proto, "saddr"),
                    _payload(proto, "daddr"),
                    _meta("l4proto"),
                    _payload("th", "dport"),
                ]
            }
            out.append(
                _rule(
                    chain,
                    _match(_meta("l4proto"), {"set": ["tcp", "udp"]}),
                    {"set": {"op": "update", "elem": key, "set": f"@denied{fam}"}},
                )
            )
        counter = f"drop_{zone}"
        counters.append(counter)
        out.append(_rule(chain, {"counter": counter}, DROP))
    return out, counters


def _denied_sets() -> list[Json]:
    out = []
    for fam, addr_t in ((4, "ipv4_addr"), (6, "ipv6_addr")):
        out.append(
            _set(
                f"denied{fam}",
                [addr_t, addr_t, "inet_proto", "inet_service"],
                ["timeout"],
                timeout=DENIED_TIMEOUT_S,
                size=DENIED_SIZE,
                stmt=[{"counter": None}],
            )
        )
    return out


def _nat(config: Config) -> list[Json]:
    nat = config.nat
    if not (nat.one_to_one or nat.port_forwards or nat.masquerade):
        return []
    out = [_chain("dstnat", "prerouting", -100, "nat"), _chain("srcnat", "postrouting", 100, "nat")]
    from_it = _match(_meta("iifname"), "@if_it")
    for o in nat.one_to_one:
        out.append(
            _rule(
                "dstnat",
                from_it,
                _match(_payload("ip", "daddr"), str(o.it_address)),
                {"dnat": {"family": "ip", "addr": str(o.ot_address)}},
            )
        )
        out.append(
            _rule(
                "srcnat",
                _match(_meta("oifname"), "@if_it"),
                _match(_payload("ip", "saddr"), str(o.ot_address)),
                {"snat": {"family": "ip", "addr": str(o.it_address)}},
            )
        )
    it_addrs = sorted(
        str(a.ip) for i in config.interfaces_by_role("it") for a in i.addresses if a.version == 4
    )
    for p in nat.port_forwards:
        expr = [from_it]
        if it_addrs:
            expr.append(_match(_payload("ip", "daddr"), {"set": it_addrs}))
        expr.append(_match(_payload(p.protocol, "dport"), p.port))
        expr.append(
            {"dnat": {"family": "ip", "addr": str(p.to_address), "port": p.to_port or p.port}}
        )
        out.append(_rule("dstnat", *expr, comment=f"port-forward {p.name}"))
    if nat.masquerade:
        out.append(
            _rule(
                "srcnat",
                _match(_meta("nfproto"), "ipv4"),  # NAT is IPv4 only; IPv6 is routed as is
                from_it,
                _match(_meta("oifname"), "@if_ot"),
                {"masquerade": None},
            )
        )
    return out


def _table_replace(family: str = FAMILY) -> list[Json]:
    t = {"family": family, "name": TABLE}
    return [{"add": {"table": t}}, {"delete": {"table": t}}, {"add": {"table": t}}]


def _b(obj: Json) -> Json:
    """A builder's command moved to the bridge table (same name, family bridge)."""
    kind, body = next(iter(obj["add"].items()))
    return {"add": {kind: {**body, "family": BRIDGE_FAMILY}}}


def _ether(fld: str) -> Json:
    return _payload("ether", fld)


def _bridge_closed() -> list[Json]:
    """The bridge table of a unit not (or not yet) bridging: nothing crosses any bridge."""
    return [
        *_table_replace(BRIDGE_FAMILY),
        _b(_counter("drop_l2_other")),
        _b(_chain("l2_forward", "forward", BRIDGE_PRE_PRIO)),
        _b(_rule("l2_forward", {"counter": "drop_l2_other"}, DROP)),
    ]


def _bridge(config: Config) -> list[Json]:
    """The bridge table of bridge mode (see the module docstring)."""
    assert config.bridge is not None
    ports = {
        role: sorted(p.name for p in config.bridge_ports() if p.role == role)
        for role in ZONES_ROLES
    }
    ip = _match(_ether("type"), {"set": ["ip", "ip6"]})
    out = [
        _b(_chain("l2_forward", "forward", BRIDGE_PRE_PRIO)),
        _b(_rule("l2_forward", _match(_ether("type"), "arp"), ACCEPT)),
    ]
    for src, dst, mark in (("it", "ot", MARK_IT_OT), ("ot", "it", MARK_OT_IT)):
        out.append(
            _b(
                _rule(
                    "l2_forward",
                    ip,
                    _match(_meta("iifname"), {"set": ports[src]}),
                    _match(_meta("oifname"), {"set": ports[dst]}),
                    _mark(mark),
                    ACCEPT,
                )
            )
        )
    if config.bridge.pass_l2.lldp:
        out.append(
            _b(
                _rule(
                    "l2_forward",
                    _match(_ether("daddr"), LLDP_MAC),
                    _match(_ether("type"), LLDP_ETHERTYPE),
                    ACCEPT,
                    comment="pass_l2.lldp",
                )
            )
        )
    if config.bridge.pass_l2.stp:
        out.append(
            _b(_rule("l2_forward", _match(_ether("daddr"), STP_MAC), ACCEPT, comment="pass_l2.stp"))
        )
    out += [
        _b(_rule("l2_forward", {"counter": "drop_l2_other"}, DROP)),
        {
            "add": {
                "chain": {
                    **{"family": BRIDGE_FAMILY, "table": TABLE, "name": "l2_decided"},
                    **{"type": "filter", "hook": "forward", "prio": BRIDGE_POST_PRIO},
                    "policy": "accept",  # only IP is decided here; the rest was, before
                }
            }
        },
        _b(
            _rule(
                "l2_decided",
                ip,
                _match(_meta("mark"), MARK_PASSED, "!="),
                {"counter": "drop_l2_unfiltered"},
                DROP,
            )
        ),
    ]
    return [
        *_table_replace(BRIDGE_FAMILY),
        _b(_counter("drop_l2_other")),
        _b(_counter("drop_l2_unfiltered")),
        *_chains_first(out),
    ]


def render(config: Config, now: datetime, keep_bridge: bool = False) -> Ruleset:
    """The whole ruleset for `config` as it should stand at time `now`.

    The cyclic garbage collector is paused while rendering: a 10k-conduit document
    is ~200k small objects, and collections triggered by them cost more than the
    rendering itself (bench/apply.py: 0.08 s steady instead of spikes to 0.2 s).

    `keep_bridge`: the kernel holds a bridge table of ours (the unit bridged before); a
    routed document then keeps it, closed, instead of leaving it be.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _render(config, now, keep_bridge)
    finally:
        if enabled:
            gc.enable()


def _render(config: Config, now: datetime, keep_bridge: bool) -> Ruleset:
    sets, owned, next_change = _conduit_sets(config, now)
    inp, in_counters = _input(config)
    bridged = config.bridge is not None
    fwd, fwd_counters = _forward(bridged)
    counters = [*fwd_counters, *in_counters]
    l2: list[Json] = []
    l2_counters: list[str] = []
    if bridged:
        l2, l2_counters = _bridge(config), ["drop_l2_other", "drop_l2_unfiltered"]
    elif keep_bridge:
        l2, l2_counters = _bridge_closed(), ["drop_l2_other"]
    commands = [
        *_table_replace(),
        *(_counter(c) for c in counters),
        *_zone_ifsets(config),
        *sets,
        *_denied_sets(),
        *_chains_first([*inp, *fwd, *_nat(config), *(_tproxy() if restricted(config) else [])]),
        *l2,
    ]
    return Ruleset(commands, owned, next_change, (*counters, *l2_counters), bool(l2))


def _chains_first(commands: list[Json]) -> list[Json]:
    """Declare every chain before any rule, so jumps never point forward."""
    return sorted(commands, key=lambda c: 0 if "chain" in c["add"] else 1)


def render_fail_closed(bridge: bool = False) -> Ruleset:
    """What the kernel holds before the first apply: no forwarding, management only.

    Loaded at boot (system/failclosed.json, by appliance-failclosed.service) before
    any NIC is up (no bridge exists then: the net role makes it), and by the net role when
    it finds no table of ours. `bridge`: the unit bridged (the kernel holds a bridge table
    of ours), so a closed bridge table replaces it: no frame crosses the bridge either.
    """
    mgmt = _match(_meta("iifname"), FAIL_CLOSED_MGMT_GLOB)
    key = {"concat": [_meta("l4proto"), _payload("th", "dport")]}
    ports = {"set": [{"concat": list(p)} for p in FAIL_CLOSED_SERVICES]}
    commands = [
        *_table_replace(),
        _counter("drop_fwd_other"),
        _counter("drop_in_other"),
        _chain("input", "input"),
        _rule("input", _match(_meta("iifname"), "lo"), ACCEPT),
        _rule("input", _ct_state("established", "related"), ACCEPT),
        _rule("input", _ct_state("invalid"), DROP),
        _rule("input", _match(_payload("icmpv6", "type"), {"set": ICMPV6_ND}), ACCEPT),
        _rule("input", mgmt, _match(key, ports), ACCEPT),
        _rule("input", mgmt, _match(_payload("icmp", "type"), "echo-request"), ACCEPT),
        _rule("input", mgmt, _match(_payload("icmpv6", "type"), "echo-request"), ACCEPT),
        _rule("input", {"counter": "drop_in_other"}, DROP),
        _chain("forward", "forward"),
        _rule("forward", {"counter": "drop_fwd_other"}, DROP),
        *(_bridge_closed() if bridge else []),
    ]
    counters = ("drop_fwd_other", "drop_in_other", *(("drop_l2_other",) if bridge else ()))
    return Ruleset(commands, (), None, counters, bridge)
