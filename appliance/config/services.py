"""Named services a conduit may allow, and parsing of `tcp/502`-style service specs."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class Service:
    """One protocol and port range; proto `icmp` means echo (ping) and has no ports."""

    proto: str  # tcp | udp | icmp
    lo: int = 0
    hi: int = 0

    def __str__(self) -> str:
        if self.proto == "icmp":
            return "ping"
        return (
            f"{self.proto}/{self.lo}" if self.lo == self.hi else f"{self.proto}/{self.lo}-{self.hi}"
        )


def _p(proto: str, lo: int, hi: int | None = None) -> Service:
    return Service(proto, lo, lo if hi is None else hi)


# Industrial and common IT services by name. Sources: IANA registrations and the
# vendors' manuals (EtherNet/IP implicit I/O is udp/2222; S7 is ISO-TSAP on tcp/102).
NAMED: dict[str, tuple[Service, ...]] = {
    "modbus": (_p("tcp", 502),),
    "opcua": (_p("tcp", 4840),),
    "s7": (_p("tcp", 102),),
    "ethernet-ip": (_p("tcp", 44818), _p("udp", 44818), _p("udp", 2222)),
    "bacnet": (_p("udp", 47808),),
    "dnp3": (_p("tcp", 20000),),
    "iec104": (_p("tcp", 2404),),
    "fins": (_p("udp", 9600),),
    "mqtt": (_p("tcp", 1883),),
    "mqtts": (_p("tcp", 8883),),
    "http": (_p("tcp", 80),),
    "https": (_p("tcp", 443),),
    "ssh": (_p("tcp", 22),),
    "rdp": (_p("tcp", 3389),),
    "vnc": (_p("tcp", 5900),),
    "snmp": (_p("udp", 161),),
    "ntp": (_p("udp", 123),),
    "syslog": (_p("udp", 514),),
    "ping": (Service("icmp"),),
}

_SPEC = re.compile(r"^(tcp|udp)/(\d+)(?:-(\d+))?$")


@functools.lru_cache(maxsize=65536)
def parse_service(spec: str) -> tuple[Service, ...]:
    """`modbus`, `tcp/502`, `udp/1000-2000` or `ping`; ValueError names what is wrong."""
    spec = spec.strip().lower()
    if spec in NAMED:
        return NAMED[spec]
    m = _SPEC.match(spec)
    if not m:
        known = ", ".join(sorted(NAMED))
        raise ValueError(
            f"unknown service {spec!r}: use tcp/PORT, udp/PORT, tcp/LO-HI or one of {known}"
        )
    lo = int(m.group(2))
    hi = int(m.group(3)) if m.group(3) else lo
    for port in (lo, hi):
        if not 1 <= port <= 65535:
            raise ValueError(f"port must be 1-65535 (got {port})")
    if hi < lo:
        raise ValueError(f"port range {lo}-{hi} is reversed")
    return (Service(m.group(1), lo, hi),)
