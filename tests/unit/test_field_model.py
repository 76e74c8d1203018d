"""Device and tag validation: every problem reported with the path of the bad field."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from appliance.config.field import Device, Serial, Tag, parse_host_port
from appliance.config.load import Loaded, load_text
from appliance.errors import ConfigInvalid

Errors = list[tuple[str, str, int | None]]


def doc(base: dict[str, Any], *devices: dict[str, Any]) -> dict[str, Any]:
    base["devices"] = list(devices)
    return base


def tcp(**kw: Any) -> dict[str, Any]:
    d: dict[str, Any] = {"name": "plc1", "protocol": "modbus-tcp", "address": "192.168.50.10:502"}
    d["tags"] = kw.pop("tags", [{"name": "counter", "table": "holding", "address": 0}])
    d.update(kw)
    return d


def rtu(name: str = "rtu1", unit_id: int = 1, **serial: Any) -> dict[str, Any]:
    return {
        "name": name,
        "protocol": "modbus-rtu",
        "unit_id": unit_id,
        "serial": {"port": "/dev/ttyS1", **serial},
        "tags": [{"name": "counter", "table": "holding", "address": 0}],
    }


def paths(errors: Errors) -> dict[str, str]:
    return {p: m for p, m, _ in errors}


def test_a_valid_device_with_every_kind_of_tag(
    base: dict[str, Any], valid: Callable[..., Loaded]
) -> None:
    tags = [
        {"name": "counter", "table": "holding", "address": 0, "unit": "count"},
        {"name": "status", "table": "holding", "address": 1, "type": "uint16"},
        {"name": "ready", "table": "holding", "address": 1, "type": "bit", "bit": 0},
        {"name": "fault", "table": "holding", "address": 1, "type": "bit", "bit": 1},
        {
            "name": "temp",
            "table": "input",
            "address": 10,
            "type": "float32",
            "word_order": "little",
            "deadband": {"absolute": 0.1},
            "alarms": {"high": 80, "high_high": 90, "hysteresis": 1},
        },
        {"name": "name", "table": "holding", "address": 20, "type": "string", "length": 8},
        {"name": "run", "table": "coil", "address": 8, "writable": True},
        {"name": "door", "table": "discrete", "address": 0, "publish": "every-poll"},
        {
            "name": "energy",
            "table": "holding",
            "address": 30,
            "type": "uint64",
            "scale": 0.001,
            "max_silence": 60,
        },
    ]
    loaded = valid(doc(base, tcp(tags=tags), rtu()))
    dev = loaded.config.devices[0]
    assert [p.type for p in dev.points()][:3] == ["uint16", "uint16", "bit"]
    assert dev.host_port() == ("192.168.50.10", 502)
    assert loaded.warnings == []


def test_tag_types_default_by_table() -> None:
    assert Tag(name="a", table="coil", address=0).effective_type() == "bool"
    assert Tag(name="a", table="input", address=0).effective_type() == "uint16"
    assert Tag(name="a", node="ns=2;s=x").effective_type() is None


@pytest.mark.parametrize(
    ("tag", "path", "words"),
    [
        ({"table": "coil", "address": 0, "type": "float32"}, "type", "coil"),
        ({"table": "holding", "address": 0, "type": "bool"}, "type", "bit"),
        ({"table": "holding", "address": 0, "type": "bit"}, "bit", "bit index"),
        ({"table": "holding", "address": 0, "type": "string"}, "length", "length"),
        ({"table": "holding", "address": 65535, "type": "float32"}, "address", "past the last"),
        (
            {"table": "holding", "address": 0, "type": "string", "length": 2, "scale": 2},
            "scale",
            "numeric",
        ),
        ({"table": "holding"}, "address", "table and address"),
        ({"address": 3}, "table", "table and address"),
        ({"table": "holding", "address": 0, "node": "ns=2;s=x"}, "node", "not both"),
        ({"table": "input", "address": 0, "writable": True}, "writable", "read-only"),
        ({"table": "discrete", "address": 0, "writable": True}, "writable", "read-only"),
        ({"table": "coil", "address": 0, "deadband": {"absolute": 1}}, "deadband", "numbers"),
        ({"table": "coil", "address": 0, "alarms": {"high": 1}}, "alarms", "numbers"),
        ({"table": "holding", "address": 0, "deadband": {}}, "deadband", "absolute, percent"),
        ({"table": "holding", "address": 0, "alarms": {}}, "alarms", "at least one"),
        (
            {"table": "holding", "address": 0, "alarms": {"low": 5, "high": 1}},
            "alarms.high",
            "below low",
        ),
        (
            {"table": "holding", "address": 0, "publish": "every-poll", "max_silence": 5},
            "max_silence",
            "on-change",
        ),
    ],
)
def test_tag_errors_name_the_field(
    base: dict[str, Any],
    invalid: Callable[..., Errors],
    tag: dict[str, Any],
    path: str,
    words: str,
) -> None:
    errors = paths(invalid(doc(base, tcp(tags=[{"name": "t", **tag}]))))
    key = f"devices[0].tags[0].{path}"
    assert key in errors, errors
    assert words in errors[key]


@pytest.mark.parametrize(
    ("tags", "path", "words"),
    [
        # a float32 at 10..11 and a uint16 at 11 overlap
        (
            [
                {"name": "a", "table": "holding", "address": 10, "type": "float32"},
                {"name": "b", "table": "holding", "address": 11},
            ],
            "tags[1].address",
            "overlaps tags[0]",
        ),
        # the same bit twice
        (
            [
                {"name": "a", "table": "holding", "address": 1, "type": "bit", "bit": 3},
                {"name": "b", "table": "holding", "address": 1, "type": "bit", "bit": 3},
            ],
            "tags[1].address",
            "overlaps",
        ),
        # bits over a 32-bit value make no sense
        (
            [
                {"name": "a", "table": "holding", "address": 1, "type": "int32"},
                {"name": "b", "table": "holding", "address": 2, "type": "bit", "bit": 3},
            ],
            "tags[1].address",
            "overlaps",
        ),
        (
            [
                {"name": "a", "table": "coil", "address": 1},
                {"name": "b", "table": "coil", "address": 1},
            ],
            "tags[1].address",
            "overlaps",
        ),
        (
            [
                {"name": "a", "table": "holding", "address": 1},
                {"name": "a", "table": "holding", "address": 2},
            ],
            "tags[1].name",
            "already used",
        ),
        ([{"name": "a", "node": "ns=2;s=x"}], "tags[0].node", "table+address"),
    ],
)
def test_device_errors_name_the_tag(
    base: dict[str, Any],
    invalid: Callable[..., Errors],
    tags: list[dict[str, Any]],
    path: str,
    words: str,
) -> None:
    errors = paths(invalid(doc(base, tcp(tags=tags))))
    assert f"devices[0].{path}" in errors, errors
    assert words in errors[f"devices[0].{path}"]


def test_the_same_address_in_two_tables_is_no_overlap(
    base: dict[str, Any], valid: Callable[..., Loaded]
) -> None:
    tags = [
        {"name": "a", "table": "holding", "address": 1},
        {"name": "b", "table": "input", "address": 1},
    ]
    valid(doc(base, tcp(tags=tags)))


def test_a_point_larger_than_max_registers(
    base: dict[str, Any], invalid: Callable[..., Errors]
) -> None:
    tags = [{"name": "s", "table": "holding", "address": 0, "type": "string", "length": 20}]
    errors = paths(invalid(doc(base, tcp(tags=tags, max_registers=10))))
    assert "max_registers 10" in errors["devices[0].tags[0].length"]
    tags = [{"name": "f", "table": "holding", "address": 0, "type": "float64"}]
    errors = paths(invalid(doc(base, tcp(tags=tags, max_registers=2))))
    assert "4 registers" in errors["devices[0].tags[0].type"]


@pytest.mark.parametrize(
    ("device", "path", "words"),
    [
        ({"address": None}, "address", "host:port"),
        ({"address": "plc 1"}, "address", "host:port"),
        ({"address": "10.0.0.1:70000"}, "address", "1-65535"),
        ({"serial": {"port": "/dev/ttyS0"}}, "serial", "not serial"),
        ({"security": {"policy": "None"}}, "security", "opcua"),
        ({"protocol": "modbus-rtu", "address": None}, "serial", "serial line"),
        ({"protocol": "opcua", "address": "192.168.50.10:4840"}, "address", "opc.tcp://"),
    ],
)
def test_device_source_errors(
    base: dict[str, Any],
    invalid: Callable[..., Errors],
    device: dict[str, Any],
    path: str,
    words: str,
) -> None:
    d = tcp(**device)
    if d.get("address") is None:
        d.pop("address")
    if d["protocol"] == "opcua":
        d["tags"] = [{"name": "t", "node": "ns=2;s=t"}]
    errors = paths(invalid(doc(base, d)))
    assert f"devices[0].{path}" in errors, errors
    assert words in errors[f"devices[0].{path}"]


def test_rtu_unit_id_and_opcua_tags(base: dict[str, Any], invalid: Callable[..., Errors]) -> None:
    errors = paths(invalid(doc(base, rtu(unit_id=0))))
    assert "broadcast" in errors["devices[0].unit_id"]
    opc = {
        "name": "ua",
        "protocol": "opcua",
        "address": "opc.tcp://192.168.50.20:4840",
        "tags": [{"name": "a", "table": "holding", "address": 0}, {"name": "b"}],
    }
    errors = paths(invalid(doc(base, opc)))
    assert "node, not a table" in errors["devices[0].tags[0].table"]
    assert "needs a node" in errors["devices[0].tags[1].node"]


def test_opcua_security_pairs(base: dict[str, Any], invalid: Callable[..., Errors]) -> None:
    opc = {
        "name": "ua",
        "protocol": "opcua",
        "address": "opc.tcp://h:4840",
        "security": {"policy": "Basic256Sha256", "username": "x"},
        "tags": [{"name": "a", "node": "ns=2;s=a"}],
    }
    errors = paths(invalid(doc(base, opc)))
    assert "Sign" in errors["devices[0].security.mode"]


def test_cross_device_rules(base: dict[str, Any], invalid: Callable[..., Errors]) -> None:
    errors = paths(
        invalid(doc(base, tcp(), tcp(), rtu("r1", 1), rtu("r2", 1), rtu("r3", 2, baud=9600)))
    )
    assert "already used by devices[0]" in errors["devices[1].name"]
    assert "unit id 1 on /dev/ttyS1" in errors["devices[3].unit_id"]
    assert "baud 19200 by devices[2]" in errors["devices[4].serial.baud"]


def test_cross_device_warnings(base: dict[str, Any], valid: Callable[..., Loaded]) -> None:
    loaded = valid(doc(base, tcp(), tcp(name="plc1b"), tcp(name="empty", tags=[], address="h")))
    assert any(
        w.startswith("devices[1].address: devices[0] polls the same") for w in loaded.warnings
    )
    assert "devices[2].tags: empty has no tags: nothing is read" in loaded.warnings


def test_errors_carry_the_yaml_line() -> None:
    text = """\
version: 1
interfaces: [{name: ot0, role: ot, addresses: [192.168.50.1/24]}]
devices:
  - name: plc1
    protocol: modbus-tcp
    address: 192.168.50.10
    tags:
      - {name: a, table: holding, address: 0}
      - name: b
        table: coil
        address: 1
        type: int32
"""
    with pytest.raises(ConfigInvalid) as e:
        load_text(text, "x.yaml")
    assert e.value.errors == [
        (
            "devices[0].tags[1].type",
            "type int32 lives in the input or holding table, not coil; coils and discrete "
            "inputs are type bool",
            12,
        )
    ]


def test_helpers() -> None:
    assert parse_host_port("[fd00::1]:1502") == ("fd00::1", 1502)
    assert parse_host_port("plc.local") == ("plc.local", 502)
    assert Serial(port="/dev/x", baud=9600, parity="E").frame_gap() == pytest.approx(
        3.5 * 11 / 9600
    )
    assert Serial(port="/dev/x", baud=115200).frame_gap() == 0.00175
    assert Serial(port="/dev/x", baud=19200, parity="N").char_time() == 10 / 19200
    dev = Device(
        name="d",
        protocol="opcua",
        address="opc.tcp://h:4840",
        tags=[{"name": "x", "node": "ns=2;s=x"}],
    )  # type: ignore[list-item]
    assert dev.points() == []
