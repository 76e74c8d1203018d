"""Cost of a Modbus-restricted conduit: request latency (p50, p99) and requests/s through
a read-only conduit (every request through the modbusproxy role) vs the same conduit
unrestricted (forwarded by the kernel), in one run, with 1 and with 50 clients.

The lab (prefix b) with the net and modbusproxy roles running in the appliance's
namespace; the lab PLC (pymodbus) answers. Each turn commits the variant's revision and
runs the clients in the IT namespace for `--seconds`: every client keeps one connection
and sends read holding 0..9 (FC 3) back to back, timing each answer. Variants alternate
turn by turn (ABBA...) so that drift of this shared 2-core machine hits both alike; the
ratios are medians of the per-turn ratios. The PLC simulator is in the path of both
variants: what differs is the proxy.

Each turn also counts the CPU time (user + system, /proc/PID/stat, summed over each
one's session) that the roles' processes (the proxy, in the read-only turns), the PLC
simulator and the clients spend per request: on this shared 2-core machine the three
compete for the same cores, so with 50 clients (CPU-bound) the requests/s ratio tends to
(clients + PLC) / (clients + PLC + proxy), and these figures say where that ceiling is,
whatever else runs on the machine meanwhile.

Goals (issue 13): p50 latency <= 1.2x and requests/s >= 0.8x the unrestricted conduit
with 50 clients. The figures with 1 client are reported, not judged.

`--modes` adds two variants, reported and not judged: the read-only restriction in mode
test (every request checked, nothing refused: the slow path of the inspector per
request) and mode learn (every request recorded): what learning and testing a conduit
cost against enforcing it.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import (
    PLC,
    Goal,
    config_data,
    finish,
    fmt,
    lab,
    median,
    parser,
    pct,
    result_of,
    rotations,
    wait_for,
)

VARIANTS = ("open", "read-only")
MODES = ("test", "learn")  # with --modes
RESTRICTION: dict[str, Any] = {
    "read-only": "read-only",
    "test": {"preset": "read-only", "mode": "test"},
    "learn": "learn",
}
REQUEST = struct.pack(">HHHBBHH", 0, 0, 6, 1, 3, 0, 10)  # read holding 0..9, unit 1


# -- the client worker (runs in the IT namespace) ------------------------------------------


def clients(n: int, seconds: float) -> None:
    """n connections, each sending FC 3 back to back for `seconds`; prints JSON latencies."""

    async def one(out: list[float], errors: list[str], stop_at: float) -> None:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(PLC, 502), 3)
        except (OSError, TimeoutError) as e:
            errors.append(f"connect: {e}")
            return
        tid = 0
        try:
            while time.perf_counter() < stop_at:
                tid = (tid + 1) & 0xFFFF
                t0 = time.perf_counter()
                writer.write(struct.pack(">H", tid) + REQUEST[2:])
                head = await asyncio.wait_for(reader.readexactly(6), 3)
                size = struct.unpack(">H", head[4:])[0]
                body = await asyncio.wait_for(reader.readexactly(size), 3)
                out.append(time.perf_counter() - t0)
                if body[1] != 3:
                    errors.append(f"exception {body[2]}")
                    return
        except (OSError, TimeoutError, asyncio.IncompleteReadError) as e:
            errors.append(f"read: {e!r}")
        finally:
            writer.close()

    async def run() -> dict[str, Any]:
        cpu0 = time.process_time()
        stop_at = time.perf_counter() + seconds
        lat: list[list[float]] = [[] for _ in range(n)]
        errors: list[str] = []
        t0 = time.perf_counter()
        await asyncio.gather(*(one(lat[i], errors, stop_at) for i in range(n)))
        took = time.perf_counter() - t0
        flat = sorted(x for one_client in lat for x in one_client)
        return {
            "requests": len(flat),
            "seconds": took,
            "cpu": time.process_time() - cpu0,
            "latencies": flat,
            "errors": errors[:5],
        }

    print(json.dumps(asyncio.run(run())), flush=True)


# -- the appliance: net and modbusproxy roles in the lab's appliance namespace -------------


def cpu_seconds(session: int) -> tuple[float, float]:
    """User and system CPU time so far of the processes of a session (a process started
    with start_new_session and its children: `appliance run` runs each role in its own)."""
    user = system = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        if int(fields[3]) == session:
            user, system = user + int(fields[11]), system + int(fields[12])
    hz = os.sysconf("SC_CLK_TCK")
    return user / hz, system / hz


def plc_pid(spec: Any) -> int:
    """The lab PLC simulator's pid, which leads its session (its pidfile: pid, start time)."""
    return int((spec.pids / "plc.pid").read_text().split()[0])


class Unit:
    def __init__(self, spec: Any, root: Path) -> None:
        from appliance.state.db import Store

        self.spec = spec
        self.data, self.run = root / "data", root / "run"
        self.store = Store(self.data)
        self.log = (root / "roles.log").open("w")
        argv = ["ip", "netns", "exec", spec.ns_app, sys.executable, "-m", "appliance", "run"]
        argv += ["--roles", "net,modbusproxy", "--data-dir", str(self.data)]
        argv += ["--run-dir", str(self.run)]
        self.proc = subprocess.Popen(
            argv, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def commit(self, variant: str) -> None:
        from appliance.state import revisions as revs
        from appliance.state.db import Revision
        from appliance.state.live import LiveState

        doc = config_data([("tcp", 502)])
        if variant in RESTRICTION:
            doc["conduits"][0]["modbus"] = RESTRICTION[variant]
        draft = revs.import_text(self.store, json.dumps(doc), author="bench", now=time.time())
        revs.commit(self.store, author="bench", now=time.time(), ref=draft.revision.id)
        live = LiveState(self.run)
        live.ring("net")
        live.ring("modbusproxy")
        rev = draft.revision.id

        def applied() -> bool:
            if Revision.get_by_id(rev).state == "rolled-back":
                raise RuntimeError(f"revision {rev} was rolled back")
            net = (live.read("net") or {}).get("applied") or {}
            proxy = live.read("modbusproxy") or {}
            return net.get("revision") == rev and proxy.get("revision") == rev

        wait_for(applied, 30, f"the {variant} revision to be applied by net and modbusproxy")
        if variant in RESTRICTION:
            wait_for(lambda: (live.read("modbusproxy") or {}).get("listening"), 10, "the proxy")

    def close(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.store.close()
        self.log.close()


def turn(spec: Any, unit: Unit, n: int, seconds: float) -> dict[str, Any]:
    argv = ["ip", "netns", "exec", spec.ns_it, sys.executable, __file__, "clients", str(n)]
    plc = plc_pid(spec)
    (roles_u0, roles_s0), (plc_u0, plc_s0) = cpu_seconds(unit.proc.pid), cpu_seconds(plc)
    worker = subprocess.Popen(
        [*argv, str(seconds)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    got = result_of(worker, seconds + 30)
    (roles_u, roles_s), (plc_u, plc_s) = cpu_seconds(unit.proc.pid), cpu_seconds(plc)
    roles_u, roles = roles_u - roles_u0, roles_u + roles_s - roles_u0 - roles_s0
    plc_cpu = plc_u + plc_s - plc_u0 - plc_s0
    if got["errors"] or not got["requests"]:
        raise RuntimeError(f"the clients failed: {got['errors']}")
    lat, count = got["latencies"], got["requests"]
    return {
        "rate": count / got["seconds"],
        "p50": pct(lat, 50),
        "p99": pct(lat, 99),
        "cpu_roles": roles / count,  # seconds per request
        "cpu_roles_user": roles_u / count,
        "cpu_plc": plc_cpu / count,
        "cpu_clients": got["cpu"] / count,
    }


def measure(
    reps: int, seconds: float, client_counts: tuple[int, ...], variants: tuple[str, ...]
) -> dict[str, Any]:
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {
        str(n): {v: [] for v in variants} for n in client_counts
    }
    with lab() as spec, tempfile.TemporaryDirectory(prefix="bench-modbus-") as tmp:
        unit = Unit(spec, Path(tmp))
        try:
            for rep, order in rotations(variants, reps):
                for variant in order:
                    unit.commit(variant)
                    for n in client_counts:
                        r = turn(spec, unit, n, seconds)
                        runs[str(n)][variant].append(r)
                        print(
                            f"  turn {rep + 1}/{reps} {variant:9s} {n:2d} clients: "
                            f"{r['rate']:7.0f} req/s, p50 {r['p50'] * 1e6:6.0f} us, "
                            f"p99 {r['p99'] * 1e6:6.0f} us; CPU per request: roles "
                            f"{r['cpu_roles'] * 1e6:5.1f} us (user "
                            f"{r['cpu_roles_user'] * 1e6:5.1f}), PLC {r['cpu_plc'] * 1e6:5.1f} us, "
                            f"clients {r['cpu_clients'] * 1e6:5.1f} us",
                            flush=True,
                        )
        finally:
            unit.close()
    return runs


def paired(runs: dict[str, list[dict[str, Any]]], key: str, variant: str = "read-only") -> float:
    """The median over turns of restricted/open for one figure."""
    return median([r[key] / o[key] for r, o in zip(runs[variant], runs["open"], strict=True)])


def main() -> int:
    p = parser(__doc__)
    p.add_argument("--reps", type=int, default=4, help="turns per variant")
    p.add_argument("--seconds", type=float, default=4.0, help="length of one turn")
    p.add_argument("--modes", action="store_true", help="also modes test and learn (reported)")
    args = p.parse_args()
    if args.quick:
        args.reps, args.seconds = 2, 1.5
    if os.geteuid() != 0:
        print("bench/modbus_filter.py: needs root (it builds the lab)", file=sys.stderr)
        return 2
    print(f"== modbus_filter: {args.reps} turns x {args.seconds:g} s per variant and client count")
    variants = (*VARIANTS, *MODES) if args.modes else VARIANTS
    runs = measure(args.reps, args.seconds, (1, 50), variants)
    figures: dict[str, Any] = {}
    for n, by in runs.items():
        keys = ("rate", "p50", "p99", "cpu_roles", "cpu_roles_user", "cpu_plc", "cpu_clients")
        figures[f"{n}_clients"] = {
            v: {k: median([r[k] for r in by[v]]) for k in keys} for v in variants
        }
        f = figures[f"{n}_clients"]
        print(
            f"  {n:>2} clients: open {fmt(f['open']['rate'])} req/s p50 "
            f"{f['open']['p50'] * 1e6:.0f} us p99 {f['open']['p99'] * 1e6:.0f} us; read-only "
            f"{fmt(f['read-only']['rate'])} req/s p50 {f['read-only']['p50'] * 1e6:.0f} us "
            f"p99 {f['read-only']['p99'] * 1e6:.0f} us; ratios rate "
            f"{paired(by, 'rate'):.2f}x p50 {paired(by, 'p50'):.2f}x p99 {paired(by, 'p99'):.2f}x"
        )
        ro = f["read-only"]
        proxy = ro["cpu_roles"] - f["open"]["cpu_roles"]
        proxy_user = ro["cpu_roles_user"] - f["open"]["cpu_roles_user"]
        rest = ro["cpu_plc"] + ro["cpu_clients"]
        print(
            f"  {n:>2} clients: CPU per request (read-only turns): proxy {proxy * 1e6:.1f} us, "
            f"user {proxy_user * 1e6:.1f} us (the roles' minus the open turns'), PLC "
            f"{ro['cpu_plc'] * 1e6:.1f} us, clients {ro['cpu_clients'] * 1e6:.1f} us: "
            f"CPU-bound ceiling of the rate ratio "
            f"{rest / (rest + proxy):.2f}x"
        )
        for mode in variants[len(VARIANTS) :]:
            m = f[mode]
            print(
                f"  {n:>2} clients: mode {mode} {fmt(m['rate'])} req/s p50 "
                f"{m['p50'] * 1e6:.0f} us; vs open rate {paired(by, 'rate', mode):.2f}x p50 "
                f"{paired(by, 'p50', mode):.2f}x; CPU per request, proxy "
                f"{(m['cpu_roles'] - f['open']['cpu_roles']) * 1e6:.1f} us (reported)"
            )
    fifty = runs["50"]
    f50 = figures["50_clients"]
    goals = [
        Goal(
            "p50 latency, 50 clients, read-only vs open",
            f50["read-only"]["p50"] * 1e6,
            1.2,
            at_least=False,
            baseline=f50["open"]["p50"] * 1e6,
            unit="us",
            paired=paired(fifty, "p50"),
        ),
        Goal(
            "requests/s, 50 clients, read-only vs open",
            f50["read-only"]["rate"],
            0.8,
            at_least=True,
            baseline=f50["open"]["rate"],
            unit="req/s",
            paired=paired(fifty, "rate"),
        ),
    ]
    return finish("modbus_filter", goals, figures, args.json)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "clients":
        clients(int(sys.argv[2]), float(sys.argv[3]))
        sys.exit(0)
    sys.exit(main())
