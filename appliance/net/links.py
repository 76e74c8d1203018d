"""pyroute2 adapter: the only module that talks netlink (links, addresses, routes, events).

The net role owns the NICs named in the configuration: it finds each by MAC
(renaming it to its configured name) or by name, sets MTU and addresses,
brings it up and keeps the default route. A DHCP link's lease (`appliance.net.dhcp`) is
applied here too: its address with the lease's lifetime, and the default route via its
router when the document names no IPv4 gateway. Links it does not own are not touched.
It also reads what netlink says about every link of the namespace (`Links.nics`), for
the port list (`appliance.net.ports`).
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import select
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from appliance.config.model import Config, Interface, Link, Vlan
from appliance.errors import ApplyFailed
from appliance.net.dhcp import Lease
from appliance.net.render import TPROXY_MARK, TPROXY_TABLE

# bridge mode: bit 14 of a bridge's group_fwd_mask forwards 01:80:c2:00:00:0e (LLDP), which
# a Linux bridge otherwise keeps to itself; STP BPDUs are forwarded by a bridge whose own
# spanning tree is off (stp_state 0), and then the ruleset decides (pass_l2.stp)
LLDP_FWD_MASK = 1 << 0x0E

log = logging.getLogger(__name__)

PROTO_STATIC = 4
PROTO_DHCP = 16  # RTPROT_DHCP: the default route a lease gave
RTN_LOCAL = 2
TPROXY_RULE_PRIO = 100  # before main (32766): marked packets find the local route first
IFF_UP = 0x1
IFF_LOOPBACK = 0x8
# The counters of a port (IFLA_STATS64 names), in the order people read them.
COUNTERS = (
    "rx_bytes",
    "rx_packets",
    "rx_errors",
    "rx_dropped",
    "tx_bytes",
    "tx_packets",
    "tx_errors",
    "tx_dropped",
)


@dataclass(frozen=True)
class NicFacts:
    """What netlink says about one link of the namespace (any link: `ports` picks the NICs)."""

    index: int
    name: str
    mac: str | None
    kind: str | None  # IFLA_INFO_KIND of a virtual link (veth, bridge, vlan...); None: hardware
    loopback: bool
    admin_up: bool
    carrier: bool
    operstate: str  # UP, DOWN, LOWERLAYERDOWN, UNKNOWN... (RFC 2863, as the kernel says)
    counters: dict[str, int]
    # the device the link sits on, as the kernel names it (IFLA_PARENT_DEV_NAME/_BUS_NAME):
    # e.g. ("0000:02:00.0", "pci") or ("virtio2", "virtio"); None for virtual links
    parent: str | None = None
    parent_bus: str | None = None


@dataclass
class LinkObs:
    """What the kernel says about one configured NIC."""

    name: str
    role: str
    present: bool
    mac: str | None = None
    admin_up: bool = False
    oper: str = "absent"
    carrier: bool = False
    addresses: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def desired_addresses(config: Config, iface: Link) -> list[str]:
    """Configured addresses plus the IT-side stand-ins of 1:1 NAT (pure)."""
    out = [str(a) for a in iface.addresses]
    if iface.role == "it":
        for o in config.nat.one_to_one:
            for a in iface.addresses:
                if o.it_address in a.network:
                    out.append(f"{o.it_address}/32")
                    break
    return out


class Links:
    """Netlink access for one network namespace (the one this process is in)."""

    def __init__(self) -> None:
        from pyroute2 import IPRoute
        from pyroute2.netlink.rtnl import (
            RTMGRP_IPV4_IFADDR,
            RTMGRP_IPV6_IFADDR,
            RTMGRP_LINK,
        )

        self._ipr = IPRoute()
        self._events = IPRoute()
        self._events.bind(groups=RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR)
        # the lease each link's address was last given for: (address, when obtained)
        self._leased: dict[str, tuple[str, float]] = {}

    def close(self) -> None:
        self._ipr.close()
        self._events.close()

    def fileno(self) -> int:
        return self._events.fileno()

    def drain(self) -> bool:
        """Read pending link/address events without blocking; True if there were any."""
        seen = False
        while select.select([self._events.fileno()], [], [], 0)[0]:
            self._events.get()
            seen = True
        return seen

    # -- observe -------------------------------------------------------------

    def _links(self) -> list[dict[str, Any]]:
        out = []
        for msg in self._ipr.get_links():
            info = msg.get_attr("IFLA_LINKINFO")
            kind = info.get_attr("IFLA_INFO_KIND") if info is not None else None
            data = info.get_attr("IFLA_INFO_DATA") if kind in ("vlan", "bridge") else None
            br = data if kind == "bridge" and data is not None else None
            out.append(
                {
                    "kind": kind,
                    "link": msg.get_attr("IFLA_LINK"),  # a VLAN's NIC (its index)
                    "master": msg.get_attr("IFLA_MASTER"),  # a bridge port's bridge (index)
                    "vlan_id": data.get_attr("IFLA_VLAN_ID")
                    if data is not None and kind == "vlan"
                    else None,
                    # a bridge's settings: (group_fwd_mask, stp_state, mcast_snooping)
                    "bridge": (
                        br.get_attr("IFLA_BR_GROUP_FWD_MASK"),
                        br.get_attr("IFLA_BR_STP_STATE"),
                        br.get_attr("IFLA_BR_MCAST_SNOOPING"),
                    )
                    if br is not None
                    else None,
                    "index": msg["index"],
                    "name": msg.get("ifname"),
                    "mac": (msg.get("address") or "").lower() or None,
                    "admin_up": bool(msg["flags"] & 1),
                    "oper": msg.get("operstate") or "UNKNOWN",
                    "carrier": bool(msg.get("carrier")),
                    "mtu": msg.get("mtu"),
                }
            )
        return out

    def nics(self) -> list[NicFacts]:
        """Every link of this namespace as netlink reports it (ApplyFailed if it cannot)."""
        from pyroute2.netlink.exceptions import NetlinkError

        try:
            return [nic_facts(msg) for msg in self._ipr.get_links()]
        except (NetlinkError, OSError) as e:
            raise ApplyFailed(f"netlink cannot list the links: {e}")

    def _addresses(self, index: int) -> list[str]:
        out = []
        for msg in self._ipr.get_addr(index=index):
            addr = msg.get("address")
            if addr is None:
                continue
            iface = ipaddress.ip_interface(f"{addr}/{msg['prefixlen']}")
            if iface.version == 6 and iface.ip.is_link_local:
                continue
            out.append(str(iface))
        return out

    def _find(self, iface: Link, links: list[dict[str, Any]]) -> dict[str, Any] | None:
        if iface.mac:  # a VLAN link shares its NIC's MAC: the NIC is the one that is no VLAN
            return next(
                (lk for lk in links if lk["mac"] == iface.mac and lk["kind"] != "vlan"), None
            )
        return next((lk for lk in links if lk["name"] == iface.name), None)

    def observe(self, config: Config) -> list[LinkObs]:
        links = self._links()
        out = []
        for iface in config.links():
            lk = self._find(iface, links)
            if lk is None:
                out.append(LinkObs(iface.name, iface.role, present=False, mac=iface.mac))
                continue
            out.append(
                LinkObs(
                    name=lk["name"],
                    role=iface.role,
                    present=True,
                    mac=lk["mac"],
                    admin_up=lk["admin_up"],
                    oper=lk["oper"],
                    carrier=lk["carrier"],
                    addresses=self._addresses(lk["index"]),
                )
            )
        return out

    # -- act -----------------------------------------------------------------

    def reconcile(
        self, config: Config, leases: dict[str, Lease] | None = None, now: float | None = None
    ) -> list[str]:
        """Make the configured NICs match the document and the DHCP links' `leases` (by
        link name; `now` on the leases' clock); returns what was changed."""
        from pyroute2.netlink.exceptions import NetlinkError

        leases = {
            name: lease
            for name, lease in (leases or {}).items()
            if any(link.name == name and link.dhcp for link in config.links())
        }
        now = time.time() if now is None else now
        changes: list[str] = []
        try:
            links = self._links()
            for iface in config.interfaces:
                lk = self._find(iface, links)
                if lk is None:
                    continue
                changes.extend(self._reconcile_one(config, iface, lk, leases, now))
            vlan_changes, problems = self._vlan_links(config, links)
            if vlan_changes:
                changes.extend(vlan_changes)
                links = self._links()
            for iface in (v for i in config.interfaces for v in i.vlans):
                lk = self._find(iface, links)
                if lk is not None:
                    changes.extend(self._reconcile_one(config, iface, lk, leases, now))
            changes.extend(self._bridge(config, self._links()))
            changes.extend(self._routes(config, links, leases))
            changes.extend(self._static_routes(config, links))
            changes.extend(self._tproxy_route())
        except NetlinkError as e:
            raise ApplyFailed(f"netlink refused a link change: {e}")
        if problems:  # the rest is done; the VLANs the kernel refused are the error
            failed = ApplyFailed("; ".join(problems))
            failed.done = changes  # type: ignore[attr-defined]
            raise failed
        return changes

    def _owned(self, config: Config, links: list[dict[str, Any]]) -> dict[int, Interface]:
        """The document's interfaces by the kernel index of the link each one is."""
        owned: dict[int, Interface] = {}
        for iface in config.interfaces:
            lk = self._find(iface, links)
            if lk is not None:
                owned[lk["index"]] = iface
        return owned

    def _bridge(self, config: Config, links: list[dict[str, Any]]) -> list[str]:
        """Bridge mode: the bridge link (made when missing; spanning tree and multicast
        snooping off, LLDP forwarded when pass_l2.lldp), the ports enslaved and the bridge
        up. A NIC of ours in a bridge it should not be in leaves it, and a bridge that held
        NICs of ours and is no longer wanted (routed again) is deleted, so commit-confirm
        takes the mode back too."""
        changes: list[str] = []
        by_index = {lk["index"]: lk for lk in links}
        owned = self._owned(config, links)
        bridge = config.bridge
        br = None
        if bridge is not None:
            want = (LLDP_FWD_MASK if bridge.pass_l2.lldp else 0, 0, 0)
            br = next((lk for lk in links if lk["name"] == bridge.name), None)
            if br is not None and br["kind"] != "bridge":
                raise ApplyFailed(
                    f"{bridge.name} exists and is not a bridge ({br['kind'] or 'a NIC'}): "
                    "name the bridge otherwise (bridge.name)"
                )
            settings = {
                "br_group_fwd_mask": want[0],
                "br_stp_state": want[1],
                "br_mcast_snooping": want[2],
            }
            if br is None:
                self._ipr.link("add", ifname=bridge.name, kind="bridge", **settings)
                changes.append(f"added bridge {bridge.name}")
                br = next(lk for lk in self._links() if lk["name"] == bridge.name)
            elif br["bridge"] != want:
                self._ipr.link("set", index=br["index"], kind="bridge", **settings)
                lldp = "forwarded" if want[0] else "not forwarded"
                changes.append(f"{bridge.name}: spanning tree off, LLDP {lldp}")
        ports = {p.name for p in config.bridge_ports()}
        left: set[int] = set()
        for idx, iface in owned.items():
            master = by_index[idx]["master"]
            if br is not None and iface.name in ports:
                if master != br["index"]:
                    self._ipr.link("set", index=idx, master=br["index"])
                    changes.append(f"{iface.name}: a port of bridge {br['name']}")
            elif master and by_index.get(master, {}).get("kind") == "bridge":
                self._ipr.link("set", index=idx, master=0)
                changes.append(f"{iface.name}: left bridge {by_index[master]['name']}")
                left.add(master)
        for idx in sorted(left):
            if br is None or idx != br["index"]:
                self._ipr.link("del", index=idx)
                changes.append(f"removed bridge {by_index[idx]['name']}")
        if br is not None and not br["admin_up"]:
            self._ipr.link("set", index=br["index"], state="up")
            changes.append(f"{br['name']}: up")
        return changes

    def _vlan_links(
        self, config: Config, links: list[dict[str, Any]]
    ) -> tuple[list[str], list[str]]:
        """The document's VLANs as links on their NICs: a missing one is added, one with
        another id or NIC is made again, and a VLAN link on a NIC the unit owns that the
        document no longer names goes (so commit-confirm takes VLANs back too). Returns
        what changed and the VLANs the kernel would not make (the others are made)."""
        from pyroute2.netlink.exceptions import NetlinkError

        changes: list[str] = []
        problems: list[str] = []
        by_index = {lk["index"]: lk for lk in links}
        owned = self._owned(config, links)
        want: dict[str, tuple[Vlan, int]] = {}
        for idx, iface in owned.items():
            for vlan in iface.vlans:
                if vlan.name is not None:
                    want[vlan.name] = (vlan, idx)
        for lk in links:
            if lk["kind"] != "vlan" or lk["link"] not in owned:
                continue
            wanted = want.get(lk["name"])
            if wanted is None or (wanted[0].id, wanted[1]) != (lk["vlan_id"], lk["link"]):
                self._ipr.link("del", index=lk["index"])
                parent = by_index[lk["link"]]["name"]
                changes.append(f"removed VLAN {lk['vlan_id']} ({lk['name']} on {parent})")
                lk["name"] = None  # gone: made again below when wanted
        names = {lk["name"] for lk in links}
        for name, (vlan, idx) in want.items():
            if name in names:
                continue
            try:
                self._ipr.link("add", ifname=name, kind="vlan", link=idx, vlan_id=vlan.id)
            except NetlinkError as e:
                problems.append(f"{name}: VLAN {vlan.id} on {vlan.parent} {_vlan_refusal(e)}")
                continue
            changes.append(f"added VLAN {vlan.id} ({name} on {vlan.parent})")
        return changes, problems

    def _reconcile_one(
        self,
        config: Config,
        iface: Link,
        lk: dict[str, Any],
        leases: dict[str, Lease],
        now: float,
    ) -> list[str]:
        changes = []
        idx = lk["index"]
        if lk["name"] != iface.name:
            self._ipr.link("set", index=idx, state="down")
            self._ipr.link("set", index=idx, ifname=iface.name)
            changes.append(f"renamed {lk['name']} to {iface.name}")
            lk["admin_up"] = False
        if iface.mtu and lk["mtu"] != iface.mtu:
            self._ipr.link("set", index=idx, mtu=iface.mtu)
            changes.append(f"{iface.name}: mtu {iface.mtu}")
        want = set(desired_addresses(config, iface))
        lease = leases.get(iface.name) if iface.name else None
        if lease is not None and lease.remaining(now) > 0:
            want.add(lease.address)
        else:
            lease = None
            self._leased.pop(iface.name or "", None)
        have = set(self._addresses(idx))
        for addr in sorted(have - want):
            ip = ipaddress.ip_interface(addr)
            self._ipr.addr("del", index=idx, address=str(ip.ip), prefixlen=ip.network.prefixlen)
            changes.append(f"{iface.name}: removed {addr}")
        for addr in sorted(want - have - ({lease.address} if lease else set())):
            ip = ipaddress.ip_interface(addr)
            kw: dict[str, Any] = {}
            if ip.version == 6:
                kw["flags"] = 0x80  # IFA_F_NODAD: the appliance owns this address
            self._ipr.addr(
                "add", index=idx, address=str(ip.ip), prefixlen=ip.network.prefixlen, **kw
            )
            changes.append(f"{iface.name}: added {addr}")
        if lease is not None and (
            self._leased.get(lease.link) != (lease.address, lease.at) or lease.address not in have
        ):
            # the lease's lifetime on the address: the kernel drops it when the lease runs
            # out, even with no net role there to do it
            ip = ipaddress.ip_interface(lease.address)
            left = lease.remaining(now)
            self._ipr.addr(
                "replace",
                index=idx,
                address=str(ip.ip),
                prefixlen=ip.network.prefixlen,
                valid_lft=left,
                preferred_lft=left,
            )
            self._leased[lease.link] = (lease.address, lease.at)
            changes.append(f"{iface.name}: lease {lease.address} for {left} s")
        if not lk["admin_up"]:
            self._ipr.link("set", index=idx, state="up")
            changes.append(f"{iface.name}: up")
        return changes

    def _routes(
        self, config: Config, links: list[dict[str, Any]], leases: dict[str, Lease]
    ) -> list[str]:
        """One default route per IP version: the document's gateway, else (IPv4) the
        router of the first DHCP link in document order whose lease names one on its
        subnet. Ours are proto static (a gateway) or dhcp (a lease's router)."""
        changes = []
        for family, dst in ((4, "0.0.0.0/0"), (6, "::/0")):
            gw = next(
                (
                    (i, str(i.gateway), PROTO_STATIC, None)
                    for i in config.links()
                    if i.gateway and i.gateway.version == family
                ),
                None,
            )
            if gw is None and family == 4:
                gw = _lease_route(config, links, leases, self._find)
            current = [
                r
                for r in self._ipr.get_routes(family=2 if family == 4 else 10)
                if r["dst_len"] == 0 and r.get("table") == 254
            ]
            if gw is None:
                for r in current:
                    if r.get("proto") in (PROTO_STATIC, PROTO_DHCP):
                        self._ipr.route("del", dst=dst, gateway=r.get("gateway"))
                        changes.append(f"removed default route via {r.get('gateway')}")
                continue
            iface, addr, proto, oif = gw
            if any(
                r.get("gateway") == addr and (oif is None or r.get("oif") == oif) for r in current
            ):
                continue
            kw = {"oif": oif} if oif is not None else {}
            self._ipr.route("replace", dst=dst, gateway=addr, proto=proto, **kw)
            via = "the DHCP lease's router " if proto == PROTO_DHCP else ""
            changes.append(f"default route via {via}{addr} ({iface.name})")
        return changes

    def _static_routes(self, config: Config, links: list[dict[str, Any]]) -> list[str]:
        """The interfaces' `routes` in the main table, proto static: a route the document
        no longer has goes (only ours: proto static, not a default route), a missing or
        changed one is (re)placed out of its interface."""
        want: dict[tuple[int, str], tuple[str, int, str]] = {}
        for iface in config.links():
            lk = self._find(iface, links)
            if lk is None:
                continue
            for r in iface.routes:
                want[(r.to.version, str(r.to))] = (str(r.via), lk["index"], iface.name)
        changes = []
        for family, af in ((4, 2), (6, 10)):
            have: dict[str, tuple[str | None, int | None]] = {}
            for r in self._ipr.get_routes(family=af, table=254):
                if r.get("proto") != PROTO_STATIC or r["dst_len"] == 0:
                    continue
                dst = str(ipaddress.ip_network(f"{r.get_attr('RTA_DST')}/{r['dst_len']}"))
                have[dst] = (r.get_attr("RTA_GATEWAY"), r.get_attr("RTA_OIF"))
            for dst, (gw, _oif) in have.items():
                if (family, dst) not in want:
                    self._ipr.route("del", dst=dst, gateway=gw, proto=PROTO_STATIC, family=af)
                    changes.append(f"removed route to {dst} via {gw}")
            for (fam, dst), (gw, oif, name) in want.items():
                if fam != family or have.get(dst) == (gw, oif):
                    continue
                self._ipr.route(
                    "replace", dst=dst, gateway=gw, oif=oif, proto=PROTO_STATIC, family=af
                )
                changes.append(f"route to {dst} via {gw} ({name})")
        return changes

    def _tproxy_route(self) -> list[str]:
        """The policy route that delivers the connections the ruleset hands to the Modbus
        proxy (nftables `tproxy`, marked `TPROXY_MARK`) to the local socket: `ip rule
        fwmark TPROXY_MARK lookup TPROXY_TABLE` and `local 0.0.0.0/0 dev lo` in that
        table. Held always: it only routes marked packets, and only a restricted conduit
        marks any; without it a restricted conduit passes nothing (fail closed)."""
        changes = []
        rules = self._ipr.get_rules(family=2)
        if not any(
            r.get_attr("FRA_FWMARK") == TPROXY_MARK and r.get_attr("FRA_TABLE") == TPROXY_TABLE
            for r in rules
        ):
            self._ipr.rule(
                "add", fwmark=TPROXY_MARK, table=TPROXY_TABLE, priority=TPROXY_RULE_PRIO, family=2
            )
            changes.append(f"policy rule: fwmark {TPROXY_MARK:#x} lookup {TPROXY_TABLE}")
        routes = self._ipr.get_routes(family=2, table=TPROXY_TABLE)
        if not any(r.get("type") == RTN_LOCAL and r["dst_len"] == 0 for r in routes):
            lo = self._ipr.link_lookup(ifname="lo")[0]
            self._ipr.route(
                "replace",
                dst="0.0.0.0/0",
                oif=lo,
                table=TPROXY_TABLE,
                family=2,
                type="local",
                scope="host",
                proto=PROTO_STATIC,
            )
            changes.append(f"local route in table {TPROXY_TABLE} (the Modbus proxy's)")
        return changes


def _lease_route(
    config: Config,
    links: list[dict[str, Any]],
    leases: dict[str, Lease],
    find: Any,
) -> tuple[Link, str, int, int] | None:
    """The default route a lease gives: (link, router, proto, oif), or None."""
    for link in config.links():
        lease = leases.get(link.name or "")
        if lease is None or lease.router is None:
            continue
        net = ipaddress.ip_interface(lease.address).network
        lk = find(link, links)
        if lk is None or ipaddress.ip_address(lease.router) not in net:
            continue
        return link, lease.router, PROTO_DHCP, lk["index"]
    return None


def _vlan_refusal(e: Exception) -> str:
    """Why the kernel would not make a VLAN link, as a person reads it."""
    code = getattr(e, "code", None)
    if code in (errno.EOPNOTSUPP, errno.ENODEV) or "Operation not supported" in str(e):
        return "cannot be made: this kernel has no 802.1Q VLAN support (CONFIG_VLAN_8021Q)"
    return f"was refused by the kernel: {e}"


def nic_facts(msg: Any) -> NicFacts:
    """One RTM_NEWLINK message (pyroute2's ifinfmsg) as NicFacts."""
    info = msg.get_attr("IFLA_LINKINFO")
    kind = info.get_attr("IFLA_INFO_KIND") if info is not None else None
    stats = msg.get_attr("IFLA_STATS64") or msg.get_attr("IFLA_STATS")
    counters = {k: int(stats.get(k) or 0) if stats is not None else 0 for k in COUNTERS}
    flags = int(msg["flags"])
    return NicFacts(
        index=int(msg["index"]),
        name=msg.get_attr("IFLA_IFNAME") or f"if{msg['index']}",
        mac=(msg.get_attr("IFLA_ADDRESS") or "").lower() or None,
        kind=kind or None,
        loopback=bool(flags & IFF_LOOPBACK),
        admin_up=bool(flags & IFF_UP),
        carrier=bool(msg.get_attr("IFLA_CARRIER")),
        operstate=msg.get_attr("IFLA_OPERSTATE") or "UNKNOWN",
        counters=counters,
        parent=msg.get_attr("IFLA_PARENT_DEV_NAME") or None,
        parent_bus=msg.get_attr("IFLA_PARENT_DEV_BUS_NAME") or None,
    )


class Forwarding:
    """IP forwarding of this namespace (turned on after our ruleset is in place, never before)."""

    def __init__(self, proc: Path = Path("/proc/sys/net")) -> None:
        self.proc = proc

    def set(self, enabled: bool) -> None:
        value = "1\n" if enabled else "0\n"
        try:
            (self.proc / "ipv4/ip_forward").write_text(value)
            (self.proc / "ipv6/conf/all/forwarding").write_text(value)
        except OSError as e:
            raise ApplyFailed(f"cannot set IP forwarding: {e}")

    def enabled(self) -> bool:
        try:
            return (self.proc / "ipv4/ip_forward").read_text().strip() == "1"
        except OSError:
            return False

    def bridge_filter(self, bridge: str, ports: list[str]) -> list[str]:
        """Bridged IPv4 and IPv6 through the inet hooks (br_netfilter's per-namespace
        sysctls), ARP not (the bridge table decides it); no IPv6 of the unit's own on the
        bridge or its ports (it is invisible there: no link-local address, no router or
        MLD solicitations of its own). Returns what changed; ApplyFailed when this kernel
        has no br_netfilter (then bridged IP is dropped: see render's `l2_decided`)."""
        if not (self.proc / "bridge/bridge-nf-call-iptables").exists():
            raise ApplyFailed(
                "this kernel has no br_netfilter (net.bridge.bridge-nf-call-iptables): "
                "nothing crosses the bridge (bridged IP is dropped unfiltered)"
            )
        want = {
            "bridge/bridge-nf-call-iptables": "1",
            "bridge/bridge-nf-call-ip6tables": "1",
            "bridge/bridge-nf-call-arptables": "0",
            **{f"ipv6/conf/{link}/disable_ipv6": "1" for link in (bridge, *ports)},
        }
        return self._write(want)

    def ipv6_back(self, links: list[str]) -> list[str]:
        """IPv6 on again on links that were bridge ports (the unit routes again)."""
        return self._write({f"ipv6/conf/{link}/disable_ipv6": "0" for link in links})

    def _write(self, want: dict[str, str]) -> list[str]:
        changes = []
        for key, value in want.items():
            path = self.proc / key
            try:
                if path.read_text().strip() != value:
                    path.write_text(value + "\n")
                    changes.append(f"net.{key.replace('/', '.')}={value}")
            except FileNotFoundError:
                continue  # no IPv6 on this kernel, or the link is not there (yet)
            except OSError as e:
                raise ApplyFailed(f"cannot set net.{key.replace('/', '.')}: {e}")
        return changes
