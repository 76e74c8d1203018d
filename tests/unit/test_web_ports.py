"""GET /api/ports: the net role's port list for viewers and up, 503 when it is not running,
and the answer is the one the OpenAPI document describes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from appliance.errors import Conflict, NotFound
from appliance.state.control import ControlServer, socket_path
from appliance.state.db import Audit
from appliance.state.live import LiveState
from appliance.web.schemas import PortsOut

from .webkit import Web, error_of

COUNTERS = {
    "rx_bytes": 1500, "rx_packets": 10, "rx_errors": 0, "rx_dropped": 1,
    "tx_bytes": 600, "tx_packets": 4, "tx_errors": 0, "tx_dropped": 0,
}  # fmt: skip
PORTS: list[dict[str, Any]] = [
    {
        "name": "it0", "mac": "02:a0:00:00:01:01", "driver": "veth", "pci_path": None,
        "label": None, "kind": "veth", "role": "it", "interface": "it0", "admin_up": True,
        "carrier": True, "operstate": "UP", "speed": 10000, "duplex": "full",
        "counters": COUNTERS, "index": 2,
    },
    {
        "name": "enp3s0", "mac": "00:1b:21:0a:0b:0d", "driver": "e1000e",
        "pci_path": "0000:03:00.0", "label": "OT", "kind": None, "role": None,
        "interface": None, "admin_up": False, "carrier": None, "operstate": "DOWN",
        "speed": None, "duplex": None, "counters": COUNTERS, "index": 3,
    },
]  # fmt: skip


def publish(web: Web, ports: list[dict[str, Any]], age: float = 0.0) -> None:
    """The net role's live document as it writes it, `age` seconds before the app's clock."""
    live = LiveState(web.paths.run_dir)
    live.write("net", {"role": "net", "ports": ports})
    doc = json.loads(live.path("net").read_text())
    doc["updated_at"] = web.clock.t - age
    live.path("net").write_text(json.dumps(doc))


def test_viewers_read_the_port_list(ready: Web) -> None:
    publish(ready, PORTS)
    r = ready.login("viewer").get("/api/ports")
    assert r.status_code == 200, r.json
    assert r.json == {"ports": PORTS, "updated_at": ready.clock.t}
    PortsOut.model_validate(r.json)  # the shape the OpenAPI document promises


def test_nobody_logged_in_reads_nothing(ready: Web) -> None:
    publish(ready, PORTS)
    assert ready.client().get("/api/ports").status_code == 401


def test_503_naming_the_net_role_when_it_is_not_running(ready: Web) -> None:
    v = ready.login("viewer")
    r = v.get("/api/ports")
    assert r.status_code == 503 and "net role is not running" in error_of(r)
    publish(ready, PORTS, age=60)  # what it left behind when it stopped
    r = v.get("/api/ports")
    assert r.status_code == 503 and r.json["field"] is None


def test_the_openapi_document_describes_it(ready: Web) -> None:
    doc = ready.client().get("/api/openapi.json").json
    op = doc["paths"]["/api/ports"]["get"]
    assert op["x-role"] == "viewer" and "503" in op["responses"]
    ref = op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    assert ref.endswith("/PortsOut")
    port = doc["components"]["schemas"]["PortOut"]
    assert {"name", "mac", "driver", "pci_path", "label", "carrier", "speed", "duplex"} <= set(
        port["properties"]
    )
    assert set(port["required"]) >= {"name", "mac", "carrier", "counters"}


# -- identify a port ------------------------------------------------------------------------


@pytest.fixture
def net_socket(ready: Web) -> Iterator[list[dict[str, Any]]]:
    """The net role's control socket, answering identify_port as the role does."""
    asked: list[dict[str, Any]] = []

    def identify_port(port: str, seconds: int, actor: str) -> dict[str, Any]:
        asked.append({"port": port, "seconds": seconds, "actor": actor})
        if port == "enp3s0":
            raise Conflict("enp3s0 is blinking already", field="port")
        if port != "it0":
            raise NotFound(f"no port {port!r} (ports: it0, enp3s0)", field="port")
        return {"port": port, "until": 100.0 + seconds}

    server = ControlServer(
        socket_path(ready.paths.run_dir, "net"), {"identify_port": identify_port}
    )
    server.start()
    yield asked
    server.stop()


def test_operators_identify_a_port(ready: Web, net_socket: list[dict[str, Any]]) -> None:
    op = ready.login("operator")
    r = op.post("/api/ports/it0/identify", json={"seconds": 30}, headers=ready.h(op))
    assert r.status_code == 200, r.json
    assert r.json == {"port": "it0", "until": 130.0}
    assert net_socket == [{"port": "it0", "seconds": 30, "actor": "web:operator"}]
    r = op.post("/api/ports/it0/identify", headers=ready.h(op))  # no body: 15 s
    assert r.status_code == 200 and net_socket[-1]["seconds"] == 15
    rows = Audit.select().where(Audit.action == "port.identify").order_by(Audit.id)
    assert [(a.actor, a.target, a.detail) for a in rows] == [
        ("operator", "it0", "30 s"),
        ("operator", "it0", "15 s"),
    ]


def test_identify_answers_name_the_field(ready: Web, net_socket: list[dict[str, Any]]) -> None:
    op = ready.login("operator")
    h = ready.h(op)
    r = op.post("/api/ports/eth9/identify", json={}, headers=h)
    assert r.status_code == 404 and r.json["field"] == "port" and "eth9" in r.json["error"]
    r = op.post("/api/ports/enp3s0/identify", json={}, headers=h)
    assert r.status_code == 409 and r.json["error"] == "enp3s0 is blinking already"
    r = op.post("/api/ports/it0/identify", json={"seconds": 0}, headers=h)
    assert r.status_code == 422 and r.json["field"] == "seconds"
    v = ready.login("viewer")
    assert v.post("/api/ports/it0/identify", json={}, headers=ready.h(v)).status_code == 403
    assert [a["port"] for a in net_socket] == ["eth9", "enp3s0"]


def test_identify_without_the_net_role(ready: Web) -> None:
    op = ready.login("operator")
    r = op.post("/api/ports/it0/identify", json={}, headers=ready.h(op))
    assert r.status_code == 503 and "net role is not running" in error_of(r)
