"""Modbus TCP polling against real servers in a namespace of our own (prefix "fa").

The lab's PLC simulator (`python -m appliance.lab.plc`) and a fuzzing fake device that
answers garbage, wrong lengths, wrong transaction ids, wrong functions, exceptions,
disconnects and silence run in netns ``fa-poll`` (loopback only); the pollers run in a
thread that joined that namespace. Checked: values and writes end to end, adaptive
splitting on a real "illegal data address", no crash and the right state, quality and
events for every fault, recovery, and that a hanging device does not delay the
healthy one's schedule.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import signal
import socket
import statistics
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from testkit import wait_for

from appliance.config.field import Device
from appliance.errors import NotFound, PermissionDenied
from appliance.field.modbus import DeviceError, tcp_link
from appliance.field.poller import Bus, DevicePoller, SplitMemory
from appliance.lab.topology import in_netns
from appliance.paths import Paths
from appliance.state import revisions as revs
from appliance.state.control import call, socket_path
from appliance.state.db import Audit, Store
from appliance.state.live import LiveState

T = TypeVar("T")
logging.getLogger("pymodbus").setLevel(logging.CRITICAL)  # the adapter reports errors


NS = "fa-poll"  # the `plc` fixture (conftest) runs the simulator here, on PLC_PORT
PLC_PORT = 1502
FUZZ_PORT = 1503
ROOT = Path(__file__).resolve().parents[2]


def in_ns(fn: Callable[[], T]) -> T:
    """Run fn in a thread that joined NS: its sockets live there, the process stays put."""
    return in_netns(NS, fn)


def _listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True
    return False


class Sink:
    def __init__(self) -> None:
        self.seen: dict[str, list[tuple[float, dict[str, tuple[Any, str]]]]] = {}
        self.states: dict[str, list[tuple[float, bool, str | None]]] = {}
        self.events: list[tuple[float, str, str]] = []

    def values_(self, device: str) -> list[tuple[float, dict[str, tuple[Any, str]]]]:
        return self.seen.setdefault(device, [])

    def values(self, device: str, batch: list[tuple[str, Any, str]], t: float) -> None:
        self.values_(device).append((time.monotonic(), {n: (v, q) for n, v, q in batch}))

    def state(self, device: str, ok: bool, error: str | None, t: float) -> None:
        self.states.setdefault(device, []).append((time.monotonic(), ok, error))

    def event(self, kind: str, message: str, severity: str, data: dict[str, Any]) -> None:
        self.events.append((time.monotonic(), kind, message))


def make(name: str, address: str, **kw: Any) -> Device:
    fields: dict[str, Any] = {"name": name, "protocol": "modbus-tcp", "address": address}
    fields.update(kw)
    return Device.model_validate(fields)


def poller(dev: Device, sink: Sink, splits: SplitMemory | None = None) -> DevicePoller:
    host, port = dev.host_port()
    return DevicePoller(dev, Bus(tcp_link(host, port, dev.timeout, name=dev.name)), sink, splits)


PLC_TAGS = [
    {"name": "counter", "table": "holding", "address": 0},
    {"name": "sine", "table": "holding", "address": 1, "type": "int16"},
    {"name": "fixed", "table": "holding", "address": 3},
    {"name": "temp", "table": "holding", "address": 10, "type": "float32"},
    {"name": "label", "table": "holding", "address": 20, "type": "string", "length": 8},
    {"name": "step", "table": "input", "address": 30},
    {"name": "walk", "table": "coil", "address": 0},
    {"name": "di0", "table": "discrete", "address": 0},
    {"name": "di1", "table": "discrete", "address": 1},
    {"name": "sp", "table": "holding", "address": 40, "writable": True},
    {"name": "spf", "table": "holding", "address": 42, "type": "float32", "writable": True},
    {"name": "out", "table": "coil", "address": 9, "writable": True},
]


def test_values_writes_and_a_learned_split(plc: str, tmp_path: Path) -> None:
    out = in_ns(lambda: asyncio.run(values_scenario(plc, tmp_path)))
    first, second, status = out["first"], out["second"], out["status"]
    assert first["fixed"] == (5678, "good")
    assert first["label"] == ("LAB-PLC-01", "good")
    assert 14.9 < first["temp"][0] < 25.1 and first["temp"][1] == "good"
    assert first["step"][0] in (0, 100)
    assert first["di0"] == (True, "good") and first["di1"] == (False, "good")
    assert -1000 <= first["sine"][0] <= 1000
    assert first["z"] == (0, "good")
    # split learned on the first cycle, and still every value came in that cycle
    # (the planner cuts at the widest gap nearest the middle: 12..19 first, then 32..39)
    assert status["requests_per_cycle"] == status["ideal_requests"] == 6
    splits = json.loads((tmp_path / "splits.json").read_text())
    assert splits == {"plc1": [["holding", 20], ["holding", 40]]}
    assert out["written"] == [1234, -2.5, True]
    assert second["sp"] == (1234, "good") and second["spf"] == (-2.5, "good")
    assert second["out"] == (True, "good")
    assert out["refused"].startswith("exception: ") and "exception 2" in out["refused"]


async def values_scenario(plc: str, tmp_path: Path) -> dict[str, Any]:
    sink = Sink()
    tags = [*PLC_TAGS, {"name": "z", "table": "holding", "address": 31},
            {"name": "walk0", "table": "coil", "address": 1, "writable": True}]  # fmt: skip
    dev = make("plc1", plc, tags=tags)
    p = poller(dev, sink, SplitMemory(tmp_path / "splits.json"))
    await p.poll_once()
    first = sink.values_("plc1")[-1][1]
    status = p.status()
    written = [await p.write("sp", 1234), await p.write("spf", -2.5), await p.write("out", True)]
    try:  # the simulator refuses writes to coils 0..7
        await p.write("walk0", True)
        refused = "accepted"
    except DeviceError as e:
        refused = str(e)
    await p.poll_once()
    second = sink.values_("plc1")[-1][1]
    p.bus.close()
    return {"first": first, "second": second, "status": status, "written": written,
            "refused": refused}  # fmt: skip


# -- the fuzzing device ---------------------------------------------------------------------


class FuzzDevice:
    """A Modbus TCP server that misbehaves on demand (`mode`)."""

    MODES = ("ok", "garbage", "short", "tid", "badfc", "exception", "close", "hang")

    def __init__(self) -> None:
        self.mode = "ok"
        self.requests = 0
        self.server: asyncio.Server | None = None

    async def start(self, port: int) -> None:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", port)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 1)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readexactly(7)
                tid, _pid, length, unit = struct.unpack(">HHHB", head)
                pdu = await reader.readexactly(length - 1)
                self.requests += 1
                fc = pdu[0]
                addr, count = struct.unpack(">HH", pdu[1:5])
                mode = self.mode
                if mode == "hang":
                    continue
                if mode == "close":
                    writer.close()
                    return
                if mode == "garbage":
                    writer.write(os.urandom(5) + b"\xff" * 20)
                    await writer.drain()
                    continue
                if mode == "exception":
                    body = bytes([fc | 0x80, 4])
                else:
                    n = count - 1 if mode == "short" else count
                    regs = [(addr + i + self.requests) & 0xFFFF for i in range(n)]
                    out_fc = 4 if mode == "badfc" else fc
                    body = bytes([out_fc, 2 * n]) + struct.pack(f">{n}H", *regs)
                out_tid = (tid + 7) & 0xFFFF if mode == "tid" else tid
                writer.write(struct.pack(">HHHB", out_tid, 0, len(body) + 1, unit) + body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def test_a_misbehaving_device_never_delays_another(plc: str) -> None:
    interval = 0.2

    async def scenario() -> dict[str, Any]:
        fuzz = FuzzDevice()
        await fuzz.start(FUZZ_PORT)
        sink = Sink()
        healthy = poller(make("plc1", plc, poll_interval=interval, tags=PLC_TAGS[:4]), sink)
        bad = poller(
            make("fuzz", f"127.0.0.1:{FUZZ_PORT}", poll_interval=interval, timeout=0.5,
                 retries=1, reconnect_max=0.4,
                 tags=[{"name": "a", "table": "holding", "address": 0},
                       {"name": "b", "table": "holding", "address": 3}]),
            sink,
        )  # fmt: skip
        stop = asyncio.Event()
        tasks = [asyncio.create_task(p.run(stop)) for p in (healthy, bad)]
        windows: dict[str, tuple[float, float]] = {}
        await asyncio.sleep(1.0)
        for mode in FuzzDevice.MODES[1:]:
            start = time.monotonic()
            fuzz.mode = mode
            await asyncio.sleep(3.0)
            windows[mode] = (start, time.monotonic())
            fuzz.mode = "ok"
            await asyncio.sleep(1.0)  # recover between faults
        alive = [not t.done() for t in tasks]
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 3)
        await fuzz.stop()
        for p in (healthy, bad):
            p.bus.close()
        return {"sink": sink, "windows": windows, "alive": alive, "bad": bad.status()}

    out = in_ns(lambda: asyncio.run(scenario()))
    sink: Sink = out["sink"]
    assert out["alive"] == [True, True], "a poller task ended"
    # the healthy device kept its schedule all along, whatever the other one did
    good = [t for t, v in sink.values_("plc1") if v["counter"][1] == "good"]
    gaps = [b - a for a, b in itertools.pairwise(good)]
    assert len(good) > 0.8 * (good[-1] - good[0]) / interval
    assert max(gaps) < 3 * interval, f"healthy device waited {max(gaps):.2f} s"
    assert statistics.median(gaps) == pytest.approx(interval, abs=0.05)
    states = sink.states["fuzz"]
    for mode, (start, end) in out["windows"].items():
        during = [(ok, err) for t, ok, err in states if start < t <= end]
        assert during, mode
        if mode == "exception":
            # the device answers: it is up, its points are bad
            vals = [v for t, v in sink.values_("fuzz") if start < t <= end]
            assert vals and all(v["a"] == (None, "bad") for v in vals[1:]), mode
            assert all(ok for ok, _ in during)
            continue
        assert not during[-1][0], f"{mode}: still reported up"
        # reported down (so the comm alarm raised) within two intervals of the fault
        first_down = next(t for t, ok, _ in states if t > start and not ok)
        assert first_down - start < 2 * interval + 0.15, (mode, first_down - start)
        # the cause, as the last finished cycle gives it (not the interval watchdog's note)
        err = [e for ok, e in during if e and "within the poll interval" not in e][-1]
        want = {"garbage": "garbled", "short": "garbled", "tid": "garbled", "badfc": "garbled",
                "close": "disconnected", "hang": "timeout"}[mode]  # fmt: skip
        assert err.startswith(want) or (
            mode == "close" and err.startswith(("refused", "garbled"))
        ), (mode, err)
        qualities = [v["a"][1] for t, v in sink.values_("fuzz") if start < t <= end]
        if qualities[:1] == ["good"]:  # a poll answered before the fault, delivered after
            qualities = qualities[1:]
        assert qualities[:2] == ["uncertain", "bad"], (mode, qualities)
        # ... and it recovers once the device behaves
        after = [v for t, v in sink.values_("fuzz") if end < t <= end + 1.0]
        assert after and after[-1]["a"][1] == "good", f"{mode}: no recovery"
    kinds = [k for _, k, _ in sink.events]
    assert kinds.count("device.down") == 6 and kinds.count("device.recovered") == 6


# -- the role, end to end ---------------------------------------------------------------------


def role_config(plc: str, *, with_dead: bool = True, dead_at: str = "127.0.0.1:1599") -> str:
    devices: list[dict[str, Any]] = [
        {
            "name": "plc1",
            "protocol": "modbus-tcp",
            "address": plc,
            "poll_interval": 0.25,
            "tags": [
                {"name": "counter", "table": "holding", "address": 0, "publish": "every-poll"},
                {
                    "name": "temp",
                    "table": "holding",
                    "address": 10,
                    "type": "float32",
                    "unit": "degC",
                    "alarms": {"high": 10},
                },
                {"name": "sp", "table": "holding", "address": 44, "writable": True},
                {"name": "fixed", "table": "holding", "address": 4},
            ],
        }
    ]
    if with_dead:
        devices.append(
            {
                "name": "dead",
                "protocol": "modbus-tcp",
                "address": dead_at,  # by default nobody listens there: refused
                "poll_interval": 0.25,
                "tags": [{"name": "x", "table": "holding", "address": 0}],
            }
        )
    # the OPC UA server stays on (the default): it is the opcua role's, not this role's
    return yaml.safe_dump(
        {
            "version": 1,
            "interfaces": [{"name": "ot0", "role": "ot", "addresses": ["192.168.50.1/24"]}],
            "devices": devices,
        }
    )


def test_the_field_role(plc: str, tmp_path: Path) -> None:
    paths = Paths(tmp_path / "data", tmp_path / "run")
    store = Store(paths.data_dir)
    live = LiveState(paths.run_dir)

    def commit(text: str) -> int:
        rev = revs.import_text(store, text, author="test", now=time.time()).revision
        revs.commit(store, author="test", now=time.time(), ref=rev.id)
        revs.confirm(store, author="net", now=time.time(), automatic=True)  # net role's part
        return int(rev.id)

    commit(role_config(plc))
    # the role as the daemon runs it: its own process (one Store per process)
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "APPLIANCE_DATA_DIR": str(paths.data_dir),
        "APPLIANCE_RUN_DIR": str(paths.run_dir),
        "PYTHONFAULTHANDLER": "1",
    }
    log = (tmp_path / "field.log").open("wb")
    proc = subprocess.Popen(
        ["ip", "netns", "exec", NS, sys.executable, "-m", "appliance", "run", "--roles", "field"],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:

        def doc() -> dict[str, Any]:
            return live.read("field") or {}

        def ready() -> bool:
            d = doc()
            tags = d.get("tags", {})
            return (
                d.get("devices", {}).get("plc1", {}).get("state") == "ok"
                and tags.get("plc1.fixed", {}).get("value") == 42
                and "dead" in d.get("comm_loss", [])
            )

        wait_for(ready, 15, "plc1 read and dead in comm loss", doc)
        d = doc()
        assert d["role"] == "field" and d["pid"] == proc.pid
        # the northbound server is enabled, but not here: nothing listens on 4840, and the
        # value stream for the opcua role is served
        assert not in_ns(lambda: _listening(4840))
        assert (paths.run_dir / "field-values.sock").is_socket()
        t = d["tags"]["plc1.temp"]
        assert t["quality"] == "good" and t["unit"] == "degC" and 14.9 < t["value"] < 25.1
        assert t["source_time"] and t["poll_time"] and t["device"] == "plc1"
        assert d["tags"]["plc1.sp"]["writable"] is True
        dead = d["devices"]["dead"]
        assert dead["state"] == "down" and dead["last_error"].startswith("refused")
        assert d["tags"]["dead.x"]["quality"] in ("uncertain", "bad")
        keys = {a["key"]: a for a in d["alarms"]["active"]}
        assert {"dead:comm", "plc1.temp:high"} <= set(keys)
        assert d["alarms"]["counts"]["critical"] >= 1
        plc1 = d["devices"]["plc1"]
        assert plc1["requests_per_cycle"] == plc1["ideal_requests"] == 2  # 0..11 and 44

        # writes: through the control socket, audited
        sock = socket_path(paths.run_dir, "field")
        out = call(sock, "write", tag="plc1.sp", value=77, actor="tester")
        assert out["tag"] == "plc1.sp" and out["value"] == 77 and out["written_at"] > 0
        wait_for(lambda: doc()["tags"]["plc1.sp"]["value"] == 77, 5, "the written value read back")
        with pytest.raises(PermissionDenied):
            call(sock, "write", tag="plc1.fixed", value=1, actor="tester")
        with pytest.raises(NotFound):
            call(sock, "write", tag="plc1.nope", value=1, actor="tester")
        audits = list(Audit.select().where(Audit.action == "tag.write").order_by(Audit.id))
        assert [(a.actor, a.target, a.result) for a in audits] == [
            ("tester", "plc1.sp", "ok"),
            ("tester", "plc1.fixed", "failed"),
            ("tester", "plc1.nope", "failed"),
        ]
        acked = call(sock, "ack_alarm", id=keys["dead:comm"]["id"], actor="tester")
        assert acked["acked"] is True and acked["acked_by"] == "tester"

        kinds = {e.kind for e in store.events(200)}
        assert {"device.down", "alarm.raised"} <= kinds
        wait_for(lambda: doc()["history"]["written"] > 0, 10, "history written", doc)

        # a new revision: the dead device moves to where a device answers
        commit(role_config(plc, dead_at=plc))
        wait_for(
            lambda: doc()["devices"]["dead"]["state"] == "ok" and doc()["comm_loss"] == [],
            10,
            "the moved device polled at its new address",
            doc,
        )
        assert doc()["tags"]["dead.x"]["quality"] == "good"
        # and another: it goes, plc1 keeps polling
        polls = doc()["devices"]["plc1"]["polls"]
        commit(role_config(plc, with_dead=False))
        wait_for(lambda: "dead" not in doc()["devices"], 10, "the dead device removed", doc)
        d = doc()
        assert d["comm_loss"] == [] and "dead.x" not in d["tags"]
        assert d["devices"]["plc1"]["polls"] >= polls  # same poller, same counters
    finally:
        t0 = time.monotonic()
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGABRT)  # faulthandler: where it hangs, into the log
            time.sleep(1)
            proc.kill()
            proc.wait()
        stopped_in = time.monotonic() - t0
        log.close()
        store.close()
    assert proc.returncode == 0, (tmp_path / "field.log").read_text()[-3000:]
    assert stopped_in < 3.0, f"stopped in {stopped_in:.1f} s"
