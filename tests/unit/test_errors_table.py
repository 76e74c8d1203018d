"""One error table: every ApplianceError lives in appliance/errors.py with its exit code and
its HTTP status, and the web role and the fleet server answer the same status for it."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterator
from typing import Any

import pytest

import appliance
from appliance import errors
from appliance.errors import ApplianceError
from appliance.fleet.app import _status as fleet_status
from appliance.state.control import ControlServer, socket_path
from appliance.web.jsonapi import status_of as web_status


def _import_all() -> None:
    for m in pkgutil.walk_packages(appliance.__path__, "appliance."):
        if not m.name.endswith("__main__"):
            importlib.import_module(m.name)


def _subclasses(cls: type) -> Iterator[type[ApplianceError]]:
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def _classes() -> list[type[ApplianceError]]:
    _import_all()
    return [ApplianceError, *dict.fromkeys(_subclasses(ApplianceError))]


def _bare(cls: type[ApplianceError]) -> ApplianceError:
    """An instance without running __init__ (the constructors take different arguments)."""
    e = Exception.__new__(cls)
    e.message, e.field = "x", None
    return e


def test_every_error_class_is_in_the_table_with_its_exit_code_and_http_status() -> None:
    classes = _classes()
    assert len(classes) > 15
    for cls in classes:
        name = f"{cls.__module__}.{cls.__qualname__}"
        assert cls.__module__ == "appliance.errors", f"{name} is defined outside errors.py"
        for attr in ("code", "exit_code", "http_status"):
            assert attr in vars(cls), f"{name} does not say its {attr}"
        assert isinstance(cls.exit_code, int) and 0 < cls.exit_code < 256, name
        assert isinstance(cls.http_status, int) and 400 <= cls.http_status <= 599, name
    assert ApplianceError.http_status == 500


def test_one_code_means_one_status_and_one_exit_code() -> None:
    """A code is what crosses the control socket: it must not depend on the class."""
    seen: dict[str, tuple[int, int, str]] = {}
    for cls in _classes():
        was = seen.setdefault(cls.code, (cls.http_status, cls.exit_code, cls.__name__))
        assert was[:2] == (cls.http_status, cls.exit_code), f"{cls.__name__} vs {was[2]}"


def test_web_and_fleet_answer_the_same_status_for_each_class() -> None:
    for cls in _classes():
        e = _bare(cls)
        assert web_status(e) == fleet_status(e) == cls.http_status, cls.__name__


def test_bad_request_and_unauthorized_exist_once() -> None:
    names = [cls.__name__ for cls in _classes()]
    assert names.count("BadRequest") == 1 and names.count("Unauthorized") == 1
    from appliance.fleet import app as fleet_app
    from appliance.fleet import validate
    from appliance.web import api

    assert validate.BadRequest is api.BadRequest is errors.BadRequest
    assert fleet_app.Unauthorized is errors.Unauthorized


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (ApplianceError("cannot open the history database read-only: disk I/O error"), 500),
        (errors.DeviceError("timeout", "plc1: connect: timed out"), 502),
        (errors.OpcUaError("connect", "opc1: cannot connect"), 502),
        (errors.OpcUaError("value", "x: cannot write 'a'", field="value"), 400),
        (errors.FleetError("unreachable", "fleet: no route"), 502),
        (errors.BadRequest("must be a JSON object", "body"), 400),
        (errors.Invalid("too short", field="password"), 422),
        (errors.Throttled("too many", retry_after=3), 429),
        (errors.Unavailable("the field role is not running"), 503),
    ],
)
def test_server_side_failures_are_5xx_and_input_errors_4xx(
    error: ApplianceError, status: int
) -> None:
    assert web_status(error) == fleet_status(error) == status


def test_a_code_that_came_over_the_control_socket_keeps_its_status() -> None:
    """`control.call` raises the base class with the role's code where no plain class has
    it (device-error): the status follows the code."""
    for code, status in [("device-error", 502), ("throttled", 429), ("bad-request", 400)]:
        e = ApplianceError("from the field role")
        e.code = code
        assert web_status(e) == status, code
    e = ApplianceError("something nobody knows")
    e.code = "no-such-code"
    assert web_status(e) == 500


def test_an_input_error_keeps_its_field_path_over_the_control_socket(tmp_path) -> None:
    """The role's error arrives with its code, message and field path, so the API names
    the field (and the message reads the same as before: `field: message`)."""
    from appliance.state.control import call

    def identify(seconds: Any) -> None:
        raise errors.Invalid(f"{seconds!r} is not a number", field="seconds")

    server = ControlServer(tmp_path / "agent.sock", {"identify": identify})
    server.start()
    try:
        with pytest.raises(ApplianceError) as got:
            call(tmp_path / "agent.sock", "identify", seconds="soon")
    finally:
        server.stop()
    assert got.value.code == "invalid" and got.value.field == "seconds"
    assert str(got.value) == "seconds: 'soon' is not a number"
    assert web_status(got.value) == 422
    # the class comes back too, so the CLI exits as if the error were its own
    assert type(got.value) is errors.Invalid and got.value.exit_code == 2


@pytest.mark.parametrize("cls", [c for c in errors._classes() if c is not ApplianceError])
def test_every_class_that_takes_a_message_comes_back_as_itself(tmp_path, cls: type) -> None:
    """Over the control socket an error is its code; the caller gets the class back when
    it can be built from a message and a field (the others: the base class, same code)."""
    from appliance.state.control import _error_class, _takes_message_and_field

    got = _error_class(cls.code)
    if _takes_message_and_field(cls):
        assert got.code == cls.code and got.exit_code == cls.exit_code, cls
    else:
        assert got.code == cls.code or got is ApplianceError, cls


# -- through the web API --------------------------------------------------------------

from .webkit import Web, error_of  # noqa: E402


@pytest.fixture
def failing_field(ready: Web) -> Iterator[None]:
    def write(tag: str, value: Any, actor: str) -> dict[str, Any]:
        if tag == "plc1.modbus":
            raise errors.DeviceError("timeout", "plc1: write: no answer within 1 s")
        if tag == "plc1.opcua":
            raise errors.OpcUaError("connect", "opc1: cannot connect")
        raise errors.OpcUaError("value", f"{tag}: cannot write {value!r}", field="value")

    server = ControlServer(socket_path(ready.paths.run_dir, "field"), {"write": write})
    server.start()
    yield
    server.stop()


def test_a_failed_device_write_is_502_and_a_bad_value_400(ready: Web, failing_field: None) -> None:
    a = ready.login("admin")
    h = ready.h(a)
    r = a.post("/api/tags/plc1.modbus/write", json={"value": 1}, headers=h)
    assert r.status_code == 502 and "no answer" in error_of(r)
    r = a.post("/api/tags/plc1.opcua/write", json={"value": 1}, headers=h)
    assert r.status_code == 502 and "cannot connect" in error_of(r)
    r = a.post("/api/tags/plc1.other/write", json={"value": 1}, headers=h)
    assert r.status_code == 400 and "cannot write" in error_of(r)
