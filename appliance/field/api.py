"""Field data for the REST API and the CLI: live tags, history, alarms, read-only SQL.

Pure reads: of the field role's live document (`<run_dir>/field.json`) and of the
history DB. Usable from any process that holds a Store (the web role, the CLI).

The SQL interface is for IT people who know SQL: one SELECT over the documented views
(`samples`, `tags`, `alarms`, `events`, see docs/history.md) on a read-only
connection, in a worker process of its own (`sqlworker.py`). An authorizer refuses
everything else (writes, PRAGMA, ATTACH, the tables behind the views, sqlite_master)
with a message saying what was refused. Limits, each stopping the query with an error
that names it: the length of one value, the bytes of the answer (counted while rows
are fetched), the worker's memory, and the time limit: the worker is killed at the
deadline whatever SQLite is doing, and the caller's process never holds the query's
values. At most `max_rows` rows come back; one query at a time per process.
"""

from __future__ import annotations

import contextlib
import csv
import difflib
import io
import json
import math
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from appliance import proc
from appliance.errors import ApplianceError, BadRequest, Busy, NotFound, PermissionDenied, Timeout
from appliance.field import sqlworker
from appliance.field import store as fs
from appliance.field.history import history_capacity
from appliance.field.sqlworker import (  # noqa: F401  (the limits, also for callers)
    DENIED_FUNCTIONS,
    MAX_HEAP_BYTES,
    MAX_RESULT_BYTES,
    MAX_SQL_LENGTH,
    MAX_VALUE_LENGTH,
    VIEW_TABLES,
)
from appliance.paths import Paths
from appliance.state.db import Store
from appliance.state.live import LiveState

__all__ = [
    "history_capacity",
    "history_csv",
    "list_alarms",
    "list_tags",
    "sql_query",
    "tag_history",
]

MAX_HISTORY_ROWS = 1_000_000
MAX_SQL_ROWS = 100_000

LiveSource = LiveState | Mapping[str, Any] | None


def _field_doc(live: LiveSource) -> tuple[dict[str, Any], bool]:
    """(the field role's live document, whether the role is alive)."""
    if live is None:
        return {}, False
    if isinstance(live, LiveState):
        doc = live.read("field") or {}
        return doc, bool(doc) and live.alive("field")
    return dict(live), True


# -- live values ------------------------------------------------------------------


def list_tags(live: LiveSource, now: float | None = None) -> list[dict[str, Any]]:
    """Every tag's live value, by name. `age` is seconds since the last poll; `stale`
    is true when the field role is not running (the values are the last it wrote)."""
    doc, alive = _field_doc(live)
    now = time.time() if now is None else now
    out = []
    for name, tag in sorted((doc.get("tags") or {}).items()):
        poll_time = tag.get("poll_time")
        out.append(
            {
                "name": name,
                "device": tag.get("device", name.split(".", 1)[0]),
                "value": tag.get("value"),
                "quality": tag.get("quality", "bad"),
                "unit": tag.get("unit", ""),
                "source_time": tag.get("source_time"),
                "poll_time": poll_time,
                "age": None if poll_time is None else max(0.0, now - float(poll_time)),
                "writable": bool(tag.get("writable", False)),
                "description": tag.get("description", ""),
                "stale": not alive,
            }
        )
    return out


# -- history ----------------------------------------------------------------------


def _tag_id(store: Store, name: str) -> int:
    row = store.history.execute_sql("SELECT id FROM tag_name WHERE name = ?", (name,)).fetchone()
    if row is None:
        names = [r[0] for r in store.history.execute_sql("SELECT name FROM tag_name")]
        close = difflib.get_close_matches(name, names, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else " (names are <device>.<tag>)"
        raise NotFound(f"no history for tag {name!r}{hint}", field="name")
    return int(row[0])


def _check_range(start: float | None, end: float | None) -> None:
    for label, v in (("from", start), ("to", end)):
        if v is not None and not math.isfinite(v):
            raise BadRequest(f"must be a time, not {v}", field=label)
    if start is not None and end is not None and end < start:
        raise BadRequest("the end of the range is before its start", field="to")


def tag_history(
    store: Store,
    name: str,
    start: float | None = None,
    end: float | None = None,
    limit: int = 10_000,
) -> list[dict[str, Any]]:
    """Stored samples of tag `name` with start <= t < end (epoch seconds), oldest first."""
    _check_range(start, end)
    if not 1 <= int(limit) <= MAX_HISTORY_ROWS:
        raise BadRequest(f"must be 1-{MAX_HISTORY_ROWS} (got {limit})", field="limit")
    tid = _tag_id(store, name)
    lo = fs.to_ms(start) if start is not None else -(2**62)
    hi = fs.to_ms(end) if end is not None else 2**62
    rows = store.history.execute_sql(
        "SELECT t, v, q FROM (SELECT t, v, q FROM sample WHERE tag = ?1 AND t >= ?2 AND t < ?3 "
        "UNION ALL SELECT t, v, q FROM sample_recent WHERE tag = ?1 AND t >= ?2 AND t < ?3) "
        "ORDER BY t LIMIT ?4",
        (tid, lo, hi, int(limit)),
    ).fetchall()
    out = []
    for t, v, q in rows:
        value, quality = fs.unpack(v, q)
        out.append({"t": t / 1000.0, "value": value, "quality": quality})
    return out


def iso(t: float) -> str:
    """2026-11-25T18:13:46.123Z"""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"


# OWASP "CSV Injection": a cell starting with one of these is a formula to a spreadsheet
# (a PLC string "=HYPERLINK(...)" would be a link, "@SUM(...)" a calculation)
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    """A value for a CSV cell: text a spreadsheet would read as a formula gets a leading
    single quote (OWASP), numbers stay numbers, None is empty."""
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def csv_text(rows: Iterable[Sequence[Any]]) -> str:
    """Rows as CSV lines ending in "\n", each value through csv_cell. The writer's own
    terminator is "\r\n" so that it quotes a field holding either character (with "\n"
    alone, a lone CR went out bare and split the row for a reader in universal-newline
    mode, as spreadsheets are); each line's "\r\n" is then cut back to "\n"."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    lines = []
    for row in rows:
        buf.seek(0)
        buf.truncate()
        w.writerow([csv_cell(v) for v in row])
        lines.append(buf.getvalue()[:-2] + "\n")
    return "".join(lines)


def history_csv(
    store: Store,
    name: str,
    start: float | None = None,
    end: float | None = None,
    limit: int = 10_000,
) -> str:
    """One tag's history as CSV: time (ISO, UTC), t (epoch seconds), value, quality."""
    rows: list[Sequence[Any]] = [["time", "t", "tag", "value", "quality"]]
    for s in tag_history(store, name, start, end, limit):
        value = s["value"]
        if isinstance(value, bool):
            value = int(value)
        rows.append([iso(s["t"]), f"{s['t']:.3f}", name, value, s["quality"]])
    return csv_text(rows)


# -- alarms -----------------------------------------------------------------------


def list_alarms(
    store: Store, live: LiveSource = None, active_only: bool = False, limit: int = 100
) -> list[dict[str, Any]]:
    """Active alarms (the field role's view when it runs, else the table), or the
    newest `limit` alarms of any state, newest first."""
    if active_only:
        doc, alive = _field_doc(live)
        if alive and "alarms" in doc:
            return list((doc.get("alarms") or {}).get("active") or [])
        q = fs.AlarmRow.select().where(fs.AlarmRow.state == "active").order_by(fs.AlarmRow.id)
        return [r.as_dict() for r in q]
    if not 1 <= int(limit) <= 100_000:
        raise BadRequest(f"must be 1-100000 (got {limit})", field="limit")
    q = fs.AlarmRow.select().order_by(fs.AlarmRow.id.desc()).limit(int(limit))
    return [r.as_dict() for r in q]


# -- read-only SQL -----------------------------------------------------------------

# The worker process (see sqlworker.py: why a process, and every limit).
WORKER = str(Path(sqlworker.__file__).resolve())
WORKER_GRACE_S = 1.0  # past the deadline, for the worker to say "timeout" itself
WORKER_EXIT_S = 1.0  # after its last line, for the worker to exit before it is killed
MAX_WORKERS = 1  # SQL queries at once per process (the web role has 2 worker processes)
_workers = threading.BoundedSemaphore(MAX_WORKERS)
_last = threading.local()


def request(paths: Paths, sql: str, max_rows: int, timeout_s: float) -> dict[str, Any]:
    """What the worker gets on stdin."""
    return {
        "db": str(paths.data_dir / "history.db"),
        "sql": sql,
        "max_rows": int(max_rows),
        "timeout_s": float(timeout_s),
        "max_result_bytes": MAX_RESULT_BYTES,
    }


def last_worker() -> dict[str, Any]:
    """The last worker this thread ran: exit status, peak RSS (kB), seconds, why it ended."""
    return dict(getattr(_last, "info", {}))


def _worker_env() -> dict[str, str]:
    env = {"PATH": os.defpath, "LC_ALL": "C.UTF-8", "MALLOC_ARENA_MAX": "2"}
    if os.environ.get("TMPDIR"):
        env["TMPDIR"] = os.environ["TMPDIR"]  # where SQLite puts a query's temporary files
    return env


def _hwm_kb(pid: int) -> int:
    """The worker's peak RSS so far (VmHWM, kB); 0 once it has exited.

    Not wait4's ru_maxrss: Linux carries the parent's peak into a child across fork and
    exec, so a worker started from a large process would report that process's peak."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _end(worker: subprocess.Popen[bytes], started: float, why: str, peak_kb: int) -> None:
    """End the worker, reap it and note what it used. Stopped (the deadline, too much
    output), it is killed at once, whatever SQLite is doing, and before its pipe closes
    (one still writing dies of SIGKILL, not SIGPIPE). Done, it exits as soon as it has
    written its last line: it gets WORKER_EXIT_S for that, then SIGKILL."""
    if why != "done":
        proc.stop(worker, 0.0, sig=signal.SIGKILL)
    worker.stdout.close()  # type: ignore[union-attr]
    proc.stop(worker, WORKER_EXIT_S, sig=None)
    _last.info = {
        "returncode": worker.returncode,
        "maxrss_kb": peak_kb,
        "seconds": time.monotonic() - started,
        "ended": why,
    }


def _worker_output(req: dict[str, Any], timeout_s: float) -> bytes:
    """Run the worker; its stdout, at most MAX_RESULT_BYTES (plus its framing). The worker
    is killed at the deadline or when it writes more, whatever it is doing."""
    started = time.monotonic()
    hard = started + timeout_s + WORKER_GRACE_S
    budget = MAX_RESULT_BYTES + 64 * 1024  # columns line, JSON brackets, the last line
    # the worker's environment is exactly _worker_env, nothing of ours
    worker = proc.spawn(
        [sys.executable, "-I", "-S", WORKER],
        env=_worker_env(),
        exact_env=True,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        close_fds=True,
    )
    why = "done"
    out = bytearray()
    peak_kb = 0
    try:
        assert worker.stdin is not None and worker.stdout is not None
        with contextlib.suppress(BrokenPipeError):
            worker.stdin.write(json.dumps(req).encode())
            worker.stdin.close()
        fd = worker.stdout.fileno()
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while True:
                peak_kb = max(peak_kb, _hwm_kb(worker.pid))  # a high-water mark: sampled
                left = hard - time.monotonic()
                if left <= 0:
                    why = "killed at the deadline"
                    raise Timeout(f"the query ran longer than {timeout_s:g} s and was stopped")
                if not sel.select(min(left, 0.05)):
                    continue
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    break
                out += chunk
                if len(out) > budget:
                    why = "killed: too much output"
                    raise BadRequest(_too_large(), field="sql")
    finally:
        peak_kb = max(peak_kb, _hwm_kb(worker.pid))
        _end(worker, started, why, peak_kb)
    return bytes(out)


def _too_large() -> str:
    return (
        f"the result is larger than {MAX_RESULT_BYTES / 1_000_000:g} MB (the limit of one "
        "answer): select fewer rows or columns, or shorter values"
    )


_STOPPED = {"denied": PermissionDenied, "timeout": Timeout}


def answer(text: bytes | str) -> tuple[list[str], list[list[Any]], bool]:
    """(columns, rows, truncated) from the worker's lines; raises what it reported."""
    lines = text.splitlines()
    last = json.loads(lines[-1]) if lines else None
    if not isinstance(last, dict) or not ("done" in last or "error" in last):
        info = last_worker()
        status = info.get("returncode")
        if isinstance(status, int) and status == -signal.SIGXCPU:
            raise Timeout("the query used more CPU time than its time limit and was stopped")
        raise BadRequest(
            f"the query stopped without an answer (worker exit status {status})", field="sql"
        )
    if "error" in last:
        kind, message = last["error"]["kind"], last["error"]["message"]
        if kind == "timeout":
            raise Timeout(message)
        if kind == "open":
            raise ApplianceError(message)
        raise _STOPPED.get(kind, BadRequest)(message, field="sql")
    columns = json.loads(lines[0])["columns"]
    rows = [json.loads(line) for line in lines[1:-1]]
    return columns, rows, bool(last["done"]["truncated"])


def sql_query(
    paths: Paths, sql: str, max_rows: int = 10_000, timeout_s: float = 5.0
) -> dict[str, Any]:
    """Run one read-only SELECT over the documented views, in a worker process.

    Returns {"columns", "rows", "truncated", "elapsed_ms"}. Raises PermissionDenied for
    anything but reading the views, Timeout after `timeout_s` (the worker is killed,
    whatever SQLite is doing), BadRequest (field "sql") for a query SQLite cannot
    run or one that passes a limit (one value, the whole answer, memory; see
    sqlworker.py), Busy while another query of this process runs.
    """
    if not isinstance(sql, str) or not sql.strip():
        raise BadRequest("the query is empty", field="sql")
    if len(sql) > MAX_SQL_LENGTH:
        raise BadRequest(f"the query is longer than {MAX_SQL_LENGTH} characters", field="sql")
    if not 1 <= int(max_rows) <= MAX_SQL_ROWS:
        raise BadRequest(f"must be 1-{MAX_SQL_ROWS} (got {max_rows})", field="max_rows")
    if not 0 < float(timeout_s) <= 300:
        raise BadRequest(f"must be 0-300 seconds (got {timeout_s})", field="timeout_s")
    path = paths.data_dir / "history.db"
    if not path.exists():
        raise NotFound(f"no history database in {paths.data_dir}")
    if not _workers.acquire(blocking=False):
        raise Busy(
            "another SQL query is running; try again when it has finished",
            retry_after=1.0,
            field="sql",
        )
    started = time.monotonic()
    try:
        text = _worker_output(request(paths, sql, max_rows, timeout_s), float(timeout_s))
    finally:
        _workers.release()
    columns, rows, truncated = answer(text)
    return {
        "columns": columns,
        "rows": rows,
        "truncated": truncated,
        "elapsed_ms": round((time.monotonic() - started) * 1000, 3),
    }


def sql_csv(result: Mapping[str, Any]) -> str:
    """A sql_query result as CSV (header row first)."""
    return csv_text([result["columns"], *result["rows"]])
