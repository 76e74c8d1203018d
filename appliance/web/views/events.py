"""Events and audit log API: newest first, filtered, paged by `before_id`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Blueprint

from appliance.config.redact import redact_any, redact_text
from appliance.state.db import Audit, Event
from appliance.web.api import endpoint
from appliance.web.schemas import AuditPage, AuditQuery, EventsPage, EventsQuery
from appliance.web.views.common import is_admin

bp = Blueprint("events", __name__, url_prefix="/api")
audit_bp = Blueprint("audit", __name__, url_prefix="/api")


def _page(
    model: Any, q: Any, before_id: int | None, limit: int, as_dict: Callable[[Any], Any]
) -> dict[str, Any]:
    """One page of `q`'s rows of `model`, newest first: those below `before_id` (the last
    page's cursor), `limit` at most, and the cursor of the next page (None on the last)."""
    q = q.order_by(model.id.desc())
    if before_id:
        q = q.where(model.id < before_id)
    rows = list(q.limit(limit + 1))
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
    q = Event.select()
    if query.kind:
        q = q.where(Event.kind.startswith(query.kind))
    if query.severity:
        q = q.where(Event.severity == query.severity)
    if query.source:
        q = q.where(Event.source == query.source)
    shown = (lambda e: e.as_dict()) if is_admin() else _redacted
    return _page(Event, q, query.before_id, query.limit, shown)


def _redacted(e: Event) -> dict[str, Any]:
    """An event as viewers and operators see it: no event writer puts a secret in one, and
    this is the second belt (a URL's user info, `token=` pairs, PEM keys by their shape,
    values under secret-sounding keys in its data)."""
    out = e.as_dict()
    out["message"] = redact_text(out["message"])
    out["data"] = redact_any(out["data"])
    return out


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
    q = Audit.select()
    if query.actor:
        q = q.where(Audit.actor.contains(query.actor))
    if query.action:
        q = q.where(Audit.action.startswith(query.action))
    return _page(Audit, q, query.before_id, query.limit, audit_dict)
