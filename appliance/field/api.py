"""Field data for the REST API and the CLI: live tags, history, alarms, read-only SQL.

Pure reads: of the field role's live document (`<run_dir>/field.json`) and of the
history DB. Usable from any process that holds a Store (the web role, the CLI).

The SQL interface is for IT people who know SQL: one SELECT over the documented views
(`samples`, `tags`, `alarms`, `events`, see docs/history.md) on a read-only
connection. An authorizer refuses everything else (writes, PRAGMA, ATTACH, the tables
behind the views, sqlite_master) with a message saying what was refused; a progress
handler stops a query after its time limit; at most `max_rows` rows come back.
"""

from __future__ import annotations

import csv
import difflib
import io
import math
import sqlite3
import time
import urllib.parse
from collections.abc import Mapping
from typing import Any

from appliance.errors import ApplianceError, NotFound, PermissionDenied, Timeout
from appliance.field import store as fs
from appliance.field.history import history_capacity
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
MAX_SQL_LENGTH = 100_000
MAX_VALUE_LENGTH = 10_000_000  # longest string/blob a query may build (bytes)

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
            raise ApplianceError(f"must be a time, not {v}", field=label)
    if start is not None and end is not None and end < start:
        raise ApplianceError("the end of the range is before its start", field="to")


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
        raise ApplianceError(f"must be 1-{MAX_HISTORY_ROWS} (got {limit})", field="limit")
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


def history_csv(
    store: Store,
    name: str,
    start: float | None = None,
    end: float | None = None,
    limit: int = 10_000,
) -> str:
    """One tag's history as CSV: time (ISO, UTC), t (epoch seconds), value, quality."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["time", "t", "tag", "value", "quality"])
    for s in tag_history(store, name, start, end, limit):
        value = s["value"]
        if isinstance(value, bool):
            value = int(value)
        w.writerow(
            [iso(s["t"]), f"{s['t']:.3f}", name, "" if value is None else value, s["quality"]]
        )
    return buf.getvalue()


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
        raise ApplianceError(f"must be 1-100000 (got {limit})", field="limit")
    q = fs.AlarmRow.select().order_by(fs.AlarmRow.id.desc()).limit(int(limit))
    return [r.as_dict() for r in q]


# -- read-only SQL -----------------------------------------------------------------

# Which tables each view reads: a query may read a table only through its view.
VIEW_TABLES: dict[str, frozenset[str]] = {
    "samples": frozenset({"sample", "sample_recent", "tag_name"}),
    "tags": frozenset({"tag_name"}),
    "alarms": frozenset({"alarm"}),
    "events": frozenset({"event"}),
}
DENIED_FUNCTIONS = frozenset({"load_extension", "fts3_tokenizer", "readfile", "writefile"})

_ACTIONS = {
    v: k
    for k, v in {
        "CREATE INDEX": 1,
        "CREATE TABLE": 2,
        "CREATE TEMP INDEX": 3,
        "CREATE TEMP TABLE": 4,
        "CREATE TEMP TRIGGER": 5,
        "CREATE TEMP VIEW": 6,
        "CREATE TRIGGER": 7,
        "CREATE VIEW": 8,
        "DELETE": 9,
        "DROP INDEX": 10,
        "DROP TABLE": 11,
        "DROP TEMP INDEX": 12,
        "DROP TEMP TABLE": 13,
        "DROP TEMP TRIGGER": 14,
        "DROP TEMP VIEW": 15,
        "DROP TRIGGER": 16,
        "DROP VIEW": 17,
        "INSERT": 18,
        "PRAGMA": 19,
        "READ": 20,
        "SELECT": 21,
        "TRANSACTION": 22,
        "UPDATE": 23,
        "ATTACH": 24,
        "DETACH": 25,
        "ALTER TABLE": 26,
        "REINDEX": 27,
        "ANALYZE": 28,
        "CREATE VTABLE": 29,
        "DROP VTABLE": 30,
        "FUNCTION": 31,
        "SAVEPOINT": 32,
        "RECURSIVE": 33,
    }.items()
}


SCHEMA_TABLES = frozenset({"sqlite_master", "sqlite_schema", "sqlite_temp_master"})
# Virtual tables SQLite offers by name: they would read around the views.
DENIED_TABLES = frozenset({"dbstat", "sqlite_dbpage", "sqlite_stmt", "json_each", "json_tree"})
_WRITES = frozenset({sqlite3.SQLITE_INSERT, sqlite3.SQLITE_UPDATE, sqlite3.SQLITE_DELETE})


class _Authorizer:
    """SQLite's authorizer callback: SELECT, reads of the views, functions; nothing else.

    `real` holds the names of the DB's tables, indexes and views: a name read that is
    not among them is a common table expression of the query itself (allowed: its rows
    come from reads that were authorized one by one).
    """

    def __init__(self, real: frozenset[str]) -> None:
        self.real = real
        self.refused: str | None = None

    def __call__(
        self, action: int, arg1: str | None, arg2: str | None, db: str | None, inner: str | None
    ) -> int:
        if action in (sqlite3.SQLITE_SELECT, sqlite3.SQLITE_RECURSIVE):
            return sqlite3.SQLITE_OK
        if action == sqlite3.SQLITE_FUNCTION:
            if (arg2 or "").lower() in DENIED_FUNCTIONS:
                return self._deny(f"the function {arg2}() is not allowed")
            return sqlite3.SQLITE_OK
        if action == sqlite3.SQLITE_READ:
            return self._read((arg1 or "").lower(), arg2, db, inner)
        if action in _WRITES and (arg1 or "").lower() in SCHEMA_TABLES:
            return self._deny(
                "only SELECT queries over the views are allowed, not schema changes "
                "(CREATE, DROP, ALTER, ANALYZE) nor virtual tables"
            )
        what = _ACTIONS.get(action, f"action {action}")
        target = f" {arg1}" if arg1 else ""
        return self._deny(f"only SELECT queries are allowed, not {what}{target}")

    def _read(self, table: str, column: str | None, db: str | None, inner: str | None) -> int:
        if db not in (None, "main"):
            return self._deny(f"only the views of the history DB may be read (not {db}.)")
        if table in VIEW_TABLES:
            return sqlite3.SQLITE_OK
        if inner in VIEW_TABLES and table in VIEW_TABLES[inner]:
            return sqlite3.SQLITE_OK
        base = any(table in t for t in VIEW_TABLES.values())
        # count(*) over a view reads its table with no column: a count reveals nothing
        if column == "" and base:
            return sqlite3.SQLITE_OK
        cte = table not in self.real and table not in DENIED_TABLES
        if cte and not table.startswith(("sqlite_", "pragma_")):
            return sqlite3.SQLITE_OK
        return self._deny(
            f"{table!r} is not one of the views a query may read ({', '.join(sorted(VIEW_TABLES))})"
        )

    def _deny(self, why: str) -> int:
        if self.refused is None:
            self.refused = why
        return sqlite3.SQLITE_DENY


def _json_value(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.hex()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def sql_query(
    paths: Paths, sql: str, max_rows: int = 10_000, timeout_s: float = 5.0
) -> dict[str, Any]:
    """Run one read-only SELECT over the documented views.

    Returns {"columns", "rows", "truncated", "elapsed_ms"}. Raises PermissionDenied for
    anything but reading the views, Timeout after `timeout_s`, ApplianceError (field
    "sql") for a query SQLite cannot run.
    """
    if not isinstance(sql, str) or not sql.strip():
        raise ApplianceError("the query is empty", field="sql")
    if len(sql) > MAX_SQL_LENGTH:
        raise ApplianceError(f"the query is longer than {MAX_SQL_LENGTH} characters", field="sql")
    if not 1 <= int(max_rows) <= MAX_SQL_ROWS:
        raise ApplianceError(f"must be 1-{MAX_SQL_ROWS} (got {max_rows})", field="max_rows")
    if not 0 < float(timeout_s) <= 300:
        raise ApplianceError(f"must be 0-300 seconds (got {timeout_s})", field="timeout_s")
    path = paths.data_dir / "history.db"
    if not path.exists():
        raise NotFound(f"no history database in {paths.data_dir}")
    uri = f"file:{urllib.parse.quote(str(path))}?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=5.0, isolation_level=None)
    except sqlite3.Error as e:
        raise ApplianceError(f"cannot open the history database read-only: {e}") from None
    started = time.monotonic()
    deadline = started + float(timeout_s)
    try:
        conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
        conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, MAX_VALUE_LENGTH)
        real = frozenset(n.lower() for (n,) in conn.execute("SELECT name FROM sqlite_master"))
        auth = _Authorizer(real)
        conn.set_authorizer(auth)
        conn.set_progress_handler(lambda: 1 if time.monotonic() > deadline else 0, 1000)
        try:
            cur = conn.execute(sql)
            columns = [d[0] for d in cur.description] if cur.description else []
            rows = cur.fetchmany(int(max_rows) + 1)
        except (sqlite3.Error, sqlite3.Warning) as e:
            msg = str(e)
            if auth.refused is not None or "not authorized" in msg:
                raise PermissionDenied(auth.refused or msg, field="sql") from None
            if "interrupted" in msg:
                raise Timeout(
                    f"the query ran longer than {float(timeout_s):g} s and was stopped"
                ) from None
            if "cannot modify" in msg:
                why = f"only SELECT queries are allowed ({msg})"
                raise PermissionDenied(why, field="sql") from None
            if "one statement at a time" in msg:
                raise ApplianceError("send one statement at a time", field="sql") from None
            raise ApplianceError(f"SQL error: {msg}", field="sql") from None
    finally:
        conn.close()
    if not columns:
        raise PermissionDenied("only SELECT queries are allowed", field="sql")
    truncated = len(rows) > max_rows
    rows = rows[:max_rows]
    return {
        "columns": columns,
        "rows": [[_json_value(v) for v in row] for row in rows],
        "truncated": truncated,
        "elapsed_ms": round((time.monotonic() - started) * 1000, 3),
    }


def sql_csv(result: Mapping[str, Any]) -> str:
    """A sql_query result as CSV (header row first)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(result["columns"])
    for row in result["rows"]:
        w.writerow(["" if v is None else v for v in row])
    return buf.getvalue()
