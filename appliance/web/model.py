"""The `web` section: where the UI listens and what it says at login."""

from __future__ import annotations

from pydantic import Field

from appliance.config.base import Strict


class Web(Strict):
    listen_it: bool = Field(False, description="also answer on the IT interface (mgmt always)")
    https_port: int = Field(443, ge=1, le=65535)
    http_port: int | None = Field(80, ge=1, le=65535, description="redirects to HTTPS; null: off")
    banner: str = Field("", max_length=2000, description="shown on the login page")
    metrics_allow: list[str] = Field(
        default_factory=list, description="addresses/networks that may read /metrics without token"
    )
    session_idle_minutes: int = Field(30, ge=1, le=1440)
    session_max_hours: int = Field(12, ge=1, le=168)
