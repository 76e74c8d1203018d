"""The field role on its contract (`AsyncRole`), with fake Modbus links and a fake OPC UA
client: what a change of the desired revision starts, keeps and stops, what a write and a
stale revision do, how an alarm makes the live document dirty, and what `close` leaves."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from testkit import FakeLink

from appliance.config.model import Config
from appliance.errors import Conflict, DeviceError, NotFound, Unavailable, status_of
from appliance.field.role import FieldRole
from appliance.paths import Paths
from appliance.rolekit import AsyncLoop
from appliance.roles import AsyncRole, Change
from appliance.state import revisions
from appliance.state.control import call, socket_path
from appliance.state.db import Audit, Revision, Store
from appliance.state.live import LiveState

from . import factory


def plc(name: str = "plc1", address: str = "192.168.50.10:502", **kw: Any) -> dict[str, Any]:
    dev: dict[str, Any] = {
        "name": name,
        "protocol": "modbus-tcp",
        "address": address,
        "poll_interval": 0.1,
        "tags": [
            {"name": "temp", "table": "holding", "address": 0, "alarms": {"high": 80}},
            {"name": "sp", "table": "holding", "address": 1, "writable": True},
        ],
    }
    dev.update(kw)
    return dev


def config(*devices: dict[str, Any]) -> Config:
    doc = factory.base()
    doc["devices"] = list(devices)
    return Config.model_validate(doc)


class Links:
    """The role's `tcp_link` adapter: one FakeLink per address asked for, kept to look at."""

    def __init__(self) -> None:
        self.made: list[tuple[str, int, FakeLink]] = []
        self.registers: dict[str, dict[int, int]] = {}  # host -> what its device holds

    def __call__(self, host: str, port: int, timeout: float) -> FakeLink:
        link = FakeLink(self.registers.setdefault(host, {}))
        self.made.append((host, port, link))
        return link

    def of(self, host: str) -> list[FakeLink]:
        return [link for h, _, link in self.made if h == host]


class FakeOpcUa:
    """The `opcua_device` adapter's product: reports one value and one state, takes writes."""

    def __init__(self, dev: Any, paths: Paths) -> None:
        self.dev = dev
        self.writes: list[tuple[str, Any]] = []
        self.stopped = False

    async def run(self, on_value: Any, on_state: Any, stop: asyncio.Event) -> None:
        on_state(True, None)
        on_value("speed", 12.5, "good", 1000.0)
        try:
            await stop.wait()
        finally:  # set or cancelled: either way the role stopped it
            self.stopped = True

    async def write(self, tag: str, value: Any) -> Any:
        self.writes.append((tag, value))
        return value


class Fixture:
    def __init__(self, store: Store, tmp_path: Path) -> None:
        self.store = store
        self.paths = Paths(tmp_path / "data", tmp_path / "run")
        self.links = Links()
        self.rings = 0
        self.opcua: list[FakeOpcUa] = []

        def ring() -> None:
            self.rings += 1

        def opcua_device(dev: Any, paths: Paths) -> FakeOpcUa:
            if dev.name == "broken":
                raise Unavailable("no such certificate")
            out = FakeOpcUa(dev, paths)
            self.opcua.append(out)
            return out

        self.role = FieldRole(
            self.paths, store, ring=ring, tcp_link=self.links, opcua_device=opcua_device
        )

    def run(self, body: Callable[[FieldRole], Awaitable[None]]) -> None:
        """start, the test's body, close: as `AsyncLoop` runs the role."""

        async def main() -> None:
            await self.role.start()
            try:
                await body(self.role)
            finally:
                await self.role.close()

        asyncio.run(main())


@pytest.fixture
def f(store: Store, tmp_path: Path) -> Fixture:
    return Fixture(store, tmp_path)


async def until(cond: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.01)


def test_the_role_fulfils_the_async_contract(f: Fixture) -> None:
    role: AsyncRole = f.role  # a type check (mypy) as much as a test
    assert role.name == "field" and role.dirty is False
    assert {"role", "revision", "devices", "tags", "alarms", "comm_loss", "history"} <= set(
        role.snapshot(time.time())
    )


def test_a_change_starts_polling_and_a_new_one_keeps_the_connection(f: Fixture) -> None:
    f.links.registers["192.168.50.10"] = {0: 21, 1: 5}

    async def body(role: FieldRole) -> None:
        await role.apply(Change(7, config(plc())))
        await until(lambda: role.tags["plc1.temp"]["value"] == 21, "plc1 polled")
        doc = role.snapshot(time.time())
        assert doc["revision"] == 7 and doc["devices"]["plc1"]["state"] == "ok"
        assert doc["tags"]["plc1.temp"]["quality"] == "good"
        [link] = f.links.of("192.168.50.10")
        assert link.connects == 1

        # new tags, same connection: the poller is reconfigured, not restarted
        more = plc()
        more["tags"].append({"name": "extra", "table": "holding", "address": 2})
        f.links.registers["192.168.50.10"][2] = 9
        await role.apply(Change(8, config(more)))
        await until(lambda: role.tags["plc1.extra"]["value"] == 9, "the new tag polled")
        assert role.tags["plc1.temp"]["value"] == 21  # the old value carried over
        assert len(f.links.of("192.168.50.10")) == 1 and link.connects == 1

        # moved: a new link to the new address, the old one closed
        f.links.registers["192.168.50.11"] = {0: 30}
        await role.apply(Change(9, config(plc(address="192.168.50.11:502"))))
        await until(lambda: role.tags["plc1.temp"]["value"] == 30, "polled at the new address")
        assert link.is_connected is False
        # removed: no device, no tags
        await role.apply(Change(10, config()))
        assert role.runners == {} and role.tags == {} and role.buses == {}

    f.run(body)


def test_no_revision_yet_runs_no_devices(f: Fixture) -> None:
    async def body(role: FieldRole) -> None:
        await role.apply(Change(None, None))
        doc = role.snapshot(time.time())
        assert doc["revision"] is None and doc["devices"] == {} and doc["tags"] == {}

    f.run(body)


def test_a_stale_revision_keeps_the_devices_and_says_why(f: Fixture) -> None:
    f.links.registers["192.168.50.10"] = {0: 21}

    async def body(role: FieldRole) -> None:
        await role.apply(Change(3, config(plc())))
        await until(lambda: role.tags["plc1.temp"]["value"] == 21, "plc1 polled")
        await role.apply(Change(4, None, error="devices.0.bogus: unknown key\nmore"))
        assert role.revision_id == 4
        assert set(role.runners) == {"plc1"}  # still polled
        await until(lambda: bool(f.store.events(5, "field.config_invalid")), "the event")

    f.run(body)
    [ev] = f.store.events(5, "field.config_invalid")
    assert ev.severity == "error"
    assert ev.message == (
        "revision 4 does not validate; the field role keeps its devices: "
        "devices.0.bogus: unknown key"
    )
    assert json.loads(ev.data) == {"revision": 4}


def test_an_alarm_makes_the_document_dirty_and_comm_loss_is_one(f: Fixture) -> None:
    f.links.registers["192.168.50.10"] = {0: 95}

    async def body(role: FieldRole) -> None:
        await role.apply(Change(1, config(plc(), plc("dead", "192.168.50.99:502"))))
        f.links.of("192.168.50.99")[0].connect_error = DeviceError("refused", "refused")
        await until(lambda: role.dirty, "the high alarm marks the document dirty")
        await until(lambda: "dead" in role.alarms.comm_loss(), "dead in comm loss")
        role.dirty = False
        await role.step(time.time())  # the engine's timers: nothing new
        assert role.dirty is False
        doc = role.snapshot(time.time())
        assert {a["key"] for a in doc["alarms"]["active"]} == {"plc1.temp:high", "dead:comm"}
        assert doc["comm_loss"] == ["dead"] and doc["devices"]["dead"]["state"] == "down"

    f.run(body)


def test_a_delayed_alarm_is_raised_by_step(f: Fixture) -> None:
    f.links.registers["192.168.50.10"] = {0: 95}
    dev = plc()
    dev["tags"][0]["alarms"] = {"high": 80, "delay": 0.3}

    async def body(role: FieldRole) -> None:
        await role.apply(Change(1, config(dev)))
        await until(lambda: role.tags["plc1.temp"]["value"] == 95, "plc1 polled")
        assert role.alarms.active() == [] and role.dirty is False
        await asyncio.sleep(0.35)
        await role.step(time.time())
        assert role.dirty is True
        assert [a["key"] for a in role.alarms.active()] == ["plc1.temp:high"]

    f.run(body)


def test_writes_go_to_the_device_and_are_audited(f: Fixture) -> None:
    f.links.registers["192.168.50.10"] = {0: 21, 1: 5}

    async def body(role: FieldRole) -> None:
        await role.apply(Change(1, config(plc())))
        out = await role.write("plc1.sp", 77, "alice")
        assert out["tag"] == "plc1.sp" and out["value"] == 77
        assert f.links.registers["192.168.50.10"][1] == 77
        with pytest.raises(NotFound) as exc:
            await role.write("plc1.nope", 1, "alice")
        assert exc.value.field == "tag"
        with pytest.raises(NotFound):
            await role.write("nodots", 1, "bob", source="opcua")

    f.run(body)
    rows = [(a.actor, a.target, a.result, a.source) for a in Audit.select().order_by(Audit.id)]
    assert rows == [
        ("alice", "plc1.sp", "ok", "api"),
        ("alice", "plc1.nope", "failed", "api"),
        ("bob", "nodots", "failed", "opcua"),
    ]


def test_a_write_to_a_disabled_device_is_a_conflict_and_audited(f: Fixture) -> None:
    async def body(role: FieldRole) -> None:
        await role.apply(Change(1, config(plc(enabled=False))))
        assert role.snapshot(time.time())["devices"]["plc1"]["state"] == "disabled"
        assert f.links.made == []  # disabled: no task, no connection
        with pytest.raises(Conflict, match="plc1 is disabled") as exc:
            await role.write("plc1.sp", 5, "alice")
        assert exc.value.field == "tag"
        assert status_of(exc.value) == 409  # the request does not fit the state, not a 500

    f.run(body)
    [a] = Audit.select()
    assert (a.actor, a.action, a.target, a.result, a.source) == (
        "alice",
        "tag.write",
        "plc1.sp",
        "failed",
        "api",
    )
    assert a.detail == '{"value": 5}: tag: plc1 is disabled'


def test_opcua_devices_come_from_their_adapter(f: Fixture) -> None:
    ua = {
        "name": "ua1",
        "protocol": "opcua",
        "address": "opc.tcp://192.168.50.20:4840",
        "tags": [{"name": "speed", "node": "ns=2;s=Speed", "writable": True}],
    }
    broken = {**ua, "name": "broken"}

    async def body(role: FieldRole) -> None:
        await role.apply(Change(1, config(ua, broken)))
        await until(lambda: role.tags["ua1.speed"]["value"] == 12.5, "the OPC UA value")
        doc = role.snapshot(time.time())
        assert doc["tags"]["ua1.speed"]["source_time"] == 1000.0
        assert doc["devices"]["ua1"]["state"] == "ok"
        assert doc["devices"]["broken"]["state"] == "down"
        assert doc["devices"]["broken"]["last_error"] == "no such certificate"
        assert (await role.write("ua1.speed", 3.5, "alice"))["value"] == 3.5
        assert f.opcua[0].writes == [("speed", 3.5)]

    f.run(body)
    assert f.opcua[0].stopped  # close stopped its task


def test_close_stops_every_device_and_closes_every_link(f: Fixture) -> None:
    f.links.registers["192.168.50.10"] = {0: 21}

    async def body(role: FieldRole) -> None:
        await role.apply(Change(1, config(plc())))
        await until(lambda: role.tags["plc1.temp"]["value"] == 21, "plc1 polled")

    f.run(body)
    [link] = f.links.of("192.168.50.10")
    assert link.is_connected is False
    assert all(r.task is not None and r.task.done() for r in f.role.runners.values())
    assert not socket_path(f.paths.run_dir, "field").exists()
    assert not (f.paths.run_dir / "field-values.sock").exists()
    assert f.role.history.stats()["written"] >= 1  # what was queued is in the database


def commit(store: Store, devices: list[dict[str, Any]]) -> Revision:
    """A desired revision, confirmed as the net role would once it applied it."""
    now = time.time()
    doc = factory.base()
    doc["devices"] = devices
    rev = revisions.import_text(store, json.dumps(doc), author="t", now=now).revision
    revisions.commit(store, author="t", now=now, ref=rev.id)
    revisions.confirm(store, author="net", now=now, automatic=True)
    return rev


def test_in_its_loop_the_reload_method_rings_and_field_json_follows(f: Fixture) -> None:
    """The role as `main` runs it (AsyncLoop, the real doorbell), driven over its socket."""
    f.links.registers["192.168.50.10"] = {0: 21, 1: 5}
    live = LiveState(f.paths.run_dir)
    f.role.ring = lambda: live.ring("field")
    first = commit(f.store, [plc()])
    loop = AsyncLoop(f.role, f.store, live, reload_every=3600.0)  # only the doorbell reloads
    stop = threading.Event()

    def doc() -> dict[str, Any]:
        return live.read("field") or {}

    errors: list[BaseException] = []

    def client() -> None:
        try:
            drive()
        except BaseException as e:  # re-raised in the test, not lost in the thread
            errors.append(e)
        finally:
            stop.set()

    def drive() -> None:
        deadline = time.monotonic() + 10
        while doc().get("tags", {}).get("plc1.temp", {}).get("value") != 21:
            assert time.monotonic() < deadline, doc()
            time.sleep(0.02)
        assert doc()["revision"] == first.id
        sock = socket_path(f.paths.run_dir, "field")
        assert call(sock, "write", tag="plc1.sp", value=8, actor="t")["value"] == 8
        second = commit(f.store, [plc(), plc("plc2", "192.168.50.12:502")])
        assert call(sock, "reload") == {"ok": True}
        while "plc2" not in doc().get("devices", {}):
            assert time.monotonic() < deadline, doc()
            time.sleep(0.02)
        assert doc()["revision"] == second.id

    async def main() -> None:
        thread = threading.Thread(target=client)
        task = asyncio.create_task(loop.run(stop))
        thread.start()
        while thread.is_alive():
            await asyncio.sleep(0.02)
        await task

    asyncio.run(main())
    if errors:
        raise errors[0]
    assert f.links.registers["192.168.50.10"][1] == 8
    assert set(doc()["devices"]) == {"plc1", "plc2"}  # the last publish, after close
