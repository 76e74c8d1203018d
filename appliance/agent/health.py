"""Health of the unit: one pure function from what the roles report to a state and its reasons.

`health(inputs, now)` looks at everything, records every finding as a
`Reason`, and picks the state by this precedence (first match wins):

1. ``identify``        an installer asked the unit to identify itself, until ``identify_until``
2. ``booting``         uptime below ``BOOT_GRACE_S``, or the net role has not published yet
                       (while uptime is unknown or below ``BOOT_TIMEOUT_S``; after that the
                       silence is a fault: ``net-silent``)
3. ``fault``           the net role is dead; fail-closed although a confirmed revision is
                       expected; forwarding off; an IT or OT link absent or down (or missing
                       from an applied revision); disk below 2 % free; certificate expired;
                       the audit log cannot be written (changes are refused meanwhile)
4. ``pending-confirm`` a revision waits for confirmation (the reason says how long is left)
5. ``degraded``        drift in the last 10 minutes; a device lost communication; disk
                       below 10 % free; certificate expires within 14 days;
                       management link down; clock not set, or NTP servers configured and
                       none in sync for ``time.unsynchronised_after_minutes``; another
                       expected role dead;
                       the net role reports an error; no revision applied and none expected;
                       an update fell back to the previous slot (until the next one passes)
6. ``ok``              none of the above

Process alarms (a PLC value past a limit) are the plant's, not the unit's: they are not a
reason (`alarms` in the inputs is kept for callers, and ignored), so the LEDs, the badge and
the heartbeat state do not flap with the process; the heartbeat carries the alarms apart.

Reasons list all findings, not only those of the winning state, sorted by
severity (fault, warning, info), then by code. Codes are stable strings for
the heartbeat and the UI; messages are for people. Identify and booting
only add an ``info`` reason. With the clock not set, certificate dates are
not judged (every certificate would look "not yet valid" or far from expiry).

`from_live(...)` builds `HealthInputs` from the live-state documents the
roles publish (`LiveState.read` per role): pure, it takes dicts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, cast

from appliance.roles import ALIVE_WITHIN_S

State = Literal["booting", "ok", "degraded", "fault", "pending-confirm", "identify"]
Severity = Literal["fault", "warning", "info"]

IDENTIFY, BOOTING, FAULT, PENDING, DEGRADED, OK = (
    "identify",
    "booting",
    "fault",
    "pending-confirm",
    "degraded",
    "ok",
)
PRECEDENCE: tuple[str, ...] = (IDENTIFY, BOOTING, FAULT, PENDING, DEGRADED, OK)
SEVERITIES: tuple[str, ...] = ("fault", "warning", "info")

BOOT_GRACE_S = 30.0  # below this uptime the unit says "booting" whatever it sees
BOOT_TIMEOUT_S = 120.0  # a net role still silent after this is a fault, not a slow boot
DRIFT_RECENT_S = 600.0
RESTART_RECENT_S = 600.0  # a role restarted by the supervisor is reported this long
DISK_FAULT_FRACTION = 0.02
DISK_DEGRADED_FRACTION = 0.10
CERT_WARN_S = 14 * 86400.0
# Before this instant the clock cannot be right: the software did not exist yet.
CLOCK_PLAUSIBLE_FROM = datetime(2024, 1, 1, tzinfo=UTC).timestamp()
LINK_UP_OPER = ("UP",)
NET = "net"
MODBUSPROXY = "modbusproxy"


@dataclass(frozen=True)
class Reason:
    code: str
    severity: Severity
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code, "severity": self.severity, "message": self.message}


@dataclass(frozen=True)
class Health:
    state: State
    reasons: tuple[Reason, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {"state": self.state, "reasons": [r.as_dict() for r in self.reasons]}


@dataclass(frozen=True)
class HealthInputs:
    """What the roles report; every field optional so a missing source is simply not judged.

    `net` is the net role's live-state document as published (None: not yet).
    `pending_deadline` is the confirm deadline of a revision waiting for
    confirmation (epoch seconds). `expect_confirmed`: a confirmed revision
    exists, so running fail-closed is a fault, not a fresh unit.
    """

    roles_alive: Mapping[str, bool] = field(default_factory=dict)
    expected_roles: tuple[str, ...] = (NET,)
    net: Mapping[str, Any] | None = None
    uptime_s: float | None = None
    expect_confirmed: bool = False
    pending_deadline: float | None = None
    drift_last_at: float | None = None
    alarms: Mapping[str, int] = field(default_factory=dict)  # severity -> active count
    comm_loss: tuple[str, ...] = ()  # device names
    disk_free: int | None = None  # bytes
    disk_total: int | None = None  # bytes
    cert_not_after: float | None = None  # epoch seconds
    identify_until: float | None = None  # epoch seconds
    restarted: Mapping[str, float] = field(default_factory=dict)  # role -> last restart
    # the active conduits with a Modbus restriction, and the modbusproxy role's live
    # document (None: not running), which every one of them needs to pass anything
    modbus_restricted: tuple[str, ...] = ()
    modbus_proxy: Mapping[str, Any] | None = None
    # an update that did not get healthy and fell back (appliance.update.gate report's message)
    update_fallback: str | None = None
    # why the config DB, where the audit log lives, took no write (the agent's probe)
    audit_failed: str | None = None


def _number(v: object) -> bool:
    """A real number (a role's document is JSON: not a bool, not NaN)."""
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _fmt_duration(seconds: float) -> str:
    s = max(0, math.ceil(seconds))
    if s < 120:
        return f"{s} s"
    if s < 2 * 3600:
        return f"{s // 60} min"
    if s < 2 * 86400:
        return f"{s // 3600} h"
    return f"{s // 86400} days"


def _link_up(link: Mapping[str, Any]) -> bool:
    return bool(link.get("present")) and str(link.get("oper", "")).upper() in LINK_UP_OPER


def _findings(i: HealthInputs, now: float) -> list[tuple[str, Reason]]:
    """Every finding as (state it implies, reason)."""
    out: list[tuple[str, Reason]] = []

    def add(state: str, code: str, severity: Severity, message: str) -> None:
        out.append((state, Reason(code, severity, message)))

    if i.identify_until is not None and now < i.identify_until:
        left = _fmt_duration(i.identify_until - now)
        add(IDENTIFY, "identify", "info", f"identifying itself for {left} more")

    net = i.net
    if i.uptime_s is not None and i.uptime_s < BOOT_GRACE_S:
        add(BOOTING, "booting", "info", f"started {_fmt_duration(i.uptime_s)} ago")
    if net is None:
        if i.uptime_s is None or i.uptime_s < BOOT_TIMEOUT_S:
            add(BOOTING, "net-not-published", "info", "waiting for the net role to report")
        else:
            add(
                FAULT,
                "net-silent",
                "fault",
                f"the net role has not reported in {_fmt_duration(i.uptime_s)} since boot",
            )

    # -- roles -----------------------------------------------------------------
    starting = i.uptime_s is not None and i.uptime_s < BOOT_GRACE_S
    for role in i.expected_roles:
        if i.roles_alive.get(role, False):
            continue
        if starting and role != NET:
            continue  # still starting: booting says so, it is not dead
        if role == NET:
            if net is not None:  # never published: covered above
                add(FAULT, "role-dead-net", "fault", "the net role is not running")
        else:
            add(DEGRADED, f"role-dead-{role}", "warning", f"the {role} role is not running")

    if i.modbus_restricted and not starting:
        names = ", ".join(i.modbus_restricted)
        what = "conduit" if len(i.modbus_restricted) == 1 else "conduits"
        proxy = i.modbus_proxy
        if proxy is None or not proxy.get("listening"):
            why = (
                "the modbusproxy role is not running"
                if proxy is None
                else f"the modbusproxy role is not listening ({proxy.get('error') or 'starting'})"
            )
            add(
                DEGRADED,
                "modbus-proxy-down",
                "warning",
                f"restricted {what} {names} pass nothing: {why}",
            )

    # -- what the net role reports ---------------------------------------------
    if net is not None:
        applied = net.get("applied") or {}
        revision = applied.get("revision")
        if applied.get("fail_closed"):
            if i.expect_confirmed:
                add(
                    FAULT,
                    "fail-closed",
                    "fault",
                    "fail-closed: no conduit passes although a confirmed revision exists",
                )
            else:
                add(
                    DEGRADED,
                    "not-configured",
                    "warning",
                    "no configuration applied yet: only management traffic passes",
                )
        if net.get("forwarding") is False:
            add(FAULT, "forwarding-off", "fault", "IP forwarding is off: no conduit passes")
        links = [lk for lk in net.get("links") or [] if isinstance(lk, Mapping)]
        for side in ("it", "ot"):
            mine = [lk for lk in links if lk.get("role") == side]
            if not mine and revision is not None:
                add(FAULT, f"{side}-link-missing", "fault", f"no {side.upper()} link reported")
            for lk in mine:
                if _link_up(lk):
                    continue
                name = lk.get("name", side)
                what = f"down (oper {lk.get('oper')})" if lk.get("present") else "absent"
                add(FAULT, f"{side}-link-down", "fault", f"{side.upper()} link {name} is {what}")
        for lk in links:
            if lk.get("role") == "mgmt" and not _link_up(lk):
                name = lk.get("name", "mgmt")
                add(DEGRADED, "mgmt-link-down", "warning", f"management link {name} is down")
        if net.get("last_error"):
            add(DEGRADED, "net-error", "warning", f"net role: {net['last_error']}")
        clock = net.get("time")
        if isinstance(clock, Mapping) and clock.get("servers") and not clock.get("synchronised"):
            since, after = clock.get("unsynchronised_since"), clock.get("unsynchronised_after_s")
            if _number(since) and _number(after) and now - since >= after:
                why = clock.get("error") or (
                    f"{clock.get('reachable', 0)} of {clock.get('sources', 0)} NTP servers answer"
                )
                add(
                    DEGRADED,
                    "clock-unsynchronised",
                    "warning",
                    f"the clock has not been in sync for {_fmt_duration(now - since)}: {why}",
                )

    # -- pending confirmation --------------------------------------------------
    if i.pending_deadline is not None:
        left = i.pending_deadline - now
        if left > 0:
            msg = f"revision waits for confirmation, {math.ceil(left)} s left before it reverts"
        else:
            msg = "revision waits for confirmation, deadline passed: reverting"
        add(PENDING, "pending-confirm", "warning", msg)

    # -- degradations ----------------------------------------------------------
    for role, at in sorted(i.restarted.items()):
        if 0 <= now - at <= RESTART_RECENT_S:
            ago = _fmt_duration(now - at)
            add(
                DEGRADED,
                f"role-restarted-{role}",
                "warning",
                f"the {role} role died and was restarted {ago} ago",
            )
    if i.drift_last_at is not None and 0 <= now - i.drift_last_at <= DRIFT_RECENT_S:
        ago = _fmt_duration(now - i.drift_last_at)
        add(DEGRADED, "drift", "warning", f"ruleset drift repaired {ago} ago")
    if i.comm_loss:
        names = ", ".join(sorted(i.comm_loss))
        add(DEGRADED, "comm-loss", "warning", f"no communication with {names}")
    if i.disk_free is not None and i.disk_total:
        frac = i.disk_free / i.disk_total
        pct = f"{frac * 100:.1f} % disk free"
        if frac < DISK_FAULT_FRACTION:
            add(FAULT, "disk-full", "fault", pct)
        elif frac < DISK_DEGRADED_FRACTION:
            add(DEGRADED, "disk-low", "warning", pct)
    clock_ok = now >= CLOCK_PLAUSIBLE_FROM
    if not clock_ok:
        add(DEGRADED, "clock-not-set", "warning", "the clock is not set (before 2024)")
    if i.cert_not_after is not None and clock_ok:
        left = i.cert_not_after - now
        if left <= 0:
            add(FAULT, "cert-expired", "fault", "the HTTPS certificate has expired")
        elif left < CERT_WARN_S:
            msg = f"the HTTPS certificate expires in {_fmt_duration(left)}"
            add(DEGRADED, "cert-expiring", "warning", msg)
    if i.update_fallback:
        add(DEGRADED, "update-fallback", "warning", i.update_fallback)
    if i.audit_failed:
        msg = f"the audit log cannot be written ({i.audit_failed}): changes are refused"
        add(FAULT, "audit-failed", "fault", msg)
    return out


def health(inputs: HealthInputs, now: float) -> Health:
    """The unit's health state and every reason found (pure)."""
    found = _findings(inputs, now)
    states = {s for s, _ in found}
    state = next((s for s in PRECEDENCE if s in states), OK)
    ranked = sorted(
        found,
        key=lambda f: (SEVERITIES.index(f[1].severity), PRECEDENCE.index(f[0]), f[1].code),
    )
    return Health(cast(State, state), tuple(r for _, r in ranked))


def _alive(doc: Mapping[str, Any] | None, now: float) -> bool:
    if not doc:
        return False
    try:
        return now - float(doc.get("updated_at", 0)) <= ALIVE_WITHIN_S
    except (TypeError, ValueError):
        return False


def from_live(
    live: Mapping[str, Mapping[str, Any] | None],
    now: float,
    *,
    expected_roles: Sequence[str] = (NET,),
    alive: Mapping[str, bool] | None = None,
    uptime_s: float | None = None,
    expect_confirmed: bool = False,
    alarms: Mapping[str, int] | None = None,
    comm_loss: Sequence[str] = (),
    disk_free: int | None = None,
    disk_total: int | None = None,
    cert_not_after: float | None = None,
    identify_until: float | None = None,
    modbus_restricted: Sequence[str] = (),
    update_fallback: str | None = None,
    audit_failed: str | None = None,
) -> HealthInputs:
    """HealthInputs from live-state documents by role (as `LiveState.read` returns them).

    Liveness is taken from `alive` where given (the caller may use
    `LiveState.alive`, which also checks the pid); otherwise a role is alive
    while its document is younger than `ALIVE_WITHIN_S`. The pending deadline
    and the drift time come from the net role's document.
    """
    net = live.get(NET)
    roles = set(expected_roles) | (set(live) - {"supervisor"})
    roles_alive = {
        r: (alive[r] if alive is not None and r in alive else _alive(live.get(r), now))
        for r in roles
    }
    pending_deadline = None
    drift_last_at = None
    if net is not None:
        applied = net.get("applied") or {}
        if applied.get("state") == "pending" and applied.get("confirm_deadline") is not None:
            pending_deadline = float(applied["confirm_deadline"])
        last = (net.get("drift") or {}).get("last_at")
        drift_last_at = float(last) if last is not None else None
    restarted: dict[str, float] = {}
    sup = live.get("supervisor") or {}
    for role, child in (sup.get("children") or {}).items():
        try:
            if int(child.get("restarts") or 0) > 0 and child.get("started_at"):
                restarted[str(role)] = float(child["started_at"])
        except (TypeError, ValueError, AttributeError):
            continue
    return HealthInputs(
        restarted=restarted,
        roles_alive=roles_alive,
        expected_roles=tuple(expected_roles),
        net=net,
        uptime_s=uptime_s,
        expect_confirmed=expect_confirmed,
        pending_deadline=pending_deadline,
        drift_last_at=drift_last_at,
        alarms=dict(alarms or {}),
        comm_loss=tuple(comm_loss),
        disk_free=disk_free,
        disk_total=disk_total,
        cert_not_after=cert_not_after,
        identify_until=identify_until,
        modbus_restricted=tuple(modbus_restricted),
        modbus_proxy=live.get(MODBUSPROXY) if roles_alive.get(MODBUSPROXY) else None,
        update_fallback=update_fallback,
        audit_failed=audit_failed,
    )
