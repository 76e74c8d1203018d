"""The configuration document as pydantic models: one source for validation and schema.

Field-level rules live on the models; rules that relate several parts of the
document (overlaps, which side an address is on, unique names) live in
`appliance.config.check`, so that each error can name the exact path.
"""

from __future__ import annotations

import ipaddress
import re
from datetime import datetime
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BeforeValidator,
    Field,
    PlainSerializer,
    PrivateAttr,
    field_validator,
    model_validator,
)

from appliance.config.agent import Fleet, Leds, Syslog, Webhook
from appliance.config.base import Bool, Int, Line, Strict, Text, Version, check_name
from appliance.config.field import Device, History, Northbound
from appliance.config.modbus import ModbusRestriction
from appliance.config.netsvc import Dns, Time
from appliance.config.services import Service, parse_service
from appliance.config.web import Web

IPNet = ipaddress.IPv4Network | ipaddress.IPv6Network
IPIface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
IPAddr = ipaddress.IPv4Address | ipaddress.IPv6Address

_IFNAME = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")

ROLE_DEFAULT_ALLOW_IN: dict[str, tuple[str, ...]] = {
    "mgmt": ("ping",),  # plus the UI's ports (web.https_port, web.http_port unless null)
    "it": ("ping",),  # plus the UI's ports with web.listen_it, OPC UA with opcua_server
    "ot": (),
}


def _network(v: object) -> IPNet:
    if isinstance(v, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return v
    text = str(v).strip()
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError as e:
        try:
            loose = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise ValueError(f"{text!r} is not an IP address or network ({e})") from None
        raise ValueError(f"{text} has host bits set; did you mean {loose}?") from None


def _interface(v: object) -> IPIface:
    if isinstance(v, ipaddress.IPv4Interface | ipaddress.IPv6Interface):
        return v
    text = str(v).strip()
    if "/" not in text:
        raise ValueError(f"{text!r} needs a prefix length, e.g. {text}/24")
    try:
        return ipaddress.ip_interface(text)
    except ValueError as e:
        raise ValueError(f"{text!r} is not an address with prefix length ({e})") from None


def _address(v: object) -> IPAddr:
    if isinstance(v, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return v
    try:
        return ipaddress.ip_address(str(v).strip())
    except ValueError:
        raise ValueError(f"{v!r} is not an IP address") from None


def _ipv4(v: object) -> ipaddress.IPv4Address:
    a = _address(v)
    if not isinstance(a, ipaddress.IPv4Address):
        raise ValueError(f"{a} is IPv6; NAT is IPv4 only (IPv6 needs no NAT)")
    return a


Network = Annotated[IPNet, BeforeValidator(_network), PlainSerializer(str, return_type=str)]
Interface_ = Annotated[IPIface, BeforeValidator(_interface), PlainSerializer(str, return_type=str)]
Address = Annotated[IPAddr, BeforeValidator(_address), PlainSerializer(str, return_type=str)]
Address4 = Annotated[
    ipaddress.IPv4Address, BeforeValidator(_ipv4), PlainSerializer(str, return_type=str)
]
Port = Annotated[Int, Field(ge=1, le=65535)]


_check_name = check_name


def _check_service(v: str) -> str:
    parse_service(v)
    return v.strip().lower()


# Validated per item, so that an error names the item: `conduits[0].services[1]`.
ServiceSpec = Annotated[Line, AfterValidator(_check_service)]


class Unit(Strict):
    """Who this box is: shown in the UI, the heartbeat and the events."""

    name: Line = Field("appliance", min_length=1, max_length=64)
    site: Line = ""
    description: Text = ""


class Route(Strict):
    """A static route out of one interface: `to` a network, `via` a router on its subnet."""

    to: Network
    via: Address


def _ifname(v: str) -> str:
    if not _IFNAME.fullmatch(v):
        raise ValueError(f"{v!r} is not a valid interface name (1-15 of A-Z a-z 0-9 _ . -)")
    return v


IfName = Annotated[str, AfterValidator(_ifname)]
Role = Literal["it", "ot", "mgmt"]
# The settings a NIC and a VLAN on it share, declared once.
Addresses = Annotated[list[Interface_], Field(default_factory=list)]
Routes = Annotated[
    list[Route],
    Field(
        default_factory=list,
        # left out when empty: documents from before it keep their canonical form and hash
        exclude_if=lambda v: not v,
        description="static routes to networks behind a router on this interface's subnet "
        "(an OT cell behind an L3 switch): [{to: 192.168.60.0/24, via: 192.168.50.254}]",
    ),
]
Mtu = Annotated[Int | None, Field(None, ge=576, le=9216)]
Dhcp = Annotated[
    Bool,
    Field(
        False,
        # left out when false: documents from before it keep their canonical form and hash
        exclude_if=lambda v: not v,
        description="take an IPv4 address, default route and DNS servers from a DHCP server "
        "on this link (it and mgmt; on ot only when asked for: a warning); static addresses "
        "may stay beside the lease, a gateway may not (the lease gives it)",
    ),
]
AllowIn = Annotated[
    list[ServiceSpec] | None,
    Field(
        None,
        description="services the appliance itself answers on this NIC; default by role: "
        "mgmt ssh/https/http/ping, it ping (plus the web UI with web.listen_it and the OPC "
        "UA server when enabled), ot nothing",
    ),
]


def _allow_in(role: str, allow_in: list[str] | None) -> tuple[Service, ...]:
    specs = ROLE_DEFAULT_ALLOW_IN[role] if allow_in is None else allow_in
    out: list[Service] = []
    for spec in specs:
        out.extend(parse_service(spec))
    return tuple(sorted(set(out)))


class Vlan(Strict):
    """An 802.1Q sub-interface of the NIC it is listed under: a zone of its own role,
    matched by the ruleset like a physical NIC (its name in the role's interface set)."""

    id: Int = Field(ge=1, le=4094, description="the 802.1Q VLAN id (1-4094)")
    name: IfName | None = Field(
        None, description="the link's name; default <nic>.<id> (e.g. ot0.30)"
    )
    role: Role
    addresses: Addresses
    dhcp: Dhcp
    gateway: Address | None = None
    routes: Routes
    mtu: Mtu
    allow_in: AllowIn
    description: Text = ""
    _parent: str = PrivateAttr("")

    @property
    def mac(self) -> None:
        """A VLAN link has its NIC's MAC: it is found by name, never by MAC."""
        return None

    @property
    def parent(self) -> str:
        """The name of the NIC this VLAN rides on."""
        return self._parent

    def effective_allow_in(self) -> tuple[Service, ...]:
        return _allow_in(self.role, self.allow_in)


class Interface(Strict):
    """A NIC the appliance owns, matched by MAC (renamed to `name`) or, without MAC, by name."""

    name: IfName = Field(description="the name the appliance gives the NIC (and matches on)")
    role: Role
    mac: str | None = None
    addresses: Addresses
    dhcp: Dhcp
    gateway: Address | None = None
    routes: Routes
    mtu: Mtu
    allow_in: AllowIn
    description: Text = ""
    vlans: list[Vlan] = Field(
        default_factory=list,
        # left out when empty: documents from before it keep their canonical form and hash
        exclude_if=lambda v: not v,
        description="802.1Q VLAN sub-interfaces on this NIC, each a zone of its own role: "
        "[{id: 30, role: ot, addresses: [192.168.30.1/24]}]",
    )

    @field_validator("mac", mode="before")
    @classmethod
    def _mac(cls, v: object) -> object:
        if v is None:
            return v
        if isinstance(v, int):  # YAML 1.1 reads an unquoted 12:34:56:00:11:22 as base 60
            raise ValueError("a MAC address of digits only is a number to YAML: put it in quotes")
        text = str(v).strip().lower().replace("-", ":")
        if not _MAC.match(text):
            raise ValueError(f"{v!r} is not a MAC address like 02:a0:00:00:01:01")
        return text

    @model_validator(mode="before")
    @classmethod
    def _vlan_names(cls, data: object) -> object:
        """A VLAN without a name is called <nic>.<id> (when that fits in 15 characters)."""
        if not isinstance(data, dict) or not isinstance(data.get("vlans"), list):
            return data
        vlans = []
        for vlan in data["vlans"]:
            if isinstance(vlan, dict) and vlan.get("name") is None and "id" in vlan:
                name = f"{data.get('name')}.{vlan['id']}"
                if _IFNAME.fullmatch(name):
                    vlan = {**vlan, "name": name}
            vlans.append(vlan)
        return {**data, "vlans": vlans}

    @model_validator(mode="after")
    def _vlan_parent(self) -> Interface:
        for vlan in self.vlans:  # (a VLAN left without a name is an error of check())
            vlan._parent = self.name
        return self

    @property
    def parent(self) -> None:
        """A NIC rides on nothing (a VLAN's parent is its NIC's name)."""
        return None

    def effective_allow_in(self) -> tuple[Service, ...]:
        return _allow_in(self.role, self.allow_in)


# A link the net role holds and the ruleset names: a NIC or a VLAN on one.
Link = Interface | Vlan


class Conduit(Strict):
    """A named, owned, justified flow from IT hosts to OT hosts on some services."""

    name: Line
    owner: Line = Field(min_length=1, description="who answers for this conduit")
    reason: Text = Field(min_length=1, description="why it exists")
    expires: AwareDatetime | None = Field(
        None, description="ISO 8601 time with zone; the conduit stops passing traffic then"
    )
    from_: list[Network] = Field(alias="from", min_length=1)
    to: list[Network] = Field(min_length=1)
    services: list[ServiceSpec] = Field(min_length=1)
    direction: Literal["one-way", "both"] = "one-way"
    enabled: Bool = True
    description: Text = ""
    modbus: ModbusRestriction | None = Field(
        None,
        # left out when unset: documents from before it keep their canonical form and hash
        exclude_if=lambda v: v is None,
        description="restrict the conduit's Modbus (tcp/502): read-only, read-write, or a "
        "mapping of function_codes, unit_ids, ranges (0-based wire addresses) and on_refusal; "
        "every request is checked by the modbusproxy role",
    )

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _check_name(v, "conduit name")

    @field_validator("owner", "reason")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be blank")
        return v

    def parsed_services(self) -> tuple[Service, ...]:
        out: list[Service] = []
        for spec in self.services:
            out.extend(parse_service(spec))
        return tuple(out)

    def active(self, now: datetime) -> bool:
        return self.enabled and (self.expires is None or self.expires > now)


class OneToOne(Strict):
    """An IT-side address that stands for an OT host (both directions)."""

    it_address: Address4
    ot_address: Address4
    description: Text = ""


class PortForward(Strict):
    """A port on the appliance's IT address forwarded to an OT host."""

    name: Line
    protocol: Literal["tcp", "udp"] = "tcp"
    port: Port
    to_address: Address4
    to_port: Port | None = None
    description: Text = ""

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _check_name(v, "port forward name")


class Nat(Strict):
    one_to_one: list[OneToOne] = Field(default_factory=list)
    port_forwards: list[PortForward] = Field(default_factory=list)
    masquerade: Bool = Field(
        False,
        description="IT hosts reach OT as the appliance's OT address, so OT devices "
        "need no route (or gateway) to IT",
    )


class PassL2(Strict):
    """The L2 control traffic a bridge lets cross besides ARP (which always does)."""

    lldp: Bool = Field(
        False,
        description="forward LLDP (01:80:c2:00:00:0e, ethertype 0x88cc) between the ports, so "
        "switches and PROFINET tools see their neighbours through the unit",
    )
    stp: Bool = Field(
        False,
        description="forward spanning tree BPDUs (01:80:c2:00:00:00) between the ports, so a "
        "loop around the unit is detected by the plant's switches; the unit itself takes "
        "no part in spanning tree",
    )


class Bridge(Strict):
    """Transparent mode: the IT and OT ports are one Ethernet bridge ("bump in the wire"), so
    IT hosts and OT devices may share one IP subnet; the conduits still decide what IP
    traffic crosses, with default deny. ARP and IPv6 neighbour discovery cross; LLDP and
    spanning tree only when `pass_l2` says so; every other ethertype is dropped and counted.
    The ports carry no addresses; management stays on the mgmt interface."""

    name: IfName = Field("br0", description="the bridge link's name")
    ports: list[IfName] | None = Field(
        None,
        description="the interfaces bridged, by name (default: every interface with role it "
        "or ot); at least one IT and one OT port, VLANs and mgmt cannot be ports",
    )
    pass_l2: PassL2 = Field(default_factory=PassL2)
    description: Text = ""

    @field_validator("ports")
    @classmethod
    def _ports(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and len(set(v)) != len(v):
            dup = next(p for p in v if v.count(p) > 1)
            raise ValueError(f"{dup} is listed twice")
        return v


class Config(Strict):
    """One configuration document; a revision stores it whole."""

    version: Version = 1
    unit: Unit = Field(default_factory=Unit)
    interfaces: list[Interface] = Field(default_factory=list)
    conduits: list[Conduit] = Field(default_factory=list)
    nat: Nat = Field(default_factory=Nat)
    devices: list[Device] = Field(default_factory=list)
    history: History = Field(default_factory=History)
    opcua_server: Northbound = Field(default_factory=Northbound)
    leds: Leds = Field(default_factory=Leds)
    fleet: Fleet | None = None
    syslog: list[Syslog] = Field(default_factory=list)
    webhooks: list[Webhook] = Field(default_factory=list)
    web: Web = Field(default_factory=Web)
    # left out while unset: documents from before them keep their canonical form and hash
    time: Time = Field(default_factory=Time, exclude_if=lambda v: v == Time())
    dns: Dns = Field(default_factory=Dns, exclude_if=lambda v: v == Dns())
    bridge: Bridge | None = Field(
        None,
        # left out while unset: documents from before it keep their canonical form and hash
        exclude_if=lambda v: v is None,
        description="run as a transparent bridge between the IT and OT ports instead of a "
        "router (no re-addressing of OT): {ports: [it0, ot0], pass_l2: {lldp: true}}",
    )

    @property
    def mode(self) -> str:
        """`bridge` (transparent) or `routed` (the unit routes between IT and OT subnets)."""
        return "routed" if self.bridge is None else "bridge"

    def bridge_ports(self) -> list[Interface]:
        """The NICs in the bridge (none when routed): `bridge.ports` by name, else every
        NIC with role it or ot, in document order (a mgmt NIC named there is not one: an
        error of check())."""
        if self.bridge is None:
            return []
        sides = {i.name: i for i in self.interfaces if i.role in ("it", "ot")}
        if self.bridge.ports is None:
            return list(sides.values())
        return [sides[p] for p in self.bridge.ports if p in sides]

    def effective_allow_in(self, iface: Link) -> tuple[Service, ...]:
        """What the appliance answers on `iface`: its allow_in, else the role's defaults
        plus the services this document turns on there (the northbound OPC UA server on IT,
        the web UI's ports where it listens)."""
        own = iface.effective_allow_in()
        if iface.allow_in is not None:
            return own
        extra: list[str] = []
        if iface.role == "it" and self.opcua_server.enabled:
            extra.append(f"tcp/{self.opcua_server.port}")
        if iface.role == "mgmt" or (iface.role == "it" and self.web.listen_it):
            extra.append(f"tcp/{self.web.https_port}")
            if self.web.http_port is not None:
                extra.append(f"tcp/{self.web.http_port}")
        out = list(own)
        for spec in extra:
            out.extend(parse_service(spec))
        return tuple(sorted(set(out)))

    def links(self) -> list[Link]:
        """Every link the document names: each NIC, then the VLANs on it (document order)."""
        out: list[Link] = []
        for iface in self.interfaces:
            out.append(iface)
            out.extend(iface.vlans)
        return out

    def link_paths(self) -> list[tuple[str, Link]]:
        """`links()` with each one's path in the document (`interfaces[1].vlans[0]`)."""
        out: list[tuple[str, Link]] = []
        for n, iface in enumerate(self.interfaces):
            out.append((f"interfaces[{n}]", iface))
            out.extend((f"interfaces[{n}].vlans[{k}]", v) for k, v in enumerate(iface.vlans))
        return out

    def interfaces_by_role(self, role: str) -> list[Link]:
        """The links (NICs and VLANs) of one role."""
        return [i for i in self.links() if i.role == role]

    def canonical(self) -> dict:
        """The document as plain JSON data, keys as people write them."""
        return self.model_dump(mode="json", by_alias=True, exclude_defaults=False)
