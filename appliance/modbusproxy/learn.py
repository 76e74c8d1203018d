"""What a learning Modbus conduit saw, and the `modbus:` mapping it proposes. No I/O.

A conduit whose restriction is in mode `learn` passes every request; the proxy hands each
one here (`inspect.Seen`). Per (conduit, client, PLC, unit id, function code) an
`Observed` keeps the count, first and last seen, and the addresses touched per table as
merged inclusive ranges ([0, 9] and [10, 19] become [0, 19]). A client that reads many
scattered addresses would make the list long: past MAX_SPANS ranges the two nearest are
merged (the range grows over the gap between them, so the proposal may allow a few
addresses nobody touched: the price of a bounded record, said in the proposal's notes).

`propose` turns the observations of one conduit into the restriction to paste: the
function codes, unit ids and ranges seen (over all clients and PLCs, since a conduit has
one restriction), in mode `test`, so that it is tried before it is enforced. Requests no
restriction can allow (malformed, a function code that is not public, 43 with another
MEI type than 14) are left out and named in the notes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from appliance.config.modbus import FUNCTION_CODES, TABLES
from appliance.modbusproxy.inspect import Seen

MAX_SPANS = 64  # address ranges kept per observation, per table
MAX_OBSERVED = 10_000  # observations kept in all; past it the least recently seen goes

Key = tuple[str, str, str, int, int]  # conduit, client, PLC, unit id, function code


def add_range(ranges: list[list[int]], lo: int, hi: int, limit: int = MAX_SPANS) -> bool:
    """Put lo..hi into the sorted, disjoint, non-touching `ranges` (in place); whether
    they changed. Past `limit` ranges the two with the smallest gap between them merge."""
    i = 0
    while i < len(ranges) and ranges[i][1] < lo - 1:
        i += 1
    j = i
    while j < len(ranges) and ranges[j][0] <= hi + 1:
        j += 1
    if j == i + 1 and ranges[i][0] <= lo and hi <= ranges[i][1]:
        return False  # already inside one range
    if j > i:
        lo, hi = min(lo, ranges[i][0]), max(hi, ranges[j - 1][1])
    ranges[i:j] = [[lo, hi]]
    while len(ranges) > limit:
        k = min(range(len(ranges) - 1), key=lambda n: ranges[n + 1][0] - ranges[n][1])
        ranges[k : k + 2] = [[ranges[k][0], ranges[k + 1][1]]]
    return True


def close_gaps(ranges: list[list[int]], gap: int) -> list[list[int]]:
    """`ranges` (sorted, disjoint) with those at most `gap` addresses apart joined."""
    out: list[list[int]] = []
    for lo, hi in ranges:
        if out and lo - out[-1][1] - 1 <= gap:
            out[-1][1] = max(out[-1][1], hi)
        else:
            out.append([lo, hi])
    return out


@dataclass
class Observed:
    """The requests of one kind (conduit, client, PLC, unit, function) a learning conduit
    passed: `spans` the addresses touched per table, `unusable` the requests of this kind
    no restriction can allow."""

    conduit: str
    client: str
    plc: str
    unit: int
    function: int
    first_seen: float
    last_seen: float
    count: int = 0
    unusable: int = 0
    spans: dict[str, list[list[int]]] = field(default_factory=dict)

    @property
    def key(self) -> Key:
        return (self.conduit, self.client, self.plc, self.unit, self.function)

    def as_dict(self) -> dict[str, Any]:
        return {
            "conduit": self.conduit,
            "client": self.client,
            "plc": self.plc,
            "unit": self.unit,
            "function": self.function,
            "count": self.count,
            "unusable": self.unusable,
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
            "spans": {t: [list(r) for r in rs] for t, rs in self.spans.items()},
        }


class Learning:
    """Every learning conduit's observations, and which changed since they were saved."""

    def __init__(self, limit: int = MAX_OBSERVED) -> None:
        self.limit = limit
        self.items: dict[Key, Observed] = {}
        self.dirty: set[Key] = set()
        self.forgotten: list[Key] = []  # dropped at the limit, to be deleted where saved

    def load(self, observed: Iterable[Observed]) -> None:
        for o in observed:
            self.items[o.key] = o

    def add(self, conduit: str, client: str, plc: str, s: Seen, now: float) -> Observed:
        key = (conduit, client, plc, s.unit, s.function)
        o = self.items.get(key)
        if o is None:
            if len(self.items) >= self.limit:
                oldest = min(self.items, key=lambda k: self.items[k].last_seen)
                del self.items[oldest]
                self.dirty.discard(oldest)
                self.forgotten.append(oldest)
            o = self.items[key] = Observed(conduit, client, plc, s.unit, s.function, now, now)
        o.count += 1
        o.last_seen = now
        if not s.usable:
            o.unusable += 1
        for span in s.spans:
            add_range(o.spans.setdefault(span.table, []), span.first, span.last)
        self.dirty.add(key)
        return o

    def take_dirty(self) -> tuple[list[Observed], list[Key]]:
        """The observations changed since the last call, and the keys forgotten."""
        changed = [self.items[k] for k in sorted(self.dirty) if k in self.items]
        gone, self.forgotten = self.forgotten, []
        self.dirty = set()
        return changed, gone

    def of(self, conduit: str) -> list[Observed]:
        return [o for o in self.items.values() if o.conduit == conduit]

    def counts(self) -> dict[str, int]:
        """Requests learned per conduit (for the live document)."""
        out: dict[str, int] = {}
        for o in self.items.values():
            out[o.conduit] = out.get(o.conduit, 0) + o.count
        return out


@dataclass(frozen=True)
class Proposal:
    """The restriction learned for one conduit (`mapping`), and what a person should know
    about it before pasting it (`notes`, one line each)."""

    conduit: str
    mapping: dict[str, Any]
    notes: tuple[str, ...]
    requests: int
    first_seen: float
    last_seen: float
    clients: tuple[str, ...]


def _fmt(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _codes(codes: Iterable[int]) -> str:
    return ", ".join(str(c) for c in sorted(codes))


def propose(conduit: str, observed: Iterable[Observed], gap: int = 0) -> Proposal | None:
    """The `modbus:` mapping that allows exactly what was learned for `conduit` (ranges
    `gap` addresses apart or less joined), in mode test; None when nothing was learned."""
    obs = sorted(
        (o for o in observed if o.conduit == conduit), key=lambda o: (o.client, o.plc, o.unit)
    )
    if not obs:
        return None
    codes: set[int] = set()
    units: set[int] = set()
    ranges: dict[str, list[list[int]]] = {}
    unusable: dict[int, int] = {}
    joined = False
    for o in obs:
        if o.unusable:
            unusable[o.function] = unusable.get(o.function, 0) + o.unusable
        if o.count > o.unusable:
            codes.add(o.function)
            units.add(o.unit)
        for table, spans in o.spans.items():
            mine = ranges.setdefault(table, [])
            for lo, hi in spans:
                add_range(mine, lo, hi, limit=1 << 30)
            joined = joined or len(spans) >= MAX_SPANS
    requests = sum(o.count for o in obs)
    first, last = min(o.first_seen for o in obs), max(o.last_seen for o in obs)
    clients = tuple(sorted({o.client for o in obs}))
    notes = [
        f"learned from {requests} requests of {len(clients)} client"
        f"{'' if len(clients) == 1 else 's'}, {_fmt(first)} to {_fmt(last)}"
    ]
    for client in clients:
        mine = [o for o in obs if o.client == client and o.count > o.unusable]
        plcs = ", ".join(sorted({o.plc for o in mine})) or "-"
        notes.append(
            f"{client} → {plcs}: functions {_codes({o.function for o in mine}) or '-'}; "
            f"units {_codes({o.unit for o in mine}) or '-'}; {sum(o.count for o in mine)} requests"
        )
    for fc, n in sorted(unusable.items()):
        what = FUNCTION_CODES.get(fc)
        name = f"function {fc} ({what})" if what else f"function {fc} (not a public one)"
        notes.append(
            f"left out: {n} requests of {name} no restriction can allow (malformed, not a "
            "public function code, or 43 with another MEI type than 14)"
        )
    if joined:
        notes.append(
            f"some clients touched more than {MAX_SPANS} separate ranges: the nearest were "
            "joined, so the ranges may hold a few addresses nobody touched"
        )
    if not codes:
        notes.append("nothing a restriction can allow was seen: there is nothing to paste")
        return Proposal(conduit, {}, tuple(notes), requests, first, last, clients)
    mapping: dict[str, Any] = {"function_codes": sorted(codes), "unit_ids": sorted(units)}
    if ranges:
        mapping["ranges"] = {
            t: close_gaps(ranges[t], gap) if gap else ranges[t] for t in TABLES if t in ranges
        }
    mapping["mode"] = "test"
    notes.append("in mode test first: would-be refusals are reported; then mode: enforce")
    return Proposal(conduit, mapping, tuple(notes), requests, first, last, clients)


def to_yaml(p: Proposal) -> str:
    """The proposal as YAML to paste into the conduit (notes as comments)."""
    lines = [f"# conduit {p.conduit}: {p.notes[0]}"] + [f"#   {n}" for n in p.notes[1:]]
    m = p.mapping
    if not m:
        return "\n".join(lines) + "\n"

    def flow(v: list[Any]) -> str:
        return "[" + ", ".join(flow(x) if isinstance(x, list) else str(x) for x in v) + "]"

    lines += ["modbus:", f"  function_codes: {flow(m['function_codes'])}"]
    lines.append(f"  unit_ids: {flow(m['unit_ids'])}")
    if "ranges" in m:
        lines.append("  ranges:")
        lines += [f"    {t}: {flow(spans)}" for t, spans in m["ranges"].items()]
    lines.append(f"  mode: {m['mode']}")
    return "\n".join(lines) + "\n"
