"""Error texts a person reads are plain sentences: many bad inputs (configuration documents
as the CLI and the UI's editors send them, the API's request bodies), none of whose
messages may carry a library's phrases ("input should be", "does not appear to be" ...)."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from appliance.config.load import validate_data
from appliance.config.plain import JARGON
from appliance.errors import ConfigInvalid

from .test_web_api import admin, commit_base
from .webkit import Web

ROOT = Path(__file__).resolve().parents[2]
DEMO = yaml.safe_load((ROOT / "examples" / "demo.yaml").read_text())
GONE = object()  # the key is removed


def jargon_in(text: str) -> list[str]:
    low = text.lower()
    return [p for p in JARGON if p in low]


def refusal(path: tuple[Any, ...], value: Any) -> list[tuple[str, str]]:
    doc = copy.deepcopy(DEMO)
    cur = doc
    for k in path[:-1]:
        cur = cur[k]
    if value is GONE:
        del cur[path[-1]]
    else:
        cur[path[-1]] = value
    with pytest.raises(ConfigInvalid) as exc:
        validate_data(doc)
    return [(p, m) for p, m, _ in exc.value.errors]


C = ("conduits", 0)
IF = ("interfaces", 0)
D = ("devices", 0)
T = ("devices", 0, "tags", 0)

# (path, bad value, the words the message must have)
CASES: list[tuple[tuple[Any, ...], Any, str]] = [
    ((*C, "services"), [], "give at least one service"),
    ((*C, "services"), "modbus", "must be a list"),
    ((*C, "services"), ["tcp/0"], "0 is not a port: ports are 1-65535"),
    ((*C, "services"), ["tcp/70000"], "70000 is not a port"),
    ((*C, "services"), ["udp/5-70000"], "port"),
    ((*C, "owner"), "", "may not be empty"),
    ((*C, "owner"), 5, "must be text"),
    ((*C, "owner"), GONE, "is required"),
    ((*C, "reason"), "", "may not be empty"),
    ((*C, "name"), "Bad Name", "a-z"),
    ((*C, "to"), ["10.10.0.300"], "'10.10.0.300' is not an IP address"),
    ((*C, "to"), ["10.0.0.1/33"], "is not an IP address"),
    ((*C, "from"), ["fe80::zz"], "is not an IP address"),
    ((*C, "to"), [], "give at least one OT host or network"),
    ((*C, "from"), [], "give at least one IT host or network"),
    ((*C, "from"), GONE, "is required"),
    ((*C, "direction"), "sideways", "must be one-way or both, not 'sideways'"),
    ((*C, "enabled"), "yes", "must be true or false"),
    ((*C, "expires"), "tomorrow", "must be a time like"),
    ((*C, "expires"), "2027-01-01T00:00:00", "needs a time zone"),
    ((*C, "servics"), ["x"], "did you mean 'services'"),
    (("conduits",), {"a": 1}, "must be a list"),
    (("conduits",), ["x"], "must be a set of keys and values"),
    ((*IF, "role"), "mgr", "must be it, ot or mgmt, not 'mgr'"),
    ((*IF, "mac"), "zz:zz", "is not a MAC address"),
    ((*IF, "addresses"), ["10.1.1.300/24"], "is not an address with prefix length"),
    ((*IF, "mtu"), 10, "must be at least 576"),
    ((*IF, "mtu"), "big", "must be a whole number"),
    ((*IF, "mtu"), 1500.5, "must be a whole number"),
    ((*D, "protocol"), "bacnet", "must be modbus-tcp, modbus-rtu or opcua"),
    ((*D, "poll_interval"), -1, "must be at least"),
    ((*D, "poll_interval"), "fast", "must be a number"),
    ((*D, "poll_interval"), float("nan"), "finite"),
    ((*T, "type"), "int7", "must be bool, bit"),
    ((*T, "table"), "registers", "must be coil, discrete, input or holding"),
    ((*T, "address"), 70000, "must be at most 65535"),
    ((*T, "alarms"), {"high": "x"}, "must be a number"),
    (("nat",), [{"x": 1}], "must be a set of keys and values"),
    (("nat",), {"port_forwards": [{"name": "a", "port": 0, "to": "192.168.50.10"}]}, "port"),
    (("unit", "name"), "", "may not be empty"),
    (("version",), 2, "must be 1"),
    (("web",), {"listen_it": "maybe"}, "must be true or false"),
    (("history",), {"retention_days": 0}, "must be more than 0"),
    (("opcua_server",), {"port": 0}, "0 is not a port"),
    (("opcua_server",), {"port": "x"}, "whole number"),
    (("fleet",), {"url": "notaurl"}, "https://"),
    (("syslog",), [{"host": ""}], "host"),
    (("leds",), {"x": 1}, "unknown key"),
    (("conduit",), [], "did you mean 'conduits'"),
]


@pytest.mark.parametrize(("path", "value", "words"), CASES)
def test_configuration_errors_are_plain_sentences(path: Any, value: Any, words: str) -> None:
    errors = refusal(path, value)
    for where, message in errors:
        assert not jargon_in(message), (where, message)
    assert any(words in m for _, m in errors), errors


def test_the_same_port_mistake_reads_the_same_on_nat_and_conduits() -> None:
    nat = refusal(("nat",), {"port_forwards": [{"name": "a", "port": 0, "to": "192.168.50.10"}]})
    conduit = refusal((*C, "services"), ["tcp/0"])
    port = "0 is not a port: ports are 1-65535"
    assert ("nat.port_forwards[0].port", port) in nat
    assert conduit == [("conduits[0].services[0]", port)]


def test_a_wrong_value_is_not_repeated_for_a_secret_field() -> None:
    from appliance.config.plain import sentence

    err = {"type": "string_type", "loc": ("fleet", "token"), "input": 12345678, "msg": "x"}
    assert sentence(err) == "must be text"
    err = {**err, "loc": ("fleet", "interval")}
    assert sentence(err) == "must be text, not 12345678"


# (path, method, body): the API's request bodies, validated by their own models
BODIES: list[tuple[str, str, Any]] = [
    ("/api/config/commit", "POST", {"confirm_within": 5}),
    ("/api/config/commit", "POST", {"confirm_within": "soon"}),
    ("/api/config/commit", "POST", {"confirm_within": 100_000}),
    ("/api/config/commit", "POST", {"comment": 3}),
    ("/api/config/commit", "POST", {"comment": "x" * 600}),
    ("/api/config/commit", "POST", {"confrm_within": 60}),
    ("/api/config/rollback", "POST", {"revision": 0}),
    ("/api/config/rollback", "POST", {"revision": "last"}),
    ("/api/tokens", "POST", {"name": ["x"]}),
    ("/api/tokens", "POST", {"role": "root"}),
    ("/api/users", "POST", {"username": "", "password": "", "role": "boss"}),
    ("/api/users", "POST", {}),
    ("/api/sql", "POST", {"query": 1}),
    ("/api/sql", "POST", {}),
    ("/api/conduits", "POST", {"name": "x", "owner": "", "from": [], "to": ["1.2.3.999"]}),
    ("/api/conduits", "POST", {"name": "x", "services": "modbus"}),
]


@pytest.mark.parametrize(("path", "method", "body"), BODIES)
def test_api_errors_are_plain_sentences(ready: Web, path: str, method: str, body: Any) -> None:
    if path == "/api/conduits":
        commit_base(ready)  # a conduit is validated inside the whole document
    c, h = admin(ready)
    r = c.open(path, method=method, json=body, headers=h)
    assert r.status_code in (400, 422), (r.status_code, r.json)
    texts = [r.json.get("error", "")] + [e["message"] for e in r.json.get("errors", [])]
    for text in texts:
        assert not jargon_in(text), (path, body, text)


def test_the_cli_says_the_same_plain_sentence(tmp_path: Path) -> None:
    doc = copy.deepcopy(DEMO)
    doc["conduits"][0]["services"] = []
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(doc, sort_keys=False))
    cp = subprocess.run(
        [sys.executable, "-m", "appliance", "config", "validate", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert cp.returncode == 2, cp.stderr
    assert "conduits[0].services: give at least one service" in cp.stderr
    assert not jargon_in(cp.stderr), cp.stderr
