"""History writes: disk bytes per stored sample, batching writer vs a commit per row.

Both variants run in this process, one after the other, on the real history DB schema
(a Store in a fresh directory on the disk the data partition would be on: --dir), with
the same samples: N tags, one value each per simulated second (every value stored, as
`publish: every-poll` does), for S simulated seconds, after 15 simulated minutes of
history written unmeasured (so compaction inserts into a populated table, as it does on
a unit). The simulated clock drives the writer exactly as its thread would (a flush per
second, compaction every 15 min and retention every 5 min), so compaction's own writes
are counted; at the end of each variant a checkpoint copies the WAL into the DB file,
so that is counted too. Default: 1000 tags (the scale of bench/poll) for 30 minutes;
--quick: 500 tags for 15 minutes, without the informative variant.

The ratio depends on the samples per flush: a flush writes at least one 4 kB page, so
with few tags (20 tags at 1 Hz: 0.095x, 100 tags: 0.063x) a per-second flush cannot reach
0.05x; a longer `history.flush_interval` can (--flush-interval shows by how much).

- ours: HistoryWriter as the field role runs it: one transaction per flush.
- baseline: the same writer with a flush after every sample: one commit per row.
- informative: one transaction per flush straight into the (tag, t)-clustered table, no
  hot table (the design the hot table replaced; see appliance/field/store.py).

Bytes are read from /proc/self/io: write_bytes (what this process sent towards the block
device, counted when it dirties page-cache pages) for the goal, wchar (bytes handed to
write()) printed alongside, and the growth of history.db + WAL. Goal: ours <= 0.05 x the
baseline's write_bytes per sample. Needs no root and no lab.
"""

from __future__ import annotations

import math
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import Goal, finish, parser

from appliance.field import store as field_store
from appliance.field.history import HistoryWriter, measure
from appliance.state.db import Store

T0 = 1_790_000_000.0
WARM_UP = 900  # simulated seconds of history written before measuring


def io_counters() -> dict[str, int]:
    out = {}
    with open("/proc/self/io") as f:
        for line in f:
            k, v = line.split(":")
            out[k.strip()] = int(v)
    return out


def file_bytes(data: Path) -> int:
    return sum(
        (data / f"history.db{s}").stat().st_size
        for s in ("", "-wal")
        if (data / f"history.db{s}").exists()
    )


def value(tag: int, sec: int) -> Any:
    """Plausible field values: counters, analog floats, bits."""
    kind = tag % 4
    if kind == 0:
        return (sec + tag) % 65536
    if kind == 1:
        return round(20 + 5 * math.sin(2 * math.pi * (sec + tag) / 60), 3)
    if kind == 2:
        return (sec // 10 + tag) % 2 == 0
    return 1000.0 * math.sin(sec / 7 + tag)


class Clock:
    def __init__(self) -> None:
        self.t = T0

    def __call__(self) -> float:
        return self.t


def run(variant: str, root: Path, tags: int, seconds: int, every: int = 1) -> dict[str, Any]:
    data = root / variant
    store = Store(data, field_store.MODELS)
    clock = Clock()
    per_row = variant == "commit-per-row"
    writer = HistoryWriter(store, flush_samples=1 if per_row else 500_000, clock=clock)
    names = [f"plc{t // 100 + 1}.tag{t:04d}" for t in range(tags)]
    # Not measured: a compaction period of history already in the cold table, as on a
    # unit that has run for a while (moving rows into an empty table would be flattering).
    for sec in range(-WARM_UP, 0):
        clock.t = T0 + sec
        for i, n in enumerate(names):
            writer.add(n, clock.t, value(i, sec), "good")
        if sec % 100 == 0:
            writer.flush()
    writer.flush()
    writer.compact()
    clock.t = T0
    writer._last_compact = writer._last_retention = T0
    store.history.execute_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    size0 = file_bytes(data)
    io0 = io_counters()
    started = time.perf_counter()
    cpu0 = time.process_time()
    for sec in range(seconds):
        clock.t = T0 + sec
        for i, n in enumerate(names):
            writer.add(n, clock.t, value(i, sec), "good")
            if per_row:
                writer.flush()
        due = (sec + 1) % every == 0
        if variant == "clustered-only" and due:
            direct_flush(writer)
        elif not per_row and due:
            writer.flush()
        if variant != "clustered-only":
            writer.maintain()
    if variant == "clustered-only":
        direct_flush(writer)
    else:
        writer.flush()
        writer.compact()
    store.history.execute_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu0
    io1 = io_counters()
    samples = tags * seconds
    m = measure(store.history)
    store.close()
    out = {
        "variant": variant,
        "samples": samples,
        "write_bytes_per_sample": (io1["write_bytes"] - io0["write_bytes"]) / samples,
        "wchar_per_sample": (io1["wchar"] - io0["wchar"]) / samples,
        "file_growth_per_sample": (file_bytes(data) - size0) / samples,
        "stored_bytes_per_sample": m["bytes_per_sample"],
        "samples_per_s": samples / elapsed,
        "cpu_us_per_sample": cpu / samples * 1e6,
        "seconds": elapsed,
    }
    shutil.rmtree(data, ignore_errors=True)
    return out


def direct_flush(writer: HistoryWriter) -> None:
    """One transaction straight into the clustered table (the informative variant)."""
    with writer._cond:
        batch = list(writer._queue)
        writer._queue.clear()
    with writer.db.atomic():
        ids = writer._ids({b[0] for b in batch})
        writer.db.connection().executemany(
            "INSERT OR REPLACE INTO sample (tag, t, v, q) VALUES (?, ?, ?, ?)",
            [(ids[n], t, v, q) for n, t, v, q in batch],
        )


def main() -> int:
    p = parser(__doc__)
    p.add_argument("--tags", type=int, default=None, help="tags (default 1000, quick 500)")
    p.add_argument("--seconds", type=int, default=None, help="simulated seconds (1800/900)")
    p.add_argument(
        "--flush-interval", type=int, default=1, help="simulated seconds between flushes (1)"
    )
    p.add_argument("--dir", type=Path, default=None, help="where to put the DBs (a real disk)")
    args = p.parse_args()
    tags = args.tags or (500 if args.quick else 1000)
    seconds = args.seconds or (900 if args.quick else 1800)
    root = Path(tempfile.mkdtemp(prefix="bench-history-", dir=args.dir))
    print(
        f"history: {tags} tags x {seconds} s at 1 Hz = {tags * seconds:,} samples per variant, "
        f"a flush every {args.flush_interval} s"
    )
    print(f"  in {root} (sqlite WAL, synchronous=NORMAL, as on a unit)")
    results = {}
    try:
        variants = ["batched", "commit-per-row"] + ([] if args.quick else ["clustered-only"])
        for variant in variants:
            r = run(variant, root, tags, seconds, args.flush_interval)
            results[variant] = r
            print(
                f"  {variant:15} write_bytes/sample {r['write_bytes_per_sample']:9.1f}"
                f"  wchar/sample {r['wchar_per_sample']:9.1f}"
                f"  file growth/sample {r['file_growth_per_sample']:7.1f}"
                f"  samples/s {r['samples_per_s']:10,.0f}"
                f"  CPU {r['cpu_us_per_sample']:6.1f} us/sample",
                flush=True,
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    ours, base = results["batched"], results["commit-per-row"]
    print(
        f"  stored size: {ours['stored_bytes_per_sample']:.1f} bytes per sample "
        f"(clustered table incl. partly filled pages)"
    )
    wb = base["write_bytes_per_sample"]
    print(
        f"  ratios vs commit-per-row: write_bytes {ours['write_bytes_per_sample'] / wb:.4f}, "
        f"wchar {ours['wchar_per_sample'] / base['wchar_per_sample']:.4f}, "
        f"samples/s {ours['samples_per_s'] / base['samples_per_s']:.1f}x"
    )
    if "clustered-only" in results:
        other = results["clustered-only"]["write_bytes_per_sample"]
        print(f"  one table clustered by (tag, t), batched: write_bytes ratio {other / wb:.3f}")
    goals = [
        Goal(
            "bytes written per sample, batching writer vs commit per row",
            ours["write_bytes_per_sample"],
            0.05,
            at_least=False,
            baseline=base["write_bytes_per_sample"],
            unit=" B",
        ),
    ]
    figures = {"tags": tags, "seconds": seconds, "variants": results}
    return finish("history", goals, figures, args.json)


if __name__ == "__main__":
    sys.exit(main())
