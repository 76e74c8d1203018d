"""POST /api/devices/probe (issue 17 item 9, docs/api.md): admins only, the body checked
at its paths before the field role is asked, the role's answer passed on (a result, 409
while another test runs), 503 and an audit row when the role is not there; and once
through the real field role's control socket with a fake Modbus link."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from testkit import FakeLink

from appliance.errors import Conflict
from appliance.field.probe import PROBE_LIMIT_S
from appliance.field.role import PROBE_RPC_TIMEOUT_S, FieldRole
from appliance.state.control import ControlServer, socket_path
from appliance.state.db import Audit, Store
from appliance.web.views.field import PROBE_CALL_TIMEOUT_S

from .webkit import Web, error_of

TCP = {"protocol": "modbus-tcp", "address": "192.168.50.10:502"}
ANSWER = {
    "ok": True,
    "protocol": "modbus-tcp",
    "target": "192.168.50.10:502",
    "elapsed_ms": 3.2,
    "stage": None,
    "message": "192.168.50.10:502 answered in 3.1 ms",
    "read": {"table": "holding", "address": 0, "count": 1, "values": [7]},
    "browse": None,
}


@pytest.fixture
def fake_field(ready: Web) -> Iterator[list[dict[str, Any]]]:
    calls: list[dict[str, Any]] = []

    def probe(request: dict[str, Any], actor: str, source: str) -> dict[str, Any]:
        calls.append({"request": request, "actor": actor, "source": source})
        if request["device"].get("address") == "10.9.9.9:502":
            raise Conflict("another test connection is running; try again when it is done")
        return ANSWER

    server = ControlServer(socket_path(ready.paths.run_dir, "field"), {"probe": probe})
    server.start()
    yield calls
    server.stop()


def post(ready: Web, body: Any, who: str = "admin") -> Any:
    c = ready.login(who)
    return c.post("/api/devices/probe", json=body, headers=ready.h(c))


def paths_of(r: Any) -> set[str]:
    return {e["path"] for e in r.json["errors"]}


def test_an_admin_probe_goes_to_the_field_role_and_its_answer_comes_back(
    ready: Web, fake_field: list[dict[str, Any]]
) -> None:
    r = post(ready, {"device": TCP, "read": {"table": "coil", "address": 4, "count": 8}})
    assert r.status_code == 200 and r.json == ANSWER
    [call] = fake_field
    assert call["actor"] == "web:admin" and call["source"].startswith("web:")
    assert call["request"] == {
        "device": {"name": "probe", **TCP},
        "read": {"table": "coil", "address": 4, "count": 8},
    }
    post(ready, {"device": {"protocol": "opcua", "address": "opc.tcp://h:4840"}, "browse": None})
    assert fake_field[-1]["request"]["browse"] is None  # given as null: browse the Objects
    post(ready, {"device": {"protocol": "opcua", "address": "opc.tcp://h:4840"}})
    assert "browse" not in fake_field[-1]["request"]  # not given: no browse


def test_operators_and_viewers_may_not_probe(ready: Web, fake_field: list[Any]) -> None:
    for who in ("operator", "viewer"):
        assert post(ready, {"device": TCP}, who).status_code == 403
    assert fake_field == []


def test_bad_bodies_are_422_at_their_paths_and_never_reach_the_role(
    ready: Web, fake_field: list[Any]
) -> None:
    r = post(ready, {"device": {**TCP, "address": "10.0.0.1:99999"}})
    assert r.status_code == 422 and paths_of(r) == {"device.address"}
    assert "port must be 1-65535" in error_of(r)
    r = post(ready, {"device": TCP, "read": {"table": "holding", "address": 0, "count": 200}})
    assert r.status_code == 422 and paths_of(r) == {"read.count"}
    r = post(ready, {"device": TCP, "browse": "i=85"})
    assert r.status_code == 422 and paths_of(r) == {"browse"}
    r = post(ready, {"device": TCP, "write": 1})
    assert r.status_code == 422 and paths_of(r) == {"write"}
    r = post(ready, {"device": {"protocol": "modbus-rtu", "serial": {"port": "/dev/x", "baud": 1}}})
    assert r.status_code == 422 and paths_of(r) == {"device.serial.baud"}
    assert post(ready, {"read": {"table": "coil", "address": 0}}).status_code == 422
    assert fake_field == []


def test_a_probe_while_another_runs_is_409(ready: Web, fake_field: list[Any]) -> None:
    r = post(ready, {"device": {**TCP, "address": "10.9.9.9:502"}})
    assert r.status_code == 409 and "another test connection" in error_of(r)
    assert not Audit.select().where(Audit.action == "device.probe").exists()  # the role's row


def test_without_the_field_role_it_is_503_and_audited(ready: Web) -> None:
    r = post(ready, {"device": TCP})
    assert r.status_code == 503 and error_of(r) == "the field role is not running"
    row = Audit.select().where(Audit.action == "device.probe").get()
    assert (row.actor, row.target, row.result) == ("admin", "192.168.50.10:502", "failed")
    # a socket left behind by a role that is gone: 503 too, not 404
    path = socket_path(ready.paths.run_dir, "field")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    assert post(ready, {"device": TCP}).status_code == 503


def test_the_waits_nest_and_openapi_lists_the_route(ready: Web) -> None:
    assert PROBE_LIMIT_S < PROBE_RPC_TIMEOUT_S < PROBE_CALL_TIMEOUT_S
    doc = ready.client().get("/api/openapi.json").json
    op = doc["paths"]["/api/devices/probe"]["post"]
    assert {"409", "422", "503"} <= set(op["responses"])
    schema = op["requestBody"]["content"]["application/json"]["schema"]
    assert schema["$ref"].endswith("/ProbeIn")


def test_through_the_real_field_role(ready: Web) -> None:
    link = FakeLink({0: 1, 1: 2, 2: 65535})
    store: Store = ready.app.extensions["appliance"].store  # the role's rows in the same DB
    role = FieldRole(
        ready.paths, store, ring=lambda: None, tcp_link=lambda host, port, timeout: link
    )
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    started = threading.Event()

    async def serve() -> None:
        await role.start()
        started.set()
        try:
            await stop.wait()
        finally:
            await role.close()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),))
    thread.start()
    try:
        assert started.wait(5)
        r = post(ready, {"device": TCP, "read": {"table": "input", "address": 0, "count": 3}})
        assert r.status_code == 200, r.json
        assert r.json["ok"] is True and r.json["read"]["values"] == [1, 2, 65535]
        assert link.reads == [("input", 0, 3)] and not link.connected
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        loop.close()
    rows = [
        (a.actor, a.action, a.result) for a in Audit.select().where(Audit.action == "device.probe")
    ]
    assert rows == [("web:admin", "device.probe", "ok")]  # one row: the role's
