"""The agent's configuration sections: what they refuse, with the path of the bad field."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from appliance.config.load import Loaded

FLEET = {"url": "https://fleet.example/api/v1/heartbeat", "token": "t0k3n"}


@pytest.mark.parametrize(
    ("section", "value", "path", "words"),
    [
        ("fleet", {**FLEET, "url": "http://fleet.example/hb"}, "fleet.url", "https://"),
        ("fleet", {**FLEET, "url": "https://"}, "fleet.url", "no host"),
        ("fleet", {**FLEET, "url": "https://f:99999/x"}, "fleet.url", "not a URL"),
        ("fleet", {**FLEET, "interval": 1}, "fleet.interval", "must be at least 5"),
        ("fleet", {"url": FLEET["url"]}, "fleet", "token or a client_cert"),
        ("fleet", {**FLEET, "client_cert": "/c.pem"}, "fleet", "go together"),
        ("fleet", {**FLEET, "outbox_max": 5}, "fleet.outbox_max", "must be at least 10"),
        ("syslog", [{"host": "siem", "transport": "udp", "ca_cert": "x"}], "syslog[0]", "tls"),
        ("syslog", [{"host": "a b"}], "syslog[0].host", "not a host"),
        ("syslog", [{"host": "siem", "min_severity": "loud"}], "syslog[0].min_severity", ""),
        ("syslog", [{"host": "siem", "facility": "kern"}], "syslog[0].facility", ""),
        ("webhooks", [{"url": "ftp://x/y"}], "webhooks[0].url", "https://"),
        ("leds", {"backend": "gpio"}, "leds", "needs a map"),
        ("leds", {"backend": "gpio", "map": {"power": 4}}, "leds", "unknown LED 'power'"),
    ],
)
def test_refused_with_the_path(
    base: dict[str, Any],
    invalid: Callable[..., list[tuple[str, str, int | None]]],
    section: str,
    value: Any,
    path: str,
    words: str,
) -> None:
    base[section] = value
    errors = invalid(base)
    assert errors, "accepted"
    p, msg, _ = errors[0]
    assert p == path, errors
    assert words in msg, errors


def test_accepted(base: dict[str, Any], valid: Callable[..., Loaded]) -> None:
    base["fleet"] = {**FLEET, "interval": 30, "outbox_max": 100}
    base["syslog"] = [
        {"host": "10.10.0.5", "transport": "tls", "ca_cert": "/etc/ssl/siem.pem"},
        {"host": "siem.example", "min_severity": "warning", "facility": "local3"},
    ]
    base["webhooks"] = [{"url": "http://10.10.0.9:8080/alarm"}]
    base["leds"] = {"backend": "gpio", "map": {"status": 17, "link": 27}, "button": {"pin": 22}}
    c = valid(base).config
    assert c.fleet is not None and c.fleet.interval == 30
    assert c.syslog[0].effective_port() == 6514
    assert c.leds.button is not None and c.leds.button.factory_reset is True
