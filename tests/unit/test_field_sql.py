"""Read-only SQL over the documented views: what it answers, what it refuses, its limits."""

from __future__ import annotations

import io
import os
import sqlite3
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest

from appliance.errors import ApplianceError, NotFound, PermissionDenied, Timeout
from appliance.field import api, sqlworker
from appliance.field.alarms import AlarmEngine
from appliance.field.history import HistoryWriter
from appliance.paths import Paths
from appliance.state.db import Store

from . import factory

T0 = 1_790_000_000.0


@pytest.fixture
def paths(store: Store, tmp_path: Path) -> Paths:
    w = HistoryWriter(store)
    for i in range(100):
        w.add("plc1.counter", T0 + i, i, "good")
    w.add("plc1.temp", T0, 21.5, "uncertain")
    w.add("plc1.flag", T0, True, "bad")
    w.flush()
    w.compact()
    w.add("plc1.counter", T0 + 100, 100, "good")  # one in the hot table too
    w.flush()
    dev = factory.oven_plc(alarms={"high": 30})
    w.describe([dev])
    e = AlarmEngine(store)
    e.configure([dev], t=T0)
    e.update("plc1.temp", 31, "good", T0 + 5)
    store.event("config.commit", "revision 1 committed", source="cli", at=T0)
    return Paths(store.data_dir, tmp_path / "run")


def counts(store: Store) -> tuple[int, ...]:
    return tuple(
        store.history.execute_sql(f"SELECT count(*) FROM {t}").fetchone()[0]
        for t in ("sample", "sample_recent", "tag_name", "alarm", "event")
    )


def test_samples_view_has_names_times_and_quality_text(paths: Paths) -> None:
    r = api.sql_query(
        paths, "SELECT tag, device, time, t, value, quality FROM samples ORDER BY t, tag LIMIT 3"
    )
    assert r["columns"] == ["tag", "device", "time", "t", "value", "quality"]
    assert r["rows"] == [
        ["plc1.counter", "plc1", "2026-09-21T14:13:20.000Z", T0, 0, "good"],
        ["plc1.flag", "plc1", "2026-09-21T14:13:20.000Z", T0, 1, "bad"],
        ["plc1.temp", "plc1", "2026-09-21T14:13:20.000Z", T0, 21.5, "uncertain"],
    ]
    assert r["truncated"] is False and r["elapsed_ms"] >= 0


def test_aggregates_over_hot_and_cold_samples(paths: Paths) -> None:
    r = api.sql_query(
        paths,
        "SELECT tag, count(*), min(value), max(value) FROM samples "
        "WHERE tag = 'plc1.counter' AND t >= ? GROUP BY tag".replace("?", str(T0 + 50)),
    )
    assert r["rows"] == [["plc1.counter", 51, 50, 100]]
    assert api.sql_query(paths, "SELECT count(*) FROM samples")["rows"] == [[103]]


def test_tags_alarms_events_views(paths: Paths) -> None:
    tags = api.sql_query(paths, "SELECT tag, device, unit FROM tags ORDER BY tag")
    assert ["plc1.temp", "plc1", "degC"] in tags["rows"]
    alarms = api.sql_query(paths, "SELECT key, severity, state, raised_time, value FROM alarms")
    assert alarms["rows"] == [
        ["plc1.temp:high", "warning", "active", "2026-09-21T14:13:25.000Z", 31]
    ]
    ev = api.sql_query(paths, "SELECT kind, time FROM events WHERE source = 'cli'")
    assert ev["rows"] == [["config.commit", "2026-09-21T14:13:20.000Z"]]
    joined = api.sql_query(
        paths,
        "WITH last AS (SELECT tag, max(t) AS t FROM samples GROUP BY tag) "
        "SELECT s.tag, s.value, g.unit FROM samples s JOIN last USING (tag, t) "
        "LEFT JOIN tags g USING (tag) ORDER BY s.tag",
    )
    assert joined["rows"] == [
        ["plc1.counter", 100, ""],
        ["plc1.flag", 1, ""],
        ["plc1.temp", 21.5, "degC"],
    ]


@pytest.mark.parametrize(
    ("sql", "says"),
    [
        ("INSERT INTO samples (tag) VALUES ('x')", "only SELECT"),
        ("INSERT INTO sample (tag, t) VALUES (1, 2)", "INSERT"),
        ("UPDATE alarm SET acked = 1", "UPDATE"),
        ("DELETE FROM sample", "DELETE"),
        ("DELETE FROM event WHERE id > 0", "DELETE"),
        ("DROP TABLE sample", "not schema changes"),
        ("DROP VIEW samples", "not schema changes"),
        ("CREATE TABLE x (a)", "not schema changes"),
        ("CREATE TEMP TABLE x (a)", "not schema changes"),
        ("CREATE TEMP VIEW v AS SELECT 1", "not schema changes"),
        ("ATTACH DATABASE '/tmp/x.db' AS x", "ATTACH"),
        ("PRAGMA user_version = 5", "PRAGMA"),
        ("PRAGMA journal_mode = DELETE", "PRAGMA"),
        ("PRAGMA table_info(sample)", "PRAGMA"),
        ("SELECT * FROM sample", "'sample' is not one of the views"),
        ("SELECT * FROM sample_recent", "not one of the views"),
        ("SELECT name FROM tag_name", "not one of the views"),
        ("SELECT * FROM sqlite_master", "not one of the views"),
        ("SELECT * FROM history_meta", "not one of the views"),
        ("SELECT * FROM pragma_table_info('sample')", "nor virtual tables"),
        ("WITH events AS (SELECT * FROM sample) SELECT * FROM events", "not one of the views"),
        ("WITH samples AS (SELECT * FROM alarm) SELECT * FROM samples", "not one of the views"),
        ("SELECT load_extension('/tmp/x.so')", "load_extension"),
        ("SELECT * FROM dbstat", "nor virtual tables"),
        ("SELECT * FROM json_each('[1]')", "nor virtual tables"),
        ("ALTER TABLE sample ADD COLUMN x", "not ALTER TABLE"),
        ("BEGIN", "TRANSACTION"),
        ("SAVEPOINT a", "SAVEPOINT"),
        ("ANALYZE", "not schema changes"),
        ("VACUUM", ""),
        ("REINDEX", ""),
    ],
)
def test_everything_but_reading_the_views_is_refused(
    paths: Paths, store: Store, sql: str, says: str
) -> None:
    before = counts(store)
    with pytest.raises(ApplianceError) as exc:
        api.sql_query(paths, sql)
    assert says in str(exc.value)
    if says:
        assert isinstance(exc.value, PermissionDenied)
    assert exc.value.field == "sql"
    assert counts(store) == before


def test_refusals_are_permission_denied(paths: Paths) -> None:
    with pytest.raises(PermissionDenied, match="only SELECT queries are allowed, not DELETE"):
        api.sql_query(paths, "DELETE FROM sample")
    with pytest.raises(PermissionDenied, match="only SELECT queries are allowed"):
        api.sql_query(paths, "DELETE FROM samples")
    with pytest.raises(PermissionDenied, match="not one of the views"):
        api.sql_query(paths, "SELECT * FROM alarms, tag_name")


def test_the_connection_is_read_only_even_without_the_authorizer(
    paths: Paths, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the worker's code in this process (an authorizer patched here would not reach it)
    monkeypatch.setattr(sqlworker.Authorizer, "__call__", lambda self, *a: sqlite3.SQLITE_OK)
    before = counts(store)
    out = io.StringIO()
    with pytest.raises(sqlworker.Stopped, match="readonly"):
        sqlworker.run(api.request(paths, "DELETE FROM sample", 10, 5.0), out)
    assert counts(store) == before


def test_row_limit(paths: Paths) -> None:
    r = api.sql_query(paths, "SELECT value FROM samples WHERE tag = 'plc1.counter'", max_rows=10)
    assert len(r["rows"]) == 10 and r["truncated"] is True
    r = api.sql_query(paths, "SELECT value FROM samples WHERE tag = 'plc1.counter'", max_rows=101)
    assert len(r["rows"]) == 101 and r["truncated"] is False


def test_time_limit_stops_a_runaway_query(paths: Paths) -> None:
    started = time.monotonic()
    with pytest.raises(Timeout, match=r"longer than 0\.2 s"):
        api.sql_query(
            paths,
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) "
            "SELECT count(*) FROM n",
            timeout_s=0.2,
        )
    assert time.monotonic() - started < 30  # generous: the point is that it stops


def test_huge_values_are_refused(paths: Paths) -> None:
    with pytest.raises(ApplianceError, match="too big"):
        api.sql_query(paths, "SELECT zeroblob(100000000)")


@pytest.mark.parametrize(
    ("sql", "says"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("SELEC 1", "SQL error"),
        ("SELECT 1; DELETE FROM sample", "one statement"),
        ("SELECT nope FROM samples", "no such column"),
    ],
)
def test_bad_queries_get_clear_errors(paths: Paths, sql: str, says: str) -> None:
    with pytest.raises(ApplianceError, match=says) as exc:
        api.sql_query(paths, sql)
    assert exc.value.field == "sql"


def test_bad_limits(paths: Paths) -> None:
    with pytest.raises(ApplianceError) as exc:
        api.sql_query(paths, "SELECT 1", max_rows=0)
    assert exc.value.field == "max_rows"
    with pytest.raises(ApplianceError) as exc:
        api.sql_query(paths, "SELECT 1", timeout_s=0)
    assert exc.value.field == "timeout_s"


def test_no_database(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="no history database"):
        api.sql_query(Paths(tmp_path / "none", tmp_path / "run"), "SELECT 1")


def test_csv_of_a_result(paths: Paths) -> None:
    r = api.sql_query(paths, "SELECT tag, value FROM samples WHERE tag = 'plc1.temp'")
    assert api.sql_csv(r) == "tag,value\nplc1.temp,21.5\n"


# -- hostile queries: every limit stops them quickly, with an error naming it -------------

ROWS = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {}) "
FOREVER = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) "


def a(n: int) -> str:
    """SQL for a string of n times 'a'."""
    return f"printf('%.*c', {n}, 'a')"


VALUE = r"string or blob too big: a value would be longer than 1000000 bytes"
ANSWER = r"the result is larger than 8 MB \(the limit of one answer\)"
MEMORY = r"the query needs more than 67\.1089 MB of memory"
HOSTILE = [
    # the review's: 8 rows of a 10 MB blob (a 160 MB answer, 516 MB peak before)
    (ROWS.format(8) + "SELECT zeroblob(9999000) FROM n", ApplianceError, VALUE),
    (ROWS.format(100) + "SELECT zeroblob(900000) FROM n", ApplianceError, ANSWER),
    ("SELECT " + ", ".join(["zeroblob(900000)"] * 150), ApplianceError, MEMORY),
    ("SELECT randomblob(2000000000)", ApplianceError, VALUE),
    (ROWS.format(50) + "SELECT randomblob(999000) FROM n", ApplianceError, ANSWER),
    (
        f"SELECT replace(replace(replace({a(100)}, 'a', {a(100)}), 'a', {a(100)}), 'a', {a(100)})",
        ApplianceError,
        VALUE,
    ),
    # SQLite's printf pads char by char before it sees the limit: one step of seconds
    ("SELECT printf('%.*c', 2000000000, 'x')", Timeout, r"longer than 1 s"),
    (ROWS.format(100000) + f"SELECT length(group_concat({a(1000)})) FROM n", ApplianceError, VALUE),
    # quadratic in one VM step: SQLite checks for an interrupt only between steps
    (
        f"WITH s(x, y) AS (SELECT {a(990000)}, {a(495000)} || 'b') SELECT instr(x, y) FROM s",
        Timeout,
        r"longer than 1 s",
    ),
    (
        f"WITH s(x, y) AS (SELECT {a(200000)}, {a(100000)} || 'b') SELECT "
        + ", ".join(["instr(x, y)"] * 150)
        + " FROM s",
        Timeout,
        r"longer than 1 s",
    ),
    (
        f"WITH s(x, y) AS (SELECT {a(990000)}, {a(495000)} || 'b') "
        "SELECT replace(x, y, 'c') FROM s",
        Timeout,
        r"longer than 1 s",
    ),
    (FOREVER + "SELECT count(*) FROM n", Timeout, r"longer than 1 s"),
    (FOREVER + "SELECT i FROM n ORDER BY random() LIMIT 1", Timeout, r"longer than 1 s"),
    (f"SELECT {a(10000)} LIKE '%' || {a(5000)} || 'b'", ApplianceError, "pattern too complex"),
]


@pytest.mark.parametrize(("sql", "error", "says"), HOSTILE)
def test_hostile_queries_are_stopped_quickly_in_bounded_memory(
    paths: Paths, sql: str, error: type[Exception], says: str
) -> None:
    tracemalloc.start()
    started = time.monotonic()
    try:
        with pytest.raises(error, match=says) as exc:
            api.sql_query(paths, sql, timeout_s=1.0)
        elapsed = time.monotonic() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert isinstance(exc.value, ApplianceError) and exc.value.field in ("sql", None)
    assert elapsed < 1.0 + api.WORKER_GRACE_S + 1.0, elapsed
    assert peak < 24_000_000, peak  # this process holds at most one answer's bytes
    worker = api.last_worker()
    assert 0 < worker["maxrss_kb"] < 300_000, worker  # the worker's own peak


def test_a_legitimate_query_near_the_limits_still_answers(paths: Paths) -> None:
    r = api.sql_query(paths, ROWS.format(3) + f"SELECT i, length({a(999000)}) FROM n")
    assert r["rows"] == [[1, 999000], [2, 999000], [3, 999000]]
    r = api.sql_query(paths, ROWS.format(3) + "SELECT zeroblob(1000000) FROM n")
    assert [len(row[0]) for row in r["rows"]] == [2000000] * 3


@pytest.fixture
def worker_script(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    """Make the SQL worker a script of the test's own (Python source): one that hangs,
    floods or crashes, to see what the caller does about it."""

    def use(source: str) -> None:
        script = tmp_path / "worker.py"
        script.write_text(source)
        monkeypatch.setattr(api, "WORKER", str(script))

    return use


def test_the_worker_is_killed_at_the_deadline_whatever_it_does(
    paths: Paths, worker_script: Callable[[str], None]
) -> None:
    worker_script("import time\ntime.sleep(600)\n")
    started = time.monotonic()
    with pytest.raises(Timeout, match=r"longer than 0\.5 s"):
        api.sql_query(paths, "SELECT 1", timeout_s=0.5)
    assert time.monotonic() - started < 0.5 + api.WORKER_GRACE_S + 1.0
    assert api.last_worker()["ended"] == "killed at the deadline"
    assert api.last_worker()["returncode"] == -9


def test_a_worker_that_writes_too_much_is_killed(
    paths: Paths, worker_script: Callable[[str], None]
) -> None:
    worker_script("import sys\nwhile True:\n    sys.stdout.write('[1]\\n' * 10000)\n")
    tracemalloc.start()
    try:
        with pytest.raises(ApplianceError, match=ANSWER):
            api.sql_query(paths, "SELECT 1")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 24_000_000
    assert api.last_worker()["ended"] == "killed: too much output"


def test_a_worker_that_dies_gives_a_clear_error(
    paths: Paths, worker_script: Callable[[str], None]
) -> None:
    worker_script("import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)\n")
    with pytest.raises(ApplianceError, match="stopped without an answer") as exc:
        api.sql_query(paths, "SELECT 1")
    assert exc.value.field == "sql"


def test_one_query_at_a_time_per_process(paths: Paths) -> None:
    done = threading.Event()
    errors: list[Exception] = []

    def slow() -> None:
        try:
            api.sql_query(paths, FOREVER + "SELECT count(*) FROM n", timeout_s=1.0)
        except Exception as e:  # any: the assertion below says which
            errors.append(e)
        done.set()

    t = threading.Thread(target=slow)
    t.start()
    deadline = time.monotonic() + 5
    while api._workers._value and time.monotonic() < deadline:  # type: ignore[attr-defined]
        time.sleep(0.01)
    with pytest.raises(api.Busy, match="another SQL query is running") as exc:
        api.sql_query(paths, "SELECT 1")
    assert exc.value.field == "sql" and exc.value.retry_after == 1.0
    t.join(10)
    assert done.is_set() and isinstance(errors[0], Timeout)
    assert api.sql_query(paths, "SELECT 1 AS one")["rows"] == [[1]]


def test_the_worker_runs_with_the_limits_lowered(paths: Paths) -> None:
    """Outside systemd's filter the worker lowers its own CPU, file and memory limits."""
    probe = (
        "import os, resource, runpy, sys\n"
        "sys.argv = [sys.argv[1]]\n"
        "mod = runpy.run_path(sys.argv[0])\n"
        "mod['sandbox'](2.0)\n"
        "print(resource.getrlimit(resource.RLIMIT_CPU)[0],"
        " resource.getrlimit(resource.RLIMIT_FSIZE)[0], os.nice(0))\n"
    )
    out = subprocess.run(
        [sys.executable, "-I", "-S", "-c", probe, api.WORKER],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout.split()
    nice = min(19, os.nice(0) + sqlworker.NICE)
    assert out == ["4", str(sqlworker.MAX_TEMP_BYTES), str(nice)]


def test_the_cli_has_the_same_bounds(paths: Paths) -> None:
    from click.testing import CliRunner

    from appliance.field.cli import sql

    env = {"APPLIANCE_DATA_DIR": str(paths.data_dir), "APPLIANCE_RUN_DIR": str(paths.run_dir)}
    started = time.monotonic()
    r = CliRunner().invoke(sql, [HOSTILE[8][0], "--timeout", "1"], env=env, catch_exceptions=True)
    assert isinstance(r.exception, Timeout), r.output
    assert time.monotonic() - started < 1.0 + api.WORKER_GRACE_S + 1.0
    r = CliRunner().invoke(sql, [HOSTILE[0][0]], env=env, catch_exceptions=True)
    assert isinstance(r.exception, ApplianceError) and "too big" in str(r.exception)


def test_the_workers_peak_is_its_own_not_its_parents(paths: Paths) -> None:
    # Linux carries a parent's peak RSS into a child's ru_maxrss across fork and exec: a
    # fresh machine's long pytest process (400 MB) made every worker look that large
    hog = bytearray(350 * 1024 * 1024)
    for i in range(0, len(hog), 4096):
        hog[i] = 1
    try:
        api.sql_query(paths, "SELECT 1", timeout_s=1.0)
    finally:
        del hog
    assert 0 < api.last_worker()["maxrss_kb"] < 100_000, api.last_worker()
