"""RFC 5424 messages parsed back by a strict grammar; PRI, escaping, limits, framing, filtering."""

from __future__ import annotations

import re
from typing import Any

import pytest

from appliance.agent.syslog import (
    escape_param,
    format_event,
    frame_octet_counting,
    pri,
    severity_passes,
)
from appliance.config.agent import Syslog

# RFC 5424 section 6, strictly: HEADER SP STRUCTURED-DATA [SP MSG]
PRINTUSASCII = r"[\x21-\x7e]"
TIMESTAMP = r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?(?:Z|[+-]\d{2}:\d{2})"
PARAM_VALUE = r'(?:[^"\\\]]|\\["\\\]])*'
SD_PARAM = r'[!#-<>-\\^-~]{1,32}="' + PARAM_VALUE + '"'
SD_ELEMENT = r"\[[!#-<>-\\^-~]{1,32}(?: " + SD_PARAM + r")*\]"
RFC5424 = re.compile(
    r"^<(?P<pri>\d{1,3})>(?P<version>1) "
    rf"(?P<timestamp>{TIMESTAMP}|-) "
    rf"(?P<hostname>{PRINTUSASCII}{{1,255}}) "
    rf"(?P<app>{PRINTUSASCII}{{1,48}}) "
    rf"(?P<procid>{PRINTUSASCII}{{1,128}}) "
    rf"(?P<msgid>{PRINTUSASCII}{{1,32}}) "
    rf"(?P<sd>-|(?:{SD_ELEMENT})+)"
    r"(?: (?P<msg>.*))?$",
    re.DOTALL,
)
PARAM = re.compile(r'([!#-<>-\\^-~]{1,32})="(' + PARAM_VALUE + ')"')


def parse(line: str) -> dict[str, Any]:
    m = RFC5424.match(line)
    assert m, f"not RFC 5424: {line!r}"
    out = m.groupdict()
    out["params"] = {k: re.sub(r"\\([\"\\\]])", r"\1", v) for k, v in PARAM.findall(out["sd"])}
    return out


EVENT = {
    "id": 42,
    "at": 1_767_225_600.25,  # 2026-01-01T00:00:00.25Z
    "source": "net",
    "kind": "net.drift",
    "severity": "warning",
    "message": "ruleset drift repaired",
    "data": {},
}


def test_a_formatted_event_parses_back() -> None:
    got = parse(format_event(EVENT, hostname="unit-7", procid=812))
    assert got["pri"] == str(16 * 8 + 4)
    assert got["hostname"] == "unit-7"
    assert got["app"] == "appliance"
    assert got["procid"] == "812"
    assert got["msgid"] == "net.drift"
    assert got["params"] == {"id": "42", "source": "net", "severity": "warning"}
    assert got["sd"].startswith("[event@32473 ")
    assert got["msg"] == "ruleset drift repaired"


def test_timestamp_has_microseconds_and_a_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    monkeypatch.setenv("TZ", "Europe/Berlin")
    time.tzset()
    try:
        got = parse(format_event(EVENT, hostname="h"))
        assert got["timestamp"] == "2026-01-01T01:00:00.250000+01:00"
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


@pytest.mark.parametrize(
    ("facility", "severity", "expected"),
    [
        ("local0", "critical", 130),
        ("local0", "error", 131),
        ("local0", "warning", 132),
        ("local0", "notice", 133),
        ("local0", "info", 134),
        ("local0", "debug", 135),
        ("local7", "info", 190),
        ("local0", "whatever", 134),
    ],
)
def test_pri(facility: str, severity: str, expected: int) -> None:
    assert pri(facility, severity) == expected


def test_param_values_are_escaped_and_survive_the_round_trip() -> None:
    nasty = 'a "quoted" \\ back]slash'
    assert escape_param(nasty) == 'a \\"quoted\\" \\\\ back\\]slash'
    ev = {**EVENT, "source": nasty}
    got = parse(format_event(ev, hostname="h"))
    assert got["params"]["source"] == nasty


def test_header_fields_are_printable_ascii_and_bounded() -> None:
    ev = {**EVENT, "kind": "a kind with spaces and ünïcode that is far too long to be an id"}
    line = format_event(ev, hostname="höst name", procid="")
    got = parse(line)
    assert got["msgid"] == "a_kind_with_spaces_and__n_code_t"
    assert len(got["msgid"]) == 32
    assert got["hostname"] == "h_st_name"
    assert got["procid"] == "-"


def test_message_is_utf8_without_bom() -> None:
    line = format_event({**EVENT, "message": "Tür zu: 25 °C"}, hostname="h")
    data = line.encode("utf-8")
    assert b"\xef\xbb\xbf" not in data
    assert parse(line)["msg"] == "Tür zu: 25 °C"


def test_empty_message_ends_after_structured_data() -> None:
    line = format_event({**EVENT, "message": ""}, hostname="h")
    assert line.endswith('severity="warning"]')
    assert parse(line)["msg"] is None


def test_octet_counting_frame() -> None:
    msg = "<134>1 - h appliance - x - ü".encode()
    assert frame_octet_counting(msg) == str(len(msg)).encode() + b" " + msg
    assert frame_octet_counting(msg).startswith(b"29 ")


@pytest.mark.parametrize(
    ("severity", "minimum", "passes"),
    [
        ("info", "info", True),
        ("debug", "info", False),
        ("warning", "warning", True),
        ("notice", "warning", False),
        ("critical", "error", True),
        ("odd", "info", True),
        ("odd", "notice", False),
    ],
)
def test_min_severity(severity: str, minimum: str, passes: bool) -> None:
    assert severity_passes(severity, minimum) is passes


def test_target_defaults_and_label() -> None:
    assert Syslog(host="siem").effective_port() == 514
    assert Syslog(host="siem", transport="tls").effective_port() == 6514
    assert Syslog(host="siem", transport="tcp", port=1514).label() == "tcp://siem:1514"


# -- the output bound (IEC 62443-4-2 CR 7.1 RE 1) -------------------------------------------


def test_an_event_storm_is_sent_at_the_bounded_rate_and_none_is_lost(
    store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from appliance.agent import outbox, syslog

    store.ensure(outbox.MODELS)
    sent: list[str] = []
    monkeypatch.setattr(syslog.Sender, "send", lambda self, line: sent.append(line))
    fwd = syslog.Forwarder(hostname="unit-1")
    fwd.configure([Syslog(host="192.0.2.9")], now=1000.0)
    storm = syslog.BURST_MAX + 300
    for n in range(storm):
        store.event("test.storm", f"event {n}", source="test", severity="warning", at=1000.0)
    assert fwd.forward(1000.0) == syslog.BURST_MAX  # the burst, then a pause
    assert fwd.forward(1000.0) == 0  # still paused
    assert fwd.forward(1001.0) == int(syslog.RATE_MAX)  # a second later: the rate
    while len(sent) < storm:
        before = len(sent)
        fwd.forward(1002.0 + len(sent))  # time enough for the rest
        assert len(sent) > before
    assert [ln.rsplit(" ", 1)[-1] for ln in sent] == [str(n) for n in range(storm)]
    assert fwd.live()[0]["paused"] >= 2
