"""The `leds`, `fleet`, `syslog` and `webhooks` sections."""

from __future__ import annotations

import ipaddress
from typing import Literal
from urllib.parse import unquote, urlsplit

from pydantic import Field, ValidationInfo, field_validator, model_validator

from appliance.config.base import (
    Bool,
    Float,
    Int,
    Line,
    Pem,
    Secret,
    Strict,
    UrlText,
    check_host,
)
from appliance.config.redact import is_secret_query, redact_url

# a URL that may carry credentials: user info, query values and token-like path segments are
# redacted wherever a non-admin or support reads it (appliance.config.redact)
SECRET_URL = {"x-secret": "url"}

SEVERITY_ORDER: tuple[str, ...] = ("debug", "info", "notice", "warning", "error", "critical")
Severity = Literal["debug", "info", "notice", "warning", "error", "critical"]
FACILITIES: tuple[str, ...] = tuple(f"local{n}" for n in range(8))


def _http_url(v: str, schemes: tuple[str, ...]) -> str:
    text = v.strip()
    shown = redact_url(text)
    if any(c.isspace() for c in text):
        raise ValueError(f"{shown!r} is not a URL (it contains white space; write %20)")
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as e:
        raise ValueError(f"{shown!r} is not a URL ({e})") from None
    if parts.scheme not in schemes:
        raise ValueError(f"{shown!r} must start with {' or '.join(s + '://' for s in schemes)}")
    if not parts.hostname:
        raise ValueError(f"{shown!r} has no host")
    host = parts.hostname
    bracketed = "[" in parts.netloc.rpartition("@")[2]
    try:
        if bracketed:
            ipaddress.IPv6Address(host.split("%", 1)[0])
        else:
            check_host(host)
    except ValueError:
        raise ValueError(f"{shown!r}: {host!r} is not a host name or IP address") from None
    # `HTTPS://` is https://: stored in lower case, so that every later look at the scheme
    # (a token needs TLS, which TLS context) reads it as urlsplit did
    return parts.scheme + text[len(parts.scheme) :]


def url_credentials(url: str) -> list[str]:
    """What in `url` is a credential: user info (Basic auth) and query values of a secret
    name (`?key=`, `?api_key=`, `?sig=`); named, never quoted (for error messages)."""
    parts = urlsplit(url)
    found = []
    if "@" in parts.netloc:
        found.append("user:password@")
    names = [q.partition("=")[0] for q in parts.query.replace(";", "&").split("&") if "=" in q]
    found.extend(f"?{n}=" for n in names if is_secret_query(n))
    return found


def basic_auth(url: str) -> tuple[str, str] | None:
    """(user, password) of the URL's user info, percent-decoded; None without one."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return None
    return unquote(parts.username or ""), unquote(parts.password or "")


class Button(Strict):
    """A push button on a GPIO pin: short press identify, 10 s hold factory reset."""

    pin: Int | Line
    pull_up: Bool = True
    factory_reset: Bool = True


class Leds(Strict):
    """Which LED means what, on which backend. Without a backend the unit has no LEDs."""

    backend: Literal["none", "gpio", "sysfs"] = "none"
    # LED role (status, fault, link...) -> GPIO pin (gpio) or /sys/class/leds name (sysfs)
    map: dict[str, Int | Line] = Field(default_factory=dict)
    active_high: Bool = True
    sysfs_root: Line = "/sys/class/leds"
    button: Button | None = None

    @model_validator(mode="after")
    def _backend_needs_a_map(self) -> Leds:
        if self.backend != "none" and not self.map:
            raise ValueError(f"backend {self.backend} needs a map, e.g. {{status: 17, link: 27}}")
        unknown = sorted(set(self.map) - {"status", "link"})
        if unknown:
            raise ValueError(f"map: unknown LED {unknown[0]!r} (LEDs: status, link)")
        return self


class Fleet(Strict):
    """Where the heartbeat goes, how often, and how the unit proves who it is."""

    url: UrlText = Field(
        description="https://fleet.example/api/v1/heartbeat",
        json_schema_extra=SECRET_URL,
    )
    interval: Float = Field(60, ge=5, le=86400)
    ca_cert: Pem | None = Field(None, description="PEM text or a file path of the CA to trust")
    token: Secret | None = Field(None, description="secret: the unit's token")
    client_cert: Pem | None = None
    client_key: Pem | None = Field(None, description="secret")
    outbox_max: Int = Field(10_000, ge=10, le=1_000_000, description="heartbeats kept offline")
    timeout: Float = Field(10.0, gt=0, le=60, description="seconds per request")

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        return _http_url(v, ("https",))  # the heartbeat carries a token: TLS only

    @model_validator(mode="after")
    def _credentials(self) -> Fleet:
        if (self.client_cert is None) != (self.client_key is None):
            raise ValueError("client_cert and client_key go together")
        if self.token is None and self.client_cert is None:
            raise ValueError("the unit needs a token or a client_cert/client_key to authenticate")
        return self


class Syslog(Strict):
    """RFC 5424 events to a SIEM."""

    host: Line
    port: Int | None = Field(None, ge=1, le=65535, description="default 514 (udp/tcp), 6514 tls")
    transport: Literal["udp", "tcp", "tls"] = "udp"
    ca_cert: Pem | None = None
    min_severity: Severity = "info"
    facility: Literal[
        "local0", "local1", "local2", "local3", "local4", "local5", "local6", "local7"
    ] = "local0"

    @field_validator("host")
    @classmethod
    def _host(cls, v: str) -> str:
        return check_host(v)

    @model_validator(mode="after")
    def _ca_only_with_tls(self) -> Syslog:
        if self.ca_cert is not None and self.transport != "tls":
            raise ValueError("ca_cert is only used with transport: tls")
        return self

    def effective_port(self) -> int:
        return self.port or (6514 if self.transport == "tls" else 514)

    def label(self) -> str:
        return f"{self.transport}://{self.host}:{self.effective_port()}"


class Webhook(Strict):
    """An HTTP(S) POST of each alarm change."""

    url: UrlText = Field(
        description="where alarm changes are POSTed (http:// only without a token or "
        "credentials in the URL; user:password@ is sent as Basic auth)",
        json_schema_extra=SECRET_URL,
    )
    token: Secret | None = Field(None, description="secret: sent as Bearer, over https:// only")
    ca_cert: Pem | None = None
    timeout: Float = Field(10.0, gt=0, le=60, description="seconds per request")

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        url = _http_url(v, ("https", "http"))
        creds = url_credentials(url)
        if creds and not url.startswith("https://"):
            raise ValueError(
                f"credentials in the URL ({', '.join(creds)}) need https:// (they would "
                f"cross the network in clear text to {redact_url(url)})"
            )
        return url

    @field_validator("token")
    @classmethod
    def _token_needs_tls(cls, v: str | None, info: ValidationInfo) -> str | None:
        url = info.data.get("url")  # absent when the URL itself was refused
        if v and isinstance(url, str) and not url.startswith("https://"):
            raise ValueError(
                "a bearer token needs https:// (it would cross the network in clear text "
                f"to {redact_url(url)})"
            )
        if v and isinstance(url, str) and basic_auth(url) is not None:
            raise ValueError(
                "a bearer token or user:password@ in the URL (Basic auth), not both: "
                "one Authorization header is sent"
            )
        return v
