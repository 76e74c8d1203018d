"""The port list: netlink's links (faked as NicFacts) and a fake sysfs tree, labels, roles,
carrier changes; and one real netlink read of this process's loopback."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest

from appliance.config.load import validate_data
from appliance.net.links import COUNTERS, Links, NicFacts
from appliance.net.ports import (
    Labels,
    Ports,
    Sysfs,
    carrier_changes,
    parse_speed,
    ports_from,
)

from . import factory

IGB_MAC, VIRTIO_MAC, VETH_MAC = "00:1b:21:0a:0b:0c", "52:54:00:12:34:56", "02:a0:00:00:01:01"


def nic(index: int, name: str, mac: str | None, **kw: object) -> NicFacts:
    base: dict[str, object] = {
        "kind": None,
        "loopback": False,
        "admin_up": True,
        "carrier": True,
        "operstate": "UP",
        "counters": {k: 10 * index + i for i, k in enumerate(COUNTERS)},
    }
    base.update(kw)
    return NicFacts(index=index, name=name, mac=mac, **base)  # type: ignore[arg-type]


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")


def net_entry(
    sys: Path, device_dir: str, name: str, index: int, mac: str, speed: str, duplex: str
) -> Path:
    """/sys/devices/<device_dir>/net/<name> with its files, and /sys/class/net/<name> to it."""
    entry = sys / "devices" / device_dir / "net" / name
    write(entry / "ifindex", str(index))
    write(entry / "address", mac)
    write(entry / "speed", speed)
    write(entry / "duplex", duplex)
    link = sys / "class" / "net" / name
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(os.path.relpath(entry, link.parent))
    return entry


def bind_driver(sys: Path, device: Path, bus: str, driver: str) -> None:
    drv = sys / "bus" / bus / "drivers" / driver
    drv.mkdir(parents=True, exist_ok=True)
    (device / "driver").symlink_to(os.path.relpath(drv, device))


@pytest.fixture
def sysfs(tmp_path: Path) -> Path:
    """An igb NIC on PCI 0000:02:00.0 (1 Gb/s full), a virtio NIC on 0000:00:03.0 (speed
    unknown), a veth (the lab's NIC: no device), the loopback and a bridge."""
    sys = tmp_path / "sys"
    igb = net_entry(
        sys, "pci0000:00/0000:00:1c.0/0000:02:00.0", "enp2s0", 2, IGB_MAC, "1000", "full"
    )
    pci = igb.parents[1]
    (igb / "device").symlink_to(os.path.relpath(pci, igb))
    bind_driver(sys, pci, "pci", "igb")
    virtio = net_entry(
        sys, "pci0000:00/0000:00:03.0/virtio2", "eth0", 3, VIRTIO_MAC, "-1", "unknown"
    )
    vdev = virtio.parents[1]
    (virtio / "device").symlink_to(os.path.relpath(vdev, virtio))
    bind_driver(sys, vdev, "virtio", "virtio_net")
    net_entry(sys, "virtual", "it0", 4, VETH_MAC, "10000", "full")
    net_entry(sys, "virtual", "lo", 1, "00:00:00:00:00:00", "", "")
    net_entry(sys, "virtual", "br0", 5, "02:00:00:00:00:05", "10000", "unknown")
    return sys


def nics() -> list[NicFacts]:
    return [
        nic(1, "lo", "00:00:00:00:00:00", loopback=True, operstate="UNKNOWN"),
        nic(2, "enp2s0", IGB_MAC, parent="0000:02:00.0", parent_bus="pci"),
        nic(3, "eth0", VIRTIO_MAC, parent="virtio2", parent_bus="virtio"),
        nic(4, "it0", VETH_MAC, kind="veth"),
        nic(5, "br0", "02:00:00:00:00:05", kind="bridge"),
        nic(6, "it0.30", VETH_MAC, kind="vlan"),
    ]


def by_name(ports: list) -> dict:
    return {p.name: p for p in ports}


def test_every_nic_but_loopback_and_software_links_with_sysfs_facts(sysfs: Path) -> None:
    ports = Ports(nics, Sysfs(sysfs)).read(None)
    assert [p.name for p in ports] == ["enp2s0", "eth0", "it0"]
    igb, virtio, veth = ports
    assert (igb.mac, igb.driver, igb.pci_path) == (IGB_MAC, "igb", "0000:02:00.0")
    assert (igb.speed, igb.duplex, igb.carrier, igb.operstate) == (1000, "full", True, "UP")
    assert igb.counters == {k: 20 + i for i, k in enumerate(COUNTERS)}
    # a virtio NIC: the PCI device it hangs off; the kernel does not know its speed
    assert (virtio.driver, virtio.pci_path, virtio.speed, virtio.duplex) == (
        "virtio_net",
        "0000:00:03.0",
        None,
        None,
    )
    # the lab's veth: no device, the driver is its kind
    assert (veth.driver, veth.pci_path, veth.kind, veth.speed) == ("veth", None, "veth", 10000)
    assert all(p.label is None and p.role is None for p in ports)  # no profile, no config
    assert set(igb.as_dict()) >= {"name", "mac", "driver", "pci_path", "label", "carrier"}


def test_the_configured_role_by_mac_else_by_name(sysfs: Path) -> None:
    doc = factory.base()
    doc["interfaces"][0]["mac"] = IGB_MAC  # it0 by MAC: the NIC is (still) called enp2s0
    doc["interfaces"][1] = {"name": "eth0", "role": "ot", "addresses": ["192.168.50.1/24"]}
    cfg = validate_data(doc).config
    ports = by_name(Ports(nics, Sysfs(sysfs)).read(cfg))
    assert (ports["enp2s0"].role, ports["enp2s0"].interface) == ("it", "it0")
    assert (ports["eth0"].role, ports["eth0"].interface) == ("ot", "eth0")
    # a NIC called like an interface that is matched by MAC is not that interface
    assert ports["it0"].role is None and ports["it0"].interface is None


def test_labels_from_a_profile_by_pci_path_then_mac(sysfs: Path) -> None:
    labels = Labels(by_pci={"0000:02:00.0": "OT"}, by_mac={VETH_MAC: "IT", IGB_MAC: "not used"})
    ports = by_name(Ports(nics, Sysfs(sysfs), labels).read(None))
    assert ports["enp2s0"].label == "OT"  # the PCI path wins over the MAC
    assert ports["it0"].label == "IT"
    assert ports["eth0"].label is None


def test_another_namespaces_sysfs_is_not_read_as_ours(sysfs: Path) -> None:
    # the same names in this netns, other devices (other ifindex, other MAC): as a thread
    # that joined a namespace with setns still sees the host's /sys
    ours = [
        nic(7, "enp2s0", "02:00:00:00:00:07", parent="0000:05:00.0", parent_bus="pci"),
        nic(8, "it0", "02:00:00:00:00:08", kind="veth"),
        nic(2, "eth0", VIRTIO_MAC),  # ifindex of another entry, MAC of this one's: no
    ]
    ports = by_name(ports_from(ours, Sysfs(sysfs).facts, None))
    enp = ports["enp2s0"]
    assert (enp.driver, enp.speed, enp.duplex) == (None, None, None)
    assert enp.pci_path == "0000:05:00.0"  # netlink's parent device, right in any namespace
    assert (ports["it0"].driver, ports["it0"].speed) == ("veth", None)
    assert (ports["eth0"].driver, ports["eth0"].pci_path) == (None, None)


def test_no_sysfs_at_all(tmp_path: Path) -> None:
    ports = ports_from(nics(), Sysfs(tmp_path / "nothing").facts, None)
    assert [(p.name, p.driver, p.pci_path, p.speed) for p in ports] == [
        ("enp2s0", None, "0000:02:00.0", None),
        ("eth0", None, None, None),
        ("it0", "veth", None, None),
    ]


@pytest.mark.parametrize(
    ("text", "speed"),
    [("1000", 1000), ("10000", 10000), ("-1", None), ("4294967295", None), ("0", None),
     ("", None), ("fast", None), (None, None)],
)  # fmt: skip
def test_parse_speed(text: str | None, speed: int | None) -> None:
    assert parse_speed(text) == speed


def test_speed_unreadable_or_without_carrier_is_unknown(sysfs: Path) -> None:
    speed = sysfs / "class" / "net" / "enp2s0" / "speed"
    speed.unlink()
    speed.mkdir()  # reading it fails, as the kernel's EINVAL for a link that is down
    ports = by_name(Ports(nics, Sysfs(sysfs)).read(None))
    assert (ports["enp2s0"].speed, ports["enp2s0"].duplex) == (None, "full")
    down = [replace(n, carrier=False, operstate="DOWN") for n in nics()]
    ports = by_name(ports_from(down, Sysfs(sysfs).facts, None))
    assert ports["it0"].carrier is False
    assert (ports["it0"].speed, ports["it0"].duplex) == (None, None)  # 10000: the veth's word


def test_carrier_of_a_port_that_is_down_is_unknown(sysfs: Path) -> None:
    listed = [
        replace(n, admin_up=False, carrier=n.name == "eth0", operstate="DOWN") for n in nics()
    ]
    ports = by_name(ports_from(listed, Sysfs(sysfs).facts, None))
    assert ports["enp2s0"].carrier is None and ports["enp2s0"].admin_up is False
    assert ports["eth0"].carrier is True  # the kernel says so although it is down


def test_carrier_changes(sysfs: Path) -> None:
    doc = factory.base()
    doc["interfaces"][0]["mac"] = VETH_MAC
    cfg = validate_data(doc).config
    labels = Labels(by_mac={VETH_MAC: "IT"})
    before = ports_from(nics(), Sysfs(sysfs).facts, cfg, labels)
    lost = [replace(n, carrier=False) if n.name == "it0" else n for n in nics()]
    after = ports_from(lost, Sysfs(sysfs).facts, cfg, labels)
    [change] = carrier_changes(before, after)
    assert (change.kind, change.severity) == ("port.carrier_lost", "warning")
    assert change.message == "it0 (IT, it): carrier lost (no link)"
    assert change.data == {"port": "it0", "mac": VETH_MAC, "role": "it", "label": "IT"}
    [up] = carrier_changes(after, before)
    assert (up.kind, up.severity) == ("port.carrier_up", "info")
    assert up.message == "it0 (IT, it): carrier up: 10000 Mb/s full duplex"
    assert carrier_changes(before, before) == []
    # a port seen for the first time, or one whose carrier is unknown, is no change
    unknown = [replace(n, admin_up=False, carrier=False) for n in nics()]
    assert carrier_changes([], before) == []
    assert carrier_changes(before, ports_from(unknown, Sysfs(sysfs).facts, None)) == []
    assert carrier_changes(ports_from(unknown, Sysfs(sysfs).facts, None), after) == []


def test_netlink_facts_of_this_namespaces_loopback() -> None:
    links = Links()  # reads only: the links of the namespace pytest runs in
    try:
        facts = {n.name: n for n in links.nics()}
    finally:
        links.close()
    lo = facts["lo"]
    assert lo.loopback and lo.index == 1 and lo.kind is None
    assert set(lo.counters) == set(COUNTERS)
    assert all(isinstance(v, int) and v >= 0 for v in lo.counters.values())
    assert "lo" not in {
        p.name for p in ports_from(list(facts.values()), Sysfs(Path("/nonexistent")).facts, None)
    }
