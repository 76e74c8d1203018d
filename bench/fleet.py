"""bench/fleet: the fleet receiver at plant scale, against a bare endpoint in the same run.

N simulated units (default 10,000: distinct unit ids and tokens, registered in the
database as `add-unit` does) post heartbeats made by the agent's own builder
(appliance.agent.heartbeat.build, each checked against heartbeat.schema.json), with
events and active alarms in them, to two servers on this machine, both gunicorn with
gthread workers (the same --workers and --threads), both TLS 1.2+ with a certificate of a
CA made here, both on one throw-away PostgreSQL cluster (appliance/fleet/pgtemp.py,
durable: fsync on) through psycopg2:

- the receiver: `appliance fleet serve --db postgresql://…` as an operator runs it;
- the bare endpoint (`bare_app` below): parses the JSON and inserts one row, nothing else:
  the limit this machine, this driver and this database set.

Clients are processes (2 by default) of threads with keep-alive TLS connections; each
unit belongs to one client process, so its heartbeat numbers rise in order.

Phases:
1. throughput, closed loop (each thread sends its next heartbeat when the answer came):
   bare and receiver take turns (`--turn` s each, two rounds); heartbeats/s per turn, the
   ratio receiver/bare per round, the median ratio is judged (goal >= 0.5).
2. latency at the rate of 10,000 units at a 60 s interval (167/s, open loop: a
   heartbeat's latency counts from when it was due, so a stalled server is not hidden):
   p50/p95 of the receiver (goal p95 <= 250 ms) and, informative, of the bare endpoint.
3. restart: the same rate, each unit with an outbox as the agent keeps one (a heartbeat
   not answered 200 stays queued and is sent again, oldest first, after 0.5-2 s); the
   receiver is killed (SIGKILL, master and workers: answers in flight are lost) in the
   middle and started again; 3 % of the answers are "lost on the way" (the unit sends
   that heartbeat again). Then every heartbeat made must be in the database exactly once
   (checked by Idempotency-Key); repeats the receiver already had are answered
   `duplicate` and counted (goals: nothing lost, every repeat answered duplicate).

Printed at the end: the database's size and rows (`appliance fleet stats`). Default
about 70 s; `--quick` about 35 s with 2,000 units. Always exits 0.
"""

from __future__ import annotations

import http.client
import json
import multiprocessing as mp
import os
import queue
import random
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from _common import Goal, finish, free_port, median, parser, pct, wait_for  # noqa: E402

RATE_10K_60S = 10_000 / 60  # heartbeats/s of 10,000 units at a 60 s interval
LOST_ANSWERS = 0.03  # restart phase: answers lost on the way (the unit sends it again)
T0 = time.time()


# -- the bare endpoint (imported by its own gunicorn as fleet:bare_app) ----------------------

_local = threading.local()


def _bare_conn() -> Any:
    conn = getattr(_local, "conn", None)
    if conn is None or conn.closed:
        import psycopg2

        conn = psycopg2.connect(os.environ["FLEET_BENCH_BARE_DSN"])
        _local.conn = conn
    return conn


def bare_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """Parse the JSON body, insert one row, answer {}: what any receiver must at least do."""
    size = int(environ.get("CONTENT_LENGTH") or 0)
    raw = environ["wsgi.input"].read(size)
    doc = json.loads(raw)
    conn = _bare_conn()
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO bare (unit_id, seq, sent_at, body) VALUES (%s, %s, %s, %s)",
            (doc["unit"]["id"], doc["seq"], doc["sent_at"], raw.decode()),
        )
    conn.commit()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", "2")])
    return [b"{}"]


# -- simulated units -----------------------------------------------------------------------


@dataclass
class SimUnit:
    uid: str
    name: str
    token: str
    seq: int = 0
    event_id: int = 0


def make_heartbeat(u: SimUnit, rng: random.Random) -> dict[str, Any]:
    """The unit's next heartbeat, as its agent builds it (events: one in three heartbeats)."""
    from appliance.agent import heartbeat as agent_hb

    u.seq += 1
    now = time.time()
    events = []
    if rng.random() < 0.33:
        u.event_id += 1
        events.append(
            {
                "id": u.event_id,
                "at": now - 5,
                "kind": "net.denied",
                "severity": "warning",
                "source": "net",
                "message": f"denied 10.10.0.{rng.randint(2, 250)} -> 192.168.50.10:502",
            }
        )
    alarms = {}
    if u.seq % 4 == 0:
        alarms = {
            "active": [
                {
                    "id": 7,
                    "key": "press.temp:high",
                    "tag": "press.temp",
                    "device": "plc1",
                    "kind": "high",
                    "severity": "warning",
                    "raised_at": now - 120,
                    "acked": False,
                    "message": "press.temp 81.5 above 80",
                }
            ]
        }
    state = "degraded" if u.seq % 10 == 0 else "ok"
    reasons = [{"code": "link.down", "severity": "warning", "message": "ot1 is down"}]
    return agent_hb.build(
        agent_hb.HeartbeatInputs(
            heartbeat_id=str(uuid.uuid4()),
            unit={
                "id": u.uid,
                "name": u.name,
                "site": f"plant-{int(u.name[-5:]) % 50}",
                "serial": None,
            },
            seq=u.seq,
            sent_at=now,
            uptime_s=3600.0 + u.seq * 60,
            health={"state": state, "reasons": reasons if state != "ok" else []},
            net={
                "applied": {"revision": 4, "sha256": "ab" * 32, "state": "confirmed"},
                "links": [
                    {"name": "it0", "role": "it", "present": True, "oper": "UP"},
                    {"name": "ot0", "role": "ot", "present": True, "oper": "UP"},
                    {"name": "mgmt0", "role": "mgmt", "present": True, "oper": "UP"},
                ],
                "drops": {"drop_it_ot": {"packets": 17 + u.seq}},
                "conduits": {
                    f"c{i}": {"packets": 1000 * i + u.seq, "bytes": 64_000 * i} for i in range(5)
                },
            },
            field={
                "devices": {f"plc{i}": {"state": "ok"} for i in range(4)},
                "tags": {f"t{i}": {"quality": "good"} for i in range(40)},
                **({"alarms": alarms} if alarms else {}),
            },
            conduit_count=12,
            events=events,
            events_cursor=u.event_id,
            audit_head=(40 + u.seq, "cd" * 32),
        )
    )


# -- clients (each a process of threads) ------------------------------------------------------


@dataclass
class Target:
    host: str
    port: int
    ca: str
    path: str


class Conn:
    """One keep-alive HTTPS connection, made again after an error."""

    def __init__(self, target: Target) -> None:
        self.t = target
        self.ctx = ssl.create_default_context(cafile=target.ca)
        self.c: http.client.HTTPSConnection | None = None

    def post(self, token: str, doc: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        body = json.dumps(doc, separators=(",", ":")).encode()
        headers = {
            "Authorization": f"Bearer {token}",
            "Idempotency-Key": doc["id"],
            "Content-Type": "application/json",
        }
        try:
            if self.c is None:
                self.c = http.client.HTTPSConnection(
                    self.t.host, self.t.port, context=self.ctx, timeout=10
                )
            self.c.request("POST", self.t.path, body, headers)
            r = self.c.getresponse()
            data = r.read()
            if r.getheader("Connection", "").lower() == "close":
                self.close()
            return r.status, (json.loads(data) if r.status == 200 else {})
        except (OSError, http.client.HTTPException, ValueError):
            self.close()
            return 0, {}

    def close(self) -> None:
        if self.c is not None:
            self.c.close()
            self.c = None


def client_main(
    mode: str,
    target: Target,
    units: list[SimUnit],
    threads: int,
    seconds: float,
    rate: float,
    start_at: float,
    out: Any,
    seed: int,
) -> None:
    """One client process: `threads` threads sending for `seconds` from `start_at`.

    closed: back to back; open: at `rate`/s in all, latency from when each was due;
    outbox: open, and a heartbeat not answered 200 is kept and sent again until it is.
    """
    mine = [units[i::threads] for i in range(threads)]
    results: list[dict[str, Any]] = []
    lock = threading.Lock()

    def run(k: int) -> None:
        rng = random.Random(seed * 1000 + k)
        conn = Conn(target)
        my_units = mine[k]
        lat: list[float] = []
        sent = ok = errors = dup = resent = 0
        keys: list[str] = []
        outbox: deque[tuple[SimUnit, dict[str, Any]]] = deque()
        i = 0
        period = threads / rate if rate else 0.0
        due = start_at + k * period / threads if rate else start_at
        end = start_at + seconds
        give_up = end + 45  # outbox: time left to deliver what is queued
        retry_at = 0.0
        while time.time() < start_at:
            time.sleep(0.001)
        while True:
            now = time.time()
            scheduled: float | None = None
            if mode == "closed":
                if now >= end:
                    break
                u = my_units[i % len(my_units)]
                i += 1
                doc = make_heartbeat(u, rng)
                t = time.perf_counter()
                status, _ = conn.post(u.token, doc)
                sent += 1
                if status == 200:
                    ok += 1
                    lat.append(time.perf_counter() - t)
                else:
                    errors += 1
                continue
            if due < end and now >= due:  # the next unit's heartbeat is due
                u = my_units[i % len(my_units)]
                i += 1
                doc = make_heartbeat(u, rng)
                keys.append(doc["id"])
                outbox.append((u, doc))
                scheduled = due
                due += period
            elif mode == "outbox" and outbox and now >= retry_at:
                pass  # a retry
            elif due >= end and (not outbox or now > give_up):
                break
            else:
                wake = due if due < end else give_up
                if outbox:
                    wake = min(wake, retry_at)
                time.sleep(max(0.0005, wake - now))
                continue
            # the oldest queued first, as the agent's outbox sends them
            while outbox:
                u, doc = outbox[0]
                status, answer = conn.post(u.token, doc)
                sent += 1
                if status != 200:
                    errors += 1
                    if mode == "outbox":
                        retry_at = time.time() + rng.uniform(0.5, 2.0)
                    else:
                        outbox.popleft()
                    break
                ok += 1
                dup += bool(answer.get("duplicate"))
                outbox.popleft()
                if mode == "outbox" and rng.random() < LOST_ANSWERS:
                    # the answer "lost on the way": the unit sends the same heartbeat again
                    outbox.append((u, doc))
                    resent += 1
                if scheduled is not None and not outbox:
                    lat.append(time.time() - scheduled)
        conn.close()
        with lock:
            results.append(
                {
                    "lat": lat,
                    "sent": sent,
                    "ok": ok,
                    "errors": errors,
                    "dup": dup,
                    "resent": resent,
                    "keys": keys,
                }
            )

    ts = [threading.Thread(target=run, args=(k,)) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    merged = {
        "lat": [x for r in results for x in r["lat"]],
        "keys": [x for r in results for x in r["keys"]],
        **{k: sum(r[k] for r in results) for k in ("sent", "ok", "errors", "dup", "resent")},
    }
    out.put(merged)


PHASES = [0]


def load(
    mode: str,
    target: Target,
    groups: list[list[SimUnit]],
    threads: int,
    seconds: float,
    rate: float = 0.0,
    during: Any = None,
) -> dict[str, Any]:
    """Run one phase with one client process per unit group -> merged figures.

    The clients are forked: what they count in the units stays with them, so every phase
    starts the units' heartbeat numbers and event ids higher than the last one could reach
    (numbers that go back would look like a factory reset to the receiver)."""
    PHASES[0] += 1
    for g in groups:
        for u in g:
            u.seq = u.event_id = 100_000 * PHASES[0]
    ctx = mp.get_context("fork")
    out = ctx.Queue()
    start_at = time.time() + 0.5
    procs = [
        ctx.Process(
            target=client_main,
            args=(mode, target, g, threads, seconds, rate / len(groups), start_at, out, n),
        )
        for n, g in enumerate(groups)
    ]
    for p in procs:
        p.start()
    if during is not None:
        during(start_at)
    got = [out.get(timeout=seconds + 120) for _ in procs]
    for p in procs:
        p.join(10)
    merged = {
        "lat": [x for r in got for x in r["lat"]],
        "keys": [x for r in got for x in r["keys"]],
        **{k: sum(r[k] for r in got) for k in ("sent", "ok", "errors", "dup", "resent")},
    }
    merged["seconds"] = seconds
    merged["per_s"] = merged["ok"] / seconds
    return merged


# -- servers --------------------------------------------------------------------------------


@dataclass
class Server:
    name: str
    argv: list[str]
    env: dict[str, str]
    port: int
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: list[float] = field(default_factory=list)

    def start(self, target: Target) -> float:
        t = time.monotonic()
        out = open(self.log, "ab")  # noqa: SIM115 (the child keeps it)
        self.proc = subprocess.Popen(
            self.argv, stdout=out, stderr=subprocess.STDOUT, env=self.env, start_new_session=True
        )
        out.close()

        def answers() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise SystemExit(f"{self.name} exited: {self.log.read_text()[-2000:]}")
            try:
                c = http.client.HTTPSConnection(
                    target.host,
                    target.port,
                    context=ssl.create_default_context(cafile=target.ca),
                    timeout=2,
                )
                c.request("GET", "/api/v1/ping")
                c.getresponse().read()
                c.close()
                return True
            except (OSError, http.client.HTTPException):
                return False

        wait_for(answers, 60, f"{self.name} to answer", every=0.05)
        took = time.monotonic() - t
        self.starts.append(took)
        return took

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()


def register(url: str, n: int) -> list[SimUnit]:
    """N units as add-unit makes them (names, hashed tokens), in bulk."""
    import secrets

    from appliance.fleet import store
    from appliance.fleet.validate import token_hash

    units = [
        SimUnit(str(uuid.uuid4()), f"unit-{i:05d}", secrets.token_urlsafe(32)) for i in range(n)
    ]
    store.open_db(url)
    with store.fleet_db.connection_context():
        rows = [
            {"name": u.name, "token_hash": token_hash(u.token), "created_at": time.time()}
            for u in units
        ]
        for i in range(0, len(rows), 1000):
            with store.fleet_db.atomic():
                store.Unit.insert_many(rows[i : i + 1000]).execute()
    return units


def lat_ms(values: list[float], q: int) -> float:
    return pct(values, q) * 1000


def main() -> int:
    p = parser(__doc__.split("\n")[0])
    p.add_argument("--units", type=int, help="simulated units (default 10000; quick 2000)")
    p.add_argument("--turn", type=float, help="seconds per throughput turn (default 6)")
    p.add_argument("--workers", type=int, default=2, help="gunicorn workers of each server")
    p.add_argument("--threads", type=int, default=4, help="threads per worker")
    p.add_argument("--clients", type=int, default=2, help="client processes")
    p.add_argument("--client-threads", type=int, default=8, help="threads per client process")
    p.add_argument("--no-fsync", action="store_true", help="PostgreSQL without fsync")
    args = p.parse_args()
    n = args.units or (2000 if args.quick else 10_000)
    turn = args.turn or (3.0 if args.quick else 6.0)
    steady = 5.0 if args.quick else 8.0
    restart_phase = 10.0 if args.quick else 16.0

    from appliance.agent import heartbeat as agent_hb
    from appliance.fleet import pgtemp, store
    from appliance.lab import pki

    probe = make_heartbeat(SimUnit(str(uuid.uuid4()), "unit-99999", "x", seq=3), random.Random(1))
    problems = agent_hb.validate(probe)
    if problems:
        raise SystemExit(f"the simulated heartbeat does not match the schema: {problems[:3]}")
    size = len(json.dumps(probe, separators=(",", ":")))
    print(f"fleet bench: {n} units, heartbeats of ~{size} bytes (schema-valid), "
          f"{args.workers} workers x {args.threads} threads per server, "
          f"{args.clients} x {args.client_threads} client threads")  # fmt: skip

    tmp = Path(tempfile.mkdtemp(prefix="fleet-bench-"))
    cluster = pgtemp.start(durable=not args.no_fsync, max_connections=200)
    servers: list[Server] = []
    try:
        fleet_url = cluster.create_database("fleet")
        bare_url = cluster.create_database("bare")
        cluster.sql(
            "CREATE TABLE bare (id bigserial PRIMARY KEY, unit_id text, seq bigint, "
            "sent_at double precision, body text)",
            pgtemp.database_of(bare_url),
        )
        t = time.monotonic()
        units = register(fleet_url, n)
        print(f"  registered {n} units in {time.monotonic() - t:.1f} s")
        made = pki.make(tmp / "pki", "127.0.0.1", "fleet bench")
        ca = str(made.ca_cert)
        env = {**os.environ, "PYTHONPATH": f"{HERE}:{ROOT}", "FLEET_BENCH_BARE_DSN": bare_url}
        fleet_t = Target("127.0.0.1", free_port(), ca, "/api/v1/heartbeat")
        bare_t = Target("127.0.0.1", free_port(), ca, "/heartbeat")
        fleet_srv = Server(
            "the receiver",
            [
                sys.executable, "-m", "appliance.fleet", "serve", "--db", fleet_url,
                "--listen", f"127.0.0.1:{fleet_t.port}", "--cert", str(made.server_cert),
                "--key", str(made.server_key), "--workers", str(args.workers),
                "--threads", str(args.threads),
            ],
            env, fleet_t.port, tmp / "fleet.log",
        )  # fmt: skip
        bare_srv = Server(
            "the bare endpoint",
            [
                sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{bare_t.port}",
                "--worker-class", "gthread", "--workers", str(args.workers),
                "--threads", str(args.threads), "--certfile", str(made.server_cert),
                "--keyfile", str(made.server_key), "--log-level", "warning", "fleet:bare_app",
            ],
            env, bare_t.port, tmp / "bare.log",
        )  # fmt: skip
        servers = [fleet_srv, bare_srv]
        fleet_srv.start(fleet_t)
        bare_srv.start(bare_t)
        groups = [units[i :: args.clients] for i in range(args.clients)]
        ct = args.client_threads

        # 1. throughput, turns
        print(f"\n== 1. throughput, closed loop, {args.clients * ct} connections, {turn:g} s turns")
        rounds = []
        for rnd in range(2):
            order = [("bare", bare_t), ("receiver", fleet_t)]
            if rnd % 2:
                order.reverse()
            got = {}
            for name, target in order:
                r = load("closed", target, groups, ct, turn)
                got[name] = r
                print(
                    f"  round {rnd + 1} {name:<9} {r['per_s']:8.1f} heartbeats/s  "
                    f"p50 {lat_ms(r['lat'], 50):6.1f} ms  p95 {lat_ms(r['lat'], 95):6.1f} ms  "
                    f"errors {r['errors']}"
                )
            rounds.append(got)
        ratios = [r["receiver"]["per_s"] / r["bare"]["per_s"] for r in rounds]
        recv_rate = median([r["receiver"]["per_s"] for r in rounds])
        bare_rate = median([r["bare"]["per_s"] for r in rounds])
        print(f"  ratio receiver/bare per round: {', '.join(f'{x:.3f}' for x in ratios)}")

        # 2. latency at 167/s
        rate = RATE_10K_60S
        print(f"\n== 2. latency at {rate:.0f} heartbeats/s (10,000 units / 60 s), open loop")
        steady_r = {}
        for name, target in (("receiver", fleet_t), ("bare", bare_t)):
            r = load("open", target, groups, ct, steady, rate)
            steady_r[name] = r
            print(
                f"  {name:<9} {r['ok'] / steady:7.1f}/s  p50 {lat_ms(r['lat'], 50):6.1f} ms  "
                f"p95 {lat_ms(r['lat'], 95):6.1f} ms  max {max(r['lat'] or [0]) * 1000:6.1f} ms  "
                f"errors {r['errors']}"
            )

        # 3. restart mid-run
        print(f"\n== 3. {restart_phase:g} s at {rate:.0f}/s with outboxes; the receiver killed "
              f"(SIGKILL) at {restart_phase / 2:g} s and started again")  # fmt: skip
        restart: dict[str, float] = {}

        def kill_and_restart(start_at: float) -> None:
            time.sleep(max(0.0, start_at + restart_phase / 2 - time.time()))
            fleet_srv.kill()
            restart["killed_at"] = time.time() - start_at
            restart["took_s"] = fleet_srv.start(fleet_t)

        before = _count(fleet_url)
        r3 = load("outbox", fleet_t, groups, ct, restart_phase, rate, during=kill_and_restart)
        keys = r3["keys"]
        stored = _stored(cluster, fleet_url, keys)
        after = _count(fleet_url)
        lost = len(keys) - stored
        print(
            f"  made {len(keys)} heartbeats; stored {stored} (rows +{after - before}); "
            f"lost {lost}; sends {r3['sent']}, refused or unanswered {r3['errors']}, "
            f"sent again after a lost answer {r3['resent']}, answered duplicate {r3['dup']} "
            f"(stored once); the receiver was back "
            f"{restart.get('took_s', float('nan')):.1f} s after the kill"
        )

        store.open_db(fleet_url)
        with store.fleet_db.connection_context():
            st = store.stats()
        per_hb = st["size_bytes"] / max(st["heartbeats"], 1)
        print(
            f"\n== database after the run: {st['size_bytes'] / 2**20:.1f} MiB, {st['units']} "
            f"units, {st['heartbeats']} heartbeats, {st['events']} events "
            f"(~{per_hb / 1024:.1f} KiB per heartbeat with its indexes and the units)"
        )
        goals = [
            Goal(
                "sustained heartbeats/s, receiver vs bare endpoint",
                recv_rate,
                0.5,
                True,
                baseline=bare_rate,
                unit="/s",
                paired=median(ratios),
            ),
            Goal(
                f"p95 latency at {rate:.0f}/s",
                lat_ms(steady_r["receiver"]["lat"], 95),
                250,
                False,
                unit=" ms",
            ),
            Goal("heartbeats lost across a receiver restart", float(lost), 0, False),
            Goal(  # dup may be higher: a heartbeat stored just before the kill, resent
                "repeats after a lost answer not answered duplicate",
                float(max(0, r3["resent"] - r3["dup"])),
                0,
                False,
            ),
        ]
        figures = {
            "units": n,
            "heartbeat_bytes": size,
            "throughput": [
                {k: {x: v[x] for x in ("per_s", "ok", "errors")} for k, v in r.items()}
                for r in rounds
            ],
            "ratios": ratios,
            "steady": {
                k: {
                    "per_s": v["ok"] / steady,
                    "p50_ms": lat_ms(v["lat"], 50),
                    "p95_ms": lat_ms(v["lat"], 95),
                    "errors": v["errors"],
                }
                for k, v in steady_r.items()
            },
            "restart": {
                "made": len(keys),
                "stored": stored,
                "lost": lost,
                "sends": r3["sent"],
                "errors": r3["errors"],
                "duplicates": r3["dup"],
                "resent_after_lost_answer": r3["resent"],
                **restart,
            },
            "database": st,
        }
        return finish("fleet", goals, figures, args.json)
    finally:
        for s in servers:
            s.stop()
        cluster.stop()
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


def _count(url: str) -> int:
    from appliance.fleet import store

    store.open_db(url)
    with store.fleet_db.connection_context():
        return store.Heartbeat.select().count()


def _stored(cluster: Any, url: str, keys: list[str]) -> int:
    """How many of `keys` the heartbeats table holds (each at most once: a unique index)."""
    from appliance.fleet import pgtemp

    conn = cluster.connect(pgtemp.database_of(url))
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT count(DISTINCT idempotency_key) FROM heartbeats "
                "WHERE idempotency_key = ANY(%s)",
                (keys,),
            )
            return int(cur.fetchone()[0])
    finally:
        conn.close()


if __name__ == "__main__":
    try:
        sys.exit(main())
    except queue.Empty:
        print("a client process gave no result", file=sys.stderr)
        sys.exit(0)
