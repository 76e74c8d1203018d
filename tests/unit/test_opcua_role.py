"""The opcua role's glue with fakes (no asyncua server, no field role): when it starts,
reconfigures, restarts and stops the server, a server that fails to start (one event,
retried by step), the value stream's snapshot, changes and loss, an admin's write to the
field role, and close(). The server itself is tested in test_opcua_server.py, the role
for real in tests/integration/test_opcua_role.py."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine, Iterable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from appliance.config.field import Device
from appliance.config.field import Northbound as NorthboundConfig
from appliance.config.load import validate_data
from appliance.config.model import Config
from appliance.errors import ApplianceError, NotFound, Unavailable
from appliance.opcua.role import RETRY_EVERY_S, OpcUaRole, field_writer
from appliance.paths import Paths
from appliance.roles import Change
from appliance.state import control
from appliance.valuestream import ValueStream, stream_path

from . import factory

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def cfg(
    *,
    enabled: bool = True,
    port: int = 4840,
    security: list[str] | None = None,
    devices: Iterable[str] = ("plc1",),
) -> Config:
    doc = factory.base()
    server: dict[str, Any] = {"enabled": enabled, "port": port}
    if security is not None:
        server["security"] = security
    doc["opcua_server"] = server
    doc["devices"] = [
        {
            "name": name,
            "protocol": "modbus-tcp",
            "address": "192.168.50.10:502",
            "tags": [
                {"name": "a", "table": "holding", "address": 0},
                {"name": "sp", "table": "holding", "address": 1, "writable": True},
            ],
        }
        for name in devices
    ]
    return validate_data(doc).config


class FakeNorthbound:
    """What `Northbound` offers the role, recorded: start/reconfigure/stop, the updates."""

    def __init__(self, servers: Servers, cfg: NorthboundConfig, on_write: Any) -> None:
        self.servers = servers
        self.cfg = cfg
        self.on_write = on_write
        self.running = False
        self.sessions = 0
        self.calls: list[tuple[str, list[str]]] = []
        self.updates: dict[str, tuple[Any, str, float | None]] = {}

    @property
    def endpoint(self) -> str:
        return f"opc.tcp://0.0.0.0:{self.cfg.port}/"

    async def start(self, devices: Iterable[Device]) -> None:
        self.calls.append(("start", [d.name for d in devices]))
        if self.servers.fail:
            raise ApplianceError(self.servers.fail.pop(0), field="opcua_server.port")
        self.running = True

    async def reconfigure(self, devices: Iterable[Device]) -> None:
        self.calls.append(("reconfigure", [d.name for d in devices]))

    def update(self, name: str, value: Any, quality: str, source_time: float | None) -> None:
        self.updates[name] = (value, quality, source_time)

    async def stop(self) -> None:
        self.calls.append(("stop", []))
        self.running = False


class Servers:
    """The `northbound` factory: every server built, and errors for the next starts."""

    def __init__(self) -> None:
        self.made: list[FakeNorthbound] = []
        self.role_of: list[Any] = []
        self.fail: list[str] = []

    def __call__(
        self, cfg: NorthboundConfig, paths: Paths, authenticate: Any, on_write: Any, **kw: Any
    ) -> FakeNorthbound:
        self.role_of.append(kw.get("role_of"))
        nb = FakeNorthbound(self, cfg, on_write)
        self.made.append(nb)
        return nb


class Events:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, str, str]] = []

    def event(self, kind: str, message: str, *, source: str, severity: str = "info") -> None:
        self.events.append((kind, message, source, severity))


class Fixture:
    def __init__(self, tmp_path: Path) -> None:
        self.paths = Paths(tmp_path / "data", tmp_path / "run")
        self.servers = Servers()
        self.events = Events()
        self.writes: list[tuple[str, Any, str]] = []
        self.role = OpcUaRole(
            self.paths,
            self.events,
            lambda u, p, source=None: None,
            role_of=None,
            northbound=self.servers,
            write_field=self.write_field,
        )

    def write_field(self, tag: str, value: Any, actor: str) -> Any:
        self.writes.append((tag, value, actor))
        return {"tag": tag, "written": value}

    @property
    def nb(self) -> FakeNorthbound:
        return self.servers.made[-1]


@pytest.fixture
def f(tmp_path: Path) -> Fixture:
    return Fixture(tmp_path)


SNAPSHOT = b'{"snapshot": {"plc1.a": [1, "good", 5.0], "plc1.sp": [7, "uncertain", 6.0]}, "t": 6}\n'


def test_disabled_runs_no_server(f: Fixture) -> None:
    run(f.role.apply(Change(3, cfg(enabled=False))))
    assert f.servers.made == []
    doc = f.role.snapshot(time.time())
    assert doc["enabled"] is False and doc["running"] is False and doc["endpoints"] == []
    assert doc["error"] is None and doc["revision"] == 3 and doc["port"] == 4840


def test_no_revision_is_the_defaults_an_enabled_server_without_devices(f: Fixture) -> None:
    run(f.role.apply(Change(None, None)))
    assert [nb.calls for nb in f.servers.made] == [[("start", [])]]
    assert f.nb.cfg == Config().opcua_server
    doc = f.role.snapshot(time.time())
    assert doc["enabled"] is True and doc["running"] is True and doc["revision"] is None


def test_enabled_starts_with_the_devices_and_pushes_the_known_values(f: Fixture) -> None:
    f.role.handle(SNAPSHOT)  # the stream answered before the first revision
    f.role.dirty = False
    run(f.role.apply(Change(1, cfg(devices=["plc1", "plc2"]))))
    assert f.nb.calls == [("start", ["plc1", "plc2"])]
    assert f.nb.updates == {"plc1.a": (1, "good", 5.0), "plc1.sp": (7, "uncertain", 6.0)}
    assert f.servers.role_of == [None]
    assert f.role.dirty
    doc = f.role.snapshot(time.time())
    assert doc["running"] is True and doc["values"] == 2 and doc["connected"] is True
    assert doc["endpoints"] == [
        {"url": "opc.tcp://0.0.0.0:4840/", "security": p}
        for p in ("Basic256Sha256-SignAndEncrypt", "Basic256Sha256-Sign")
    ]


def test_the_accounts_role_of_is_handed_to_the_server(tmp_path: Path) -> None:
    from appliance.opcua import role as opcua_role

    servers = Servers()
    role = OpcUaRole(
        Paths(tmp_path, tmp_path), Events(), lambda u, p, source=None: None, northbound=servers
    )
    run(role.apply(Change(1, cfg())))
    assert servers.role_of == [opcua_role._role_of]


def test_new_devices_with_the_same_settings_reconfigure_not_restart(f: Fixture) -> None:
    run(f.role.apply(Change(1, cfg())))
    f.role.handle(SNAPSHOT)
    f.nb.updates.clear()
    run(f.role.apply(Change(2, cfg(devices=["plc1", "plc2"]))))
    assert len(f.servers.made) == 1
    assert f.nb.calls == [("start", ["plc1"]), ("reconfigure", ["plc1", "plc2"])]
    assert f.nb.running and f.role.snapshot(time.time())["revision"] == 2
    assert set(f.nb.updates) == {"plc1.a", "plc1.sp"}  # the new variables get the values


@pytest.mark.parametrize(
    "changed", [{"port": 4841}, {"security": ["None"]}], ids=["port", "security"]
)
def test_changed_server_settings_restart_it(f: Fixture, changed: dict[str, Any]) -> None:
    run(f.role.apply(Change(1, cfg())))
    first = f.nb
    f.role.dirty = False
    run(f.role.apply(Change(2, cfg(**changed))))
    assert len(f.servers.made) == 2
    assert first.calls == [("start", ["plc1"]), ("stop", [])] and not first.running
    assert f.nb.calls == [("start", ["plc1"])] and f.nb.running
    assert f.role.northbound is f.nb and f.role.dirty


def test_disabled_again_stops_the_server(f: Fixture) -> None:
    run(f.role.apply(Change(1, cfg())))
    nb = f.nb
    f.role.dirty = False
    run(f.role.apply(Change(2, cfg(enabled=False))))
    assert nb.calls[-1] == ("stop", []) and not nb.running
    assert len(f.servers.made) == 1 and f.role.northbound is None and f.role.dirty
    doc = f.role.snapshot(time.time())
    assert doc["enabled"] is False and doc["running"] is False and doc["sessions"] == 0


def test_an_invalid_revision_keeps_what_runs(f: Fixture) -> None:
    run(f.role.apply(Change(1, cfg())))
    run(f.role.apply(Change(2, None, error="devices[0]: no longer valid")))
    assert f.nb.calls == [("start", ["plc1"])] and f.nb.running
    assert f.role.snapshot(time.time())["running"] is True


def test_a_server_that_fails_to_start_is_retried_by_step_with_one_event(f: Fixture) -> None:
    f.servers.fail = ["cannot listen on port 4840: in use"] * 3
    run(f.role.apply(Change(1, cfg())))
    doc = f.role.snapshot(time.time())
    assert doc["running"] is False and doc["enabled"] is True
    assert doc["error"] == "opcua_server.port: cannot listen on port 4840: in use"
    assert f.events.events == [
        (
            "opcua.server_failed",
            "OPC UA server: opcua_server.port: cannot listen on port 4840: in use",
            "opcua",
            "error",
        )
    ]
    failed_at = time.time()
    run(f.role.step(failed_at))  # not again at once: every RETRY_EVERY_S
    assert len(f.servers.made) == 1
    run(f.role.step(failed_at + RETRY_EVERY_S))
    run(f.role.step(failed_at + 2 * RETRY_EVERY_S + 1))
    assert len(f.servers.made) == 3  # retried, still failing: no event per retry
    assert len(f.events.events) == 1
    f.role.dirty = False
    run(f.role.step(time.time() + RETRY_EVERY_S))
    assert len(f.servers.made) == 4 and f.nb.running and f.role.dirty
    doc = f.role.snapshot(time.time())
    assert doc["running"] is True and doc["error"] is None
    run(f.role.step(time.time() + 10 * RETRY_EVERY_S))  # running: nothing to retry
    assert len(f.servers.made) == 4 and len(f.events.events) == 1


def test_stream_snapshot_and_changes_update_the_server(f: Fixture) -> None:
    run(f.role.apply(Change(1, cfg())))
    f.role.dirty = False
    f.role.handle(SNAPSHOT)
    assert f.nb.updates == {"plc1.a": (1, "good", 5.0), "plc1.sp": (7, "uncertain", 6.0)}
    assert f.role.connected and f.role.dirty  # connected: worth publishing soon
    f.role.dirty = False
    f.nb.updates.clear()
    f.role.handle(b'{"values": {"plc1.a": [2, "good", 8.0]}, "t": 8}\n')
    assert f.nb.updates == {"plc1.a": (2, "good", 8.0)}
    assert not f.role.dirty  # a value is not worth an early write
    doc = f.role.snapshot(time.time())
    assert doc["values"] == 2 and doc["last_update"] is not None


def test_a_lost_stream_makes_every_value_bad_until_the_next_snapshot(f: Fixture) -> None:
    run(f.role.apply(Change(1, cfg())))
    f.role.handle(SNAPSHOT)
    f.role.dirty = False
    f.role.disconnected()
    assert f.nb.updates == {"plc1.a": (1, "bad", 5.0), "plc1.sp": (7, "bad", 6.0)}
    assert f.role.dirty and f.role.snapshot(time.time())["connected"] is False
    f.role.dirty = False
    f.role.disconnected()  # the reader's back-off: lost again, nothing new to say
    assert not f.role.dirty
    f.role.handle(b'{"snapshot": {"plc1.a": [3, "good", 9.0], "plc1.sp": [7, "good", 9.0]}}\n')
    assert f.nb.updates == {"plc1.a": (3, "good", 9.0), "plc1.sp": (7, "good", 9.0)}
    assert f.role.dirty and f.role.snapshot(time.time())["connected"] is True


def test_a_server_started_while_the_stream_is_down_gets_bad_values(f: Fixture) -> None:
    f.role.handle(SNAPSHOT)
    f.role.disconnected()
    run(f.role.apply(Change(1, cfg())))
    assert f.nb.updates == {"plc1.a": (1, "bad", 5.0), "plc1.sp": (7, "bad", 6.0)}


def test_an_admin_write_goes_to_the_field_role(f: Fixture) -> None:
    run(f.role.apply(Change(1, cfg())))
    answer = run(f.nb.on_write("plc1.sp", 123, "alice"))  # what the server calls
    assert f.writes == [("plc1.sp", 123, "alice")]
    assert answer == {"tag": "plc1.sp", "written": 123}


def test_the_field_writer_asks_the_field_role_with_source_opcua(tmp_path: Path) -> None:
    asked: list[dict[str, Any]] = []

    def write(**params: Any) -> Any:
        asked.append(params)
        if params["tag"] == "plc1.nope":
            raise NotFound("no tag plc1.nope")
        return {"ok": 1}

    server = control.ControlServer(control.socket_path(tmp_path, "field"), {"write": write})
    server.start()
    try:
        writer = field_writer(tmp_path)
        assert writer("plc1.sp", 5, "alice") == {"ok": 1}
        with pytest.raises(NotFound) as exc:  # an unknown tag stays NotFound
            writer("plc1.nope", 5, "alice")
        assert not isinstance(exc.value, Unavailable)
    finally:
        server.stop()
    assert asked == [
        {"tag": "plc1.sp", "value": 5, "actor": "alice", "source": "opcua"},
        {"tag": "plc1.nope", "value": 5, "actor": "alice", "source": "opcua"},
    ]


def test_a_write_while_the_field_role_is_not_running_is_unavailable(tmp_path: Path) -> None:
    paths = Paths(tmp_path / "data", tmp_path / "run")
    role = OpcUaRole(paths, Events(), lambda u, p, source=None: None, northbound=Servers())
    with pytest.raises(Unavailable, match="the field role is not running") as exc:
        run(role.on_write("plc1.sp", 1, "alice"))
    assert exc.value.http_status == 503
    assert not isinstance(exc.value, NotFound)  # the server answers BadCommunicationError


def test_start_reads_the_stream_and_close_stops_server_and_reader(f: Fixture) -> None:
    async def body() -> None:
        stream = ValueStream(stream_path(f.paths.run_dir), lambda: {"plc1.a": [4, "good", 1.0]})
        await stream.start()
        try:
            await f.role.start()
            await f.role.apply(Change(1, cfg()))
            for _ in range(200):
                if f.role.connected:
                    break
                await asyncio.sleep(0.01)
            assert f.nb.updates == {"plc1.a": (4, "good", 1.0)}
            feed = f.role._feed
            assert feed is not None and not feed.done()
            await f.role.close()
            assert feed.cancelled()
            assert f.nb.calls[-1] == ("stop", []) and not f.nb.running
            assert f.role.northbound is None
            assert f.role.snapshot(time.time())["running"] is False
        finally:
            stream.stop()

    run(body())


def test_a_server_stopped_while_it_starts_is_closed_not_left_listening(f: Fixture) -> None:
    """systemd's SIGTERM during a slow first start (the address space cache, a small CPU)
    cancels the start: the half-started server is stopped, not left to the process exit."""

    async def main() -> None:
        started = asyncio.Event()
        made = f.servers.__call__

        def slow_server(*args: Any, **kw: Any) -> FakeNorthbound:
            nb = made(*args, **kw)

            async def slow_start(devices: Iterable[Device]) -> None:
                started.set()
                await asyncio.sleep(3600)

            nb.start = slow_start  # type: ignore[method-assign]
            return nb

        f.role.make_server = slow_server  # type: ignore[assignment]
        task = asyncio.create_task(f.role.apply(Change(1, cfg())))
        await asyncio.wait_for(started.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(main())
    assert f.nb.calls == [("stop", [])] and f.role.northbound is None
