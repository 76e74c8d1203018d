"""The unit's ports (every NIC, configured or not) as the net role last read them."""

from __future__ import annotations

from typing import Any

from flask import Blueprint

from appliance.errors import Unavailable
from appliance.web.api import endpoint
from appliance.web.context import ctx
from appliance.web.schemas import PortsOut

bp = Blueprint("ports", __name__, url_prefix="/api")


@endpoint(
    bp,
    "/ports",
    "GET",
    role="viewer",
    response=PortsOut,
    errors=(503,),
    summary="Every NIC of the unit: MAC, driver, PCI path, label, carrier, speed, counters",
)
def ports() -> Any:
    """Configured or not, loopback excluded; `role` names the running configuration's
    interface on a NIC. 503 when the net role is not running: a list it left behind is
    not what the ports are now."""
    c = ctx()
    doc = c.live.read("net")
    if doc is None or not c.live.alive("net", c.now()):
        raise Unavailable("the net role is not running: no live port list")
    return {"ports": doc.get("ports") or [], "updated_at": doc.get("updated_at")}
