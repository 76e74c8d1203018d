"""The unit's own network services: the time it keeps (NTP) and the names it looks up (DNS).

The net role owns both, as it owns the links and routes: it hands the time client (chrony)
its sources and writes the resolver's file, from the running revision, so commit-confirm
takes them back with the rest.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated

from pydantic import AfterValidator, Field, StringConstraints

from appliance.config.base import Float, Line, Strict, check_host

MAX_SERVERS = 8  # chrony takes more; a unit needs a few (resolv.conf reads only 3)


def _host(v: str) -> str:
    return check_host(v)


def _domain(v: str) -> str:
    try:
        ipaddress.ip_address(v.strip())
    except ValueError:
        return check_host(v)
    raise ValueError(f"{v!r} is an address: a search domain is a DNS name")


def _address(v: str) -> str:
    try:
        return str(ipaddress.ip_address(str(v).strip()))
    except ValueError:
        raise ValueError(f"{v!r} is not an IP address (a DNS server is given by address)") from None


Host = Annotated[Line, StringConstraints(max_length=253), AfterValidator(_host)]
Domain = Annotated[Line, StringConstraints(max_length=253), AfterValidator(_domain)]


def _unique(v: list[str]) -> list[str]:
    seen: set[str] = set()
    for item in v:
        if item.lower() in seen:
            raise ValueError(f"{item} is listed twice")
        seen.add(item.lower())
    return v


class Time(Strict):
    """The clock: NTP servers the unit keeps its time from (chrony), and when health says
    the clock is not kept."""

    ntp: Annotated[list[Host], AfterValidator(_unique)] = Field(
        default_factory=list,
        max_length=MAX_SERVERS,
        description="NTP servers (addresses or host names); none: the clock is not kept "
        "(health then only checks that it is plausible)",
    )
    unsynchronised_after_minutes: Annotated[Float, Field(ge=1, le=10080)] = Field(
        60.0,
        description="health says clock-unsynchronised (degraded) when no NTP server has been "
        "in sync for this long",
    )


class Dns(Strict):
    """The resolver: for the fleet URL, webhooks, syslog and NTP servers given by name."""

    servers: Annotated[list[Annotated[str, AfterValidator(_address)]], AfterValidator(_unique)] = (
        Field(
            default_factory=list,
            max_length=3,  # the resolver reads three (glibc MAXNS)
            description="DNS servers (IP addresses, at most 3)",
        )
    )
    search: Annotated[list[Domain], AfterValidator(_unique)] = Field(
        default_factory=list, max_length=6, description="search domains"
    )
