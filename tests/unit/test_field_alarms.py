"""Alarms: limits with hysteresis and delay, communication loss, acknowledgement, reload."""

from __future__ import annotations

import json
from typing import Any

import pytest

from appliance.config.field import Device, Tag
from appliance.errors import NotFound
from appliance.field.alarms import AlarmEngine
from appliance.field.store import AlarmRow
from appliance.state.db import Event, Store

ALARM_KEYS = {
    "id",
    "key",
    "tag",
    "device",
    "kind",
    "severity",
    "state",
    "acked",
    "raised_at",
    "cleared_at",
    "acked_by",
    "acked_at",
    "value",
    "limit",
    "message",
}


def devices(alarms: dict[str, Any] | None = None, poll: float = 1.0, **dev: Any) -> list[Device]:
    limits = {"high": 80, "high_high": 90, "low": 10, "low_low": 0, "hysteresis": 2}
    if alarms is not None:
        limits = alarms
    tags = [
        Tag(name="temp", table="holding", address=10, type="float32", unit="degC", alarms=limits),
        Tag(name="name", table="holding", address=20, type="string", length=4),
    ]
    return [
        Device(
            name="plc1",
            protocol="modbus-tcp",
            address="192.168.50.10:502",
            poll_interval=poll,
            tags=tags,
            **dev,
        ),
        Device(name="plc2", protocol="modbus-tcp", address="192.168.50.11", poll_interval=poll),
    ]


@pytest.fixture
def seen() -> list[tuple[str, dict[str, Any]]]:
    return []


@pytest.fixture
def engine(store: Store, seen: list) -> AlarmEngine:
    e = AlarmEngine(store, on_event=lambda kind, alarm: seen.append((kind, alarm)))
    e.configure(devices(), t=0)
    return e


def events(kind: str) -> list[Event]:
    return list(Event.select().where(Event.kind == kind).order_by(Event.id))


def test_high_limit_raises_with_the_contract_shape(engine: AlarmEngine, seen: list) -> None:
    assert engine.update("plc1.temp", 79.9, "good", 1.0) == []
    [alarm] = engine.update("plc1.temp", 80.0, "good", 2.0)
    assert set(alarm) == ALARM_KEYS
    assert alarm["key"] == "plc1.temp:high"
    assert (alarm["tag"], alarm["device"], alarm["kind"]) == ("plc1.temp", "plc1", "high")
    assert (alarm["severity"], alarm["state"], alarm["acked"]) == ("warning", "active", False)
    assert (alarm["raised_at"], alarm["value"], alarm["limit"]) == (2.0, 80.0, 80.0)
    assert "plc1.temp high: 80 degC ≥ 80 degC" in alarm["message"]
    assert engine.counts() == {"critical": 0, "warning": 1}
    row = AlarmRow.get_by_id(alarm["id"])
    assert row.as_dict() == alarm
    [ev] = events("alarm.raised")
    assert (ev.source, ev.severity, ev.at) == ("field", "warning", 2.0)
    assert json.loads(ev.data)["key"] == "plc1.temp:high"
    assert [k for k, _ in seen] == ["alarm.raised"]


def test_hysteresis_holds_the_alarm_until_the_value_is_back_far_enough(
    engine: AlarmEngine,
) -> None:
    engine.update("plc1.temp", 85, "good", 1)
    assert engine.update("plc1.temp", 79, "good", 2) == []  # under 80 but not under 78
    assert engine.update("plc1.temp", 78, "good", 3) == []  # exactly 78: not yet
    [cleared] = engine.update("plc1.temp", 77.9, "good", 4)
    assert (cleared["state"], cleared["cleared_at"]) == ("cleared", 4)
    assert engine.active() == []
    assert AlarmRow.get_by_id(cleared["id"]).state == "cleared"
    [ev] = events("alarm.cleared")
    assert ev.severity == "notice" and "cleared" in ev.message
    # it can come again: a new alarm, a new row
    [again] = engine.update("plc1.temp", 81, "good", 5)
    assert again["id"] != cleared["id"]


def test_high_high_is_critical_and_high_stays_active_too(engine: AlarmEngine) -> None:
    changes = engine.update("plc1.temp", 95, "good", 1)
    assert sorted(a["kind"] for a in changes) == ["high", "high_high"]
    assert engine.counts() == {"critical": 1, "warning": 1}
    changes = engine.update("plc1.temp", 85, "good", 2)
    assert [a["kind"] for a in changes] == ["high_high"]
    assert [a["kind"] for a in engine.active()] == ["high"]


def test_low_limits(engine: AlarmEngine) -> None:
    assert [a["kind"] for a in engine.update("plc1.temp", 10, "good", 1)] == ["low"]
    assert [a["kind"] for a in engine.update("plc1.temp", -1, "good", 2)] == ["low_low"]
    assert [a["severity"] for a in engine.active()] == ["warning", "critical"]
    assert [a["kind"] for a in engine.update("plc1.temp", 1.5, "good", 3)] == []
    assert [a["kind"] for a in engine.update("plc1.temp", 2.5, "good", 4)] == ["low_low"]
    assert [a["kind"] for a in engine.update("plc1.temp", 12.1, "good", 5)] == ["low"]


def test_delay_needs_an_unbroken_violation(store: Store) -> None:
    e = AlarmEngine(store)
    e.configure(devices({"high": 50, "delay": 5}), t=0)
    assert e.update("plc1.temp", 60, "good", 10) == []
    assert e.update("plc1.temp", 60, "good", 14) == []
    assert e.update("plc1.temp", 40, "good", 14.5) == []  # a break: start again
    assert e.update("plc1.temp", 60, "good", 15) == []
    assert e.tick(19.9) == []
    [alarm] = e.tick(20.0)  # no new value needed: the tick raises it
    assert alarm["raised_at"] == 20.0 and alarm["value"] == 60
    assert e.tick(21) == []


def test_bad_quality_and_non_numbers_neither_raise_nor_clear(engine: AlarmEngine) -> None:
    assert engine.update("plc1.temp", 99, "bad", 1) == []
    assert engine.update("plc1.temp", None, "good", 2) == []
    assert engine.update("plc1.temp", "hot", "good", 3) == []
    assert engine.update("plc1.temp", float("nan"), "good", 3) == []
    engine.update("plc1.temp", 85, "good", 4)
    assert engine.update("plc1.temp", 20, "bad", 5) == []
    assert [a["kind"] for a in engine.active()] == ["high"]
    assert engine.update("plc1.name", 1000, "good", 6) == []  # no limits on it


def test_uncertain_values_are_judged(engine: AlarmEngine) -> None:
    assert [a["kind"] for a in engine.update("plc1.temp", 85, "uncertain", 1)] == ["high"]


def test_comm_loss_within_two_poll_intervals_and_cleared_on_recovery(
    engine: AlarmEngine,
) -> None:
    interval = 1.0
    engine.comm("plc2", True, 10.0)
    outage = 10.2  # the device dies just after a good poll
    assert engine.comm("plc2", False, 11.0 + 0.5, error="timeout") != []  # next attempt
    [alarm] = engine.active()
    assert alarm["raised_at"] - outage <= 2 * interval
    assert (alarm["key"], alarm["kind"], alarm["severity"]) == ("plc2:comm", "comm", "critical")
    assert alarm["tag"] is None and "timeout" in alarm["message"]
    assert engine.comm_loss() == ["plc2"]
    assert engine.comm("plc2", False, 12.5) == []  # one alarm per outage
    recovery = 13.1
    [cleared] = engine.comm("plc2", True, 14.0)
    assert cleared["cleared_at"] - recovery <= 2 * interval
    assert engine.comm_loss() == []


def test_comm_for_an_unconfigured_device_is_ignored(engine: AlarmEngine) -> None:
    assert engine.comm("nope", False, 1) == []
    assert engine.active() == []


def test_ack_records_who_and_is_idempotent(engine: AlarmEngine, seen: list) -> None:
    [alarm] = engine.comm("plc1", False, 1)
    acked = engine.ack(alarm["id"], "web:alice", 2.0)
    assert (acked["acked"], acked["acked_by"], acked["acked_at"]) == (True, "web:alice", 2.0)
    assert engine.active()[0]["acked_by"] == "web:alice"
    row = AlarmRow.get_by_id(alarm["id"])
    assert (row.acked, row.acked_by, row.acked_at) == (True, "web:alice", 2.0)
    [ev] = events("alarm.acked")
    assert "web:alice" in ev.message and ev.severity == "info"
    again = engine.ack(alarm["id"], "web:bob", 3.0)
    assert again["acked_by"] == "web:alice"
    assert len(events("alarm.acked")) == 1
    assert [k for k, _ in seen] == ["alarm.raised", "alarm.acked"]


def test_ack_of_a_cleared_alarm_and_of_unknown_ids(engine: AlarmEngine) -> None:
    [alarm] = engine.comm("plc1", False, 1)
    engine.comm("plc1", True, 2)
    acked = engine.ack(alarm["id"], "cli:root", 3)
    assert (acked["state"], acked["acked"]) == ("cleared", True)
    assert AlarmRow.get_by_id(alarm["id"]).acked
    with pytest.raises(NotFound):
        engine.ack(9999, "cli:root")
    with pytest.raises(NotFound):
        engine.ack("x", "cli:root")  # type: ignore[arg-type]


def test_active_alarms_are_reloaded_after_a_restart(store: Store, engine: AlarmEngine) -> None:
    [high] = engine.update("plc1.temp", 85, "good", 1)
    engine.comm("plc2", False, 1)
    engine.ack(high["id"], "cli:root", 2)
    fresh = AlarmEngine(store)
    fresh.configure(devices(), t=3)
    assert sorted(a["key"] for a in fresh.active()) == ["plc1.temp:high", "plc2:comm"]
    assert next(a for a in fresh.active() if a["kind"] == "high")["acked_by"] == "cli:root"
    assert fresh.comm_loss() == ["plc2"]
    # the reloaded alarms clear as the live ones would, and are not raised twice
    assert fresh.update("plc1.temp", 85, "good", 4) == []
    assert [a["id"] for a in fresh.update("plc1.temp", 50, "good", 5)] == [high["id"]]
    assert fresh.comm("plc2", True, 6)[0]["state"] == "cleared"
    assert AlarmRow.select().where(AlarmRow.state == "active").count() == 0


def test_removed_limits_and_devices_clear_their_alarms(engine: AlarmEngine) -> None:
    engine.update("plc1.temp", 95, "good", 1)
    engine.comm("plc2", False, 1)
    engine.configure(devices({"high": 80})[:1], t=2)
    assert [a["key"] for a in engine.active()] == ["plc1.temp:high"]
    cleared = events("alarm.cleared")
    assert {json.loads(e.data)["key"] for e in cleared} == {"plc1.temp:high_high", "plc2:comm"}
    assert all("no longer in the configuration" in e.message for e in cleared)


def test_disabled_devices_raise_no_comm_alarm(store: Store) -> None:
    e = AlarmEngine(store)
    e.configure(devices(enabled=False), t=0)
    assert e.comm("plc1", False, 1) == []
    assert e.update("plc1.temp", 99, "good", 1) == []


def test_a_failing_listener_does_not_stop_alarming(store: Store) -> None:
    def boom(kind: str, alarm: dict) -> None:
        raise RuntimeError("listener bug")

    e = AlarmEngine(store, on_event=boom)
    e.configure(devices(), t=0)
    assert len(e.update("plc1.temp", 95, "good", 1)) == 2
    assert e.live()["counts"] == {"critical": 1, "warning": 1}
