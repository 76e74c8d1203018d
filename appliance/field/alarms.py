"""Alarms: limit alarms with hysteresis and delay, communication loss per device, acks.

Limit alarms (`alarms:` of a tag): `high` and `high_high` are raised when the value is
at or above the limit, `low` and `low_low` at or below it, once the violation has lasted
`delay` seconds without a break. They clear when the value is back by more than
`hysteresis` (below `high - hysteresis`, above `low + hysteresis`). Each limit is its own
alarm (a value over high_high has both high and high_high active). Values of bad quality
and values that are not numbers neither raise nor clear a limit alarm: a dead device is
the communication alarm's business, not a limit's.

Communication loss: `comm(device, ok, t)` is called after every poll attempt (the
poller retries inside one attempt). The first failed attempt raises `<device>:comm`
(critical); the first good one clears it. The next attempt after an outage starts
comes within one poll interval and fails within its timeout, so the alarm is up within
two intervals of the outage, and cleared within two of the recovery.

Severity: high_high, low_low and comm are critical, high and low warnings. Every change
(raised, cleared, acknowledged) is a row update in the `alarm` table and an event
(`alarm.raised` / `alarm.cleared` / `alarm.acked`, source field). Active alarms are
reloaded from the table on start. An alarm stays in the table after it clears; a person
acknowledges it (active or cleared) with `ack(id, actor)`.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import peewee as pw

from appliance.config.field import Device
from appliance.errors import NotFound
from appliance.field.store import AlarmRow
from appliance.state.db import Store

log = logging.getLogger(__name__)

KINDS = ("high_high", "high", "low", "low_low")
SEVERITY = {"high_high": "critical", "low_low": "critical", "comm": "critical"}
HIGH_KINDS = frozenset({"high", "high_high"})
LABEL = {"high_high": "high-high", "high": "high", "low": "low", "low_low": "low-low"}

EventHook = Callable[[str, dict[str, Any]], None]


def severity_of(kind: str) -> str:
    return SEVERITY.get(kind, "warning")


@dataclass(frozen=True)
class Limit:
    tag: str
    device: str
    kind: str
    limit: float
    hysteresis: float
    delay: float
    unit: str = ""

    @property
    def key(self) -> str:
        return f"{self.tag}:{self.kind}"

    def violated(self, v: float) -> bool:
        return v >= self.limit if self.kind in HIGH_KINDS else v <= self.limit

    def cleared(self, v: float) -> bool:
        if self.kind in HIGH_KINDS:
            return v < self.limit - self.hysteresis
        return v > self.limit + self.hysteresis


def limits_of(devices: Iterable[Device]) -> dict[str, list[Limit]]:
    """Every configured limit of enabled devices, by tag full name."""
    out: dict[str, list[Limit]] = {}
    for dev in devices:
        if not dev.enabled:
            continue
        for tag in dev.tags:
            if tag.alarms is None:
                continue
            name = f"{dev.name}.{tag.name}"
            for kind in KINDS:
                limit = getattr(tag.alarms, kind)
                if limit is not None:
                    out.setdefault(name, []).append(
                        Limit(
                            name,
                            dev.name,
                            kind,
                            float(limit),
                            tag.alarms.hysteresis,
                            tag.alarms.delay,
                            tag.unit,
                        )
                    )
    return out


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float) and not (isinstance(value, float) and math.isnan(value)):
        return float(value)
    return None


def _fmt(v: float) -> str:
    return f"{v:g}"


class AlarmEngine:
    """Raises, clears and acknowledges alarms; the `alarm` table is its memory.

    Thread-safe: pollers of several devices report values and comm results at once.
    `on_event(kind, alarm)` is called after each change is stored (kind is
    "alarm.raised", "alarm.cleared" or "alarm.acked").
    """

    def __init__(
        self,
        store: Store,
        on_event: EventHook | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.on_event = on_event
        self.clock = clock
        self._lock = threading.RLock()
        self._limits: dict[str, list[Limit]] = {}
        self._intervals: dict[str, float] = {}
        self._pending: dict[str, float] = {}  # key -> since when the limit is violated
        self._last: dict[str, tuple[float, float]] = {}  # tag -> (value, t)
        self._local_id = 0
        self._active: dict[str, dict[str, Any]] = {}
        for row in AlarmRow.select().where(AlarmRow.state == "active").order_by(AlarmRow.id):
            self._active[row.key] = row.as_dict()

    # -- configuration --------------------------------------------------------------

    def configure(self, devices: Iterable[Device], t: float | None = None) -> None:
        """New limits and poll intervals; alarms of limits or devices that are gone clear."""
        devices = list(devices)
        t = self.clock() if t is None else t
        with self._lock:
            self._limits = limits_of(devices)
            self._intervals = {d.name: d.poll_interval for d in devices if d.enabled}
            keys = {lim.key for lims in self._limits.values() for lim in lims}
            self._pending = {k: v for k, v in self._pending.items() if k in keys}
            for key, alarm in list(self._active.items()):
                if alarm["kind"] == "comm":
                    gone = alarm["device"] not in self._intervals
                else:
                    gone = key not in keys
                if gone:
                    self._clear(key, t, "no longer in the configuration")

    def poll_interval(self, device: str) -> float | None:
        return self._intervals.get(device)

    # -- inputs ---------------------------------------------------------------------

    def update(self, tag: str, value: Any, quality: str, t: float) -> list[dict[str, Any]]:
        """A new value of `tag`: raise or clear its limit alarms; returns the changes."""
        limits = self._limits.get(tag)
        if not limits:
            return []
        v = _number(value) if quality != "bad" else None
        changes: list[dict[str, Any]] = []
        with self._lock:
            if v is None:
                self._last.pop(tag, None)
                for lim in limits:
                    self._pending.pop(lim.key, None)
                return []
            self._last[tag] = (v, t)
            for lim in limits:
                changes.extend(self._evaluate(lim, v, t))
        return changes

    def _evaluate(self, lim: Limit, v: float, t: float) -> list[dict[str, Any]]:
        key = lim.key
        if key in self._active:
            self._pending.pop(key, None)
            if lim.cleared(v):
                u = f" {lim.unit}" if lim.unit else ""
                return [self._clear(key, t, f"back to {_fmt(v)}{u}", value=v)]
            return []
        if not lim.violated(v):
            self._pending.pop(key, None)
            return []
        since = self._pending.setdefault(key, t)
        if t - since < lim.delay:
            return []
        self._pending.pop(key, None)
        op = "≥" if lim.kind in HIGH_KINDS else "≤"
        u = f" {lim.unit}" if lim.unit else ""
        message = f"{lim.tag} {LABEL[lim.kind]}: {_fmt(v)}{u} {op} {_fmt(lim.limit)}{u}"
        return [self._raise(key, lim.tag, lim.device, lim.kind, t, v, lim.limit, message)]

    def comm(self, device: str, ok: bool, t: float, error: str | None = None) -> list[dict]:
        """The result of one poll attempt of `device`: raise or clear its comm alarm."""
        key = f"{device}:comm"
        with self._lock:
            if ok:
                if key in self._active:
                    return [self._clear(key, t, "communication restored")]
                return []
            if key in self._active or device not in self._intervals:
                return []
            why = f": {error}" if error else ""
            message = f"{device}: communication lost{why}"
            return [self._raise(key, None, device, "comm", t, None, None, message)]

    def tick(self, t: float) -> list[dict[str, Any]]:
        """Raise limit alarms whose delay has run out since the last value (call ~2/s)."""
        changes: list[dict[str, Any]] = []
        with self._lock:
            for key, since in list(self._pending.items()):
                tag = key.rsplit(":", 1)[0]
                last = self._last.get(tag)
                if last is None:
                    continue
                for lim in self._limits.get(tag, []):
                    if lim.key == key and t - since >= lim.delay:
                        changes.extend(self._evaluate(lim, last[0], t))
        return changes

    def ack(self, id: int, actor: str, t: float | None = None) -> dict[str, Any]:
        """A person acknowledges alarm `id` (active or cleared); acking twice changes nothing."""
        t = self.clock() if t is None else t
        try:
            id = int(id)
        except (TypeError, ValueError):
            raise NotFound(f"no alarm {id!r}", field="id") from None
        with self._lock:
            alarm = next((a for a in self._active.values() if a["id"] == id), None)
            if alarm is None:
                row = AlarmRow.get_or_none(AlarmRow.id == id)
                if row is None:
                    raise NotFound(f"no alarm {id}")
                alarm = row.as_dict()
            if alarm["acked"]:
                return dict(alarm)
            alarm.update(acked=True, acked_by=actor, acked_at=t)
            if alarm["key"] in self._active and self._active[alarm["key"]]["id"] == id:
                self._active[alarm["key"]] = alarm
            self._save(alarm, acked=True, acked_by=actor, acked_at=t)
            self._emit(
                "alarm.acked", alarm, f"{alarm['message']} (acknowledged by {actor})", "info", t
            )
            return dict(alarm)

    # -- what is up -----------------------------------------------------------------

    def active(self) -> list[dict[str, Any]]:
        with self._lock:
            return sorted((dict(a) for a in self._active.values()), key=lambda a: a["raised_at"])

    def counts(self) -> dict[str, int]:
        out = {"critical": 0, "warning": 0}
        with self._lock:
            for a in self._active.values():
                out[a["severity"]] = out.get(a["severity"], 0) + 1
        return out

    def comm_loss(self) -> list[str]:
        with self._lock:
            return sorted(a["device"] for a in self._active.values() if a["kind"] == "comm")

    def live(self) -> dict[str, Any]:
        """The `alarms` part of the field role's live document."""
        return {"active": self.active(), "counts": self.counts()}

    # -- changes --------------------------------------------------------------------

    def _raise(
        self,
        key: str,
        tag: str | None,
        device: str,
        kind: str,
        t: float,
        value: Any,
        limit: float | None,
        message: str,
    ) -> dict[str, Any]:
        alarm: dict[str, Any] = {
            "id": 0,
            "key": key,
            "tag": tag,
            "device": device,
            "kind": kind,
            "severity": severity_of(kind),
            "state": "active",
            "acked": False,
            "raised_at": t,
            "cleared_at": None,
            "acked_by": None,
            "acked_at": None,
            "value": value,
            "limit": limit,
            "message": message,
        }
        try:
            row = AlarmRow.create(
                **{k: v for k, v in alarm.items() if k not in ("id", "limit")},
                limit_value=limit,
            )
            alarm["id"] = row.id
        except pw.DatabaseError as e:  # keep alarming in memory; the table is catching up
            log.error("cannot store alarm %s: %s", key, e)
            self._local_id -= 1
            alarm["id"] = self._local_id
        self._active[key] = alarm
        self._emit("alarm.raised", alarm, message, alarm["severity"], t)
        return dict(alarm)

    def _clear(self, key: str, t: float, why: str, value: Any = None) -> dict[str, Any]:
        alarm = self._active.pop(key)
        alarm.update(state="cleared", cleared_at=t)
        self._save(alarm, state="cleared", cleared_at=t)
        self._emit("alarm.cleared", alarm, f"{alarm['message']}: cleared, {why}", "notice", t)
        return dict(alarm)

    def _save(self, alarm: dict[str, Any], **fields: Any) -> None:
        if alarm["id"] <= 0:
            return
        try:
            AlarmRow.update(**fields).where(AlarmRow.id == alarm["id"]).execute()
        except pw.DatabaseError as e:
            log.error("cannot update alarm %s: %s", alarm["key"], e)

    def _emit(
        self, kind: str, alarm: dict[str, Any], message: str, severity: str, t: float
    ) -> None:
        try:
            self.store.event(kind, message, source="field", severity=severity, data=alarm, at=t)
        except pw.DatabaseError as e:
            log.error("cannot store event %s: %s", kind, e)
        if self.on_event is not None:
            try:
                self.on_event(kind, dict(alarm))
            except Exception:  # a listener's bug must not stop alarming
                log.exception("alarm listener failed")
