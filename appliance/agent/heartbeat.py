"""The heartbeat to the fleet: built (pure), queued in the outbox, delivered in order over HTTPS.

`build(...)` turns what the roles publish into one ``appliance-heartbeat/1``
document (schema: heartbeat.schema.json next to this file). `FleetSender`
queues one heartbeat per interval into the bounded outbox and delivers the
queue oldest first, each with its own ``Idempotency-Key``; after a failure it
waits `backoff_delay(failures)` before the next attempt. The fleet's answer
``{"ack_cursor", "interval", "identify"}`` is checked field by field
(`parse_answer`): a malformed field is ignored and reported as a
``fleet.bad_answer`` event (at most one per `EVENT_EVERY_S`).

TLS is always verified (fleet.ca_cert or the system store). A certificate
that does not verify is a ``fleet.tls_error`` event; the heartbeat stays
queued and is retried later, with the same verification.

Events: each heartbeat carries up to `EVENTS_MAX` events after the last
event already queued (`FLEET_QUEUED`), so an outage does not repeat the same
events in every queued heartbeat; when heartbeats are dropped at the bound,
or the fleet acknowledges less than it was sent, the queue cursor goes back
so that nothing unacknowledged is lost (the receiver de-duplicates events by id).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import math
import os
import random
import ssl
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from appliance import __version__
from appliance.agent.outbox import (
    FLEET_ACK,
    FLEET_QUEUED,
    Outbox,
    backoff_delay,
    get_cursor,
    next_seq,
    set_cursor,
)
from appliance.agent.tlsutil import client_context
from appliance.config.agent import Fleet
from appliance.config.redact import redact_url
from appliance.errors import ApplianceError, FleetError
from appliance.state.db import Event

log = logging.getLogger(__name__)

SCHEMA = "appliance-heartbeat/1"
SCHEMA_PATH = Path(__file__).with_name("heartbeat.schema.json")
EVENTS_MAX = 500
ALARMS_MAX = 100
TOP_CONDUITS = 5
INTERVAL_MIN, INTERVAL_MAX = 5.0, 86400.0
ANSWER_MAX = 64 * 1024
EVENT_EVERY_S = 600.0  # rate limit of fleet.bad_answer / fleet.tls_error / fleet.rejected events
SERIAL_PATH = Path("/sys/class/dmi/id/product_serial")
DELIVER_MAX = 100  # heartbeats per delivery round
POISON_STATUSES = (400, 413, 415, 422)  # the fleet will never take this body: drop it


# -- unit identity ---------------------------------------------------------------


def unit_id(data_dir: Path) -> str:
    """The unit's uuid, made once and kept in <data_dir>/unit-id (not wiped by factory reset)."""
    path = Path(data_dir) / "unit-id"
    try:
        return str(uuid.UUID(path.read_text().strip()))
    except FileNotFoundError:
        damaged = False
    except (ValueError, OSError):
        damaged = True
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(str(uuid.uuid4()) + "\n")
    try:
        if damaged:
            log.warning("%s was unreadable: the unit gets a new id", path)
            os.replace(tmp, path)
        else:
            with contextlib.suppress(FileExistsError):  # another process was first: theirs wins
                os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return str(uuid.UUID(path.read_text().strip()))


def read_serial(path: Path = SERIAL_PATH) -> str | None:
    try:
        text = path.read_text(errors="replace").strip()
    except OSError:
        return None
    return text or None


# -- building (pure) --------------------------------------------------------------


def _int(v: Any) -> int:
    try:
        return max(0, int(v))
    except (TypeError, ValueError):
        return 0


def links_of(net: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    out = []
    for lk in (net or {}).get("links") or []:
        if not isinstance(lk, Mapping) or lk.get("role") not in ("it", "ot", "mgmt"):
            continue
        up = bool(lk.get("present")) and str(lk.get("oper", "")).upper() == "UP"
        out.append({"name": str(lk.get("name", "")), "role": lk["role"], "up": up})
    return out


def conduits_of(net: Mapping[str, Any] | None, count: int) -> dict[str, Any]:
    net = net or {}
    drops = {
        str(k).removeprefix("drop_"): _int((v or {}).get("packets"))
        for k, v in sorted((net.get("drops") or {}).items())
        if isinstance(v, Mapping)
    }
    conduits = [
        {"name": str(n), "packets": _int(c.get("packets")), "bytes": _int(c.get("bytes"))}
        for n, c in (net.get("conduits") or {}).items()
        if isinstance(c, Mapping)
    ]
    conduits.sort(key=lambda c: (-c["packets"], c["name"]))
    return {"count": count, "drops": drops, "top": conduits[:TOP_CONDUITS]}


def devices_of(field_doc: Mapping[str, Any] | None) -> dict[str, int]:
    devs = [d for d in ((field_doc or {}).get("devices") or {}).values() if isinstance(d, Mapping)]
    return {
        "total": len(devs),
        "ok": sum(1 for d in devs if d.get("state") == "ok"),
        "down": sum(1 for d in devs if d.get("state") == "down"),
    }


def tags_of(field_doc: Mapping[str, Any] | None) -> dict[str, int]:
    tags = [t for t in ((field_doc or {}).get("tags") or {}).values() if isinstance(t, Mapping)]
    return {
        "total": len(tags),
        "good": sum(1 for t in tags if t.get("quality") == "good"),
        "bad": sum(1 for t in tags if t.get("quality") == "bad"),
    }


def alarms_of(field_doc: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    active = ((field_doc or {}).get("alarms") or {}).get("active") or []
    out = []
    for a in active:
        if not isinstance(a, Mapping) or a.get("severity") not in ("critical", "warning"):
            continue
        try:
            out.append(
                {
                    "id": int(a["id"]),
                    "key": str(a.get("key", "")),
                    "tag": a.get("tag"),
                    "device": a.get("device"),
                    "kind": str(a.get("kind", "")),
                    "severity": a["severity"],
                    "raised_at": a.get("raised_at"),
                    "acked": bool(a.get("acked")),
                    "message": str(a.get("message", "")),
                }
            )
        except (KeyError, TypeError, ValueError):
            continue
    out.sort(key=lambda a: (a["severity"] != "critical", a["raised_at"] or 0, a["id"]))
    return out[:ALARMS_MAX]


def event_summary(e: Mapping[str, Any]) -> dict[str, Any]:
    return {k: e[k] for k in ("id", "at", "kind", "severity", "source", "message")}


@dataclass(frozen=True)
class HeartbeatInputs:
    heartbeat_id: str
    unit: Mapping[str, Any]  # {id, name, site, serial}
    seq: int
    sent_at: float
    uptime_s: float | None
    health: Mapping[str, Any]  # Health.as_dict()
    net: Mapping[str, Any] | None
    field: Mapping[str, Any] | None
    conduit_count: int
    events: Sequence[Mapping[str, Any]] = ()
    events_cursor: int = 0
    outbox_queued: int = 0
    outbox_dropped: int = 0
    audit_head: tuple[int, str] | None = None  # Store.audit_head()


def build(i: HeartbeatInputs) -> dict[str, Any]:
    """The heartbeat document (pure)."""
    applied = (i.net or {}).get("applied") or {}
    revision = {
        "id": applied.get("revision"),
        "sha256": applied.get("sha256"),
        "state": applied.get("state"),
        "confirm_deadline": applied.get("confirm_deadline"),
    }
    return {
        "schema": SCHEMA,
        "id": i.heartbeat_id,
        "unit": {k: i.unit.get(k) for k in ("id", "name", "site", "serial")},
        "seq": i.seq,
        "sent_at": i.sent_at,
        "firmware": __version__,
        "uptime_s": i.uptime_s,
        "health": {"state": i.health["state"], "reasons": list(i.health.get("reasons", []))},
        "revision": revision,
        "links": links_of(i.net),
        "conduits": conduits_of(i.net, i.conduit_count),
        "devices": devices_of(i.field),
        "tags": tags_of(i.field),
        "alarms": alarms_of(i.field),
        "events": [event_summary(e) for e in i.events][:EVENTS_MAX],
        "events_cursor": i.events_cursor,
        "outbox": {"queued": i.outbox_queued, "dropped": i.outbox_dropped},
        "audit": {
            "head_id": i.audit_head[0] if i.audit_head else None,
            "head": i.audit_head[1] if i.audit_head else None,
        },
    }


@cache
def schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text())


def validate(doc: Mapping[str, Any]) -> list[str]:
    """Schema violations of a heartbeat (empty: valid), each as 'path: message'."""
    from jsonschema import Draft202012Validator

    v = Draft202012Validator(schema(), format_checker=Draft202012Validator.FORMAT_CHECKER)
    out = []
    for err in sorted(v.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path))):
        path = ".".join(str(p) for p in err.absolute_path) or "(document)"
        out.append(f"{path}: {err.message}")
    return out


def events_after(cursor: int, limit: int = EVENTS_MAX) -> list[dict[str, Any]]:
    rows = Event.select().where(Event.id > cursor).order_by(Event.id).limit(limit)
    return [e.as_dict() for e in rows]


# -- the fleet's answer (pure) -----------------------------------------------------


@dataclass(frozen=True)
class Answer:
    ack_cursor: int | None = None
    interval: float | None = None
    identify: bool | None = None
    problems: tuple[str, ...] = field(default=())


def parse_answer(raw: bytes) -> Answer:
    """The fleet's answer; every malformed part is ignored and named in `problems`."""
    if not raw.strip():
        return Answer()
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return Answer(problems=("the answer is not JSON",))
    if not isinstance(doc, dict):
        return Answer(problems=(f"the answer is a JSON {type(doc).__name__}, not an object",))
    problems = []
    ack = doc.get("ack_cursor")
    if ack is not None and (isinstance(ack, bool) or not isinstance(ack, int) or ack < 0):
        problems.append(f"ack_cursor: {ack!r} is not a non-negative integer")
        ack = None
    interval = doc.get("interval")
    if interval is not None:
        ok = isinstance(interval, int | float) and not isinstance(interval, bool)
        if not ok or not math.isfinite(interval) or not INTERVAL_MIN <= interval <= INTERVAL_MAX:
            problems.append(
                f"interval: {interval!r} is not a number of seconds in "
                f"{INTERVAL_MIN:g}..{INTERVAL_MAX:g}"
            )
            interval = None
    identify = doc.get("identify")
    if identify is not None and not isinstance(identify, bool):
        problems.append(f"identify: {identify!r} is not true or false")
        identify = None
    return Answer(
        ack_cursor=ack,
        interval=float(interval) if interval is not None else None,
        identify=identify,
        problems=tuple(problems),
    )


# -- HTTP ----------------------------------------------------------------------------


def post_json(
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    context: ssl.SSLContext | None,
    timeout: float,
) -> tuple[int, bytes]:
    """POST `body`; (status, answer up to ANSWER_MAX bytes). FleetError on any failure to talk."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    conn: http.client.HTTPConnection
    if parts.scheme == "https":
        conn = http.client.HTTPSConnection(host, parts.port, timeout=timeout, context=context)
    else:
        conn = http.client.HTTPConnection(host, parts.port, timeout=timeout)
    try:
        conn.request(
            "POST",
            path,
            body=body,
            headers={
                "Content-Type": "application/json",
                "User-Agent": f"appliance/{__version__}",
                **headers,
            },
        )
        resp = conn.getresponse()
        return resp.status, resp.read(ANSWER_MAX)
    except ssl.SSLCertVerificationError as e:
        raise FleetError("tls", f"certificate of {host} not trusted: {e.verify_message}") from None
    except ssl.SSLError as e:
        raise FleetError("tls", f"TLS with {host} failed: {e.reason or e}") from None
    except (OSError, http.client.HTTPException) as e:
        raise FleetError("unreachable", f"{host}: {e.__class__.__name__}: {e}") from None
    finally:
        conn.close()


# -- the sender ------------------------------------------------------------------


@dataclass
class FleetStatus:
    url: str | None = None
    last_ok: float | None = None
    last_error: str | None = None
    outbox: int = 0
    dropped: int = 0
    interval: float | None = None
    failures: int = 0
    next_attempt: float | None = None
    seq: int = 0

    def live(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "last_ok": self.last_ok,
            "last_error": self.last_error,
            "outbox": self.outbox,
            "dropped": self.dropped,
            "interval": self.interval,
            "failures": self.failures,
            "next_attempt": self.next_attempt,
            "seq": self.seq,
        }


class FleetSender:
    """Queues and delivers heartbeats for one fleet configuration.

    `event(kind, message, severity)` records an event (the role passes
    Store.event); `on_identify()` is called when the fleet asks for it.
    """

    def __init__(
        self,
        fleet: Fleet,
        *,
        event: Callable[..., Any],
        on_identify: Callable[[], None],
        rand: Callable[[], float] = random.random,
        post: Callable[..., tuple[int, bytes]] = post_json,
    ) -> None:
        self.fleet = fleet
        self.outbox = Outbox(fleet.outbox_max)
        self._event = event
        self._on_identify = on_identify
        self._rand = rand
        self._post = post
        self._last_event_at: dict[str, float] = {}
        # what people see (the status viewers read, events, syslog): no credentials
        self.shown_url = redact_url(fleet.url, strict=True)
        self.status = FleetStatus(url=self.shown_url, interval=fleet.interval)
        self.interval = fleet.interval
        self.next_heartbeat = 0.0
        self._context: ssl.SSLContext | None = None
        self.backlog = False  # more events wait than one heartbeat carries
        dropped, _ = self.outbox.enforce_bound()  # a smaller bound applies at once
        if dropped:
            set_cursor(FLEET_QUEUED, min(get_cursor(FLEET_QUEUED), get_cursor(FLEET_ACK)))
        self._refresh()

    def _refresh(self) -> None:
        self.status.outbox = self.outbox.count()
        self.status.dropped = self.outbox.dropped()
        self.status.interval = self.interval

    def _rate_limited_event(self, kind: str, message: str, severity: str, now: float) -> None:
        if now - self._last_event_at.get(kind, -math.inf) < EVENT_EVERY_S:
            return
        self._last_event_at[kind] = now
        self._event(kind, message, severity=severity, data={"url": self.shown_url})

    def context(self) -> ssl.SSLContext:
        if self._context is None:
            self._context = client_context(
                self.fleet.ca_cert,
                self.fleet.client_cert,
                self.fleet.client_key,
                field="fleet.ca_cert",
            )
        return self._context

    # -- queueing --------------------------------------------------------------

    def due(self, now: float) -> bool:
        return now >= self.next_heartbeat

    def enqueue(self, now: float, make: Callable[..., dict[str, Any]]) -> dict[str, Any]:
        """Build the next heartbeat with `make(heartbeat_id, seq, events, events_cursor,
        queued, dropped)` and queue it; returns the document."""
        queued_cursor = get_cursor(FLEET_QUEUED)
        events = events_after(queued_cursor, EVENTS_MAX + 1)
        self.backlog = len(events) > EVENTS_MAX
        events = events[:EVENTS_MAX]
        cursor = events[-1]["id"] if events else queued_cursor
        seq = next_seq(now)
        key = str(uuid.uuid4())
        doc = make(
            heartbeat_id=key,
            seq=seq,
            events=events,
            events_cursor=cursor,
            queued=self.outbox.count(),
            dropped=self.outbox.dropped(),
        )
        pushed = self.outbox.push(
            key, seq, doc, events_from=queued_cursor, events_to=cursor, now=now
        )
        set_cursor(FLEET_QUEUED, cursor, now)
        if pushed.dropped:
            # the events of dropped heartbeats go again with the next one
            back_to = min(pushed.dropped_from or 0, cursor)
            set_cursor(FLEET_QUEUED, max(back_to, get_cursor(FLEET_ACK)), now)
            log.warning("outbox full: dropped %d oldest heartbeat(s)", pushed.dropped)
        self.status.seq = seq
        # with more events waiting, the next heartbeat comes soon
        soon = min(self.interval, INTERVAL_MIN) if self.backlog else self.interval
        self.next_heartbeat = now + soon
        self._refresh()
        return doc

    # -- delivery --------------------------------------------------------------

    def deliver(
        self, now: float, stopping: Callable[[], bool] = lambda: False, limit: int = DELIVER_MAX
    ) -> int:
        """Send the queue oldest first until it is empty, a failure, `limit` heartbeats (the
        rest on the next call: syslog and webhooks get their turn) or `stopping()`."""
        if self.status.next_attempt is not None and now < self.status.next_attempt:
            return 0
        sent = 0
        for _ in range(limit):
            if stopping():
                break
            item = self.outbox.first()
            if item is None:
                break
            try:
                ok = self._send(item, now)
            except FleetError as e:
                self._failed(item, e, now)
                break
            if ok:
                sent += 1
        self._refresh()
        return sent

    def _send(self, item: Any, now: float) -> bool:
        headers = {"Idempotency-Key": item.key}
        if self.fleet.token:
            headers["Authorization"] = f"Bearer {self.fleet.token}"
        try:
            ctx = self.context()
        except ApplianceError as e:
            raise FleetError("tls", str(e)) from None
        status, raw = self._post(
            self.fleet.url, item.body.encode(), headers, ctx, self.fleet.timeout
        )
        if 200 <= status < 300:
            self.outbox.delivered(item)
            self.status.last_ok = now
            self.status.last_error = None
            self.status.failures = 0
            self.status.next_attempt = None
            self._answer(parse_answer(raw), item, now)
            return True
        if status in POISON_STATUSES:
            self.outbox.delivered(item)  # never accepted: retrying would block the queue
            self._rate_limited_event(
                "fleet.rejected",
                f"the fleet refused heartbeat {item.seq} (HTTP {status}); dropped it",
                "warning",
                now,
            )
            self.status.last_error = f"HTTP {status}: heartbeat {item.seq} refused, dropped"
            return False
        raise FleetError("http", f"the fleet answered HTTP {status}", status)

    def _failed(self, item: Any, e: FleetError, now: float) -> None:
        self.outbox.failed(item, str(e), now)
        self.status.failures += 1
        self.status.last_error = str(e)
        delay = backoff_delay(self.status.failures, rand=self._rand())
        self.status.next_attempt = now + delay
        if e.kind == "tls":
            self._rate_limited_event(
                "fleet.tls_error", f"fleet {self.shown_url}: {e}", "error", now
            )
        elif e.status in (401, 403):
            self._rate_limited_event(
                "fleet.rejected",
                f"fleet {self.shown_url}: {e} (check the unit's token)",
                "warning",
                now,
            )
        log.info("heartbeat %d not delivered (%s); next attempt in %.0f s", item.seq, e, delay)

    def _answer(self, answer: Answer, item: Any, now: float) -> None:
        problems = list(answer.problems)
        queued = get_cursor(FLEET_QUEUED)
        ack = answer.ack_cursor
        if ack is not None and ack > item.events_to:
            problems.append(f"ack_cursor: {ack} is beyond what was sent ({item.events_to})")
            ack = None
        if ack is not None:
            set_cursor(FLEET_ACK, ack, now)
            if self.outbox.count() == 0 and ack < queued:
                set_cursor(FLEET_QUEUED, ack, now)  # the fleet lacks some: send them again
        if answer.interval is not None and answer.interval != self.interval:
            log.info("the fleet sets the heartbeat interval to %g s", answer.interval)
            self.next_heartbeat += answer.interval - self.interval
            self.interval = answer.interval
        if answer.identify:
            self._on_identify()
        if problems:
            log.warning("malformed fleet answer ignored: %s", "; ".join(problems))
            self._rate_limited_event(
                "fleet.bad_answer",
                "the fleet's answer was malformed and ignored: " + "; ".join(problems)[:300],
                "warning",
                now,
            )
