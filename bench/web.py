"""bench/web: p95 latency of the overview page ("/") and /api/status, 20 concurrent clients
vs one client, in one run, while the appliance really polls 1000 points.

The field load is real: ten simulated Modbus TCP devices (bench/poll.py's simulator and
device layout: 100 points each, holding and input registers of several types and coils,
with gaps; every tag `publish: every-poll`, so 1000 history samples a second) listen on
127.0.0.1:15020-15029 inside a network namespace of our own (``wbench``, loopback only).
The field role runs there as the daemon runs it (``python -m appliance run --roles
field``, history writer included), polling every device once a second, and publishes
its live document (10 devices, 1000 tags) as it does on a unit. The committed
configuration is the demo's interfaces and conduit plus those 10 devices
(``opcua_server: {enabled: false}``). The net role is not run (it takes over NICs and
the ruleset); a thread writes its live document (``net.json``) once a second instead.

The server is the real one: the web role's gunicorn process (``appliance.web.serve``,
gthread workers, TLS with the unit's own certificate) on 127.0.0.1 (an ephemeral port,
the host's namespace: it only reads the data and run directories).

Two client models, each client in a process of its own with its own keep-alive TLS
connection and session; every phase has 1 client, then 20 (``--clients``):

- page-like (the goal): a client behaves like an open overview page, but busier: it
  polls /api/status every second and loads "/" every 5 seconds, starting at a random
  phase within the first second. Goal: p95(20) / p95(1) <= 2 for both paths.
- closed-loop (informative): a client sends its next request as soon as the previous
  answer arrives (the same mix: "/" after every fifth /api/status). With 20 such
  clients the 2-core machine is saturated (server, clients and field role share it), so
  the ratio shows queueing, not a per-request cost; it is printed, not judged.

Printed: p50/p95/max per path and phase, the ratios with PASS/FAIL, and the field role's
poll figures during each phase (polls per device per second from field.json's `polls`,
its `cycle_ms` sampled every 2 s, CPU of the role, Modbus requests counted by the
devices), which show that polling really ran while the clients measured.
Default: 60 s page-like phases, 20 s closed-loop phases (about 3 minutes in all);
``--quick``: 10 s and 5 s. Needs root (the namespace). The script always exits 0.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import http.client
import json
import os
import random
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import poll  # noqa: E402  (bench/poll.py: the simulated devices and their layout)
from _common import Goal, finish, free_port, parser, pct, wait_for  # noqa: E402

from appliance.paths import Paths  # noqa: E402
from appliance.state import revisions as revs  # noqa: E402
from appliance.state.db import Store  # noqa: E402
from appliance.state.live import LiveState  # noqa: E402
from appliance.web import accounts, serve, tls  # noqa: E402

NS = "wbench"
PASSWORD = "bench-password-long-enough"
GOAL = 2.0
PATHS = ("/", "/api/status")
START_S = 3.0  # for the client processes to start and log in before a phase begins
TICK = os.sysconf("SC_CLK_TCK")


# -- setup -----------------------------------------------------------------------------------


def ip(*args: str, check: bool = True) -> None:
    subprocess.run(["ip", *args], check=check, capture_output=True)


def config_text() -> str:
    """The demo's unit, interfaces and conduit with bench/poll.py's 10 devices (1000 tags)."""
    import yaml

    doc = yaml.safe_load((ROOT / "examples" / "demo.yaml").read_text())
    for key in ("devices", "fleet", "syslog", "webhooks"):
        doc.pop(key, None)  # the lab's devices and placeholders
    doc["opcua_server"] = {"enabled": False}
    doc["devices"] = yaml.safe_load(poll.config_yaml())["devices"]
    return str(yaml.safe_dump(doc, sort_keys=False))


def net_doc(t: float, n: int, rev: int) -> dict[str, Any]:
    return {
        "role": "net",
        "started_at": t - n,
        "applied": {"revision": rev, "state": "confirmed", "at": t - n, "fail_closed": False},
        "forwarding": True,
        "last_error": None,
        "links": [
            {
                "name": name,
                "role": role,
                "present": True,
                "oper": "UP",
                "mac": None,
                "admin_up": True,
                "carrier": True,
                "addresses": [addr],
            }
            for name, role, addr in (
                ("it0", "it", "10.10.0.1/24"),
                ("ot0", "ot", "192.168.50.1/24"),
                ("mgmt0", "mgmt", "10.99.0.2/30"),
            )
        ],
        "conduits": {"scada-modbus": {"packets": n * 10, "bytes": n * 600}},
        "drops": {"drop_it_ot": {"packets": n, "bytes": n * 60}},
        "denied": [],
        "drift": {"count": 0, "last_at": None},
    }


class NetWriter(threading.Thread):
    """Stands in for the net role's live document (the role itself would take over NICs)."""

    def __init__(self, live: LiveState, rev: int) -> None:
        super().__init__(daemon=True)
        self.live, self.rev = live, rev
        self.stop = threading.Event()

    def run(self) -> None:
        n = 0
        while not self.stop.is_set():
            self.live.write("net", net_doc(time.time(), n, self.rev))
            n += 1
            self.stop.wait(1.0)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


# -- the field role's figures during a phase --------------------------------------------------


class FieldWatch(threading.Thread):
    """Reads field.json every 2 s during a phase: cycle_ms of every device, polls, states."""

    def __init__(self, live: LiveState, pid: int, counts: Path) -> None:
        super().__init__(daemon=True)
        self.live, self.pid, self.counts = live, pid, counts
        self.stop = threading.Event()
        self.cycle_ms: list[float] = []
        self.not_ok = 0
        self.samples = 0

    def snapshot(self) -> dict[str, Any]:
        doc = self.live.read("field") or {}
        devs = doc.get("devices") or {}
        sim = json.loads(self.counts.read_text())
        return {
            "t": time.monotonic(),
            "polls": {n: int(d.get("polls") or 0) for n, d in devs.items()},
            "cpu": cpu_seconds(self.pid),
            "requests": sum(sim["counts"]),
            "tags": doc.get("tags") or {},
            "written": (doc.get("history") or {}).get("written", 0),
        }

    def run(self) -> None:
        while not self.stop.wait(2.0):
            doc = self.live.read("field") or {}
            for d in (doc.get("devices") or {}).values():
                if d.get("cycle_ms") is not None:
                    self.cycle_ms.append(float(d["cycle_ms"]))
                self.not_ok += d.get("state") != "ok"
                self.samples += 1


def field_figures(a: dict[str, Any], b: dict[str, Any], watch: FieldWatch) -> dict[str, Any]:
    dt = b["t"] - a["t"]
    per_dev = [(b["polls"][n] - a["polls"].get(n, 0)) / dt for n in b["polls"]]
    good = sum(1 for t in b["tags"].values() if t.get("quality") == "good")
    cyc = sorted(watch.cycle_ms)
    return {
        "devices": len(b["polls"]),
        "tags": len(b["tags"]),
        "tags_good": good,
        "polls_per_device_per_s": statistics.mean(per_dev) if per_dev else 0.0,
        "polls_per_device_per_s_min": min(per_dev) if per_dev else 0.0,
        "cycle_ms_p50": statistics.median(cyc) if cyc else None,
        "cycle_ms_max": cyc[-1] if cyc else None,
        "device_samples_not_ok": watch.not_ok,
        "device_samples": watch.samples,
        "cpu_share": (b["cpu"] - a["cpu"]) / dt,
        "modbus_requests_per_s": (b["requests"] - a["requests"]) / dt,
        "history_samples_per_s": (b["written"] - a["written"]) / dt,
    }


# -- the clients ------------------------------------------------------------------------------


class Client:
    """One browser (see the module docstring); runs in a process of its own, so the
    clients' own work does not show up as the server's in the same process."""

    def __init__(
        self, port: int, cafile: str, start: float, until: float, seed: int, closed: bool
    ) -> None:
        self.port, self.start, self.until, self.closed = port, start, until, closed
        self.ctx = ssl.create_default_context(cafile=cafile)
        self.rng = random.Random(seed)
        self.lat: dict[str, list[float]] = {p: [] for p in PATHS}
        self.errors: list[str] = []

    def _conn(self) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection("127.0.0.1", self.port, context=self.ctx, timeout=30)

    def _req(
        self,
        conn: http.client.HTTPSConnection,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, bytes, http.client.HTTPResponse]:
        hdrs = dict(headers or {})
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            hdrs["Content-Type"] = "application/json"
        conn.request(method, path, body=data, headers=hdrs)
        r = conn.getresponse()
        return r.status, r.read(), r

    def run(self) -> dict[str, Any]:
        conn = self._conn()
        status, body, resp = self._req(
            conn, "POST", "/api/session", {"username": "bench", "password": PASSWORD}
        )
        if status != 200:
            return {"lat": self.lat, "errors": [f"login {status} {body[:200]!r}"]}
        headers = {"Cookie": str(resp.getheader("Set-Cookie")).split(";", 1)[0]}
        self._req(conn, "GET", "/api/status", headers=headers)  # warm the connection
        phase_at = self.start + (0.0 if self.closed else self.rng.random())
        time.sleep(max(0.0, phase_at - time.time()))
        tick = 0
        next_at = time.monotonic()
        while time.time() < self.until:
            for path in ["/api/status"] + (["/"] if tick % 5 == 0 else []):
                t0 = time.perf_counter()
                try:
                    status, body, _ = self._req(conn, "GET", path, headers=headers)
                except (OSError, http.client.HTTPException) as e:
                    self.errors.append(f"{path}: {e}")
                    conn.close()
                    conn = self._conn()
                    continue
                dt = time.perf_counter() - t0
                if status != 200:
                    self.errors.append(f"{path}: HTTP {status}")
                    continue
                self.lat[path].append(dt)
            tick += 1
            if not self.closed:
                next_at += 1.0
                time.sleep(max(0.0, next_at - time.monotonic()))
        conn.close()
        return {"lat": self.lat, "errors": self.errors}


def run_client(
    port: int, cafile: str, start: float, until: float, seed: int, closed: bool
) -> dict[str, Any]:
    return Client(port, cafile, start, until, seed, closed).run()


def phase(
    port: int, cafile: str, clients: int, seconds: float, closed: bool, field: FieldWatch
) -> dict[str, Any]:
    start = time.time() + START_S
    until = start + seconds
    with concurrent.futures.ProcessPoolExecutor(max_workers=clients) as pool:
        futures = [
            pool.submit(run_client, port, cafile, start, until, i, closed) for i in range(clients)
        ]
        time.sleep(max(0.0, start - time.time()))
        before = field.snapshot()
        field.cycle_ms.clear()
        field.not_ok = field.samples = 0
        time.sleep(max(0.0, until - time.time()))
        after = field.snapshot()
        done = [f.result(timeout=seconds + 120) for f in futures]
    lat: dict[str, list[float]] = {p: [] for p in PATHS}
    errors: list[str] = []
    for d in done:
        for k, v in d["lat"].items():
            lat[k].extend(v)
        errors.extend(d["errors"])
    stats = {
        p: {
            "requests": len(v),
            "per_s": len(v) / seconds,
            "p50_ms": statistics.median(v) * 1000 if v else float("nan"),
            "p95_ms": pct(v, 95) * 1000,
            "max_ms": max(v) * 1000 if v else float("nan"),
        }
        for p, v in lat.items()
    }
    return {
        "model": "closed-loop" if closed else "page-like",
        "clients": clients,
        "seconds": seconds,
        "paths": stats,
        "field": field_figures(before, after, field),
        "errors": errors[:20],
        "error_count": len(errors),
    }


# -- the run ----------------------------------------------------------------------------------


def check_picture(port: int, cafile: str) -> str:
    """What the UI shows before the phases: 10 devices ok, 1000 tags (else stop here)."""
    c = Client(port, cafile, 0, 0, 0, True)
    conn = c._conn()
    status, body, resp = c._req(
        conn, "POST", "/api/session", {"username": "bench", "password": PASSWORD}
    )
    if status != 200:
        raise SystemExit(f"cannot log in: HTTP {status} {body[:200]!r}")
    headers = {"Cookie": str(resp.getheader("Set-Cookie")).split(";", 1)[0]}
    _, body, _ = c._req(conn, "GET", "/api/status", headers=headers)
    devices = json.loads(body)["devices"]
    _, body, _ = c._req(conn, "GET", "/api/tags", headers=headers)
    tags = json.loads(body)
    conn.close()
    ok = sum(1 for d in devices if d["state"] == "ok")
    good = sum(1 for t in tags if t.get("quality") == "good")
    if len(devices) != poll.DEVICES or len(tags) != poll.DEVICES * poll.POINTS:
        raise SystemExit(f"the UI shows {len(devices)} devices and {len(tags)} tags")
    return f"/api/status: {len(devices)} devices ({ok} ok); /api/tags: {len(tags)} ({good} good)"


def role_child(pid: int) -> int:
    """The field role's process: the daemon's child (or the daemon itself if it has none)."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    with contextlib.suppress(OSError):
        kids = children.read_text().split()
        if kids:
            return int(kids[0])
    return pid


def stop_proc(p: subprocess.Popen[Any] | None) -> None:
    if p is None or p.poll() is not None:
        return
    p.terminate()
    with contextlib.suppress(subprocess.TimeoutExpired):
        p.wait(timeout=10)
    if p.poll() is None:
        p.kill()
        p.wait(timeout=5)


def print_table(phases: list[dict[str, Any]]) -> None:
    print(f"\n{'model':12} {'clients':>7} {'path':12} {'n':>6} {'req/s':>7} {'p50 ms':>8} "
          f"{'p95 ms':>8} {'max ms':>8}")  # fmt: skip
    for ph in phases:
        for p in PATHS:
            s = ph["paths"][p]
            print(
                f"{ph['model']:12} {ph['clients']:7d} {p:12} {s['requests']:6d} "
                f"{s['per_s']:7.1f} "
                f"{s['p50_ms']:8.1f} {s['p95_ms']:8.1f} {s['max_ms']:8.1f}"
            )
    print(
        f"\n{'field role during':24} {'polls/dev/s':>11} {'cycle ms p50':>12} "
        f"{'max':>6} {'not ok':>6} {'CPU':>5} {'modbus req/s':>12} {'samples/s':>9} {'tags':>9}"
    )
    for ph in phases:
        f = ph["field"]
        label = f"{ph['model']}, {ph['clients']}"
        p50 = f["cycle_ms_p50"] if f["cycle_ms_p50"] is not None else float("nan")
        mx = f["cycle_ms_max"] if f["cycle_ms_max"] is not None else float("nan")
        print(
            f"{label:24} {f['polls_per_device_per_s']:11.2f} {p50:12.1f} {mx:6.1f} "
            f"{f['device_samples_not_ok']:3d}/{f['device_samples']:<3d} "
            f"{f['cpu_share'] * 100:4.0f}% {f['modbus_requests_per_s']:12.1f} "
            f"{f['history_samples_per_s']:9.0f} {f['tags_good']:4d}/{f['tags']:<4d}"
        )


def ratios(one: dict[str, Any], many: dict[str, Any]) -> dict[str, tuple[float, float, float]]:
    out = {}
    for p in PATHS:
        a, b = one["paths"][p]["p95_ms"], many["paths"][p]["p95_ms"]
        out[p] = (a, b, b / a if a == a and a else float("nan"))
    return out


def main() -> int:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=60.0, help="each page-like phase (60)")
    p.add_argument("--closed-seconds", type=float, default=20.0, help="each closed-loop phase (20)")
    p.add_argument("--clients", type=int, default=20, help="clients of the busy phases (20)")
    args = p.parse_args()
    seconds = 10.0 if args.quick else args.seconds
    closed_s = 5.0 if args.quick else args.closed_seconds
    if os.geteuid() != 0:
        raise SystemExit(f"needs root: it makes the network namespace {NS}")

    tmp = Path(tempfile.mkdtemp(prefix="bench-web-"))
    paths = Paths(tmp / "data", tmp / "run")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    sim: subprocess.Popen[str] | None = None
    role: subprocess.Popen[bytes] | None = None
    server: subprocess.Popen[bytes] | None = None
    net: NetWriter | None = None
    watch: FieldWatch | None = None
    ip("netns", "del", NS, check=False)
    ip("netns", "add", NS)
    try:
        ip("-n", NS, "link", "set", "lo", "up")
        counts = tmp / "counts.json"
        sim = subprocess.Popen(
            ["ip", "netns", "exec", NS, sys.executable, str(Path(poll.__file__).resolve()),
             "--simulate", str(counts)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        assert sim.stdout is not None
        if sim.stdout.readline().strip() != "ready":
            raise SystemExit("the simulated devices did not start")

        store = Store(paths.data_dir, accounts.MODELS)
        now = time.time()
        imported = revs.import_text(store, config_text(), author="bench", now=now)
        rev = revs.commit(store, author="bench", now=now, ref=imported.revision.id)
        accounts.create_user("bench", "admin", PASSWORD, by="bench", now=now)
        live = LiveState(paths.run_dir)
        net = NetWriter(live, rev.revision.id)
        net.start()

        log = (tmp / "field.log").open("wb")
        role = subprocess.Popen(
            ["ip", "netns", "exec", NS, sys.executable, "-m", "appliance", "run",
             "--roles", "field"],
            env={**env, "APPLIANCE_DATA_DIR": str(paths.data_dir),
                 "APPLIANCE_RUN_DIR": str(paths.run_dir)},
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip

        def all_ok() -> bool:
            devs = (live.read("field") or {}).get("devices") or {}
            return len(devs) == poll.DEVICES and all(d["state"] == "ok" for d in devs.values())

        try:
            wait_for(all_ok, 60, "the field role to poll all 10 devices", every=0.2)
        except SystemExit:
            print((tmp / "field.log").read_text()[-2000:])
            raise
        doc = live.read("field") or {}
        field_pid = int(doc.get("pid") or role_child(role.pid))

        cert, key = tls.ensure_cert(paths, unit_name="bench")
        port = free_port()
        server = subprocess.Popen(
            serve.command(paths, [serve.bind_spec("127.0.0.1", port)], cert, key),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=serve.die_with_parent,
        )
        ctx = ssl.create_default_context(cafile=str(cert))

        def up() -> bool:
            try:
                c = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=2)
                c.request("GET", "/api/setup")
                return c.getresponse().status == 200
            except OSError:
                return False

        wait_for(up, 30, "the web server", every=0.2)
        workers = os.environ.get("APPLIANCE_WEB_WORKERS", str(serve.WORKERS))
        print(
            f"server: gunicorn gthread, {workers} workers x {serve.THREADS} threads, TLS, "
            f"127.0.0.1:{port}"
        )
        print(
            f"field role: pid {field_pid} in netns {NS}, {poll.DEVICES} simulated Modbus "
            f"devices x {poll.POINTS} points, poll interval {poll.INTERVAL:g} s"
        )
        print(check_picture(port, str(cert)))
        print(
            f"page-like phases of {seconds:g} s (/api/status every 1 s, / every 5 s), "
            f"closed-loop phases of {closed_s:g} s; 1 client, then {args.clients}",
            flush=True,
        )

        watch = FieldWatch(live, field_pid, counts)
        watch.start()
        phases = []
        for closed, secs in ((False, seconds), (True, closed_s)):
            for n in (1, args.clients):
                print(
                    f"  {'closed-loop' if closed else 'page-like'}, {n} client(s) ...",
                    flush=True,
                )
                phases.append(phase(port, str(cert), n, secs, closed, watch))

        print_table(phases)
        page = ratios(phases[0], phases[1])
        loop = ratios(phases[2], phases[3])
        print(f"\n{'p95 ratio':38} {'1 client':>9} {str(args.clients) + ' clients':>11} "
              f"{'ratio':>6}")  # fmt: skip
        for name, rs in (("page-like", page), ("closed-loop (informative)", loop)):
            for path, (a, b, r) in rs.items():
                verdict = "PASS" if r <= GOAL else "FAIL"
                print(
                    f"{name + ' ' + path:38} {a:6.1f} ms {b:8.1f} ms {r:6.2f}  "
                    f"<= {GOAL:g} {verdict}"
                )
        errors = [e for ph in phases for e in ph["errors"]]
        print(f"errors: {sum(ph['error_count'] for ph in phases)}")
        for e in errors[:5]:
            print(f"  error: {e}")

        goals = [
            Goal(f"p95 {path}, {args.clients} page-like clients vs 1", b, GOAL, False, a, " ms")
            for path, (a, b, _) in page.items()
        ]
        figures = {
            "phases": phases,
            "closed_loop_ratios": {k: v[2] for k, v in loop.items()},
            "seconds": seconds,
            "closed_seconds": closed_s,
        }
        return finish("web", goals, figures, args.json)
    finally:
        if watch is not None:
            watch.stop.set()
        if net is not None:
            net.stop.set()
        for proc in (server, role, sim):
            stop_proc(proc)
        ip("netns", "del", NS, check=False)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
