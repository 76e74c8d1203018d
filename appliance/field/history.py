"""The batching history writer: samples in, one transaction per flush; compaction; retention.

`add()` never blocks a poller: it appends to a bounded in-memory queue (a full queue
drops the sample and counts it). A background thread writes the queue in one
transaction per `flush_interval` seconds or `flush_samples` samples, whichever comes
first, with one `executemany` into the hot table (see appliance.field.store for why
there are two). Every `compact_interval` seconds (15 min) it moves the hot rows to the
cold table, and every `retention_interval` seconds (5 min) it applies retention:

- by age: samples older than `retention_days` (and cleared, acknowledged alarms) go;
- by size: while the history DB uses more than `max_mb` MiB of pages, the oldest
  samples go, down to 90 % of the limit. Freed pages are reused by new samples, so the
  file stops growing at about the limit (it is never VACUUMed: that would rewrite it).

Deletes run in chunks of `DELETE_CHUNK` rows per transaction and pending samples are
flushed between chunks, so retention never holds up writes for long.

Durability: the history DB is in WAL mode with synchronous=NORMAL; a power cut can lose
the last flush (at most `flush_interval` seconds of samples), never corrupt the DB.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import sqlite3
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import peewee as pw

from appliance.config.field import Device, History
from appliance.errors import ApplianceError, AuditBroken, NotFound
from appliance.field import store as fs
from appliance.paths import Paths
from appliance.state.db import Audit, Event, Store

log = logging.getLogger(__name__)

MIB = 1024 * 1024
DELETE_CHUNK = 5000
CHEAP_MEASURE_ROWS = 1_000_000  # below this, dbstat over the samples takes milliseconds
DEFAULT_BYTES_PER_SAMPLE = 24.0  # before anything is measured: a typical compact row
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

DB_ERRORS = (pw.DatabaseError, sqlite3.Error, OSError)  # raw cursor calls raise sqlite3's

_INSERT = "INSERT INTO sample_recent (tag, t, v, q) VALUES (?, ?, ?, ?)"


def _storable(value: Any) -> Any:
    """What SQLite can hold for a value: ints in int64, floats, text, NULL."""
    if value is None or isinstance(value, str | float):
        return value
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value if INT64_MIN <= value <= INT64_MAX else float(value)
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


class HistoryWriter:
    """Batches samples into the history DB from one background thread.

    `clock` is the wall clock used for retention and rates (a fake in tests).
    """

    def __init__(
        self,
        store: Store,
        flush_interval: float = 1.0,
        flush_samples: int = 500,
        *,
        max_queue: int = 200_000,
        compact_interval: float = 900.0,
        retention_interval: float = 300.0,
        measure_interval: float = 3600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.db: pw.SqliteDatabase = store.history
        self.flush_interval = flush_interval
        self.flush_samples = flush_samples
        self.max_queue = max_queue
        self.compact_interval = compact_interval
        self.retention_interval = retention_interval
        self.measure_interval = measure_interval
        self.retention_days = History().retention_days
        self.max_mb = History().max_mb
        self.quotas = History()  # events_days/_max, audit_days/_max
        self._quota_warned: set[str] = set()
        self.clock = clock
        self._queue: deque[tuple[str, int, Any, int]] = deque()
        self._cond = threading.Condition()
        self._write_lock = threading.Lock()  # one writer of the tables at a time
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._tag_ids: dict[str, int] = {}
        self._written = 0
        self._dropped = 0
        self._errors = 0
        self._last_error: str | None = None
        self._last_flush: float | None = None
        self._last_compact = clock()
        self._last_retention = 0.0
        self._last_measure = 0.0
        self._measured_rows = 0
        self._rate: deque[tuple[float, int]] = deque()  # (time, samples) per flush, 1 h

    # -- configuration --------------------------------------------------------------

    def configure(self, history: History) -> None:
        """Apply the `history` section (flush cadence, retention) without a restart."""
        with self._cond:
            self.flush_interval = history.flush_interval
            self.flush_samples = history.flush_samples
            self.retention_days = history.retention_days
            self.max_mb = history.max_mb
            self.quotas = history
            self._last_retention = 0.0  # a tighter limit applies at the next loop
            self._cond.notify()

    def describe(self, devices: Iterable[Device]) -> None:
        """Record each tag's device, unit and description (the `tags` view shows them)."""
        rows = [
            (f"{d.name}.{t.name}", d.name, t.unit, t.description) for d in devices for t in d.tags
        ]
        if not rows:
            return
        with self._write_lock, self.db.atomic():
            self.db.connection().executemany(
                "INSERT INTO tag_name (name, device, unit, description) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(name) DO UPDATE SET device = excluded.device, "
                "unit = excluded.unit, description = excluded.description",
                rows,
            )

    # -- the producer side ----------------------------------------------------------

    def add(self, name: str, t: float, value: Any, quality: str) -> bool:
        """Queue one sample (never blocks); False if the queue was full and it was dropped."""
        q = fs.pack_quality(quality, value)
        row = (name, fs.to_ms(t), _storable(value), q)
        with self._cond:
            if len(self._queue) >= self.max_queue:
                self._dropped += 1
                return False
            self._queue.append(row)
            if len(self._queue) >= self.flush_samples:
                self._cond.notify()
        return True

    def stats(self) -> dict[str, Any]:
        with self._cond:
            return {
                "queued": len(self._queue),
                "written": self._written,
                "dropped": self._dropped,
                "errors": self._errors,
                "last_error": self._last_error,
                "last_flush": self._last_flush,
            }

    # -- the thread -----------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="history-writer", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Write what is queued, then end the thread."""
        self._stop.set()
        with self._cond:
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        else:
            self.flush()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                with self._cond:
                    if len(self._queue) < self.flush_samples and not self._stop.is_set():
                        self._cond.wait(self.flush_interval)
                try:
                    self.flush()
                    self.maintain()
                except Exception:  # a bug here must not end history: log, go on
                    log.exception("history writer: unexpected error (continuing)")
                    self._stop.wait(1.0)
            self.flush()
        finally:
            self.db.close()  # this thread's connection only (peewee keeps one per thread)

    # -- writing --------------------------------------------------------------------

    def flush(self) -> int:
        """Write everything queued in one transaction; returns how many samples."""
        with self._cond:
            batch = list(self._queue)
            self._queue.clear()
        if not batch:
            return 0
        try:
            with self._write_lock, self.db.atomic():
                ids = self._ids({name for name, _, _, _ in batch})
                self.db.connection().executemany(
                    _INSERT, [(ids[name], t, v, q) for name, t, v, q in batch]
                )
        except DB_ERRORS as e:
            self._tag_ids.clear()  # the rolled-back transaction may have created some
            with self._cond:
                self._errors += 1
                if self._last_error is None or self._errors == 1:
                    log.error("history: cannot write %d samples: %s", len(batch), e)
                self._last_error = str(e)
                room = self.max_queue - len(self._queue)
                keep = batch[-room:] if room > 0 else []
                self._dropped += len(batch) - len(keep)
                self._queue.extendleft(reversed(keep))
            return 0
        now = self.clock()
        with self._cond:
            if self._last_error is not None:
                log.info("history: writing again after %d failed flushes", self._errors)
            self._written += len(batch)
            self._last_flush = now
            self._last_error = None
            self._rate.append((now, len(batch)))
            while self._rate and self._rate[0][0] < now - 3600:
                self._rate.popleft()
        return len(batch)

    def _ids(self, names: set[str]) -> dict[str, int]:
        missing = [n for n in names if n not in self._tag_ids]
        if missing:
            conn = self.db.connection()
            conn.executemany(
                "INSERT OR IGNORE INTO tag_name (name, device, unit, description) "
                "VALUES (?, ?, '', '')",
                [(n, n.split(".", 1)[0]) for n in missing],
            )
            for i in range(0, len(missing), 500):
                part = missing[i : i + 500]
                marks = ",".join("?" * len(part))
                for tid, name in conn.execute(
                    f"SELECT id, name FROM tag_name WHERE name IN ({marks})", part
                ):
                    self._tag_ids[name] = tid
        return self._tag_ids

    # -- maintenance ----------------------------------------------------------------

    def maintain(self, force: bool = False) -> None:
        """Compaction and retention when they are due (or now, with `force`)."""
        now = self.clock()
        try:
            if force or now - self._last_compact >= self.compact_interval:
                self.compact()
                self._last_compact = now
            if force or now - self._last_retention >= self.retention_interval:
                self.retention(now)
                self._last_retention = now
        except DB_ERRORS as e:
            log.error("history maintenance failed (retried later): %s", e)

    def compact(self) -> int:
        """Move all hot rows into the cold table, sorted by (tag, t); returns rows moved.

        One transaction; the hot table is emptied with an unqualified DELETE, which hands
        its pages to the free list. Debian's SQLite is built with secure_delete on, which
        zeroes every freed page (the whole hot table written once more: measured, a third
        of all history writes); FAST zeroes only what costs no extra writes. Moving 900 000
        rows (1000 tags, 15 min) took 1.4 s on a shared 2-core VM; samples queue
        meanwhile, readers are not blocked (WAL).
        """
        self.db.execute_sql("PRAGMA secure_delete = FAST")
        with self._write_lock, self.db.atomic():
            self.db.execute_sql(
                "INSERT OR REPLACE INTO sample (tag, t, v, q) SELECT tag, t, v, q "
                "FROM sample_recent ORDER BY tag, t, id"
            )
            cur = self.db.execute_sql("DELETE FROM sample_recent")
            return cur.rowcount

    def used_bytes(self) -> int:
        pages = self.db.execute_sql("PRAGMA page_count").fetchone()[0]
        free = self.db.execute_sql("PRAGMA freelist_count").fetchone()[0]
        size = self.db.execute_sql("PRAGMA page_size").fetchone()[0]
        return (pages - free) * size

    def retention(self, now: float | None = None) -> dict[str, int]:
        """Apply retention by age, then by size; returns rows deleted by each."""
        now = self.clock() if now is None else now
        self.db.execute_sql("PRAGMA secure_delete = FAST")  # see compact()
        by_age = self._delete_before(fs.to_ms(now - self.retention_days * 86400))
        with self._write_lock, self.db.atomic():
            self.db.execute_sql(
                "DELETE FROM alarm WHERE state = 'cleared' AND acked AND cleared_at < ?",
                (now - self.retention_days * 86400,),
            )
        by_size = 0
        limit = self.max_mb * MIB
        for _ in range(20):  # each round deletes a time slice sized by the excess
            used = self.used_bytes()
            if used <= limit:
                break
            span = self._span()
            if span is None:
                log.warning("history DB over %d MiB without samples left to delete", self.max_mb)
                break
            oldest, newest = span
            excess = used - 0.9 * limit
            cutoff = oldest + max(1, int((newest - oldest) * min(1.0, excess / used)))
            deleted = self._delete_before(cutoff)
            by_size += deleted
            if deleted == 0 and cutoff > newest:
                break
        if by_size:
            log.info(
                "history: %d oldest samples deleted to stay within %d MiB", by_size, self.max_mb
            )
        self.prune_records(now)
        # measuring reads every page of the samples: every 5 minutes only while that is cheap
        due = now - self._last_measure >= self.measure_interval
        if by_age or by_size or due or self._measured_rows < CHEAP_MEASURE_ROWS:
            self._measured_rows = self._measure(now)
            self._last_measure = now
        return {"by_age": by_age, "by_size": by_size}

    def prune_records(self, now: float) -> dict[str, int]:
        """The event and audit quotas (`history.events_*`, `history.audit_*`): events
        older than `events_days` go, then the oldest beyond `events_max` (down to 90 %);
        audit rows beyond `audit_max` go oldest first but never one younger than
        `audit_days` (`Store.prune_audit`, the chain kept). A table at 80 % of its quota is
        a warning event, once until it is back under 70 %; an audit log over its quota with
        nothing old enough to prune is another."""
        q = self.quotas
        with self._write_lock, self.db.atomic():
            events = Event.delete().where(Event.at < now - q.events_days * 86400).execute()
            count = Event.select().count()
            if count > q.events_max:
                upto = (
                    Event.select(Event.id)
                    .order_by(Event.id)
                    .offset(count - int(q.events_max * 0.9) - 1)
                    .limit(1)
                    .scalar()
                )
                events += Event.delete().where(Event.id <= upto).execute()
        if events:
            log.info(
                "history: %d old events deleted (quota %d, %g days)",
                events,
                q.events_max,
                q.events_days,
            )
        try:
            audit = self.store.prune_audit(
                max_rows=q.audit_max, keep_s=q.audit_days * 86400, now=now
            )
        except AuditBroken as e:  # the evidence stays: said once, until pruning works again
            audit = 0
            if "audit-broken" not in self._quota_warned:
                self._quota_warned.add("audit-broken")
                self._quota_event(f"the audit log is {e}", {"table": "audit", "broken": True}, now)
        else:
            self._quota_warned.discard("audit-broken")
        if audit:
            log.info("history: %d audit rows beyond the quota of %d pruned", audit, q.audit_max)
        counts = {"event": Event.select().count(), "audit": Audit.select().count()}
        quotas = (("event", q.events_max, "events_max"), ("audit", q.audit_max, "audit_max"))
        for table, limit, key in quotas:
            rows = counts[table]
            if rows >= 0.8 * limit and table not in self._quota_warned:
                self._quota_warned.add(table)
                self._quota_event(
                    f"the {table} table holds {rows} rows, {100 * rows // limit} % of "
                    f"history.{key} ({limit}): the oldest are pruned at the limit",
                    {"table": table, "rows": rows, "limit": limit},
                    now,
                )
            elif rows < 0.7 * limit:
                self._quota_warned.discard(table)
        rows = counts["audit"]
        if rows > q.audit_max and "audit-full" not in self._quota_warned:
            self._quota_warned.add("audit-full")
            self._quota_event(
                f"the audit log holds {rows} rows, over history.audit_max ({q.audit_max}), and "
                f"none is older than history.audit_days ({q.audit_days:g}): none is pruned",
                {"table": "audit", "rows": rows, "limit": q.audit_max, "full": True},
                now,
            )
        elif rows <= q.audit_max:
            self._quota_warned.discard("audit-full")
        return {"events": events, "audit": audit}

    def _quota_event(self, message: str, data: dict[str, Any], now: float) -> None:
        self.store.event(
            "history.quota", message, source="field", severity="warning", data=data, at=now
        )

    def _span(self) -> tuple[int, int] | None:
        """(oldest, newest) sample time in ms, by one index seek per tag (no full scan)."""
        oldest = newest = None
        conn = self.db.connection()
        for (tid,) in conn.execute("SELECT id FROM tag_name"):
            lo = conn.execute("SELECT min(t) FROM sample WHERE tag = ?", (tid,)).fetchone()[0]
            hi = conn.execute("SELECT max(t) FROM sample WHERE tag = ?", (tid,)).fetchone()[0]
            if lo is not None:
                oldest = lo if oldest is None else min(oldest, lo)
                newest = hi if newest is None else max(newest, hi)
        lo, hi = conn.execute("SELECT min(t), max(t) FROM sample_recent").fetchone()
        if lo is not None:
            oldest = lo if oldest is None else min(oldest, lo)
            newest = hi if newest is None else max(newest, hi)
        return None if oldest is None or newest is None else (oldest, newest)

    def _delete_before(self, cutoff_ms: int) -> int:
        """Delete samples older than `cutoff_ms`, DELETE_CHUNK rows per transaction."""
        deleted = 0
        tag_ids = [r[0] for r in self.db.execute_sql("SELECT id FROM tag_name").fetchall()]
        for tid in tag_ids:
            while True:
                with self._write_lock, self.db.atomic():
                    cur = self.db.execute_sql(
                        "DELETE FROM sample WHERE tag = ?1 AND t < coalesce((SELECT t FROM sample "
                        "WHERE tag = ?1 AND t < ?2 ORDER BY t LIMIT 1 OFFSET ?3), ?2)",
                        (tid, cutoff_ms, DELETE_CHUNK),
                    )
                    n = cur.rowcount
                deleted += n
                if n:
                    self.flush()  # keep pollers' samples moving between chunks
                if n < DELETE_CHUNK:
                    break
        while True:
            with self._write_lock, self.db.atomic():
                cur = self.db.execute_sql(
                    "DELETE FROM sample_recent WHERE id IN (SELECT id FROM sample_recent "
                    "WHERE t < ? LIMIT ?)",
                    (cutoff_ms, DELETE_CHUNK),
                )
                n = cur.rowcount
            deleted += n
            if n < DELETE_CHUNK:
                break
            self.flush()
        return deleted

    def rate_per_hour(self) -> float | None:
        """Samples per hour measured over the last hour (None before a minute of data)."""
        with self._cond:
            if not self._rate:
                return None
            span = self.clock() - self._rate[0][0]
            if span < 60:
                return None
            return sum(n for _, n in self._rate) * 3600.0 / span

    def _measure(self, now: float) -> int:
        """Store bytes per sample and the rate for readers in other processes."""
        data: dict[str, Any] = {"at": now, **measure(self.db)}
        rate = self.rate_per_hour()
        if rate is not None:
            data["rate_per_hour"] = rate
        with self._write_lock, self.db.atomic():
            fs.meta_set("measured", data)
        return int(data["rows"])


def measure(db: pw.Database | sqlite3.Connection) -> dict[str, Any]:
    """Samples stored and the disk they take, from SQLite's page statistics (dbstat).

    Walks every page of the two sample tables: call it rarely (the writer does, during
    retention, and stores the result for readers). `bytes_per_sample` counts whole pages
    once there are enough of them to average out the partly filled ones.
    """
    execute = db.execute if isinstance(db, sqlite3.Connection) else db.execute_sql
    rows = pages = size = used = 0
    # `sample` is an index B-tree (WITHOUT ROWID): its interior cells are rows too.
    for table, cells in (("sample", "ncell"), ("sample_recent", "ncell * (pagetype = 'leaf')")):
        r = execute(
            f"SELECT coalesce(sum({cells}), 0), count(*), "
            "coalesce(sum(pgsize), 0), coalesce(sum(pgsize - unused), 0) "
            "FROM dbstat WHERE name = ?",
            (table,),
        ).fetchone()
        rows, pages, size, used = rows + r[0], pages + r[1], size + r[2], used + r[3]
    bps = (size if pages >= 100 else used) / rows if rows else DEFAULT_BYTES_PER_SAMPLE
    return {"rows": int(rows), "bytes": int(size), "bytes_per_sample": bps}


def configured_rate(devices: Iterable[Device]) -> float:
    """Samples per hour if every enabled tag were stored on every poll (the most)."""
    return sum(3600.0 / d.poll_interval * len(d.tags) for d in devices if d.enabled)


def history_capacity(paths: Paths, config: Any, store: Store | None = None) -> dict[str, Any]:
    """How many hours of history the free space holds, from measured bytes per sample.

    free_bytes is what history may still grow by: the smaller of the disk's free space
    and what is left under `history.max_mb`. samples_per_hour is the rate the writer
    measured over the last hour when known, else the most the configuration can store.
    """
    if store is not None:
        used, measured = _used_and_measured(store.history.connection())
    else:
        # a read-only connection of its own: opening a Store would rebind the process's
        # models (the web role calls this) to a database that is closed afterwards
        path = paths.data_dir / "history.db"
        if not path.exists():
            raise NotFound(f"no history database in {paths.data_dir}")
        try:
            conn = sqlite3.connect(
                f"file:{urllib.parse.quote(str(path))}?mode=ro", uri=True, timeout=5.0
            )
        except sqlite3.Error as e:
            raise ApplianceError(f"cannot open the history database read-only: {e}") from None
        try:
            used, measured = _used_and_measured(conn)
        except sqlite3.Error as e:
            raise ApplianceError(f"cannot read the history database: {e}") from None
        finally:
            conn.close()
    bps = float(measured["bytes_per_sample"])
    rows = measured["rows"]
    history_cfg: History = getattr(config, "history", None) or History()
    devices = list(getattr(config, "devices", None) or [])
    rate = measured.get("rate_per_hour")
    basis = "measured"
    if not rate:
        rate = configured_rate(devices)
        basis = "configured"
    disk_free = shutil.disk_usage(paths.data_dir).free
    budget = max(0, history_cfg.max_mb * MIB - used)
    free_bytes = min(disk_free, budget)
    hours_left = free_bytes / (bps * rate) if rate else math.inf
    return {
        "bytes_per_sample": round(bps, 1),
        "samples": rows,
        "samples_per_hour": round(rate, 1),
        "rate_basis": basis,
        "used_bytes": used,
        "free_bytes": free_bytes,
        "disk_free_bytes": disk_free,
        "max_bytes": history_cfg.max_mb * MIB,
        "hours_left": None if math.isinf(hours_left) else round(hours_left, 1),
        "retention_hours": history_cfg.retention_days * 24,
        "file_bytes": _file_bytes(paths),
        "measured_at": measured.get("at"),
    }


def _used_and_measured(conn: sqlite3.Connection) -> tuple[int, dict[str, Any]]:
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    free_pages = conn.execute("PRAGMA freelist_count").fetchone()[0]
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    row = conn.execute("SELECT value FROM history_meta WHERE key = 'measured'").fetchone()
    measured = json.loads(row[0]) if row else {}
    if measured.get("rows", 0) < CHEAP_MEASURE_ROWS:  # small: measure now, it is cheap
        measured = {**measured, **measure(conn), "at": time.time()}
    return (pages - free_pages) * page_size, measured


def _file_bytes(paths: Paths) -> int:
    total = 0
    for suffix in ("", "-wal", "-shm"):
        try:
            total += os.path.getsize(paths.data_dir / f"history.db{suffix}")
        except OSError:
            pass
    return total
