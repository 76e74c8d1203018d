"""Shared pieces of the benchmarks: the lab, configurations, namespace threads, workers, report."""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import ctypes
import json
import math
import os
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

HERE = Path(__file__).resolve()
PREFIX = "b"
IT_HOST = "10.10.0.2"
PLC = "192.168.50.10"
APP_NICS = {"it0": "10.10.0.1/24", "ot0": "192.168.50.1/24"}
BIN = 0.01  # seconds: the resolution of the workers' time series
CONNECT_TIMEOUT = 0.05  # seconds; a handshake in the lab takes well under a millisecond
_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


# -- command line and report ----------------------------------------------------------------


def parser(doc: str | None) -> argparse.ArgumentParser:
    """The options every benchmark has; a script may add its own before parsing."""
    p = argparse.ArgumentParser(description=doc)
    p.add_argument("--quick", action="store_true", help="a short smoke run (noisy figures)")
    p.add_argument("--json", type=Path, metavar="FILE", help="also write the results as JSON")
    return p


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def pct(values: Sequence[float], q: int) -> float:
    """The q-th percentile (inclusive method); NaN for fewer than two values."""
    if len(values) < 2:
        return float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def wait_for(pred: Callable[[], T], timeout: float, what: str, every: float = 0.1) -> T:
    """`pred()`'s first true answer, asked every `every` seconds; SystemExit after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(every)
    raise SystemExit(f"timed out waiting for {what}")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (just now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Goal:
    """One goal: a figure, optionally a baseline from the same run, and the limit it must meet.

    With a baseline the ratio is compared to `limit`, else the figure itself. The ratio is
    value/baseline unless `paired` gives it: the median of ratios taken turn by turn.
    """

    name: str
    value: float
    limit: float
    at_least: bool
    baseline: float | None = None
    unit: str = ""
    paired: float | None = None

    @property
    def ratio(self) -> float | None:
        if self.paired is not None:
            return self.paired
        return None if not self.baseline else self.value / self.baseline

    @property
    def passed(self) -> bool:
        x = self.value if self.baseline is None else self.ratio
        if x is None or x != x:  # no baseline or NaN
            return False
        return x >= self.limit if self.at_least else x <= self.limit

    def line(self) -> str:
        op = ">=" if self.at_least else "<="
        verdict = "PASS" if self.passed else "FAIL"
        if self.baseline is None:
            body = f"{fmt(self.value)}{self.unit} (goal {op} {fmt(self.limit)}{self.unit})"
        else:
            how = " (median of paired turns)" if self.paired is not None else ""
            body = (
                f"{fmt(self.value)}{self.unit} vs baseline {fmt(self.baseline)}{self.unit}:"
                f" ratio {self.ratio:.3f}{how} (goal {op} {self.limit:g})"
            )
        return f"{verdict}  {self.name}: {body}"


def fmt(x: float) -> str:
    if x != x:
        return "nan"
    if float(x).is_integer():
        return f"{int(x):,}"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    if abs(x) >= 1:
        return f"{x:.2f}"
    return f"{x:.4f}"


def finish(title: str, goals: list[Goal], figures: dict[str, Any], path: Path | None) -> int:
    """Print the goals; write everything to path as JSON when asked. Always exit status 0."""
    print(f"\n== {title}: goals")
    for g in goals:
        print("  " + g.line())
    failed = [g.name for g in goals if not g.passed]
    print(f"  {'ALL GOALS MET' if not failed else 'FAILED: ' + '; '.join(failed)}")
    if path is not None:
        doc = {
            "benchmark": title,
            "when": datetime.now(UTC).isoformat(timespec="seconds"),
            "figures": figures,
            "goals": [{**asdict(g), "ratio": g.ratio, "passed": g.passed} for g in goals],
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"  results written to {path}")
    return 0


def rotations(variants: Sequence[T], reps: int) -> Iterator[tuple[int, list[T]]]:
    """(rep, order) with the order rotated every repetition, so drift hits every variant alike."""
    for rep in range(reps):
        k = rep % len(variants)
        yield rep, [*variants[k:], *variants[:k]]


# -- configurations -------------------------------------------------------------------------


def conduit(n: int, proto: str, port: int) -> dict[str, Any]:
    return {
        "name": f"c{n:05d}",
        "owner": "bench",
        "reason": "benchmark",
        "from": [IT_HOST],
        "to": [PLC],
        "services": [f"{proto}/{port}"],
    }


def config_data(services: Sequence[tuple[str, int]]) -> dict[str, Any]:
    """The demo's IT and OT interfaces and one conduit IT host → PLC per (proto, port)."""
    from appliance.lab.topology import IT_MAC, OT_MAC

    return {
        "version": 1,
        "unit": {"name": "bench"},
        "interfaces": [
            {"name": "it0", "role": "it", "mac": IT_MAC, "addresses": [APP_NICS["it0"]]},
            {"name": "ot0", "role": "ot", "mac": OT_MAC, "addresses": [APP_NICS["ot0"]]},
        ],
        "conduits": [conduit(n, proto, port) for n, (proto, port) in enumerate(services)],
    }


def make_config(services: Sequence[tuple[str, int]]) -> Any:
    """A validated Config (the same validation a commit goes through)."""
    from appliance.config.load import validate_data

    return validate_data(config_data(services)).config


def now() -> datetime:
    return datetime.now(UTC)


# -- the lab --------------------------------------------------------------------------------


@contextlib.contextmanager
def lab() -> Iterator[Any]:
    """The lab (prefix b, no management link) with the appliance's NICs up; always torn down."""
    from appliance.lab import topology

    root = Path(tempfile.mkdtemp(prefix="bench-lab-"))
    spec = topology.LabSpec(prefix=PREFIX, mgmt=False, root=root)
    try:
        topology.up(spec, progress=lambda s: print(f"  lab: {s}", flush=True))
        _appliance_nics(spec.ns_app)
        topology.wait_tcp(spec.ns_it, PLC, topology.MODBUS_PORT, timeout=10)
        yield spec
    finally:
        try:
            topology.down(spec)
        finally:
            shutil.rmtree(root, ignore_errors=True)


def _appliance_nics(ns: str) -> None:
    """What the net role would do: addresses, links up, forwarding on (inside ns only)."""
    from appliance.lab.topology import ns_run
    from appliance.proc import run

    lines = [f"addr add {a} dev {nic}" for nic, a in APP_NICS.items()]
    lines += [f"link set {nic} up" for nic in APP_NICS]
    run(["ip", "-n", ns, "-batch", "-"], input="\n".join(lines) + "\n")
    ns_run(ns, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])


def _setns(ns: str) -> None:
    """Move the calling thread into ns and check that it got there."""
    target = Path("/run/netns") / ns
    with open(target, "rb") as f:
        if _libc.setns(f.fileno(), _CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns {ns}: {os.strerror(err)}")
    if os.stat("/proc/thread-self/ns/net").st_ino != os.stat(target).st_ino:
        raise RuntimeError(f"thread is not in namespace {ns}; refusing to go on")


def _join_netns(ns: str) -> None:
    """A helper thread joins ns; the main thread (and /proc/self) stays in the host's namespace."""
    _setns(ns)
    if os.stat("/proc/thread-self/ns/net").st_ino == os.stat("/proc/self/ns/net").st_ino:
        raise RuntimeError(f"{ns} is the host's own namespace; refusing to go on")


class NsThread:
    """One thread living in a network namespace; run(fn) calls fn there and returns its value.

    Sockets (netlink ones of libnftables included) made by fn belong to that namespace.
    """

    def __init__(self, ns: str) -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix=f"ns-{ns}", initializer=_join_netns, initargs=(ns,)
        )

    def run(self, fn: Callable[..., T], *args: Any) -> T:
        return self._pool.submit(fn, *args).result()

    def close(self) -> None:
        self._pool.shutdown(wait=True)


def clear_tables(nft: Any, tables: Sequence[str]) -> None:
    """Delete these inet tables if present (add-then-delete: one transaction, no error)."""
    text = "".join(f"add table inet {t}\ndelete table inet {t}\n" for t in tables)
    rc, _out, err = nft.cmd(text)
    if rc != 0:
        raise RuntimeError(f"nft: {err.strip()}")


# -- workers: small processes run in a lab namespace ----------------------------------------


def worker_argv(ns: str, role: str, *args: object, cpu: int | None = None) -> list[str]:
    """argv running `role` of this file inside ns (on one CPU if given); execs, same pid."""
    pin = ["taskset", "-c", str(cpu)] if cpu is not None else []
    return [*pin, "ip", "netns", "exec", ns, sys.executable, str(HERE), role, *map(str, args)]


def start_worker(
    ns: str, role: str, *args: object, cpu: int | None = None
) -> subprocess.Popen[str]:
    argv = worker_argv(ns, role, *args, cpu=cpu)
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_ready(proc: subprocess.Popen[str]) -> None:
    """Wait for the worker's `ready` line (its socket is bound); workers end by themselves."""
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line.strip() != "ready":
        err = proc.stderr.read() if proc.stderr else ""
        raise RuntimeError(f"worker not ready: {line.strip()!r} {err.strip()}")


def result_of(proc: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
    """The worker's last stdout line as JSON; kills it (by its own pid) if it overstays."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise RuntimeError(f"worker {proc.args!r} did not stop within {timeout} s")
    lines = out.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"worker {proc.args!r} failed ({proc.returncode}): {err.strip()}")
    return json.loads(lines[-1])


def _sleep_until(t: float) -> None:
    delay = t - time.time()
    if delay > 0:
        time.sleep(delay)


def tcp_crr(host: str, port: int, client_ns: str, max_seconds: float) -> None:
    """Connect, accept, reset, in one thread: listener here (OT host), client in client_ns.

    One process does both ends, so no wake-up of another process (and no scheduler noise
    between CPUs) sits in the loop: what is left is the kernel's work per connection,
    the appliance's forward chain among it, plus a fixed Python overhead. Runs until
    SIGTERM (or max_seconds), then prints per BIN how many connections completed and how
    many connects gave up after CONNECT_TIMEOUT (a SYN or SYN-ACK lost: the kernel would
    resend it only after a second).

    The client, not the server, resets each connection. The loop reuses source ports within
    a second, while conntrack keeps a reset entry for 10 s; a SYN on such an entry counts as
    new (and meets the forward chain's conduit lookup) only when the last packet of the old
    connection was a reset in the same direction. With the server resetting instead, about
    half the SYNs were taken for `established` and never reached the conduit lookup.
    """
    signal.alarm(max(1, round(max_seconds + 5)))  # the last resort: bounded even if lost
    stop: list[int] = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((host, port))
    ls.listen(1024)
    _setns(client_ns)  # from here on new sockets are the IT host's
    linger = struct.pack("ii", 1, 0)
    counts = [0] * math.ceil(max_seconds / BIN)
    fails = [0] * len(counts)
    start = time.time()
    while not stop and (i := int((time.time() - start) / BIN)) < len(counts):
        c = socket.socket()
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)  # close = reset
        c.settimeout(CONNECT_TIMEOUT)
        try:
            c.connect((host, port))
        except OSError:
            c.close()
            fails[i] += 1
            continue
        s, _ = ls.accept()
        c.close()  # a reset from the client, see above
        s.close()
        counts[i] += 1
    last = min(len(counts), int((time.time() - start) / BIN))
    print(json.dumps({"start": start, "bin": BIN, "counts": counts[:last], "fails": fails[:last]}))


SEQ = struct.Struct("!Q")


def udp_send(host: str, port: int, rate: float, start_at: float, seconds: float) -> None:
    """`rate` datagrams a second with sequence numbers 0.., on a fixed schedule; print counts."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    total = int(rate * seconds)
    pad = b"\0" * 56
    sent = errors = 0
    worst_lag = 0.0
    _sleep_until(start_at)
    for seq in range(total):
        due = start_at + seq / rate
        lag = time.time() - due
        if lag < 0:
            time.sleep(-lag)
        worst_lag = max(worst_lag, lag)
        try:
            s.sendto(SEQ.pack(seq) + pad, (host, port))
            sent += 1
        except OSError:
            errors += 1
    print(json.dumps({"total": total, "sent": sent, "errors": errors, "worst_lag": worst_lag}))


def udp_recv(host: str, port: int, total: int, until: float) -> None:
    """Count which of datagrams 0..total-1 arrive before `until`; print losses as ranges."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.bind((host, port))
    s.settimeout(0.2)
    print("ready", flush=True)
    seen = bytearray(total)
    arrived = dupes = 0
    while arrived < total and time.time() < until:
        try:
            data = s.recv(2048)
        except TimeoutError:
            continue
        seq = SEQ.unpack_from(data)[0]
        if seq < total:
            dupes += seen[seq]
            arrived += 1 - seen[seq]
            seen[seq] = 1
    missing = _ranges([i for i in range(total) if not seen[i]])
    print(json.dumps({"received": arrived, "lost": total - arrived, "dupes": dupes,
                      "missing": missing[:20]}))  # fmt: skip


def _ranges(xs: list[int]) -> list[list[int]]:
    out: list[list[int]] = []
    for x in xs:
        if out and out[-1][1] == x - 1:
            out[-1][1] = x
        else:
            out.append([x, x])
    return out


WORKERS: dict[str, Callable[..., None]] = {
    "tcp-crr": lambda h, p, ns, s: tcp_crr(h, int(p), ns, float(s)),
    "udp-send": lambda h, p, r, t0, s: udp_send(h, int(p), float(r), float(t0), float(s)),
    "udp-recv": lambda h, p, n, until: udp_recv(h, int(p), int(n), float(until)),
}


if __name__ == "__main__":
    WORKERS[sys.argv[1]](*sys.argv[2:])
