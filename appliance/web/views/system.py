"""Status (the overview's one poll), system facts, identify, diagnostics."""

from __future__ import annotations

import contextlib
import shutil
import time
from pathlib import Path
from typing import Any

from flask import Blueprint, Response

from appliance import __version__
from appliance.agent import diagnostics as diag
from appliance.agent.health import from_live, health
from appliance.errors import ApplianceError
from appliance.field.api import history_capacity
from appliance.roles import ROLE_NAMES
from appliance.state import revisions as revs
from appliance.state.control import call, socket_path
from appliance.web import tls
from appliance.web.api import Unavailable, endpoint
from appliance.web.auth import audit, principal
from appliance.web.context import WebContext, ctx
from appliance.web.schemas import IdentifyIn, IdentifyOut, Status, System
from appliance.web.views.conduits import conduits_with_counters

bp = Blueprint("status", __name__, url_prefix="/api")
system_bp = Blueprint("system", __name__, url_prefix="/api")

_cert_cache: dict[str, Any] = {}


def uptime_s() -> float | None:
    try:
        return float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def cert_facts(c: WebContext) -> tuple[str | None, float | None]:
    """(fingerprint, not_after) of the unit's certificate, re-read when the file changes."""
    path = tls.cert_path(c.paths)
    try:
        st = path.stat()
    except OSError:
        return None, None
    key = (str(path), st.st_mtime_ns, st.st_size)
    if _cert_cache.get("key") != key:
        _cert_cache.update(key=key, fp=tls.fingerprint(c.paths), not_after=tls.not_after(c.paths))
    return _cert_cache["fp"], _cert_cache["not_after"]


def disk(c: WebContext) -> dict[str, int | None]:
    try:
        d = shutil.disk_usage(c.paths.data_dir)
        return {"total": d.total, "free": d.free}
    except OSError:
        return {"total": None, "free": None}


def health_now(c: WebContext, now: float) -> dict[str, Any]:
    """The agent's health when it runs; else computed here from the same live documents.
    The plant's process alarms are not the unit's health (ARCHITECTURE.md): they are not
    given here, and the UI leaves an agent's `alarms` reason out of the badge."""
    agent = c.live.read("agent")
    if agent and agent.get("health") and c.live.alive("agent", now):
        return agent["health"]
    net, field = c.live.read("net"), c.live.read("field")
    d = disk(c)
    _, not_after = cert_facts(c)
    inputs = from_live(
        {"net": net},
        now,
        alive={"net": c.live.alive("net", now)},
        uptime_s=uptime_s(),
        expect_confirmed=revs.confirmed(c.store) is not None,
        comm_loss=tuple((field or {}).get("comm_loss") or ()),
        disk_free=d["free"],
        disk_total=d["total"],
        cert_not_after=not_after,
        identify_until=(agent or {}).get("identify_until"),
    )
    return health(inputs, now).as_dict()


def status_doc(c: WebContext) -> dict[str, Any]:
    now = c.now()
    rev, cfg = c.desired()
    net = c.live.read("net") or {}
    field = c.live.read("field") or {}
    agent = c.live.read("agent") or {}
    revision = None
    if rev is not None:
        left = rev.confirm_deadline - now if rev.confirm_deadline else None
        revision = {
            "id": rev.id,
            "sha256": rev.sha256,
            "state": rev.state,
            "confirm_deadline": rev.confirm_deadline,
            "seconds_left": max(0.0, left) if left is not None else None,
            "applied": (net.get("applied") or {}).get("revision") == rev.id,
        }
    links = [
        {
            "name": lk.get("name"),
            "role": lk.get("role"),
            "up": bool(lk.get("present")) and str(lk.get("oper", "")).upper() == "UP",
            "mac": lk.get("mac"),
            "addresses": lk.get("addresses") or [],
            # a link with DHCP: its lease as the net role holds it (bound, address, server,
            # router, expires_at ...), for the UI's "Links now"
            **({"dhcp": lk["dhcp"]} if isinstance(lk.get("dhcp"), dict) else {}),
        }
        for lk in net.get("links") or []
    ]
    devices = [
        {
            "name": name,
            "protocol": d.get("protocol"),
            "state": d.get("state"),
            "last_ok": d.get("last_ok"),
            "last_error": d.get("last_error"),
        }
        for name, d in sorted((field.get("devices") or {}).items())
    ]
    alarms = field.get("alarms") or {}
    fp, _ = cert_facts(c)
    unit = cfg.unit if cfg else None
    return {
        "unit": {"name": unit.name if unit else None, "site": unit.site if unit else ""},
        "version": __version__,
        "uptime_s": uptime_s(),
        "health": health_now(c, now),
        "revision": revision,
        "links": links,
        "conduits": conduits_with_counters(),
        "drops": net.get("drops") or {},
        "denied": net.get("denied") or [],
        "devices": devices,
        "alarms": {"active": alarms.get("active") or [], "counts": alarms.get("counts") or {}},
        "identify_until": agent.get("identify_until"),
        "cert_fingerprint": fp,
        "roles": {r: c.live.alive(r, now) for r in ROLE_NAMES},
    }


@endpoint(
    bp,
    "/status",
    "GET",
    role="viewer",
    response=Status,
    summary="The picture at a glance: health, revision, links, conduits, devices, alarms",
)
def status() -> Any:
    return status_doc(ctx())


@endpoint(
    system_bp,
    "/system",
    "GET",
    role="viewer",
    response=System,
    summary="Version, uptime, disk, certificate, fleet and syslog status, history capacity",
)
def system() -> Any:
    c = ctx()
    now = c.now()
    agent = c.live.read("agent") or {}
    fp, not_after = cert_facts(c)
    capacity = None
    with contextlib.suppress(ApplianceError, OSError):  # no history (yet): the rest anyway
        capacity = history_capacity(c.paths, c.config(), store=c.store)
    return {
        "version": __version__,
        "uptime_s": uptime_s(),
        "disk": disk(c),
        "cert_fingerprint": fp,
        "cert_not_after": not_after,
        "fleet": agent.get("fleet"),
        "syslog": agent.get("syslog") or [],
        "history": capacity,
        "roles": {r: c.live.alive(r, now) for r in ROLE_NAMES},
        "web": c.live.read("web"),
    }


@endpoint(
    system_bp,
    "/identify",
    "POST",
    role="operator",
    body=IdentifyIn,
    body_optional=True,
    response=IdentifyOut,
    errors=(400, 422, 503, 504),
    summary="Blink the unit's LEDs so an installer finds it",
)
def identify(body: IdentifyIn) -> Any:
    p = principal()
    path = socket_path(ctx().paths.run_dir, "agent")
    if not path.exists():
        raise Unavailable("the agent role is not running")
    result = call(path, "identify", seconds=body.seconds, actor=f"web:{p.actor if p else ''}")
    audit("identify", detail=f"{body.seconds} s")
    return result


@endpoint(
    system_bp,
    "/diagnostics",
    "GET",
    role="admin",
    content="application/gzip",
    response={"type": "string", "format": "binary"},
    summary="A support archive (.tar.gz) with no secret in it",
)
def diagnostics() -> Any:
    c = ctx()
    data = diag.build(c.paths)
    audit("diagnostics", detail=f"{len(data)} bytes")
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(c.now()))
    return Response(
        data,
        mimetype="application/gzip",
        headers={"Content-Disposition": f'attachment; filename="diagnostics-{stamp}.tar.gz"'},
    )
