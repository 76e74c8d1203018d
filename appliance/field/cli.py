"""`appliance tags`, `appliance alarms` and `appliance sql`: field data on the command line.

Registered on the main CLI by appliance.cli (`cli.add_command(tags)` etc.). Errors are
ApplianceError subclasses; appliance.cli.main prints them as one line.
"""

from __future__ import annotations

import json
import math
import re
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import click

from appliance.cli_options import actor, paths_options
from appliance.errors import BadRequest, NotFound
from appliance.paths import Paths

_RELATIVE = re.compile(r"^-?\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d|w)$")
_UNITS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}


MAX_TIME = 253_402_300_799  # 9999-12-31T23:59:59Z, the web API's bound too


def parse_time(text: str, now: float, field: str) -> float:
    """ISO 8601 (UTC unless it says otherwise), epoch seconds, `now`, or relative: -1h;
    a time of the years 1970-9999 (1e300 or nan is no time: BadRequest naming `field`)."""
    t = text.strip()
    if t == "now":
        return now
    m = _RELATIVE.match(t)
    if m:
        return _in_range(now - float(m.group(1)) * _UNITS[m.group(2)], text, field)
    try:
        return _in_range(float(t), text, field)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(t)
    except ValueError:
        raise BadRequest(
            f"{text!r} is not a time: use ISO 8601 (2026-11-25T18:00Z), epoch seconds, "
            "now, or relative (-30m, -1h, -2d)",
            field=field,
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return _in_range(dt.timestamp(), text, field)


def _in_range(t: float, text: str, field: str) -> float:
    if not (math.isfinite(t) and 0 <= t <= MAX_TIME):
        raise BadRequest(f"must be a time in the years 1970-9999 (got {text!r})", field=field)
    return t


def fmt_time(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def fmt_value(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def fmt_age(age: float | None) -> str:
    if age is None:
        return "-"
    if age < 60:
        return f"{age:.1f} s"
    if age < 3600:
        return f"{age / 60:.0f} min"
    if age < 86400:
        return f"{age / 3600:.1f} h"
    return f"{age / 86400:.1f} d"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Left-aligned columns, two spaces apart."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    return [line(headers)] + [line(r) for r in rows]


def _store(paths: Paths) -> Any:
    from appliance.field.store import MODELS
    from appliance.state.db import Store

    return Store(paths.data_dir, MODELS)


# -- tags ---------------------------------------------------------------------------------


@click.group("tags", invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="machine-readable")
@paths_options
@click.pass_context
def tags(ctx: click.Context, as_json: bool, paths: Paths) -> None:
    """Live tag values (name, value, unit, quality, age); `tags history` for the past."""
    if ctx.invoked_subcommand is not None:
        return
    from appliance.field.api import list_tags
    from appliance.state.live import LiveState

    live = LiveState(paths.run_dir)
    doc = live.read("field")
    if doc is None:
        raise NotFound(f"no live field values in {paths.run_dir} (is the field role running?)")
    rows = list_tags(live)
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    if rows and rows[0]["stale"]:
        since = fmt_time(doc.get("updated_at"))
        click.echo(f"warning: the field role is not running; values as of {since}", err=True)
    if not rows:
        click.echo("no tags (no devices with tags in the configuration)")
        return
    for line in table(
        ("TAG", "VALUE", "UNIT", "QUALITY", "AGE"),
        [
            (r["name"], fmt_value(r["value"]), r["unit"], r["quality"], fmt_age(r["age"]))
            for r in rows
        ],
    ):
        click.echo(line)


@tags.command("history")
@click.argument("name")
@click.option(
    "--from", "start", default="-1h", show_default=True, help="ISO, epoch or -30m/-1h/-2d"
)
@click.option("--to", "end", default="now", show_default=True, help="ISO, epoch or relative")
@click.option("--limit", "-n", default=10000, show_default=True, type=click.IntRange(1, 1000000))
@click.option("--csv", "as_csv", is_flag=True, help="CSV: time, t, tag, value, quality")
@click.option("--json", "as_json", is_flag=True, help="JSON list of {t, value, quality}")
@paths_options
def tags_history(
    name: str, start: str, end: str, limit: int, as_csv: bool, as_json: bool, paths: Paths
) -> None:
    """Stored samples of tag NAME (<device>.<tag>), oldest first."""
    from appliance.field import api

    if as_csv and as_json:
        raise BadRequest("choose one of --csv and --json")
    now = time.time()
    t0 = parse_time(start, now, "--from")
    t1 = parse_time(end, now, "--to")
    if t1 < t0:  # said here, with the options' names (the API's check says `to`)
        raise BadRequest("the end of the range is before its start", field="--to")
    store = _store(paths)
    try:
        if as_csv:
            click.echo(api.history_csv(store, name, t0, t1, limit), nl=False)
            return
        samples = api.tag_history(store, name, t0, t1, limit)
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps(samples, indent=2))
        return
    if not samples:
        click.echo(f"no samples of {name} between {fmt_time(t0)} and {fmt_time(t1)}")
        return
    for line in table(
        ("TIME", "VALUE", "QUALITY"),
        [(api.iso(s["t"]), fmt_value(s["value"]), s["quality"]) for s in samples],
    ):
        click.echo(line)
    if len(samples) == limit:
        click.echo(f"(first {limit} samples; --limit or a narrower range for more)", err=True)


# -- alarms -------------------------------------------------------------------------------


@click.group("alarms", invoke_without_command=True)
@click.option("--all", "show_all", is_flag=True, help="also cleared alarms (newest first)")
@click.option("--limit", "-n", default=100, show_default=True, type=click.IntRange(1, 100000))
@click.option("--json", "as_json", is_flag=True, help="machine-readable")
@paths_options
@click.pass_context
def alarms(ctx: click.Context, show_all: bool, limit: int, as_json: bool, paths: Paths) -> None:
    """Active alarms (--all: every alarm); `alarms ack ID` acknowledges one."""
    if ctx.invoked_subcommand is not None:
        return
    from appliance.field.api import list_alarms
    from appliance.state.live import LiveState

    store = _store(paths)
    try:
        rows = list_alarms(store, LiveState(paths.run_dir), active_only=not show_all, limit=limit)
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    if not rows:
        click.echo("no alarms" if show_all else "no active alarms")
        return
    for line in table(
        ("ID", "SEVERITY", "STATE", "ACK", "RAISED", "MESSAGE"),
        [
            (
                str(a["id"]),
                a["severity"],
                a["state"],
                (a["acked_by"] or "yes") if a["acked"] else "no",
                fmt_time(a["raised_at"]),
                a["message"],
            )
            for a in rows
        ],
    ):
        click.echo(line)


@alarms.command("ack")
@click.argument("alarm_id", metavar="ID", type=int)
@paths_options
def alarms_ack(alarm_id: int, paths: Paths) -> None:
    """Acknowledge alarm ID (through the running field role, which records who)."""
    from appliance.state.control import call, socket_path

    alarm = call(socket_path(paths.run_dir, "field"), "ack_alarm", id=alarm_id, actor=actor())
    click.echo(f"alarm {alarm['id']} acknowledged by {alarm['acked_by']}: {alarm['message']}")


# -- sql ----------------------------------------------------------------------------------


@click.command("sql")
@click.argument("query")
@click.option("--csv", "as_csv", is_flag=True, help="CSV with a header row")
@click.option("--json", "as_json", is_flag=True, help="{columns, rows, truncated, elapsed_ms}")
@click.option("--max-rows", default=10000, show_default=True, type=click.IntRange(1, 100000))
@click.option("--timeout", default=5.0, show_default=True, type=click.FloatRange(0.01, 300))
@paths_options
def sql(
    query: str, as_csv: bool, as_json: bool, max_rows: int, timeout: float, paths: Paths
) -> None:
    """Run one read-only SELECT over the views samples, tags, alarms, events ('-': stdin).

    Example: appliance sql "SELECT time, value FROM samples WHERE tag = 'plc1.counter'
    ORDER BY t DESC LIMIT 10"
    """
    from appliance.field.api import sql_csv, sql_query

    if as_csv and as_json:
        raise BadRequest("choose one of --csv and --json")
    if not math.isfinite(timeout):  # click's FloatRange lets nan through (nan < x is false)
        raise BadRequest(f"must be 0.01-300 seconds (got {timeout})", field="--timeout")
    if query == "-":
        query = sys.stdin.read()
    result = sql_query(paths, query, max_rows=max_rows, timeout_s=timeout)
    if as_json:
        click.echo(json.dumps(result, indent=2, default=str))
    elif as_csv:
        click.echo(sql_csv(result), nl=False)
    else:
        for line in table(result["columns"], [[fmt_value(v) for v in r] for r in result["rows"]]):
            click.echo(line)
    if result["truncated"]:
        click.echo(f"(stopped at {max_rows} rows; --max-rows for more)", err=True)
