"""The modbusproxy role over loopback sockets: a fake PLC, the role between, a client."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import socket
import struct
from pathlib import Path
from typing import Any

import pytest
from testkit import Clock

from appliance.config.load import validate_data
from appliance.modbusproxy import learn
from appliance.modbusproxy import role as proxy
from appliance.modbusproxy.role import ModbusProxyRole
from appliance.roles import Change

from .factory import base, conduit

PLC = ("192.168.50.10", 502)


class FakePlc:
    """Answers each request with a fixed response; records what reached it. With
    `unasked`, the answer is to a request nobody sent (another transaction id)."""

    def __init__(self) -> None:
        self.received = b""
        self.server: asyncio.Server | None = None
        self.unasked = False
        self.ident = bytes([43, 14, 1, 1, 0, 0, 3, 0, 4]) + b"Acme" + b"\x01\x02P9\x02\x031.0"

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _serve(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):  # the proxy resets it
            await self._answer(r, w)

    async def _answer(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while data := await r.read(65536):
            self.received += data
            while data:
                tid, _, length, unit = struct.unpack(">HHHB", data[:7])
                fc = data[7]
                data = data[6 + length :]
                tid += 1000 if self.unasked else 0
                if fc == 43:
                    w.write(struct.pack(">HHHB", tid, 0, len(self.ident) + 1, unit) + self.ident)
                    continue
                w.write(struct.pack(">HHHBBBH", tid, 0, 5, unit, fc, 2, 42))
            await w.drain()

    def close(self) -> None:
        if self.server is not None:
            self.server.close()


class LoopbackSockets:
    """Plain sockets: the client "meant" PLC, the upstream goes to the fake PLC's port."""

    def __init__(self, plc_port: int) -> None:
        self.plc_port = plc_port
        self.port = 0
        self.sources: list[str | None] = []
        self.fail = False
        self.connect_delay = 0.0  # the PLC's side takes this long to come up
        self.connect_error: OSError | None = None
        self.sndbuf = 0  # SO_SNDBUF of the accepted sockets, when set

    def listener(self) -> socket.socket:
        if self.fail:
            raise PermissionError(1, "Operation not permitted")
        s = socket.socket()
        if self.sndbuf:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.sndbuf)
        s.bind(("127.0.0.1", 0))
        s.listen()
        s.setblocking(False)
        self.port = s.getsockname()[1]
        return s

    def destination(self, transport: asyncio.BaseTransport) -> tuple[str, int]:
        return PLC

    async def connect(self, source: str | None, destination: tuple[str, int]) -> socket.socket:
        assert destination == PLC
        self.sources.append(source)
        await asyncio.sleep(self.connect_delay)
        if self.connect_error is not None:
            raise self.connect_error
        s = socket.socket()
        s.setblocking(False)
        try:
            await asyncio.get_running_loop().sock_connect(s, ("127.0.0.1", self.plc_port))
        except BaseException:
            s.close()
            raise
        return s


class Events:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, dict[str, Any]]] = []

    def event(self, kind: str, message: str, **kw: Any) -> None:
        self.rows.append((kind, message, kw.get("data") or {}))


def config(modbus: Any = "read-only", client: str = "127.0.0.1", **extra: Any) -> Any:
    data = base()
    data["interfaces"][0]["addresses"].append("127.0.0.1/8")
    data["conduits"] = [conduit("scada", modbus=modbus, **{"from": [client]}, **extra)]
    return validate_data(data, now=None).config


def rq(tid: int, fc: int, *values: int, fmt: str = "HH", unit: int = 1) -> bytes:
    body = bytes([fc]) + struct.pack(">" + fmt, *values)
    return struct.pack(">HHHB", tid, 0, len(body) + 1, unit) + body


class Records:
    """The role's records in memory (`store.StoreRecords` in the history DB)."""

    def __init__(self) -> None:
        self.learned: dict[Any, Any] = {}
        self.assets: dict[str, Any] = {}
        self.saves = 0

    def load_learned(self) -> list[Any]:
        return [copy.deepcopy(o) for o in self.learned.values()]

    def save_learned(self, changed: list[Any], gone: list[Any]) -> None:
        self.saves += 1
        for key in gone:
            self.learned.pop(key, None)
        for o in changed:
            self.learned[o.key] = copy.deepcopy(o)

    def load_assets(self) -> list[Any]:
        return [copy.deepcopy(a) for a in self.assets.values()]

    def save_assets(self, changed: list[Any]) -> None:
        for a in changed:
            self.assets[a.address] = copy.deepcopy(a)


class Rig:
    def __init__(self, tmp_path: Path) -> None:
        self.plc = FakePlc()
        self.events = Events()
        self.clock = Clock(1767225600.0)  # 2026-01-01, the factory's NOW
        self.records = Records()

    async def start(self, cfg: Any) -> ModbusProxyRole:
        port = await self.plc.start()
        self.sockets = LoopbackSockets(port)
        self.role = ModbusProxyRole(
            self.events, sockets=self.sockets, clock=self.clock, records=self.records
        )
        await self.role.start()
        await self.role.apply(Change(1, cfg))
        return self.role

    async def client(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", self.sockets.port)

    async def stop(self) -> None:
        await self.role.close()
        self.plc.close()


async def answer(r: asyncio.StreamReader, n: int = 1) -> list[bytes]:
    out = []
    for _ in range(n):
        head = await asyncio.wait_for(r.readexactly(6), 2)
        out.append(head + await r.readexactly(struct.unpack(">H", head[4:])[0]))
    return out


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    return Rig(tmp_path)


def test_reads_pass_and_a_write_is_answered_with_exception_01(rig: Rig) -> None:
    async def run() -> None:
        await rig.start(config())
        r, w = await rig.client()
        w.write(rq(1, 3, 0, 1) + rq(2, 6, 0, 99) + rq(3, 4, 0, 1))  # the write is the 2nd ADU
        got = await answer(r, 3)
        assert rq(2, 6, 0, 99) not in rig.plc.received
        assert rig.plc.received == rq(1, 3, 0, 1) + rq(3, 4, 0, 1)
        assert bytes.fromhex("0002 0000 0003 01 86 01") in got
        assert sum(1 for a in got if a[7] == 3 or a[7] == 4) == 2
        w.write(rq(4, 16, 0, 1, 2, 7, fmt="HHBH")[:9])  # a write split over two segments
        await w.drain()
        await asyncio.sleep(0.05)
        w.write(rq(4, 16, 0, 1, 2, 7, fmt="HHBH")[9:])
        assert await answer(r) == [bytes.fromhex("0004 0000 0003 01 90 01")]
        assert rig.sockets.sources == ["127.0.0.1"]  # upstream from the client's own address
        snap = rig.role.snapshot(rig.clock())
        assert snap["listening"] and snap["connections"] == 1
        assert snap["conduits"]["scada"]["allowed"] == {"3": 1, "4": 1}
        assert snap["conduits"]["scada"]["refused"] == {"6": 1, "16": 1}
        assert snap["conduits"]["scada"]["restriction"] == "read-only"
        w.close()
        await rig.stop()

    asyncio.run(run())


def test_refusals_are_aggregated_events(rig: Rig) -> None:
    async def run() -> None:
        await rig.start(config())
        r, w = await rig.client()
        for tid in range(10):  # a client retrying its write
            w.write(rq(tid, 6, 5, 1))
            await answer(r)
            rig.clock.t += 0.1
        await rig.role.step(rig.clock())
        refused = [row for row in rig.events.rows if row[0] == "modbus.refused"]
        assert len(refused) == 1  # the first at once, the rest wait for REPORT_EVERY_S
        _kind, message, data = refused[0]
        assert message == (
            "conduit scada: refused 127.0.0.1 → 192.168.50.10 unit 1 function 6 (write single "
            "register) holding 5 (illegal function)"
        )
        assert (data["source"], data["plc"], data["unit"], data["function"]) == (
            "127.0.0.1", "192.168.50.10", 1, 6,
        )  # fmt: skip
        rig.clock.t += proxy.REPORT_EVERY_S
        await rig.role.step(rig.clock())
        refused = [row for row in rig.events.rows if row[0] == "modbus.refused"]
        assert len(refused) == 2
        assert refused[1][1].endswith("(9 times since the last report)")
        assert refused[1][2]["count"] == 10
        assert refused[1][2]["first_seen"] < refused[1][2]["last_seen"]
        await rig.role.step(rig.clock() + proxy.REPORT_EVERY_S)
        assert len([row for row in rig.events.rows if row[0] == "modbus.refused"]) == 2
        w.close()
        await rig.stop()

    asyncio.run(run())


def test_on_refusal_reset_resets_the_connection(rig: Rig) -> None:
    async def run() -> None:
        await rig.start(config({"preset": "read-only", "on_refusal": "reset"}))
        r, w = await rig.client()
        w.write(rq(1, 6, 0, 1))
        with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError)):
            await answer(r)
        assert rig.plc.received == b""
        await rig.role.step(rig.clock())
        [(_kind, message, data)] = rig.events.rows
        assert message.endswith("holding 0 (connection reset)") and data["exception"] == 0
        await rig.stop()

    asyncio.run(run())


def test_a_client_of_no_restricted_conduit_is_reset(rig: Rig) -> None:
    async def run() -> None:
        await rig.start(config(client="10.10.0.2"))
        r, w = await rig.client()
        w.write(rq(1, 3, 0, 1))
        with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError)):
            await answer(r)
        assert rig.sockets.sources == []  # the PLC was never contacted
        await rig.stop()

    asyncio.run(run())


def test_a_conduit_that_goes_resets_its_connections_and_a_new_policy_applies(rig: Rig) -> None:
    async def run() -> None:
        await rig.start(config())
        r, w = await rig.client()
        w.write(rq(1, 6, 0, 1))
        assert (await answer(r))[0][7] == 0x86
        await rig.role.apply(Change(2, config("read-write")))  # loosened: the next write passes
        w.write(rq(2, 6, 0, 1))
        assert (await answer(r))[0][7] == 6
        await rig.role.apply(Change(3, config(enabled=False)))
        with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError)):
            await answer(r)
        assert rig.role.snapshot(rig.clock())["conduits"] == {}
        await rig.stop()

    asyncio.run(run())


def test_an_expired_conduit_resets_at_the_next_step(rig: Rig) -> None:
    async def run() -> None:
        await rig.start(config(expires="2026-01-01T00:01:00Z"))
        r, w = await rig.client()
        w.write(rq(1, 3, 0, 1))
        await answer(r)
        rig.clock.t += 61
        await rig.role.step(rig.clock())
        with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError)):
            await answer(r)
        await rig.stop()

    asyncio.run(run())


def test_a_response_to_no_request_resets(rig: Rig) -> None:
    async def run() -> None:
        await rig.start(config())
        r, w = await rig.client()
        w.write(rq(1, 3, 0, 1))
        await answer(r)
        [conn] = rig.role.conns
        rig.plc.unasked = True  # the PLC side sends an answer nobody asked for
        w.write(rq(2, 3, 0, 1))
        with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError)):
            await answer(r)  # it does not reach the client: the connection is reset
        assert conn.reset_why == "a response (transaction 1002) to no request"
        assert not rig.role.conns
        await rig.stop()

    asyncio.run(run())


def test_masquerade_connects_from_the_appliance(rig: Rig) -> None:
    async def run() -> None:
        cfg = config()
        cfg = cfg.model_copy(update={"nat": cfg.nat.model_copy(update={"masquerade": True})})
        await rig.start(cfg)
        r, w = await rig.client()
        w.write(rq(1, 3, 0, 1))
        await answer(r)
        assert rig.sockets.sources == [None]
        w.close()
        await rig.stop()

    asyncio.run(run())


def test_a_listener_that_cannot_open_is_an_error_and_tried_again(rig: Rig) -> None:
    async def run() -> None:
        port = await rig.plc.start()
        sockets = LoopbackSockets(port)
        sockets.fail = True
        role = ModbusProxyRole(rig.events, sockets=sockets, clock=rig.clock)
        await role.start()
        snap = role.snapshot(rig.clock())
        assert not snap["listening"]
        assert snap["error"] == (
            "cannot listen for the restricted conduits: [Errno 1] Operation not permitted"
        )
        await role.step(rig.clock())
        assert [row[0] for row in rig.events.rows] == ["modbusproxy.failed"]
        sockets.fail = False
        rig.clock.t += proxy.RETRY_EVERY_S
        await role.step(rig.clock())
        assert role.snapshot(rig.clock())["listening"] and role.error is None
        await role.close()
        rig.plc.close()

    asyncio.run(run())


def test_connections_beyond_the_limit_are_reset(rig: Rig, monkeypatch) -> None:
    monkeypatch.setattr(proxy, "MAX_CONNECTIONS", 1)

    async def run() -> None:
        await rig.start(config())
        r1, w1 = await rig.client()
        w1.write(rq(1, 3, 0, 1))
        await answer(r1)
        r2, w2 = await rig.client()
        w2.write(rq(1, 3, 0, 1))
        with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError)):
            await answer(r2)
        w1.write(rq(2, 3, 0, 1))
        assert len(await answer(r1)) == 1  # the first one goes on
        w1.close()
        await rig.stop()

    asyncio.run(run())


def test_what_comes_before_the_plc_is_reached_waits_for_it(rig: Rig) -> None:
    async def run() -> None:
        await rig.start(config())
        rig.sockets.connect_delay = 0.2
        r, w = await rig.client()
        w.write(rq(1, 3, 0, 1) + rq(2, 6, 0, 1) + rq(3, 4, 0, 1))  # at once, while connecting
        got = sorted(await answer(r, 3))
        assert [(a[:2], a[7]) for a in got] == [
            (b"\x00\x01", 3),
            (b"\x00\x02", 0x86),
            (b"\x00\x03", 4),
        ]
        assert rig.plc.received == rq(1, 3, 0, 1) + rq(3, 4, 0, 1)
        w.close()
        await rig.stop()

    asyncio.run(run())


def test_a_plc_that_cannot_be_reached_resets_the_client(rig: Rig) -> None:
    async def run() -> None:
        await rig.start(config())
        rig.sockets.connect_error = ConnectionRefusedError(111, "Connection refused")
        r, w = await rig.client()
        w.write(rq(1, 3, 0, 1))
        with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError)):
            await answer(r)
        assert not rig.role.conns and rig.plc.received == b""
        await rig.stop()

    asyncio.run(run())


def test_both_sides_have_tcp_nodelay(rig: Rig) -> None:
    async def run() -> None:
        await rig.start(config())
        r, w = await rig.client()
        w.write(rq(1, 3, 0, 1))
        await answer(r)
        [conn] = rig.role.conns
        for t in (conn.client_t, conn.upstream_t):
            assert t is not None
            assert t.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        w.close()
        await rig.stop()

    asyncio.run(run())


def test_a_client_that_does_not_read_is_not_read_either(rig: Rig) -> None:
    """Flow control: the proxy's exceptions pile up for a client that does not read them
    only to the transport's high-water mark (plus one read's worth), then the proxy stops
    reading that client; once the client reads, every answer comes."""
    n = 30000

    async def run() -> None:
        port = await rig.plc.start()
        rig.sockets = LoopbackSockets(port)
        rig.sockets.sndbuf = 4096  # so the kernel does not take it all
        rig.role = ModbusProxyRole(rig.events, sockets=rig.sockets, clock=rig.clock)
        await rig.role.start()
        await rig.role.apply(Change(1, config()))
        loop = asyncio.get_running_loop()
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.setblocking(False)
        await loop.sock_connect(s, ("127.0.0.1", rig.sockets.port))
        sending = asyncio.create_task(
            loop.sock_sendall(s, b"".join(rq(t, 6, 0, 1) for t in range(n)))
        )
        await asyncio.sleep(1.0)
        [conn] = rig.role.conns
        assert conn.client_t is not None and conn.upstream_t is not None
        assert not conn.client_t.is_reading() and not conn.upstream_t.is_reading()
        assert conn.client_t.get_write_buffer_size() < 64 * 1024 + 256 * 1024
        got = 0
        while got < n * 9:
            data = await loop.sock_recv(s, 65536)
            assert data
            got += len(data)
        assert got == n * 9
        await sending
        assert conn.client_t.is_reading()
        assert rig.role.counters["scada"].refused[6] == n
        s.close()
        await rig.stop()

    asyncio.run(run())


def test_closing_the_role_resets_its_connections(rig: Rig) -> None:
    async def run() -> None:
        await rig.start(config())
        r, w = await rig.client()
        w.write(rq(1, 3, 0, 1))
        await answer(r)
        await rig.role.close()
        with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError)):
            await answer(r)
        assert not rig.role.conns
        rig.plc.close()

    asyncio.run(run())


def test_test_mode_passes_a_write_it_would_refuse_and_reports_it(rig: Rig) -> None:
    async def run() -> None:
        await rig.start(config({"preset": "read-only", "mode": "test"}))
        r, w = await rig.client()
        w.write(rq(1, 3, 0, 1) + rq(2, 6, 40, 999))
        got = await answer(r, 2)
        assert sorted(a[7] for a in got) == [3, 6]  # the write was answered by the PLC
        assert rig.plc.received == rq(1, 3, 0, 1) + rq(2, 6, 40, 999)
        await rig.role.step(rig.clock())
        kinds = sorted(row[0] for row in rig.events.rows)
        assert kinds == ["modbus.device_new", "modbus.would_refuse"]
        [(_kind, message, data)] = [x for x in rig.events.rows if x[0] == "modbus.would_refuse"]
        assert message == (
            "conduit scada: would refuse (mode test: passed) 127.0.0.1 → 192.168.50.10 unit 1 "
            "function 6 (write single register) holding 40 (illegal function)"
        )
        assert data["would"] is True and data["count"] == 1
        doc = rig.role.snapshot(rig.clock())["conduits"]["scada"]
        assert doc["mode"] == "test" and doc["restriction"] == "read-only (test)"
        assert doc["allowed"] == {"3": 1, "6": 1}
        assert doc["refused"] == {} and doc["would_refuse"] == {"6": 1}
        w.close()
        await rig.stop()

    asyncio.run(run())


def test_learn_mode_records_what_crosses_and_a_restart_keeps_it(rig: Rig) -> None:
    async def run() -> None:
        await rig.start(config("learn"))
        r, w = await rig.client()
        w.write(rq(1, 3, 0, 10) + rq(2, 3, 10, 5) + rq(3, 4, 100, 2, unit=2))
        await answer(r, 3)
        w.write(rq(4, 6, 40, 7))
        await answer(r)
        assert rig.events.rows == []  # nothing refused, nothing would be
        snap = rig.role.snapshot(rig.clock())["conduits"]["scada"]
        assert (snap["mode"], snap["learned"]) == ("learn", 4)
        w.close()
        await rig.stop()  # saves what was learned
        assert rig.records.saves == 1

        again = ModbusProxyRole(
            rig.events, sockets=rig.sockets, clock=rig.clock, records=rig.records
        )
        await again.start()
        proposal = learn.propose("scada", again.learning.of("scada"))
        assert proposal is not None
        assert proposal.mapping == {
            "function_codes": [3, 4, 6],
            "unit_ids": [1, 2],
            "ranges": {"input": [[100, 101]], "holding": [[0, 14], [40, 40]]},
            "mode": "test",
        }
        await again.close()

    asyncio.run(run())


def test_the_inventory_has_the_device_and_its_identification(rig: Rig) -> None:
    async def run() -> None:
        await rig.start(config())
        r, w = await rig.client()
        w.write(rq(1, 3, 0, 1) + rq(2, 43, 0x0E01, 0, fmt="HB"))
        await answer(r, 2)
        await rig.role.step(rig.clock())
        [(kind, message, _data)] = rig.events.rows
        assert kind == "modbus.device_new"
        assert message == (
            "new Modbus device 192.168.50.10 (unit 1) seen through conduit scada from 127.0.0.1"
        )
        asset = rig.role.inventory.items["192.168.50.10"]
        assert asset.units == {1} and asset.functions == {3, 43}
        assert asset.identity[1]["vendor"] == "Acme"
        assert asset.identity[1]["revision"] == "1.0"
        rig.plc.ident = rig.plc.ident[:-3] + b"2.0"  # new firmware
        w.write(rq(3, 43, 0x0E01, 0, fmt="HB"))
        await answer(r)
        await rig.role.step(rig.clock())
        kind, message, _data = rig.events.rows[-1]
        assert kind == "modbus.device_changed"
        assert message == (
            "Modbus device 192.168.50.10 unit 1 identifies as Acme P9 2.0, was Acme P9 1.0"
        )
        w.close()
        await rig.stop()
        assert rig.records.assets["192.168.50.10"].identity[1]["revision"] == "2.0"

    asyncio.run(run())


def test_a_listing_of_what_crosses_when_the_proxy_cannot_save(rig: Rig) -> None:
    """A history DB that cannot be written keeps what was learned for the next save."""

    async def run() -> None:
        await rig.start(config("learn"))
        r, w = await rig.client()
        w.write(rq(1, 3, 0, 1))
        await answer(r)

        def broken(changed: list[Any], gone: list[Any]) -> None:
            raise OSError("database is locked")

        saved = rig.records.save_learned
        rig.records.save_learned = broken  # type: ignore[method-assign]
        rig.clock.t += proxy.SAVE_EVERY_S
        await rig.role.step(rig.clock())
        assert rig.records.learned == {}
        rig.records.save_learned = saved  # type: ignore[method-assign]
        w.close()
        await rig.stop()
        assert len(rig.records.learned) == 1

    asyncio.run(run())


def test_identify_asks_each_unit_once_on_the_clients_connection(rig: Rig) -> None:
    async def run() -> None:
        await rig.start(config({"preset": "read-only", "identify": True}))
        r, w = await rig.client()
        w.write(rq(1, 3, 0, 1) + rq(2, 3, 0, 1, unit=2))
        await answer(r, 2)
        await rig.role.step(rig.clock())  # asks units 1 and 2
        w.write(rq(3, 3, 0, 1))
        [got] = await answer(r)  # only its own answer comes back
        assert got[:2] == b"\x00\x03"
        await rig.role.step(rig.clock())
        asks = [d for d in split(rig.plc.received) if d[7] == 43]
        assert [(a[6], a[8:]) for a in asks] == [(1, b"\x0e\x01\x00"), (2, b"\x0e\x01\x00")]
        asset = rig.role.inventory.items[PLC[0]]
        assert asset.identity[1]["vendor"] == "Acme" and asset.identity[2]["revision"] == "1.0"
        assert asset.functions == {3}  # the proxy's own request is not a client's use
        w.write(rq(4, 3, 0, 1))
        await answer(r)
        await rig.role.step(rig.clock())
        assert len([d for d in split(rig.plc.received) if d[7] == 43]) == 2  # once each
        w.close()
        await rig.stop()

    asyncio.run(run())


@pytest.mark.parametrize(
    ("ident", "kept"),
    [(bytes([0xAB, 0x01]), {"error": "exception 01"}), (bytes([43, 14, 1, 0x83, 0, 0, 0]), {})],
)
def test_a_device_without_identification_is_asked_once(
    rig: Rig, ident: bytes, kept: dict[str, str]
) -> None:
    async def run() -> None:
        rig.plc.ident = ident
        await rig.start(config({"preset": "read-only", "identify": True}))
        r, w = await rig.client()
        w.write(rq(1, 3, 0, 1))
        await answer(r)
        await rig.role.step(rig.clock())
        w.write(rq(2, 3, 0, 1))
        await answer(r)
        await rig.role.step(rig.clock())
        identity = dict(rig.role.inventory.items[PLC[0]].identity[1])
        assert identity.pop("at") == rig.clock()
        assert identity == kept
        assert len([d for d in split(rig.plc.received) if d[7] == 43]) == 1
        w.close()
        await rig.stop()

    asyncio.run(run())


def split(stream: bytes) -> list[bytes]:
    out = []
    while stream:
        n = 6 + struct.unpack(">H", stream[4:6])[0]
        out.append(stream[:n])
        stream = stream[n:]
    return out
