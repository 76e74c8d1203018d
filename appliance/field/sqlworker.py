"""The SQL console's worker: one read-only SELECT, run in a process of its own.

A query is bounded inside SQLite (the length of one value, the size of the statement,
its columns, its heap) and by counting the bytes of the answer as rows are fetched. Its
run time cannot be bounded from inside the process that runs it: SQLite checks for an
interrupt (`Connection.interrupt()`, a progress handler) only between VM steps, and one
step can run for minutes (`instr()` or `replace()` over long strings is quadratic, and
a row can hold hundreds of such calls). So `appliance.field.api` runs this file as
`python -I -S sqlworker.py` and kills it at the deadline. Standard library only (it
runs without the package on sys.path).

Protocol: one JSON request on stdin (`request()` in api.py builds it); on stdout, JSON
lines: `{"columns": [...]}`, one array per row, then `{"done": {"truncated": bool}}` or
`{"error": {"kind": ..., "message": ...}}` (kinds: denied, timeout, invalid, too-big,
memory, result, disk).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import sqlite3
import sys
import threading
import urllib.parse
from typing import IO, Any

# -- the limits -----------------------------------------------------------------------------

MAX_SQL_LENGTH = 100_000  # characters of the statement
MAX_VALUE_LENGTH = 1_000_000  # bytes of one string or blob a query may build
MAX_RESULT_BYTES = 8_000_000  # bytes of the rows, JSON-encoded (what goes over the wire)
MAX_HEAP_BYTES = 64 * 1024 * 1024  # SQLite's memory in the worker
MAX_TEMP_BYTES = 256 * 1024 * 1024  # a temporary file (sorts, DISTINCT) in the worker
MAX_ADDRESS_SPACE = 1024 * 1024 * 1024  # the worker's virtual memory, a backstop
NICE = 10  # the worker yields the CPU to the web role's requests

LIMITS = {
    sqlite3.SQLITE_LIMIT_LENGTH: MAX_VALUE_LENGTH,
    sqlite3.SQLITE_LIMIT_SQL_LENGTH: MAX_SQL_LENGTH * 4,  # bytes of UTF-8
    sqlite3.SQLITE_LIMIT_COLUMN: 200,
    sqlite3.SQLITE_LIMIT_EXPR_DEPTH: 200,
    sqlite3.SQLITE_LIMIT_COMPOUND_SELECT: 50,
    sqlite3.SQLITE_LIMIT_VDBE_OP: 100_000,
    sqlite3.SQLITE_LIMIT_FUNCTION_ARG: 100,
    sqlite3.SQLITE_LIMIT_ATTACHED: 0,
    sqlite3.SQLITE_LIMIT_LIKE_PATTERN_LENGTH: 1000,
    sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER: 100,
    sqlite3.SQLITE_LIMIT_TRIGGER_DEPTH: 1,
    sqlite3.SQLITE_LIMIT_WORKER_THREADS: 0,
}

# -- what a query may read ------------------------------------------------------------------

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


class Authorizer:
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


# -- running one query ----------------------------------------------------------------------


class Stopped(Exception):
    """The query was refused or stopped: `kind` (see the module docstring) and why."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


def _mb(n: int) -> str:
    return f"{n / 1_000_000:g} MB"


def json_value(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.hex()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _classify(e: BaseException, auth: Authorizer, timeout_s: float) -> Stopped:
    if isinstance(e, MemoryError):
        return Stopped(
            "memory",
            f"the query needs more than {_mb(MAX_HEAP_BYTES)} of memory (the limit of one "
            "query) and was stopped",
        )
    msg = str(e)
    code = getattr(e, "sqlite_errorcode", None)
    if auth.refused is not None or "not authorized" in msg:
        return Stopped("denied", auth.refused or msg)
    if code == sqlite3.SQLITE_INTERRUPT or "interrupted" in msg:
        return Stopped("timeout", f"the query ran longer than {timeout_s:g} s and was stopped")
    if code == sqlite3.SQLITE_TOOBIG or "too big" in msg:
        return Stopped(
            "too-big",
            f"string or blob too big: a value would be longer than {MAX_VALUE_LENGTH} bytes "
            "(the limit of one value)",
        )
    if code == sqlite3.SQLITE_NOMEM:
        return _classify(MemoryError(), auth, timeout_s)
    if code == sqlite3.SQLITE_FULL:
        return Stopped(
            "disk",
            f"the query's temporary data passed {_mb(MAX_TEMP_BYTES)} (the limit of one "
            "query) and was stopped",
        )
    if "cannot modify" in msg:
        return Stopped("denied", f"only SELECT queries are allowed ({msg})")
    if "one statement at a time" in msg:
        return Stopped("invalid", "send one statement at a time")
    return Stopped("invalid", f"SQL error: {msg}")


def _emit(out: IO[str], doc: Any) -> None:
    out.write(json.dumps(doc, allow_nan=False, separators=(",", ":")) + "\n")


def run(req: dict[str, Any], out: IO[str]) -> None:
    """Run the request's query and write the answer's lines to `out` (see the module
    docstring); raises Stopped. Also usable in-process (tests): no process-wide limit
    is set here (see `sandbox()`)."""
    timeout_s = float(req["timeout_s"])
    max_rows = int(req["max_rows"])
    budget = int(req.get("max_result_bytes", MAX_RESULT_BYTES))
    uri = f"file:{urllib.parse.quote(str(req['db']))}?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=5.0, isolation_level=None)
    except sqlite3.Error as e:
        raise Stopped("open", f"cannot open the history database read-only: {e}") from None
    timer = threading.Timer(timeout_s, conn.interrupt)
    timer.daemon = True
    auth = Authorizer(frozenset())
    try:
        for limit, value in LIMITS.items():
            conn.setlimit(limit, value)
        auth.real = frozenset(n.lower() for (n,) in conn.execute("SELECT name FROM sqlite_master"))
        conn.set_authorizer(auth)
        timer.start()
        cur = conn.execute(req["sql"])
        if not cur.description:
            raise Stopped("denied", "only SELECT queries are allowed")
        _emit(out, {"columns": [d[0] for d in cur.description]})
        size = 0
        truncated = False
        for n, row in enumerate(cur):
            if n == max_rows:
                truncated = True
                break
            parts = []
            for v in row:  # count value by value: one row may hold 200 values of 1 MB
                parts.append(json.dumps(json_value(v), allow_nan=False))
                size += len(parts[-1]) + 1
                if size > budget:
                    raise Stopped(
                        "result",
                        f"the result is larger than {_mb(budget)} (the limit of one answer): "
                        "select fewer rows or columns, or shorter values",
                    )
            out.write("[" + ",".join(parts) + "]\n")
        _emit(out, {"done": {"truncated": truncated}})
    except (sqlite3.Error, sqlite3.Warning, MemoryError) as e:
        raise _classify(e, auth, timeout_s) from None
    finally:
        timer.cancel()
        with contextlib.suppress(sqlite3.Error):
            conn.close()


def sandbox(timeout_s: float) -> None:
    """Process-wide limits of the worker: SQLite's heap, and, where the system lets a
    process lower its own limits (the web role's systemd unit filters setrlimit and
    setpriority), CPU time, file size, address space and a lower CPU priority."""
    sqlite3.connect(":memory:").execute(f"PRAGMA hard_heap_limit = {MAX_HEAP_BYTES}")
    with contextlib.suppress(OSError, ValueError):
        import resource

        cpu = math.ceil(timeout_s) + 2
        for what, value in (
            (resource.RLIMIT_CPU, cpu),
            (resource.RLIMIT_FSIZE, MAX_TEMP_BYTES),
            (resource.RLIMIT_AS, MAX_ADDRESS_SPACE),
        ):
            with contextlib.suppress(OSError, ValueError):
                resource.setrlimit(what, (value, value))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails instead
    with contextlib.suppress(OSError):
        os.nice(NICE)


def main() -> int:
    out = sys.stdout
    try:
        req = json.loads(sys.stdin.read())
        sandbox(float(req["timeout_s"]))
        run(req, out)
    except MemoryError:  # outside SQLite: Python's own copy of a row
        e = _classify(MemoryError(), Authorizer(frozenset()), 0)
        _emit(out, {"error": {"kind": e.kind, "message": e.message}})
    except Stopped as e:
        _emit(out, {"error": {"kind": e.kind, "message": e.message}})
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
