"""The `leds`, `fleet`, `syslog` and `webhooks` sections."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from appliance.config.base import Strict


class Button(Strict):
    """A push button on a GPIO pin: short press identify, 10 s hold factory reset."""

    pin: int | str
    pull_up: bool = True
    factory_reset: bool = True


class Leds(Strict):
    """Which LED means what, on which backend. Without a backend the unit has no LEDs."""

    backend: Literal["none", "gpio", "sysfs"] = "none"
    # LED role (status, fault, link...) -> GPIO pin (gpio) or /sys/class/leds name (sysfs)
    map: dict[str, int | str] = Field(default_factory=dict)
    active_high: bool = True
    sysfs_root: str = "/sys/class/leds"
    button: Button | None = None


class Fleet(Strict):
    """Where the heartbeat goes, how often, and how the unit proves who it is."""

    url: str = Field(description="https://fleet.example/api/v1/heartbeat")
    interval: float = Field(60, ge=5, le=86400)
    ca_cert: str | None = Field(None, description="PEM text or a file path of the CA to trust")
    token: str | None = Field(None, description="secret: the unit's token")
    client_cert: str | None = None
    client_key: str | None = Field(None, description="secret")
    outbox_max: int = Field(10_000, ge=10, le=1_000_000, description="heartbeats kept offline")


class Syslog(Strict):
    """RFC 5424 events to a SIEM."""

    host: str
    port: int | None = Field(None, ge=1, le=65535, description="default 514 (udp/tcp), 6514 tls")
    transport: Literal["udp", "tcp", "tls"] = "udp"
    ca_cert: str | None = None
    min_severity: Literal["debug", "info", "notice", "warning", "error", "critical"] = "info"


class Webhook(Strict):
    """An HTTP(S) POST of each alarm change."""

    url: str
    token: str | None = Field(None, description="secret: sent as Bearer")
    ca_cert: str | None = None
