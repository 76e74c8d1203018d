"""The unit's ports: every NIC of the namespace the net role runs in, configured or not.

A port is a link that is hardware (no IFLA_INFO_KIND) or a veth (the lab's "physical"
NICs); loopback and the links the kernel builds in software (bridges, VLANs, tunnels,
ifb...) are not ports. For each: name, MAC, driver, PCI path, the label on the case
(from the hardware profile: `Labels`), carrier, operstate, speed and duplex, counters,
and the configured interface (role, name) it carries.

Netlink (`links.Links.nics`) gives what it has: name, MAC, flags, carrier, operstate,
stats64, the kind of a virtual link, the parent device. Sysfs gives driver, PCI path,
speed and duplex. Sysfs shows the network namespace of whoever mounted it (`ip netns
exec` mounts one for the namespace it enters; a thread that only called setns sees the
host's): an entry is used only when its ifindex and MAC are the ones netlink reports
for that name, else those facts are unknown (None), never another namespace's NIC's.

Carrier: what the kernel says while the port is up. A port that is down (no role
configured for it) often cannot sense a cable (the PHY is off): its carrier is None
(unknown) unless the kernel reports one.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from appliance.config.model import Config
from appliance.net.links import COUNTERS, NicFacts

# The virtual link kinds that are NICs of a unit: the lab's veth pairs.
NIC_KINDS = frozenset({"veth"})
_PCI = re.compile(r"^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$")
SPEED_UNKNOWN = (0, 0xFFFFFFFF)  # and anything negative: the kernel's -1
DUPLEX = {"full": "full", "half": "half"}


@dataclass(frozen=True)
class Labels:
    """The hardware profile's names of the ports on the case (`MGMT`, `IT`, `OT`, ...),
    by PCI path or by MAC. No profile yet (the image issue brings them): `NO_LABELS`."""

    by_pci: Mapping[str, str] = field(default_factory=dict)
    by_mac: Mapping[str, str] = field(default_factory=dict)

    def label(self, pci_path: str | None, mac: str | None) -> str | None:
        if pci_path is not None and pci_path in self.by_pci:
            return self.by_pci[pci_path]
        if mac is not None:
            return self.by_mac.get(mac.lower())
        return None


NO_LABELS = Labels()


@dataclass(frozen=True)
class SysfsFacts:
    driver: str | None = None
    pci_path: str | None = None
    speed: int | None = None  # Mb/s
    duplex: str | None = None  # full | half


@dataclass
class Port:
    """One NIC of the unit as the port list shows it (the live document's `ports`)."""

    name: str
    mac: str | None
    driver: str | None
    pci_path: str | None  # the PCI address of the device the NIC is on (0000:02:00.0)
    label: str | None  # the profile's name on the case
    kind: str | None  # veth for the lab's NICs, None for hardware
    role: str | None  # mgmt / it / ot when the running configuration names this NIC
    interface: str | None  # the configured interface's name
    admin_up: bool
    carrier: bool | None  # None: unknown (the port is down)
    operstate: str
    speed: int | None  # Mb/s, while there is a carrier
    duplex: str | None
    counters: dict[str, int]
    index: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Sysfs:
    """Reads /sys/class/net/<name>/... (a fake tree in unit tests: `root`)."""

    def __init__(self, root: Path = Path("/sys")) -> None:
        self.net = Path(root) / "class" / "net"

    def _read(self, path: Path) -> str | None:
        try:
            return path.read_text().strip()
        except (OSError, UnicodeDecodeError):  # EINVAL for speed of a down link, no file
            return None

    def facts(self, nic: NicFacts) -> SysfsFacts:
        """Driver, PCI path, speed and duplex of `nic`; unknown when this sysfs's entry
        of that name is not that NIC (another namespace's sysfs)."""
        entry = self.net / nic.name
        if not self.same_nic(entry, nic):
            return SysfsFacts()
        device = entry / "device"
        driver = None
        try:
            driver = os.path.basename(os.readlink(device / "driver"))
        except OSError:  # a virtual NIC has no device, a device may have no driver bound
            pass
        return SysfsFacts(
            driver=driver,
            pci_path=pci_path_of(device),
            speed=parse_speed(self._read(entry / "speed")),
            duplex=DUPLEX.get((self._read(entry / "duplex") or "").lower()),
        )

    def same_nic(self, entry: Path, nic: NicFacts) -> bool:
        index, mac = self._read(entry / "ifindex"), self._read(entry / "address")
        return index == str(nic.index) and (mac or "").lower() == (nic.mac or "")


def pci_path_of(device: Path) -> str | None:
    """The PCI address nearest to the device (a NIC on a PCI function: that function; a
    virtio or USB NIC: the PCI device it hangs off), from the resolved sysfs path."""
    try:
        if not device.exists():
            return None
        parts = device.resolve().parts
    except OSError:
        return None
    found = [p for p in parts if _PCI.match(p)]
    return found[-1] if found else None


def parse_speed(text: str | None) -> int | None:
    try:
        value = int(text) if text is not None else None
    except ValueError:
        return None
    if value is None or value < 0 or value in SPEED_UNKNOWN:
        return None
    return value


def is_port(nic: NicFacts) -> bool:
    return not nic.loopback and (nic.kind is None or nic.kind in NIC_KINDS)


def roles_of(config: Config | None, nics: list[NicFacts]) -> dict[int, tuple[str, str]]:
    """NIC index -> (role, configured name): by the configured MAC, else by name, as the
    net role finds the NICs it owns (`links.Links`)."""
    out: dict[int, tuple[str, str]] = {}
    for iface in config.interfaces if config else []:
        for nic in nics:
            if nic.kind == "vlan":  # a VLAN on a NIC has its MAC: it is not the port
                continue
            hit = nic.mac == iface.mac if iface.mac else nic.name == iface.name
            if hit and nic.index not in out:
                out[nic.index] = (iface.role, iface.name)
                break
    return out


def ports_from(
    nics: list[NicFacts],
    sysfs: Callable[[NicFacts], SysfsFacts],
    config: Config | None,
    labels: Labels = NO_LABELS,
) -> list[Port]:
    """The port list from netlink's links, sysfs and the running configuration (by name)."""
    roles = roles_of(config, nics)
    out = []
    for nic in nics:
        if not is_port(nic):
            continue
        sf = sysfs(nic)
        pci = sf.pci_path
        if pci is None and nic.parent_bus == "pci" and nic.parent and _PCI.match(nic.parent):
            pci = nic.parent  # netlink's own word, right in any namespace
        carrier: bool | None = nic.carrier if nic.admin_up or nic.carrier else None
        role, iface = roles.get(nic.index, (None, None))
        out.append(
            Port(
                name=nic.name,
                mac=nic.mac,
                driver=sf.driver or nic.kind,
                pci_path=pci,
                label=labels.label(pci, nic.mac),
                kind=nic.kind,
                role=role,
                interface=iface,
                admin_up=nic.admin_up,
                carrier=carrier,
                operstate=nic.operstate,
                speed=sf.speed if carrier else None,
                duplex=sf.duplex if carrier else None,
                counters={k: int(nic.counters.get(k, 0)) for k in COUNTERS},
                index=nic.index,
            )
        )
    return sorted(out, key=lambda p: p.name)


@dataclass(frozen=True)
class CarrierChange:
    kind: str  # port.carrier_up | port.carrier_lost
    severity: str
    message: str
    data: dict[str, Any]


def carrier_changes(before: list[Port], after: list[Port]) -> list[CarrierChange]:
    """A port seen both times (by ifindex) whose carrier went from known to the other
    known value: one change each. Unknown (None) is no change either way."""
    was = {p.index: p.carrier for p in before}
    out = []
    for p in after:
        old = was.get(p.index)
        if old is None or p.carrier is None or old == p.carrier:
            continue
        tags = ", ".join(x for x in (p.label, p.role) if x)
        what = f"{p.name} ({tags})" if tags else p.name
        data = {"port": p.name, "mac": p.mac, "role": p.role, "label": p.label}
        if p.carrier:
            speed = f": {p.speed} Mb/s" if p.speed else ""
            speed += f" {p.duplex} duplex" if p.speed and p.duplex else ""
            out.append(CarrierChange("port.carrier_up", "info", f"{what}: carrier up{speed}", data))
        else:
            out.append(
                CarrierChange(
                    "port.carrier_lost", "warning", f"{what}: carrier lost (no link)", data
                )
            )
    return out


class Ports:
    """The port list of this namespace: netlink's links (`nics`, e.g. `Links.nics`) and
    sysfs, labelled by the hardware profile."""

    def __init__(
        self,
        nics: Callable[[], list[NicFacts]],
        sysfs: Sysfs | None = None,
        labels: Labels = NO_LABELS,
    ) -> None:
        self.nics = nics
        self.sysfs = sysfs or Sysfs()
        self.labels = labels

    def read(self, config: Config | None) -> list[Port]:
        return ports_from(self.nics(), self.sysfs.facts, config, self.labels)
