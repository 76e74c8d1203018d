"""Service specs: `modbus`, `tcp/502`, `udp/1000-2000`, `ping`."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from appliance.config.services import NAMED, Service, parse_service


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("modbus", (Service("tcp", 502, 502),)),
        ("  Modbus ", (Service("tcp", 502, 502),)),
        ("tcp/502", (Service("tcp", 502, 502),)),
        ("UDP/47808", (Service("udp", 47808, 47808),)),
        ("tcp/1000-2000", (Service("tcp", 1000, 2000),)),
        ("tcp/1-65535", (Service("tcp", 1, 65535),)),
        ("udp/7-7", (Service("udp", 7, 7),)),
        ("ping", (Service("icmp", 0, 0),)),
        (
            "ethernet-ip",
            (
                Service("tcp", 44818, 44818),
                Service("udp", 44818, 44818),
                Service("udp", 2222, 2222),
            ),
        ),
    ],
)
def test_parse(spec: str, expected: tuple[Service, ...]) -> None:
    assert parse_service(spec) == expected


@pytest.mark.parametrize("spec", ["tcp/0", "tcp/70000", "udp/1-65536", "tcp/0-10"])
def test_ports_out_of_range(spec: str) -> None:
    with pytest.raises(ValueError, match="1-65535"):
        parse_service(spec)


def test_reversed_range() -> None:
    with pytest.raises(ValueError, match="2000-1000 is reversed"):
        parse_service("tcp/2000-1000")


@pytest.mark.parametrize("spec", ["sctp/5", "tcp/", "tcp/x", "tcp:502", "502", "", "modbus-rtu"])
def test_unknown_specs_list_the_forms_and_names(spec: str) -> None:
    with pytest.raises(ValueError, match=r"unknown service .*tcp/PORT.*modbus"):
        parse_service(spec)


def test_str_round_trips() -> None:
    assert str(Service("tcp", 502, 502)) == "tcp/502"
    assert str(Service("udp", 1000, 2000)) == "udp/1000-2000"
    assert str(Service("icmp")) == "ping"


@given(st.sampled_from(["tcp", "udp"]), st.integers(1, 65535), st.integers(0, 100))
def test_str_parses_back_to_itself(proto: str, lo: int, width: int) -> None:
    svc = Service(proto, lo, min(65535, lo + width))
    assert parse_service(str(svc)) == (svc,)


def test_named_services_are_well_formed() -> None:
    for name, services in NAMED.items():
        assert services, name
        for s in services:
            assert s.proto in ("tcp", "udp", "icmp"), name
            if s.proto == "icmp":
                assert (s.lo, s.hi) == (0, 0), name
            else:
                assert 1 <= s.lo <= s.hi <= 65535, name


def test_services_order_by_proto_then_ports() -> None:
    svcs = [Service("udp", 5, 5), Service("tcp", 80, 80), Service("icmp"), Service("tcp", 22, 22)]
    assert [str(s) for s in sorted(svcs)] == ["ping", "tcp/22", "tcp/80", "udp/5"]
