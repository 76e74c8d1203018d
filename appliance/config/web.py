"""The `web` section: where the UI listens and what it says at login."""

from __future__ import annotations

import ipaddress
from typing import Annotated

from pydantic import AfterValidator, Field

from appliance.config.base import Bool, Float, Int, Line, Strict, Text


def _address_or_network(v: str) -> str:
    """An IP address or network (no host bits), as its normal text: `10.10.0.0/24`."""
    text = v.strip()
    try:
        if "/" not in text:
            return str(ipaddress.ip_address(text))
        return str(ipaddress.ip_network(text, strict=True))
    except ValueError as e:
        if "/" in text:
            try:
                loose = ipaddress.ip_network(text, strict=False)
            except ValueError:
                pass
            else:
                raise ValueError(f"{text} has host bits set; did you mean {loose}?") from None
        raise ValueError(f"{text!r} is not an IP address or network ({e})") from None


AllowEntry = Annotated[Line, AfterValidator(_address_or_network)]


class RateLimit(Strict):
    """How many API requests a second one source address, and one API token, may make
    (a token bucket: `burst` at once, then `per_source`/`per_bearer` a second); beyond,
    429 with Retry-After (IEC 62443-4-2 CR 7.1)."""

    per_source: Float = Field(50.0, ge=1, le=10_000, description="requests a second per address")
    per_bearer: Float = Field(50.0, ge=1, le=10_000, description="requests a second per API token")
    burst: Int = Field(200, ge=1, le=100_000, description="requests at once, then the rate")


class Web(Strict):
    listen_it: Bool = Field(False, description="also answer on the IT interface (mgmt always)")
    https_port: Int = Field(443, ge=1, le=65535)
    http_port: Int | None = Field(80, ge=1, le=65535, description="redirects to HTTPS; null: off")
    banner: Text = Field("", max_length=2000, description="shown on the login page")
    metrics_allow: list[AllowEntry] = Field(
        default_factory=list,
        max_length=256,
        description="IP addresses/networks that may read /metrics without token",
    )
    session_idle_minutes: Int = Field(30, ge=1, le=1440)
    session_max_hours: Int = Field(12, ge=1, le=168)
    rate_limit: RateLimit = Field(
        default_factory=RateLimit,
        # left out while unset: documents from before it keep their canonical form and hash
        exclude_if=lambda v: v == RateLimit(),
    )
