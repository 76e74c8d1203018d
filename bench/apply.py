"""Applying a configuration: render + apply vs raw libnftables, and loss while re-applying."""

from __future__ import annotations

import copy
import json
import resource
import sys
import time
from typing import Any

import nftables
from _common import (
    PLC,
    Goal,
    NsThread,
    finish,
    lab,
    make_config,
    median,
    now,
    parser,
    result_of,
    rotations,
    start_worker,
    wait_ready,
)

from appliance.lab import topology
from appliance.net.nft import Nft
from appliance.net.render import render

SIZES = (1000, 10000)
UDP_PORT = 9000
UDP_RATE = 1000  # datagrams a second
SYN_PORTS = (10998, 10997)  # conduits among the first 1000
REAPPLY_EVERY = 1.0  # seconds
LIMIT_S = 0.15  # the goal for render + apply of the largest size
OPS = ("ours", "raw", "render", "check", "list")
# --explain: the same document with the conduit sets' flags changed, applied raw.
SET_VARIANTS: dict[str, tuple[list[str], bool]] = {
    "as rendered: interval,timeout + counters": (["interval", "timeout"], True),
    "without element counters": (["interval", "timeout"], False),
    "without flag timeout": (["interval"], True),
    "without flag interval (hash set)": (["timeout"], True),
    "hash set, no timeout, no counters": ([], False),
}
LABELS = {
    "render": "render()",
    "check": "check (dry run)",
    "ours": "ours render+apply",
    "raw": "raw json_cmd",
    "list": "list_table()",
}


def services(n: int) -> list[tuple[str, int]]:
    """n distinct services IT host → PLC: the UDP flow's port and tcp/10000 upwards."""
    return [("udp", UDP_PORT), *(("tcp", 10000 + i) for i in range(n - 1))]


class Applier:
    """Both paths to the kernel, made (and only ever used) in the appliance's namespace."""

    def __init__(self) -> None:
        self.ours = Nft()
        self.raw = nftables.Nftables()

    def timed(self, op: str, config: Any, doc: dict[str, Any]) -> float:
        t0 = time.perf_counter()
        if op == "ours":
            self.ours.apply(render(config, now()).document())
        elif op == "raw":
            rc, _out, err = self.raw.json_cmd(doc)
            if rc != 0:
                raise RuntimeError(f"libnftables refused the document: {err.strip()}")
        elif op == "render":
            render(config, now())
        elif op == "list":  # the read-back the net role does every second (counters)
            self.ours.list_table()
        else:
            self.ours.apply(doc, check_only=True)
        return time.perf_counter() - t0

    def raw_split(self, doc: dict[str, Any]) -> tuple[float, float, float]:
        """Raw apply: seconds of wall clock, user and system (kernel) time of this thread."""
        r0, t0 = resource.getrusage(resource.RUSAGE_THREAD), time.perf_counter()
        rc, _out, err = self.raw.json_cmd(doc)
        wall, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_THREAD)
        if rc != 0:
            raise RuntimeError(f"libnftables refused the document: {err.strip()}")
        return wall, r1.ru_utime - r0.ru_utime, r1.ru_stime - r0.ru_stime


# -- render + apply ---------------------------------------------------------------------------


def apply_times(app: NsThread, applier: Applier, reps: int) -> dict[int, list[dict[str, float]]]:
    """Per size, per repetition: seconds of each operation, their order rotated every time."""
    out: dict[int, list[dict[str, float]]] = {}
    for n in SIZES:
        config = make_config(services(n))
        doc = render(config, now()).document()
        print(f"  {n:,} conduits: {len(json.dumps(doc)) / 1e6:.1f} MB of JSON", flush=True)
        app.run(applier.timed, "ours", config, doc)  # the table exists: every apply replaces it
        rows = []
        for _rep, order in rotations(OPS, reps):
            rows.append({op: app.run(applier.timed, op, config, doc) for op in order})
        out[n] = rows
    return out


def apply_summary(times: dict[int, list[dict[str, float]]]) -> dict[str, Any]:
    print("\n== apply: medians in seconds (ours/raw = median of the ratios within a repetition)")
    print("  conduits " + "".join(f"{LABELS[op]:>18}" for op in OPS) + "    ours/raw")
    out: dict[str, Any] = {}
    for n, rows in times.items():
        med = {op: median([r[op] for r in rows]) for op in OPS}
        ratio = median([r["ours"] / r["raw"] for r in rows])
        out[str(n)] = {**med, "ours_over_raw": ratio, "reps": len(rows)}
        print(f"  {n:>8,} " + "".join(f"{med[op]:>18.4f}" for op in OPS) + f"    {ratio:8.3f}")
    return out


# -- what costs: the conduit sets' flags --------------------------------------------------------


def with_set_flags(doc: dict[str, Any], flags: list[str], counter: bool) -> dict[str, Any]:
    """The document with every conduit set (c_*, p_*) given these flags, counters or not."""
    out = copy.deepcopy(doc)
    for cmd in out["nftables"]:
        s = cmd.get("add", {}).get("set")
        if s and s["name"].startswith(("c_", "p_")):
            s.pop("flags", None)
            s.pop("stmt", None)
            if flags:
                s["flags"] = flags
            if counter:
                s["stmt"] = [{"counter": None}]
    return out


def explain(app: NsThread, applier: Applier, reps: int) -> dict[str, Any]:
    """Raw apply of each size with the conduit sets' flags varied: wall, user, system time."""
    print("\n== apply, explained: raw json_cmd of the same document, conduit set flags varied")
    print(f"  {'conduits':>8}  {'conduit sets':<42} {'wall s':>8} {'user s':>8} {'system s':>9}")
    out: dict[str, Any] = {}
    for n in SIZES:
        doc = render(make_config(services(n)), now()).document()
        docs = {name: with_set_flags(doc, *v) for name, v in SET_VARIANTS.items()}
        runs: dict[str, list[tuple[float, float, float]]] = {name: [] for name in docs}
        for _rep, order in rotations(list(docs), reps + 1):
            for name in order:
                runs[name].append(app.run(applier.raw_split, docs[name]))
        for name, rs in runs.items():
            wall, user, system = (median([r[k] for r in rs[1:]]) for k in range(3))
            out[f"{n}:{name}"] = {"wall": wall, "user": user, "system": system}
            print(f"  {n:>8,}  {name:<42} {wall:8.3f} {user:8.3f} {system:9.3f}")
    app.run(applier.timed, "raw", None, doc)  # leave the table as rendered
    return out


# -- loss while re-applying -------------------------------------------------------------------


def udp_loss(spec: topology.LabSpec, app: NsThread, applier: Applier, seconds: float) -> dict:
    """A fixed-rate UDP flow IT host → PLC while our path re-applies 10k conduits every second."""
    config = make_config(services(SIZES[-1]))
    app.run(applier.timed, "ours", config, {})
    total = int(UDP_RATE * seconds)
    start_at = time.time() + 1.0
    recv = start_worker(spec.ns_ot, "udp-recv", PLC, UDP_PORT, total, start_at + seconds + 3)
    wait_ready(recv)
    send = start_worker(spec.ns_it, "udp-send", PLC, UDP_PORT, UDP_RATE, start_at, seconds)
    applies: list[float] = []
    due, end = start_at + REAPPLY_EVERY / 2, start_at + seconds
    # every second, or back to back when an apply takes longer; each one within the flow
    while max(due, time.time()) + (applies[-1] if applies else 0) < end:
        time.sleep(max(0.0, due - time.time()))
        applies.append(app.run(applier.timed, "ours", config, {}))
        due += REAPPLY_EVERY
    sent, got = result_of(send, seconds + 10), result_of(recv, seconds + 10)
    print(
        f"  udp: {got['received']:,} of {total:,} datagrams arrived, {got['lost']} lost"
        f" (send errors {sent['errors']}, sender lag up to {sent['worst_lag'] * 1000:.0f} ms);"
        f" {len(applies)} re-applies in {seconds:g} s, {median(applies):.3f} s median each"
    )
    if got["missing"]:
        print(f"  udp: missing sequence ranges (first 20): {got['missing']}")
    return {"sent": sent, "received": got, "applies": applies}


# -- new connections during re-applies (informative) -------------------------------------------


def syn_loss(spec: topology.LabSpec, app: NsThread, applier: Applier, seconds: float) -> dict:
    """Connect/accept loops while 1000 conduits are re-applied 4 times a second, our document
    against the same one with hash sets: how many connects gave up because a SYN was lost.
    """
    config = make_config(services(SIZES[0]))
    doc = render(config, now()).document()
    docs = {"ours": doc, "hash sets": with_set_flags(doc, ["timeout"], True)}
    out: dict[str, dict[str, int]] = {
        name: {"applies": 0, "lost": 0, "connections": 0} for name in docs
    }
    for _rep, order in rotations(list(docs), 2):
        for name in order:
            app.run(applier.timed, "raw", None, docs[name])
            workers = [
                start_worker(spec.ns_ot, "tcp-crr", PLC, port, spec.ns_it, seconds / 2 + 5, cpu=i)
                for i, port in enumerate(SYN_PORTS)
            ]
            end = time.time() + seconds / 2
            while time.time() < end:
                app.run(applier.timed, "raw", None, docs[name])
                out[name]["applies"] += 1
                time.sleep(0.25)
            for w in workers:
                w.terminate()
            for r in (result_of(w, 15) for w in workers):
                out[name]["lost"] += sum(r["fails"])
                out[name]["connections"] += sum(r["counts"])
    for name, o in out.items():
        print(f"  connections, {name}: {o['lost']} SYNs lost of {o['connections']:,} connections"
              f" during {o['applies']} re-applies of {SIZES[0]:,} conduits")  # fmt: skip
    return out


# -- main -------------------------------------------------------------------------------------


def main() -> int:
    p = parser(__doc__)
    p.add_argument(
        "--explain",
        action="store_true",
        help="also apply the documents with the conduit sets' flags varied (done anyway"
        " when the time goal fails in a full run)",
    )
    args = p.parse_args()
    reps, seconds = (3, 3.0) if args.quick else (9, 10.0)
    print(f"apply: {', '.join(f'{n:,}' for n in SIZES)} conduits, {reps} repetitions;"
          f" UDP {UDP_RATE}/s for {seconds:g} s, re-apply every {REAPPLY_EVERY:g} s")  # fmt: skip
    with lab() as spec:
        app = NsThread(spec.ns_app)
        try:
            applier = app.run(Applier)
            times = apply_times(app, applier, reps)
            fig = apply_summary(times)
            big = fig[str(SIZES[-1])]
            if args.explain or (big["ours"] > LIMIT_S and not args.quick):
                fig["explain"] = explain(app, applier, 2 if args.quick else 3)
            loss = udp_loss(spec, app, applier, seconds)
            loss["syn"] = syn_loss(spec, app, applier, seconds)
        finally:
            app.close()
    goals = [
        Goal(
            f"{SIZES[-1]:,} conduits: ours (render+apply) vs raw libnftables",
            big["ours"], 2.0, False, big["raw"], " s", big["ours_over_raw"],
        ),
        Goal(f"{SIZES[-1]:,} conduits: ours (render+apply)", big["ours"], LIMIT_S, False,
             unit=" s"),
        Goal(
            f"UDP datagrams lost while re-applying {SIZES[-1]:,} conduits every second",
            loss["received"]["lost"], 0, False,
        ),
    ]  # fmt: skip
    return finish("apply", goals, {"times": times, "summary": fig, "udp": loss}, args.json)


if __name__ == "__main__":
    sys.exit(main())
