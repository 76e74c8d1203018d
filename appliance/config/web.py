"""The `web` section: where the UI listens and what it says at login."""

from __future__ import annotations

import ipaddress
from typing import Annotated

from pydantic import AfterValidator, Field, model_validator

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


class Lockout(Strict):
    """When failed logins lock (IEC 62443-4-2 CR 1.11): after this many free failures
    each further one locks for `lock_seconds`, doubled per failure, at most
    `lock_max_seconds` (the web UI, API tokens, setup codes and the OPC UA server alike)."""

    free_failures: Int = Field(
        5, ge=1, le=100, description="failed logins of one account from one address, free"
    )
    free_failures_per_address: Int = Field(
        20, ge=1, le=1000, description="failed logins from one address (any account), free"
    )
    free_failures_per_account: Int = Field(
        10,
        ge=1,
        le=1000,
        description="addresses that failed one account, free (never counted from mgmt)",
    )
    lock_seconds: Float = Field(60.0, ge=1, le=86400, description="the first lock")
    lock_max_seconds: Float = Field(3600.0, ge=1, le=604800, description="the longest lock")

    @model_validator(mode="after")
    def _order(self) -> Lockout:
        if self.lock_max_seconds < self.lock_seconds:
            raise ValueError("lock_max_seconds must be at least lock_seconds")
        return self


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
    lockout: Lockout = Field(
        default_factory=Lockout,
        # left out while unset: documents from before it keep their canonical form and hash
        exclude_if=lambda v: v == Lockout(),
    )
