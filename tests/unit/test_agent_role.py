"""The agent role's glue: health from the live documents, events on change, LEDs and the button
on mock pins, identify, agent.json, and the factory reset it performs."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from testkit import Clock

from appliance.agent import role
from appliance.agent.button import RESET_AFTER_S
from appliance.agent.role import Agent, gather_inputs
from appliance.errors import ApplianceError, PermissionDenied
from appliance.paths import Paths
from appliance.state import revisions as revs
from appliance.state.db import Revision, Store
from appliance.state.live import LiveState

from .factory import base
from .test_agent_health import net_doc

STATUS_PIN, LINK_PIN, BUTTON_PIN = 17, 27, 22
# The leds section of the button tests: LEDs and the button on mock pins.
GPIO_WITH_BUTTON = {
    "backend": "gpio",
    "map": {"status": STATUS_PIN, "link": LINK_PIN},
    "button": {"pin": BUTTON_PIN},
}


@pytest.fixture(autouse=True)
def steady_uptime(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(role, "uptime_s", lambda: 5000.0)


def paths_of(store: Store, tmp_path: Path) -> Paths:
    return Paths(store.data_dir, tmp_path / "run")


def publish(live: LiveState, role_name: str, doc: dict[str, Any]) -> None:
    doc = {k: v for k, v in doc.items() if k not in ("pid", "updated_at")}
    live.write(role_name, doc)


def commit(store: Store, **sections: Any) -> Revision:
    doc = base()
    doc.update(sections)
    revs.import_text(store, yaml.safe_dump(doc), author="test", now=time.time())
    rev = revs.commit(store, author="test", now=time.time()).revision
    revs.confirm(store, author="net", now=time.time(), automatic=True)  # as the net role does
    return rev


def healthy(live: LiveState) -> None:
    doc = net_doc()
    doc["links"] = [lk for lk in doc["links"] if lk["role"] != "mgmt"]
    publish(live, "net", doc)


# -- health inputs from live documents -------------------------------------------------


def test_expected_roles_come_from_the_supervisor(store: Store, tmp_path: Path) -> None:
    paths = paths_of(store, tmp_path)
    live = LiveState(paths.run_dir)
    healthy(live)
    publish(live, "supervisor", {"roles": ["net", "field", "agent", "web"]})
    i = gather_inputs(paths, live, time.time(), expect_confirmed=True)
    assert i.expected_roles == ("net", "field", "agent", "web")
    assert i.roles_alive["agent"] is True
    assert i.roles_alive["field"] is False and i.roles_alive["web"] is False
    from appliance.agent.health import health

    h = health(i, time.time())
    assert h.state == "degraded"
    assert {"role-dead-field", "role-dead-web"} <= {r.code for r in h.reasons}


def test_without_supervisor_only_roles_that_published_are_expected(
    store: Store, tmp_path: Path
) -> None:
    paths = paths_of(store, tmp_path)
    live = LiveState(paths.run_dir)
    healthy(live)
    i = gather_inputs(paths, live, time.time(), expect_confirmed=True)
    assert set(i.expected_roles) == {"net", "agent"}


def test_alarms_and_comm_loss_come_from_a_live_field_role(store: Store, tmp_path: Path) -> None:
    paths = paths_of(store, tmp_path)
    live = LiveState(paths.run_dir)
    healthy(live)
    field = {
        "role": "field",
        "alarms": {"active": [], "counts": {"critical": 1, "warning": 0}},
        "comm_loss": ["plc2"],
    }
    publish(live, "field", field)
    now = time.time()
    i = gather_inputs(paths, live, now, expect_confirmed=True)
    assert i.alarms == {"critical": 1, "warning": 0}
    assert i.comm_loss == ("plc2",)
    later = gather_inputs(paths, live, now + 60, expect_confirmed=True)  # field went silent
    assert later.alarms == {} and later.comm_loss == ()
    assert later.roles_alive["field"] is False


def test_disk_and_certificate(store: Store, tmp_path: Path) -> None:
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    paths = paths_of(store, tmp_path)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "unit")])
    not_after = dt.datetime.now(dt.UTC) + dt.timedelta(days=3)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(dt.datetime.now(dt.UTC) - dt.timedelta(days=1))
        .not_valid_after(not_after)
        .sign(key, hashes.SHA256())
    )
    assert role.cert_not_after(paths) is None  # not made yet
    paths.secrets_dir.mkdir()
    paths.web_cert.write_text("not a certificate")
    assert role.cert_not_after(paths) is None  # unreadable: not judged
    (paths.secrets_dir / "web-cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    got = role.cert_not_after(paths)
    assert got == pytest.approx(not_after.replace(microsecond=0).timestamp())
    live = LiveState(paths.run_dir)
    healthy(live)
    i = gather_inputs(paths, live, time.time(), expect_confirmed=True, cert=got)
    assert i.disk_total and i.disk_free is not None
    from appliance.agent.health import health

    assert "cert-expiring" in {r.code for r in health(i, time.time()).reasons}


# -- the agent ----------------------------------------------------------------------------


def make_agent(store: Store, tmp_path: Path) -> tuple[Agent, Clock, LiveState]:
    paths = paths_of(store, tmp_path)
    live = LiveState(paths.run_dir)
    clock = Clock(time.time())
    return Agent(paths, store, live, clock=clock, hostname="unit-test"), clock, live


def test_health_changes_are_events_and_agent_json_keeps_the_contract(
    store: Store, tmp_path: Path
) -> None:
    agent, clock, live = make_agent(store, tmp_path)
    agent.step(clock())
    assert agent.health.state == "fault"  # net silent long after boot
    healthy(live)
    clock.t += 0.25
    agent.step(clock())
    assert agent.health.state == "ok"
    clock.t += 0.25
    agent.step(clock())  # same state: no new event
    kinds = [(e.kind, e.data) for e in store.events(10, "health.")]
    assert len(kinds) == 2
    latest = json.loads(kinds[0][1])
    assert (latest["from"], latest["to"]) == ("fault", "ok")
    doc = live.read("agent")
    assert doc is not None
    assert doc["role"] == "agent"
    assert doc["health"]["state"] in ("fault", "ok")
    for key in ("identify_until", "fleet", "syslog", "started_at", "pid", "updated_at"):
        assert key in doc
    clock.t += 1.0
    agent.step(clock())
    assert live.read("agent")["health"]["state"] == "ok"  # type: ignore[index]
    assert live.alive("agent")


def test_identify_and_its_end(store: Store, tmp_path: Path) -> None:
    agent, clock, live = make_agent(store, tmp_path)
    healthy(live)
    result = agent.identify(seconds=2, actor="cli:test")
    assert result["until"] == pytest.approx(clock() + 2)
    agent.step(clock())
    assert agent.health.state == "identify"
    clock.t += 2.0
    agent.step(clock())
    assert agent.health.state != "identify"
    assert agent.identify_until is None
    e = store.events(5, "unit.identify")[0]
    assert "cli:test" in e.message
    with pytest.raises(ApplianceError, match="seconds"):
        agent.identify(seconds=0)
    with pytest.raises(ApplianceError, match="seconds"):
        agent.identify(seconds="soon")  # type: ignore[arg-type]


def test_factory_reset_needs_the_proof(store: Store, tmp_path: Path) -> None:
    agent, _, _ = make_agent(store, tmp_path)
    key_file = agent.paths.run_dir / role.RESET_KEY
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    with pytest.raises(PermissionDenied):
        agent.factory_reset(actor="web:eve", proof="guess")
    assert agent._reset_request is None


def test_leds_follow_health_on_mock_pins(store: Store, tmp_path: Path, mock_pins: Any) -> None:
    commit(store, leds={"backend": "gpio", "map": {"status": STATUS_PIN, "link": LINK_PIN}})
    agent, clock, live = make_agent(store, tmp_path)
    healthy(live)
    publish(live, "net", {**net_doc(), "forwarding": False})  # a fault: rapid blink
    agent.step(clock())
    assert agent.health.state == "fault"
    seen = []
    for _ in range(4):
        seen.append(mock_pins.pin(STATUS_PIN).state)
        clock.t += 0.25
        agent.step(clock())
    assert seen == [True, False, True, False]
    assert mock_pins.pin(LINK_PIN).state is True
    assert live.read("agent")["leds"]["backend"] == "gpio"  # type: ignore[index]


def test_button_short_press_identifies(store: Store, tmp_path: Path, mock_pins: Any) -> None:
    commit(store, leds=GPIO_WITH_BUTTON)
    agent, clock, live = make_agent(store, tmp_path)
    healthy(live)
    agent.step(clock())
    assert agent.button is not None
    mock_pins.pin(BUTTON_PIN).drive_low()
    clock.t += 0.5
    mock_pins.pin(BUTTON_PIN).drive_high()
    agent.step(clock())
    assert agent.health.state == "identify"
    assert store.events(5, "unit.identify")[0].message.endswith("button")


def test_button_hold_warns_then_resets_the_unit(
    store: Store, tmp_path: Path, mock_pins: Any
) -> None:
    commit(store, leds=GPIO_WITH_BUTTON)
    paths = paths_of(store, tmp_path)
    paths.secrets_dir.mkdir()
    (paths.secrets_dir / "web.key").write_text("secret")
    (paths.data_dir / "unit-id").write_text("9a1d6b0e-1111-4222-8333-444455556666\n")
    agent, clock, live = make_agent(store, tmp_path)
    healthy(live)
    agent.step(clock())
    mock_pins.pin(BUTTON_PIN).drive_low()
    start = clock.t
    warned = False
    while clock.t - start < RESET_AFTER_S:
        clock.t += 0.25
        agent.step(clock())
        if agent.button is not None and agent.button.warning:
            warned = True
            # the warning pattern: status and link alternate
            vals = agent.leds.values(clock()) if agent.leds else {}
            assert vals["status"] != vals["link"]
    assert warned
    assert agent._reset_request == "button"
    agent._do_reset("button")
    assert not paths.secrets_dir.exists()
    assert (paths.data_dir / "unit-id").read_text().startswith("9a1d6b0e")
    marker = json.loads((paths.run_dir / "factory-reset.json").read_text())
    assert marker["actor"] == "button"
    assert not (paths.run_dir / "net.json").exists()
    fresh = Store(paths.data_dir)
    try:
        assert Revision.select().count() == 0
        assert [e.kind for e in fresh.events(10)] == ["unit.factory_reset"]
    finally:
        fresh.close()
    assert os.path.exists(paths.data_dir / "config.db")


def test_only_a_change_of_the_leds_section_touches_the_pins(
    store: Store, tmp_path: Path, mock_pins: Any
) -> None:
    leds = {"backend": "gpio", "map": {"status": STATUS_PIN, "link": LINK_PIN}}
    commit(store, leds=leds)
    agent, clock, live = make_agent(store, tmp_path)
    healthy(live)
    agent.step(clock())
    first = agent._led_backend
    assert first is not None
    commit(store, leds=leds, unit={"name": "renamed"})
    clock.t += 1.5
    agent.step(clock())
    assert agent.unit["name"] == "renamed"
    assert agent._led_backend is first
    commit(store, leds={**leds, "map": {"status": 5, "link": 6}})
    clock.t += 1.5
    agent.step(clock())
    assert agent._led_backend is not first
    assert mock_pins.pin(5).state is True  # ok: status solid on, on the new pin


def test_the_restricted_conduits_health_watches_are_the_active_ones() -> None:
    from appliance.config.load import validate_data

    doc = base()
    doc["conduits"][0]["modbus"] = "read-only"
    old = dict(doc["conduits"][0], name="old", to=["192.168.50.11"], expires="2026-06-01T00:00:00Z")
    doc["conduits"].append(old)
    doc["conduits"].append(dict(doc["conduits"][0], name="open", to=["192.168.50.12"], modbus=None))
    config = validate_data(doc, now=datetime(2026, 1, 1, tzinfo=UTC)).config
    assert role.modbus_restricted(config, datetime(2026, 3, 1, tzinfo=UTC).timestamp()) == (
        "scada-modbus",
        "old",
    )
    after = datetime(2026, 7, 1, tzinfo=UTC).timestamp()  # "old" has expired
    assert role.modbus_restricted(config, after) == ("scada-modbus",)
    assert role.modbus_restricted(None, after) == ()


# -- the audit log cannot be written (IEC 62443-4-2 CR 2.10) -------------------------------


def test_an_audit_log_that_cannot_be_written_is_a_fault_an_alert_and_recovers(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from appliance.agent import syslog
    from appliance.config.agent import Syslog

    agent, clock, live = make_agent(store, tmp_path)
    sent: list[str] = []
    monkeypatch.setattr(syslog.Sender, "send", lambda self, line: sent.append(line))
    agent.forwarder.configure([Syslog(host="192.0.2.9")], clock())
    healthy(live)
    agent.step(clock())
    assert agent.health.state == "ok"
    store.config.execute_sql("PRAGMA query_only = ON")  # the config DB refuses writes
    clock.t += role.AUDIT_PROBE_S
    healthy(live)
    agent.step(clock())
    assert agent.health.state == "fault"
    [reason] = [r for r in agent.health.reasons if r.code == "audit-failed"]
    assert "changes are refused" in reason.message
    assert live.read("agent")["audit"]["ok"] is False  # type: ignore[index]
    agent.forwarder.forward(clock())
    assert any("audit.failed" in ln and "cannot be written" in ln for ln in sent), sent
    store.config.execute_sql("PRAGMA query_only = OFF")
    clock.t += role.AUDIT_RETRY_S  # retried sooner while it fails
    healthy(live)
    agent.step(clock())
    assert "audit-failed" not in {r.code for r in agent.health.reasons}, agent.health.reasons
    assert live.read("agent")["audit"]["ok"] is True  # type: ignore[index]
    assert [e.kind for e in store.events(10, "audit.")] == ["audit.recovered", "audit.failed"]
