"""Forwarding cost of our ruleset with 1000 conduits: TCP throughput and new connections/s.

`--bridge`: the same for bridge mode, in the bridge lab (IT host and PLC in one subnet, the
appliance's it0 and ot0 in one Linux bridge): our rendered bridge-mode ruleset with
br_netfilter on vs a bare Linux bridge (no table, br_netfilter's sysctls off), taking turns.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import nftables
from _common import (
    CONNECT_TIMEOUT,
    IT_HOST,
    PLC,
    Goal,
    NsThread,
    clear_tables,
    conduit,
    finish,
    fmt,
    lab,
    make_config,
    median,
    now,
    parser,
    result_of,
    rotations,
    start_worker,
)

from appliance.lab import topology
from appliance.lab.topology import BRIDGE_IT_HOST
from appliance.net.nft import Nft
from appliance.net.render import render
from appliance.proc import run

IPERF_PORT = 5201
BLOCKED_PORT = topology.OTHER_PORT  # the PLC listens there; no conduit allows it
# One connect/accept loop per CPU, each on its own port: the last conduits, so the last
# linear rules (the worst case for variant (d)).
CONN_PORTS = tuple(range(10998, 10998 - min(os.cpu_count() or 1, 4), -1))
SERVICES = [("tcp", IPERF_PORT), *(("tcp", p) for p in range(10000, 10999))]
VARIANTS = ("none", "bare", "ours", "linear")
# --explain: the bare ruleset plus, one at a time, what our rendered conduit sets carry.
LADDER = ("bare", "b+counter", "b+timeout", "b+interval", "b+interval/100", "b+ours-flags", "ours")
LABELS = {
    "none": "(a) no ruleset",
    "bare": "(b) bare: ct + 1 set lookup",
    "ours": "(c) ours, rendered",
    "linear": "(d) 1000 linear rules",
    "b+counter": "(b) + element counters",
    "b+timeout": "(b) + flags timeout",
    "b+interval": "(b) + flags interval",
    "b+interval/100": "(b) + interval, 100 elements",
    "b+ours-flags": "(b) + interval,timeout,counter",
    "bridge": "(a) bare bridge, no ruleset",
    "bridge-bare": "(b) br_netfilter + bare ct set",
    "bridge-ours": "(c) ours, bridge mode",
}
# (b) says what stateful filtering of a bridge costs by itself: br_netfilter and conntrack
# with the hand-written one-set ruleset, no table of ours
BRIDGE_VARIANTS = ("bridge", "bridge-bare", "bridge-ours")
BRIDGE_SYSCTLS = ("bridge-nf-call-iptables", "bridge-nf-call-ip6tables")
TPUT_SLOT = 0.6  # seconds per variant turn under the iperf3 stream (0.1 s intervals)
CONN_SLOT = 0.3  # seconds per variant turn under the connect/accept loops (0.01 s bins)
GUARD = 0.1  # seconds left out after each switch
TABLES = ("appliance", "bench")


# -- the rulesets -----------------------------------------------------------------------------


def _chain_head() -> str:
    return (
        "  chain forward {\n    type filter hook forward priority filter; policy drop;\n"
        "    ct state established,related accept\n"
    )


def bare_ruleset(
    services: Sequence[tuple[str, int]], flags: Sequence[str] = (), counter: bool = False
) -> str:
    """What a person would write by hand: one concatenated set, no counters, no extras."""
    elems = ",\n      ".join(f"{IT_HOST} . {PLC} . {proto} . {port}" for proto, port in services)
    extra = (f"    flags {','.join(flags)}\n" if flags else "") + (
        "    counter\n" if counter else ""
    )
    return (
        "table inet bench {\n"
        "  set s {\n    type ipv4_addr . ipv4_addr . inet_proto . inet_service\n"
        f"{extra}    elements = {{ {elems} }}\n  }}\n"
        f"{_chain_head()}"
        "    ip saddr . ip daddr . meta l4proto . th dport @s accept\n  }\n}\n"
    )


def linear_ruleset(services: Sequence[tuple[str, int]]) -> str:
    """One rule per conduit, in conduit order: the naive way."""
    rules = "".join(
        f"    ip saddr {IT_HOST} ip daddr {PLC} {proto} dport {port} accept\n"
        for proto, port in services
    )
    return f"table inet bench {{\n{_chain_head()}{rules}  }}\n}}\n"


def variant_texts() -> dict[str, str]:
    small = [*SERVICES[: 100 - len(CONN_PORTS)], *(("tcp", p) for p in CONN_PORTS)]
    return {
        "bare": bare_ruleset(SERVICES),
        "linear": linear_ruleset(SERVICES),
        "b+counter": bare_ruleset(SERVICES, counter=True),
        "b+timeout": bare_ruleset(SERVICES, ["timeout"]),
        "b+interval": bare_ruleset(SERVICES, ["interval"]),
        "b+interval/100": bare_ruleset(small, ["interval"]),
        "b+ours-flags": bare_ruleset(SERVICES, ["interval", "timeout"], counter=True),
    }


class Firewall:
    """Puts one variant at a time into the appliance namespace (nothing else is touched).

    Each switch is one transaction that also deletes the previous variant's table, so
    conntrack stays on between two variants that use it; with a gap between them, a
    handshake in flight at the switch could lose its SYN-ACK (untracked SYN, tracked reply).
    """

    def __init__(self, app: NsThread, config: Any) -> None:
        self._app = app
        drop = [{op: {"table": {"family": "inet", "name": "bench"}}} for op in ("add", "delete")]
        self._doc = {"nftables": [*drop, *render(config, now()).document()["nftables"]]}
        self._texts = variant_texts()
        self._raw = app.run(nftables.Nftables)  # created in the thread: its socket is in ns
        self._ours = app.run(Nft)

    def use(self, variant: str) -> None:
        self._app.run(self._use, variant)

    def _use(self, variant: str) -> None:
        if variant == "none":
            clear_tables(self._raw, ("bench", "appliance"))
        elif variant == "ours":
            self._ours.apply(self._doc)
        else:
            clear = "".join(f"add table inet {t}\ndelete table inet {t}\n" for t in TABLES)
            rc, _out, err = self._raw.cmd(clear + self._texts[variant])
            if rc != 0:
                raise RuntimeError(f"nft refused variant {variant}: {err.strip()}")


class BridgeFirewall:
    """Bridge mode's variants in the bridge lab's appliance namespace: `bridge` no table and
    br_netfilter's sysctls off (a bare Linux bridge), `bridge-bare` the sysctls on and the
    hand-written one-set ruleset, `bridge-ours` the sysctls on and our rendered document
    (inet and bridge tables) in one transaction."""

    def __init__(self, app: NsThread, config: Any) -> None:
        self._app = app
        drop = [{op: {"table": {"family": "inet", "name": "bench"}}} for op in ("add", "delete")]
        self._doc = {"nftables": [*drop, *render(config, now()).document()["nftables"]]}
        self._bare = bare_ruleset(SERVICES).replace(IT_HOST, BRIDGE_IT_HOST)
        self._raw = app.run(nftables.Nftables)
        self._ours = app.run(Nft)

    def use(self, variant: str) -> None:
        self._app.run(self._use, variant)

    def _use(self, variant: str) -> None:
        clear = "".join(
            f"add table {f} {t}\ndelete table {f} {t}\n"
            for f, t in (("inet", "appliance"), ("bridge", "appliance"), ("inet", "bench"))
        )
        if variant == "bridge-ours":
            _bridge_sysctls("1")
            self._ours.apply(self._doc)  # (deletes bench, replaces our tables)
            return
        text = clear + (self._bare if variant == "bridge-bare" else "")
        rc, _out, err = self._raw.cmd(text)
        if rc != 0:
            raise RuntimeError(f"nft refused variant {variant}: {err.strip()}")
        _bridge_sysctls("1" if variant == "bridge-bare" else "0")


def _bridge_sysctls(value: str) -> None:
    """br_netfilter's sysctls of the calling thread's namespace (/proc/sys/net is per
    namespace, taken from the thread that opens it)."""
    for name in BRIDGE_SYSCTLS:
        with open(f"/proc/sys/net/bridge/{name}", "w") as f:
            f.write(value + "\n")


def bridge_config(services: Sequence[tuple[str, int]]) -> Any:
    """The bridge lab's unit: it0 and ot0 bridged, no addresses, one conduit per service
    from the IT host (192.168.50.2) to the PLC."""
    from appliance.config.load import validate_data
    from appliance.lab.topology import IT_MAC, OT_MAC

    data = {
        "version": 1,
        "unit": {"name": "bench-bridge"},
        "interfaces": [
            {"name": "it0", "role": "it", "mac": IT_MAC},
            {"name": "ot0", "role": "ot", "mac": OT_MAC},
        ],
        "bridge": {"ports": ["it0", "ot0"]},
        "conduits": [
            {**conduit(n, proto, port), "from": [BRIDGE_IT_HOST]}
            for n, (proto, port) in enumerate(services)
        ],
    }
    return validate_data(data).config


@contextlib.contextmanager
def bridge_lab() -> Iterator[topology.LabSpec]:
    """The bridge lab (prefix bb, no management link) with br0 made as the net role makes it
    (spanning tree and multicast snooping off, it0 and ot0 its ports); always torn down."""
    root = Path(tempfile.mkdtemp(prefix="bench-bridge-"))
    spec = topology.LabSpec(prefix="bb", mgmt=False, bridge=True, root=root)
    try:
        topology.up(spec, progress=lambda s: print(f"  lab: {s}", flush=True))
        lines = ["link add br0 type bridge stp_state 0 mcast_snooping 0"]
        lines += [f"link set {nic} master br0" for nic in ("it0", "ot0")]
        lines += [f"link set {nic} up" for nic in ("it0", "ot0", "br0")]
        run(["ip", "-n", spec.ns_app, "-batch", "-"], input="\n".join(lines) + "\n")
        topology.ns_run(spec.ns_app, ["sysctl", "-q", "-w", "net.ipv6.conf.br0.disable_ipv6=1"])
        topology.wait_tcp(spec.ns_it, PLC, topology.MODBUS_PORT, timeout=10)
        yield spec
    finally:
        try:
            topology.down(spec)
        finally:
            shutil.rmtree(root, ignore_errors=True)


# -- slots: the variants take turns under one continuous load ----------------------------------
#
# The VM's CPUs change speed by a factor of two within seconds (other guests on the host), so
# separate runs of a few seconds per variant compare noise with noise. Instead one load runs
# throughout while the variants take short turns in rotated order; each slot's figure comes
# from the load's own time series, and ratios are taken within a rotation (a second or two).


@dataclass(frozen=True)
class Slot:
    rotation: int
    variant: str
    switched: float  # when the switch to this variant began
    start: float  # after the variant is in force and a guard time has passed
    end: float


Sample = tuple[float, float, float]  # (start, end, value) of one interval of a load's series
Rotations = list[dict[str, float]]  # per rotation: variant -> that slot's figure


def run_slots(
    fw: Firewall | BridgeFirewall,
    variants: Sequence[str],
    reps: int,
    length: float,
    deadline: float,
) -> list[Slot]:
    """Rotate the variants, `length` seconds each, while a load runs; stop before deadline."""
    slots: list[Slot] = []
    for rep, order in rotations(variants, reps):
        for v in order:
            if time.time() + length + 1 > deadline:
                print(f"    note: ran out of load time after {len(slots)} slots")
                return slots
            switched = time.time()
            fw.use(v)
            begun = time.time()
            time.sleep(length)
            slots.append(Slot(rep, v, switched, begun + GUARD, time.time()))
    return slots


def slot_means(slots: list[Slot], samples: list[Sample]) -> list[float]:
    """The mean of the samples lying wholly inside each slot (NaN when none does)."""
    out = []
    for sl in slots:
        inside = [x for a, b, x in samples if a >= sl.start and b <= sl.end]
        out.append(sum(inside) / len(inside) if inside else float("nan"))
    return out


def by_rotation(slots: list[Slot], values: list[float]) -> Rotations:
    out: Rotations = [{} for _ in range(max((sl.rotation for sl in slots), default=-1) + 1)]
    for sl, x in zip(slots, values, strict=True):
        if x == x:
            out[sl.rotation][sl.variant] = x
    return out


def variant_median(rots: Rotations, v: str) -> float:
    return median([r[v] for r in rots if v in r])


def paired_ratio(rots: Rotations, v: str, base: str) -> float:
    """Median over rotations of v's figure over base's figure in the same rotation."""
    return median([r[v] / r[base] for r in rots if v in r and r.get(base)])


# -- the loads --------------------------------------------------------------------------------


def start_iperf_server(spec: topology.LabSpec) -> None:
    topology.spawn(spec, spec.ns_ot, "iperf3", ["iperf3", "-s", "-B", PLC, "-p", str(IPERF_PORT)])
    for _ in range(100):
        cp = topology.ns_run(spec.ns_ot, ["ss", "-Hltn", f"sport = :{IPERF_PORT}"])
        if cp.stdout.strip():
            return
        time.sleep(0.05)
    raise RuntimeError("iperf3 -s does not listen")


_INTERVAL = re.compile(r"\]\s+([\d.]+)-([\d.]+)\s+sec\s.*?([\d.]+) Mbits/sec")


def _iperf_samples(lines: list[tuple[float, str]]) -> list[Sample]:
    """Gbit/s per 0.1 s interval, placed in time by when its line arrived (flushed at its end)."""
    parsed = []
    for arrived, line in lines:
        m = _INTERVAL.search(line)
        if m and "sender" not in line and "receiver" not in line:
            parsed.append((arrived, float(m[1]), float(m[2]), float(m[3]) / 1000))
    if not parsed:
        raise RuntimeError("iperf3 printed no intervals: " + " | ".join(x for _, x in lines[-3:]))
    t0 = min(arrived - end for arrived, _s, end, _x in parsed)
    return [(t0 + s, t0 + e, x) for _a, s, e, x in parsed]


def _read_lines(proc: subprocess.Popen[str], out: list[tuple[float, str]]) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        out.append((time.time(), line))


def throughput(
    spec: topology.LabSpec,
    fw: Firewall | BridgeFirewall,
    reps: int,
    variants: Sequence[str] = VARIANTS,
) -> Rotations:
    """One iperf3 TCP stream IT host → PLC while the variants take turns: Gbit/s per slot."""
    budget = reps * len(variants) * (TPUT_SLOT + 0.5) + 5
    argv = ["iperf3", "-c", PLC, "-p", str(IPERF_PORT), "-t", str(round(budget)), "-i", "0.1"]
    argv += ["--forceflush", "-f", "m", "--connect-timeout", "3000"]
    proc = subprocess.Popen(
        ["ip", "netns", "exec", spec.ns_it, *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[tuple[float, str]] = []
    reader = threading.Thread(target=_read_lines, args=(proc, lines), daemon=True)
    reader.start()
    try:
        time.sleep(1.0)  # connection up, slow start over
        slots = run_slots(fw, variants, reps, TPUT_SLOT, time.time() + budget - 1)
    finally:
        proc.terminate()  # our own child, by its pid; it would stop by itself at -t anyway
        proc.wait(10)
        reader.join(5)
    return by_rotation(slots, slot_means(slots, _iperf_samples(lines)))


@dataclass
class Connections:
    """Connections/s per turn, and per variant the connects given up (a SYN lost) in its turns."""

    rotations: Rotations
    lost: dict[str, int]


def connection_rate(
    spec: topology.LabSpec, fw: Firewall | BridgeFirewall, variants: Sequence[str], reps: int
) -> Connections:
    """New TCP connections/s from one connect/accept loop per CPU while the variants take turns."""
    budget = reps * len(variants) * (CONN_SLOT + 0.5) + 5
    cpus = os.cpu_count() or 1
    workers = [
        start_worker(spec.ns_ot, "tcp-crr", PLC, port, spec.ns_it, budget, cpu=i % cpus)
        for i, port in enumerate(CONN_PORTS)
    ]
    try:
        time.sleep(1.0)
        slots = run_slots(fw, variants, reps, CONN_SLOT, time.time() + budget - 1)
    finally:
        for w in workers:
            w.terminate()  # our own children, by pid: they print their series and exit
        results = [result_of(w, 15) for w in workers]
    rates = [
        slot_means(slots, [(a, b, n / r["bin"]) for a, b, n in _series(r, "counts")])
        for r in results
    ]
    lost = dict.fromkeys(variants, 0)
    for r in results:
        fails = _series(r, "fails")
        for sl in slots:  # from the start of the switch on: losses during the apply count
            lost[sl.variant] += sum(n for a, _b, n in fails if sl.switched <= a < sl.end)
    return Connections(by_rotation(slots, [sum(xs) for xs in zip(*rates, strict=True)]), lost)


def _series(result: dict[str, Any], key: str) -> list[tuple[float, float, int]]:
    """A loop's per-bin counts as (start, end, count)."""
    t0, dt = result["start"], result["bin"]
    return [(t0 + i * dt, t0 + (i + 1) * dt, n) for i, n in enumerate(result[key])]


def probe(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def check_blocks(it: NsThread, variant: str) -> None:
    """The variant is really in force: a port no conduit allows is (not) reachable."""
    reached = it.run(probe, PLC, BLOCKED_PORT)
    if reached != (variant in ("none", "bridge")):
        raise RuntimeError(f"variant {variant}: tcp/{BLOCKED_PORT} reachable={reached}; wrong ns?")


# -- main -------------------------------------------------------------------------------------


@dataclass
class Runs:
    gbps: Rotations
    conns: Connections
    ladder: Connections | None = None


def measure(spec: topology.LabSpec, reps: tuple[int, int]) -> Runs:
    config = make_config(SERVICES)
    app, it = NsThread(spec.ns_app), NsThread(spec.ns_it)
    try:
        fw = Firewall(app, config)
        for v in dict.fromkeys([*VARIANTS, *LADDER]):
            fw.use(v)
            check_blocks(it, v)
        start_iperf_server(spec)
        print(f"  throughput: one iperf3 stream, {reps[0]} rotations of {TPUT_SLOT} s turns")
        gbps = throughput(spec, fw, reps[0])
        print(f"  connections: {len(CONN_PORTS)} connect/accept loops, {reps[1]} rotations"
              f" of {CONN_SLOT} s turns")  # fmt: skip
        conns = connection_rate(spec, fw, VARIANTS, reps[1])
        fw.use("none")
    finally:
        app.close()
        it.close()
    return Runs(gbps, conns)


def measure_bridge(spec: topology.LabSpec, reps: tuple[int, int]) -> Runs:
    app, it = NsThread(spec.ns_app), NsThread(spec.ns_it)
    try:
        fw = BridgeFirewall(app, bridge_config(SERVICES))
        for v in BRIDGE_VARIANTS:
            fw.use(v)
            check_blocks(it, v)
        start_iperf_server(spec)
        print(f"  throughput: one iperf3 stream, {reps[0]} rotations of {TPUT_SLOT} s turns")
        gbps = throughput(spec, fw, reps[0], BRIDGE_VARIANTS)
        print(f"  connections: {len(CONN_PORTS)} connect/accept loops, {reps[1]} rotations"
              f" of {CONN_SLOT} s turns")  # fmt: skip
        conns = connection_rate(spec, fw, BRIDGE_VARIANTS, reps[1])
        fw.use("bridge")
    finally:
        app.close()
        it.close()
    return Runs(gbps, conns)


def measure_ladder(spec: topology.LabSpec, reps: int) -> Connections:
    """Connections/s of the bare ruleset with our conduit set's properties added one by one."""
    app = NsThread(spec.ns_app)
    try:
        fw = Firewall(app, make_config(SERVICES))
        ladder = connection_rate(spec, fw, LADDER, reps)
        fw.use("none")
    finally:
        app.close()
    return ladder


def _spread(rots: Rotations, v: str) -> str:
    xs = [r[v] for r in rots if v in r]
    if len(xs) < 4:
        return f"n={len(xs)}"
    q = statistics.quantiles(xs, n=4)
    return f"turns IQR {fmt(q[0])}..{fmt(q[2])}, n={len(xs)}"


def _table(
    name: str, rots: Rotations, unit: str, variants: Sequence[str], bases: Sequence[str]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for v in variants:
        med = variant_median(rots, v)
        ratios = {b: paired_ratio(rots, v, b) for b in bases}
        out[f"{name}.{v}"] = {"median": med, **{f"x_{b}": r for b, r in ratios.items()}}
        cols = "".join(
            f" {r:6.3f} x{'(a)' if b in ('none', 'bridge') else '(b)'}" for b, r in ratios.items()
        )
        print(f"  {LABELS[v]:<31} {fmt(med):>7} {unit}{cols}   ({_spread(rots, v)})")
    return out


def _lost(c: Connections) -> None:
    turns = Counter(v for r in c.rotations for v in r)
    lost = ", ".join(f"{LABELS[v]} {n}/{turns[v]}" for v, n in c.lost.items())
    print(
        f"  connects given up after {CONNECT_TIMEOUT * 1000:.0f} ms (SYN lost), per turns: {lost}"
    )


def summary(runs: Runs) -> dict[str, Any]:
    """Print medians and ratios; return them (ratios are medians of within-rotation ratios)."""
    print("\n== forwarding: medians over turns; ratios = median of within-rotation ratios")
    out = _table("gbps", runs.gbps, "Gbit/s", VARIANTS, ("none",))
    print()
    out |= _table("conns", runs.conns.rotations, "conn/s", VARIANTS, ("none", "bare"))
    _lost(runs.conns)
    if runs.ladder:
        print("\n  explain: what in our conduit set costs new connections")
        out |= _table("ladder", runs.ladder.rotations, "conn/s", LADDER, ("bare",))
        _lost(runs.ladder)
    return out


def main() -> int:
    p = parser(__doc__)
    p.add_argument(
        "--explain",
        action="store_true",
        help="also measure the conduit set's flags one at a time (done anyway when the"
        " connection goal fails in a full run)",
    )
    p.add_argument(
        "--bridge",
        action="store_true",
        help="bridge mode instead: ours vs a bare Linux bridge, in the bridge lab",
    )
    args = p.parse_args()
    reps = (3, 4) if args.quick else (30, 60)
    if args.bridge:
        return main_bridge(args, reps)
    ladder_reps = 4 if args.quick else 30
    print(f"forwarding: {len(SERVICES)} conduits; variants {', '.join(VARIANTS)} take turns")
    with lab() as spec:
        runs = measure(spec, reps)
        failed = paired_ratio(runs.conns.rotations, "ours", "bare") < 0.95
        if args.explain or (failed and not args.quick):
            print(f"  explain: the conduit set's flags one at a time, {ladder_reps} rotations")
            runs.ladder = measure_ladder(spec, ladder_reps)
    fig = summary(runs)
    t, t0, c, c0 = (fig[k] for k in ("gbps.ours", "gbps.none", "conns.ours", "conns.bare"))
    goals = [
        Goal(
            "throughput, ours (c) vs no ruleset (a)",
            t["median"], 0.95, True, t0["median"], " Gbit/s", t["x_none"],
        ),
        Goal(
            "new connections/s, ours (c) vs bare set (b)",
            c["median"], 0.95, True, c0["median"], " conn/s", c["x_bare"],
        ),
    ]  # fmt: skip
    figures = {"summary": fig, "rotations": reps, "runs": asdict(runs)}
    return finish("forwarding", goals, figures, args.json)


def main_bridge(args: Any, reps: tuple[int, int]) -> int:
    print(
        f"forwarding, bridge mode: {len(SERVICES)} conduits;"
        f" {', '.join(BRIDGE_VARIANTS)} take turns"
    )
    with bridge_lab() as spec:
        runs = measure_bridge(spec, reps)
    print(
        "\n== forwarding, bridge mode: medians over turns;"
        " ratios = median of within-rotation ratios"
    )
    fig = _table("gbps", runs.gbps, "Gbit/s", BRIDGE_VARIANTS, ("bridge", "bridge-bare"))
    print()
    bases = ("bridge", "bridge-bare")
    fig |= _table("conns", runs.conns.rotations, "conn/s", BRIDGE_VARIANTS, bases)
    _lost(runs.conns)
    t, t0 = fig["gbps.bridge-ours"], fig["gbps.bridge"]
    c, c0 = fig["conns.bridge-ours"], fig["conns.bridge"]
    goals = [
        Goal(
            "bridge throughput, ours vs a bare bridge",
            t["median"], 0.95, True, t0["median"], " Gbit/s", t["x_bridge"],
        ),
        Goal(
            "bridge new connections/s, ours vs a bare bridge",
            c["median"], 0.9, True, c0["median"], " conn/s", c["x_bridge"],
        ),
    ]  # fmt: skip
    figures = {"summary": fig, "rotations": reps, "runs": asdict(runs)}
    return finish("forwarding-bridge", goals, figures, args.json)


if __name__ == "__main__":
    sys.exit(main())
