"""Modbus RTU over a socat pty pair: two slaves on one line, a missing one, the bus lock.

A small RTU simulator (pymodbus' serial server with the lab PLC register map for
units 1 and 2) runs in a child process on one end of the pair; the pollers open the
other end as a serial port, sharing one `Bus` as the field role does.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import multiprocessing
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from appliance.config.field import Device
from appliance.field.modbus import rtu_link
from appliance.field.poller import Bus, DevicePoller

logging.getLogger("pymodbus").setLevel(logging.CRITICAL)  # the adapter reports errors
BAUD = 19200


def simulator(port: str, arrivals: Any) -> None:
    """The RTU slaves (child process): units 1 and 2, each with the lab PLC map."""
    from pymodbus.exceptions import NoSuchIdException
    from pymodbus.framer import FramerType
    from pymodbus.server import ModbusSerialServer
    from pymodbus.simulator.simcore import SimCore

    from appliance.lab.plc import Plc

    class Line(SimCore):
        """On a serial line a unit id nobody has gets silence (pymodbus would answer)."""

        async def async_getValues(self, device_id: int, *args: Any, **kw: Any) -> Any:
            if device_id not in self.devices:
                raise NoSuchIdException(f"no unit {device_id}")
            return await super().async_getValues(device_id, *args, **kw)

        async def async_setValues(self, device_id: int, *args: Any, **kw: Any) -> Any:
            if device_id not in self.devices:
                raise NoSuchIdException(f"no unit {device_id}")
            return await super().async_setValues(device_id, *args, **kw)

    async def serve() -> None:
        units = [Plc(uid, port, name=f"RTU-{uid:02d}") for uid in (1, 2)]
        devices = []
        for unit in units:
            dev = unit.device(device_id=unit.index)
            action = dev.action

            async def stamped(*args: Any, _action: Any = action) -> Any:
                arrivals.append(time.monotonic())
                return await _action(*args)

            dev.action = stamped
            devices.append(dev)
        server = ModbusSerialServer(
            devices, framer=FramerType.RTU, port=port, baudrate=BAUD, parity="N",
            stopbits=1, bytesize=8, ignore_missing_devices=True,
        )  # fmt: skip
        server.context = Line(devices)
        await server.serve_forever(background=True)
        started = time.monotonic()
        while True:
            for unit in units:
                unit.tick(int(time.monotonic() - started))
            await asyncio.sleep(0.2)

    asyncio.run(serve())


@pytest.fixture
def line(tmp_path: Path) -> Iterator[tuple[str, Any]]:
    if shutil.which("socat") is None:
        pytest.fail("socat is needed (apt-get install socat)")
    dev_end, app_end = tmp_path / "tty-dev", tmp_path / "tty-app"
    socat = subprocess.Popen(
        ["socat", f"pty,raw,echo=0,link={dev_end}", f"pty,raw,echo=0,link={app_end}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    ctx = multiprocessing.get_context("fork")
    manager = ctx.Manager()
    arrivals = manager.list()
    sim = None
    try:
        deadline = time.monotonic() + 10
        while not (dev_end.exists() and app_end.exists()):
            assert time.monotonic() < deadline, "socat made no pty pair"
            time.sleep(0.05)
        sim = ctx.Process(target=simulator, args=(str(dev_end), arrivals), daemon=True)
        sim.start()
        time.sleep(1.0)  # the server opens its end
        assert sim.is_alive(), "the RTU simulator died"
        yield str(app_end), arrivals
    finally:
        if sim is not None:
            sim.terminate()
            sim.join(5)
        socat.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            socat.wait(5)
        manager.shutdown()


class Sink:
    def __init__(self) -> None:
        self.seen: dict[str, list[tuple[float, dict[str, tuple[Any, str]]]]] = {}
        self.states: dict[str, list[tuple[bool, str | None]]] = {}

    def values(self, device: str, batch: list[tuple[str, Any, str]], t: float) -> None:
        self.seen.setdefault(device, []).append(
            (time.monotonic(), {n: (v, q) for n, v, q in batch})
        )

    def state(self, device: str, ok: bool, error: str | None, t: float) -> None:
        self.states.setdefault(device, []).append((ok, error))

    def event(self, kind: str, message: str, severity: str, data: dict[str, Any]) -> None:
        pass


def rtu(name: str, unit: int, port: str, **kw: Any) -> Device:
    fields: dict[str, Any] = {
        "name": name,
        "protocol": "modbus-rtu",
        "unit_id": unit,
        "serial": {"port": port, "baud": BAUD, "parity": "N"},
        "poll_interval": 0.3,
        "timeout": 0.3,
        "retries": 0,
        "tags": [
            {"name": "counter", "table": "holding", "address": 0},
            {"name": "label", "table": "holding", "address": 20, "type": "string", "length": 8},
            {"name": "temp", "table": "input", "address": 10, "type": "float32"},
            {"name": "di", "table": "discrete", "address": 0},
            {"name": "sp", "table": "holding", "address": 41, "writable": True},
        ],
    }
    fields.update(kw)
    return Device.model_validate(fields)


def test_two_slaves_and_a_missing_one_share_the_line(line: tuple[str, Any]) -> None:
    port, arrivals = line

    async def scenario() -> dict[str, Any]:
        sink = Sink()
        first = rtu("u1", 1, port)
        s = first.serial
        assert s is not None
        link = rtu_link(port, baud=s.baud, parity=s.parity, stop_bits=s.stop_bits,
                        data_bits=s.data_bits, timeout=first.timeout)  # fmt: skip
        bus = Bus(link, gap=s.frame_gap(), shared=True)
        trace = link._trace_packet
        wire: list[tuple[bool, float]] = []  # (sending, when) as the master sees the line

        def traced(sending: bool, data: bytes) -> bytes:
            wire.append((sending, time.monotonic()))
            return trace(sending, data)

        link.client.ctx.trace_packet = traced
        pollers = [DevicePoller(d, bus, sink) for d in
                   (first, rtu("u2", 2, port), rtu("u3", 3, port, reconnect_max=2))]  # fmt: skip
        stop = asyncio.Event()
        tasks = [asyncio.create_task(p.run(stop)) for p in pollers]
        await asyncio.sleep(2.5)
        written = await pollers[1].write("sp", 4321)
        await asyncio.sleep(1.0)
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 3)
        bus.close()
        return {"sink": sink, "status": [p.status() for p in pollers], "written": written,
                "gap": bus.gap, "wire": wire}  # fmt: skip

    out = asyncio.run(scenario())
    sink: Sink = out["sink"]
    u1 = sink.seen["u1"][-1][1]
    u2 = sink.seen["u2"][-1][1]
    assert u1["label"] == ("RTU-01", "good") and u2["label"] == ("RTU-02", "good")
    assert u1["di"] == (True, "good") and 14.9 < u2["temp"][0] < 25.1
    assert out["written"] == 4321 and u2["sp"] == (4321, "good") and u1["sp"] == (0, "good")
    s1, s2, s3 = out["status"]
    assert s1["state"] == s2["state"] == "ok" and s1["polls"] >= 8 and s2["polls"] >= 8
    # holding 20..41 crosses the map's hole at 32..39: learned split, 5 requests
    assert s1["requests_per_cycle"] == s1["ideal_requests"] == 5
    # the missing unit never answers: down with a timeout, the others unharmed
    assert s3["state"] == "down" and (s3["last_error"] or "").startswith("timeout")
    assert [v["counter"][1] for _, v in sink.seen["u3"]][:2] == ["uncertain", "bad"]
    # requests reach the line one at a time, each at least the frame gap after the last
    # byte of the answer before it (the server's own arrival stamps agree on the count)
    wire = out["wire"]
    gaps = [t - last_rx for (s1, last_rx), (s2, t) in itertools.pairwise(wire) if not s1 and s2]
    assert len(gaps) > 20 and len(arrivals) > 20
    assert out["gap"] == pytest.approx(3.5 * 10 / BAUD)
    assert min(gaps) >= out["gap"], f"a request {min(gaps) * 1000:.2f} ms after an answer"


def test_a_missing_port_is_refused(tmp_path: Path) -> None:
    async def scenario() -> dict[str, Any]:
        dev = rtu("u1", 1, str(tmp_path / "no-such-tty"))
        s = dev.serial
        assert s is not None
        link = rtu_link(s.port, baud=s.baud, parity=s.parity, stop_bits=s.stop_bits,
                        data_bits=s.data_bits, timeout=dev.timeout)  # fmt: skip
        p = DevicePoller(dev, Bus(link, gap=s.frame_gap(), shared=True), Sink())
        await p.poll_once()
        return p.status()

    status = asyncio.run(scenario())
    assert status["state"] == "down"
    assert (status["last_error"] or "").startswith("refused"), status["last_error"]
    assert "no-such-tty" in (status["last_error"] or "")
