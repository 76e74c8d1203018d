"""Learn -> test -> enforce: the restriction's modes in the configuration and the
inspector, what a learning conduit records, the mapping it proposes, the asset inventory."""

from __future__ import annotations

import itertools
import struct
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from propkit import examples

from appliance.config.modbus import FUNCTION_CODES, ModbusRestriction
from appliance.modbusproxy.assets import Inventory, describe
from appliance.modbusproxy.inspect import (
    Adu,
    Policy,
    Seen,
    Session,
    Span,
    device_identification,
    seen,
)
from appliance.modbusproxy.learn import (
    MAX_SPANS,
    Learning,
    Observed,
    add_range,
    close_gaps,
    propose,
    to_yaml,
)


def restricted(base: dict[str, Any], modbus: Any) -> dict[str, Any]:
    base["conduits"][0]["modbus"] = modbus
    return base


def adu(tid: int, fc: int, *values: int, fmt: str = "HH", unit: int = 1) -> bytes:
    body = bytes([fc]) + struct.pack(">" + fmt, *values)
    return struct.pack(">HHHB", tid, 0, len(body) + 1, unit) + body


def policy(modbus: Any) -> Policy:
    return Policy.of(ModbusRestriction.model_validate(modbus))


# -- the configuration ---------------------------------------------------------------------


@pytest.mark.parametrize("given", ["learn", " Learn", {"mode": "learn"}])
def test_learn_mode_passes_everything(valid, base, given) -> None:
    loaded = valid(restricted(base, given))
    m = loaded.config.conduits[0].modbus
    assert m.mode == "learn"
    assert m.allowed_function_codes() == frozenset(FUNCTION_CODES)
    assert m.describe() == "learning"
    assert loaded.warnings == []
    assert loaded.config.canonical()["conduits"][0]["modbus"] == "learn"


def test_learn_mode_keeps_on_refusal_for_the_mode_after_it(valid, base) -> None:
    loaded = valid(restricted(base, {"mode": "learn", "on_refusal": "reset"}))
    again = loaded.config.canonical()["conduits"][0]["modbus"]
    assert (again["mode"], again["on_refusal"]) == ("learn", "reset")
    assert valid(restricted(base, again)).config.conduits[0].modbus.mode == "learn"


def test_learn_mode_takes_no_restriction(invalid, base) -> None:
    modbus = {"mode": "learn", "preset": "read-only", "unit_ids": [1]}
    assert invalid(restricted(base, modbus)) == [
        (
            "conduits[0].modbus",
            "mode learn passes everything: leave out preset, unit_ids (learn first, then "
            "paste what `appliance conduits learned` prints, in mode test)",
            None,
        )
    ]


def test_test_mode_needs_a_restriction(invalid, base) -> None:
    [(path, message, _)] = invalid(restricted(base, {"mode": "test"}))
    assert (path, message) == (
        "conduits[0].modbus",
        "give `function_codes` (a list) or `preset` (read-only or read-write)",
    )


def test_a_mode_that_is_none_of_the_three_is_named(invalid, base) -> None:
    [(path, _message, _)] = invalid(restricted(base, {"preset": "read-only", "mode": "watch"}))
    assert path == "conduits[0].modbus.mode"


def test_test_mode_round_trips(valid, base) -> None:
    loaded = valid(restricted(base, {"preset": "read-only", "mode": "test"}))
    m = loaded.config.conduits[0].modbus
    assert (m.mode, m.describe()) == ("test", "read-only (test)")
    again = loaded.config.canonical()["conduits"][0]["modbus"]
    assert again["mode"] == "test"
    assert valid(restricted(base, again)).config.conduits[0].modbus == m


def test_enforce_is_the_default_and_left_out_of_the_document(valid, base) -> None:
    """Documents from before modes keep their canonical form (and so their hash)."""
    loaded = valid(restricted(base, {"function_codes": [3], "unit_ids": [1], "mode": "enforce"}))
    assert loaded.config.conduits[0].modbus.mode == "enforce"
    assert "mode" not in loaded.config.canonical()["conduits"][0]["modbus"]
    again = valid(restricted(base, {"preset": "read-only", "mode": "enforce"}))
    assert again.config.canonical()["conduits"][0]["modbus"] == "read-only"


# -- the inspector in modes test and learn --------------------------------------------------


def test_test_mode_passes_what_it_would_refuse_and_counts_it() -> None:
    s = Session(policy({"preset": "read-only", "mode": "test"}))
    stream = adu(1, 3, 0, 1) + adu(2, 6, 40, 999) + adu(3, 4, 0, 1)
    assert s.from_client(stream) == stream  # all of it, as it came
    assert s.reply == b"" and s.refused == [] and s.reset is None
    [v] = s.would
    assert (v.function, v.code, v.reason) == (6, 1, "function 6 (write single register)")
    assert s.counts.as_dict() == {
        "allowed": {"3": 1, "4": 1, "6": 1},
        "refused": {},
        "would_refuse": {"6": 1},
    }
    assert s.outstanding == 3 and s.seen == []
    assert s.used == {1 << 8 | 3, 1 << 8 | 6, 1 << 8 | 4}


def test_learn_mode_passes_everything_and_records_it() -> None:
    s = Session(policy("learn"))
    weird = adu(4, 43, 0x0D00, fmt="H")  # 43 with MEI type 13: no restriction allows it
    stream = adu(1, 3, 10, 5) + adu(2, 16, 40, 1, 2, 7, fmt="HHBH", unit=2) + weird
    assert s.from_client(stream[:20]) + s.from_client(stream[20:]) == stream
    assert s.would == [] and s.reset is None
    assert s.seen == [
        Seen(1, 3, (Span("holding", 10, 14),)),
        Seen(2, 16, (Span("holding", 40, 40),)),
        Seen(1, 43, (), False),
    ]


def test_every_mode_still_resets_a_stream_that_is_not_modbus() -> None:
    for mode in ("learn", {"preset": "read-only", "mode": "test"}):
        s = Session(policy(mode))
        bad = struct.pack(">HHHB", 1, 7, 6, 1) + b"\x03\x00\x00\x00\x01"
        assert s.from_client(adu(1, 3, 0, 1) + bad) == adu(1, 3, 0, 1)
        assert s.reset == "request stream: protocol id 7, not 0 (Modbus)"


def test_a_learned_request_with_a_high_function_code_is_answered_not_reset() -> None:
    """A learning conduit passes a request with function code 0x85; the PLC's answer
    (an exception with the same code) is its answer, not a stray response."""
    s = Session(policy("learn"))
    req = struct.pack(">HHHBB", 9, 0, 2, 1, 0x85)
    assert s.from_client(req) == req
    answer = struct.pack(">HHHBBB", 9, 0, 3, 1, 0x85, 1)
    assert s.from_server(answer) == answer and s.reset is None


def test_seen_marks_what_no_restriction_can_allow() -> None:
    assert seen(Adu(1, 1, bytes([3, 0, 0, 0, 0]))) == Seen(1, 3, (), False)  # quantity 0
    assert seen(Adu(1, 1, bytes([99]))) == Seen(1, 99, (), False)
    assert seen(Adu(1, 1, bytes([43, 14, 1, 0]))) == Seen(1, 43, ())


@settings(max_examples=examples(200))
@given(
    st.lists(
        st.tuples(
            st.sampled_from([1, 2, 3, 4, 5, 6, 16]), st.integers(0, 65000), st.integers(1, 8)
        ),
        min_size=1,
        max_size=30,
    )
)
def test_the_proposal_allows_every_request_learned_and_validates(reqs) -> None:
    """Whatever was learned, the proposed mapping validates, and in mode enforce allows
    each request it was learned from."""
    s = Session(policy("learn"))
    stream = b""
    for tid, (fc, start, n) in enumerate(reqs):
        if fc == 5:
            stream += adu(tid, 5, start, 0xFF00)
        elif fc == 6:
            stream += adu(tid, 6, start, 1)
        elif fc == 16:
            stream += adu(tid, 16, start, n, 2 * n, *range(n), fmt="HHB" + "H" * n)
        else:
            stream += adu(tid, fc, start, n)
    s.from_client(stream)
    learning = Learning()
    for x in s.seen:
        learning.add("scada", "10.10.0.2", "192.168.50.10", x, 100.0)
    p = propose("scada", learning.of("scada"))
    assert p is not None
    pasted = yaml.safe_load(to_yaml(p))["modbus"]
    assert pasted == p.mapping and pasted["mode"] == "test"
    m = ModbusRestriction.model_validate({**pasted, "mode": "enforce"})
    enforce = Policy.of(m)
    off = 0
    while off < len(stream):
        n = 6 + struct.unpack(">H", stream[off + 4 : off + 6])[0]
        tid, _, _, unit = struct.unpack(">HHHB", stream[off : off + 7])
        assert enforce.check(Adu(tid, unit, stream[off + 7 : off + n])).allowed
        off += n


# -- learning ---------------------------------------------------------------------------------


def test_add_range_merges_touching_and_overlapping_ranges() -> None:
    r: list[list[int]] = []
    assert add_range(r, 10, 19) and add_range(r, 30, 39) and add_range(r, 20, 25)
    assert r == [[10, 25], [30, 39]]
    assert not add_range(r, 12, 14)
    assert add_range(r, 26, 29) and r == [[10, 39]]
    assert add_range(r, 0, 0) and r == [[0, 0], [10, 39]]


def test_add_range_is_bounded_by_merging_the_nearest() -> None:
    r: list[list[int]] = []
    for a in range(0, 200, 2):  # 100 single addresses, one apart
        add_range(r, a, a, limit=MAX_SPANS)
    assert len(r) == MAX_SPANS
    assert r[0][0] == 0 and r[-1][1] == 198
    assert all(a[1] < b[0] for a, b in itertools.pairwise(r))


def test_close_gaps() -> None:
    assert close_gaps([[0, 9], [12, 20], [40, 40]], 2) == [[0, 20], [40, 40]]


def test_learning_per_client_and_what_the_proposal_says() -> None:
    learning = Learning()
    t = 1_800_000_000.0
    a, b, plc = "10.10.0.2", "10.10.0.3", "192.168.50.10"
    learning.add("scada", a, plc, Seen(1, 3, (Span("holding", 0, 9),)), t)
    learning.add("scada", a, plc, Seen(1, 3, (Span("holding", 10, 19),)), t + 5)
    learning.add("scada", b, plc, Seen(2, 1, (Span("coil", 0, 7),)), t + 9)
    learning.add("scada", b, plc, Seen(2, 99, (), False), t + 9)
    learning.add("other", b, plc, Seen(1, 6, (Span("holding", 1, 1),)), t)
    [o] = [o for o in learning.of("scada") if o.function == 3]
    assert (o.count, o.first_seen, o.last_seen, o.spans) == (2, t, t + 5, {"holding": [[0, 19]]})
    p = propose("scada", learning.items.values())
    assert p is not None
    assert p.mapping == {
        "function_codes": [1, 3],
        "unit_ids": [1, 2],
        "ranges": {"coil": [[0, 7]], "holding": [[0, 19]]},
        "mode": "test",
    }
    assert p.requests == 4 and p.clients == (a, b)
    text = to_yaml(p)
    assert text.startswith(
        "# conduit scada: learned from 4 requests of 2 clients, 2027-01-15 08:00:00 UTC to "
        "2027-01-15 08:00:09 UTC\n"
        "#   10.10.0.2 → 192.168.50.10: functions 3; units 1; 2 requests\n"
        "#   10.10.0.3 → 192.168.50.10: functions 1; units 2; 1 requests\n"
        "#   left out: 1 requests of function 99 (not a public one)"
    )
    assert text.endswith(
        "modbus:\n  function_codes: [1, 3]\n  unit_ids: [1, 2]\n  ranges:\n"
        "    coil: [[0, 7]]\n    holding: [[0, 19]]\n  mode: test\n"
    )
    assert propose("nothing", learning.items.values()) is None


def test_only_unusable_requests_propose_nothing_to_paste() -> None:
    learning = Learning()
    learning.add("scada", "a", "b", Seen(1, 99, (), False), 0.0)
    p = propose("scada", learning.items.values())
    assert p is not None and p.mapping == {}
    assert "modbus:" not in to_yaml(p)


def test_learning_is_bounded_and_says_what_to_delete() -> None:
    learning = Learning(limit=2)
    for n, unit in enumerate((1, 2, 3)):
        learning.add("scada", "a", "b", Seen(unit, 3, ()), float(n))
    changed, gone = learning.take_dirty()
    assert [o.unit for o in changed] == [2, 3]
    assert gone == [("scada", "a", "b", 1, 3)]
    assert learning.take_dirty() == ([], [])


def test_an_observation_round_trips_as_a_dict() -> None:
    o = Observed("scada", "a", "b", 1, 3, 1.0, 2.0, 5, 1, {"holding": [[0, 9]]})
    d = o.as_dict()
    assert Observed(**d) == o


# -- the inventory ----------------------------------------------------------------------------


def ident_pdu(*objects: tuple[int, bytes]) -> bytes:
    body = b"".join(bytes([oid, len(v)]) + v for oid, v in objects)
    return bytes([43, 14, 1, 1, 0, 0, len(objects)]) + body


def test_device_identification_of_a_response() -> None:
    pdu = ident_pdu((0, b"Acme"), (1, b"PLC-9\x00"), (2, b"v1.2"), (9, b"private"))
    assert device_identification(pdu) == {
        "vendor": "Acme",
        "product_code": "PLC-9",
        "revision": "v1.2",
    }
    assert device_identification(pdu[:-3]) is None  # cut short
    assert device_identification(bytes([43, 13, 1, 1, 0, 0, 0])) is None  # another MEI type
    assert device_identification(bytes([0xAB, 1])) is None  # an exception


def test_the_inventory_records_devices_and_identity_changes() -> None:
    inv = Inventory()
    plc = "192.168.50.10"
    assert inv.saw(plc, "scada", "10.10.0.2", {1 << 8 | 3, 2 << 8 | 4}, 10.0)
    assert not inv.saw(plc, "scada", "10.10.0.3", {1 << 8 | 6}, 20.0)
    a = inv.items[plc]
    assert (a.units, a.functions, a.first_seen, a.last_seen) == ({1, 2}, {3, 4, 6}, 10.0, 20.0)
    assert a.clients == ["10.10.0.2", "10.10.0.3"]
    assert a.uses == {"scada": {"10.10.0.2": 10.0, "10.10.0.3": 20.0}}
    ident = {"vendor": "Acme", "product_code": "P9", "revision": "1.0"}
    assert inv.identified(plc, 1, ident, 21.0) is None
    assert inv.identified(plc, 1, ident, 22.0) is None  # the same again
    assert inv.identified(plc, 1, {**ident, "revision": "2.0"}, 23.0) == ident
    assert describe(a.identity[1]) == "Acme P9 2.0"
    [saved] = inv.take_dirty()
    assert type(saved).from_dict(saved.as_dict()) == saved
    assert inv.take_dirty() == []


def test_the_proxys_own_identification_request_is_kept_out_of_the_clients_stream() -> None:
    s = Session(policy("read-only"))
    assert s.from_client(adu(0xFFFF, 3, 0, 1)) == adu(0xFFFF, 3, 0, 1)
    ask = s.ask_identification(1)
    assert ask is not None
    tid = struct.unpack(">H", ask[:2])[0]
    assert tid == 0xFFFE  # 0xFFFF has the client's request outstanding
    assert ask == struct.pack(">HHHB", tid, 0, 5, 1) + bytes([43, 14, 1, 0])
    assert s.from_client(adu(tid, 4, 0, 1)) == adu(tid, 4, 0, 1)  # the client's, same id
    mine = ident_pdu((0, b"Acme"))
    answers = [
        struct.pack(">HHHBBBH", 0xFFFF, 0, 5, 1, 3, 2, 7),
        struct.pack(">HHHB", tid, 0, len(mine) + 1, 1) + mine,
        struct.pack(">HHHBBBH", tid, 0, 5, 1, 4, 2, 9),
    ]
    stream = b"".join(answers)
    out = s.from_server(stream[:15]) + s.from_server(stream[15:])
    assert out == answers[0] + answers[2]
    assert s.idents == [(1, mine)] and s.reset is None and s.outstanding == 0


def test_an_exception_to_the_proxys_own_request_is_kept_too() -> None:
    s = Session(policy("read-only"))
    ask = s.ask_identification(3)
    assert ask is not None
    answer = ask[:4] + struct.pack(">HBBB", 3, 3, 0xAB, 1)
    assert s.from_server(answer) == b""
    assert s.idents == [(3, bytes([0xAB, 1]))] and s.outstanding == 0


def test_identify_is_kept_and_its_default_left_out(valid, base) -> None:
    loaded = valid(restricted(base, {"preset": "read-only", "identify": True}))
    assert loaded.config.conduits[0].modbus.identify is True
    assert loaded.config.canonical()["conduits"][0]["modbus"]["identify"] is True
    plain = valid(restricted(base, {"function_codes": [3], "identify": False}))
    assert "identify" not in plain.config.canonical()["conduits"][0]["modbus"]
    learning = valid(restricted(base, {"mode": "learn", "identify": True}))
    assert learning.config.canonical()["conduits"][0]["modbus"]["identify"] is True


def test_an_asset_seen_again_unchanged_is_saved_again_only_after_a_while() -> None:
    from appliance.modbusproxy.assets import LAST_SEEN_EVERY_S

    inv = Inventory()
    plc, used = "192.168.50.10", {1 << 8 | 3}
    inv.saw(plc, "scada", "10.10.0.2", used, 0.0)
    assert [a.address for a in inv.take_dirty()] == [plc]
    inv.saw(plc, "scada", "10.10.0.2", used, 10.0)
    assert inv.take_dirty() == []  # only last seen moved
    inv.saw(plc, "scada", "10.10.0.2", {1 << 8 | 4}, 20.0)
    assert len(inv.take_dirty()) == 1  # a new function code
    inv.saw(plc, "scada", "10.10.0.9", used, 30.0)
    assert len(inv.take_dirty()) == 1  # a new client
    inv.saw(plc, "scada", "10.10.0.2", used, 30.0 + LAST_SEEN_EVERY_S)
    [a] = inv.take_dirty()
    assert a.last_seen == 30.0 + LAST_SEEN_EVERY_S
