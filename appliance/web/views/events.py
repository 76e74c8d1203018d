"""Events and audit log API: newest first, filtered, paged by `before_id`."""

from __future__ import annotations

from typing import Any

from flask import Blueprint

from appliance.state.db import Audit, Event
from appliance.web.api import endpoint
from appliance.web.schemas import AuditPage, AuditQuery, EventsPage, EventsQuery

bp = Blueprint("events", __name__, url_prefix="/api")
audit_bp = Blueprint("audit", __name__, url_prefix="/api")


def _page(rows: list[Any], limit: int, as_dict: Any) -> dict[str, Any]:
    more = len(rows) > limit
    rows = rows[:limit]
    return {
        "items": [as_dict(r) for r in rows],
        "next_before_id": rows[-1].id if more and rows else None,
    }


@endpoint(
    bp,
    "/events",
    "GET",
    role="viewer",
    query=EventsQuery,
    response=EventsPage,
    errors=(422,),
    summary="Events (drops, changes, drift, faults), newest first",
)
def events(query: EventsQuery) -> Any:
    q = Event.select().order_by(Event.id.desc())
    if query.kind:
        q = q.where(Event.kind.startswith(query.kind))
    if query.severity:
        q = q.where(Event.severity == query.severity)
    if query.source:
        q = q.where(Event.source == query.source)
    if query.before_id:
        q = q.where(Event.id < query.before_id)
    return _page(list(q.limit(query.limit + 1)), query.limit, lambda e: e.as_dict())


def audit_dict(a: Audit) -> dict[str, Any]:
    return {
        "id": a.id,
        "at": a.at,
        "actor": a.actor,
        "source": a.source,
        "action": a.action,
        "target": a.target,
        "result": a.result,
        "detail": a.detail,
    }


@endpoint(
    audit_bp,
    "/audit",
    "GET",
    role="operator",
    query=AuditQuery,
    response=AuditPage,
    errors=(422,),
    summary="Who did what, from where, with what result; newest first",
)
def audit(query: AuditQuery) -> Any:
    q = Audit.select().order_by(Audit.id.desc())
    if query.actor:
        q = q.where(Audit.actor.contains(query.actor))
    if query.action:
        q = q.where(Audit.action.startswith(query.action))
    if query.before_id:
        q = q.where(Audit.id < query.before_id)
    return _page(list(q.limit(query.limit + 1)), query.limit, audit_dict)
