"""The unit's ports (every NIC, configured or not) as the net role last read them, and
identify-port (a request to the net role, which blinks the port's LED)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint

from appliance.errors import Unavailable
from appliance.state.control import call, socket_path
from appliance.web.api import endpoint
from appliance.web.auth import audit, principal
from appliance.web.context import ctx
from appliance.web.schemas import PortIdentifyIn, PortIdentifyOut, PortsOut

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


@endpoint(
    bp,
    "/ports/<name>/identify",
    "POST",
    role="operator",
    body=PortIdentifyIn,
    body_optional=True,
    response=PortIdentifyOut,
    errors=(400, 404, 409, 422, 503, 504),
    summary="Blink a port's link LED so an installer finds the socket",
)
def identify_port(name: str, body: PortIdentifyIn) -> Any:
    """409 when the port's NIC cannot blink (most virtual NICs) or blinks already."""
    path = socket_path(ctx().paths.run_dir, "net")
    if not path.exists():
        raise Unavailable("the net role is not running")
    p = principal()
    result = call(
        path, "identify_port", port=name, seconds=body.seconds, actor=f"web:{p.actor if p else ''}"
    )
    audit("port.identify", target=name, detail=f"{body.seconds} s")
    return result
