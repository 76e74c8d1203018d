"""The net role's VLAN links (links.Links._vlan_links) against a fake netlink.

The CI machines' kernel has no 802.1Q (tests/integration/test_net_vlans.py checks the
refusal there), so what the net role asks netlink to do is checked here: a VLAN the
document names is added on its NIC with its id, one with another id is made again, one
the document no longer names goes, and a VLAN on a NIC the unit does not own is left."""

from __future__ import annotations

from typing import Any

from pyroute2.netlink.exceptions import NetlinkError

from appliance.config.model import Config
from appliance.net.links import Links


class Msg:
    """Enough of pyroute2's ifinfmsg for Links._links."""

    def __init__(self, index: int, name: str, mac: str, kind: str | None = None, **kw: Any):
        self.attrs = {"IFLA_IFNAME": name, "IFLA_ADDRESS": mac, "IFLA_LINK": kw.get("link")}
        self.fields = {"index": index, "flags": 1, "ifname": name, "address": mac}
        self.kind, self.vlan_id = kind, kw.get("vlan_id")

    def get_attr(self, name: str) -> Any:
        if name == "IFLA_LINKINFO":
            return None if self.kind is None else Info(self.kind, self.vlan_id)
        return self.attrs.get(name)

    def get(self, key: str, default: Any = None) -> Any:
        return self.fields.get(key, default)

    def __getitem__(self, key: str) -> Any:
        return self.fields[key]


class Info:
    def __init__(self, kind: str, vlan_id: int | None) -> None:
        self.kind, self.vlan_id = kind, vlan_id

    def get_attr(self, name: str) -> Any:
        if name == "IFLA_INFO_KIND":
            return self.kind
        if name == "IFLA_INFO_DATA":
            return Info("data", self.vlan_id)
        if name == "IFLA_VLAN_ID":
            return self.vlan_id
        return None


class FakeIPRoute:
    def __init__(self, links: list[Msg], refuse: bool = False) -> None:
        self.links, self.calls, self.refuse = links, [], refuse

    def get_links(self) -> list[Msg]:
        return self.links

    def link(self, cmd: str, **kw: Any) -> None:
        if cmd == "add" and self.refuse:
            raise NetlinkError(95, "Operation not supported")
        self.calls.append((cmd, kw))


OT_MAC = "02:a0:00:00:02:01"


def config(*vlans: dict) -> Config:
    return Config.model_validate(
        {
            "version": 1,
            "interfaces": [
                {"name": "ot0", "role": "ot", "mac": OT_MAC, "addresses": ["192.168.50.1/24"]}
                | ({"vlans": list(vlans)} if vlans else {})
            ],
        }
    )


def links_with(*msgs: Msg, refuse: bool = False) -> tuple[Links, FakeIPRoute]:
    ipr = FakeIPRoute(
        [Msg(2, "ot0", OT_MAC), Msg(3, "spare0", "02:00:00:00:00:09"), *msgs], refuse=refuse
    )
    lk = Links.__new__(Links)
    lk._ipr = ipr
    return lk, ipr


def test_a_vlan_the_document_names_is_added_on_its_nic() -> None:
    lk, ipr = links_with()
    changes, problems = lk._vlan_links(config({"id": 30, "role": "ot"}), lk._links())
    assert ipr.calls == [("add", {"ifname": "ot0.30", "kind": "vlan", "link": 2, "vlan_id": 30})]
    assert changes == ["added VLAN 30 (ot0.30 on ot0)"] and problems == []


def test_a_vlan_link_is_not_taken_for_its_nic() -> None:
    """A VLAN link has its NIC's MAC: the NIC is found by MAC among the links that are no VLAN."""
    lk, _ = links_with()
    links = [{**lk._links()[0], "index": 9, "name": "ot0.30", "kind": "vlan"}, *lk._links()]
    assert lk._find(config().interfaces[0], links)["index"] == 2


def test_a_vlan_already_there_is_left_alone() -> None:
    lk, ipr = links_with(Msg(4, "ot0.30", OT_MAC, "vlan", link=2, vlan_id=30))
    assert lk._vlan_links(config({"id": 30, "role": "ot"}), lk._links()) == ([], [])
    assert ipr.calls == []


def test_a_vlan_with_another_id_is_made_again() -> None:
    lk, ipr = links_with(Msg(4, "ot0.30", OT_MAC, "vlan", link=2, vlan_id=31))
    changes, _ = lk._vlan_links(config({"id": 30, "role": "ot"}), lk._links())
    assert ipr.calls == [
        ("del", {"index": 4}),
        ("add", {"ifname": "ot0.30", "kind": "vlan", "link": 2, "vlan_id": 30}),
    ]
    assert changes == ["removed VLAN 31 (ot0.30 on ot0)", "added VLAN 30 (ot0.30 on ot0)"]


def test_a_vlan_the_document_dropped_goes_but_not_one_on_a_nic_not_owned() -> None:
    lk, ipr = links_with(
        Msg(4, "ot0.30", OT_MAC, "vlan", link=2, vlan_id=30),
        Msg(5, "spare0.7", "02:00:00:00:00:09", "vlan", link=3, vlan_id=7),
    )
    changes, _ = lk._vlan_links(config(), lk._links())
    assert ipr.calls == [("del", {"index": 4})]
    assert changes == ["removed VLAN 30 (ot0.30 on ot0)"]


def test_a_kernel_without_8021q_is_named() -> None:
    lk, _ = links_with(refuse=True)
    changes, problems = lk._vlan_links(config({"id": 30, "role": "ot"}), lk._links())
    assert changes == []
    assert problems == [
        "ot0.30: VLAN 30 on ot0 cannot be made: this kernel has no 802.1Q VLAN support "
        "(CONFIG_VLAN_8021Q)"
    ]
