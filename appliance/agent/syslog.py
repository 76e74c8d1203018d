"""Events to a SIEM as RFC 5424 syslog over UDP, TCP (RFC 6587 octet counting) or TLS (RFC 5425).

`format_event` is pure: one event dict (as `Event.as_dict()`) to one RFC 5424
message::

    <134>1 2026-11-25T20:10:00.123456+00:00 unit-1 appliance 812 net.drift - ...
    [event@32473 id="42" source="net" severity="warning"] ruleset drift repaired

PRI = facility (local0 = 16 ... local7 = 23) * 8 + severity code. MSGID is the
event kind (printable ASCII, at most 32 characters). SD-PARAM values escape
``"``, ``\\`` and ``]`` with a backslash as RFC 5424 section 6.3.3 says. The
message is UTF-8 without a BOM (the RFC allows that: MSG-ANY).

`Sender` owns one connection and reconnects on the next send after a failure.
`Forwarder` sends the events after a per-target cursor kept in the history DB,
so a SIEM that was unreachable gets what it missed (at most `BACKLOG_MAX` of
it), filtered by the target's `min_severity`. What it sends is bounded (IEC 62443-4-2
CR 7.1 RE 1): at most `RATE_MAX` messages a second per target, bursts of `BURST_MAX`;
beyond, the forwarder pauses and goes on from its cursor (nothing is dropped that the
backlog keeps), so an event storm on the unit does not become a flood on the SIEM.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import select
import socket
import ssl
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from appliance.agent.outbox import get_cursor, has_cursor, set_cursor
from appliance.agent.tlsutil import client_context
from appliance.config.agent import SEVERITY_ORDER, Syslog
from appliance.state.db import Event
from appliance.tokenbucket import Limiter

log = logging.getLogger(__name__)

PEN = 32473  # RFC 5612's example enterprise number, as RFC 5424 uses it
SD_ID = f"event@{PEN}"
APP_NAME = "appliance"
NIL = "-"
BACKLOG_MAX = 1000  # per target: older events are skipped (and counted) after a long outage
BATCH = 200
RATE_MAX = 100.0  # messages a second per target, on average
BURST_MAX = 500  # messages at once before RATE_MAX applies
ALERTS_MAX = 16  # alerts waiting for the next forward (the oldest go first)

# RFC 5424 section 6.2.1 severities; event severities map onto them
SEVERITY_CODE: dict[str, int] = {
    "emergency": 0,
    "alert": 1,
    "critical": 2,
    "error": 3,
    "warning": 4,
    "notice": 5,
    "info": 6,
    "debug": 7,
}
FACILITY_CODE: dict[str, int] = {f"local{n}": 16 + n for n in range(8)}


def _printascii(text: str, limit: int) -> str:
    """Printable US-ASCII (33..126) only, at most `limit` characters; NILVALUE if empty."""
    out = "".join(c if 33 <= ord(c) <= 126 else "_" for c in text)[:limit]
    return out or NIL


def _sd_name(text: str) -> str:
    return "".join(c for c in _printascii(text, 32) if c not in '= ]"') or "x"


def escape_param(value: str) -> str:
    """An SD-PARAM value with `"`, `\\` and `]` escaped (RFC 5424 6.3.3)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def timestamp(at: float) -> str:
    """RFC 3339 time with microseconds and the local zone offset (RFC 5424 6.2.3)."""
    return datetime.fromtimestamp(at).astimezone().isoformat(timespec="microseconds")


def pri(facility: str, severity: str) -> int:
    return FACILITY_CODE[facility] * 8 + SEVERITY_CODE.get(severity, SEVERITY_CODE["info"])


def format_event(
    event: Mapping[str, Any],
    *,
    hostname: str,
    procid: int | str | None = None,
    facility: str = "local0",
) -> str:
    """One RFC 5424 message for an event (pure)."""
    params = {
        "id": str(event.get("id", "")),
        "source": str(event.get("source", "")),
        "severity": str(event.get("severity", "info")),
    }
    sd = "[" + SD_ID
    for name, value in params.items():
        sd += f' {_sd_name(name)}="{escape_param(value)}"'
    sd += "]"
    header = " ".join(
        [
            f"<{pri(facility, str(event.get('severity', 'info')))}>1",
            timestamp(float(event.get("at") or time.time())),
            _printascii(hostname, 255),
            APP_NAME,
            _printascii(str(procid) if procid is not None else "", 128),
            _printascii(str(event.get("kind", "")), 32),
            sd,
        ]
    )
    message = str(event.get("message", ""))
    return f"{header} {message}" if message else header


def severity_passes(severity: str, minimum: str) -> bool:
    """Whether an event of `severity` is at least `minimum` (unknown severities count as info)."""
    rank = {s: i for i, s in enumerate(SEVERITY_ORDER)}
    return rank.get(severity, rank["info"]) >= rank[minimum]


def frame_octet_counting(message: bytes) -> bytes:
    """RFC 6587 3.4.1 / RFC 5425 4.3: MSG-LEN SP SYSLOG-MSG."""
    return str(len(message)).encode() + b" " + message


class Sender:
    """One syslog target; connects lazily and again after a failure."""

    UDP_MAX = 8192  # larger datagrams are truncated (RFC 5426 says keep under the path MTU)

    def __init__(self, target: Syslog, timeout: float = 5.0) -> None:
        self.target = target
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._addr: tuple[Any, ...] | None = None

    def _connect(self) -> socket.socket:
        t = self.target
        port = t.effective_port()
        kind = socket.SOCK_DGRAM if t.transport == "udp" else socket.SOCK_STREAM
        infos = socket.getaddrinfo(t.host, port, type=kind)
        if not infos:
            raise OSError(f"cannot resolve {t.host}")
        family, socktype, proto, _, addr = infos[0]
        sock = socket.socket(family, socktype, proto)
        sock.settimeout(self.timeout)
        try:
            if t.transport == "udp":
                self._addr = addr
                return sock
            sock.connect(addr)
            if t.transport == "tls":
                ctx = client_context(t.ca_cert)
                sock = ctx.wrap_socket(sock, server_hostname=t.host)
            return sock
        except BaseException:
            sock.close()
            raise

    def _peer_closed(self) -> bool:
        """Whether the receiver closed the stream: it never sends, so readable means closed
        (or a TLS close_notify). Checked before each message, so a receiver that restarted
        costs a reconnect instead of a message written into a dead connection."""
        if self._sock is None or self.target.transport == "udp":
            return False
        try:
            readable, _, _ = select.select([self._sock], [], [], 0)
        except (OSError, ValueError):
            return True
        return bool(readable)

    def send(self, message: str) -> None:
        data = message.encode("utf-8")
        if self._peer_closed():
            self.close()
        if self._sock is None:
            self._sock = self._connect()
        try:
            if self.target.transport == "udp":
                assert self._addr is not None
                self._sock.sendto(data[: self.UDP_MAX], self._addr)
            else:
                self._sock.sendall(frame_octet_counting(data))
        except OSError:
            self.close()
            raise

    def close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None


def cursor_name(target: Syslog) -> str:
    return f"syslog:{target.label()}"


class Forwarder:
    """Sends new events to each target from its cursor; keeps per-target status."""

    def __init__(self, hostname: str | None = None) -> None:
        self.hostname = hostname or socket.gethostname()
        self.procid = os.getpid()
        self._senders: dict[str, Sender] = {}
        self.status: dict[str, dict[str, Any]] = {}
        self._retry_at: dict[str, float] = {}
        self._rate = Limiter(RATE_MAX, BURST_MAX)
        self._alerts: collections.deque[dict[str, Any]] = collections.deque(maxlen=ALERTS_MAX)

    def alert(self, message: str, now: float, *, severity: str, kind: str) -> None:
        """A message for every receiver at the next `forward`, ahead of the events and
        outside their cursor and rate: what the unit must say even when its events table
        cannot be written (the audit log failing). Safe from any thread."""
        event = {"id": 0, "at": now, "source": "agent", "kind": kind}
        event.update(severity=severity, message=message)
        self._alerts.append(event)

    def configure(self, targets: list[Syslog], now: float) -> None:
        labels = {t.label(): t for t in targets}
        for label in list(self._senders):
            if label not in labels or self._senders[label].target != labels[label]:
                self._senders.pop(label).close()
        for label, t in labels.items():
            if label not in self._senders:
                self._senders[label] = Sender(t)
                # a new target starts at the newest event: not a flood of old history
                if not has_cursor(cursor_name(t)):
                    newest = Event.select(Event.id).order_by(Event.id.desc()).first()
                    set_cursor(cursor_name(t), newest.id if newest else 0, now)
            self.status.setdefault(
                label,
                {"target": label, "last_ok": None, "last_error": None, "sent": 0, "paused": 0},
            )
        for label in list(self.status):
            if label not in labels:
                del self.status[label]

    def forward(self, now: float, stopping: Any = lambda: False) -> int:
        """Send what is new to every target; returns how many messages went out."""
        sent = 0
        while self._alerts and self._senders:
            event = self._alerts.popleft()
            for label, sender in self._senders.items():
                facility = sender.target.facility
                line = format_event(
                    event, hostname=self.hostname, procid=self.procid, facility=facility
                )
                try:
                    sender.send(line)
                    sent += 1
                except (OSError, ssl.SSLError, ValueError) as e:
                    self.status[label]["last_error"] = f"{e.__class__.__name__}: {e}"
        for label, sender in self._senders.items():
            if stopping():
                break
            if now < self._retry_at.get(label, 0.0):
                continue
            sent += self._forward_one(label, sender, now, stopping)
        return sent

    def _forward_one(self, label: str, sender: Sender, now: float, stopping: Any) -> int:
        t = sender.target
        name = cursor_name(t)
        cursor = get_cursor(name)
        newest = Event.select(Event.id).order_by(Event.id.desc()).first()
        if newest is not None and newest.id - cursor > BACKLOG_MAX:
            skipped = newest.id - BACKLOG_MAX - cursor
            log.warning("syslog %s: skipping %d old events after an outage", label, skipped)
            cursor = newest.id - BACKLOG_MAX
            set_cursor(name, cursor, now)
        st = self.status[label]
        sent = 0
        while not stopping():
            rows = list(Event.select().where(Event.id > cursor).order_by(Event.id).limit(BATCH))
            if not rows:
                break
            for ev in rows:
                if severity_passes(ev.severity, t.min_severity):
                    wait = self._rate.check((label,), now)
                    if wait > 0:  # over the bound: go on from here in `wait` seconds
                        self._retry_at[label] = now + wait
                        st["paused"] = st.get("paused", 0) + 1
                        set_cursor(name, cursor, now)
                        return sent
                    line = format_event(
                        ev.as_dict(),
                        hostname=self.hostname,
                        procid=self.procid,
                        facility=t.facility,
                    )
                    try:
                        sender.send(line)
                    except (OSError, ssl.SSLError, ValueError) as e:
                        st["last_error"] = f"{e.__class__.__name__}: {e}"
                        self._retry_at[label] = now + 5.0
                        set_cursor(name, cursor, now)
                        return sent
                    sent += 1
                    st["sent"] += 1
                    st["last_ok"] = now
                    st["last_error"] = None
                cursor = ev.id
            set_cursor(name, cursor, now)
        return sent

    def close(self) -> None:
        for s in self._senders.values():
            s.close()
        self._senders.clear()

    def live(self) -> list[dict[str, Any]]:
        return [dict(v) for _, v in sorted(self.status.items())]
