"""Polling 1000 points on 10 devices every second: requests, CPU, memory of the field role.

The northbound OPC UA server is enabled, as on a unit: it runs in the opcua role's own
process (started here too, fed by the field role's value stream), and its memory and
CPU are reported separately; the field role's figures are the field role's alone.

Ten simulated Modbus TCP devices (pymodbus servers in one separate process) listen on
127.0.0.1:15020-15029 inside a namespace of our own (``fa-bench``, loopback only). Each
has 100 points (holding and input registers of several types, coils) with gaps between
them, some wider than ``max_gap``. The field role runs as the daemon runs it (``python
-m appliance run --roles field``, its own process, history writer included) with every
tag ``publish: every-poll``: 1000 history samples a second.

Figures, measured after a warm-up:

- Modbus requests per cycle as the devices count them (requests / cycles, both counted
  by the simulated devices), vs the ideal lower bound
  (`ideal_request_count`, goal: equal) and vs one-request-per-point polling measured in
  the same run (a plain pymodbus poller, one read per point, against the same devices;
  it keeps no history, so its CPU figure flatters it);
- CPU seconds of the field role process per 1000 points per cycle (goal <= 0.04);
- resident memory of the field role process (goal <= 60 MB);
- resident memory and CPU of the opcua role process (the northbound server publishing
  every change of the 1000 values; no client subscribed), reported, no goal.

``--seconds`` shortens the measured window (default 60).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import Goal, finish, fmt, parser, wait_for

ROOT = Path(__file__).resolve().parents[1]
NS = "fa-bench"
BASE_PORT = 15020
DEVICES = 10
POINTS = 100
INTERVAL = 1.0
WARMUP_S = 4.0
MAX_GAP = 16
OPCUA_PORT = 4840
TICK = os.sysconf("SC_CLK_TCK")


# -- the device layout (shared by the simulator, the configuration and the baseline) --------


def layout(device: int) -> list[dict[str, Any]]:
    """100 tags of one device: 60 holding, 30 input, 10 coils, with gaps (fixed seed)."""
    rng = random.Random(1000 + device)
    tags: list[dict[str, Any]] = []
    for table, count in (("holding", 60), ("input", 30)):
        addr = 0
        for i in range(count):
            kind = rng.choice(["uint16", "uint16", "int16", "float32", "uint32"])
            tags.append({"name": f"{table[0]}{i}", "table": table, "address": addr, "type": kind,
                         "publish": "every-poll"})  # fmt: skip
            size = 2 if kind in ("float32", "uint32") else 1
            gap = rng.choice([0, 0, 0, 1, 2, 3]) if rng.random() > 0.08 else rng.randint(20, 60)
            addr += size + gap
    for i in range(10):
        tags.append({"name": f"c{i}", "table": "coil", "address": 3 * i, "publish": "every-poll"})
    return tags


def config_yaml() -> str:
    import yaml

    devices = [
        {
            "name": f"dev{d:02d}",
            "protocol": "modbus-tcp",
            "address": f"127.0.0.1:{BASE_PORT + d}",
            "poll_interval": INTERVAL,
            "poll_offset": d * INTERVAL / DEVICES,
            "max_gap": MAX_GAP,
            "tags": layout(d),
        }
        for d in range(DEVICES)
    ]
    server = {"enabled": True, "port": OPCUA_PORT}
    return yaml.safe_dump(
        {
            "version": 1,
            "interfaces": [{"name": "ot0", "role": "ot", "addresses": ["192.168.50.1/24"]}],
            "opcua_server": server,
            "devices": devices,
        }
    )


# -- the simulator process ----------------------------------------------------------------


def simulate(counts_path: Path) -> None:
    """Serve the 10 devices; count requests and cycles; write the counts every 0.05 s."""
    import logging

    from pymodbus.server import ModbusTcpServer
    from pymodbus.simulator import DataType, SimData, SimDevice

    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    counts = [0] * DEVICES
    cycles = [0] * DEVICES

    def device(d: int) -> SimDevice:
        async def action(fc: int, _s: int, addr: int, _c: int, regs: list[int], _v: Any) -> None:
            counts[d] += 1
            if fc == 3 and addr == 0:  # every cycle of a device starts one read there
                cycles[d] += 1
            if fc in (3, 4):
                regs[0] = int(time.time()) & 0xFFFF  # something changes
            return None

        regs = DataType.REGISTERS
        return SimDevice(
            id=0,
            simdata=(
                [SimData(0, values=[False] * 64, datatype=DataType.BITS)],
                [SimData(0, values=[False] * 16, datatype=DataType.BITS)],
                [SimData(0, values=[(i * 7) & 0xFFFF for i in range(1000)], datatype=regs)],
                [SimData(0, values=[(i * 3) & 0xFFFF for i in range(1000)], datatype=regs)],
            ),
            action=action,
        )

    async def serve() -> None:
        servers = [
            ModbusTcpServer(device(d), address=("127.0.0.1", BASE_PORT + d)) for d in range(DEVICES)
        ]
        for s in servers:
            await s.serve_forever(background=True)
        print("ready", flush=True)
        while True:
            tmp = counts_path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"counts": counts, "cycles": cycles}))
            os.replace(tmp, counts_path)
            await asyncio.sleep(0.05)

    asyncio.run(serve())


# -- the baseline: one request per point ------------------------------------------------------


def naive(seconds: float) -> None:
    """Poll every point with its own request, once a second; print what it cost (JSON)."""
    import logging

    from pymodbus.client import AsyncModbusTcpClient

    from appliance.config.field import Tag
    from appliance.field.decode import decode

    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)

    async def device(d: int, stop_at: float, out: list[int]) -> None:
        client = AsyncModbusTcpClient("127.0.0.1", port=BASE_PORT + d, timeout=2, retries=0)
        await client.connect()
        points = [Tag.model_validate(t).point() for t in layout(d)]
        read = {
            "holding": client.read_holding_registers,
            "input": client.read_input_registers,
            "coil": client.read_coils,
        }
        nxt = time.time()
        while nxt < stop_at:
            for p in points:
                n = 1 if p.type == "bool" else (2 if p.type in ("float32", "uint32") else 1)
                rsp = await read[p.table](p.address, count=n, device_id=1)
                values = rsp.bits if p.table == "coil" else rsp.registers
                decode(p, values[:n])
                out[0] += 1
            out[1] += 1
            nxt += INTERVAL
            await asyncio.sleep(max(0, nxt - time.time()))
        client.close()

    async def run() -> dict[str, Any]:
        out = [[0, 0] for _ in range(DEVICES)]
        stop_at = time.time() + seconds
        c0 = os.times()
        await asyncio.gather(*(device(d, stop_at, out[d]) for d in range(DEVICES)))
        c1 = os.times()
        cpu = (c1.user - c0.user) + (c1.system - c0.system)
        requests = sum(o[0] for o in out)
        cycles = sum(o[1] for o in out) / DEVICES
        return {"requests": requests, "cycles": cycles, "cpu": cpu}

    print(json.dumps(asyncio.run(run())), flush=True)


# -- the measurement ----------------------------------------------------------------------------


def ip(*args: str, check: bool = True) -> None:
    subprocess.run(["ip", *args], check=check, capture_output=True)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def memory(pid: int) -> dict[str, float]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(rest.split()[0]) / 1024
    return out


def measure(seconds: float, tmp: Path) -> tuple[list[Goal], dict[str, Any]]:
    from appliance.config.field import Device
    from appliance.config.points import DeviceLimits
    from appliance.field.plan import ideal_request_count
    from appliance.state import revisions
    from appliance.state.db import Store
    from appliance.state.live import LiveState

    me = [sys.executable, str(Path(__file__).resolve())]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    counts_path = tmp / "counts.json"
    sim = subprocess.Popen(
        ["ip", "netns", "exec", NS, *me, "--simulate", str(counts_path)],
        env=env, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    role = opcua = None
    try:
        assert sim.stdout is not None
        if sim.stdout.readline().strip() != "ready":
            raise SystemExit("the simulator did not start")
        data, run = tmp / "data", tmp / "run"
        store = Store(data)
        rev = revisions.import_text(store, config_yaml(), author="bench", now=time.time())
        revisions.commit(store, author="bench", now=time.time(), ref=rev.revision.id)
        store.close()
        devices = [Device.model_validate(d) for d in _devices()]
        ideal = sum(
            ideal_request_count(d.points(), DeviceLimits(max_gap=d.max_gap)) for d in devices
        )
        role_env = {**env, "APPLIANCE_DATA_DIR": str(data), "APPLIANCE_RUN_DIR": str(run)}

        def start(name: str) -> subprocess.Popen[bytes]:
            log = (tmp / f"{name}.log").open("wb")
            return subprocess.Popen(
                ["ip", "netns", "exec", NS, sys.executable, "-m", "appliance", "run",
                 "--roles", name],
                env=role_env, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip

        role = start("field")
        opcua = start("opcua")
        live = LiveState(run)

        def all_ok() -> bool:
            doc = live.read("field") or {}
            devs = doc.get("devices", {})
            return len(devs) == DEVICES and all(v["state"] == "ok" for v in devs.values())

        def serving() -> bool:
            doc = live.read("opcua") or {}
            return bool(doc.get("running") and doc.get("connected"))

        wait_for(all_ok, 30, "all devices polled")
        wait_for(serving, 60, "the opcua role serving the values")
        print(
            f"  field role up (pid {role.pid}), opcua role up (pid {opcua.pid}); "
            f"warming up {WARMUP_S:g} s",
            flush=True,
        )
        time.sleep(WARMUP_S)

        def snapshot() -> tuple[float, float, int, int, int, float]:
            # the devices count requests and cycles (a cycle starts with holding 0)
            doc = live.read("field") or {}
            written = doc.get("history", {}).get("written", 0)
            sim = json.loads(counts_path.read_text())
            return (
                time.monotonic(),
                cpu_seconds(role.pid),
                sum(sim["counts"]),
                sum(sim["cycles"]),
                written,
                cpu_seconds(opcua.pid),
            )

        t0, cpu0, req0, polls0, w0, ua0 = snapshot()
        print(f"  measuring {seconds:g} s", flush=True)
        time.sleep(seconds)
        t1, cpu1, req1, polls1, w1, ua1 = snapshot()
        mem = memory(role.pid)
        ua_mem = memory(opcua.pid)
        ua_doc = live.read("opcua") or {}
        doc = live.read("field") or {}
        planned = sum(v["requests_per_cycle"] for v in doc["devices"].values())
        reported_ideal = sum(v["ideal_requests"] for v in doc["devices"].values())
        cycles = (polls1 - polls0) / DEVICES
        requests = req1 - req0
        per_cycle = requests / cycles
        points = DEVICES * POINTS
        cpu_per = (cpu1 - cpu0) / cycles / (points / 1000)
        ua_cpu_per = (ua1 - ua0) / cycles / (points / 1000)
        for p in (opcua, role):
            p.send_signal(signal.SIGTERM)
            p.wait(15)
        role = opcua = None

        base_s = min(seconds, 20.0)
        print(f"  baseline: one request per point, {base_s:g} s", flush=True)
        out = subprocess.run(
            ["ip", "netns", "exec", NS, *me, "--naive", str(base_s)],
            env=env, capture_output=True, text=True, check=True,
        )  # fmt: skip
        base = json.loads(out.stdout.strip().splitlines()[-1])
        base_per_cycle = base["requests"] / base["cycles"]
        base_cpu_per = base["cpu"] / base["cycles"] / (points / 1000)
    finally:
        for p in (opcua, role, sim):
            if p is not None and p.poll() is None:
                p.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.wait(10)
                if p.poll() is None:
                    p.kill()

    figures = {
        "devices": DEVICES,
        "points": points,
        "interval_s": INTERVAL,
        "seconds": round(t1 - t0, 2),
        "cycles": cycles,
        "requests_per_cycle": per_cycle,
        "planned_requests_per_cycle": planned,
        "ideal_requests_per_cycle": ideal,
        "ideal_reported_by_role": reported_ideal,
        "cpu_s_per_1000_points_per_cycle": cpu_per,
        "history_samples_per_cycle": (w1 - w0) / cycles,
        "rss_mb": mem.get("VmRSS"),
        "peak_rss_mb": mem.get("VmHWM"),
        "opcua_rss_mb": ua_mem.get("VmRSS"),
        "opcua_peak_rss_mb": ua_mem.get("VmHWM"),
        "opcua_cpu_s_per_1000_points_per_cycle": ua_cpu_per,
        "opcua_values": ua_doc.get("values"),
        "baseline_requests_per_cycle": base_per_cycle,
        "baseline_cpu_s_per_1000_points_per_cycle": base_cpu_per,
    }
    print("\n== figures")
    for k, v in figures.items():
        print(f"  {k}: {fmt(float(v)) if v is not None else 'n/a'}")
    print(
        f"  requests: {per_cycle:.1f} per cycle, ideal {ideal}, one-per-point "
        f"{base_per_cycle:.0f} ({base_per_cycle / per_cycle:.1f}x ours)"
    )
    goals = [
        Goal("requests per cycle vs the ideal lower bound", per_cycle, 1.0, False, ideal),
        Goal("requests per cycle vs one request per point", per_cycle, 1.0, False, base_per_cycle),
        Goal("CPU s per 1000 points per cycle (history included)", cpu_per, 0.04, False, unit=" s"),
        Goal("field role RSS", mem.get("VmRSS", float("nan")), 60.0, False, unit=" MB"),
    ]
    return goals, figures


def _devices() -> list[dict[str, Any]]:
    import yaml

    return list(yaml.safe_load(config_yaml())["devices"])


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--simulate":
        simulate(Path(sys.argv[2]))
        return 0
    if len(sys.argv) == 3 and sys.argv[1] == "--naive":
        naive(float(sys.argv[2]))
        return 0
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=60.0, help="measured window (60)")
    args = p.parse_args()
    seconds = 10.0 if args.quick else args.seconds
    if os.geteuid() != 0:
        raise SystemExit("needs root: it makes the network namespace fa-bench")
    ip("netns", "del", NS, check=False)
    ip("netns", "add", NS)
    tmp = Path(tempfile.mkdtemp(prefix="bench-poll-"))
    try:
        ip("-n", NS, "link", "set", "lo", "up")
        goals, figures = measure(seconds, tmp)
    finally:
        ip("netns", "del", NS, check=False)
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return finish("poll", goals, figures, args.json)


if __name__ == "__main__":
    sys.exit(main())
