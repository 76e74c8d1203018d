"""How the operator pages say things (pure): ages, overdue units, health colours, summaries."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

DEFAULT_INTERVAL = 60.0  # the agent's default heartbeat interval
OVERDUE_FACTOR = 3  # a unit is overdue after missing about this many heartbeats

HEALTH_CLASSES = {
    "ok": "ok",
    "identify": "ok",
    "booting": "info",
    "pending-confirm": "warn",
    "degraded": "warn",
    "fault": "bad",
}


def age(now: float, then: float | None) -> str:
    """`then` as a short age: "12 s ago", "5 min ago", "3 h ago", "2 d ago", "never"."""
    if then is None:
        return "never"
    seconds = now - then
    if seconds < -1:
        return "in the future (clock?)"
    seconds = max(seconds, 0)
    if seconds < 90:
        return f"{seconds:.0f} s ago"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 36 * 3600:
        return f"{seconds / 3600:.0f} h ago"
    return f"{seconds / 86400:.0f} d ago"


def when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def expected_interval(requested: float | None, observed_gap: float | None) -> float:
    """The interval a unit is expected to report at: what was asked, else what it did."""
    if requested:
        return requested
    if observed_gap and observed_gap > 0:
        return observed_gap
    return DEFAULT_INTERVAL


def overdue(
    now: float, last_seen: float | None, requested: float | None, observed_gap: float | None
) -> bool:
    """True when a unit that reported before has been silent for several intervals."""
    if last_seen is None:
        return False
    return now - last_seen > OVERDUE_FACTOR * expected_interval(requested, observed_gap)


def health_class(state: str | None) -> str:
    """CSS class of a health state (unknown states are neutral, not alarming)."""
    if state is None:
        return "none"
    return HEALTH_CLASSES.get(state, "info")


def revision_text(rev_id: int | None, state: str | None, sha256: str | None) -> str:
    if rev_id is None and not sha256:
        return "-"
    parts = [f"r{rev_id}" if rev_id is not None else "r?"]
    if state:
        parts.append(state)
    if sha256:
        parts.append(sha256[:12])
    return " ".join(parts)


def bytes_text(n: int | None) -> str:
    """A size in bytes as people read it: "812 B", "4.2 MiB", "1.3 GiB"."""
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def seconds_text(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:g} s"
    if seconds < 7200:
        return f"{seconds / 60:g} min"
    return f"{seconds / 3600:g} h"


def report_summary(body: dict[str, Any] | None) -> dict[str, Any]:
    """What the unit page shows of its newest report, tolerant of shapes it does not know."""
    if not isinstance(body, dict):
        return {}
    out: dict[str, Any] = {}
    links = body.get("links")
    if isinstance(links, list):
        out["links"] = [
            {
                "name": str(link.get("name", "?")),
                "role": str(link.get("role", "")),
                "up": link.get("up"),
            }
            for link in links
            if isinstance(link, dict)
        ]
    for section in ("conduits", "devices", "tags"):
        value = body.get(section)
        if isinstance(value, dict):
            out[section] = {
                k: v for k, v in value.items() if isinstance(v, str | int | float | bool)
            }
    alarms = body.get("alarms")
    if isinstance(alarms, list):
        out["alarms"] = [
            {
                "severity": str(a.get("severity", "")),
                "message": str(a.get("message") or a.get("key") or a),
            }
            for a in alarms
            if isinstance(a, dict)
        ]
    if isinstance(body.get("uptime_s"), int | float):
        out["uptime"] = seconds_text(float(body["uptime_s"]))
    return out
