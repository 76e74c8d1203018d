"""A conduit's Modbus restriction (`modbus:`): the good shapes, each bad one named by path."""

from __future__ import annotations

from typing import Any

import pytest

from appliance.config.modbus import READ_ONLY, READ_WRITE


def restricted(base: dict[str, Any], modbus: Any, **fields: Any) -> dict[str, Any]:
    base["conduits"][0]["modbus"] = modbus
    base["conduits"][0].update(fields)
    return base


@pytest.mark.parametrize(
    ("text", "codes"),
    [("read-only", READ_ONLY), ("read-write", READ_WRITE), ("Read-Only", READ_ONLY)],
)
def test_presets(valid, base, text, codes) -> None:
    loaded = valid(restricted(base, text))
    m = loaded.config.conduits[0].modbus
    assert m.allowed_function_codes() == frozenset(codes)
    assert m.on_refusal == "exception"  # the documented default
    assert loaded.warnings == []
    # written back as it was given, so a revision's document reads as the person wrote it
    assert loaded.config.canonical()["conduits"][0]["modbus"] == text.lower()


def test_read_only_is_reads_and_device_identification() -> None:
    assert set(READ_ONLY) == {1, 2, 3, 4, 43}
    assert set(READ_WRITE) - set(READ_ONLY) == {5, 6, 15, 16, 22, 23}


def test_a_mapping(valid, base) -> None:
    loaded = valid(
        restricted(
            base,
            {
                "function_codes": [3, 16],
                "unit_ids": [1, 7],
                "ranges": {"holding": [[0, 99], [200, 200]]},
                "on_refusal": "reset",
            },
        )
    )
    m = loaded.config.conduits[0].modbus
    assert m.allowed_function_codes() == {3, 16}
    assert m.unit_ids == [1, 7]
    assert m.ranges.of("holding") == [[0, 99], [200, 200]]
    assert m.ranges.of("coil") == []
    assert m.on_refusal == "reset"
    assert m.describe() == "function codes 3, 16; units 1, 7; holding 0-99, 200-200"
    again = loaded.config.canonical()["conduits"][0]["modbus"]
    assert valid(restricted(base, again)).config.conduits[0].modbus == m


def test_a_preset_with_a_choice_stays_a_mapping(valid, base) -> None:
    loaded = valid(restricted(base, {"preset": "read-only", "on_refusal": "reset"}))
    assert loaded.config.conduits[0].modbus.allowed_function_codes() == frozenset(READ_ONLY)
    assert loaded.config.canonical()["conduits"][0]["modbus"]["on_refusal"] == "reset"


def test_a_tcp_502_service_is_modbus(valid, base) -> None:
    valid(restricted(base, "read-only", services=["tcp/502", "http"]))
    valid(restricted(base, "read-only", services=["tcp/500-510"]))


def test_a_table_the_codes_use_but_ranges_leave_out_is_a_warning(valid, base) -> None:
    loaded = valid(restricted(base, {"function_codes": [1, 3], "ranges": {"holding": [[0, 9]]}}))
    assert loaded.warnings == [
        "conduits[0].modbus.ranges: function code 1 (read coils) uses the coil table, which "
        "`ranges` does not list: every such request is refused"
    ]


BAD = [
    (
        "readonly",
        "conduits[0].modbus",
        "'readonly' is not a Modbus restriction: use read-only, read-write or a mapping with "
        "function_codes (and unit_ids, ranges, on_refusal)",
    ),
    (
        5,
        "conduits[0].modbus",
        "must be read-only, read-write or a mapping with function_codes (and unit_ids, "
        "ranges, on_refusal)",
    ),
    (
        {},
        "conduits[0].modbus",
        "give `function_codes` (a list) or `preset` (read-only or read-write)",
    ),
    (
        {"preset": "read-only", "function_codes": [3]},
        "conduits[0].modbus",
        "give `function_codes` or `preset`, not both",
    ),
    (
        {"preset": "write-only"},
        "conduits[0].modbus.preset",
        "must be read-only or read-write, not 'write-only'",
    ),
    (
        {"function_codes": []},
        "conduits[0].modbus.function_codes",
        "give at least one function code",
    ),
    (
        {"function_codes": [3, 99]},
        "conduits[0].modbus.function_codes[1]",
        "99 is not a public Modbus function code (1, 2, 3, 4, 5, 6, 7, 8, 11, 12, 15, 16, 17, "
        "20, 21, 22, 23, 24, 43)",
    ),
    (
        {"function_codes": [True]},
        "conduits[0].modbus.function_codes[0]",
        "must be a number, not true",
    ),
    (
        {"function_codes": ["3"]},
        "conduits[0].modbus.function_codes[0]",
        "must be a whole number, not '3'",
    ),
    ({"function_codes": 3}, "conduits[0].modbus.function_codes", "must be a list, not 3"),
    (
        {"function_codes": [3], "unit_ids": [256]},
        "conduits[0].modbus.unit_ids[0]",
        "must be at most 255, not 256",
    ),
    (
        {"function_codes": [3], "unit_ids": [-1]},
        "conduits[0].modbus.unit_ids[0]",
        "must be at least 0, not -1",
    ),
    (
        {"function_codes": [3], "on_refusal": "drop"},
        "conduits[0].modbus.on_refusal",
        "must be exception or reset, not 'drop'",
    ),
    (
        {"function_codes": [3], "ranges": {"holding": [[5, 1]]}},
        "conduits[0].modbus.ranges.holding[0]",
        "range 5-1 is reversed: write [low, high]",
    ),
    (
        {"function_codes": [3], "ranges": {"holding": [[0, 1, 2]]}},
        "conduits[0].modbus.ranges.holding[0]",
        "a range is [low, high] (two addresses 0-65535), not [0, 1, 2]",
    ),
    (
        {"function_codes": [3], "ranges": {"holding": [7]}},
        "conduits[0].modbus.ranges.holding[0]",
        "a range is [low, high] (two addresses 0-65535), not 7",
    ),
    (
        {"function_codes": [3], "ranges": {"holding": [[0, 65536]]}},
        "conduits[0].modbus.ranges.holding[0][1]",
        "must be at most 65535, not 65536",
    ),
    (
        {"function_codes": [3], "ranges": {"holding": [["a", 3]]}},
        "conduits[0].modbus.ranges.holding[0][0]",
        "must be a whole number, not 'a'",
    ),
    (
        {"function_codes": [3], "ranges": {"coils": [[0, 1]]}},
        "conduits[0].modbus.ranges.coils",
        "unknown key (did you mean 'coil'?)",
    ),
    (
        {"function_codes": [3], "ranges": [[0, 1]]},
        "conduits[0].modbus.ranges",
        "must be a set of keys and values (a YAML mapping or JSON object), not a list",
    ),
    (
        {"function_codes": [3], "unit": [1]},
        "conduits[0].modbus.unit",
        "unknown key (did you mean 'unit_ids'?)",
    ),
]


@pytest.mark.parametrize(("modbus", "path", "message"), BAD)
def test_bad_shapes(invalid, base, modbus, path, message) -> None:
    assert invalid(restricted(base, modbus)) == [(path, message, None)]


def test_needs_modbus_among_the_services(invalid, base) -> None:
    assert invalid(restricted(base, "read-only", services=["http"])) == [
        (
            "conduits[0].modbus",
            "restricts Modbus, but the conduit's services do not include modbus",
            None,
        )
    ]


def test_is_one_way(invalid, base) -> None:
    assert invalid(restricted(base, "read-only", direction="both")) == [
        (
            "conduits[0].direction",
            "a conduit with a Modbus restriction is one-way (the restriction checks the "
            "requests of connections opened from IT)",
            None,
        )
    ]


def test_is_ipv4_only(invalid, base) -> None:
    base["interfaces"][0]["addresses"].append("2001:db8:1::1/64")
    base["interfaces"][1]["addresses"].append("2001:db8:2::1/64")
    errors = invalid(
        restricted(
            base, "read-only", **{"from": ["10.10.0.2", "2001:db8:1::2"], "to": ["2001:db8:2::10"]}
        )
    )
    assert errors == [
        (
            "conduits[0].from[1]",
            "2001:db8:1::2/128 is IPv6: a Modbus restriction is IPv4 only for now",
            None,
        ),
        (
            "conduits[0].to[0]",
            "2001:db8:2::10/128 is IPv6: a Modbus restriction is IPv4 only for now",
            None,
        ),
    ]


def test_the_yaml_line_of_a_bad_range(base) -> None:
    from appliance.config.load import load_text
    from appliance.errors import ConfigInvalid

    text = """version: 1
interfaces:
  - {name: it0, role: it, addresses: [10.10.0.1/24]}
  - {name: ot0, role: ot, addresses: [192.168.50.1/24]}
conduits:
  - name: scada
    owner: ot-team
    reason: polls
    from: [10.10.0.2]
    to: [192.168.50.10]
    services: [modbus]
    modbus:
      function_codes: [3]
      ranges:
        holding: [[9, 0]]
"""
    with pytest.raises(ConfigInvalid) as exc:
        load_text(text)
    assert exc.value.errors == [
        ("conduits[0].modbus.ranges.holding[0]", "range 9-0 is reversed: write [low, high]", 15)
    ]


def test_the_schema_takes_a_preset_or_a_mapping() -> None:
    import jsonschema

    from appliance.config.model import Config

    schema = Config.model_json_schema()
    sub = {"$defs": schema["$defs"], **schema["$defs"]["ModbusRestriction"]}
    jsonschema.validate("read-only", sub)
    jsonschema.validate({"function_codes": [3], "ranges": {"holding": [[0, 9]]}}, sub)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate("write-only", sub)
