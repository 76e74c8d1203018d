"""End to end: the whole appliance (`appliance run --roles net,field,opcua,agent,web`) in the full
lab (prefix "e2", no management link) with the demo configuration committed, checked
through what people and machines see: the conduit, `appliance tags` and its history,
the fleet receiver (heartbeats, events, identify), the syslog sink, the web UI (setup,
API, a write that reaches the PLC), the northbound OPC UA server, diagnostics,
`appliance status` and health, alarms (limits, communication loss, across a restart), a
configuration change, and the supervisor restarting a killed role.

One lab and one appliance for the module (~20 s to build, ~80 s in all); tests run in
file order and each checks one area, but each waits for what it needs so one can be run
alone (-k). The temperature alarm test comes late so the demo's 60 s temperature wave
has time to cross its high limit while the others run.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sqlite3
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from e2ekit import (
    COUNTERS,
    DEMO_DEVICES,
    E2E,
    ROLES,
    first_admin,
    https_session,
    modbus_holding,
    opcua_read,
    parse_syslog,
    start,
    stop,
    wait_until,
)
from labkit import modbus_read

from appliance.lab import demo, topology

pytestmark = pytest.mark.integration

PLC1, PLC2 = "192.168.50.10", "192.168.50.11"
IT_HOST = "10.10.0.2"


@pytest.fixture(scope="module")
def e2e(tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2E]:
    if os.geteuid() != 0:
        pytest.skip("integration tests need root: they create network namespaces and nftables")
    root: Path = tmp_path_factory.mktemp("e2")
    lab = start(root)
    try:
        yield lab
    finally:
        stop(lab.spec)


def _device_tags(tags: dict[str, dict[str, Any]], device: str) -> dict[str, dict[str, Any]]:
    return {n: t for n, t in tags.items() if t["device"] == device}


def _all_good(tags: dict[str, dict[str, Any]]) -> list[str]:
    """What keeps the demo's tags from being all there and good (empty: nothing)."""
    problems = []
    for device in DEMO_DEVICES:
        mine = _device_tags(tags, device)
        if not mine:
            problems.append(f"{device}: no tags")
        problems += [
            f"{n}: {t['quality']}" for n, t in sorted(mine.items()) if t["quality"] != "good"
        ]
    return problems


def _polling(e2e: E2E) -> None:
    """Wait until every demo device is polled and all its tags are good (field.json)."""

    def problems() -> list[str]:
        doc = e2e.live("field")
        tags = {n: {**t, "name": n} for n, t in (doc.get("tags") or {}).items()}
        down = [f"{d}: {s.get('state')}" for d, s in (doc.get("devices") or {}).items()]
        return _all_good(tags) + [d for d in down if not d.endswith(": ok")]

    wait_until(lambda: not problems(), 60, "every demo device polled with good tags", problems)


# -- 0. the appliance came up -----------------------------------------------------------


def test_every_role_started_and_the_demo_runs(e2e: E2E) -> None:
    assert e2e.missing_roles == [], (
        f"roles not up after 60 s: {e2e.missing_roles}; daemon log: {e2e.daemon_log()}"
    )
    applied = e2e.live("net").get("applied") or {}
    assert applied.get("revision") == e2e.revision
    assert not applied.get("fail_closed")


# -- 1. the conduit ---------------------------------------------------------------------


def test_conduit_passes_modbus_to_plc1_and_drops_the_rest(e2e: E2E) -> None:
    spec = e2e.spec
    assert demo.probe_tcp(spec.ns_it, PLC1, 502) == "open"
    got = modbus_read(spec, PLC1)
    assert "registers" in got, f"Modbus read of PLC 1 from the IT host failed: {got}"
    assert got["registers"][2:5] == [1234, 5678, 42]  # the simulator's fixed registers
    assert demo.probe_tcp(spec.ns_it, PLC1, 8080) == "dropped"  # no conduit for 8080
    assert demo.probe_tcp(spec.ns_it, PLC2, 502) == "dropped"  # no conduit to PLC 2
    assert demo.probe_tcp(spec.ns_ot, IT_HOST, 22) == "dropped"  # OT never starts to IT
    wait_until(
        lambda: sum(v.get("packets", 0) for v in (e2e.live("net").get("drops") or {}).values()),
        10,
        "the net role to count the dropped probes",
        lambda: e2e.live("net").get("drops"),
    )
    wait_until(
        lambda: ((e2e.live("net").get("conduits") or {}).get("scada-modbus") or {}).get("packets"),
        10,
        "the net role to count the conduit's packets",
        lambda: e2e.live("net").get("conduits"),
    )


# -- 2. live tags through the CLI ---------------------------------------------------------


def test_tags_of_every_device_are_good_and_counters_count(e2e: E2E) -> None:
    seen: dict[str, Any] = {}

    def good() -> dict[str, dict[str, Any]] | None:
        seen["tags"] = e2e.tags()
        return seen["tags"] if not _all_good(seen["tags"]) else None

    first = wait_until(
        good, 60, "every demo device's tags to be good", lambda: _all_good(seen["tags"]), 1.0
    )
    for name in COUNTERS:
        assert name in first, f"{name} missing from `appliance tags --json`"
        assert isinstance(first[name]["value"], int), f"{name}: {first[name]['value']!r}"
    # the demo's other kinds of values arrive decoded
    assert first["plc1.name"]["value"] == "LAB-PLC-01"
    assert first["rtu2.pump_running"]["value"] in (True, False)
    assert isinstance(first["plc1.temperature"]["value"], float)
    assert 14.5 <= first["plc1.temperature"]["value"] <= 25.5
    assert first["opcua1.batch"]["value"].startswith("BATCH-")
    assert first["plc1.speed_setpoint"]["writable"] is True

    def counted() -> list[str]:
        seen["tags"] = e2e.tags()
        return [n for n in COUNTERS if seen["tags"][n]["value"] <= first[n]["value"]]

    # plc-slow polls every 5 s: 20 s is four of its cycles
    wait_until(lambda: not counted(), 20, "every counter to increase", counted, 1.0)
    later = seen["tags"]
    for n in COUNTERS:
        assert later[n]["quality"] == "good"
        assert later[n]["poll_time"] > first[n]["poll_time"]


# -- 3. history -------------------------------------------------------------------------


def test_history_of_plc1_counter_is_written(e2e: E2E) -> None:
    seen: dict[str, Any] = {}

    def rows() -> list[list[str]]:
        cp = e2e.cli("tags", "history", "plc1.counter", "--from", "-5m", "--csv")
        seen["cp"] = (cp.returncode, cp.stdout[-300:], cp.stderr[-300:])
        if cp.returncode == 3:  # NotFound: no sample of the tag stored yet
            return []
        assert cp.returncode == 0, f"`appliance tags history` failed: {seen['cp']}"
        lines = [ln.split(",") for ln in cp.stdout.strip().splitlines()]
        return lines if len(lines) >= 4 else []  # header + at least 3 samples

    lines = wait_until(rows, 30, "history rows of plc1.counter", lambda: seen["cp"], 1.0)
    assert lines[0] == ["time", "t", "tag", "value", "quality"]
    samples = lines[1:]
    assert all(r[2] == "plc1.counter" and r[4] == "good" for r in samples), samples[:5]
    ts = [float(r[1]) for r in samples]
    values = [int(r[3]) for r in samples]
    assert ts == sorted(ts), "history is not oldest first"
    assert values[-1] > values[0], f"the counter's history does not count: {values}"
    assert time.time() - 300 <= ts[0]


# -- 6. the fleet receiver ---------------------------------------------------------------


def test_fleet_receiver_has_heartbeats_with_health_and_revision(e2e: E2E) -> None:
    seen: dict[str, Any] = {}

    def unit() -> dict[str, Any] | None:
        cp = topology.ns_run(
            e2e.spec.ns_it,
            [sys.executable, "-m", "appliance.fleet", "units", "--db", e2e.fleet_db, "--json"],
            check=False,
        )
        seen["out"] = (cp.returncode, cp.stdout[-400:], cp.stderr[-400:])
        if cp.returncode != 0:
            return None
        units = {u["name"]: u for u in json.loads(cp.stdout)}
        u = units.get("demo-unit")
        seen["unit"] = u
        if not u or not u.get("heartbeats") or not (u.get("revision") or {}).get("id"):
            return None
        return u

    u = wait_until(unit, 45, "the fleet receiver to store a heartbeat", lambda: seen, 1.0)
    assert u["last_seen"] and u["last_seen"] > time.time() - 120
    assert u["unit"]["name"] == "demo-unit"
    assert u["health"]["state"] in ("ok", "degraded", "booting", "pending-confirm", "fault")
    assert u["revision"]["id"] == e2e.revision
    assert u["revision"]["state"] in ("confirmed", "pending")
    agent = e2e.live("agent").get("fleet") or {}
    assert agent.get("last_ok"), f"agent.json says the fleet was not reached: {agent}"
    # the heartbeat carries the audit log's head off the unit: a row the unit has, and
    # the digest that row has there (the unit's chain is intact, too)
    assert e2e.cli("config", "export").returncode == 0  # an audit row now, at least
    [newest] = e2e.cli_json("audit", "list", "--json", "-n", "1")

    def head() -> dict[str, Any] | None:
        fleet = sqlite3.connect(e2e.spec.fleet_dir / "fleet.db")
        try:
            (body,) = fleet.execute(
                "SELECT body FROM heartbeats ORDER BY sent_at DESC LIMIT 1"
            ).fetchone()
        finally:
            fleet.close()
        seen["audit"] = json.loads(body).get("audit")
        return (
            seen["audit"] if ((seen["audit"] or {}).get("head_id") or 0) >= newest["id"] else None
        )

    got = wait_until(head, 45, "a heartbeat with the new audit head", lambda: seen, 1.0)
    rows = {r["id"]: r["digest"] for r in e2e.cli_json("audit", "list", "--json", "-n", "100000")}
    assert rows.get(got["head_id"]) == got["head"], (got, max(rows))
    assert e2e.cli_json("audit", "verify", "--json")["intact"] is True

    # the operator's side: the unit's events arrived, and a request to identify reaches it
    password = (e2e.spec.fleet_dir / "operator-password").read_text().strip()
    asked = time.time()
    got = https_session(
        e2e.spec.ns_it,
        e2e.spec.fleet_url,
        [
            {"method": "POST", "path": "/api/v1/session", "json": {"password": password}},
            {
                "method": "POST",
                "path": "/api/v1/units/demo-unit/identify",
                "json": {},
                "headers": {"X-CSRF-Token": "{csrf}"},
            },
            {"method": "GET", "path": "/api/v1/units/demo-unit?limit=5"},
        ],
    )
    assert "results" in got, got
    login, identify, detail = got["results"]
    assert login.get("status") == 200, login
    assert identify.get("status") == 200, identify
    assert (identify["json"].get("requests") or {}).get("identify") is True, identify["json"]
    assert detail.get("status") == 200, detail
    history = detail["json"].get("history") or []
    assert history and history[0]["revision"]["id"] == e2e.revision, history[:1]
    ours = {str(e["id"]): e["kind"] for e in e2e.events("", limit=5000)}
    theirs = detail["json"].get("events") or []
    assert theirs, "the fleet holds no events of the unit"
    for ev in theirs:
        eid = str(ev.get("id", ev.get("event_id")))
        assert ours.get(eid) == ev.get("kind"), f"fleet event {ev} is not the unit's {eid}"
    # the next heartbeat's answer carries identify: the agent blinks and records it
    wait_until(
        lambda: (e2e.live("agent").get("identify_until") or 0) > asked,
        40,
        "the unit to identify itself at the fleet's request",
        lambda: e2e.live("agent").get("fleet"),
        1.0,
    )
    assert [e for e in e2e.events("unit.identify") if e["at"] >= asked - 1]


# -- 7. syslog ---------------------------------------------------------------------------


def test_syslog_sink_gets_rfc5424_events(e2e: E2E) -> None:
    log = e2e.spec.syslog_log

    def parsed() -> list[dict[str, Any]]:
        if not log.exists():
            return []
        lines = log.read_text(errors="replace").splitlines()
        return [p for p in map(parse_syslog, lines) if p is not None]

    msgs = wait_until(
        parsed,
        30,
        f"RFC 5424 lines in {log}",
        lambda: log.read_text(errors="replace")[-500:] if log.exists() else "no file",
        1.0,
    )
    raw = log.read_text(errors="replace").splitlines()
    assert len(msgs) == len([ln for ln in raw if ln.strip()]), (
        "lines that are not RFC 5424: "
        + repr([ln for ln in raw if ln.strip() and parse_syslog(ln) is None][:3])
    )
    events = {str(e["id"]): e for e in e2e.events("", limit=5000)}
    for m in msgs:
        assert m["app"] == "appliance"
        # the unit's host name (a SIEM tells units apart by it): the OS's, as RFC 5424 says
        assert m["host"] in ("demo-unit", socket.gethostname()), m
        assert 16 <= m["pri"] // 8 <= 23, f"facility not local0..7: {m}"
        ev_id = m["params"].get("id")
        assert ev_id in events, f"syslog message of an unknown event: {m}"
        ev = events[ev_id]
        assert m["msgid"] == ev["kind"], (m, ev)
        assert m["params"].get("source") == ev["source"]
        assert m["params"].get("severity") == ev["severity"]
    # nothing lost between the first and the last message the sink got (the agent keeps a
    # cursor per target; min_severity is info, so only debug events may be missing)
    sent = sorted(int(m["params"]["id"]) for m in msgs)
    expected = {
        int(i)
        for i, e in events.items()
        if sent[0] <= int(i) <= sent[-1] and e["severity"] != "debug"
    }
    assert expected <= set(sent), f"events not sent to syslog: {sorted(expected - set(sent))}"
    assert len(sent) == len(set(sent)), "an event was sent twice"


# -- 8. the web UI ---------------------------------------------------------------------


def test_web_answers_https_and_setup_code_works(e2e: E2E) -> None:
    """openapi.json is public; /api/status answers 403 `setup required` before the first
    admin (docs/ui.md), 401 without a session after it, 200 with one. The first admin is
    made with the code `appliance setup-code` prints, which then works no more."""
    web = wait_until(
        lambda: (lambda d: d if d.get("listen") and d.get("server_alive") else None)(
            e2e.live("web")
        ),
        30,
        "web.json to list a listen address with the server alive",
        lambda: e2e.live("web"),
    )
    base = e2e.web_url()
    assert web.get("setup_required") is True
    seen: dict[str, Any] = {}

    def answers() -> dict[str, Any] | None:
        got = seen["got"] = https_session(
            e2e.spec.ns_app,
            base,
            [
                {"method": "GET", "path": "/api/openapi.json"},
                {"method": "GET", "path": "/api/status"},
            ],
        )
        return got if "status" in (got.get("results") or [{}])[0] else None

    got = wait_until(answers, 30, f"HTTPS answers from {base}", lambda: seen.get("got"), 1.0)
    openapi, before = got["results"]
    assert openapi["status"] == 200, openapi
    assert str((openapi["json"] or {}).get("openapi", "")).startswith("3."), openapi["text"][:200]
    assert before["status"] == 403 and before["json"]["error"] == "setup required", before
    assert got["fingerprint"] == web["cert_fingerprint"], "web.json names another certificate"

    _admin, replies = first_admin(e2e)
    setup, anonymous, login, status, again = replies
    assert setup.get("status") == 201, setup
    assert anonymous.get("status") == 401, anonymous
    assert login.get("status") == 200, login
    assert status.get("status") == 200, status
    assert again.get("status") in (403, 409), f"the setup code worked twice: {again}"
    wait_until(
        lambda: e2e.live("web").get("setup_required") is False,
        10,
        "web.json to say setup is done",
        lambda: e2e.live("web").get("setup_required"),
    )


# -- the northbound OPC UA server: IT reads the polled values with a web account -----------


def test_it_reads_tags_over_opcua_with_a_web_account(e2e: E2E) -> None:
    """The field role's OPC UA server on the IT side (opened by the net role's input
    rules) logs people on with the web UI's accounts and serves the live values."""
    _polling(e2e)
    admin = e2e.admin or first_admin(e2e)[0]
    url = "opc.tcp://10.10.0.1:4840/"
    names = ("plc1.counter", "plc1.name", "opcua1.batch")
    seen: dict[str, Any] = {}

    def read() -> dict[str, Any] | None:
        got = seen["got"] = opcua_read(
            e2e.spec.ns_it, url, admin["username"], admin["password"], *names
        )
        return got if "error" not in got else None

    first = wait_until(read, 30, f"an OPC UA read of {url} from IT", lambda: seen["got"], 1.0)
    assert first["ns"] == 2
    assert all(first[n]["status"] == "Good" for n in names), first
    assert first["plc1.name"]["value"] == "LAB-PLC-01"
    assert str(first["opcua1.batch"]["value"]).startswith("BATCH-")
    wait_until(
        lambda: (
            (read() or {}).get("plc1.counter", {}).get("value", -1) > first["plc1.counter"]["value"]
        ),
        15,
        "plc1.counter to count over OPC UA",
        lambda: seen["got"],
        1.0,
    )
    anonymous = opcua_read(e2e.spec.ns_it, url, None, None, "plc1.counter")
    assert "error" in anonymous, f"anonymous read allowed: {anonymous}"
    assert demo.probe_tcp(e2e.spec.ns_ot, "192.168.50.1", 4840) == "dropped", (
        "the OPC UA server answers on the OT side"
    )


# -- the web API shows what the roles publish ---------------------------------------------


def test_web_api_shows_status_tags_history_and_alarms(e2e: E2E) -> None:
    _polling(e2e)
    admin = e2e.admin or first_admin(e2e)[0]
    since = time.time() - 300
    got = https_session(
        e2e.spec.ns_app,
        e2e.web_url(),
        [
            {"method": "POST", "path": "/api/session", "json": admin},
            {"method": "GET", "path": "/api/status"},
            {"method": "GET", "path": "/api/system"},
            {"method": "GET", "path": "/api/tags"},
            {"method": "GET", "path": f"/api/tags/plc1.counter/history?from={since:.0f}"},
            {"method": "GET", "path": "/api/alarms"},
        ],
    )
    assert "results" in got, got
    login, status, system, tags, history, alarms = got["results"]
    for name, r in (("status", status), ("system", system), ("tags", tags)):
        assert r.get("status") == 200, (name, r)
    assert login.get("status") == 200, login
    st = status["json"]
    assert st["unit"]["name"] == "demo-unit"
    assert st["revision"]["id"] == e2e.revision and st["revision"]["applied"] is True
    assert all(st["roles"][r] for r in ROLES), st["roles"]
    assert {d["name"]: d["state"] for d in st["devices"]} == dict.fromkeys(DEMO_DEVICES, "ok")
    assert st["health"]["state"] in ("ok", "degraded", "identify"), st["health"]
    sysd = system["json"]
    assert all(sysd["roles"][r] for r in ROLES), sysd["roles"]
    assert (sysd.get("fleet") or {}).get("last_ok"), f"/api/system fleet: {sysd.get('fleet')}"
    assert sysd.get("history"), f"/api/system has no history capacity: {sysd.get('history')}"
    assert sysd["history"].get("samples_per_hour", 0) > 0, sysd["history"]
    names = {t["name"]: t for t in tags["json"]}
    assert not _all_good(names), _all_good(names)
    assert alarms.get("status") == 200, alarms
    assert isinstance(alarms["json"], list), alarms
    for a in alarms["json"]:
        assert {"id", "key", "state", "severity", "raised_at"} <= set(a), a
    # the tag page's query (appliance/web/static/js/pages/tag.js): ?from=<epoch>
    assert history.get("status") == 200, history
    seen = {"history": history}

    def counted() -> list[Any] | None:
        if len(seen["history"]["json"]) < 3:
            again = https_session(
                e2e.spec.ns_app,
                e2e.web_url(),
                [
                    {"method": "POST", "path": "/api/session", "json": admin},
                    {"method": "GET", "path": f"/api/tags/plc1.counter/history?from={since:.0f}"},
                ],
            )
            seen["history"] = again["results"][1]
            assert seen["history"].get("status") == 200, seen["history"]
        values = [s["value"] for s in seen["history"]["json"]]
        return values if len(values) >= 3 else None

    values = wait_until(counted, 30, "3 samples of plc1.counter", lambda: seen, 2.0)
    assert values[-1] > values[0], values[-5:]


# -- a write from the web UI reaches the PLC ------------------------------------------------


def test_admin_writes_a_setpoint_through_the_web_api_to_the_plc(e2e: E2E) -> None:
    """web API → field role's control socket → Modbus write to PLC 1; the register is then
    read back independently from the IT host through the conduit, and the tag follows."""
    _polling(e2e)
    admin = e2e.admin or first_admin(e2e)[0]
    value = 1000 + int(time.time()) % 9000
    csrf = {"X-CSRF-Token": "{csrf}"}
    got = https_session(
        e2e.spec.ns_app,
        e2e.web_url(),
        [
            {"method": "POST", "path": "/api/session", "json": admin},
            {
                "method": "POST",
                "path": "/api/tags/plc1.speed_setpoint/write",
                "json": {"value": value},
                "headers": csrf,
            },
            {
                "method": "POST",
                "path": "/api/tags/plc1.counter/write",
                "json": {"value": 1},
                "headers": csrf,
            },
            {
                "method": "POST",
                "path": "/api/tags/plc1.speed_setpoint/write",
                "json": {"value": value},
            },
        ],
    )
    assert "results" in got, got
    login, write, not_writable, no_csrf = got["results"]
    assert login.get("status") == 200, login
    assert write.get("status") == 200, write
    assert write["json"]["tag"] == "plc1.speed_setpoint" and write["json"]["value"] == value
    assert not_writable.get("status") == 403, not_writable
    assert no_csrf.get("status") == 403, f"a write without the CSRF token: {no_csrf}"
    at_plc = modbus_holding(e2e.spec.ns_it, PLC1, 40)
    assert at_plc.get("registers") == [value], f"holding 40 of PLC 1 after the write: {at_plc}"
    wait_until(
        lambda: e2e.live("field")["tags"]["plc1.speed_setpoint"]["value"] == value,
        10,
        "plc1.speed_setpoint to read back the written value",
        lambda: e2e.live("field")["tags"]["plc1.speed_setpoint"],
    )


# -- diagnostics: the whole unit's state in one archive, no secret in it -------------------


def test_diagnostics_archive_has_every_area_and_no_secret(e2e: E2E) -> None:
    _polling(e2e)
    out = e2e.spec.root / "diag.tar.gz"
    cp = e2e.cli("diagnostics", "-o", str(out))
    assert cp.returncode == 0, f"`appliance diagnostics` exited {cp.returncode}: {cp.stderr}"
    assert out.stat().st_mode & 0o077 == 0, "the archive is readable by others"
    [taken] = e2e.cli_json("audit", "list", "--json", "--action", "diagnostics", "-n", "1")
    assert taken["actor"].startswith("cli:") and taken["detail"].endswith(" bytes"), taken
    files: dict[str, str] = {}
    with tarfile.open(out) as tar:
        for member in tar.getmembers():
            data = tar.extractfile(member) if member.isfile() else None
            if data is not None:
                files[member.name] = data.read().decode("utf-8", "replace")
    names = set(files)
    for wanted in ("versions.json", "health.json", "events.json", "alarms.json"):
        assert any(n.endswith(wanted) for n in names), f"no {wanted} in {sorted(names)}"
    assert any(n.endswith("config/running.yaml") for n in names), sorted(names)
    for role in ROLES:
        assert any(n.endswith(f"live/{role}.json") for n in names), (role, sorted(names))
    running = next(v for n, v in files.items() if n.endswith("config/running.yaml"))
    assert "plc1" in running and "[redacted]" in running, running[:500]
    secrets_found = []
    known = {"fleet token": (e2e.spec.fleet_dir / "unit-token").read_text().strip()}
    if e2e.admin:
        known["admin password"] = e2e.admin["password"]
    for f in sorted(e2e.paths.secrets_dir.iterdir()):
        if f.is_file():
            text = f.read_text(errors="replace").strip()
            if len(text) >= 8 and "CERTIFICATE" not in text:
                known[f"secrets/{f.name}"] = text
    reset_key = e2e.paths.run_dir / "agent.reset-key"
    if reset_key.exists():
        known["agent.reset-key"] = reset_key.read_text().strip()
    for name, content in files.items():
        if "PRIVATE KEY-----" in content:
            secrets_found.append(f"a private key in {name}")
        for what, secret in known.items():
            if secret and secret in content:
                secrets_found.append(f"{what} in {name}")
    assert not secrets_found, secrets_found


# -- 9. status --------------------------------------------------------------------------


def test_status_shows_every_role_up_and_health(e2e: E2E) -> None:
    _polling(e2e)
    seen: dict[str, Any] = {}

    def settled() -> dict[str, Any] | None:
        data = seen["data"] = e2e.cli_json("status", "--json")
        if all(data["roles"].get(r) for r in ROLES) and data["health"]["state"] in (
            "ok",
            "degraded",
        ):
            return data
        return None

    data = wait_until(settled, 60, "every role up and health ok/degraded", lambda: seen, 1.0)
    health = data["health"]
    if health["state"] == "degraded":
        assert health["reasons"], "degraded without a reason"
    for reason in health["reasons"]:
        assert reason.get("code") and reason.get("message"), reason
        assert reason.get("severity") != "fault", reason
    assert data["unit"] == "demo-unit"
    assert data["running"]["id"] == e2e.revision
    assert set(data["field"]["devices"]) == set(DEMO_DEVICES)
    assert data["web"]["listen"], data["web"]
    cp = e2e.cli("status")
    assert cp.returncode == 0, cp.stderr
    assert "health:    ok" in cp.stdout or "health:    degraded" in cp.stdout, cp.stdout
    assert "roles:     net up, field up, opcua up, agent up, web up" in cp.stdout, cp.stdout
    ui = [ln for ln in cp.stdout.splitlines() if ln.startswith("web UI:")]
    assert ui, cp.stdout
    for url in ui[0].removeprefix("web UI:").strip().split(", "):
        assert re.fullmatch(r"https://[0-9a-fA-F.:\[\]]+(:\d+)?/", url), (
            f"`appliance status` shows the web UI at {url!r} (web.json listen: "
            f"{data['web']['listen']})"
        )


def test_health_raised_no_false_fault_while_the_roles_started(e2e: E2E) -> None:
    """The roles start together; until each has published, the agent must say `booting`,
    not call the net role silent for hours or a starting role dead (an error event that
    goes to the SIEM and the fleet on every restart of the appliance)."""
    changes = e2e.events("health.changed")
    false = [
        e
        for e in changes
        if (e.get("data") or {}).get("to") == "fault"
        or any(
            r == "net-silent" or r.startswith("role-dead-")
            for r in (e.get("data") or {}).get("reasons", [])
        )
    ]
    assert not false, "health went wrong while the roles started: " + "; ".join(
        f"{e['severity']} {e['message']}" for e in false
    )


# -- 4. a temperature alarm ----------------------------------------------------------------


def test_temperature_alarm_is_raised_with_an_event(e2e: E2E) -> None:
    """The demo's plc1.temperature (20 + 5 sin(2πt/60)) crosses its high limit of 24 for
    ~12 s of every minute; the alarm needs 1 s above it (delay)."""
    key = "plc1.temperature:high"
    seen: dict[str, Any] = {}

    def raised() -> list[dict[str, Any]]:
        seen["events"] = e2e.events("alarm.")
        return [e for e in seen["events"] if e["kind"] == "alarm.raised" and _key(e) == key]

    events = wait_until(raised, 90, f"an alarm.raised event for {key}", lambda: seen, 1.0)
    ev = events[-1]  # newest first: the first raise
    alarm = ev["data"]
    assert ev["source"] == "field"
    assert ev["severity"] == "warning"
    assert alarm["kind"] == "high" and alarm["severity"] == "warning"
    assert alarm["tag"] == "plc1.temperature" and alarm["device"] == "plc1"
    assert alarm["limit"] == 24
    assert alarm["value"] >= 24
    # the field role shows it as active (or, if the wave went back down, cleared later)
    field = e2e.live("field")
    active = {a["key"]: a for a in field["alarms"]["active"]}
    cleared = [e for e in seen["events"] if e["kind"] == "alarm.cleared" and _key(e) == key]
    assert key in active or cleared, f"alarm neither active nor cleared: {field['alarms']}"
    if key in active:
        assert active[key]["id"] == alarm["id"]
        assert field["alarms"]["counts"]["warning"] >= 1


def _key(event: dict[str, Any]) -> str | None:
    return (event.get("data") or {}).get("key")


# -- a configuration change reaches every role without a restart -----------------------------


def test_a_committed_change_reaches_every_role_without_a_restart(e2e: E2E) -> None:
    """`appliance config import` + `config commit` of the demo with a new plc1 tag whose
    `high` limit its value always exceeds: the net, field, agent and web roles run
    the new revision, no role restarts, the new tag is polled, the alarm is raised and
    the fleet hears of the new revision."""
    _polling(e2e)
    pids = {r: e2e.child_pid(r) for r in ROLES}
    doc = yaml.safe_load(e2e.rendered.read_text())
    plc1 = next(d for d in doc["devices"] if d["name"] == "plc1")
    plc1["tags"].append(
        {
            "name": "fixed",
            "table": "holding",
            "address": 2,  # the simulator's 1234, always
            "type": "uint16",
            "alarms": {"high": 1000, "delay": 0},
        }
    )
    changed = e2e.spec.root / "changed.yaml"
    changed.write_text(yaml.safe_dump(doc, sort_keys=False))
    cp = e2e.cli("config", "import", str(changed), "-m", "e2e: low limit, new tag")
    assert cp.returncode == 0, f"config import: {cp.stderr or cp.stdout}"
    cp = e2e.cli("config", "commit", "-m", "e2e")
    assert cp.returncode == 0, f"config commit: {cp.stderr or cp.stdout}"
    rev = e2e.cli_json("config", "log", "--json")[0]["id"]
    assert rev > e2e.revision
    assert (e2e.live("net").get("applied") or {}).get("revision") == rev

    def behind() -> list[str]:
        late = [r for r in ("field", "agent", "web") if e2e.live(r).get("revision") != rev]
        tag = (e2e.live("field").get("tags") or {}).get("plc1.fixed") or {}
        if tag.get("value") != 1234 or tag.get("quality") != "good":
            late.append(f"plc1.fixed {tag}")
        active = [a["key"] for a in e2e.live("field")["alarms"]["active"]]
        if "plc1.fixed:high" not in active:
            late.append(f"no plc1.fixed:high alarm ({active})")
        return late

    wait_until(lambda: not behind(), 30, f"every role to run revision {rev}", behind)
    assert {r: e2e.child_pid(r) for r in ROLES} == pids, "a role restarted for the change"
    raised = [e for e in e2e.events("alarm.raised") if _key(e) == "plc1.fixed:high"]
    assert raised and raised[0]["data"]["limit"] == 1000 and raised[0]["data"]["value"] == 1234

    def fleet_revision() -> int | None:
        cp = topology.ns_run(
            e2e.spec.ns_it,
            [sys.executable, "-m", "appliance.fleet", "units", "--db", e2e.fleet_db, "--json"],
            check=False,
        )
        units = json.loads(cp.stdout) if cp.returncode == 0 else []
        return next((u["revision"]["id"] for u in units if u["name"] == "demo-unit"), None)

    wait_until(
        lambda: fleet_revision() == rev, 40, f"the fleet to see revision {rev}", fleet_revision, 2
    )


# -- 5. communication loss ------------------------------------------------------------------


def test_comm_loss_alarm_while_plc1_is_cut_off_and_it_clears(e2e: E2E) -> None:
    _polling(e2e)
    dev = e2e.live("field")["devices"]["plc1"]
    interval, others = float(dev["poll_interval"]), ("plc-slow", "rtu1", "rtu2", "opcua1")
    cut = time.time()
    e2e.block_ot(PLC1, 502)
    try:
        doc = wait_until(
            lambda: (lambda d: d if "plc1" in (d.get("comm_loss") or []) else None)(
                e2e.live("field")
            ),
            30,
            "plc1 in field.json comm_loss",
            lambda: (e2e.live("field").get("devices") or {}).get("plc1"),
        )
        alarm = {a["key"]: a for a in doc["alarms"]["active"]}.get("plc1:comm")
        assert alarm, f"comm_loss lists plc1 but no active plc1:comm alarm: {doc['alarms']}"
        assert alarm["kind"] == "comm" and alarm["severity"] == "critical"
        # within 2 poll intervals of the cut (+ one request timeout and 2 s margin)
        bound = 2 * interval + 1.0 + 2.0
        late = alarm["raised_at"] - cut
        assert late <= bound, f"comm alarm after {late:.1f} s (bound {bound:g} s)"

        # once the cycle has failed (its timeout and retries), the device is down and its
        # values are no longer good (uncertain, then bad)
        def plc1_down() -> bool:
            d = e2e.live("field")
            tags = [t for t in d["tags"].values() if t["device"] == "plc1"]
            return d["devices"]["plc1"]["state"] == "down" and all(
                t["quality"] != "good" for t in tags
            )

        wait_until(
            plc1_down,
            15,
            "plc1 down with no good values",
            lambda: (e2e.live("field")["devices"]["plc1"], e2e.live("field")["tags"]["plc1.sine"]),
        )
        # the other devices keep polling
        before = {d: _last_poll(doc, d) for d in others}

        def lagging() -> list[str]:
            now = e2e.live("field")
            return [
                d
                for d in others
                if not _last_poll(now, d) > before[d] or now["devices"][d]["state"] != "ok"
            ]

        wait_until(lambda: not lagging(), 20, "the other devices to keep polling", lagging)
        # the agent sees it too: health degraded with the reason comm-loss
        wait_until(
            lambda: (
                "comm-loss"
                in [r["code"] for r in (e2e.live("agent").get("health") or {}).get("reasons", [])]
            ),
            10,
            "the agent's health to give the reason comm-loss",
            lambda: e2e.live("agent").get("health"),
        )
        assert "plc1:comm" in [_key(e) for e in e2e.events("alarm.raised")], (
            "no alarm.raised event for plc1:comm"
        )
    finally:
        e2e.unblock_ot()
    wait_until(
        lambda: "plc1" not in (e2e.live("field").get("comm_loss") or []),
        30,
        "plc1's comm alarm to clear after the cut is mended",
        lambda: e2e.live("field").get("alarms"),
    )
    cleared = [e for e in e2e.events("alarm.cleared") if _key(e) == "plc1:comm"]
    assert cleared, "no alarm.cleared event for plc1:comm"
    wait_until(
        lambda: (
            e2e.live("field")["devices"]["plc1"]["state"] == "ok"
            and all(
                t["quality"] == "good"
                for t in e2e.live("field")["tags"].values()
                if t["device"] == "plc1"
            )
        ),
        20,
        "plc1's tags to be good again",
        lambda: e2e.live("field")["devices"]["plc1"],
    )


def _last_poll(doc: dict[str, Any], device: str) -> float:
    times = [t.get("poll_time") or 0.0 for t in doc["tags"].values() if t["device"] == device]
    return max(times, default=0.0)


# -- 10. the supervisor restarts a killed role ---------------------------------------------


def _kill_field_role(e2e: E2E) -> tuple[int, float]:
    """SIGKILL the supervisor's field role and wait for the next one: (its pid, the kill time)."""
    old = e2e.child_pid("field")
    assert old, f"supervisor.json has no field pid: {e2e.live('supervisor')}"
    killed_at = time.time()
    os.kill(old, signal.SIGKILL)
    new = wait_until(
        lambda: (lambda p: p if p and p != old else None)(e2e.child_pid("field")),
        20,
        "the supervisor to start a new field role",
        lambda: e2e.live("supervisor"),
    )
    return new, killed_at


def test_killed_field_role_is_restarted_and_tags_come_back(e2e: E2E) -> None:
    _polling(e2e)
    new, killed_at = _kill_field_role(e2e)
    restarted = [
        e
        for e in e2e.events("role.restarted")
        if (e.get("data") or {}).get("role") == "field" and e["at"] >= killed_at - 1
    ]
    assert restarted, "no role.restarted event for the field role"
    assert restarted[0]["data"].get("exit") == -signal.SIGKILL
    seen: dict[str, Any] = {}

    def back() -> bool:
        doc = e2e.live("field")
        if doc.get("pid") != new:
            seen["why"] = f"field.json still from pid {doc.get('pid')}"
            return False
        tags = seen["tags"] = e2e.tags()
        stale = [
            n
            for n, t in tags.items()
            if t["quality"] != "good" or (t["poll_time"] or 0) <= killed_at
        ]
        seen["why"] = stale or _all_good(tags)
        return not seen["why"]

    wait_until(back, 60, "the tags to come back after the restart", lambda: seen["why"], 1.0)
    assert e2e.live_state.alive("field")


def test_an_active_alarm_survives_a_field_role_restart(e2e: E2E) -> None:
    """Active alarms live in the history DB: a field role that dies with plc1's comm alarm
    up comes back with the same alarm (same id, no second alarm.raised), and it clears
    once when PLC 1 answers again."""
    _polling(e2e)
    e2e.block_ot(PLC1, 502)
    try:
        alarm = wait_until(
            lambda: {a["key"]: a for a in e2e.live("field")["alarms"]["active"]}.get("plc1:comm"),
            30,
            "plc1's comm alarm",
            lambda: e2e.live("field").get("alarms"),
        )
        new, killed_at = _kill_field_role(e2e)

        def restored() -> dict[str, Any] | None:
            doc = e2e.live("field")
            if doc.get("pid") != new or "plc1" not in (doc.get("devices") or {}):
                return None
            return {a["key"]: a for a in doc["alarms"]["active"]}.get("plc1:comm")

        again = wait_until(
            restored, 30, "the new field role to show plc1's comm alarm", lambda: e2e.live("field")
        )
        assert again["id"] == alarm["id"], (alarm, again)
        assert again["raised_at"] == alarm["raised_at"]
        # the new role polls (and fails) plc1 a few times: still no second raise
        wait_until(
            lambda: (e2e.live("field")["devices"]["plc1"].get("polls") or 0) >= 3,
            20,
            "the new field role to poll plc1",
            lambda: e2e.live("field")["devices"]["plc1"],
        )
        raised = [
            e for e in e2e.events("alarm.raised") if _key(e) == "plc1:comm" and e["at"] >= killed_at
        ]
        assert not raised, f"plc1's comm alarm raised again after the restart: {raised}"
    finally:
        e2e.unblock_ot()
    wait_until(
        lambda: "plc1" not in (e2e.live("field").get("comm_loss") or []),
        30,
        "plc1's comm alarm to clear",
        lambda: e2e.live("field").get("alarms"),
    )
    cleared = [
        e for e in e2e.events("alarm.cleared") if (e.get("data") or {}).get("id") == alarm["id"]
    ]
    assert len(cleared) == 1, f"alarm {alarm['id']} cleared {len(cleared)} times"
