"""The Modbus inspector: reassembly in any chunking, sanity checks, the policy per ADU."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from propkit import examples

from appliance.config.modbus import ModbusRestriction
from appliance.modbusproxy.inspect import (
    MAX_ADU,
    MAX_OUTSTANDING,
    Adu,
    Policy,
    Session,
    Span,
    request_spans,
)


def adu(tid: int, unit: int, *pdu: int, fmt: str = "") -> bytes:
    """An ADU; `pdu` are bytes, or with `fmt` the values packed by struct (after the code)."""
    body = bytes([pdu[0]]) + struct.pack(">" + fmt, *pdu[1:]) if fmt else bytes(pdu)
    return struct.pack(">HHHB", tid, 0, len(body) + 1, unit) + body


def read(tid: int, fc: int, start: int, count: int, unit: int = 1) -> bytes:
    return adu(tid, unit, fc, start, count, fmt="HH")


def write_register(tid: int, addr: int, value: int, unit: int = 1) -> bytes:
    return adu(tid, unit, 6, addr, value, fmt="HH")


def write_registers(tid: int, start: int, values: list[int], unit: int = 1) -> bytes:
    fmt = "HHB" + "H" * len(values)
    return adu(tid, unit, 16, start, len(values), 2 * len(values), *values, fmt=fmt)


def policy(modbus: object) -> Policy:
    return Policy.of(ModbusRestriction.model_validate(modbus))


READ_ONLY = policy("read-only")


def split(stream: bytes) -> list[bytes]:
    """The ADUs of a well-formed stream (the test's own framing, not the inspector's)."""
    out = []
    while stream:
        n = 6 + struct.unpack(">H", stream[4:6])[0]
        out.append(stream[:n])
        stream = stream[n:]
    return out


def as_adu(data: bytes) -> Adu:
    tid, _proto, _length, unit = struct.unpack(">HHHB", data[:7])
    return Adu(tid, unit, data[7:])


def decide(p: Policy, data: bytes) -> list[tuple[bool, int | None, str]]:
    """What a session decides about each ADU of `data`: passed on as it came, or refused
    with its verdict. Each decision is also `Policy.check`'s (the session's fast path)."""
    s = Session(p)
    forward = s.from_client(data)
    refused = iter(s.refused)
    out: list[tuple[bool, int | None, str]] = []
    for a in split(data):
        if forward.startswith(a):
            forward = forward[len(a) :]
            out.append((True, None, ""))
        else:
            v = next(refused)
            assert v.adu.encode() == a
            out.append((False, v.code, v.reason))
        assert p.check(as_adu(a)).allowed == out[-1][0]
    assert forward == b"" and next(refused, None) is None and s.reset is None
    return out


# -- reassembly -----------------------------------------------------------------------


def test_several_adus_in_one_chunk_pass_as_they_came() -> None:
    s = Session(READ_ONLY)
    chunk = read(1, 3, 0, 2) + read(2, 4, 5, 1) + read(3, 1, 0, 8)
    assert s.from_client(chunk) is chunk  # nothing copied
    assert (s.outstanding, s.pending) == (3, 0)
    assert s.counts.as_dict() == {
        "allowed": {"1": 1, "3": 1, "4": 1},
        "refused": {},
        "would_refuse": {},
    }


def test_one_adu_split_over_chunks() -> None:
    s = Session(policy("read-write"))
    whole = write_registers(9, 10, [1, 2, 3])
    assert s.from_client(whole[:3]) == b""
    assert s.from_client(whole[3:8]) == b""
    assert s.pending == 8
    assert s.from_client(whole[8:] + read(1, 3, 0, 1)[:4]) == whole
    assert (s.pending, s.outstanding) == (4, 1)
    assert s.from_client(read(1, 3, 0, 1)[4:]) == read(1, 3, 0, 1)
    assert (s.pending, s.outstanding) == (0, 2)


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (struct.pack(">HHHB", 1, 1, 6, 1), "protocol id 1, not 0 (Modbus)"),
        (struct.pack(">HHHB", 1, 0, 1, 1), "length field 1: an ADU has a unit id and a function"),
        (
            struct.pack(">HHHB", 1, 0, 255, 1),
            f"length field 255: an ADU is at most {MAX_ADU} bytes, not 261",
        ),
    ],
)
def test_framing_errors(header: bytes, message: str) -> None:
    s = Session(READ_ONLY)
    assert s.from_client(read(1, 3, 0, 1) + header + b"\x03") == read(1, 3, 0, 1)
    assert s.reset == f"request stream: {message}"
    assert s.from_client(read(2, 3, 0, 1)) == b""  # nothing more after a reset
    s = Session(READ_ONLY)
    s.from_client(read(1, 3, 0, 1))
    assert s.from_server(header + b"\x03") == b""
    assert s.reset == f"response stream: {message}"


def test_a_header_is_checked_before_its_adu_is_complete() -> None:
    s = Session(READ_ONLY)  # so an incomplete ADU never holds more than MAX_ADU - 1 bytes
    assert s.from_client(struct.pack(">HHHB", 1, 0, 255, 1)) == b""
    assert s.reset is not None and s.pending == 0


def test_the_largest_adu_is_taken() -> None:
    pdu = bytes([16]) + struct.pack(">HHB", 0, 123, 246) + bytes(246)
    assert len(pdu) == 252
    data = struct.pack(">HHHB", 1, 0, len(pdu) + 1, 1) + pdu
    s = Session(policy("read-write"))
    for i in range(len(data) - 1):
        assert s.from_client(data[i : i + 1]) == b""
    assert s.pending == len(data) - 1 < MAX_ADU
    assert s.from_client(data[-1:]) == data


# -- read-only ------------------------------------------------------------------------


@pytest.mark.parametrize("fc", [1, 2, 3, 4])
def test_read_only_passes_reads(fc: int) -> None:
    assert decide(READ_ONLY, read(1, fc, 0, 10)) == [(True, None, "")]


def test_read_only_passes_device_identification_only() -> None:
    assert decide(READ_ONLY, adu(1, 1, 43, 14, 1, 0)) == [(True, None, "")]
    assert decide(READ_ONLY, adu(1, 1, 43, 13, 1, 0)) == [
        (False, 1, "function 43 with MEI type 13, not 14")
    ]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (write_register(1, 0, 7), "function 6 (write single register)"),
        (write_registers(1, 0, [1, 2]), "function 16 (write multiple registers)"),
        (adu(1, 1, 5, 0, 0xFF00, fmt="HH"), "function 5 (write single coil)"),
        (adu(1, 1, 15, 0, 3, 1, 5, fmt="HHBB"), "function 15 (write multiple coils)"),
        (adu(1, 1, 8, 0, 0, fmt="HH"), "function 8 (diagnostics)"),
        (adu(1, 1, 0x41), "function 65 is not a public Modbus one"),
        (adu(1, 1, 0x83, 2), "function 131 is not a public Modbus one"),
    ],
)
def test_read_only_refuses_the_rest_with_illegal_function(data: bytes, reason: str) -> None:
    assert decide(READ_ONLY, data) == [(False, 1, reason)]


def test_the_exception_answer() -> None:
    s = Session(READ_ONLY)
    assert s.from_client(write_register(0x1234, 0, 7, unit=5)) == b""
    assert s.reply == bytes.fromhex("1234 0000 0003 05 86 01")
    assert s.reset is None
    assert s.counts.as_dict() == {"allowed": {}, "refused": {"6": 1}, "would_refuse": {}}


@pytest.mark.parametrize(
    ("data", "code", "reason"),
    [
        (read(1, 3, 0, 0), 3, "malformed: quantity 0 is not 1-125"),
        (read(1, 3, 0, 126), 3, "malformed: quantity 126 is not 1-125"),
        (read(1, 1, 0, 2001), 3, "malformed: quantity 2001 is not 1-2000"),
        (read(1, 3, 65535, 2), 2, "malformed: addresses 65535-65536 run past 65535"),
        (adu(1, 1, 3, 0, 1, 0, fmt="HHB"), 3, "malformed: function 3 takes 5 bytes of PDU, not 6"),
        (adu(1, 1, 3), 3, "malformed: function 3 takes 5 bytes of PDU, not 1"),
        (adu(1, 1, 43, 14, 1), 3, "malformed: function 43 takes 4 bytes of PDU, not 3"),
    ],
)
def test_malformed_requests(data: bytes, code: int, reason: str) -> None:
    assert decide(READ_ONLY, data) == [(False, code, reason)]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (adu(1, 1, 16, 0, 2, 3, 1, 2, fmt="HHBHH"), "byte count 3 with 4 bytes for quantity 2"),
        (adu(1, 1, 16, 0, 2, 4, 1, fmt="HHBH"), "byte count 4 with 2 bytes for quantity 2"),
        (adu(1, 1, 15, 0, 9, 1, 0xFF, fmt="HHBB"), "byte count 1 with 1 bytes for quantity 9"),
        (adu(1, 1, 5, 0, 0x1234, fmt="HH"), "a coil is written 0x0000 or 0xFF00, not 0x1234"),
        (adu(1, 1, 23, 0, 1, 0, 2, 2, 7, fmt="HHHHBH"), "byte count 2 with 2 bytes for quantity 2"),
    ],
)
def test_malformed_writes(data: bytes, reason: str) -> None:
    assert decide(policy("read-write"), data) == [(False, 3, "malformed: " + reason)]


# -- the spans a request touches --------------------------------------------------------


def test_spans() -> None:
    assert request_spans(bytes([3]) + struct.pack(">HH", 95, 10)) == (Span("holding", 95, 104),)
    assert request_spans(bytes([2]) + struct.pack(">HH", 7, 1)) == (Span("discrete", 7, 7),)
    fc23 = bytes([23]) + struct.pack(">HHHHBHH", 0, 4, 50, 2, 4, 1, 2)
    assert request_spans(fc23) == (Span("holding", 0, 3), Span("holding", 50, 51))
    assert request_spans(bytes([15]) + struct.pack(">HHBBB", 3, 9, 2, 0, 1)) == (
        Span("coil", 3, 11),
    )
    assert request_spans(bytes([43, 14, 1, 0])) == ()


RANGES = policy(
    {"function_codes": [1, 3, 6, 16, 23], "ranges": {"holding": [[0, 99], [100, 109], [200, 200]]}}
)


@pytest.mark.parametrize(
    ("data", "verdict"),
    [
        (read(1, 3, 0, 100), (True, None, "")),
        (read(1, 3, 95, 10), (True, None, "")),  # across touching ranges [0,99] [100,109]
        (read(1, 3, 105, 10), (False, 2, "address holding 105-114")),
        (read(1, 3, 199, 2), (False, 2, "address holding 199-200")),
        (read(1, 3, 200, 1), (True, None, "")),
        (write_register(1, 200, 5), (True, None, "")),
        (write_register(1, 201, 5), (False, 2, "address holding 201")),
        (write_registers(1, 108, [1, 2, 3]), (False, 2, "address holding 108-110")),
        (read(1, 1, 0, 1), (False, 2, "address coil 0")),  # a table not listed: none of it
        (adu(1, 1, 23, 0, 4, 200, 1, 2, 9, fmt="HHHHBH"), (True, None, "")),
        (adu(1, 1, 23, 0, 4, 300, 1, 2, 9, fmt="HHHHBH"), (False, 2, "address holding 300")),
        (adu(1, 1, 23, 150, 4, 200, 1, 2, 9, fmt="HHHHBH"), (False, 2, "address holding 150-153")),
    ],
)
def test_address_ranges(data: bytes, verdict: tuple) -> None:
    assert decide(RANGES, data) == [verdict]


def test_unit_ids() -> None:
    p = policy({"preset": "read-only", "unit_ids": [1, 2]})
    assert decide(p, read(1, 3, 0, 1, unit=2)) == [(True, None, "")]
    assert decide(p, read(1, 3, 0, 1, unit=3)) == [(False, 10, "unit id 3")]


# -- sessions -------------------------------------------------------------------------


def test_a_write_packed_after_a_read_is_refused_and_the_read_goes_on() -> None:
    s = Session(READ_ONLY)
    assert s.from_client(read(1, 3, 0, 2) + write_register(2, 0, 99) + read(3, 3, 5, 1)) == (
        read(1, 3, 0, 2) + read(3, 3, 5, 1)
    )
    assert s.reply == bytes.fromhex("0002 0000 0003 01 86 01")
    assert [(v.adu.transaction, v.allowed) for v in s.refused] == [(2, False)]
    assert s.outstanding == 2


def test_a_write_split_over_two_segments_is_refused() -> None:
    s = Session(READ_ONLY)
    whole = write_registers(4, 0, [1, 2, 3])
    assert s.from_client(whole[:9]) == b""
    assert (s.reply, s.refused) == (b"", [])
    assert s.from_client(whole[9:]) == b""
    assert s.reply == bytes.fromhex("0004 0000 0003 01 90 01")


def test_on_refusal_reset() -> None:
    s = Session(policy({"preset": "read-only", "on_refusal": "reset"}))
    forward = s.from_client(read(1, 3, 0, 2) + write_register(2, 0, 99) + read(3, 3, 5, 1))
    assert forward == read(1, 3, 0, 2)  # what came before the refused one
    assert s.reply == b""
    assert s.reset == "refused request: function 6 (write single register)"
    assert [v.adu.transaction for v in s.refused] == [2]


def test_a_broken_request_stream_resets() -> None:
    s = Session(READ_ONLY)
    assert s.from_client(read(1, 3, 0, 2)[:2] + b"\x00\x07" + b"\x00" * 8) == b""
    assert s.reset == "request stream: protocol id 7, not 0 (Modbus)"


def test_at_most_max_outstanding_requests() -> None:
    s = Session(READ_ONLY)
    many = b"".join(read(t, 3, 0, 1) for t in range(MAX_OUTSTANDING))
    assert s.from_client(many) is many
    assert s.from_client(read(999, 3, 0, 1) + read(1000, 3, 0, 1)) == b""
    assert s.reset == f"more than {MAX_OUTSTANDING} requests not answered"
    s = Session(READ_ONLY)  # answered ones make room
    s.from_client(many)
    s.from_server(response(0, 3, b"\x02\x00\x01"))
    assert s.from_client(read(999, 3, 0, 1)) == read(999, 3, 0, 1)
    assert s.reset is None


def response(tid: int, fc: int, payload: bytes, unit: int = 1) -> bytes:
    return adu(tid, unit, fc, *payload)


def test_responses_only_to_requests() -> None:
    s = Session(READ_ONLY)
    s.from_client(read(1, 3, 0, 1) + read(2, 3, 0, 1))
    answer = response(2, 3, b"\x02\x00\x07")
    assert s.from_server(answer) is answer  # out of order is fine (transaction ids)
    exc = response(1, 0x83, b"\x02")
    assert s.from_server(exc) == exc  # an exception answers its request
    assert s.outstanding == 0
    assert s.from_server(answer) == b""
    assert s.reset == "a response (transaction 2) to no request"


def test_a_response_must_match_its_request() -> None:
    s = Session(READ_ONLY)
    s.from_client(read(1, 3, 0, 1))
    assert s.from_server(response(1, 6, b"\x00\x00\x00\x07")) == b""
    assert s.reset == "transaction 1: response unit 1 function 6 to a request to unit 1 function 3"
    s = Session(READ_ONLY)
    s.from_client(read(1, 3, 0, 1))
    s.from_server(response(1, 3, b"\x02\x00\x07", unit=9))
    assert "response unit 9" in (s.reset or "")
    s = Session(READ_ONLY)
    s.from_client(read(1, 3, 0, 1))
    s.from_server(response(1, 0x84, b"\x02"))  # the exception of another function
    assert (
        s.reset == "transaction 1: response unit 1 function 132 to a request to unit 1 function 3"
    )


def test_the_responses_before_a_bad_one_pass() -> None:
    s = Session(READ_ONLY)
    s.from_client(read(1, 3, 0, 1))
    good = response(1, 3, b"\x02\x00\x07")
    assert s.from_server(good + response(5, 3, b"\x02\x00\x07")) == good
    assert s.reset == "a response (transaction 5) to no request"


def test_a_reused_transaction_id_is_answered_in_turn() -> None:
    s = Session(READ_ONLY)  # some clients send every request with transaction id 0
    s.from_client(read(0, 3, 0, 1) + read(0, 4, 0, 1) + read(0, 1, 0, 1))
    assert s.from_server(response(0, 3, b"\x02\x00\x01")) != b""
    assert s.from_server(response(0, 4, b"\x02\x00\x01")) != b""
    assert s.reset is None and s.outstanding == 1
    assert s.from_server(response(0, 4, b"\x02\x00\x01")) == b""  # the read of coils is next
    assert s.reset is not None


def test_a_response_split_over_chunks() -> None:
    s = Session(READ_ONLY)
    s.from_client(read(1, 3, 0, 2))
    answer = response(1, 3, b"\x04\x00\x01\x00\x02")
    assert s.from_server(answer[:5]) == b""
    assert s.from_server(answer[5:]) == answer


# -- property: the chunking never changes what is decided --------------------------------

_start = st.one_of(st.integers(0, 300), st.integers(65400, 65535))
_requests = st.one_of(
    st.builds(
        read,
        st.integers(0, 65535),
        st.sampled_from([1, 2, 3, 4]),
        _start,
        st.one_of(st.integers(0, 130), st.integers(1990, 2010)),
        st.integers(0, 3),
    ),
    st.builds(write_register, st.integers(0, 65535), _start, st.integers(0, 65535)),
    st.builds(
        write_registers,
        st.integers(0, 65535),
        st.integers(0, 300),
        st.lists(st.integers(0, 65535), min_size=1, max_size=10),
    ),
    st.builds(
        lambda t, m: adu(t, 1, 43, m, 1, 0), st.integers(0, 65535), st.sampled_from([13, 14])
    ),
    st.builds(
        lambda t, fc: adu(t, 1, fc, 0, 1, fmt="HH"), st.integers(0, 65535), st.integers(0, 255)
    ),
    st.builds(  # a read of the wrong length
        lambda t, fc: adu(t, 1, fc, 0, 1, 0, fmt="HHB"), st.integers(0, 65535), st.integers(1, 4)
    ),
)
_policies = st.sampled_from(
    [
        READ_ONLY,
        policy("read-write"),
        RANGES,
        policy({"function_codes": [3, 6], "ranges": {"holding": [[10, 20]]}}),
        policy({"function_codes": [1, 2, 4], "unit_ids": [1, 2]}),
        policy({"preset": "read-only", "ranges": {"coil": [[0, 1999]], "input": [[65500, 65535]]}}),
    ]
)


@settings(max_examples=examples(300))
@given(_policies, st.lists(_requests, min_size=1, max_size=20), st.data())
def test_any_chunking_decides_as_the_policy_does(
    p: Policy, requests: list[bytes], data: st.DataObject
) -> None:
    """Whatever the chunking, exactly the requests `Policy.check` allows reach the PLC,
    in order and as they came, and every other one gets its exception, in order."""
    verdicts = [p.check(as_adu(r)) for r in requests]
    stream = b"".join(requests)
    cuts = sorted(data.draw(st.sets(st.integers(1, len(stream) - 1), max_size=30)))
    s = Session(p)
    forward = b""
    for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        forward += s.from_client(stream[a:b])
    assert s.reset is None and s.pending == 0
    assert forward == b"".join(r for r, v in zip(requests, verdicts, strict=True) if v.allowed)
    assert s.reply == b"".join(v.reply() for v in verdicts if not v.allowed)
    assert s.refused == [v for v in verdicts if not v.allowed]
    assert s.outstanding == sum(v.allowed for v in verdicts)
    counts = s.counts.as_dict()
    assert sum(counts["allowed"].values()) + sum(counts["refused"].values()) == len(requests)


def test_the_inspector_is_in_the_pure_core_contract() -> None:
    """`lint-imports` (tests/unit/test_import_contracts.py) then refuses any I/O in it."""
    import tomllib
    from pathlib import Path

    doc = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    pure = next(c for c in doc["tool"]["importlinter"]["contracts"] if c["id"] == "pure-core")
    assert "appliance.modbusproxy.inspect" in pure["source_modules"]
    assert "socket" in pure["forbidden_modules"]


@settings(max_examples=examples(200))
@given(_policies, st.lists(_requests, min_size=1, max_size=20), st.data())
def test_in_mode_test_any_chunking_passes_everything_and_notes_what_check_refuses(
    p: Policy, requests: list[bytes], data: st.DataObject
) -> None:
    """Mode test: whatever the chunking, every request passes as it came and exactly the
    ones `Policy.check` refuses are noted as would-be refusals; mode learn records each."""
    import dataclasses

    verdicts = [p.check(as_adu(r)) for r in requests]
    stream = b"".join(requests)
    cuts = sorted(data.draw(st.sets(st.integers(1, len(stream) - 1), max_size=30)))
    for mode in ("test", "learn"):
        s = Session(dataclasses.replace(p, mode=mode))
        forward = b""
        for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True):
            forward += s.from_client(stream[a:b])
        assert forward == stream and s.reset is None and s.pending == 0
        assert s.reply == b"" and s.refused == []
        assert s.outstanding == len(requests)
        if mode == "test":
            assert s.would == [v for v in verdicts if not v.allowed]
            assert sum(s.counts.would) == len(s.would)
        else:
            assert len(s.seen) == len(requests) and s.would == []
