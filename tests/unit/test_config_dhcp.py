"""`dhcp: true` on a NIC or VLAN (issue 12): the IPv4 address, default route and DNS servers
come from a lease; allowed on it and mgmt, on ot with a warning; a gateway beside it is an
error naming its path; documents without it keep their canonical form and hash."""

from __future__ import annotations

from typing import Any

import pytest

from appliance.config.check import check
from appliance.config.load import sha256_of, validate_data
from appliance.config.model import Config
from appliance.errors import ConfigInvalid

from . import factory


def findings(data: dict[str, Any]) -> tuple[list[str], list[str]]:
    errors, warnings = check(Config.model_validate(data))
    return [f"{e.path}: {e.message}" for e in errors], [f"{w.path}: {w.message}" for w in warnings]


def with_dhcp(n: int = 0, **extra: Any) -> dict[str, Any]:
    doc = factory.base()
    doc["interfaces"][n].update({"dhcp": True, **extra})
    return doc


def test_an_it_side_without_a_static_address_takes_dhcp() -> None:
    config = validate_data(with_dhcp(addresses=[])).config
    it = config.interfaces[0]
    assert it.dhcp and it.addresses == []
    assert config.canonical()["interfaces"][0]["dhcp"] is True
    assert findings(with_dhcp(addresses=[])) == ([], [])


def test_static_addresses_may_stay_beside_the_lease() -> None:
    config = validate_data(with_dhcp()).config
    assert config.interfaces[0].dhcp and [str(a) for a in config.interfaces[0].addresses] == [
        "10.10.0.1/24"
    ]


def test_no_dhcp_leaves_the_document_and_its_hash_as_before() -> None:
    plain = validate_data(factory.base()).config
    off = factory.base()
    off["interfaces"][0]["dhcp"] = False
    assert "dhcp" not in plain.canonical()["interfaces"][0]
    assert sha256_of(plain) == sha256_of(validate_data(off).config)
    assert sha256_of(plain) != sha256_of(validate_data(with_dhcp()).config)


def test_a_gateway_beside_dhcp_is_an_error_with_its_path() -> None:
    errors, _ = findings(with_dhcp(gateway="10.10.0.254"))
    assert errors == [
        "interfaces[0].gateway: it0 takes its IPv4 gateway from the DHCP lease: "
        "remove the gateway or dhcp"
    ]
    # an IPv6 gateway stays (DHCP here is IPv4)
    doc = with_dhcp(addresses=["10.10.0.1/24", "fd00:10::1/64"], gateway="fd00:10::fe")
    assert findings(doc) == ([], [])


def test_dhcp_on_the_ot_side_is_a_warning() -> None:
    errors, warnings = findings(with_dhcp(1))
    assert errors == []
    assert warnings == [
        "interfaces[1].dhcp: ot0 is on the OT side: its address comes from a DHCP server "
        "and may change; OT devices that route through it lose it then"
    ]


def test_a_vlan_takes_dhcp_too() -> None:
    doc = factory.base()
    doc["interfaces"][0]["vlans"] = [
        {"id": 40, "role": "mgmt", "dhcp": True, "gateway": "10.40.0.1"}
    ]
    errors, _ = findings(doc)
    assert errors == [
        "interfaces[0].vlans[0].gateway: it0.40 takes its IPv4 gateway from the DHCP lease: "
        "remove the gateway or dhcp"
    ]
    del doc["interfaces"][0]["vlans"][0]["gateway"]
    config = validate_data(doc).config
    assert config.interfaces[0].vlans[0].dhcp
    assert config.canonical()["interfaces"][0]["vlans"][0]["dhcp"] is True


def test_dhcp_must_be_a_boolean() -> None:
    with pytest.raises(ConfigInvalid) as e:
        validate_data(with_dhcp(dhcp="sometimes"))
    assert e.value.errors[0][0] == "interfaces[0].dhcp"
