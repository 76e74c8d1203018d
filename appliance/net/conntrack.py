"""Conntrack adapter: cut the established connections of withdrawn conduits, and tell
which conduits' connections are answered.

A ruleset decides *new* connections; conntrack lets established ones go on. When
a conduit is removed, rolled back or expires, its open connections must stop
too, or an expired vendor session would run on for days. After each apply the
net role deletes the conntrack entries of flows that no conduit allows any more.

A conduit whose destination never answers (no ARP reply, no SYN-ACK: the PLC is off or
the address is wrong) still counts packets, which looks healthy. Conntrack knows better:
an entry that saw no packet in the reply direction is an attempt nobody answered.
`answers` counts, per conduit, the tracked connections and those without a reply.

`flows_to_cut` and `answers` are pure; only `Conntrack` talks netlink (pyroute2).
"""

from __future__ import annotations

import ipaddress
import itertools
import socket
from collections.abc import Iterable
from dataclasses import dataclass

from pyroute2.netlink.exceptions import NetlinkError

from appliance.config.check import Element

PROTO_NUMBERS = {"tcp": socket.IPPROTO_TCP, "udp": socket.IPPROTO_UDP}
ICMP_NUMBERS = {4: socket.IPPROTO_ICMP, 6: socket.IPPROTO_ICMPV6}
IPS_SEEN_REPLY = 1 << 1  # the entry's status bit: a packet came back (linux/netfilter)


@dataclass(frozen=True)
class Flow:
    """One tracked connection as the forward chain judged it (after DNAT, before SNAT)."""

    src: str
    dst: str
    proto: int
    dport: int | None
    handle: object = None  # the adapter's own entry, to delete it
    replied: bool = True  # a packet was seen in the reply direction

    @property
    def family(self) -> int:
        return ipaddress.ip_address(self.src).version


def allows(el: Element, flow: Flow) -> bool:
    if el.family != flow.family:
        return False
    if el.service.proto == "icmp":
        ok = flow.proto == ICMP_NUMBERS[el.family]
    else:
        ok = (
            flow.proto == PROTO_NUMBERS[el.service.proto]
            and flow.dport is not None
            and el.service.lo <= flow.dport <= el.service.hi
        )
    if not ok:
        return False
    src, dst = ipaddress.ip_address(flow.src), ipaddress.ip_address(flow.dst)
    return src in el.src and dst in el.dst


def flows_to_cut(
    flows: Iterable[Flow], withdrawn: list[Element], allowed: list[Element]
) -> list[Flow]:
    """Flows some withdrawn element allowed and no element allows any more."""
    if not withdrawn:
        return []
    return [
        f
        for f in flows
        if any(allows(el, f) for el in withdrawn) and not any(allows(el, f) for el in allowed)
    ]


def answers(
    flows: Iterable[Flow], owned: Iterable[tuple[str, Element]]
) -> dict[str, dict[str, int]]:
    """Per conduit (the first that allows a flow): {"connections": tracked connections,
    "unanswered": those that never saw a reply}. Conduits without a flow are left out.

    Elements to one host are found by the flow's destination, the others (networks) are
    tried in turn: thousands of host conduits cost one dictionary lookup per flow."""
    to_host: dict[str, list[tuple[str, Element]]] = {}
    to_net: list[tuple[str, Element]] = []
    for conduit, el in owned:
        if el.dst.num_addresses == 1:
            to_host.setdefault(str(el.dst.network_address), []).append((conduit, el))
        else:
            to_net.append((conduit, el))
    by_conduit: dict[str, dict[str, int]] = {}
    for f in flows:
        dst = str(ipaddress.ip_address(f.dst))  # the same spelling as the elements' keys
        for conduit, el in itertools.chain(to_host.get(dst, ()), to_net):
            if allows(el, f):
                c = by_conduit.setdefault(conduit, {"connections": 0, "unanswered": 0})
                c["connections"] += 1
                c["unanswered"] += not f.replied
                break
    return by_conduit


class Conntrack:
    """The kernel's connection tracking table of this namespace."""

    def __init__(self) -> None:
        from pyroute2 import Conntrack as _Conntrack

        self._ct = _Conntrack()

    def flows(self) -> list[Flow]:
        out = []
        for entry in self._ct.dump_entries():
            orig, reply = entry.tuple_orig, entry.tuple_reply
            # the forward chain saw the original source and the DNATed destination,
            # which is where the reply comes from
            dport = reply.sport if orig.proto in PROTO_NUMBERS.values() else None
            replied = bool((entry.status or 0) & IPS_SEEN_REPLY)
            out.append(Flow(orig.saddr, reply.saddr, orig.proto, dport, entry, replied))
        return out

    def cut(self, flows: list[Flow]) -> int:
        cut = 0
        for f in flows:
            try:
                self._ct.delete(f.handle)
                cut += 1
            except NetlinkError:  # gone meanwhile (it timed out or closed): nothing to cut
                continue
        return cut

    def close(self) -> None:
        self._ct.close()
