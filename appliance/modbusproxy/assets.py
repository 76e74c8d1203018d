"""The Modbus asset inventory: every device seen through the proxy. No I/O.

An asset is a PLC address that requests reached through a restricted conduit: the unit
ids and function codes used (requests that reached it, in any mode), the conduits and
clients that reached it (per conduit, each with when it last did: what the conduit review
compares a conduit's `from` with), first and last seen, and per unit id its device identification
(function 43/14: vendor, product code, revision, and the regular objects when given),
read from the PLC's answers when a client asked for it. `Inventory` keeps them and
which changed since they were saved; a device seen for the first time and a device
whose identification changed are what the role reports as events.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

MAX_ASSETS = 4096  # devices kept; past it the least recently seen goes
MAX_CLIENTS = 32  # clients kept per device (the most recent)
# An asset whose only change is its last-seen times is saved again after this long, not
# every save: the history DB is on flash. A restart may set last seen back by as much.
LAST_SEEN_EVERY_S = 300.0


@dataclass
class Asset:
    address: str
    first_seen: float
    last_seen: float
    units: set[int] = field(default_factory=set)
    functions: set[int] = field(default_factory=set)
    conduits: set[str] = field(default_factory=set)
    clients: list[str] = field(default_factory=list)  # most recent last
    identity: dict[int, dict[str, Any]] = field(default_factory=dict)  # unit -> objects, at
    uses: dict[str, dict[str, float]] = field(default_factory=dict)  # conduit -> client -> last

    def as_dict(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
            "units": sorted(self.units),
            "functions": sorted(self.functions),
            "conduits": sorted(self.conduits),
            "clients": list(self.clients),
            "identity": {str(u): dict(v) for u, v in sorted(self.identity.items())},
            "uses": {c: dict(sorted(v.items())) for c, v in sorted(self.uses.items())},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Asset:
        return cls(
            str(d["address"]),
            float(d["first_seen"]),
            float(d["last_seen"]),
            {int(u) for u in d.get("units", ())},
            {int(f) for f in d.get("functions", ())},
            {str(c) for c in d.get("conduits", ())},
            [str(c) for c in d.get("clients", ())],
            {int(u): dict(v) for u, v in (d.get("identity") or {}).items()},
            {
                str(c): {str(k): float(t) for k, t in v.items()}
                for c, v in (d.get("uses") or {}).items()
            },
        )


class Inventory:
    """The assets by address, and which changed since they were saved."""

    def __init__(self, limit: int = MAX_ASSETS) -> None:
        self.limit = limit
        self.items: dict[str, Asset] = {}
        self.dirty: set[str] = set()
        self.touched: dict[str, float] = {}  # address -> last seen when it was last saved

    def load(self, assets: list[Asset]) -> None:
        for a in assets:
            self.items[a.address] = a

    def _get(self, plc: str, now: float) -> tuple[Asset, bool]:
        a = self.items.get(plc)
        if a is not None:
            return a, False
        if len(self.items) >= self.limit:
            oldest = min(self.items, key=lambda k: self.items[k].last_seen)
            del self.items[oldest]
            self.dirty.discard(oldest)
        a = self.items[plc] = Asset(plc, now, now)
        return a, True

    def saw(self, plc: str, conduit: str, client: str, used: set[int], now: float) -> bool:
        """Requests of `used` (unit id << 8 | function code) reached `plc`; whether the
        device is new."""
        a, new = self._get(plc, now)
        before = (len(a.units), len(a.functions), len(a.conduits))
        a.last_seen = max(a.last_seen, now)
        for key in used:
            a.units.add(key >> 8)
            a.functions.add(key & 0xFF)
        a.conduits.add(conduit)
        clients = a.uses.setdefault(conduit, {})
        known = client in clients
        clients[client] = now
        if len(clients) > MAX_CLIENTS:
            del clients[min(clients, key=clients.__getitem__)]
        if not a.clients or a.clients[-1] != client:
            if client in a.clients:
                a.clients.remove(client)
            a.clients.append(client)
            del a.clients[:-MAX_CLIENTS]
        after = (len(a.units), len(a.functions), len(a.conduits))
        stale = now - self.touched.get(plc, float("-inf")) >= LAST_SEEN_EVERY_S
        if new or not known or before != after or stale:
            self.dirty.add(plc)
        return new

    def identified(
        self, plc: str, unit: int, objects: dict[str, str], now: float
    ) -> dict[str, Any] | None:
        """The device identification `plc` answered for `unit`; the identification it had
        before when that was another one (else None)."""
        a, _ = self._get(plc, now)
        before = a.identity.get(unit)
        known = {k: v for k, v in (before or {}).items() if k != "at"}
        merged = {**known, **objects}  # a basic answer does not forget the regular objects
        a.identity[unit] = {**merged, "at": now}
        self.dirty.add(plc)
        if before is not None and any(known.get(k) != v for k, v in objects.items() if k in known):
            return known
        return None

    def unidentified(self, plc: str, unit: int, why: str, now: float) -> None:
        """`plc` answered `unit`'s identification request with an exception (`why`)."""
        a, _ = self._get(plc, now)
        if not any(k not in ("at", "error") for k in a.identity.get(unit, {})):
            a.identity[unit] = {"error": why, "at": now}
            self.dirty.add(plc)

    def take_dirty(self) -> list[Asset]:
        changed = [self.items[k] for k in sorted(self.dirty) if k in self.items]
        for a in changed:
            self.touched[a.address] = a.last_seen
        self.dirty = set()
        return changed


def describe(identity: dict[str, Any]) -> str:
    """`vendor product_code revision` of one unit's identification, as far as known."""
    parts = [identity.get(k) for k in ("vendor", "product_code", "revision")]
    text = " ".join(str(p) for p in parts if p)
    if not text and identity.get("error"):
        return f"none ({identity['error']})"
    return text or "-"
