"""Turn a device's points into the fewest read requests its limits allow (pure, no I/O)."""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from appliance.config.points import (
    BIT_TABLES,
    MAX_READ_BITS,
    MAX_READ_REGISTERS,
    DeviceLimits,
    Point,
    Table,
    register_count,
)

TABLE_ORDER: tuple[Table, ...] = ("coil", "discrete", "input", "holding")

# A learned boundary (table, address): no request may read both address - 1 and address.
# Devices that answer "illegal data address" to a coalesced read often have a hole there.
Boundary = tuple[str, int]


@dataclass(frozen=True, slots=True)
class Request:
    """One read: `count` addresses of `table` from `start`.

    `points` holds (point name, offset from start), ordered by offset then name;
    `sizes` holds the addresses each of those points occupies, in the same order
    (what `split_request` needs to split only at point boundaries).
    """

    table: Table
    start: int
    count: int
    points: tuple[tuple[str, int], ...]
    sizes: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class _Cluster:
    """Points that share addresses (and so must share a request): [start, end)."""

    start: int
    end: int
    members: tuple[tuple[str, int, int], ...]  # (name, address, size)


def _clusters(items: Iterable[tuple[str, int, int]]) -> list[_Cluster]:
    """Merge overlapping (name, address, size) spans; the result is sorted and disjoint."""
    out: list[_Cluster] = []
    members: list[tuple[str, int, int]] = []
    start = end = -1
    for name, addr, size in sorted(items, key=lambda m: (m[1], m[0])):
        if members and addr < end:
            members.append((name, addr, size))
            end = max(end, addr + size)
            continue
        if members:
            out.append(_Cluster(start, end, tuple(members)))
        members, start, end = [(name, addr, size)], addr, addr + size
    if members:
        out.append(_Cluster(start, end, tuple(members)))
    return out


def _boundaries(clusters: Sequence[_Cluster], table: str, splits: Iterable[Boundary]) -> list[int]:
    """The learned boundaries of `table` that can be honoured: those not inside a cluster.

    A boundary inside a point (or inside points that overlap) cannot be kept without
    splitting a point or overlapping two requests, so it is ignored.
    """
    starts = [c.start for c in clusters]
    out = set()
    for t, addr in splits:
        if t != table:
            continue
        i = bisect.bisect_left(starts, addr) - 1  # last cluster starting before addr
        if i >= 0 and addr < clusters[i].end:
            continue
        out.add(addr)
    return sorted(out)


def _joinable(
    first: _Cluster, last: _Cluster, nxt: _Cluster, cap: int, gap: int, bounds: Sequence[int]
) -> bool:
    """May `nxt` join a request that reads clusters `first` .. `last`?"""
    if nxt.end - first.start > cap or nxt.start - last.end > gap:
        return False
    # A boundary in [last.end, nxt.start] would lie strictly inside the joined request.
    i = bisect.bisect_left(bounds, last.end)
    return i == len(bounds) or bounds[i] > nxt.start


def _by_table(points: Iterable[Point]) -> dict[Table, list[tuple[str, int, int]]]:
    seen: set[str] = set()
    tables: dict[Table, list[tuple[str, int, int]]] = {}
    for p in points:
        if p.name in seen:
            raise ValueError(f"point name {p.name!r} is used twice on this device")
        seen.add(p.name)
        tables.setdefault(p.table, []).append((p.name, p.address, register_count(p)))
    return tables


def _table_clusters(table: Table, items: list[tuple[str, int, int]], cap: int) -> list[_Cluster]:
    clusters = _clusters(items)
    unit = "bits" if table in BIT_TABLES else "registers"
    for c in clusters:
        if c.end - c.start > cap:
            names = ", ".join(repr(m[0]) for m in c.members)
            raise ValueError(
                f"{table} {c.start}-{c.end - 1}: point(s) {names} span {c.end - c.start} "
                f"{unit}, more than one request may read ({cap})"
            )
    return clusters


def _request(table: Table, group: Sequence[_Cluster]) -> Request:
    start = group[0].start
    members = sorted(
        ((addr - start, name, size) for c in group for name, addr, size in c.members),
    )
    return Request(
        table=table,
        start=start,
        count=group[-1].end - start,
        points=tuple((name, off) for off, name, _ in members),
        sizes=tuple(size for _, _, size in members),
    )


def plan(
    points: Iterable[Point],
    max_registers: int = MAX_READ_REGISTERS,
    max_gap: int = 16,
    max_bits: int = MAX_READ_BITS,
    splits: Iterable[Boundary] = frozenset(),
) -> list[Request]:
    """The fewest read requests that read every point once, ordered by table and address.

    Per table, points sorted by address are coalesced while the unused addresses
    between neighbours are at most `max_gap` and the request stays within
    `max_registers` (input/holding) or `max_bits` (coil/discrete). Points that share
    an address always share a request; no request spans a boundary in `splits`.
    Greedy coalescing is optimal here (see `ideal_request_count`): the clusters are
    disjoint, so any tail of a feasible group is feasible, and taking as much as fits
    never leaves the rest needing more requests.
    """
    limits = DeviceLimits(max_registers=max_registers, max_gap=max_gap, max_bits=max_bits)
    splits = tuple(splits)
    out: list[Request] = []
    tables = _by_table(points)
    for table in TABLE_ORDER:
        if table not in tables:
            continue
        cap = limits.max_bits if table in BIT_TABLES else limits.max_registers
        clusters = _table_clusters(table, tables[table], cap)
        bounds = _boundaries(clusters, table, splits)
        group = [clusters[0]]
        for c in clusters[1:]:
            if _joinable(group[0], group[-1], c, cap, limits.max_gap, bounds):
                group.append(c)
            else:
                out.append(_request(table, group))
                group = [c]
        out.append(_request(table, group))
    return out


def ideal_request_count(
    points: Iterable[Point],
    limits: DeviceLimits | None = None,
    splits: Iterable[Boundary] = frozenset(),
) -> int:
    """The least number of requests any plan needs: an exact DP over interval partitions.

    Per table, best[j] is the fewest requests that read the first j clusters (sorted by
    address), trying every last request clusters[i:j] that fits the limits. It is the
    benchmark's lower bound and the tests' check that `plan` is optimal.
    """
    limits = limits or DeviceLimits()
    splits = tuple(splits)
    total = 0
    for table, items in _by_table(points).items():
        cap = limits.max_bits if table in BIT_TABLES else limits.max_registers
        clusters = _table_clusters(table, items, cap)
        bounds = _boundaries(clusters, table, splits)
        n = len(clusters)
        best = [0] + [n + 1] * n
        for i in range(n):
            # Extend the request clusters[i:j+1] while it fits; fitting is prefix-closed.
            best[i + 1] = min(best[i + 1], best[i] + 1)
            for j in range(i + 1, n):
                if not _joinable(
                    clusters[i], clusters[j - 1], clusters[j], cap, limits.max_gap, bounds
                ):
                    break
                best[j + 1] = min(best[j + 1], best[i] + 1)
        total += best[n]
    return total


def split_request(request: Request) -> tuple[Boundary, ...]:
    """Where to split a request the device refused ("illegal data address"); () if it can't.

    Proposes one boundary between points: at the largest run of unused addresses
    (the likeliest hole), nearest the middle among equals; with no unused addresses,
    at the point boundary nearest the middle. Add it to `splits` and plan again;
    repeated failures halve the request further until single points remain.
    """
    if len(request.sizes) != len(request.points):
        raise ValueError("request.sizes must give the size of each of request.points")
    clusters = _clusters(
        (name, off, size) for (name, off), size in zip(request.points, request.sizes, strict=True)
    )
    if len(clusters) < 2:
        return ()
    middle = request.count / 2
    cut = max(
        itertools.pairwise(clusters),
        key=lambda pair: (pair[1].start - pair[0].end, -abs(pair[1].start - middle)),
    )[1].start
    return ((request.table, request.start + cut),)
