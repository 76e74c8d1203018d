"""Conntrack adapter: cut the established connections of withdrawn conduits.

A ruleset decides *new* connections; conntrack lets established ones go on. When
a conduit is removed, rolled back or expires, its open connections must stop
too, or an expired vendor session would run on for days. After each apply the
net role deletes the conntrack entries of flows that no conduit allows any more.
`flows_to_cut` is pure; only `Conntrack` talks netlink (pyroute2).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass

from pyroute2.netlink.exceptions import NetlinkError

from appliance.config.check import Element

PROTO_NUMBERS = {"tcp": socket.IPPROTO_TCP, "udp": socket.IPPROTO_UDP}
ICMP_NUMBERS = {4: socket.IPPROTO_ICMP, 6: socket.IPPROTO_ICMPV6}


@dataclass(frozen=True)
class Flow:
    """One tracked connection as the forward chain judged it (after DNAT, before SNAT)."""

    src: str
    dst: str
    proto: int
    dport: int | None
    handle: object = None  # the adapter's own entry, to delete it

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
            out.append(Flow(orig.saddr, reply.saddr, orig.proto, dport, entry))
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
