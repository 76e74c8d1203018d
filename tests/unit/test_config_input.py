"""Hostile or mistaken input to the configuration: always one clear line naming the field.

Each case here came from an outside review of the configuration input (issue 18): numbers
too long to convert, control and format characters in free text, URLs and hosts that are
not, booleans where numbers belong, and garbage in web.metrics_allow.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from appliance.config.load import load_text, sha256_of
from appliance.errors import ConfigInvalid

from .factory import NOW

ROOT = Path(__file__).resolve().parents[2]
DEMO = (ROOT / "examples" / "demo.yaml").read_text()

Invalid = Callable[..., list[tuple[str, str, int | None]]]


def yaml_errors(text: str) -> ConfigInvalid:
    with pytest.raises(ConfigInvalid) as exc:
        load_text(text, "site.yaml", now=NOW)
    return exc.value


def one_line(e: ConfigInvalid) -> str:
    text = str(e)
    assert "\n" not in text and "\r" not in text, repr(text)
    for line in e.lines():
        assert "\n" not in line, repr(line)
    return text


# --- numbers too long to convert (Python refuses int() of more than 4300 digits) ---


def test_an_integer_of_5001_digits_is_a_clear_error_with_its_line() -> None:
    text = DEMO.replace("version: 1\n", "version: 1" + "0" * 5000 + "\n", 1)
    e = yaml_errors(text)
    assert "number too long" in one_line(e)
    line = DEMO.splitlines().index("version: 1") + 1
    assert e.errors[0][2] == line


def test_a_long_integer_deep_in_the_document_names_its_line() -> None:
    text = DEMO.replace("    addresses: [10.10.0.1/24]", "    mtu: " + "9" * 6000, 1)
    e = yaml_errors(text)
    assert "number too long" in one_line(e)
    line = DEMO.splitlines().index("    addresses: [10.10.0.1/24]") + 1
    assert e.errors[0][2] == line


# --- characters YAML itself refuses: one line, with the line number ---


def test_a_raw_nul_is_one_line_with_its_line_number() -> None:
    lines = DEMO.splitlines(keepends=True)
    at = next(i for i, ln in enumerate(lines) if ln.startswith("  site:"))
    lines[at] = "  site: Lab\0bench\n"
    e = yaml_errors("".join(lines))
    text = one_line(e)
    assert e.errors[0][2] == at + 1
    assert "U+0000" in text
    assert "<unicode string>" not in text


def test_yaml_syntax_errors_are_flattened_to_one_line() -> None:
    e = yaml_errors("version: 1\ninterfaces: [a\n")
    one_line(e)
    assert e.errors[0][2] is not None


# --- control and format characters in free text ---


@pytest.mark.parametrize(
    ("section", "path", "value"),
    [
        ("unit", "unit.site", "Lab\0bench"),
        ("unit", "unit.site", "Lab\x1b[31mbench"),
        ("unit", "unit.site", "Lab\x07bench"),
        ("unit", "unit.site", "Lab\u202ehcneb"),
        ("unit", "unit.site", "Lab\nbench"),
        ("unit", "unit.name", "demo\0unit"),
        ("unit", "unit.description", "a\0b"),
        ("conduit", "conduits[0].owner", "ot\0team"),
        ("conduit", "conduits[0].reason", "why\x00"),
        ("conduit", "conduits[0].description", "x\u200ey"),
        ("syslog", "syslog[0].host", "h\0st"),
        ("fleet", "fleet.url", "https://x/\r\nX-Evil: 1"),
        ("fleet", "fleet.token", "t0k\0en"),
        ("webhook", "webhooks[0].url", "https://hooks.example/a\0b"),
        ("web", "web.banner", "Authorised\x1b[2J users"),
        ("tag", "devices[0].tags[0].description", "a\0b"),
        ("tag", "devices[0].tags[0].unit", "deg\0C"),
        ("device", "devices[0].description", "PLC\x7f"),
        ("iface", "interfaces[0].description", "plant\u2066IT"),
        ("unit", "unit.site", "Lab\u2028bench"),
    ],
)
def test_control_and_format_characters_are_refused(
    base: dict[str, Any], invalid: Invalid, section: str, path: str, value: str
) -> None:
    doc = copy.deepcopy(base)
    _set(doc, path, value)
    errors = invalid(doc)
    assert errors[0][0] == path, errors
    assert "character" in errors[0][1], errors
    assert "\n" not in errors[0][1]


def test_descriptions_and_the_banner_may_have_several_lines(
    base: dict[str, Any], valid: Callable[..., Any]
) -> None:
    doc = copy.deepcopy(base)
    doc["unit"] = {"name": "u", "description": "line one\nline two\n\tindented"}
    doc["web"] = {"banner": "Authorised users only.\nEverything is logged.\n"}
    doc["conduits"][0]["reason"] = "SCADA polls PLC 1\nticket 1234"
    loaded = valid(doc)
    assert loaded.config.web.banner.count("\n") == 2


@pytest.mark.parametrize(
    ("path", "size"),
    [
        ("unit.site", 1_000_000),
        ("conduits[0].reason", 1_000_000),
        ("fleet.url", 1_000_000),
        ("conduits[0].owner", 10_000),
        ("unit.description", 100_000),
    ],
)
def test_free_text_has_a_length_cap(base: dict[str, Any], invalid: Invalid, path: str, size: int):
    doc = copy.deepcopy(base)
    value = "https://fleet.example/" + "a" * size if path == "fleet.url" else "a" * size
    _set(doc, path, value)
    errors = invalid(doc)
    assert errors[0][0] == path, errors
    assert "at most" in errors[0][1]


@pytest.mark.parametrize(
    "host",
    ["h st", "-siem", "siem..example", "a" * 64 + ".example", "siem_1$", "[::1]", "300.1.1.1"],
)
def test_syslog_host_must_be_a_host_name_or_address(
    base: dict[str, Any], invalid: Invalid, host: str
) -> None:
    doc = copy.deepcopy(base)
    doc["syslog"] = [{"host": host}]
    errors = invalid(doc)
    assert errors[0][0] == "syslog[0].host", errors


@pytest.mark.parametrize("host", ["siem", "siem.plant.example", "10.10.0.5", "fd00::5", "SIEM-1"])
def test_syslog_hosts_that_are_fine(
    base: dict[str, Any], valid: Callable[..., Any], host: str
) -> None:
    doc = copy.deepcopy(base)
    doc["syslog"] = [{"host": host}]
    valid(doc)


@pytest.mark.parametrize(
    "url",
    [
        "https://fleet example/hb",
        "https://fle\tet.example/hb",
        "https://-fleet.example/hb",
        "https://fleet..example/hb",
        "https://fleet.example/hb x",
        "https://fleet_$.example/hb",
    ],
)
def test_fleet_url_must_be_a_url(base: dict[str, Any], invalid: Invalid, url: str) -> None:
    doc = copy.deepcopy(base)
    doc["fleet"] = {"url": url, "token": "t0k3n"}
    errors = invalid(doc)
    assert errors[0][0] == "fleet.url", errors


@pytest.mark.parametrize(
    "url", ["https://hooks.example/a b", "http://ho\x00oks/x", "https://[zz::1]/x"]
)
def test_webhook_url_must_be_a_url(base: dict[str, Any], invalid: Invalid, url: str) -> None:
    doc = copy.deepcopy(base)
    doc["webhooks"] = [{"url": url}]
    errors = invalid(doc)
    assert errors[0][0] == "webhooks[0].url", errors


@pytest.mark.parametrize(
    "url",
    ["https://fleet.example/api/v1/heartbeat", "https://10.0.0.5:8443/hb", "https://[fd00::1]/hb"],
)
def test_fleet_urls_that_are_fine(base: dict[str, Any], valid: Callable[..., Any], url: str):
    doc = copy.deepcopy(base)
    doc["fleet"] = {"url": url, "token": "t0k3n"}
    valid(doc)


# --- type swaps: a boolean is not a number ---


def test_version_true_is_refused() -> None:
    e = yaml_errors(DEMO.replace("version: 1\n", "version: true\n", 1))
    assert e.errors[0][0] == "version"
    one_line(e)


def test_the_demo_still_validates_and_keeps_its_hash() -> None:
    """Stricter types and text must not change what a valid document hashes to (a new
    key with a default does, on purpose: the canonical document holds every default;
    last: history.events_*/audit_*)."""
    loaded = load_text(DEMO, "demo.yaml", now=NOW)
    assert sha256_of(loaded.config) == (
        "6267441264fea54ad326d55a33b810df0ab802ed34eb57449a2c45e11dd1bff1"
    )


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("version", True),
        ("version", 1.0),
        ("devices[0].unit_id", True),
        ("devices[0].retries", False),
        ("devices[0].tags[0].address", True),
        ("devices[0].tags[0].address", 3.0),
        ("devices[0].tags[0].address", "3"),
        ("web.https_port", True),
        ("web.session_idle_minutes", 30.0),
        ("interfaces[0].mtu", True),
        ("fleet.outbox_max", True),
        ("syslog[0].port", True),
        ("history.max_mb", True),
        ("opcua_server.port", True),
        ("devices[0].poll_interval", True),
        ("devices[0].poll_interval", "1.5"),
        ("devices[0].enabled", 1),
        ("conduits[0].enabled", "yes"),
    ],
)
def test_booleans_and_strings_are_not_numbers(
    base: dict[str, Any], invalid: Invalid, path: str, value: Any
) -> None:
    doc = copy.deepcopy(base)
    doc["devices"] = [
        {
            "name": "plc1",
            "protocol": "modbus-tcp",
            "address": "192.168.50.10:502",
            "tags": [{"name": "counter", "table": "holding", "address": 0}],
        }
    ]
    doc["fleet"] = {"url": "https://fleet.example/hb", "token": "t0k3n"}
    doc["syslog"] = [{"host": "siem"}]
    _set(doc, path, value)
    errors = invalid(doc)
    assert errors[0][0] == path, errors


def test_whole_numbers_stay_numbers_where_floats_go(
    base: dict[str, Any], valid: Callable[..., Any]
) -> None:
    doc = copy.deepcopy(base)
    doc["history"] = {"retention_days": 30, "flush_interval": 2}
    assert valid(doc).config.history.retention_days == 30.0


# --- web.metrics_allow ---


@pytest.mark.parametrize(
    "entry", ["garbage", "10.10.0.0/240", "10.10.0.1/24", "", "10.10.0.0/24\0"]
)
def test_metrics_allow_entries_are_addresses_or_networks(
    base: dict[str, Any], invalid: Invalid, entry: str
) -> None:
    doc = copy.deepcopy(base)
    doc["web"] = {"metrics_allow": ["10.10.0.0/24", entry]}
    errors = invalid(doc)
    assert errors[0][0] == "web.metrics_allow[1]", errors


def test_metrics_allow_accepts_addresses_and_networks(
    base: dict[str, Any], valid: Callable[..., Any]
) -> None:
    doc = copy.deepcopy(base)
    doc["web"] = {"metrics_allow": ["10.10.0.0/24", "10.99.0.1", "fd00::/64", " 10.10.1.7 "]}
    allow = valid(doc).config.web.metrics_allow
    assert allow == ["10.10.0.0/24", "10.99.0.1", "fd00::/64", "10.10.1.7"]


def _set(doc: dict[str, Any], path: str, value: Any) -> None:
    """Set `a.b[0].c` in doc, creating the sections the cases need."""
    parts: list[Any] = []
    for piece in path.replace("]", "").replace("[", ".").split("."):
        parts.append(int(piece) if piece.isdigit() else piece)
    defaults: dict[str, Any] = {
        "fleet": {"url": "https://fleet.example/hb", "token": "t0k3n"},
        "syslog": [{"host": "siem"}],
        "webhooks": [{"url": "https://hooks.example/x"}],
        "devices": [
            {
                "name": "plc1",
                "protocol": "modbus-tcp",
                "address": "192.168.50.10:502",
                "tags": [{"name": "counter", "table": "holding", "address": 0}],
            }
        ],
    }
    if parts[0] in defaults and parts[0] not in doc:
        doc[parts[0]] = copy.deepcopy(defaults[parts[0]])
    cur: Any = doc
    for part in parts[:-1]:
        if isinstance(part, str) and part not in cur:
            cur[part] = {}
        cur = cur[part]
    cur[parts[-1]] = value


@pytest.mark.parametrize(
    "path", ["interfaces[0].name", "conduits[0].name", "nat.port_forwards[0].name"]
)
def test_a_name_with_a_trailing_newline_is_refused(
    base: dict[str, Any], invalid: Invalid, path: str
) -> None:
    """`$` in a regex matches before a final newline: names are matched whole."""
    doc = copy.deepcopy(base)
    if path.startswith("nat."):
        doc["nat"] = {"port_forwards": [{"name": "x", "port": 8080, "to_address": "192.168.50.10"}]}
    _set(doc, path, "it0\n" if path.startswith("interfaces") else "scada\n")
    errors = invalid(doc)
    assert errors[0][0] == path, errors


# --- NaN and infinity: every float of the document is finite, said once --------------------


@pytest.mark.parametrize(
    ("old", "new", "path"),
    [
        ("    timeout: 1\n", "    timeout: .nan\n", "devices[0].timeout"),
        ("    timeout: 1\n", "    timeout: .inf\n", "devices[0].timeout"),
        ("    timeout: 1\n", "    timeout: -.inf\n", "devices[0].timeout"),
        ("    poll_interval: 1\n", "    poll_interval: .nan\n", "devices[0].poll_interval"),
        # poll_offset has no upper bound: ge=0 alone let .inf through
        ("    poll_interval: 1\n", "    poll_interval: 1\n    poll_offset: .inf\n", None),
        ("alarms: {high: 24, high_high: 24.8", "alarms: {high: .inf, high_high: 24.8", None),
        ("alarms: {high: 24, high_high: 24.8", "alarms: {high: 24, high_high: .nan", None),
        ("hysteresis: 0.3", "hysteresis: .nan", None),
        ("deadband: {absolute: 0.05}", "deadband: {absolute: .inf}", None),
        ("  retention_days: 30\n", "  retention_days: .nan\n", "history.retention_days"),
        ("  interval: 10\n", "  interval: .inf\n", "fleet.interval"),
    ],
)
def test_nan_and_infinity_are_one_error_saying_finite(old: str, new: str, path: str | None):
    assert old in DEMO
    e = yaml_errors(DEMO.replace(old, new, 1))
    assert len(e.errors) == 1, e.errors  # high: .inf also said "high_high is below high"
    where, message, _ = e.errors[0]
    assert message.startswith("must be a finite number, not "), e.errors
    assert "less than" not in message and "greater than" not in message
    if path is not None:
        assert where == path
