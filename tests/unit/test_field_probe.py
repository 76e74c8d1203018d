"""The field role's test connection (`appliance.field.probe`) with fake links and a fake
OPC UA adapter: what a device that refuses, stays silent, answers an exception or answers
values gives, how bits and registers come back, which input is refused at which path,
one probe at a time, the time bound, a serial line in use, and the audit row the role
writes for each probe."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from testkit import FakeLink

from appliance.errors import ConfigInvalid, Conflict, DeviceError, Invalid, OpcUaError
from appliance.field.poller import Bus
from appliance.field.probe import PROBE_LIMIT_S, Prober, exception_words, parse_request
from appliance.field.role import FieldRole
from appliance.paths import Paths
from appliance.state.db import Audit, Store

TCP = {"protocol": "modbus-tcp", "address": "192.168.50.10"}
RTU = {"protocol": "modbus-rtu", "serial": {"port": "/dev/ttyS1"}, "unit_id": 3}
UA = {"protocol": "opcua", "address": "opc.tcp://192.168.50.20:4840"}


class Rig:
    """A Prober over fake links: `tcp` answers every TCP address, `rtu` every serial port."""

    def __init__(self, **kw: Any) -> None:
        self.tcp = FakeLink({0: 7, 1: 65535, 100: 1234})
        self.rtu = FakeLink({0: 42})
        self.made: list[tuple[Any, ...]] = []
        self.buses: dict[tuple[str, ...], Bus] = {}
        self.ua_calls: list[tuple[Any, ...]] = []
        self.ua_answer: dict[str, Any] | OpcUaError = {"state": "Running"}

        def tcp_link(host: str, port: int, timeout: float) -> FakeLink:
            self.made.append(("tcp", host, port, timeout))
            return self.tcp

        def rtu_link(port: str, **settings: Any) -> FakeLink:
            self.made.append(("rtu", port, settings))
            return self.rtu

        async def opcua_probe(dev: Any, paths: Any, node: str | None, limit: int) -> Any:
            self.ua_calls.append((dev.address, node, limit))
            if isinstance(self.ua_answer, OpcUaError):
                raise self.ua_answer
            return self.ua_answer

        self.prober = Prober(
            tcp_link=tcp_link,
            rtu_link=rtu_link,
            make_bus=Bus,
            buses=lambda: self.buses,
            opcua_probe=opcua_probe,
            **kw,
        )

    def run(self, body: dict[str, Any]) -> dict[str, Any]:
        return asyncio.run(self.prober.run(parse_request(body)))


def problems(body: Any) -> dict[str, str]:
    with pytest.raises((ConfigInvalid, Invalid)) as exc:
        parse_request(body)
    e = exc.value
    if isinstance(e, ConfigInvalid):
        return {path: msg for path, msg, _ in e.errors}
    return {e.field or "": e.message}


# -- Modbus ---------------------------------------------------------------------------


def test_a_bare_test_reads_holding_register_0_and_closes_the_connection() -> None:
    rig = Rig()
    out = rig.run({"device": TCP})
    assert out["ok"] is True and out["stage"] is None
    assert out["protocol"] == "modbus-tcp" and out["target"] == "192.168.50.10:502"
    assert out["message"].startswith("192.168.50.10:502 answered in ")
    assert out["read"] == {"table": "holding", "address": 0, "count": 1, "values": [7]}
    assert out["browse"] is None and out["elapsed_ms"] >= 0
    assert rig.made == [("tcp", "192.168.50.10", 502, 1.0)]
    assert rig.tcp.reads == [("holding", 0, 1)] and not rig.tcp.connected


def test_registers_come_back_unsigned_and_bits_as_booleans() -> None:
    rig = Rig()
    out = rig.run({"device": TCP, "read": {"table": "holding", "address": 0, "count": 2}})
    assert out["read"]["values"] == [7, 65535] and "holding 0-1" in out["message"]
    rig.tcp.registers[5] = -2  # a link that hands back a signed value
    out = rig.run({"device": TCP, "read": {"table": "input", "address": 5}})
    assert out["read"]["values"] == [65534]
    rig.tcp.coils = {3: True, 5: True}
    out = rig.run({"device": TCP, "read": {"table": "coil", "address": 3, "count": 4}})
    assert out["read"]["values"] == [True, False, True, False]
    assert all(type(v) is bool for v in out["read"]["values"])


def test_a_refused_connection_says_so() -> None:
    rig = Rig()
    rig.tcp.connect_error = DeviceError(
        "refused", "192.168.50.10:502: cannot connect: Connection refused"
    )
    out = rig.run({"device": TCP})
    assert out["ok"] is False and out["stage"] == "connect" and out["read"] is None
    assert out["message"] == (
        "cannot connect to 192.168.50.10:502: connection refused: the host is there, "
        "nothing listens on that port"
    )
    rig.tcp.connect_error = DeviceError(
        "refused", "192.168.50.10:502: cannot connect: [Errno 113] No route to host"
    )
    assert "no route to the host" in rig.run({"device": TCP})["message"]
    rig.tcp.connect_error = DeviceError(  # asyncio's text, the errno not in it
        "refused", "192.168.50.10:502: cannot connect: Connect call failed ('192.168.50.10', 502)"
    )
    assert rig.run({"device": TCP})["message"].endswith(
        "the connection was refused, or nothing answers at that address"
    )


def test_silence_at_connect_and_at_read_names_the_timeout_and_retries() -> None:
    rig = Rig()
    rig.tcp.connect_error = DeviceError("timeout", "no answer to connect within 2 s")
    out = rig.run({"device": {**TCP, "timeout": 2}})
    assert (out["ok"], out["stage"]) == (False, "connect")
    assert out["message"].startswith("no answer from 192.168.50.10:502 within 2 s")
    rig.tcp.connect_error = None
    rig.tcp.fail = DeviceError("timeout", "192.168.50.10:502: read: no answer within 1 s")
    out = rig.run({"device": {**TCP, "retries": 2, "unit_id": 9}})
    assert (out["ok"], out["stage"]) == (False, "read")
    assert len(rig.tcp.reads) == 3  # the first try and two retries
    assert "within 1 s (asked 3 times for holding 0; is the unit id 9 right?)" in out["message"]


def test_an_exception_proves_the_device_is_there_but_fails_a_read_asked_for() -> None:
    rig = Rig()
    rig.tcp.holes = {0, 104}
    out = rig.run({"device": TCP})
    assert out["ok"] is True and out["read"] is None
    assert "exception 2 (illegal data address) for holding register 0" in out["message"]
    out = rig.run({"device": TCP, "read": {"table": "holding", "address": 100, "count": 10}})
    assert (out["ok"], out["stage"]) == (False, "read")
    assert out["message"].startswith(
        "the device answered exception 2 (illegal data address) for holding 100-109"
    )
    assert len(rig.tcp.reads) == 2  # an exception is an answer: never retried


def test_a_gateway_that_cannot_reach_its_device_is_not_an_answer() -> None:
    rig = Rig()
    rig.tcp.fail = DeviceError("exception", "exception 11", exception_code=11)
    out = rig.run({"device": TCP})
    assert (out["ok"], out["stage"]) == (False, "read")
    assert "gateway target device failed to respond" in out["message"]


def test_every_exception_code_has_words() -> None:
    for code in range(1, 12):
        words = exception_words(code)
        assert words.startswith(f"exception {code} (") and "unknown" not in words
    assert exception_words(2) == "exception 2 (illegal data address)"


def test_a_probe_is_bounded_by_the_limit_and_its_link_closed() -> None:
    rig = Rig(limit_s=0.3)
    rig.tcp.delay = 30  # a device that takes the connection and never answers
    started = time.monotonic()
    out = rig.run({"device": {**TCP, "timeout": 60, "retries": 10}})
    assert time.monotonic() - started < 1.5
    assert (out["ok"], out["stage"]) == (False, "read")
    assert out["message"] == "no answer from 192.168.50.10:502 within 0.3 s"
    assert not rig.tcp.connected
    assert PROBE_LIMIT_S == 15.0  # the default bound API-probe.md promises


def test_one_probe_at_a_time() -> None:
    rig = Rig()
    rig.tcp.delay = 0.3

    async def two() -> tuple[dict[str, Any], BaseException | None]:
        first = asyncio.create_task(rig.prober.run(parse_request({"device": TCP})))
        await asyncio.sleep(0.05)
        err: BaseException | None = None
        try:
            await rig.prober.run(parse_request({"device": TCP}))
        except Conflict as e:
            err = e
        return await first, err

    out, err = asyncio.run(two())
    assert out["ok"] is True
    assert isinstance(err, Conflict) and "another test connection is running" in err.message
    rig.tcp.delay = 0
    assert rig.run({"device": TCP})["ok"] is True  # free again afterwards


def test_a_serial_line_in_use_is_shared_under_its_lock_never_opened_twice() -> None:
    rig = Rig()
    line = FakeLink({0: 99})
    line.is_connected = True
    bus = Bus(line, gap=0.002, shared=True)
    rig.buses[("rtu", "/dev/ttyS1", "19200", "E", "1", "8")] = bus

    async def while_polling() -> tuple[dict[str, Any], float]:
        async with bus.lock:  # a poll holds the line
            task = asyncio.create_task(rig.prober.run(parse_request({"device": RTU})))
            await asyncio.sleep(0.2)
            assert not task.done() and line.reads == []
            held_until = time.monotonic()
        out = await task
        return out, held_until

    out, held_until = asyncio.run(while_polling())
    assert out["ok"] is True and out["target"] == "/dev/ttyS1 unit 3"
    assert out["read"]["values"] == [99] and line.reads == [("holding", 0, 1)]
    assert line.times[0][0] >= held_until  # sent only once the poll let go of the line
    assert rig.made == [] and line.connected  # the running line: not reopened, not closed
    with pytest.raises(Invalid) as exc:
        rig.run({"device": {**RTU, "serial": {"port": "/dev/ttyS1", "baud": 9600}}})
    assert exc.value.field == "device.serial" and "19200 baud, 8E1" in exc.value.message


def test_a_free_serial_port_is_opened_for_the_probe_and_closed() -> None:
    rig = Rig()
    out = rig.run({"device": {**RTU, "serial": {"port": "/dev/ttyUSB0", "baud": 9600}}})
    assert out["ok"] is True and out["read"]["values"] == [42]
    assert rig.made == [
        (
            "rtu",
            "/dev/ttyUSB0",
            {"baud": 9600, "parity": "E", "stop_bits": 1, "data_bits": 8, "timeout": 1.0},
        )
    ]
    assert not rig.rtu.connected


# -- OPC UA ---------------------------------------------------------------------------


def test_opcua_connects_and_reads_the_state_without_browsing_unless_asked() -> None:
    rig = Rig()
    out = rig.run({"device": UA})
    assert out["ok"] is True and out["browse"] is None and out["read"] is None
    assert out["message"] == (
        "connected to opc.tcp://192.168.50.20:4840 (no security): the server says Running"
    )
    assert rig.ua_calls == [("opc.tcp://192.168.50.20:4840", None, 500)]


def test_opcua_browse_lists_children_null_or_empty_is_the_objects_folder() -> None:
    rig = Rig()
    child = {"node_id": "ns=2;s=T", "name": "T", "class": "Variable", "value": 21.5}
    rig.ua_answer = {"state": "Running", "children": [child], "truncated": False}
    out = rig.run({"device": UA, "browse": None})
    assert out["ok"] is True and out["browse"]["node"] == "ns=0;i=85"
    assert out["browse"]["children"] == [child] and "has 1 children" in out["message"]
    rig.run({"device": UA, "browse": ""})
    rig.run({"device": UA, "browse": "ns=2;s=PLC"})
    assert [c[1] for c in rig.ua_calls] == ["ns=0;i=85", "ns=0;i=85", "ns=2;s=PLC"]
    rig.ua_answer = {"state": "Running", "browse_error": "the server says BadNodeIdUnknown"}
    out = rig.run({"device": UA, "browse": "ns=2;s=Nope"})
    assert (out["ok"], out["stage"]) == (False, "browse")
    assert "browsing ns=2;s=Nope failed: the server says BadNodeIdUnknown" in out["message"]


def test_opcua_security_and_connect_failures_are_plain() -> None:
    rig = Rig()
    rig.ua_answer = OpcUaError("security", "security refused (BadSecurityChecksFailed)")
    out = rig.run({"device": UA})
    assert (out["ok"], out["stage"]) == (False, "connect")
    assert out["message"] == (
        "opc.tcp://192.168.50.20:4840 refused the security settings: security refused "
        "(BadSecurityChecksFailed)"
    )
    rig.ua_answer = OpcUaError("connect", "connection refused")
    assert rig.run({"device": UA})["message"].endswith("nothing listens on that port")
    rig.ua_answer = OpcUaError("auth", "log-on refused (BadUserAccessDenied)")
    assert "refused the log-on" in rig.run({"device": UA})["message"]


# -- input ----------------------------------------------------------------------------


def test_bad_input_is_refused_at_its_path() -> None:
    assert "device.address" in problems({"device": {**TCP, "address": "10.0.0.1:99999"}})
    assert "device.protocol" in problems({"device": {"protocol": "bacnet"}})
    assert "device.serial" in problems({"device": {"protocol": "modbus-rtu"}})
    assert "device.bogus" in problems({"device": {**TCP, "bogus": 1}})
    assert "extra" in problems({"device": TCP, "extra": 1})
    assert "device" in problems({})
    assert "device" in problems([TCP])
    got = problems({"device": TCP, "read": {"table": "holding", "address": 0, "count": 126}})
    assert got == {"read.count": "one read takes at most 125 registers"}
    assert "read.count" in problems(
        {"device": TCP, "read": {"table": "coil", "address": 0, "count": 2001}}
    )
    assert "read.count" in problems(
        {"device": TCP, "read": {"table": "coil", "address": 65530, "count": 10}}
    )
    assert "read.table" in problems({"device": TCP, "read": {"table": "flags", "address": 0}})
    assert "read.address" in problems({"device": TCP, "read": {"table": "coil", "address": -1}})
    assert "read" in problems({"device": UA, "read": {"table": "coil", "address": 0}})
    assert "browse" in problems({"device": TCP, "browse": "i=85"})
    assert "browse" in problems({"device": UA, "browse": "Temperature"})
    # the name may be left out; tags are ignored, even ones that would not validate
    req = parse_request({"device": {**TCP, "tags": [{"name": "x", "node": "i=1"}]}})
    assert req.device.name == "probe" and req.device.tags == []


# -- the role ---------------------------------------------------------------------------


def test_the_role_runs_probes_and_audits_each_with_its_actor(store: Store, tmp_path: Path) -> None:
    link = FakeLink({0: 5})
    link.connect_error = None
    role = FieldRole(
        Paths(tmp_path / "data", tmp_path / "run"),
        store,
        ring=lambda: None,
        tcp_link=lambda host, port, timeout: link,
    )

    async def body() -> None:
        await role.start()
        try:
            out = await role.probe({"device": TCP}, "web:alice", "web:10.0.0.5")
            assert out["ok"] is True and out["read"]["values"] == [5]
            link.connect_error = DeviceError("refused", "x: cannot connect: Connection refused")
            out = await role.probe({"device": TCP}, "web:alice")
            assert out["ok"] is False
            with pytest.raises(ConfigInvalid):
                await role.probe({"device": {**TCP, "address": "a b"}}, "web:bob")
        finally:
            await role.close()

    asyncio.run(body())
    rows = [
        (a.actor, a.action, a.target, a.result, a.source) for a in Audit.select().order_by(Audit.id)
    ]
    assert rows == [
        ("web:alice", "device.probe", "192.168.50.10:502", "ok", "web:10.0.0.5"),
        ("web:alice", "device.probe", "192.168.50.10:502", "failed", "api"),
        ("web:bob", "device.probe", "a b", "failed", "api"),
    ]
    last = Audit.select().order_by(Audit.id.desc()).first()
    assert "device.address" in last.detail
    assert "probe" in role.control.handlers
