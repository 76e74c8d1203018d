"""Rules across the document: sides of addresses, unique names, one owner per flow.

`conduit_elements` is the single definition of what a conduit lets through; the
overlap check and the ruleset renderer both use it, so they cannot disagree.
"""

from __future__ import annotations

import bisect
import heapq
import ipaddress
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from appliance.config.model import Conduit, Config, IPNet
from appliance.config.services import Service

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


@dataclass(frozen=True)
class Finding:
    path: str
    message: str


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
    return int(net.network_address), int(net.broadcast_address)


def _overlap(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] <= b[1] and b[0] <= a[1]


def find_overlaps(items: list[tuple[int, Element]]) -> list[tuple[int, Element, int, Element]]:
    """Pairs of elements (with their owners' indexes) that some packet would match both.

    Groups by (zone, family, protocol), clusters port ranges that touch, and within
    a cluster of identical port ranges sweeps the source axis keeping the active
    destination intervals sorted: those are pairwise disjoint while no overlap has
    been found, so checking the two neighbours is enough (O(n log n)). Clusters of
    differing port ranges (rare) are compared pairwise.
    """
    found: list[tuple[int, Element, int, Element]] = []
    groups: dict[tuple, list[tuple[int, Element]]] = defaultdict(list)
    for owner, el in items:
        groups[(el.zone, el.family, el.service.proto)].append((owner, el))
    for group in groups.values():
        group.sort(key=lambda it: (it[1].service.lo, it[1].service.hi))
        cluster: list[tuple[int, Element]] = []
        hi = -1
        for it in [*group, None]:
            if it is None or (cluster and it[1].service.lo > hi):
                _check_cluster(cluster, found)
                if len(found) >= MAX_REPORTED or it is None:
                    break
                cluster, hi = [], -1
            cluster.append(it)
            hi = max(hi, it[1].service.hi)
        if len(found) >= MAX_REPORTED:
            break
    return found[:MAX_REPORTED]


def _check_cluster(cluster: list[tuple[int, Element]], found: list) -> None:
    if len(cluster) < 2:
        return
    first = cluster[0][1].service
    if any(el.service != first for _, el in cluster):
        for i, (oa, a) in enumerate(cluster):
            for ob, b in cluster[i + 1 :]:
                if (
                    _overlap((a.service.lo, a.service.hi), (b.service.lo, b.service.hi))
                    and _overlap(_span(a.src), _span(b.src))
                    and _overlap(_span(a.dst), _span(b.dst))
                ):
                    found.append((oa, a, ob, b))
                    if len(found) >= MAX_REPORTED:
                        return
        return
    order = sorted(range(len(cluster)), key=lambda k: _span(cluster[k][1].src)[0])
    ends: list[tuple[int, int]] = []  # heap of (src_hi, k)
    active: list[tuple[int, int, int]] = []  # sorted (dst_lo, dst_hi, k)
    for k in order:
        owner, el = cluster[k]
        s_lo, s_hi = _span(el.src)
        while ends and ends[0][0] < s_lo:
            _, gone = heapq.heappop(ends)
            g_lo, g_hi = _span(cluster[gone][1].dst)
            pos = bisect.bisect_left(active, (g_lo, g_hi, gone))
            if pos < len(active) and active[pos][2] == gone:
                active.pop(pos)
        d_lo, d_hi = _span(el.dst)
        pos = bisect.bisect_left(active, (d_lo, -1, -1))
        hit = None
        if pos > 0 and active[pos - 1][1] >= d_lo:
            hit = active[pos - 1][2]
        elif pos < len(active) and active[pos][0] <= d_hi:
            hit = active[pos][2]
        if hit is not None:
            found.append((cluster[hit][0], cluster[hit][1], owner, el))
            if len(found) >= MAX_REPORTED:
                return
            continue
        active.insert(pos, (d_lo, d_hi, k))
        heapq.heappush(ends, (s_hi, k))


def _side_of(config: Config) -> list[tuple[str, str, IPNet]]:
    """(role, interface name, connected network) for every configured address."""
    return [(i.role, i.name, a.network) for i in config.interfaces for a in i.addresses]


def _on_side(addr: IPNet, sides: list[tuple[str, str, IPNet]], role: str) -> str | None:
    for r, name, net in sides:
        if r == role and addr.version == net.version and addr.subnet_of(net):  # type: ignore[arg-type]
            return f"{name} {net}"
    return None


def check(config: Config, now: datetime | None = None) -> tuple[list[Finding], list[Finding]]:
    """Errors and warnings about the whole document, each with the path it concerns."""
    errors: list[Finding] = []
    warnings: list[Finding] = []
    _check_interfaces(config, errors)
    _check_conduits(config, now, errors, warnings)
    _check_nat(config, errors, warnings)
    from appliance.field.model import check_field

    check_field(config, errors, warnings)
    return errors, warnings


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


def _check_interfaces(config: Config, errors: list[Finding]) -> None:
    ifs = config.interfaces
    _dupes([i.name for i in ifs], "interfaces[{}].name", "name", errors)
    _dupes([i.mac for i in ifs], "interfaces[{}].mac", "MAC", errors)
    nets: list[tuple[str, IPNet]] = []
    gateways = {4: None, 6: None}
    for n, iface in enumerate(ifs):
        for k, addr in enumerate(iface.addresses):
            for where, other in nets:
                if addr.network.version == other.version and addr.network.overlaps(other):  # type: ignore[arg-type]
                    errors.append(
                        Finding(
                            f"interfaces[{n}].addresses[{k}]",
                            f"{addr} overlaps {other} on {where}: each side needs its own subnet",
                        )
                    )
            nets.append((iface.name, addr.network))
        if iface.gateway is not None:
            gw = iface.gateway
            if not any(gw in a.network for a in iface.addresses if a.version == gw.version):
                errors.append(
                    Finding(
                        f"interfaces[{n}].gateway",
                        f"{gw} is not in a subnet of {iface.name}'s addresses",
                    )
                )
            if gateways[gw.version] is not None:
                errors.append(
                    Finding(
                        f"interfaces[{n}].gateway",
                        f"only one IPv{gw.version} gateway is allowed "
                        f"({gateways[gw.version]} has one already)",
                    )
                )
            gateways[gw.version] = iface.name  # type: ignore[assignment]


def _check_conduits(
    config: Config, now: datetime | None, errors: list[Finding], warnings: list[Finding]
) -> None:
    conduits = config.conduits
    _dupes([c.name for c in conduits], "conduits[{}].name", "name", errors)
    if conduits and not (config.interfaces_by_role("it") and config.interfaces_by_role("ot")):
        errors.append(
            Finding("conduits", "conduits need an interface with role it and one with role ot")
        )
    sides = _side_of(config)
    items: list[tuple[int, Element]] = []
    for n, c in enumerate(conduits):
        for k, src in enumerate(c.from_):
            where = _on_side(src, sides, "ot")
            if where:
                errors.append(
                    Finding(
                        f"conduits[{n}].from[{k}]",
                        f"{src} is on the OT side ({where}); `from` lists IT hosts",
                    )
                )
        for k, dst in enumerate(c.to):
            where = _on_side(dst, sides, "it") or _on_side(dst, sides, "mgmt")
            if where:
                errors.append(
                    Finding(
                        f"conduits[{n}].to[{k}]",
                        f"{dst} is not on the OT side ({where}); `to` lists OT hosts",
                    )
                )
        elements = conduit_elements(c)
        if not elements:
            errors.append(
                Finding(
                    f"conduits[{n}]",
                    "no address in `from` has the same IP version as one in `to`",
                )
            )
        if now is not None and c.expires is not None and c.expires <= now:
            warnings.append(Finding(f"conduits[{n}].expires", "already expired: passes nothing"))
        if c.enabled and (now is None or c.active(now)):
            items.extend((n, el) for el in elements)
    for a_owner, a, b_owner, b in find_overlaps(items):
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


def _check_nat(config: Config, errors: list[Finding], warnings: list[Finding]) -> None:
    sides = _side_of(config)
    own = {a.ip for i in config.interfaces for a in i.addresses}
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
        elif not _on_side(net, sides, "it"):
            errors.append(
                Finding(
                    f"nat.one_to_one[{n}].it_address",
                    f"{o.it_address} is not in a subnet of an IT interface",
                )
            )
        if _on_side(ipaddress.ip_network(o.ot_address), sides, "it"):
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
            el.zone == "it_ot"
            and el.service.proto == p.protocol
            and el.service.lo <= port <= el.service.hi
            and target.subnet_of(el.dst)  # type: ignore[arg-type]
            for c in config.conduits
            for el in conduit_elements(c)
            if el.family == 4
        ):
            warnings.append(
                Finding(
                    f"nat.port_forwards[{n}]",
                    f"no conduit allows {p.protocol}/{port} to {p.to_address}: "
                    "its traffic will be dropped",
                )
            )
