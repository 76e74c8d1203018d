"""Health of the unit: every state, the precedence between them, the reasons, the live glue."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from appliance.agent.health import (
    BOOT_GRACE_S,
    BOOT_TIMEOUT_S,
    Health,
    HealthInputs,
    Reason,
    from_live,
    health,
)

from .factory import NOW

T0 = NOW.timestamp()  # 2026: a plausible clock
GB = 1024**3


def net_doc(**over: Any) -> dict[str, Any]:
    """A healthy net role document as `NetRole.snapshot` publishes it."""
    doc: dict[str, Any] = {
        "role": "net",
        "started_at": T0 - 3600,
        "applied": {
            "revision": 3,
            "sha256": "ab" * 32,
            "state": "confirmed",
            "confirm_deadline": None,
            "at": T0 - 3500,
            "fail_closed": False,
        },
        "last_error": None,
        "forwarding": True,
        "links": [
            {"name": "eth0", "role": "it", "present": True, "oper": "UP", "carrier": True},
            {"name": "eth1", "role": "ot", "present": True, "oper": "UP", "carrier": True},
            {"name": "eth2", "role": "mgmt", "present": True, "oper": "UP", "carrier": True},
        ],
        "drift": {"count": 0, "last_at": None},
        "pid": 100,
        "updated_at": T0 - 0.5,
    }
    doc.update(over)
    return doc


def link(doc: dict[str, Any], role: str, **over: Any) -> dict[str, Any]:
    doc["links"] = [{**lk, **over} if lk["role"] == role else lk for lk in doc["links"]]
    return doc


def good(**over: Any) -> HealthInputs:
    base = HealthInputs(
        roles_alive={"net": True, "field": True},
        expected_roles=("net", "field"),
        net=net_doc(),
        uptime_s=3600.0,
        expect_confirmed=True,
        disk_free=50 * GB,
        disk_total=100 * GB,
        cert_not_after=T0 + 365 * 86400,
    )
    return dataclasses.replace(base, **over)


def codes(h: Health) -> list[str]:
    return [r.code for r in h.reasons]


def test_ok_has_no_reasons() -> None:
    assert health(good(), T0) == Health("ok", ())


def test_minimal_inputs_with_published_net_are_ok() -> None:
    assert health(HealthInputs(roles_alive={"net": True}, net=net_doc()), T0).state == "ok"


# -- one case per finding: (changes, state, code) -----------------------------

FAULTY = net_doc(applied={**net_doc()["applied"], "revision": None, "fail_closed": True})
CASES: list[tuple[str, dict[str, Any], str, str]] = [
    ("identify", {"identify_until": T0 + 30}, "identify", "identify"),
    ("uptime below grace", {"uptime_s": BOOT_GRACE_S - 1}, "booting", "booting"),
    ("net not published", {"net": None, "uptime_s": 40.0}, "booting", "net-not-published"),
    ("net never published", {"net": None, "uptime_s": None}, "booting", "net-not-published"),
    ("net silent too long", {"net": None, "uptime_s": BOOT_TIMEOUT_S}, "fault", "net-silent"),
    ("net role dead", {"roles_alive": {"net": False, "field": True}}, "fault", "role-dead-net"),
    ("fail-closed", {"net": FAULTY}, "fault", "fail-closed"),
    ("forwarding off", {"net": net_doc(forwarding=False)}, "fault", "forwarding-off"),
    ("it absent", {"net": link(net_doc(), "it", present=False)}, "fault", "it-link-down"),
    ("ot down", {"net": link(net_doc(), "ot", oper="DOWN")}, "fault", "ot-link-down"),
    ("ot missing", {"net": net_doc(links=net_doc()["links"][:1])}, "fault", "ot-link-missing"),
    ("disk < 2 %", {"disk_free": 1 * GB}, "fault", "disk-full"),
    ("cert expired", {"cert_not_after": T0 - 1}, "fault", "cert-expired"),
    ("pending", {"pending_deadline": T0 + 90}, "pending-confirm", "pending-confirm"),
    ("recent drift", {"drift_last_at": T0 - 599}, "degraded", "drift"),
    ("comm loss", {"comm_loss": ("plc1",)}, "degraded", "comm-loss"),
    ("disk < 10 %", {"disk_free": 9 * GB}, "degraded", "disk-low"),
    ("cert expiring", {"cert_not_after": T0 + 13 * 86400}, "degraded", "cert-expiring"),
    ("mgmt down", {"net": link(net_doc(), "mgmt", oper="DOWN")}, "degraded", "mgmt-link-down"),
    ("field role dead", {"roles_alive": {"net": True}}, "degraded", "role-dead-field"),
    ("net error", {"net": net_doc(last_error="nft: busy")}, "degraded", "net-error"),
    ("unconfigured", {"net": FAULTY, "expect_confirmed": False}, "degraded", "not-configured"),
    ("no modbus proxy", {"modbus_restricted": ("scada",)}, "degraded", "modbus-proxy-down"),
    (
        "modbus proxy not listening",
        {"modbus_restricted": ("scada",), "modbus_proxy": {"listening": False, "error": "x"}},
        "degraded",
        "modbus-proxy-down",
    ),
]


@pytest.mark.parametrize(
    ("changes", "state", "code"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_each_finding(changes: dict[str, Any], state: str, code: str) -> None:
    h = health(good(**changes), T0)
    assert h.state == state
    assert code in codes(h)


def test_clock_not_set_is_degraded_and_skips_certificates() -> None:
    early = 1_600_000_000.0  # 2020
    h = health(good(cert_not_after=early - 1, drift_last_at=None), early)
    assert h.state == "degraded"
    assert codes(h) == ["clock-not-set"]


@pytest.mark.parametrize(
    ("changes", "absent"),
    [
        ({"identify_until": T0}, "identify"),  # ended exactly now
        ({"drift_last_at": T0 - 601}, "drift"),
        ({"disk_free": 10 * GB}, "disk-low"),
        ({"cert_not_after": T0 + 14 * 86400}, "cert-expiring"),
        ({"uptime_s": BOOT_GRACE_S}, "booting"),
        ({"disk_total": 0}, "disk-low"),
    ],
)
def test_thresholds(changes: dict[str, Any], absent: str) -> None:
    h = health(good(**changes), T0)
    assert h.state == "ok"
    assert absent not in codes(h)


def test_link_down_message_names_the_link() -> None:
    h = health(good(net=link(net_doc(), "ot", oper="LOWERLAYERDOWN")), T0)
    assert (
        Reason("ot-link-down", "fault", "OT link eth1 is down (oper LOWERLAYERDOWN)") in h.reasons
    )


def test_pending_reason_says_seconds_left() -> None:
    h = health(good(pending_deadline=T0 + 89.2), T0)
    assert h.reasons == (
        Reason(
            "pending-confirm",
            "warning",
            "revision waits for confirmation, 90 s left before it reverts",
        ),
    )
    late = health(good(pending_deadline=T0 - 1), T0)
    assert late.state == "pending-confirm"
    assert "deadline passed" in late.reasons[0].message


# -- precedence ------------------------------------------------------------------

EVERYTHING = {
    "identify_until": T0 + 30,
    "uptime_s": 5.0,
    "net": net_doc(forwarding=False),
    "pending_deadline": T0 + 60,
    "comm_loss": ("plc1",),
}
PRECEDENCE_STEPS = [
    ("identify", "identify_until"),
    ("booting", "uptime_s"),
    ("fault", "net"),
    ("pending-confirm", "pending_deadline"),
    ("degraded", "comm_loss"),
]


def test_precedence_peels_off_one_state_at_a_time() -> None:
    changes = dict(EVERYTHING)
    for state, key in PRECEDENCE_STEPS:
        assert health(good(**changes), T0).state == state
        changes.pop(key)
    assert health(good(**changes), T0).state == "ok"


def test_reasons_list_every_finding_sorted_by_severity() -> None:
    h = health(good(**EVERYTHING), T0)
    assert h.state == "identify"
    assert codes(h) == ["forwarding-off", "pending-confirm", "comm-loss", "identify", "booting"]
    assert [r.severity for r in h.reasons] == ["fault", "warning", "warning", "info", "info"]


def test_booting_wins_over_a_dead_net_role_but_lists_it() -> None:
    h = health(good(uptime_s=3.0, roles_alive={"net": False, "field": True}), T0)
    assert h.state == "booting"
    assert codes(h) == ["role-dead-net", "booting"]


def test_as_dict_for_the_heartbeat() -> None:
    h = health(good(comm_loss=("plc2", "plc1")), T0)
    assert h.as_dict() == {
        "state": "degraded",
        "reasons": [
            {
                "code": "comm-loss",
                "severity": "warning",
                "message": "no communication with plc1, plc2",
            }
        ],
    }


# -- from_live -------------------------------------------------------------------


def test_from_live_reads_pending_and_drift_from_the_net_document() -> None:
    doc = net_doc(drift={"count": 2, "last_at": T0 - 60})
    doc["applied"] = {**doc["applied"], "state": "pending", "confirm_deadline": T0 + 120}
    i = from_live(
        {"net": doc, "field": {"updated_at": T0 - 1}}, T0, expected_roles=("net", "field")
    )
    assert i.pending_deadline == T0 + 120
    assert i.drift_last_at == T0 - 60
    assert i.roles_alive == {"net": True, "field": True}
    h = health(i, T0)
    assert h.state == "pending-confirm"
    assert codes(h) == ["pending-confirm", "drift"]  # same severity: by state precedence


def test_from_live_liveness_from_age_or_given() -> None:
    stale = net_doc(updated_at=T0 - 6)
    i = from_live({"net": stale, "web": None}, T0, expected_roles=("net", "web"))
    assert i.roles_alive == {"net": False, "web": False}
    assert health(i, T0).state == "fault"
    given = from_live({"net": stale}, T0, alive={"net": True})
    assert given.roles_alive == {"net": True}
    assert health(given, T0).state == "ok"


def test_from_live_passes_the_other_sources_through() -> None:
    i = from_live(
        {},
        T0,
        uptime_s=10.0,
        expect_confirmed=True,
        alarms={"high": 1},
        comm_loss=["plc1"],
        disk_free=1,
        disk_total=2,
        cert_not_after=T0 + 1,
        identify_until=T0 + 2,
    )
    assert i == HealthInputs(
        roles_alive={"net": False},
        net=None,
        uptime_s=10.0,
        expect_confirmed=True,
        alarms={"high": 1},
        comm_loss=("plc1",),
        disk_free=1,
        disk_total=2,
        cert_not_after=T0 + 1,
        identify_until=T0 + 2,
    )
    assert health(i, T0).state == "identify"


def test_pending_only_when_the_applied_revision_is_pending() -> None:
    doc = net_doc()
    doc["applied"] = {**doc["applied"], "confirm_deadline": T0 + 120}  # confirmed: kept
    assert from_live({"net": doc}, T0).pending_deadline is None


def test_a_restarted_role_is_reported_for_ten_minutes() -> None:
    from appliance.agent.health import from_live, health

    now = 10_000.0
    net = {"updated_at": now, "applied": {"revision": 1, "state": "confirmed"}}
    sup = {
        "roles": ["net", "field"],
        "children": {
            "net": {"restarts": 0, "started_at": now - 3000},
            "field": {"restarts": 2, "started_at": now - 120},
        },
    }
    inputs = from_live(
        {"net": net, "field": {"updated_at": now}, "supervisor": sup},
        now,
        expected_roles=("net", "field"),
        uptime_s=5000,
    )
    codes = [r.code for r in health(inputs, now).reasons]
    assert "role-restarted-field" in codes
    assert "role-restarted-net" not in codes
    assert "role-dead-supervisor" not in codes
    later = health(inputs, now + 601).reasons
    assert "role-restarted-field" not in [r.code for r in later]


def test_a_restricted_conduit_without_its_proxy_says_so() -> None:
    """A Modbus-restricted conduit passes nothing while the modbusproxy role is down (it
    fails closed): health names the conduits and why; a listening proxy, no conduit with
    a restriction, or the boot grace make no such reason."""
    h = health(good(modbus_restricted=("scada", "hmi")), T0)
    [r] = [r for r in h.reasons if r.code == "modbus-proxy-down"]
    assert r.message == (
        "restricted conduits scada, hmi pass nothing: the modbusproxy role is not running"
    )
    h = health(good(modbus_restricted=("scada",), modbus_proxy={"listening": False}), T0)
    assert "the modbusproxy role is not listening (starting)" in h.reasons[0].message
    up = {"listening": True, "error": None}
    assert health(good(modbus_restricted=("scada",), modbus_proxy=up), T0).state == "ok"
    assert health(good(modbus_proxy=None), T0).state == "ok"
    starting = good(modbus_restricted=("scada",), uptime_s=3.0)
    assert "modbus-proxy-down" not in codes(health(starting, T0))
    # from the live documents: only a proxy that is alive counts
    doc = {"role": "modbusproxy", "listening": True, "updated_at": T0}
    i = from_live({"net": net_doc(), "modbusproxy": doc}, T0, modbus_restricted=["scada"])
    assert i.modbus_proxy == doc and i.modbus_restricted == ("scada",)
    dead = from_live(
        {"net": net_doc(), "modbusproxy": doc},
        T0,
        alive={"net": True, "modbusproxy": False},
        modbus_restricted=["scada"],
    )
    assert dead.modbus_proxy is None


def test_process_alarms_are_not_the_units_health() -> None:
    """A PLC value past its limit is the plant's: the unit stays ok (ARCHITECTURE.md)."""
    h = health(good(alarms={"critical": 2, "warning": 5}), T0)
    assert h.state == "ok" and codes(h) == []


def test_an_audit_log_that_cannot_be_written_is_a_fault() -> None:
    from appliance.agent.health import HealthInputs, health

    h = health(HealthInputs(audit_failed="database or disk is full"), 2_000_000_000.0)
    [r] = [r for r in h.reasons if r.code == "audit-failed"]
    assert r.severity == "fault" and "changes are refused" in r.message
    assert h.state in ("fault", "booting")
