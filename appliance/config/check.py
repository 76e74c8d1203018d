"""Rules across the document: sides of addresses, unique names, one owner per flow.

`conduit_elements` is the single definition of what a conduit lets through; the
ruleset renderer uses it. The overlap check works on the same lists axis by axis
instead of on their product (see `conduit_overlaps`), and its tests compare it with
`conduit_elements` pair by pair (tests/unit/test_config_check_scale.py).
"""

from __future__ import annotations

import bisect
import heapq
import ipaddress
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from appliance.config.base import Finding
from appliance.config.field import check_field
from appliance.config.modbus import FUNCTION_CODES, TABLE_OF
from appliance.config.model import Conduit, Config, IPNet
from appliance.config.services import Service

MODBUS_PORT = 502

MAX_REPORTED = 20


class Element(NamedTuple):
    """One (zone, source net, destination net, service) tuple a conduit allows.

    A NamedTuple rather than a frozen dataclass: 10k-conduit documents build
    tens of thousands of these, and tuples are several times cheaper to make.
    """

    zone: str  # "it_ot" or "ot_it": the direction the connection is opened in
    src: IPNet
    dst: IPNet
    service: Service

    @property
    def family(self) -> int:
        return self.src.version

    def describe(self) -> str:
        return f"{self.src} → {self.dst} {self.service}"


def conduit_elements(conduit: Conduit) -> list[Element]:
    """Every (src, dst, service) the conduit allows, IT→OT and for `both` OT→IT too."""
    out: list[Element] = []
    services = conduit.parsed_services()
    for src in conduit.from_:
        for dst in conduit.to:
            if src.version != dst.version:
                continue
            for svc in services:
                out.append(Element("it_ot", src, dst, svc))
                if conduit.direction == "both":
                    out.append(Element("ot_it", dst, src, svc))
    return out


def _span(net: IPNet) -> tuple[int, int]:
    lo = int(net.network_address)
    return lo, lo + (1 << (net.max_prefixlen - net.prefixlen)) - 1


Span = tuple[int, int]
Box = tuple[Span, Span, Span]  # (source, destination, port): inclusive integer ranges


def find_overlaps(items: list[tuple[int, Element]]) -> list[tuple[int, Element, int, Element]]:
    """Pairs of elements (with their owners' indexes) that some packet would match both.

    Each (zone, family, protocol) group is a set of boxes for `box_overlaps`.
    """
    found: list[tuple[int, Element, int, Element]] = []
    groups: dict[tuple, list[tuple[int, Element]]] = defaultdict(list)
    for owner, el in items:
        groups[(el.zone, el.family, el.service.proto)].append((owner, el))
    for group in groups.values():
        boxes = [(_span(el.src), _span(el.dst), (el.service.lo, el.service.hi)) for _, el in group]
        for i, j in box_overlaps(boxes, MAX_REPORTED - len(found)):
            found.append((*group[i], *group[j]))
        if len(found) >= MAX_REPORTED:
            break
    return found


def box_overlaps(boxes: list[Box], limit: int = MAX_REPORTED) -> list[tuple[int, int]]:
    """Index pairs of boxes that share a point: none exactly when the boxes are disjoint.

    The port axis is cut into elementary ranges (between consecutive ends); the boxes
    covering one range are checked by `_sweep`. At most `limit` pairs, each once.
    """
    if len(boxes) < 2 or limit <= 0:
        return []
    cuts = sorted({b[2][0] for b in boxes} | {b[2][1] + 1 for b in boxes})
    at: list[list[int]] = [[] for _ in cuts]
    for k, b in enumerate(boxes):
        for a in range(bisect.bisect_left(cuts, b[2][0]), bisect.bisect_left(cuts, b[2][1] + 1)):
            at[a].append(k)
    found: list[tuple[int, int]] = []
    seen: set[tuple[int, int]] = set()
    previous: list[int] = []
    for members in at:
        if len(members) < 2 or members == previous:
            continue  # a range covered by the same boxes as the last one has nothing new
        previous = members
        for i, j in _sweep(boxes, members):
            if (i, j) not in seen:
                seen.add((i, j))
                found.append((i, j))
                if len(found) >= limit:
                    return found
    return found


def _sweep(boxes: list[Box], members: list[int]) -> list[tuple[int, int]]:
    """Pairs among `members` whose source and destination ranges both meet (O(n log n)).

    Sweeps the source axis keeping the active destination ranges sorted: all active
    boxes share the current source point, so while no overlap has been found their
    destinations are pairwise disjoint and checking the two neighbours is enough. A box
    that overlaps one is reported and not added, which keeps that invariant.
    """
    found: list[tuple[int, int]] = []
    ends: list[tuple[int, int]] = []  # heap of (src_hi, k)
    active: list[tuple[int, int, int]] = []  # sorted (dst_lo, dst_hi, k)
    for k in sorted(members, key=lambda m: boxes[m][0][0]):
        (s_lo, s_hi), (d_lo, d_hi), _ = boxes[k]
        while ends and ends[0][0] < s_lo:
            _, gone = heapq.heappop(ends)
            g_lo, g_hi = boxes[gone][1]
            pos = bisect.bisect_left(active, (g_lo, g_hi, gone))
            if pos < len(active) and active[pos][2] == gone:
                active.pop(pos)
        pos = bisect.bisect_left(active, (d_lo, -1, -1))
        hit = None
        if pos > 0 and active[pos - 1][1] >= d_lo:
            hit = active[pos - 1][2]
        elif pos < len(active) and active[pos][0] <= d_hi:
            hit = active[pos][2]
        if hit is not None:
            found.append((hit, k))
            if len(found) >= MAX_REPORTED:
                break
            continue
        active.insert(pos, (d_lo, d_hi, k))
        heapq.heappush(ends, (s_hi, k))
    return found


class _Sides:
    """Which interface subnet (or network routed out of it) of a role holds a network: one
    look-up per prefix length in use."""

    def __init__(self, config: Config) -> None:
        self._nets: dict[tuple[str, int], dict[tuple[int, int], tuple[int, str, IPNet]]] = (
            defaultdict(dict)
        )
        order = 0
        for i in config.links():
            # a network behind a router on an interface (its static routes) is on its side
            for net in [a.network for a in i.addresses] + [r.to for r in i.routes]:
                order += 1
                key = _prefix_key(net.network_address, net.prefixlen, net.max_prefixlen)
                self._nets[(i.role, net.version)].setdefault(key, (order, i.name, net))
        self._plens = {k: sorted({p for _, p in v}) for k, v in self._nets.items()}

    def find(self, addr: IPNet, role: str) -> str | None:
        """`name subnet` of the first (in document order) `role` subnet holding addr, or None."""
        nets = self._nets.get((role, addr.version))
        if not nets:
            return None
        best = None
        for plen in self._plens[(role, addr.version)]:
            if plen > addr.prefixlen:
                break
            hit = nets.get(_prefix_key(addr.network_address, plen, addr.max_prefixlen))
            if hit is not None and (best is None or hit < best):
                best = hit
        return None if best is None else f"{best[1]} {best[2]}"


def _prefix_key(address: object, plen: int, bits: int) -> tuple[int, int]:
    return int(address) >> (bits - plen), plen  # type: ignore[call-overload]


def check(config: Config, now: datetime | None = None) -> tuple[list[Finding], list[Finding]]:
    """Errors and warnings about the whole document, each with the path it concerns."""
    errors: list[Finding] = []
    warnings: list[Finding] = []
    _check_interfaces(config, errors)
    _check_vlans(config, errors, warnings)
    _check_dhcp(config, errors, warnings)
    _check_bridge(config, errors)
    _check_flow_count(config, errors)
    _check_conduits(config, now, errors, warnings)
    _check_nat(config, errors, warnings)
    check_field(config.devices, errors, warnings)
    return errors, warnings


MAX_FLOWS = 200_000  # kernel set elements the ruleset may hold: 10,000 conduits apply in 0.15 s


def flow_count(conduit: Conduit) -> int:
    """How many (src, dst, service) entries the renderer writes for `conduit`, counted
    without building them (len(conduit_elements(conduit)))."""
    by_version = {4: [0, 0], 6: [0, 0]}
    for src in conduit.from_:
        by_version[src.version][0] += 1
    for dst in conduit.to:
        by_version[dst.version][1] += 1
    pairs = sum(a * b for a, b in by_version.values())
    return pairs * len(conduit.parsed_services()) * (2 if conduit.direction == "both" else 1)


def _check_flow_count(config: Config, errors: list[Finding]) -> None:
    """A host list of a thousand times a thousand validates fast, but the kernel would be
    given millions of entries: refuse it with the number, and what to write instead."""
    total = 0
    for i, c in enumerate(config.conduits):
        n = flow_count(c)
        total += n
        if n > MAX_FLOWS:
            errors.append(
                Finding(
                    f"conduits[{i}]",
                    f"{c.name} is {n:,} flows (from x to x services), more than {MAX_FLOWS:,}: "
                    "name networks instead of long host lists",
                )
            )
            return
    if total > MAX_FLOWS:
        errors.append(
            Finding(
                "conduits",
                f"the conduits are {total:,} flows in all (from x to x services), more than "
                f"{MAX_FLOWS:,}: name networks instead of long host lists",
            )
        )


def _dupes(values: list, path: str, what: str, errors: list[Finding]) -> None:
    seen: dict = {}
    for i, v in enumerate(values):
        if v is None:
            continue
        if v in seen:
            first = path.format(seen[v]).rsplit(".", 1)[0]
            errors.append(Finding(path.format(i), f"{what} {v} is already used by {first}"))
        else:
            seen[v] = i


class _SubnetOverlaps:
    """Earlier subnets that meet a new one, in document order, MAX_REPORTED in all.

    Two prefixes meet only when one holds the other: the earlier ones holding the new
    one are found by prefix look-ups, those inside it by bisecting their sorted starts.
    """

    def __init__(self) -> None:
        self.reported = 0
        self._order: dict[tuple[int, int, int], list[int]] = defaultdict(list)
        self._plens: dict[int, set[int]] = defaultdict(set)
        self._starts: dict[int, list[tuple[int, int, int]]] = defaultdict(list)
        self._all: list[tuple[str, IPNet]] = []

    def add(self, where: str, net: IPNet) -> list[tuple[str, IPNet]]:
        out: list[tuple[str, IPNet]] = []
        if self.reported < MAX_REPORTED:
            v, bits, lo, hi = net.version, net.max_prefixlen, *_span(net)
            hits: set[int] = set()
            for plen in self._plens[v]:
                if plen <= net.prefixlen:
                    hits.update(self._order.get((v, *_prefix_key(lo, plen, bits)), ()))
            starts = self._starts[v]
            for s_lo, _, k in starts[bisect.bisect_left(starts, (lo, -1, -1)) :]:
                if s_lo > hi:
                    break
                hits.add(k)
            out = [self._all[k] for k in sorted(hits)[: MAX_REPORTED - self.reported]]
            self.reported += len(out)
        k = len(self._all)
        self._all.append((where, net))
        self._order[
            (net.version, *_prefix_key(net.network_address, net.prefixlen, net.max_prefixlen))
        ].append(k)
        self._plens[net.version].add(net.prefixlen)
        bisect.insort(self._starts[net.version], (int(net.network_address), net.prefixlen, k))
        return out


def _check_interfaces(config: Config, errors: list[Finding]) -> None:
    ifs = config.interfaces
    links = config.link_paths()
    seen_names: dict[str, str] = {}
    for at, link in links:
        if link.name is None:
            continue
        if link.name in seen_names:
            errors.append(
                Finding(
                    f"{at}.name", f"name {link.name} is already used by {seen_names[link.name]}"
                )
            )
        else:
            seen_names[link.name] = at
    _dupes([i.mac for i in ifs], "interfaces[{}].mac", "MAC", errors)
    overlaps = _SubnetOverlaps()
    gateways = {4: None, 6: None}
    routes: dict[object, str] = {}  # network -> where its route is
    own = [a for _, i in links for a in i.addresses]
    for at, iface in links:
        for k, addr in enumerate(iface.addresses):
            for where, other in overlaps.add(iface.name, addr.network):
                errors.append(
                    Finding(
                        f"{at}.addresses[{k}]",
                        f"{addr} overlaps {other} on {where}: each side needs its own subnet",
                    )
                )
        if iface.gateway is not None and not (iface.dhcp and iface.gateway.version == 4):
            gw = iface.gateway  # (a DHCP link's IPv4 gateway is an error of _check_dhcp)
            if not any(gw in a.network for a in iface.addresses if a.version == gw.version):
                errors.append(
                    Finding(f"{at}.gateway", f"{gw} is not in a subnet of {iface.name}'s addresses")
                )
            if gateways[gw.version] is not None:
                errors.append(
                    Finding(
                        f"{at}.gateway",
                        f"only one IPv{gw.version} gateway is allowed "
                        f"({gateways[gw.version]} has one already)",
                    )
                )
            gateways[gw.version] = iface.name  # type: ignore[assignment]
        for k, route in enumerate(iface.routes):
            where = f"{at}.routes[{k}]"
            if route.to.version != route.via.version:
                errors.append(
                    Finding(f"{where}.via", f"{route.via} is not an IPv{route.to.version} address")
                )
            elif not any(route.via in a.network for a in iface.addresses):
                errors.append(
                    Finding(
                        f"{where}.via",
                        f"{route.via} is not in a subnet of {iface.name}'s addresses",
                    )
                )
            elif route.to.prefixlen == 0:
                errors.append(
                    Finding(f"{where}.to", f"{route.to} is the default route: use gateway")
                )
            else:
                seen = routes.setdefault(route.to, where)
                if seen != where:
                    errors.append(
                        Finding(f"{where}.to", f"{route.to} has a route already ({seen})")
                    )
                for a in (a for a in own if a.version == route.to.version):
                    if route.to.overlaps(a.network):
                        errors.append(
                            Finding(
                                f"{where}.to",
                                f"{route.to} overlaps {a.network}, a subnet of the unit's own",
                            )
                        )
                        break


def _check_dhcp(config: Config, errors: list[Finding], warnings: list[Finding]) -> None:
    """A DHCP link takes its default route from the lease: a gateway beside it is an
    error; on OT only when asked for, so with a warning (a DHCP server on a cell network
    is rare, and an OT side that moves its address breaks the PLCs' routes to it)."""
    for at, link in config.link_paths():
        if not link.dhcp:
            continue
        if link.gateway is not None and link.gateway.version == 4:
            errors.append(
                Finding(
                    f"{at}.gateway",
                    f"{link.name} takes its IPv4 gateway from the DHCP lease: remove the gateway "
                    "or dhcp",
                )
            )
        if link.role == "ot":
            warnings.append(
                Finding(
                    f"{at}.dhcp",
                    f"{link.name} is on the OT side: its address comes from a DHCP server and "
                    "may change; OT devices that route through it lose it then",
                )
            )


def _check_bridge(config: Config, errors: list[Finding]) -> None:
    """Bridge mode: the ports are NICs of role it and ot (all of them: the ruleset decides by
    bridge port), at least one of each, carrying nothing of their own (no address, route,
    lease or VLAN: the unit is invisible on them); what needs the routed mode is refused."""
    bridge = config.bridge
    if bridge is None:
        return
    index = {i.name: n for n, i in enumerate(config.interfaces)}
    vlans = {v.name for i in config.interfaces for v in i.vlans}
    if bridge.name in index or bridge.name in vlans:
        errors.append(
            Finding("bridge.name", f"{bridge.name} is already the name of an interface or VLAN")
        )
    for k, port in enumerate(bridge.ports or []):
        where = f"bridge.ports[{k}]"
        if port in vlans:
            errors.append(Finding(where, f"{port} is a VLAN: only a NIC can be a bridge port"))
        elif port not in index:
            errors.append(Finding(where, f"no interface is named {port}"))
        elif config.interfaces[index[port]].role == "mgmt":
            errors.append(
                Finding(where, f"{port} is the management interface: it stays off the bridge")
            )
    ports = config.bridge_ports()
    names = {p.name for p in ports}
    at = "bridge.ports" if bridge.ports is not None else "bridge"
    for role in ("it", "ot"):
        if not any(p.role == role for p in ports):
            errors.append(Finding(at, f"a bridge needs a port with role {role}"))
    for n, iface in enumerate(config.interfaces):
        where = f"interfaces[{n}]"
        if iface.role in ("it", "ot") and iface.name not in names:
            errors.append(
                Finding(
                    where,
                    f"{iface.name} ({iface.role}) is not a bridge port: in bridge mode every "
                    "it and ot interface is one (add it to bridge.ports)",
                )
            )
        if iface.name not in names:
            continue
        own = [
            ("addresses", bool(iface.addresses), "addresses"),
            ("gateway", iface.gateway is not None, "a gateway"),
            ("routes", bool(iface.routes), "routes"),
            ("dhcp", iface.dhcp, "DHCP"),
            ("vlans", bool(iface.vlans), "VLANs"),
            ("allow_in", bool(iface.allow_in), "services of the unit (allow_in)"),
        ]
        for key, present, what in own:
            if present:
                errors.append(
                    Finding(
                        f"{where}.{key}",
                        f"{iface.name} is a bridge port: it carries no {what} "
                        "(the unit is reached on its mgmt interface)",
                    )
                )
    for n, c in enumerate(config.conduits):
        if c.modbus is not None:
            errors.append(
                Finding(
                    f"conduits[{n}].modbus",
                    "a Modbus restriction needs the routed mode (the Modbus proxy is not in "
                    "a bridge's path)",
                )
            )
    nat = config.nat
    if nat.one_to_one or nat.port_forwards or nat.masquerade:
        errors.append(Finding("nat", "NAT needs the routed mode: a bridge does not translate"))


def _check_vlans(config: Config, errors: list[Finding], warnings: list[Finding]) -> None:
    """A VLAN id once per NIC, a name that fits (the default <nic>.<id> may not); a
    warning when a VLAN's role is not its NIC's (two sides share one cable and switch)."""
    for n, iface in enumerate(config.interfaces):
        ids: dict[int, int] = {}
        for k, vlan in enumerate(iface.vlans):
            at = f"interfaces[{n}].vlans[{k}]"
            if vlan.id in ids:
                errors.append(
                    Finding(
                        f"{at}.id",
                        f"VLAN {vlan.id} is already on {iface.name} "
                        f"(interfaces[{n}].vlans[{ids[vlan.id]}])",
                    )
                )
            ids.setdefault(vlan.id, k)
            if vlan.name is None:
                errors.append(
                    Finding(
                        f"{at}.name",
                        f"the default name {iface.name}.{vlan.id} is longer than 15 "
                        "characters: give the VLAN a name",
                    )
                )
            if vlan.mtu is not None and vlan.mtu > (iface.mtu or 1500):
                errors.append(
                    Finding(
                        f"{at}.mtu",
                        f"{vlan.mtu} is more than its NIC's MTU ({iface.mtu or 1500}): "
                        f"raise interfaces[{n}].mtu first",
                    )
                )
            if vlan.role != iface.role and "mgmt" not in (vlan.role, iface.role):
                warnings.append(
                    Finding(
                        f"{at}.role",
                        f"a {vlan.role} VLAN on the {iface.role} NIC {iface.name}: both sides "
                        "share one cable and switch, so the switch is part of the demarcation",
                    )
                )


def _check_conduits(
    config: Config, now: datetime | None, errors: list[Finding], warnings: list[Finding]
) -> None:
    conduits = config.conduits
    _dupes([c.name for c in conduits], "conduits[{}].name", "name", errors)
    if conduits and not (config.interfaces_by_role("it") and config.interfaces_by_role("ot")):
        errors.append(
            Finding("conduits", "conduits need an interface with role it and one with role ot")
        )
    sides = _Sides(config)
    active: list[tuple[int, Conduit]] = []
    for n, c in enumerate(conduits):
        for k, src in enumerate(c.from_):
            where = sides.find(src, "ot")
            if where:
                errors.append(
                    Finding(
                        f"conduits[{n}].from[{k}]",
                        f"{src} is on the OT side ({where}); `from` lists IT hosts",
                    )
                )
        for k, dst in enumerate(c.to):
            where = sides.find(dst, "it") or sides.find(dst, "mgmt")
            if where:
                errors.append(
                    Finding(
                        f"conduits[{n}].to[{k}]",
                        f"{dst} is not on the OT side ({where}); `to` lists OT hosts",
                    )
                )
        if not (c.parsed_services() and {x.version for x in c.from_} & {x.version for x in c.to}):
            errors.append(
                Finding(
                    f"conduits[{n}]",
                    "no address in `from` has the same IP version as one in `to`",
                )
            )
        if now is not None and c.expires is not None and c.expires <= now:
            warnings.append(Finding(f"conduits[{n}].expires", "already expired: passes nothing"))
        if c.modbus is not None:
            _check_modbus(n, c, errors, warnings)
        if c.enabled and (now is None or c.active(now)):
            active.append((n, c))
    for a_owner, a, b_owner, b in conduit_overlaps(active):
        lo, hi = sorted((a_owner, b_owner))
        first, second = (a, b) if a_owner == lo else (b, a)
        if lo == hi:
            msg = f"two of its entries overlap ({first.describe()} and {second.describe()})"
        else:
            msg = (
                f"overlaps conduit {conduits[lo].name!r} (conduits[{lo}]) on "
                f"{second.describe()}: a flow must belong to exactly one conduit"
            )
        errors.append(Finding(f"conduits[{hi}]", msg))


def carries_modbus(conduit: Conduit) -> bool:
    """Whether the conduit's services include Modbus (tcp/502)."""
    return any(s.proto == "tcp" and s.lo <= MODBUS_PORT <= s.hi for s in conduit.parsed_services())


def _check_modbus(n: int, c: Conduit, errors: list[Finding], warnings: list[Finding]) -> None:
    """A Modbus restriction applies to the tcp/502 connections a conduit opens from IT (the
    modbusproxy role sees them); IPv4 only for now (the proxy's transparent socket is)."""
    where = f"conduits[{n}].modbus"
    if not carries_modbus(c):
        errors.append(
            Finding(where, "restricts Modbus, but the conduit's services do not include modbus")
        )
    if c.direction == "both":
        errors.append(
            Finding(
                f"conduits[{n}].direction",
                "a conduit with a Modbus restriction is one-way (the restriction checks the "
                "requests of connections opened from IT)",
            )
        )
    for key, nets in (("from", c.from_), ("to", c.to)):
        for k, net in enumerate(nets):
            if net.version != 4:
                errors.append(
                    Finding(
                        f"conduits[{n}].{key}[{k}]",
                        f"{net} is IPv6: a Modbus restriction is IPv4 only for now",
                    )
                )
    m = c.modbus
    assert m is not None
    if m.ranges is None:
        return
    for code in sorted(m.allowed_function_codes()):
        table = TABLE_OF.get(code)
        if table is not None and m.ranges.of(table) == []:
            warnings.append(
                Finding(
                    f"{where}.ranges",
                    f"function code {code} ({FUNCTION_CODES[code]}) uses the {table} table, "
                    "which `ranges` does not list: every such request is refused",
                )
            )


# -- one owner per flow, without listing the flows --------------------------------
#
# A conduit allows the product of its lists, `from` x `to` x services (see
# `conduit_elements`), which for long host lists is millions of elements. The overlap
# check never builds it. Per (zone, family, protocol) a conduit is a `_Part`: three
# lists, one per axis. Two elements of one part meet exactly when, on some axis, two
# of its entries meet (the other axes can then take the same entry). Two parts meet
# exactly when on every axis an entry of one meets an entry of the other: the axes
# are independent. So each axis is cut into the elementary ranges between entries'
# ends, a part's entries on that axis become runs of consecutive covered ranges (a
# host list with no other conduit's host in between is one run), and a part becomes
# the product of its runs: usually one box. Those boxes go to `box_overlaps`. A part
# whose runs still multiply to more than BOX_LIMIT boxes (lists interleaved with
# another conduit's on two axes) is instead compared with each other part axis by
# axis, in O(entries x log entries) per pair.

BOX_LIMIT = 4096


def conduit_overlaps(
    conduits: list[tuple[int, Conduit]],
) -> list[tuple[int, Element, int, Element]]:
    """What `find_overlaps` finds among the conduits' elements, without building them.

    Some pair exactly when some two elements (of one conduit or two) meet; each pair
    reported is two elements of its owners' `conduit_elements` that meet. At most
    MAX_REPORTED pairs, one per pair of conduits and (zone, family, protocol).
    """
    groups: dict[tuple[str, int, str], list[_Part]] = defaultdict(list)
    for n, c in conduits:
        for part in _parts(n, c):
            groups[part.key].append(part)
    found: list[tuple[int, Element, int, Element]] = []
    for group in groups.values():
        found.extend(_group_overlaps(group, MAX_REPORTED - len(found)))
        if len(found) >= MAX_REPORTED:
            break
    return found


@dataclass
class _Part:
    owner: int
    key: tuple[str, int, str]  # zone, family, protocol
    axes: tuple[list[IPNet], list[IPNet], list[Service]]  # source, destination, service

    def spans(self, axis: int) -> list[Span]:
        if axis == 2:
            return [(s.lo, s.hi) for s in self.axes[2]]  # type: ignore[union-attr]
        return [_span(net) for net in self.axes[axis]]  # type: ignore[arg-type]

    def element(self, point: tuple[int, int, int]) -> Element:
        """The element of this part that holds point (source, destination, port)."""
        picked = [
            next(
                x
                for x, (lo, hi) in zip(self.axes[a], self.spans(a), strict=True)
                if lo <= point[a] <= hi
            )
            for a in range(3)
        ]
        return Element(self.key[0], picked[0], picked[1], picked[2])  # type: ignore[arg-type]


def _parts(n: int, c: Conduit) -> list[_Part]:
    """The conduit's elements by (zone, family, protocol), each as its three lists."""
    services: dict[str, list[Service]] = defaultdict(list)
    for svc in c.parsed_services():
        services[svc.proto].append(svc)
    out: list[_Part] = []
    zones = ("it_ot", "ot_it") if c.direction == "both" else ("it_ot",)
    for zone in zones:
        for family in (4, 6):
            src = [x for x in c.from_ if x.version == family]
            dst = [x for x in c.to if x.version == family]
            if not (src and dst):
                continue
            if zone == "ot_it":
                src, dst = dst, src
            for proto, svcs in services.items():
                out.append(_Part(n, (zone, family, proto), (src, dst, svcs)))
    return out


def _meeting_pair(spans: list[Span]) -> tuple[int, int] | None:
    """Positions (in list order) of two entries that meet, or None if all are disjoint."""
    order = sorted(range(len(spans)), key=lambda k: spans[k])
    widest = None
    for k in order:
        if widest is not None and spans[k][0] <= spans[widest][1]:
            return min(widest, k), max(widest, k)
        if widest is None or spans[k][1] > spans[widest][1]:
            widest = k
    return None


def _group_overlaps(group: list[_Part], limit: int) -> list[tuple[int, Element, int, Element]]:
    found: list[tuple[int, Element, int, Element]] = []
    if limit <= 0:
        return found
    for part in group:  # two elements of one conduit
        for axis in range(3):
            pair = _meeting_pair(part.spans(axis))
            if pair is None:
                continue
            a, b = ([x[0] for x in part.axes], [x[0] for x in part.axes])
            a[axis], b[axis] = part.axes[axis][pair[0]], part.axes[axis][pair[1]]
            zone = part.key[0]
            found.append((part.owner, Element(zone, *a), part.owner, Element(zone, *b)))  # type: ignore[arg-type]
            if len(found) >= limit:
                return found
            break
    # elements of two conduits: the parts' runs over the elementary ranges of each axis
    runs, starts = zip(*(_runs([p.spans(axis) for p in group]) for axis in range(3)), strict=True)
    boxes: list[Box] = []
    box_part: list[int] = []
    big: list[int] = []
    for k in range(len(group)):
        rs, rd, rp = runs[0][k], runs[1][k], runs[2][k]
        if len(rs) * len(rd) * len(rp) > BOX_LIMIT:
            big.append(k)
            continue
        for s in rs:
            for d in rd:
                for p in rp:
                    boxes.append((s, d, p))
                    box_part.append(k)
    meets: list[tuple[int, int, tuple[int, int, int]]] = []
    for i, j in box_overlaps(boxes, limit):
        a, b = boxes[i], boxes[j]
        point = (max(a[0][0], b[0][0]), max(a[1][0], b[1][0]), max(a[2][0], b[2][0]))
        meets.append((box_part[i], box_part[j], point))
    lows = [[[lo for lo, _ in r] for r in axis_runs] if big else [] for axis_runs in runs]
    for x in big:
        for y in range(len(group)):
            if y == x or (y in big and y < x):
                continue
            point = []
            for axis in range(3):
                common = _common(runs[axis][x], lows[axis][x], runs[axis][y], lows[axis][y])
                if common is None:
                    break
                point.append(common)
            else:
                meets.append((x, y, tuple(point)))  # type: ignore[arg-type]
                if len(meets) >= limit:
                    break
        if len(meets) >= limit:
            break
    reported: set[tuple[int, int]] = set()
    for x, y, point in meets:
        if (x, y) in reported or (y, x) in reported:
            continue  # one line per pair of conduits in a group
        reported.add((x, y))
        at = (starts[0][point[0]], starts[1][point[1]], starts[2][point[2]])
        found.append((group[x].owner, group[x].element(at), group[y].owner, group[y].element(at)))
        if len(found) >= limit:
            break
    return found


def _runs(per_part: list[list[Span]]) -> tuple[list[list[Span]], list[int]]:
    """Each part's entries on one axis as disjoint runs of covered elementary ranges.

    Ranges are numbered among those some entry covers (so a gap no entry covers does
    not split a run); a run (i, j) is ranges i..j inclusive. Also returns each covered
    range's first coordinate, to map a range number back to an address or port.
    """
    cuts = sorted(
        {lo for spans in per_part for lo, _ in spans}
        | {hi + 1 for spans in per_part for _, hi in spans}
    )
    depth = [0] * (len(cuts) + 1)
    cut_ranges: list[list[tuple[int, int]]] = []
    for spans in per_part:
        ranges = []
        for lo, hi in spans:
            a, b = bisect.bisect_left(cuts, lo), bisect.bisect_left(cuts, hi + 1)
            depth[a] += 1
            depth[b] -= 1
            ranges.append((a, b))
        cut_ranges.append(ranges)
    number = [0] * (len(cuts) + 1)  # covered ranges before each elementary range
    starts: list[int] = []
    covering = 0
    for i in range(len(cuts)):
        number[i] = len(starts)
        covering += depth[i]
        if covering > 0:
            starts.append(cuts[i])
    number[len(cuts)] = len(starts)
    out: list[list[Span]] = []
    for ranges in cut_ranges:
        merged: list[list[int]] = []
        for a, b in sorted((number[a], number[a] + b - a) for a, b in ranges):
            if merged and a <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], b)
            else:
                merged.append([a, b])
        out.append([(a, b - 1) for a, b in merged])
    return out, starts


def _common(a: list[Span], a_los: list[int], b: list[Span], b_los: list[int]) -> int | None:
    """A point in both sorted lists of disjoint runs (`*_los`: their starts), or None.

    Bisects the longer list once per run of the shorter one.
    """
    if len(a) > len(b):
        a, b, b_los = b, a, a_los
    los = b_los
    for lo, hi in a:
        k = bisect.bisect_right(los, hi) - 1
        if k >= 0 and b[k][1] >= lo:
            return max(lo, b[k][0])
    return None


def _check_nat(config: Config, errors: list[Finding], warnings: list[Finding]) -> None:
    sides = _Sides(config)
    own = {a.ip for i in config.links() for a in i.addresses}
    _dupes(
        [o.it_address for o in config.nat.one_to_one],
        "nat.one_to_one[{}].it_address",
        "address",
        errors,
    )
    for n, o in enumerate(config.nat.one_to_one):
        net = ipaddress.ip_network(o.it_address)
        if o.it_address in own:
            errors.append(
                Finding(f"nat.one_to_one[{n}].it_address", f"{o.it_address} is the appliance's own")
            )
        elif not sides.find(net, "it"):
            errors.append(
                Finding(
                    f"nat.one_to_one[{n}].it_address",
                    f"{o.it_address} is not in a subnet of an IT interface",
                )
            )
        if sides.find(ipaddress.ip_network(o.ot_address), "it"):
            errors.append(
                Finding(f"nat.one_to_one[{n}].ot_address", f"{o.ot_address} is on the IT side")
            )
    _dupes(
        [f"{p.protocol}/{p.port}" for p in config.nat.port_forwards],
        "nat.port_forwards[{}].port",
        "protocol/port",
        errors,
    )
    it_services = {s for i in config.interfaces_by_role("it") for s in config.effective_allow_in(i)}
    # The IPv4 IT→OT destinations of every conduit (as conduit_elements has them: a
    # conduit with an IPv4 source), keyed by prefix, with the services allowed there.
    allowed: dict[tuple[int, int], set[Service]] = defaultdict(set)
    for c in config.conduits:
        if any(src.version == 4 for src in c.from_):
            services = c.parsed_services()
            for dst in c.to:
                if dst.version == 4:
                    allowed[_prefix_key(dst.network_address, dst.prefixlen, 32)].update(services)
    plens = sorted({plen for _, plen in allowed})
    for n, p in enumerate(config.nat.port_forwards):
        for s in it_services:
            if s.proto == p.protocol and s.lo <= p.port <= s.hi:
                errors.append(
                    Finding(
                        f"nat.port_forwards[{n}].port",
                        f"{p.protocol}/{p.port} is a service the appliance itself answers on "
                        "the IT side",
                    )
                )
        if not config.interfaces_by_role("it"):
            errors.append(Finding(f"nat.port_forwards[{n}]", "needs an interface with role it"))
        target = ipaddress.ip_network(p.to_address)
        port = p.to_port or p.port
        if not any(
            s.proto == p.protocol and s.lo <= port <= s.hi
            for plen in plens
            if plen <= target.prefixlen
            for s in allowed.get(_prefix_key(target.network_address, plen, 32), ())
        ):
            warnings.append(
                Finding(
                    f"nat.port_forwards[{n}]",
                    f"no conduit allows {p.protocol}/{port} to {p.to_address}: "
                    "its traffic will be dropped",
                )
            )
