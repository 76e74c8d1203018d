"""Point descriptions and the read planner: fewest requests, within limits, learned splits."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from propkit import examples

from appliance.config.points import BIT_TABLES, DeviceLimits, Point, register_count
from appliance.field.plan import Request, ideal_request_count, plan, split_request


def pt(name: str, address: int, type_: str = "int16", table: str = "holding", **kw: Any) -> Point:
    if type_ == "bool" and table == "holding":
        table = "coil"
    return Point(name=name, table=table, address=address, type=type_, **kw)


def spans(requests: Sequence[Request]) -> list[tuple[str, int, int]]:
    return [(r.table, r.start, r.count) for r in requests]


# --- points -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"table": "holding", "type": "bool"}, "type bool lives in the coil or discrete table"),
        ({"table": "coil", "type": "int16"}, "type int16 lives in the input or holding table"),
        ({"table": "discrete", "type": "bit", "bit": 1}, "lives in the input or holding"),
        ({"type": "bit"}, "type bit needs a bit index 0-15"),
        ({"type": "bit", "bit": 16}, "less than or equal to 15"),
        ({"type": "int16", "bit": 3}, "a bit index only applies to type bit"),
        ({"type": "string"}, "type string needs a length in registers"),
        ({"type": "uint16", "length": 2}, "a length only applies to type string"),
        ({"type": "string", "length": 2, "scale": 2}, "scale and offset apply to numeric"),
        ({"type": "bit", "bit": 0, "offset": 1}, "scale and offset apply to numeric"),
        ({"type": "int16", "scale": 0}, "scale must not be 0"),
        ({"type": "int16", "scale": float("nan")}, "must be a finite number"),
        ({"type": "uint64", "address": 65533}, "4 registers from address 65533 end at 65536"),
        ({"type": "string", "length": 10, "address": 65530}, "end at 65539, past the last"),
        ({"type": "int16", "address": 65536}, "less than or equal to 65535"),
        ({"type": "int16", "byte_order": "middle"}, "'big' or 'little'"),
        ({"type": "int16", "name": "  "}, "point name must not be blank"),
        ({"type": "int16", "unit": "degC"}, "Extra inputs are not permitted"),
    ],
)
def test_invalid_points_say_why(fields: dict[str, Any], message: str) -> None:
    data = {"name": "p", "table": "holding", "address": 0, **fields}
    with pytest.raises(ValueError, match=message):
        Point(**data)


def test_points_are_frozen_and_fit_up_to_the_last_address() -> None:
    p = pt("p", 65532, "uint64")
    assert register_count(p) == 4
    with pytest.raises(ValueError, match="frozen"):
        p.address = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("type_", "kw", "count"),
    [
        ("bool", {}, 1),
        ("bit", {"bit": 7}, 1),
        ("int16", {}, 1),
        ("uint16", {}, 1),
        ("int32", {}, 2),
        ("uint32", {}, 2),
        ("float32", {}, 2),
        ("int64", {}, 4),
        ("uint64", {}, 4),
        ("float64", {}, 4),
        ("string", {"length": 5}, 5),
    ],
)
def test_register_count(type_: str, kw: dict[str, Any], count: int) -> None:
    assert register_count(pt("p", 0, type_, **kw)) == count


def test_device_limits_default_and_bounds() -> None:
    assert DeviceLimits() == DeviceLimits(max_registers=125, max_bits=2000, max_gap=16)
    for bad in ({"max_registers": 126}, {"max_bits": 2001}, {"max_gap": -1}):
        with pytest.raises(ValueError):
            DeviceLimits(**bad)
    with pytest.raises(ValueError, match="max_registers"):
        plan([pt("a", 0)], max_registers=126)


# --- plan: examples ---------------------------------------------------------------------


def test_neighbours_within_the_gap_share_a_request() -> None:
    points = [pt("a", 0), pt("f", 1, "float32"), pt("b", 10)]
    (r,) = plan(points)
    assert (r.table, r.start, r.count) == ("holding", 0, 11)
    assert r.points == (("a", 0), ("f", 1), ("b", 10))
    assert r.sizes == (1, 2, 1)


def test_a_gap_longer_than_max_gap_starts_a_new_request() -> None:
    assert spans(plan([pt("a", 0), pt("b", 17)])) == [("holding", 0, 18)]  # 16 unused
    assert spans(plan([pt("a", 0), pt("b", 18)])) == [("holding", 0, 1), ("holding", 18, 1)]
    assert len(plan([pt("a", 0), pt("b", 2)], max_gap=0)) == 2
    assert len(plan([pt("a", 0), pt("b", 1)], max_gap=0)) == 1


def test_requests_stay_within_max_registers_and_max_bits() -> None:
    regs = [pt(f"r{i}", i) for i in range(130)]
    assert spans(plan(regs)) == [("holding", 0, 125), ("holding", 125, 5)]
    coils = [pt(f"c{i}", i, "bool") for i in range(2001)]
    assert spans(plan(coils)) == [("coil", 0, 2000), ("coil", 2000, 1)]
    assert spans(plan(coils[:10], max_bits=4)) == [("coil", 0, 4), ("coil", 4, 4), ("coil", 8, 2)]


def test_a_point_is_never_split_across_requests() -> None:
    # The float64 at 3 does not fit in a 5-register request that starts at 0.
    points = [pt("a", 0), pt("d", 3, "float64")]
    assert spans(plan(points, max_registers=5)) == [("holding", 0, 1), ("holding", 3, 4)]


def test_tables_are_planned_apart_in_a_fixed_order() -> None:
    points = [
        pt("h", 0),
        pt("i", 0, table="input"),
        pt("d", 0, "bool", table="discrete"),
        pt("c", 1, "bool"),
    ]
    assert [r.table for r in plan(points)] == ["coil", "discrete", "input", "holding"]


def test_points_sharing_registers_are_read_together() -> None:
    points = [
        pt("f", 100, "float32"),
        pt("lo", 101, "uint16"),
        pt("b0", 103, "bit", bit=0),
        pt("b15", 103, "bit", bit=15),
    ]
    (r,) = plan(points)
    assert (r.start, r.count) == (100, 4)
    assert r.points == (("f", 0), ("lo", 1), ("b0", 3), ("b15", 3))
    # Overlapping points are one unit: a request of 2 cannot split them.
    assert spans(plan([*points[:2], pt("x", 102)], max_registers=2)) == [
        ("holding", 100, 2),
        ("holding", 102, 1),
    ]


def test_points_too_large_for_one_request_are_an_error() -> None:
    with pytest.raises(ValueError, match=r"holding 0-9: point\(s\) 's' span 10 registers"):
        plan([pt("s", 0, "string", length=10)], max_registers=8)
    with pytest.raises(ValueError, match="'a', 'b' span 5 registers, more than one request"):
        plan([pt("a", 0, "float64"), pt("b", 3, "int32")], max_registers=4)


def test_duplicate_point_names_are_an_error() -> None:
    with pytest.raises(ValueError, match="point name 'a' is used twice"):
        plan([pt("a", 0), pt("a", 5, table="input")])


def test_empty_device_needs_no_requests() -> None:
    assert plan([]) == []
    assert ideal_request_count([]) == 0


def test_learned_splits_are_honoured() -> None:
    points = [pt(f"r{i}", i) for i in range(4)]
    assert spans(plan(points, splits={("holding", 2)})) == [("holding", 0, 2), ("holding", 2, 2)]
    # A boundary of another table, or at the edge of a request, changes nothing.
    assert len(plan(points, splits={("input", 2), ("holding", 0), ("holding", 4)})) == 1
    # A boundary inside a point cannot be kept without splitting the point: ignored.
    assert len(plan([pt("f", 0, "float32")], splits={("holding", 1)})) == 1


def test_split_request_cuts_at_the_largest_gap() -> None:
    points = [pt("a", 0), pt("b", 1), pt("c", 5), pt("d", 6), pt("e", 20)]
    (r,) = plan(points)
    assert split_request(r) == (("holding", 20),)
    assert spans(plan(points, splits=split_request(r))) == [("holding", 0, 7), ("holding", 20, 1)]


def test_split_request_halves_at_a_point_boundary_when_there_is_no_gap() -> None:
    points = [pt(f"r{i}", 100 + 2 * i, "float32") for i in range(5)]  # 100..109
    (r,) = plan(points)
    assert split_request(r) == (("holding", 104),)  # middle 105 is inside a float32; 104 wins


def test_split_request_cannot_split_a_single_point_or_overlapping_points() -> None:
    (r,) = plan([pt("s", 0, "string", length=10)])
    assert split_request(r) == ()
    (r,) = plan([pt("f", 0, "float32"), pt("g", 1, "float32")])
    assert split_request(r) == ()


def test_split_request_needs_the_sizes() -> None:
    with pytest.raises(ValueError, match="sizes"):
        split_request(Request("holding", 0, 2, (("a", 0), ("b", 1)), (1,)))


# --- plan: properties -------------------------------------------------------------------

REGISTER_TYPES = [
    ("int16", {}),
    ("bit", {"bit": 3}),
    ("float32", {}),
    ("float64", {}),
    ("string", {"length": 3}),
    ("string", {"length": 7}),
]


TABLES = ["coil", "discrete", "input", "holding"]


@st.composite
def cases(
    draw: st.DrawFn, max_points: int = 25, tables: Sequence[str] = tuple(TABLES)
) -> tuple[list[Point], DeviceLimits, frozenset]:
    """A device's points, its limits and learned splits, all in one small address range."""
    n = draw(st.integers(0, max_points))
    span = draw(st.sampled_from([20, 80, 300]))
    points = []
    for i in range(n):
        table = draw(st.sampled_from(tables))
        if table in BIT_TABLES:
            type_, kw = "bool", {}
        else:
            type_, kw = draw(st.sampled_from(REGISTER_TYPES))
        points.append(pt(f"p{i}", draw(st.integers(0, span)), type_, table=table, **kw))
    limits = DeviceLimits(
        max_registers=draw(st.sampled_from([7, 10, 16, 40, 125])),
        max_bits=draw(st.sampled_from([1, 5, 16, 2000])),
        max_gap=draw(st.sampled_from([0, 1, 3, 16])),
    )
    boundary = st.tuples(st.sampled_from(tables), st.integers(1, span + 8))
    splits = draw(st.frozensets(boundary, max_size=n + 2))
    return points, limits, splits


def _cap(table: str, limits: DeviceLimits) -> int:
    return limits.max_bits if table in BIT_TABLES else limits.max_registers


def _plan(points: list[Point], limits: DeviceLimits, splits: frozenset) -> list[Request]:
    """plan(), or a skipped example when some points together exceed one request."""
    try:
        return plan(
            points,
            max_registers=limits.max_registers,
            max_gap=limits.max_gap,
            max_bits=limits.max_bits,
            splits=splits,
        )
    except ValueError as e:
        assert "more than one request may read" in str(e)
        with pytest.raises(ValueError, match="more than one request may read"):
            ideal_request_count(points, limits, splits)
        assume(False)
        raise


def _inside_a_point(points: list[Point], table: str, b: int) -> bool:
    return any(p.table == table and p.address < b < p.address + register_count(p) for p in points)


def _valid(
    table: str, group: Sequence[Point], limits: DeviceLimits, splits: frozenset, points: list[Point]
) -> tuple[int, int] | None:
    """(start, end) of the one request that reads `group`, or None if no request may."""
    start = min(p.address for p in group)
    end = max(p.address + register_count(p) for p in group)
    if end - start > _cap(table, limits):
        return None
    covered = {a for p in group for a in range(p.address, p.address + register_count(p))}
    run = 0
    for a in range(start, end):
        run = 0 if a in covered else run + 1
        if run > limits.max_gap:
            return None
    for t, b in splits:
        if t == table and start < b < end and not _inside_a_point(points, table, b):
            return None
    return start, end


@settings(max_examples=examples(250))
@given(cases())
def test_plan_reads_each_point_once_within_limits_and_is_optimal(case: tuple) -> None:
    points, limits, splits = case
    requests = _plan(points, limits, splits)
    by_name = {p.name: p for p in points}
    read = [name for r in requests for name, _ in r.points]
    assert sorted(read) == sorted(by_name)  # every point exactly once
    for r in requests:
        group = [by_name[name] for name, _ in r.points]
        assert all(p.table == r.table for p in group)
        for (name, off), size in zip(r.points, r.sizes, strict=True):
            p = by_name[name]
            assert (p.address - r.start, register_count(p)) == (off, size)
            assert off >= 0 and off + size <= r.count  # the whole point is in the request
        # Within the limits (size, gaps, splits) and tight around its points.
        assert _valid(r.table, group, limits, splits, points) == (r.start, r.start + r.count)
    for table in {r.table for r in requests}:
        mine = sorted((r.start, r.count) for r in requests if r.table == table)
        for (s1, c1), (s2, _) in itertools.pairwise(mine):
            assert s1 + c1 <= s2  # requests never overlap
    assert len(requests) == ideal_request_count(points, limits, splits)


@settings(max_examples=examples(150))
@given(cases(max_points=7, tables=["holding"]))
def test_ideal_request_count_agrees_with_brute_force(case: tuple) -> None:
    points, limits, splits = case
    requests = _plan(points, limits, splits)
    ordered = sorted(points, key=lambda p: p.address)
    best = None
    n = len(ordered)
    for k in range(n):  # every way to cut the sorted points into consecutive groups
        for cuts in itertools.combinations(range(1, n), k):
            bounds = [0, *cuts, n]
            groups = [ordered[i:j] for i, j in itertools.pairwise(bounds)]
            ranges = [_valid("holding", g, limits, splits, points) for g in groups]
            if None in ranges:
                continue
            if any(a[1] > b[0] for a, b in itertools.pairwise(ranges)):  # type: ignore[index]
                continue
            best = k + 1
            break
        if best is not None:
            break
    assert len(requests) == ideal_request_count(points, limits, splits) == (best or 0)


@settings(max_examples=examples(150))
@given(cases())
def test_split_request_learns_a_boundary_that_splits_the_failed_request(case: tuple) -> None:
    points, limits, splits = case
    requests = _plan(points, limits, splits)
    for r in requests:
        proposal = split_request(r)
        if not proposal:
            # Only when every address of the request is inside one chain of points.
            assert all(_inside_a_point(points, r.table, r.start + a) for a in range(1, r.count))
            continue
        ((table, b),) = proposal
        assert table == r.table and r.start < b < r.start + r.count
        assert not _inside_a_point(points, table, b)
        again = _plan(points, limits, splits | set(proposal))
        assert not any(q.table == table and q.start < b < q.start + q.count for q in again)
        assert len(again) == ideal_request_count(points, limits, splits | set(proposal))
        assert sorted(n for q in again for n, _ in q.points) == sorted(p.name for p in points)
