"""Modbus API: the asset inventory, what a learning conduit proposes, the conduit review.

The modbusproxy role saves what it learned and the inventory in the history DB
(`appliance.modbusproxy.store`); these routes read them, as `appliance inventory`,
`appliance conduits learned NAME` and `appliance conduits review` do."""

from __future__ import annotations

from typing import Any

from flask import Blueprint
from pydantic import Field

from appliance.errors import NotFound
from appliance.modbusproxy import learn, store
from appliance.modbusproxy.review import review
from appliance.web.api import endpoint
from appliance.web.context import ctx
from appliance.web.schemas import In

bp = Blueprint("modbus", __name__, url_prefix="/api")


class LearnedQuery(In):
    gap: int = Field(0, ge=0, le=65535, description="join ranges at most this many apart")


class ReviewQuery(In):
    unused_days: float = Field(30, ge=0, le=3650, description="no traffic for this long")


@endpoint(
    bp,
    "/modbus/inventory",
    "GET",
    role="viewer",
    summary="The Modbus devices seen through the proxy (unit ids, function codes, "
    "identification, first/last seen)",
)
def inventory() -> Any:
    return {"items": [a.as_dict() for a in store.assets()]}


@endpoint(
    bp,
    "/modbus/learned/<name>",
    "GET",
    role="viewer",
    query=LearnedQuery,
    errors=(404, 422),
    summary="The restriction a learning conduit proposes (the modbus: mapping, in mode test)",
)
def learned(name: str, query: LearnedQuery) -> Any:
    observed = store.learned(name)
    p = learn.propose(name, observed, gap=query.gap)
    if p is None:
        raise NotFound(f"nothing learned for conduit {name!r}", field="name")
    return {
        "conduit": name,
        "modbus": p.mapping or None,
        "yaml": learn.to_yaml(p),
        "notes": list(p.notes),
        "requests": p.requests,
        "first_seen": p.first_seen,
        "last_seen": p.last_seen,
    }


@endpoint(
    bp,
    "/conduits/review",
    "GET",
    role="viewer",
    query=ReviewQuery,
    errors=(422,),
    summary="Conduits to look at again: expired, expiring, disabled, unused, wider than "
    "their traffic, an owner with no address",
)
def conduits_review(query: ReviewQuery) -> Any:
    c = ctx()
    rev, cfg = c.desired()
    if cfg is None:
        return {"revision": None, "findings": []}
    findings = review(
        cfg,
        c.now(),
        unused_days=query.unused_days,
        assets=store.assets(),
        net=c.live.read("net"),
    )
    return {"revision": rev.id if rev else None, "findings": [f.as_dict() for f in findings]}
