"""bench/web: p95 latency of the overview page ("/") and /api/status with 20 concurrent
clients vs one client, in one run, while the field data of 1000 points changes every second.

The server is the real one: the web role's gunicorn process (`appliance.web.serve`,
gthread workers, TLS with the unit's own certificate) on 127.0.0.1 (an ephemeral port),
over a fresh data directory with the demo configuration committed and users made.
The field role's live document (`field.json`: 4 devices, 1000 tags, alarms, history
counters) and the net role's (`net.json`) are rewritten every second by a thread, as
the roles do while polling 1000 points; every request of the app reads them.

Each client behaves like an open overview page, but busier: it polls /api/status every
second and loads "/" every 5 seconds, each over its own keep-alive TLS connection with
its own session, starting at a random phase. Phase 1: one client; phase 2: 20 clients;
same duration. Goal: p95(20) / p95(1) <= 2 for both. The script always exits 0.
"""

from __future__ import annotations

import argparse
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

from appliance.paths import Paths  # noqa: E402
from appliance.state import revisions as revs  # noqa: E402
from appliance.state.db import Store  # noqa: E402
from appliance.state.live import LiveState  # noqa: E402
from appliance.web import accounts, serve, tls  # noqa: E402

PASSWORD = "bench-password-long-enough"
GOAL = 2.0
TAGS = 1000
DEVICES = 4


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def field_doc(t: float, n: int) -> dict[str, Any]:
    per = TAGS // DEVICES
    tags = {}
    for d in range(DEVICES):
        for i in range(per):
            tags[f"plc{d + 1}.t{i:03d}"] = {
                "value": (n + i) % 65536 if i % 3 else round(20 + (n % 60) / 10 + i / 100, 3),
                "quality": "good",
                "source_time": t,
                "poll_time": t,
                "unit": "" if i % 3 else "degC",
                "device": f"plc{d + 1}",
                "writable": i < 10,
                "description": f"point {i}",
            }
    devices = {
        f"plc{d + 1}": {
            "protocol": "modbus-tcp",
            "state": "ok",
            "last_ok": t,
            "last_error": None,
            "error_count": 0,
            "requests_per_cycle": 3,
            "ideal_requests": 3,
            "cycle_ms": 4.2,
            "poll_interval": 1.0,
            "polls": n,
        }
        for d in range(DEVICES)
    }
    return {
        "role": "field",
        "started_at": t - n,
        "devices": devices,
        "tags": tags,
        "alarms": {"active": [], "counts": {"critical": 0, "warning": 0}},
        "comm_loss": [],
        "history": {"queued": n % 50, "written": n * TAGS, "last_flush": t},
    }


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


class Writer(threading.Thread):
    """Rewrites field.json and net.json every second, as the roles do."""

    def __init__(self, live: LiveState, rev: int) -> None:
        super().__init__(daemon=True)
        self.live, self.rev = live, rev
        self.stop = threading.Event()
        self.writes = 0

    def run(self) -> None:
        n = 0
        while not self.stop.is_set():
            t = time.time()
            self.live.write("field", field_doc(t, n))
            self.live.write("net", net_doc(t, n, self.rev))
            self.writes += 1
            n += 1
            self.stop.wait(1.0)


class Client:
    """One browser with the overview open (see the module docstring); runs in a process of
    its own, so the clients' own work does not show up as server latency."""

    def __init__(self, port: int, cafile: str, until: float, seed: int) -> None:
        self.port, self.until = port, until
        self.ctx = ssl.create_default_context(cafile=cafile)
        self.rng = random.Random(seed)
        self.lat: dict[str, list[float]] = {"/api/status": [], "/": []}
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
    ) -> tuple[int, bytes, Any]:
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
        headers = {"Cookie": resp.getheader("Set-Cookie").split(";", 1)[0]}
        time.sleep(self.rng.random())  # random phase
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
            next_at += 1.0
            time.sleep(max(0.0, next_at - time.monotonic()))
        conn.close()
        return {"lat": self.lat, "errors": self.errors}


def run_client(port: int, cafile: str, until: float, seed: int) -> dict[str, Any]:
    return Client(port, cafile, until, seed).run()


def p95(values: list[float]) -> float:
    if len(values) < 2:
        return float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[94]


def phase(port: int, cafile: str, clients: int, seconds: float) -> dict[str, Any]:
    until = time.time() + 2.0 + seconds  # 2 s for the processes to start and log in
    with concurrent.futures.ProcessPoolExecutor(max_workers=clients) as pool:
        futures = [pool.submit(run_client, port, cafile, until, i) for i in range(clients)]
        done = [f.result(timeout=seconds + 120) for f in futures]
    lat: dict[str, list[float]] = {"/api/status": [], "/": []}
    errors: list[str] = []
    for d in done:
        for k, v in d["lat"].items():
            lat[k].extend(v)
        errors.extend(d["errors"])
    return {
        "clients": clients,
        "requests": {k: len(v) for k, v in lat.items()},
        "p50_ms": {k: statistics.median(v) * 1000 if v else None for k, v in lat.items()},
        "p95_ms": {k: p95(v) * 1000 for k, v in lat.items()},
        "errors": errors[:20],
        "error_count": len(errors),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="15 s phases instead of 60 s")
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--json", type=Path, metavar="FILE", help="also write the results as JSON")
    args = ap.parse_args()
    seconds = 15.0 if args.quick else 60.0

    root = Path(tempfile.mkdtemp(prefix="bench-web-"))
    paths = Paths(root / "data", root / "run")
    proc = None
    writer = None
    try:
        store = Store(paths.data_dir)
        demo = (ROOT / "examples" / "demo.yaml").read_text()
        import yaml

        doc = yaml.safe_load(demo)
        for key in ("devices", "fleet", "syslog", "webhooks"):
            doc.pop(key, None)  # the lab's placeholders; the field data comes from field.json
        now = time.time()
        revs.import_text(store, yaml.safe_dump(doc), author="bench", now=now)
        rev = revs.commit(store, author="bench", now=now).revision.id
        accounts.create_user("bench", "admin", PASSWORD, by="bench", now=now)
        live = LiveState(paths.run_dir)
        writer = Writer(live, rev)
        writer.start()
        cert, key = tls.ensure_cert(paths, unit_name="bench")
        port = free_port()
        proc = subprocess.Popen(
            serve.command(paths, [serve.bind_spec("127.0.0.1", port)], cert, key),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=serve.die_with_parent,
        )
        ctx = ssl.create_default_context(cafile=str(cert))
        deadline = time.monotonic() + 30
        while True:
            try:
                c = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=2)
                c.request("GET", "/api/setup")
                if c.getresponse().status == 200:
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("the server did not start") from None
                time.sleep(0.2)
        workers = os.environ.get("APPLIANCE_WEB_WORKERS", str(serve.WORKERS))
        print(
            f"server: gunicorn gthread, {workers} workers x {serve.THREADS} threads, TLS, "
            f"127.0.0.1:{port}; field.json {TAGS} tags rewritten every second"
        )
        print(
            f"phases of {seconds:.0f} s: 1 client, then {args.clients} clients "
            "(each: /api/status every 1 s, / every 5 s, keep-alive)"
        )
        one = phase(port, str(cert), 1, seconds)
        many = phase(port, str(cert), args.clients, seconds)
        results: dict[str, Any] = {"one": one, "many": many, "goals": {}}
        print(
            f"{'':12} {'1 client p95':>14} {str(args.clients) + ' clients p95':>16} "
            f"{'ratio':>7}  goal"
        )
        for path in ("/", "/api/status"):
            a, b = one["p95_ms"][path], many["p95_ms"][path]
            ratio = b / a if a else float("nan")
            ok = ratio <= GOAL
            results["goals"][path] = {
                "one_p95_ms": a,
                "many_p95_ms": b,
                "ratio": ratio,
                "limit": GOAL,
                "pass": ok,
            }
            print(
                f"{path:12} {a:11.1f} ms {b:13.1f} ms {ratio:7.2f}  <= {GOAL:g} "
                f"{'PASS' if ok else 'FAIL'}"
            )
        print(
            f"requests: 1 client {one['requests']}, {args.clients} clients "
            f"{many['requests']}; errors {one['error_count']} + {many['error_count']}; "
            f"field.json rewrites {writer.writes}"
        )
        for e in (one["errors"] + many["errors"])[:5]:
            print(f"  error: {e}")
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))
    finally:
        if writer is not None:
            writer.stop.set()
        if proc is not None and proc.poll() is None:
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
            if proc.poll() is None:
                proc.kill()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
