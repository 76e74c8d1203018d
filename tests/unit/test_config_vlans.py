"""802.1Q VLANs (issue 12): `interfaces[].vlans`, each a link and a zone of its own role."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest

from appliance.config.check import check
from appliance.config.load import sha256_of
from appliance.config.model import Config
from appliance.net.render import render

BASE: dict[str, Any] = {
    "version": 1,
    "interfaces": [
        {"name": "it0", "role": "it", "addresses": ["10.10.0.1/24"]},
        {
            "name": "ot0",
            "role": "ot",
            "addresses": ["192.168.50.1/24"],
            "vlans": [{"id": 30, "role": "ot", "addresses": ["192.168.30.1/24"]}],
        },
    ],
    "conduits": [
        {
            "name": "cell-30",
            "owner": "ot-team",
            "reason": "SCADA polls the VLAN 30 cell",
            "from": ["10.10.0.2"],
            "to": ["192.168.30.10"],
            "services": ["modbus"],
        }
    ],
}


def doc(**vlan: Any) -> dict[str, Any]:
    out = copy.deepcopy(BASE)
    out["interfaces"][1]["vlans"][0].update(vlan)
    return out


def findings(data: dict[str, Any]) -> tuple[list[str], list[str]]:
    errors, warnings = check(Config.model_validate(data))
    return [f"{e.path}: {e.message}" for e in errors], [f"{w.path}: {w.message}" for w in warnings]


def test_a_vlan_is_a_link_named_after_its_nic_and_id() -> None:
    c = Config.model_validate(BASE)
    assert [(lk.name, lk.role, lk.parent) for lk in c.links()] == [
        ("it0", "it", None),
        ("ot0", "ot", None),
        ("ot0.30", "ot", "ot0"),
    ]
    assert [lk.name for lk in c.interfaces_by_role("ot")] == ["ot0", "ot0.30"]
    assert c.links()[2].mac is None  # found by name: it shares its NIC's MAC
    assert c.link_paths()[2][0] == "interfaces[1].vlans[0]"
    # the default name is written out, so the stored document says what the link is called
    again = Config.model_validate(c.canonical())
    assert again == c and again.links()[2].parent == "ot0"
    assert findings(BASE) == ([], [])


def test_a_document_without_vlans_keeps_its_hash() -> None:
    plain = copy.deepcopy(BASE)
    del plain["interfaces"][1]["vlans"]
    c = Config.model_validate(plain)
    assert "vlans" not in c.canonical()["interfaces"][1]
    assert sha256_of(c) == sha256_of(Config.model_validate(c.canonical()))


def test_a_conduit_to_a_vlan_subnet_is_on_the_ot_side() -> None:
    data = copy.deepcopy(BASE)
    data["conduits"][0]["from"] = ["192.168.30.10"]
    data["conduits"][0]["to"] = ["192.168.50.10"]
    errors, _ = findings(data)
    assert any(e.startswith("conduits[0].from[0]:") and "ot0.30" in e for e in errors), errors


@pytest.mark.parametrize(
    ("vlan", "path", "words"),
    [
        ({"id": 0}, None, "greater than or equal to 1"),
        ({"id": 4095}, None, "less than or equal to 4094"),
        ({"name": "ot0 30"}, None, "not a valid interface name"),
        ({"addresses": ["192.168.50.2/24"]}, "interfaces[1].vlans[0].addresses[0]", "overlaps"),
        ({"name": "it0"}, "interfaces[1].vlans[0].name", "already used by interfaces[0]"),
        ({"mtu": 9000}, "interfaces[1].vlans[0].mtu", "more than its NIC's MTU (1500)"),
        (
            {"routes": [{"to": "192.168.60.0/24", "via": "192.168.50.254"}]},
            "interfaces[1].vlans[0].routes[0].via",
            "not in a subnet of ot0.30's addresses",
        ),
        (
            {"gateway": "192.168.31.1"},
            "interfaces[1].vlans[0].gateway",
            "not in a subnet of ot0.30's addresses",
        ),
    ],
)
def test_bad_vlans_are_refused_at_their_path(vlan: dict, path: str | None, words: str) -> None:
    data = doc(**vlan)
    if path is None:  # a field rule: pydantic refuses it with its own path
        with pytest.raises(Exception, match=words):
            Config.model_validate(data)
        return
    errors, _ = findings(data)
    assert any(e.startswith(f"{path}:") and words in e for e in errors), errors


def test_one_id_once_per_nic() -> None:
    data = copy.deepcopy(BASE)
    data["interfaces"][1]["vlans"].append(
        {"id": 30, "name": "cell30b", "role": "ot", "addresses": ["192.168.31.1/24"]}
    )
    errors, _ = findings(data)
    assert errors == [
        "interfaces[1].vlans[1].id: VLAN 30 is already on ot0 (interfaces[1].vlans[0])"
    ]


def test_a_default_name_too_long_asks_for_a_name() -> None:
    data = copy.deepcopy(BASE)
    data["interfaces"][1]["name"] = "ot-north-cell1"
    errors, _ = findings(data)
    assert errors == [
        "interfaces[1].vlans[0].name: the default name ot-north-cell1.30 is longer than "
        "15 characters: give the VLAN a name"
    ]
    data["interfaces"][1]["vlans"][0]["name"] = "north30"
    assert findings(data) == ([], [])


def test_an_ot_vlan_on_the_it_nic_is_a_warning() -> None:
    data = copy.deepcopy(BASE)
    vlan = data["interfaces"][1].pop("vlans")[0]
    vlan["name"] = "cell30"
    data["interfaces"][0]["vlans"] = [vlan]
    errors, warnings = findings(data)
    assert errors == []
    assert warnings == [
        "interfaces[0].vlans[0].role: a ot VLAN on the it NIC it0: both sides share one "
        "cable and switch, so the switch is part of the demarcation"
    ]


def test_the_ruleset_matches_a_vlan_like_a_nic() -> None:
    commands = render(Config.model_validate(BASE), datetime.now(UTC)).commands
    adds = [c["add"] for c in commands if "add" in c]
    sets = {a["set"]["name"]: a["set"].get("elem", []) for a in adds if "set" in a}
    assert sets["if_ot"] == ["ot0", "ot0.30"]
    chains = [a["chain"]["name"] for a in adds if "chain" in a]
    assert "in_ot0.30" in chains  # what the unit answers on the VLAN (nothing by default)
