"""Bridge (transparent) mode in the document (issue 12): `bridge:`, its ports, what it refuses."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from pydantic import ValidationError

from appliance.config.check import check
from appliance.config.load import sha256_of
from appliance.config.model import Config

from .factory import base

BRIDGED: dict[str, Any] = {
    "version": 1,
    "interfaces": [
        {"name": "it0", "role": "it", "mac": "02:a0:00:00:01:01"},
        {"name": "ot0", "role": "ot", "mac": "02:a0:00:00:02:01"},
        {"name": "mgmt0", "role": "mgmt", "addresses": ["10.99.0.2/30"]},
    ],
    "bridge": {},
    "conduits": [
        {
            "name": "scada-modbus",
            "owner": "ot-team",
            "reason": "SCADA polls PLC 1 through the bridge",
            "from": ["192.168.50.2"],
            "to": ["192.168.50.10"],
            "services": ["modbus"],
        }
    ],
}


def doc(**changes: Any) -> dict[str, Any]:
    out = copy.deepcopy(BRIDGED)
    out.update(changes)
    return out


def errors_of(data: dict[str, Any]) -> list[str]:
    errors, _warnings = check(Config.model_validate(data))
    return [f"{e.path}: {e.message}" for e in errors]


def test_a_bridge_bridges_the_it_and_ot_nics_by_default() -> None:
    c = Config.model_validate(BRIDGED)
    assert c.mode == "bridge"
    assert c.bridge is not None and c.bridge.name == "br0"
    assert [p.name for p in c.bridge_ports()] == ["it0", "ot0"]
    assert not c.bridge.pass_l2.lldp and not c.bridge.pass_l2.stp  # closed unless asked
    assert errors_of(BRIDGED) == []


def test_same_subnet_on_both_sides_is_fine_in_bridge_mode() -> None:
    # the point of the mode: the IT host and the PLC share 192.168.50.0/24
    data = doc()
    data["conduits"][0]["to"] = ["192.168.50.0/28"]
    assert errors_of(data) == []


def test_routed_documents_keep_their_form_and_hash() -> None:
    c = Config.model_validate(base())
    assert c.mode == "routed" and c.bridge_ports() == []
    assert "bridge" not in c.canonical()
    assert sha256_of(c) == sha256_of(Config.model_validate(base()))


def test_named_ports() -> None:
    data = doc(bridge={"ports": ["ot0", "it0"], "pass_l2": {"lldp": True}})
    c = Config.model_validate(data)
    assert [p.name for p in c.bridge_ports()] == ["ot0", "it0"]
    assert c.bridge is not None and c.bridge.pass_l2.lldp
    assert errors_of(data) == []


@pytest.mark.parametrize(
    ("ports", "expected"),
    [
        (
            ["it0", "ot9"],
            [
                "bridge.ports[1]: no interface is named ot9",
                "bridge.ports: a bridge needs a port with role ot",
                "interfaces[1]: ot0 (ot) is not a bridge port: in bridge mode every it and ot "
                "interface is one (add it to bridge.ports)",
            ],
        ),
        (
            ["it0", "ot0", "mgmt0"],
            ["bridge.ports[2]: mgmt0 is the management interface: it stays off the bridge"],
        ),
        (
            ["it0"],
            [
                "bridge.ports: a bridge needs a port with role ot",
                "interfaces[1]: ot0 (ot) is not a bridge port: in bridge mode every it and ot "
                "interface is one (add it to bridge.ports)",
            ],
        ),
    ],
)
def test_bad_ports_are_named_by_path(ports: list[str], expected: list[str]) -> None:
    assert errors_of(doc(bridge={"ports": ports})) == expected


def test_a_vlan_cannot_be_a_port() -> None:
    data = doc(bridge={"ports": ["it0", "ot0", "ot0.30"]})
    data["interfaces"][1]["vlans"] = [{"id": 30, "role": "ot"}]
    assert "bridge.ports[2]: ot0.30 is a VLAN: only a NIC can be a bridge port" in errors_of(data)


def test_a_port_listed_twice_is_refused_by_the_model() -> None:
    with pytest.raises(ValidationError) as e:
        Config.model_validate(doc(bridge={"ports": ["it0", "it0", "ot0"]}))
    err = e.value.errors()[0]
    assert err["loc"] == ("bridge", "ports") and "it0 is listed twice" in err["msg"]


def test_the_bridge_name_must_be_free() -> None:
    assert errors_of(doc(bridge={"name": "mgmt0"})) == [
        "bridge.name: mgmt0 is already the name of an interface or VLAN"
    ]


@pytest.mark.parametrize(
    ("key", "value", "what"),
    [
        ("addresses", ["192.168.50.1/24"], "addresses"),
        ("routes", [{"to": "10.0.0.0/8", "via": "192.168.50.254"}], "routes"),
        ("dhcp", True, "DHCP"),
        ("allow_in", ["ping"], "services of the unit (allow_in)"),
    ],
)
def test_a_port_carries_nothing_of_its_own(key: str, value: Any, what: str) -> None:
    data = doc()
    data["interfaces"][1][key] = value
    if key == "routes":
        data["interfaces"][1]["addresses"] = ["192.168.50.1/24"]
    found = errors_of(data)
    assert (
        f"interfaces[1].{key}: ot0 is a bridge port: it carries no {what} "
        "(the unit is reached on its mgmt interface)"
    ) in found


def test_modbus_restriction_and_nat_need_the_routed_mode() -> None:
    data = doc(nat={"masquerade": True})
    data["conduits"][0]["modbus"] = "read-only"
    found = errors_of(data)
    assert (
        "conduits[0].modbus: a Modbus restriction needs the routed mode (the Modbus proxy is "
        "not in a bridge's path)"
    ) in found
    assert "nat: NAT needs the routed mode: a bridge does not translate" in found


def test_unknown_bridge_keys_are_errors() -> None:
    with pytest.raises(ValidationError) as e:
        Config.model_validate(doc(bridge={"pass_l2": {"cdp": True}}))
    assert e.value.errors()[0]["loc"] == ("bridge", "pass_l2", "cdp")
