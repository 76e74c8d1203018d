"""The batching history writer on a real SQLite DB: batches, compaction, retention, capacity."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from testkit import Clock, wait_for

from appliance.config.field import Device, History, Tag
from appliance.config.model import Config
from appliance.errors import NotFound
from appliance.field import history as hist
from appliance.field.api import tag_history
from appliance.field.history import HistoryWriter, history_capacity, measure
from appliance.field.store import AlarmRow
from appliance.paths import Paths
from appliance.state.db import Store

from . import factory

T0 = 1_790_000_000.0  # a fixed epoch second


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
def writer(store: Store, clock: Clock) -> Iterator[HistoryWriter]:
    w = HistoryWriter(store, clock=clock)
    yield w
    w.stop()


def rows(store: Store, table: str) -> int:
    return store.history.execute_sql(f"SELECT count(*) FROM {table}").fetchone()[0]


def test_values_keep_their_type_and_quality(store: Store, writer: HistoryWriter) -> None:
    writer.add("plc1.count", T0, 7, "good")
    writer.add("plc1.temp", T0 + 0.5, 21.25, "uncertain")
    writer.add("plc1.flag", T0, True, "good")
    writer.add("plc1.name", T0, "LAB-PLC-01", "good")
    writer.add("plc1.dead", T0, None, "bad")
    writer.add("plc1.big", T0, 2**64 - 1, "good")  # uint64 beyond SQLite's int64
    assert writer.flush() == 6
    get = {n: tag_history(store, f"plc1.{n}") for n in ("count", "temp", "flag", "name", "dead")}
    assert get["count"] == [{"t": T0, "value": 7, "quality": "good"}]
    assert type(get["count"][0]["value"]) is int
    assert get["temp"] == [{"t": T0 + 0.5, "value": 21.25, "quality": "uncertain"}]
    assert get["flag"][0]["value"] is True
    assert get["name"][0]["value"] == "LAB-PLC-01"
    assert get["dead"] == [{"t": T0, "value": None, "quality": "bad"}]
    assert tag_history(store, "plc1.big")[0]["value"] == pytest.approx(2.0**64)


def test_a_flush_is_one_transaction(store: Store, writer: HistoryWriter) -> None:
    for i in range(1000):
        writer.add(f"plc{i % 10}.t{i % 7}", T0 + i, float(i), "good")
    statements: list[str] = []
    store.history.connection().set_trace_callback(statements.append)
    try:
        assert writer.flush() == 1000
    finally:
        store.history.connection().set_trace_callback(None)
    begins = [s for s in statements if s.upper().startswith("BEGIN")]
    commits = [s for s in statements if s.upper().startswith("COMMIT")]
    assert (len(begins), len(commits)) == (1, 1)
    assert rows(store, "sample_recent") == 1000
    assert writer.stats()["written"] == 1000 and writer.stats()["queued"] == 0


class WatchedWriter(HistoryWriter):
    """A HistoryWriter that records the waits its thread begins: the thread reads
    flush_interval under the queue's lock right before it waits that long, so once 60
    is in `waits` the thread is waiting (a sample added now finds it asleep)."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        self.waits: list[float] = []
        super().__init__(*args, **kw)

    @property  # type: ignore[override]
    def flush_interval(self) -> float:
        self.waits.append(self._interval)
        return self._interval

    @flush_interval.setter
    def flush_interval(self, seconds: float) -> None:
        self._interval = seconds

    def waiting(self, seconds: float) -> None:
        wait_for(lambda: seconds in self.waits, what=f"the writer thread to wait {seconds:g} s")


def test_background_thread_flushes_on_interval_and_on_stop(store: Store) -> None:
    w = WatchedWriter(store, flush_interval=0.05, flush_samples=10_000)
    w.start()
    try:
        for i in range(5):
            w.add("plc1.x", T0 + i, i, "good")
        wait_for(lambda: w.stats()["written"] == 5)
        assert w.stats()["last_flush"] is not None
        w.flush_interval = 60.0
        w.waiting(60.0)
        for i in range(3):
            w.add("plc1.x", T0 + 10 + i, i, "good")
        assert w.stats()["written"] == 5  # the thread sleeps on: the stop writes these three
    finally:
        w.stop()
    assert w.stats()["written"] == 8
    assert len(tag_history(store, "plc1.x")) == 8


def test_a_full_batch_is_written_before_the_interval(store: Store) -> None:
    w = WatchedWriter(store, flush_interval=60.0, flush_samples=50)
    w.start()
    try:
        w.waiting(60.0)  # asleep for a minute, until the fiftieth sample wakes it
        for i in range(50):
            w.add("plc1.x", T0 + i, i, "good")
        wait_for(lambda: w.stats()["written"] == 50, timeout=20)
    finally:
        w.stop()


def test_a_full_queue_drops_and_counts(store: Store) -> None:
    w = HistoryWriter(store, max_queue=5)
    got = [w.add("plc1.x", T0 + i, i, "good") for i in range(7)]
    assert got == [True] * 5 + [False] * 2
    assert w.stats() | {"last_flush": None} == {
        "queued": 5,
        "written": 0,
        "dropped": 2,
        "errors": 0,
        "last_error": None,
        "last_flush": None,
    }


def test_bad_quality_name_is_refused_at_add(writer: HistoryWriter) -> None:
    with pytest.raises(ValueError, match="quality"):
        writer.add("plc1.x", T0, 1, "excellent")


def test_a_failed_flush_keeps_the_samples_for_the_next(store: Store, writer: HistoryWriter) -> None:
    writer.add("plc1.x", T0, 1, "good")
    writer.flush()
    store.history.execute_sql("ALTER TABLE sample_recent RENAME TO parked")
    writer.add("plc1.x", T0 + 1, 2, "good")
    writer.add("plc1.x", T0 + 2, 3, "good")
    assert writer.flush() == 0
    s = writer.stats()
    assert (s["errors"], s["queued"], s["written"]) == (1, 2, 1)
    assert "sample_recent" in s["last_error"]
    store.history.execute_sql("ALTER TABLE parked RENAME TO sample_recent")
    assert writer.flush() == 2
    assert [x["value"] for x in tag_history(store, "plc1.x")] == [1, 2, 3]
    assert writer.stats()["last_error"] is None


def test_compaction_moves_rows_sorted_and_queries_see_both_tables(
    store: Store, writer: HistoryWriter
) -> None:
    for i in range(200):
        writer.add(f"plc1.t{i % 4}", T0 + i, i, "good")
    writer.flush()
    assert writer.compact() == 200
    assert (rows(store, "sample_recent"), rows(store, "sample")) == (0, 200)
    writer.add("plc1.t0", T0 + 1000, -1, "good")
    writer.add("plc1.t0", T0, 999, "good")  # same (tag, t) as a cold row: it replaces it
    writer.flush()
    got = tag_history(store, "plc1.t0")  # until compaction both copies show
    assert (
        len(got) == 52
        and got[-1]["value"] == -1
        and {got[0]["value"], got[1]["value"]}
        == {
            0,
            999,
        }
    )
    writer.compact()
    got = tag_history(store, "plc1.t0")
    assert len(got) == 51 and got[0]["value"] == 999
    assert tag_history(store, "plc1.t1", T0 + 50, T0 + 60) == [
        {"t": T0 + t, "value": t, "quality": "good"} for t in range(53, 60, 4)
    ]


def test_retention_by_age(store: Store, writer: HistoryWriter, clock: Clock) -> None:
    writer.configure(History(retention_days=1))
    day = 86400
    for i in range(48):  # one sample per hour for two days, half cold, half hot
        writer.add("plc1.x", T0 + i * 3600, i, "good")
        if i == 23:
            writer.flush()
            writer.compact()
    writer.flush()
    AlarmRow.create(
        key="a",
        device="plc1",
        kind="comm",
        severity="critical",
        state="cleared",
        acked=True,
        raised_at=T0,
        cleared_at=T0 + 1,
        message="old",
    )
    AlarmRow.create(
        key="b",
        device="plc1",
        kind="comm",
        severity="critical",
        state="cleared",
        acked=False,
        raised_at=T0,
        cleared_at=T0 + 1,
        message="unacked",
    )
    clock.t = T0 + 47 * 3600
    got = writer.retention()
    assert got["by_age"] == 23  # older than 24 h: hours 0..22
    kept = tag_history(store, "plc1.x")
    assert [s["value"] for s in kept] == list(range(23, 48))
    assert kept[0]["t"] >= clock.t - day
    assert [a.key for a in AlarmRow.select()] == ["b"]


def test_retention_by_size_deletes_the_oldest_in_chunks(
    store: Store, writer: HistoryWriter, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hist, "DELETE_CHUNK", 2000)
    writer.configure(History(max_mb=1))
    n_tags, n_polls = 50, 2000  # 100k samples: well over 1 MiB
    for p in range(n_polls):
        for tg in range(n_tags):
            writer.add(f"plc1.t{tg}", T0 + p, p * 1.5, "good")
        if p % 500 == 499:
            writer.flush()
            writer.compact()
    assert writer.used_bytes() > 2 * hist.MIB
    clock.t = T0 + n_polls
    got = writer.retention()
    assert got["by_size"] > 0 and got["by_age"] == 0
    assert writer.used_bytes() <= hist.MIB
    left = tag_history(store, "plc1.t7", limit=1_000_000)
    assert left[-1]["value"] == (n_polls - 1) * 1.5  # the newest stay
    assert left[0]["t"] > T0 + 100  # the oldest went
    # every tag lost its old samples alike (oldest first across tags, not tag by tag)
    firsts = [tag_history(store, f"plc1.t{tg}", limit=1)[0]["t"] for tg in range(n_tags)]
    assert max(firsts) - min(firsts) <= 2
    # new samples reuse the freed pages: the file does not grow
    size = Path(store.data_dir / "history.db").stat().st_size
    for p in range(200):
        for tg in range(n_tags):
            writer.add(f"plc1.t{tg}", T0 + n_polls + p, 1.0, "good")
    writer.flush()
    writer.compact()
    store.history.execute_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    assert Path(store.data_dir / "history.db").stat().st_size <= size


def test_describe_fills_the_tags_view(store: Store, writer: HistoryWriter) -> None:
    dev = factory.oven_plc(description="oven")
    writer.add("plc1.temp", T0, 1.0, "good")
    writer.flush()
    writer.describe([dev])
    got = store.history.execute_sql("SELECT tag, device, unit, description FROM tags").fetchall()
    assert got == [("plc1.temp", "plc1", "degC", "oven")]


def test_measure_and_capacity(tmp_path: Path, store: Store, writer: HistoryWriter) -> None:
    for p in range(3000):
        for tg in range(10):
            writer.add(f"plc1.t{tg}", T0 + p, float(p) + tg / 10, "good")
    writer.flush()
    writer.compact()
    m = measure(store.history)
    assert m["rows"] == 30000
    assert 8 < m["bytes_per_sample"] < 60  # compact rows: tens of bytes, not hundreds
    paths = Paths(store.data_dir, tmp_path / "run")
    config = Config(
        devices=[
            Device(
                name="plc1",
                protocol="modbus-tcp",
                address="192.168.50.10",
                poll_interval=2.0,
                tags=[
                    Tag(name=f"t{i}", table="holding", address=i, type="uint16") for i in range(10)
                ],
            )
        ],
        history=History(max_mb=100),
    )
    cap = history_capacity(paths, config, store)
    assert cap["rate_basis"] == "configured" and cap["samples_per_hour"] == 18000
    assert cap["samples"] == 30000
    assert cap["free_bytes"] <= 100 * hist.MIB - cap["used_bytes"]
    expected = cap["free_bytes"] / (m["bytes_per_sample"] * 18000)
    assert cap["hours_left"] == pytest.approx(expected, rel=0.01)
    # from another process: a read-only connection of its own, the same answer
    alone = history_capacity(paths, config)
    assert alone["bytes_per_sample"] == cap["bytes_per_sample"]
    assert alone["samples"] == 30000 and alone["used_bytes"] == cap["used_bytes"]


def test_capacity_without_a_database(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="no history database"):
        history_capacity(Paths(tmp_path / "none", tmp_path / "run"), Config())


def test_capacity_uses_the_measured_rate(
    tmp_path: Path, store: Store, writer: HistoryWriter, clock: Clock
) -> None:
    for minute in range(10):
        clock.t = T0 + minute * 60
        for i in range(100):
            writer.add("plc1.x", clock.t + i * 0.1, i, "good")
        writer.flush()
    assert writer.rate_per_hour() == pytest.approx(1000 * 3600 / 540)
    writer.retention()  # stores the measurements for other processes
    cap: dict[str, Any] = history_capacity(Paths(store.data_dir, tmp_path), Config(), store)
    assert cap["rate_basis"] == "measured"
    assert cap["samples_per_hour"] == pytest.approx(1000 * 3600 / 540, rel=0.01)


# -- the event and audit quotas -----------------------------------------------------------


def quota_events(store: Store) -> list[str]:
    return [e.message for e in reversed(store.events(100, "history.quota"))]


def test_events_go_by_age_then_by_count_with_one_warning_at_80_percent(
    store: Store, writer: HistoryWriter
) -> None:
    writer.configure(History(events_days=10, events_max=1000))
    now = T0 + 100 * 86400
    for i in range(50):  # 50 events older than 10 days
        store.event("x.old", f"old {i}", source="field", at=now - 11 * 86400)
    for i in range(850):
        store.event("x.new", f"new {i}", source="field", at=now - 3600)
    assert writer.prune_records(now) == {"events": 50, "audit": 0}
    # 850 left: at 80 % of 1000, one warning (an event itself), not one per pass
    [warning] = quota_events(store)
    assert warning == (
        "the event table holds 850 rows, 85 % of history.events_max (1000): "
        "the oldest are pruned at the limit"
    )
    writer.prune_records(now)
    assert len(quota_events(store)) == 1
    for i in range(300):
        store.event("x.new", f"more {i}", source="field", at=now - 60)
    got = writer.prune_records(now)
    assert got["events"] == 1151 - 900 and rows(store, "event") == 900  # down to 90 %
    oldest = store.history.execute_sql("SELECT min(message) FROM event WHERE kind = 'x.new'")
    assert oldest.fetchone()[0] is not None
    # the newest stay: the last one written is still there
    assert store.events(1, "x.new")[0].message == "more 299"


def test_audit_rows_go_beyond_the_quota_but_never_younger_than_audit_days(
    store: Store, writer: HistoryWriter
) -> None:
    writer.configure(History(audit_days=30, audit_max=1000))
    now = T0 + 400 * 86400
    for i in range(700):
        store.audit("cli:old", "config.commit", at=now - 60 * 86400 + i)
    for i in range(600):
        store.audit("cli:new", "config.commit", at=now - 86400 + i)
    assert writer.prune_records(now)["audit"] == 1300 - 900  # old enough: down to 90 %
    assert store.verify_audit().intact
    # 300 old rows left; 800 young ones more: only the old may go, and then none
    for i in range(800):
        store.audit("cli:new", "login", at=now - 3600 + i)
    assert writer.prune_records(now)["audit"] == 300
    assert writer.prune_records(now)["audit"] == 0
    assert rows_of_audit(store) == 1400 and store.verify_audit().intact
    full = [m for m in quota_events(store) if "none is pruned" in m]
    assert full == [
        "the audit log holds 1400 rows, over history.audit_max (1000), and none is older "
        "than history.audit_days (30): none is pruned"
    ]  # said once, not at every pass
    assert len([m for m in quota_events(store) if m.startswith("the audit table holds")]) == 1


def rows_of_audit(store: Store) -> int:
    return store.config.execute_sql("SELECT count(*) FROM audit").fetchone()[0]


def test_a_broken_audit_chain_is_kept_whole_and_said_once(
    store: Store, writer: HistoryWriter
) -> None:
    writer.configure(History(audit_days=1, audit_max=1000))
    now = T0 + 400 * 86400
    for i in range(1300):
        store.audit("cli:old", "config.commit", at=now - 60 * 86400 + i)
    store.config.execute_sql("UPDATE audit SET detail = 'rewritten' WHERE id = 7")
    assert writer.prune_records(now)["audit"] == 0
    writer.prune_records(now)
    assert rows_of_audit(store) == 1300
    broken = [m for m in quota_events(store) if "not pruned" in m]
    assert broken == [
        "the audit log is not pruned: the chain breaks at row 7: "
        "it, or the row before it, was changed after it was written"
    ]
