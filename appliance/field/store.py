"""History DB tables of the field area: tag names, samples (hot and cold), alarms; SQL views.

Samples are kept in two tables, because what makes batched writes cheap on flash is
locality, and an index by (tag, time) has none: a batch holding one new value of each of
N tags touches N different leaf pages of that index (measured: a one-transaction batch
then costs as much disk as N one-row commits, about 5 kB per sample). So:

- `sample_recent` (hot): a rowid table in arrival order, no index. A flush appends to its
  last pages only.
- `sample` (cold): WITHOUT ROWID, primary key (tag, t): the index *is* the table, so
  one tag's history over a time range is one B-tree seek and a contiguous scan. The
  writer moves the hot rows here every 15 minutes, sorted by (tag, t), so each tag's
  part of the tree is written once per move, not once per sample.

bench/history.py measures it (1000 tags at 1 Hz): about 185 bytes written to disk per
sample all told (WAL, checkpoints, compaction) against about 4.4 kB for a commit per
row (0.042x), while batches straight into the (tag, t) table write 2.3x *more* than a
commit per row. A sample takes about 24 bytes of the file. Queries of the last 15
minutes scan the hot table (1000 tags: 900 000 short rows, 0.03 s).

Both hold integer keys and compact values: `tag` is an integer id in `tag_name`, `t` is
integer milliseconds since the epoch, `v` has no type affinity (an integer stays an
integer of 1-8 bytes, a float is 8 bytes, a string is text, no value is NULL), and `q`
packs the quality (bits 0-1: 0 good, 1 uncertain, 2 bad) and the kind of value (bit 2:
bool) in one small integer (0 and 1 take no bytes at all in SQLite's record format).

People and programs read history through views (`samples`, `tags`, `alarms`, `events`)
that hide all of this: tag names as text, time as ISO text and epoch seconds, quality
as text. They are the only objects the read-only SQL interface lets a query read.
"""

from __future__ import annotations

import json
from typing import Any

import peewee as pw

from appliance.state.db import HistoryModel

QUALITIES = ("good", "uncertain", "bad")
QUALITY_CODE = {q: i for i, q in enumerate(QUALITIES)}
BOOL_FLAG = 4


def pack_quality(quality: str, value: Any) -> int:
    """`q` column: quality code plus the bool flag."""
    try:
        code = QUALITY_CODE[quality]
    except KeyError:
        raise ValueError(f"quality must be one of {', '.join(QUALITIES)} (got {quality!r})")
    return code | (BOOL_FLAG if isinstance(value, bool) else 0)


def unpack(v: Any, q: int) -> tuple[Any, str]:
    """(value, quality text) from the stored columns."""
    quality = QUALITIES[q & 3] if (q & 3) < len(QUALITIES) else "bad"
    if q & BOOL_FLAG and v is not None:
        v = bool(v)
    return v, quality


def to_ms(t: float) -> int:
    return round(t * 1000)


class TagName(HistoryModel):
    """One row per tag ever stored: the integer id samples refer to, and what it means."""

    id = pw.AutoField()
    name = pw.TextField(unique=True)
    device = pw.TextField(default="")
    unit = pw.TextField(default="")
    description = pw.TextField(default="")

    class Meta:
        table_name = "tag_name"


class SampleRecent(HistoryModel):
    """Hot samples in arrival order (see the module docstring); moved to `sample`."""

    id = pw.AutoField()
    tag = pw.IntegerField()
    t = pw.IntegerField()
    v = pw.BareField(null=True)
    q = pw.SmallIntegerField(default=0)

    class Meta:
        table_name = "sample_recent"


class Sample(HistoryModel):
    """Cold samples: clustered by (tag, t) for history queries and per-tag retention."""

    tag = pw.IntegerField()
    t = pw.IntegerField()
    v = pw.BareField(null=True)
    q = pw.SmallIntegerField(default=0)

    class Meta:
        table_name = "sample"
        primary_key = pw.CompositeKey("tag", "t")
        without_rowid = True


class HistoryMeta(HistoryModel):
    """Small facts the writer measures now and then (e.g. bytes per sample) for readers."""

    key = pw.TextField(primary_key=True)
    value = pw.TextField()

    class Meta:
        table_name = "history_meta"


class AlarmRow(HistoryModel):
    """Every alarm ever raised, with its life: raised, cleared, acknowledged."""

    id = pw.AutoField()
    key = pw.TextField(index=True)
    tag = pw.TextField(null=True)
    device = pw.TextField()
    kind = pw.TextField()
    severity = pw.TextField()
    state = pw.TextField(index=True)
    acked = pw.BooleanField(default=False)
    raised_at = pw.FloatField(index=True)
    cleared_at = pw.FloatField(null=True)
    acked_by = pw.TextField(null=True)
    acked_at = pw.FloatField(null=True)
    value = pw.BareField(null=True)
    limit_value = pw.FloatField(null=True)
    message = pw.TextField(default="")

    class Meta:
        table_name = "alarm"

    @classmethod
    def create_table(cls, safe: bool = True, **options: Any) -> None:
        super().create_table(safe=safe, **options)
        ensure_views(cls._meta.database)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "key": self.key,
            "tag": self.tag,
            "device": self.device,
            "kind": self.kind,
            "severity": self.severity,
            "state": self.state,
            "acked": bool(self.acked),
            "raised_at": self.raised_at,
            "cleared_at": self.cleared_at,
            "acked_by": self.acked_by,
            "acked_at": self.acked_at,
            "value": self.value,
            "limit": self.limit_value,
            "message": self.message,
        }


def _iso(expr: str) -> str:
    return f"strftime('%Y-%m-%dT%H:%M:%fZ', {expr}, 'unixepoch')"


def _quality_text(col: str) -> str:
    return f"CASE ({col} & 3) WHEN 0 THEN 'good' WHEN 1 THEN 'uncertain' ELSE 'bad' END"


# The documented views: the only objects the read-only SQL interface may read.
VIEWS: dict[str, str] = {
    "samples": (
        "CREATE VIEW samples AS SELECT n.name AS tag, n.device AS device, "
        f"{_iso('s.t / 1000.0')} AS time, s.t / 1000.0 AS t, s.v AS value, "
        f"{_quality_text('s.q')} AS quality "
        "FROM (SELECT tag, t, v, q FROM sample UNION ALL "
        "SELECT tag, t, v, q FROM sample_recent) AS s "
        "JOIN tag_name AS n ON n.id = s.tag"
    ),
    "tags": ("CREATE VIEW tags AS SELECT name AS tag, device, unit, description FROM tag_name"),
    "alarms": (
        "CREATE VIEW alarms AS SELECT id, key, tag, device, kind, severity, state, "
        "acked, raised_at, "
        f"{_iso('raised_at')} AS raised_time, cleared_at, "
        f"CASE WHEN cleared_at IS NULL THEN NULL ELSE {_iso('cleared_at')} END "
        "AS cleared_time, acked_by, acked_at, value, limit_value, message FROM alarm"
    ),
    "events": (
        "CREATE VIEW events AS SELECT id, at, "
        f"{_iso('at')} AS time, source, kind, severity, message, data FROM event"
    ),
}

VIEW_COLUMNS: dict[str, tuple[str, ...]] = {
    "samples": ("tag", "device", "time", "t", "value", "quality"),
    "tags": ("tag", "device", "unit", "description"),
    "alarms": (
        "id",
        "key",
        "tag",
        "device",
        "kind",
        "severity",
        "state",
        "acked",
        "raised_at",
        "raised_time",
        "cleared_at",
        "cleared_time",
        "acked_by",
        "acked_at",
        "value",
        "limit_value",
        "message",
    ),
    "events": ("id", "at", "time", "source", "kind", "severity", "message", "data"),
}


def ensure_views(db: pw.Database) -> None:
    """Create the views, replacing any whose definition changed (safe to run concurrently)."""
    for name, sql in VIEWS.items():
        row = db.execute_sql(
            "SELECT sql FROM sqlite_master WHERE type = 'view' AND name = ?", (name,)
        ).fetchone()
        if row and row[0] == sql:
            continue
        with db.atomic():
            db.execute_sql(f"DROP VIEW IF EXISTS {name}")
            db.execute_sql(sql)


def meta_get(key: str) -> Any:
    row = HistoryMeta.get_or_none(HistoryMeta.key == key)
    return None if row is None else json.loads(row.value)


def meta_set(key: str, value: Any) -> None:
    HistoryMeta.insert(key=key, value=json.dumps(value)).on_conflict_replace().execute()


# The field role's tables (history DB): tag names, samples, alarms; handed to `Store` by
# the processes that use them.
MODELS: tuple[type[pw.Model], ...] = (TagName, SampleRecent, Sample, HistoryMeta, AlarmRow)
