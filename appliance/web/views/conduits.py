"""Conduits API: the running conduits with live counters; edits go to the draft."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import Blueprint

from appliance.config.model import Conduit
from appliance.errors import Conflict, NotFound
from appliance.web.api import endpoint
from appliance.web.context import ctx
from appliance.web.schemas import DraftSaved
from appliance.web.views.config import edit_draft

bp = Blueprint("conduits", __name__, url_prefix="/api")


def conduits_with_counters() -> list[dict[str, Any]]:
    """The running revision's conduits, each with the net role's packets/bytes and state."""
    c = ctx()
    _, cfg = c.desired()
    if cfg is None:
        return []
    net = c.live.read("net") or {}
    counters = net.get("conduits") or {}
    when = datetime.fromtimestamp(c.now(), UTC)
    out = []
    for conduit in cfg.conduits:
        doc = conduit.model_dump(mode="json", by_alias=True)
        live = counters.get(conduit.name) or {}
        doc.update(
            {
                "active": conduit.active(when),
                "packets": int(live.get("packets", 0) or 0),
                "bytes": int(live.get("bytes", 0) or 0),
                # conntrack's view (appliance.net.role): false when every connection the
                # conduit opened went unanswered at two reads in a row
                "answering": live.get("answering", True) is not False,
                "unanswered": int(live.get("unanswered", 0) or 0),
            }
        )
        out.append(doc)
    return out


@endpoint(
    bp,
    "/conduits",
    "GET",
    role="viewer",
    summary="The running conduits with live packet/byte counters",
    response={"type": "array", "items": {"type": "object"}},
)
def conduits() -> Any:
    return conduits_with_counters()


def _index(data: dict[str, Any], name: str) -> int:
    for i, c in enumerate(data.get("conduits") or []):
        if c.get("name") == name:
            return i
    raise NotFound(f"no conduit {name!r} in the draft")


@endpoint(
    bp,
    "/conduits",
    "POST",
    role="admin",
    body=Conduit,
    body_raw=True,
    status=201,
    response=DraftSaved,
    errors=(400, 409, 422),
    summary="Add a conduit to the draft (made from running if there is none)",
)
def conduit_add(body: Any) -> Any:
    if not isinstance(body, dict):
        from appliance.errors import ConfigInvalid

        raise ConfigInvalid([("", "a conduit is an object", None)])
    name = body.get("name")

    def change(data: dict[str, Any]) -> None:
        items = data.setdefault("conduits", [])
        if any(c.get("name") == name for c in items):
            raise Conflict(f"conduit {name!r} exists", field="name")
        items.append(body)

    return edit_draft(change, f"conduit {name} added in the web UI"), 201


@endpoint(
    bp,
    "/conduits/<name>",
    "PUT",
    role="admin",
    body=Conduit,
    body_raw=True,
    response=DraftSaved,
    errors=(400, 404, 409, 422),
    summary="Replace a conduit in the draft (it may be renamed)",
)
def conduit_put(name: str, body: Any) -> Any:
    if not isinstance(body, dict):
        from appliance.errors import ConfigInvalid

        raise ConfigInvalid([("", "a conduit is an object", None)])

    def change(data: dict[str, Any]) -> None:
        i = _index(data, name)
        new = body.get("name", name)
        if new != name and any(c.get("name") == new for c in data["conduits"]):
            raise Conflict(f"conduit {new!r} exists", field="name")
        data["conduits"][i] = body

    return edit_draft(change, f"conduit {name} changed in the web UI")


@endpoint(
    bp,
    "/conduits/<name>",
    "DELETE",
    role="admin",
    response=DraftSaved,
    errors=(404,),
    summary="Remove a conduit from the draft",
)
def conduit_delete(name: str) -> Any:
    def change(data: dict[str, Any]) -> None:
        del data["conduits"][_index(data, name)]

    return edit_draft(change, f"conduit {name} removed in the web UI")
