"""Every status an operation answers is in /api/openapi.json, also the ones that come from
another role over its control socket (schemathesis, with a field role that only knows one
tag, never sees a device that is down)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from appliance.errors import (
    BadRequest,
    Conflict,
    DeviceError,
    NotFound,
    OpcUaError,
    PermissionDenied,
)
from appliance.state.control import ControlServer, socket_path

from .webkit import Web

# what the field role raises for a write (field/role.py, field/poller.py, field/modbus.py,
# field/opcua_client.py), by the tag written
WRITE_ERRORS: dict[str, Exception] = {
    "plc1.missing": NotFound("plc1 has no tag missing", field="tag"),
    "plc1.readonly": PermissionDenied("plc1.readonly is not writable", field="tag"),
    "plc1.badvalue": BadRequest("300 does not fit uint8", field="value"),
    "plc1.off": Conflict("plc1 is disabled", field="tag"),
    "plc1.down": DeviceError("connect", "192.168.50.10:502 did not answer"),
    "plc1.refused": DeviceError("exception", "illegal data address", exception_code=2),
    "ua1.down": OpcUaError("connect", "opc.tcp://192.168.50.20:4840/ did not answer"),
    "ua1.node": OpcUaError("value", "the node takes a Double", field="value"),
}


def field_write(tag: str, value: Any, actor: str) -> dict[str, Any]:
    raise WRITE_ERRORS[tag]


@pytest.fixture
def field_role(ready: Web) -> Iterator[Web]:
    server = ControlServer(socket_path(ready.paths.run_dir, "field"), {"write": field_write})
    server.start()
    yield ready
    server.stop()


def documented(web: Web, method: str, path: str) -> set[int]:
    doc = web.client().get("/api/openapi.json").json
    return {int(code) for code in doc["paths"][path][method]["responses"]}


@pytest.mark.parametrize("tag", sorted(WRITE_ERRORS))
def test_every_answer_of_a_tag_write_is_documented(field_role: Web, tag: str) -> None:
    a = field_role.login("admin")
    r = a.post(f"/api/tags/{tag}/write", json={"value": 1}, headers=field_role.h(a))
    assert r.is_json and r.json["error"]
    assert 400 <= r.status_code < 600 and r.status_code != 500, r.json
    assert r.status_code in documented(field_role, "post", "/api/tags/{name}/write"), (
        tag,
        r.status_code,
    )


def test_a_device_that_is_down_is_502_and_a_disabled_one_409(field_role: Web) -> None:
    a = field_role.login("admin")
    h = field_role.h(a)
    assert a.post("/api/tags/plc1.down/write", json={"value": 1}, headers=h).status_code == 502
    assert a.post("/api/tags/ua1.node/write", json={"value": 1}, headers=h).status_code == 400
    assert a.post("/api/tags/plc1.off/write", json={"value": 1}, headers=h).status_code == 409


def test_a_history_range_that_ends_before_it_starts_is_a_documented_400(ready: Web) -> None:
    # the fresh-machine run of schemathesis found this 400 missing from the document
    r = ready.login("viewer").get("/api/tags/plc1.t/history?from=10&to=5")
    assert r.status_code == 400 and r.json["field"] == "to", r.json
    assert 400 in documented(ready, "get", "/api/tags/{name}/history")


def test_the_csv_answer_of_a_tag_history_is_a_documented_content_type(ready: Web) -> None:
    from appliance.field.history import HistoryWriter

    w = HistoryWriter(ready.app.extensions["appliance"].store)
    w.add("plc1.counter", ready.clock() - 60, 7, "good")
    w.flush()
    v = ready.login("viewer")
    r = v.get("/api/tags/plc1.counter/history?format=csv")
    assert r.status_code == 200 and r.mimetype == "text/csv", r.get_data(as_text=True)
    assert r.get_data(as_text=True).splitlines()[1].endswith(",plc1.counter,7,good")
    doc = v.get("/api/openapi.json").json
    answer = doc["paths"]["/api/tags/{name}/history"]["get"]["responses"]["200"]
    assert set(answer["content"]) == {"application/json", "text/csv"}
