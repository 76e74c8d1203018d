"""libnftables adapter: the only module that talks to nftables.

One method sends a whole document (one transaction: the kernel takes all of it
or none of it). Reading back is a JSON listing of our table, from which the
pure helpers below take counters and a fingerprint for drift detection.
"""

from __future__ import annotations

import hashlib
import json
import threading
from typing import Any

from appliance.errors import ApplyFailed
from appliance.net.render import BRIDGE_FAMILY, FAMILY, TABLE, element_key

Json = dict[str, Any]


class Nft:
    """The real kernel, through the libnftables Python bindings (python3-nftables)."""

    def __init__(self) -> None:
        try:
            import nftables  # Debian's python3-nftables; see README "Setup"
        except ImportError as e:  # pragma: no cover - depends on the machine
            raise ApplyFailed(f"libnftables bindings are missing (python3-nftables): {e}")
        self._nft = nftables.Nftables()
        self._nft.set_json_output(True)
        self._nft.set_handle_output(False)
        # protocols as numbers whatever /etc/protocols says: listings are then the
        # same on a full and a minimal system (see render.element_key)
        self._nft.set_numeric_proto_output(True)
        self._lock = threading.Lock()

    def apply(self, document: Json, *, check_only: bool = False) -> None:
        """Send the document as one transaction; ApplyFailed (nothing changed) if refused."""
        with self._lock:
            self._nft.set_dry_run(check_only)
            try:
                rc, _out, err = self._nft.json_cmd(document)
            finally:
                self._nft.set_dry_run(False)
        if rc != 0:
            raise ApplyFailed(f"nftables refused the ruleset: {_first_error(err)}")

    def list_table(self) -> list[Json] | None:
        """Our tables as one JSON listing (`inet appliance`, then `bridge appliance` when
        the kernel holds it), or None when the kernel holds no inet table of ours."""
        with self._lock:
            rc, out, _err = self._nft.cmd(f"list table {FAMILY} {TABLE}")
            if rc != 0:
                return None
            brc, bout, _err = self._nft.cmd(f"list table {BRIDGE_FAMILY} {TABLE}")
        listing = [o for o in json.loads(out)["nftables"] if "metainfo" not in o]
        if brc == 0:
            listing += [o for o in json.loads(bout)["nftables"] if "metainfo" not in o]
        return listing

    def bridge_conntrack(self) -> bool:
        """Whether this kernel has conntrack in the bridge family (nf_conntrack_bridge):
        a rule using `ct state` in a bridge table, checked by the kernel and not applied."""
        probe = {
            "nftables": [
                {"add": {"table": {"family": BRIDGE_FAMILY, "name": "appliance_probe"}}},
                {
                    "add": {
                        "chain": {
                            "family": BRIDGE_FAMILY,
                            "table": "appliance_probe",
                            "name": "c",
                            "type": "filter",
                            "hook": "forward",
                            "prio": 0,
                            "policy": "accept",
                        }
                    }
                },
                {
                    "add": {
                        "rule": {
                            "family": BRIDGE_FAMILY,
                            "table": "appliance_probe",
                            "chain": "c",
                            "expr": [
                                {
                                    "match": {
                                        "op": "in",
                                        "left": {"ct": {"key": "state"}},
                                        "right": ["established"],
                                    }
                                },
                                {"accept": None},
                            ],
                        }
                    }
                },
            ]
        }
        try:
            self.apply(probe, check_only=True)
        except ApplyFailed:
            return False
        return True

    def list_ruleset_text(self) -> str:
        with self._lock:
            self._nft.set_json_output(False)
            try:
                _rc, out, _err = self._nft.cmd("list ruleset")
            finally:
                self._nft.set_json_output(True)
        return out


def _first_error(err: str) -> str:
    for line in err.splitlines():
        if "Error:" in line:
            return line.split("Error:", 1)[1].strip()
    return err.strip().splitlines()[0] if err.strip() else "unknown error"


# -- pure helpers over a listing ---------------------------------------------

_VOLATILE = {"handle", "packets", "bytes", "expires"}
PROTO_NAMES = {6: "tcp", 17: "udp", 1: "icmp", 58: "ipv6-icmp"}
DYNAMIC_SETS = ("denied4", "denied6")


def _strip(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k not in _VOLATILE}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def fingerprint(listing: list[Json]) -> str:
    """A hash of what the table *is*, leaving out counters, handles and timers."""
    norm = []
    for obj in listing:
        if "set" in obj and obj["set"]["name"] in DYNAMIC_SETS:
            obj = {"set": {k: v for k, v in obj["set"].items() if k != "elem"}}
        norm.append(_strip(obj))
    return hashlib.sha256(json.dumps(norm, sort_keys=True).encode()).hexdigest()


def holds_bridge_table(listing: list[Json] | None) -> bool:
    """Whether the listing has our bridge table (the unit bridges, or did)."""
    return any("table" in o and o["table"].get("family") == BRIDGE_FAMILY for o in listing or [])


def named_counters(listing: list[Json]) -> dict[str, dict[str, int]]:
    return {
        o["counter"]["name"]: {
            "packets": o["counter"].get("packets", 0),
            "bytes": o["counter"].get("bytes", 0),
        }
        for o in listing
        if "counter" in o
    }


def _elements(listing: list[Json], name: str) -> list[Json]:
    for o in listing:
        if "set" in o and o["set"]["name"] == name:
            return o["set"].get("elem", [])
    return []


def element_counters(listing: list[Json]) -> dict[tuple[str, str], dict[str, int]]:
    """(set name, element key) -> counter, for every element of every set that has one."""
    out: dict[tuple[str, str], dict[str, int]] = {}
    for o in listing:
        if "set" not in o:
            continue
        name = o["set"]["name"]
        for item in o["set"].get("elem", []):
            if isinstance(item, dict) and "elem" in item:
                val = item["elem"]["val"]
                counter = item["elem"].get("counter") or {}
            else:
                val, counter = item, {}
            out[(name, element_key(val))] = {
                "packets": counter.get("packets", 0),
                "bytes": counter.get("bytes", 0),
            }
    return out


def denied(listing: list[Json]) -> list[Json]:
    """Flows the forward chain dropped recently: source, destination, protocol, port, packets."""
    out = []
    for name in DYNAMIC_SETS:
        for item in _elements(listing, name):
            el = item["elem"] if isinstance(item, dict) and "elem" in item else {"val": item}
            parts = el["val"]["concat"]
            out.append(
                {
                    "src": parts[0],
                    "dst": parts[1],
                    "proto": PROTO_NAMES.get(parts[2], parts[2]),
                    "port": parts[3],
                    "packets": (el.get("counter") or {}).get("packets", 0),
                }
            )
    out.sort(key=lambda d: -d["packets"])
    return out


class NftMonitor:
    """Wakes the net role the moment anyone changes nftables in this namespace.

    A netlink socket subscribed to NFNLGRP_NFTABLES: every ruleset change (ours
    included) sends a message, so `nft flush ruleset` is noticed at once rather
    than at the next periodic read-back. The messages themselves are not parsed.
    """

    NETLINK_NETFILTER = 12
    NFNLGRP_NFTABLES = 7
    SOL_NETLINK = 270
    NETLINK_ADD_MEMBERSHIP = 1

    def __init__(self) -> None:
        import socket

        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, self.NETLINK_NETFILTER)
        self._sock.bind((0, 0))
        self._sock.setsockopt(self.SOL_NETLINK, self.NETLINK_ADD_MEMBERSHIP, self.NFNLGRP_NFTABLES)
        self._sock.setblocking(False)

    def fileno(self) -> int:
        return self._sock.fileno()

    def drain(self) -> bool:
        seen = False
        while True:
            try:
                self._sock.recv(65536)
                seen = True
            except BlockingIOError:
                return seen
            except OSError:  # ENOBUFS: we missed some; all that matters is "something changed"
                seen = True

    def close(self) -> None:
        self._sock.close()
