"""OPC UA client adapter: the pure parts (quality, time, back-off, coercion, config checks)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from asyncua import ua

from appliance.config.field import Device, Tag
from appliance.errors import ApplianceError
from appliance.field.opcua_client import (
    OpcUaDevice,
    OpcUaError,
    _describe,
    backoff_delay,
    encode_for,
    engineering,
    epoch,
    quality_of,
)


def device(**changes: Any) -> Device:
    data: dict[str, Any] = {
        "name": "sim",
        "protocol": "opcua",
        "address": "opc.tcp://192.168.50.20:4840/",
        "tags": [
            {"name": "temp", "node": "ns=2;s=Temperature"},
            {"name": "sp", "node": "nsu=urn:lab:plc;s=Setpoint", "writable": True},
        ],
    }
    data.update(changes)
    return Device.model_validate(data)


def tag(**fields: Any) -> Tag:
    return Tag.model_validate({"name": "t", "node": "ns=2;s=X", **fields})


@pytest.mark.parametrize(
    ("code", "quality"),
    [
        (ua.StatusCodes.Good, "good"),
        (ua.StatusCodes.GoodClamped, "good"),
        (ua.StatusCodes.UncertainLastUsableValue, "uncertain"),
        (ua.StatusCodes.UncertainSensorNotAccurate, "uncertain"),
        (ua.StatusCodes.BadCommunicationError, "bad"),
        (ua.StatusCodes.BadNodeIdUnknown, "bad"),
        (ua.StatusCodes.BadWaitingForInitialData, "bad"),
    ],
)
def test_quality_follows_the_status_severity(code: int, quality: str) -> None:
    assert quality_of(ua.StatusCode(code)) == quality


def test_no_status_is_good() -> None:
    assert quality_of(None) == "good"


def test_epoch_of_source_timestamps() -> None:
    t = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert epoch(t) == t.timestamp()
    assert epoch(t.replace(tzinfo=None)) == t.timestamp()  # asyncua may hand naive UTC
    assert epoch(t.astimezone(timezone(timedelta(hours=2)))) == t.timestamp()
    assert epoch(None) is None
    assert epoch(datetime(1601, 1, 1, tzinfo=UTC)) is None  # OPC UA "no time"


def test_backoff_doubles_to_the_cap_with_jitter_in_the_upper_half() -> None:
    low = [backoff_delay(n, 1.0, 60.0, 0.0) for n in range(10)]
    high = [backoff_delay(n, 1.0, 60.0, 0.999999) for n in range(10)]
    assert low[:7] == [0.5, 1, 2, 4, 8, 16, 30]
    assert all(h == pytest.approx(min(60, 2**n), rel=1e-5) for n, h in enumerate(high))
    assert max(high) <= 60 and min(low) >= 0.5
    assert backoff_delay(10_000, 1.0, 60.0, 0.5) == 45  # no overflow for long outages


@pytest.mark.parametrize(
    ("fields", "raw", "expected"),
    [
        ({}, 21.5, 21.5),
        ({}, "text", "text"),
        ({"scale": 0.1, "offset": -5}, 300, 25.0),
        ({"type": "float32"}, 7, 7.0),
        ({"type": "int32"}, 7.0, 7),
        ({"type": "uint16", "scale": 0.5}, 3, 1.5),
        ({"type": "bool"}, 1, True),
        ({"type": "bool"}, False, False),
        ({"type": "string"}, 42, "42"),
    ],
)
def test_engineering_values(fields: dict[str, Any], raw: Any, expected: Any) -> None:
    got = engineering(tag(**fields), raw)
    assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize(
    ("fields", "raw"),
    [({"type": "int16"}, 1.5), ({"type": "bool"}, 2), ({"type": "float64"}, "x")],
)
def test_engineering_refuses_values_that_do_not_fit(fields: dict[str, Any], raw: Any) -> None:
    with pytest.raises(ValueError):
        engineering(tag(**fields), raw)


@pytest.mark.parametrize(
    ("vtype", "value", "expected"),
    [
        (ua.VariantType.Double, 3, 3.0),
        (ua.VariantType.Float, "2.5", 2.5),
        (ua.VariantType.UInt32, 7.0, 7),
        (ua.VariantType.Int16, -32768, -32768),
        (ua.VariantType.Boolean, 1, True),
        (ua.VariantType.Boolean, "false", False),
        (ua.VariantType.String, 5, "5"),
    ],
)
def test_writes_are_encoded_as_the_node_type(
    vtype: ua.VariantType, value: Any, expected: Any
) -> None:
    variant = encode_for(vtype, value, "sim.sp")
    assert variant.VariantType == vtype
    assert variant.Value == expected and type(variant.Value) is type(expected)


@pytest.mark.parametrize(
    ("vtype", "value", "says"),
    [
        (ua.VariantType.UInt16, 70000, "out of range 0..65535"),
        (ua.VariantType.Int32, 1.5, "whole number"),
        (ua.VariantType.Byte, True, "not a bool"),
        (ua.VariantType.Double, float("nan"), "finite"),
        (ua.VariantType.Double, "abc", "cannot write 'abc'"),
        (ua.VariantType.Boolean, "maybe", "true or false"),
        (ua.VariantType.DateTime, 1, "not writable from here"),
    ],
)
def test_writes_that_cannot_be_encoded_say_why(
    vtype: ua.VariantType, value: Any, says: str
) -> None:
    with pytest.raises(OpcUaError) as exc:
        encode_for(vtype, value, "sim.sp")
    assert exc.value.kind == "value"
    assert says in exc.value.message and "sim.sp" in exc.value.message


def test_opcua_error_is_an_appliance_error_with_a_kind() -> None:
    err = OpcUaError("timeout", "sim: no answer", field="address")
    assert isinstance(err, ApplianceError)
    assert err.code == "device-error" and err.kind == "timeout"
    assert str(err) == "address: sim: no answer"


@pytest.mark.parametrize(
    ("exc", "kind", "says"),
    [
        (ConnectionRefusedError(111, "Connection refused"), "connect", "connection refused"),
        (TimeoutError(), "timeout", "no answer in time"),
        (OSError(113, "No route to host"), "connect", "No route to host"),
        (ua.UaStatusCodeError(ua.StatusCodes.BadUserAccessDenied), "auth", "BadUserAccessDenied"),
        (
            ua.UaStatusCodeError(ua.StatusCodes.BadIdentityTokenRejected),
            "auth",
            "BadIdentityTokenRejected",
        ),
        (
            ua.UaStatusCodeError(ua.StatusCodes.BadSecurityChecksFailed),
            "security",
            "BadSecurityChecksFailed",
        ),
        (ua.UaError("No matching endpoints: 3, http://x"), "security", "no such endpoint"),
        (RuntimeError("odd"), "connect", "RuntimeError: odd"),
    ],
)
def test_library_errors_become_one_domain_error(exc: Exception, kind: str, says: str) -> None:
    got_kind, message = _describe(exc)
    assert got_kind == kind
    assert says in message


def test_device_checks_its_configuration() -> None:
    # The config model refuses these already; the adapter does not rely on it.
    with pytest.raises(OpcUaError) as exc:
        OpcUaDevice(device().model_copy(update={"protocol": "modbus-tcp"}))
    assert exc.value.kind == "config"
    with pytest.raises(OpcUaError) as exc:
        OpcUaDevice(device().model_copy(update={"address": "http://10.0.0.1:4840"}))
    assert exc.value.field == "address"


def test_unparseable_node_ids_are_bad_tags_not_crashes() -> None:
    d = OpcUaDevice(
        device(
            tags=[
                {"name": "ok", "node": "ns=2;s=Counter"},
                {"name": "broken", "node": "ns=two;x=?"},
            ]
        )
    )
    assert set(d.node_ids) == {"ok"}
    assert "broken" in d.invalid and "not a node id" in d.invalid["broken"]

    seen: list[tuple[str, Any, str]] = []
    stop = asyncio.Event()
    stop.set()  # run() reports the bad tag, then returns at once
    asyncio.run(d.run(lambda n, v, q, t: seen.append((n, v, q)), lambda ok, e: None, stop))
    assert seen == [("broken", None, "bad")]


def test_write_checks_the_tag_before_the_device() -> None:
    d = OpcUaDevice(device())
    with pytest.raises(OpcUaError) as exc:
        asyncio.run(d.write("nope", 1))
    assert exc.value.kind == "node"
    with pytest.raises(OpcUaError) as exc:
        asyncio.run(d.write("temp", 1))
    assert exc.value.kind == "write" and "not writable" in exc.value.message
    with pytest.raises(OpcUaError) as exc:
        asyncio.run(d.write("sp", 1))
    assert exc.value.kind == "closed"  # not connected


def test_run_backs_off_reports_bad_once_per_outage_and_logs_repeats_quietly(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from appliance.field import opcua_client

    d = OpcUaDevice(device())
    stop = asyncio.Event()
    calls = 0

    async def session(on_value: Any, on_state: Any, stop_: asyncio.Event) -> None:
        nonlocal calls
        calls += 1
        if calls in (1, 2, 3, 5):
            raise ConnectionRefusedError(111, "Connection refused")
        if calls == 4:  # the session came up, delivered, then the device went away
            d.connected = True
            on_state(True, None)
            on_value("temp", 20.0, "good", None)
            raise opcua_client._Lost("transport lost")
        stop_.set()

    attempts: list[int] = []

    def delay(attempt: int, initial: float, cap: float, r: float) -> float:
        attempts.append(attempt)
        return 0.0

    monkeypatch.setattr(d, "_session", session)
    monkeypatch.setattr(opcua_client, "backoff_delay", delay)
    values: list[tuple[str, Any, str]] = []
    states: list[tuple[bool, str | None]] = []
    with caplog.at_level("DEBUG", logger="field.opcua"):
        asyncio.run(
            d.run(
                lambda n, v, q, t: values.append((n, v, q)),
                lambda ok, e: states.append((ok, e)),
                stop,
            )
        )
    assert attempts == [0, 1, 2, 0, 1]  # the count starts again after a session was up
    assert [s for s in states if s[0]] == [(True, None)]
    errors = [e for ok, e in states if not ok]
    assert errors == ["connect: connection refused"] * 3 + [
        "closed: transport lost",
        "connect: connection refused",
    ]
    bad = [(n, v, q) for n, v, q in values if q == "bad"]
    assert bad == [("temp", None, "bad"), ("sp", None, "bad")] * 2  # once per outage
    loud = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert loud == [
        "sim: connect: connection refused",
        "sim: closed: transport lost",
        "sim: connect: connection refused",
    ]
    assert not d.connected
