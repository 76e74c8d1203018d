"""Field data API: devices, tags (live, history as JSON/CSV, writes), alarms, SQL.

Reads go through `appliance.field.api` (live state + history DB); writes and
acknowledgements are requests to the field role over its control socket, which
does the work (and refuses what is not writable).
"""

from __future__ import annotations

import time
from typing import Any

from flask import Blueprint, Response

from appliance.config.redact import redact_text
from appliance.errors import ApplianceError, Unavailable
from appliance.field import api as field_api
from appliance.field.probe import target_of
from appliance.state.control import call, socket_path
from appliance.web.api import endpoint
from appliance.web.auth import audit, principal, source
from appliance.web.context import ctx
from appliance.web.schemas import (
    AckIn,
    AlarmsQuery,
    HistoryQuery,
    ProbeIn,
    ProbeOut,
    Sample,
    SqlIn,
    SqlOut,
    WriteIn,
)

bp = Blueprint("field", __name__, url_prefix="/api")
alarms_bp = Blueprint("alarms", __name__, url_prefix="/api")
sql_bp = Blueprint("sql", __name__, url_prefix="/api")


def field_call(method: str, timeout: float = 10.0, **params: Any) -> Any:
    path = socket_path(ctx().paths.run_dir, "field")
    if not path.exists():
        raise Unavailable("the field role is not running")
    return call(path, method, timeout=timeout, **params)


def _actor() -> str:
    p = principal()
    return f"web:{p.actor}" if p else "web"


def devices_list() -> list[dict[str, Any]]:
    """Configured devices with what the field role reports about each."""
    c = ctx()
    _, cfg = c.desired()
    live = (c.live.read("field") or {}).get("devices") or {}
    p = principal()
    # an address may carry credentials (opc.tcp://user:password@host): admins only
    shown = (lambda v: v) if p is not None and p.at_least("admin") else _redacted
    out = []
    seen = set()
    for d in cfg.devices if cfg else []:
        seen.add(d.name)
        obs = live.get(d.name) or {}
        out.append(
            {
                "name": d.name,
                "protocol": d.protocol,
                "address": shown(d.address),
                "tags": len(d.tags) if hasattr(d, "tags") else None,
                "state": obs.get("state", "disabled" if not getattr(d, "enabled", True) else None),
                **{k: shown(v) for k, v in obs.items() if k not in ("protocol", "state")},
            }
        )
    for name, obs in sorted(live.items()):
        if name not in seen:
            out.append({"name": name, **{k: shown(v) for k, v in obs.items()}})
    return out


def _redacted(value: Any) -> Any:
    """A reported value as people below admin see it: text without credentials."""
    return redact_text(value) if isinstance(value, str) else value


@endpoint(
    bp,
    "/devices",
    "GET",
    role="viewer",
    summary="Field devices and their health",
    response={"type": "array", "items": {"type": "object"}},
)
def devices() -> Any:
    return devices_list()


@endpoint(
    bp,
    "/tags",
    "GET",
    role="viewer",
    summary="Every tag's live value and quality",
    response={"type": "array", "items": {"type": "object"}},
)
def tags() -> Any:
    return field_api.list_tags(ctx().live.live)


@endpoint(
    bp,
    "/tags/<name>/history",
    "GET",
    role="viewer",
    query=HistoryQuery,
    summary="A tag's stored samples (JSON, or CSV with format=csv)",
    response={"type": "array", "items": {"$ref": "#/components/schemas/Sample"}},
    extra_schemas=(Sample,),
    errors=(404, 422),
)
def history(name: str, query: HistoryQuery) -> Any:
    c = ctx()
    end = query.to if query.to is not None else c.now()
    start = query.from_ if query.from_ is not None else end - 3600.0
    if query.format == "csv":
        text = field_api.history_csv(c.store, name, start, end, query.limit)
        return Response(
            text,
            mimetype="text/csv",
            headers={"Content-Disposition": f'attachment; filename="{name}.csv"'},
        )
    return field_api.tag_history(c.store, name, start, end, query.limit)


@endpoint(
    bp,
    "/tags/<name>/write",
    "POST",
    role="admin",
    body=WriteIn,
    response={"type": "object"},
    errors=(400, 403, 404, 409, 422, 502, 503, 504),
    summary="Write a value to a writable tag (audited)",
)
def write(name: str, body: WriteIn) -> Any:
    """403: the tag is not writable; 400: the value does not fit it; 409: its device is
    disabled; 502: the device did not answer or refused the write; 503/504: the field role
    is not running or did not answer in time."""
    try:
        result = field_call("write", tag=name, value=body.value, actor=_actor())
    except ApplianceError as e:
        audit("tag.write", target=name, result="failed", detail=f"value={body.value!r}: {e}")
        raise
    audit("tag.write", target=name, detail=f"value={body.value!r}")
    return result


# longer than the role's own wait for a probe (PROBE_LIMIT_S and a margin), so its answer
# (a result, or "another test is running") arrives rather than a timeout of ours
PROBE_CALL_TIMEOUT_S = 20.0


@endpoint(
    bp,
    "/devices/probe",
    "POST",
    role="admin",
    body=ProbeIn,
    response=ProbeOut,
    errors=(400, 403, 409, 422, 503, 504),
    summary="Test the connection to a device and read (Modbus) or browse (OPC UA) it",
)
def probe(body: ProbeIn) -> Any:
    """The field role connects afresh (on a serial line it polls, under that line's
    lock), at most 15 s. 200 also when the device does not answer: `ok` false, `stage`
    and `message` say where and why. 409: another test is running; 422: the device,
    read or browse is not valid (each problem at its path, device.address ...); 503/504:
    the field role is not running or did not answer in time. Audited (device.probe)."""
    request = body.model_dump(mode="json", exclude_unset=True, by_alias=True)
    try:
        return field_call(
            "probe",
            timeout=PROBE_CALL_TIMEOUT_S,
            request=request,
            actor=_actor(),
            source=f"web:{source()}",
        )
    except ApplianceError as e:
        if e.code not in ("unavailable", "not-found", "timeout"):
            raise  # the role's answer (409, 422): it audited the attempt
        # the role did not get to audit it: the row is ours
        if e.code == "not-found":  # a socket nobody serves: the role is not running
            e = Unavailable("the field role is not running")
        audit("device.probe", target=target_of(body.device), result="failed", detail=str(e))
        raise e from None


@endpoint(
    alarms_bp,
    "/alarms",
    "GET",
    role="viewer",
    query=AlarmsQuery,
    summary="Alarms (active=1: only active ones), newest first",
    response={"type": "array", "items": {"type": "object"}},
)
def alarms(query: AlarmsQuery) -> Any:
    c = ctx()
    active_only = query.active in ("1", "true")
    return field_api.list_alarms(c.store, c.live.live, active_only, query.limit)


@endpoint(
    alarms_bp,
    "/alarms/<int:alarm_id>/ack",
    "POST",
    role="operator",
    body=AckIn,
    body_optional=True,
    response={"type": "object"},
    errors=(400, 404, 422, 503, 504),
    summary="Acknowledge an alarm",
)
def ack(alarm_id: int, body: AckIn) -> Any:
    try:
        result = field_call("ack_alarm", id=alarm_id, actor=_actor())
    except ApplianceError as e:
        audit("alarm.ack", target=f"alarm {alarm_id}", result="failed", detail=str(e))
        raise
    audit("alarm.ack", target=f"alarm {alarm_id}", detail=body.comment)
    return result


SQL_TIMEOUT_S = 5.0


@endpoint(
    sql_bp,
    "/sql",
    "POST",
    role="viewer",
    body=SqlIn,
    response=SqlOut,
    errors=(400, 404, 422, 429, 504),
    summary="A read-only SQL query over the views samples, tags, alarms, events",
)
def sql(body: SqlIn) -> Any:
    """Runs in a worker process of its own, stopped at 5 s (504) or when a value would
    pass 1 MB, the answer 8 MB or its memory 64 MB (400, the message names the limit);
    403 for anything but reading the views; 404 without a history database; 429 while
    another query of the same server process runs."""
    started = time.monotonic()
    result = field_api.sql_query(
        ctx().paths, body.query, max_rows=body.max_rows, timeout_s=SQL_TIMEOUT_S
    )
    result.setdefault("elapsed_ms", (time.monotonic() - started) * 1000)
    return result
