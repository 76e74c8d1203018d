"""The field role: poll the configured devices, keep live values, alarms and history, serve IT.

`FieldRole` is an `appliance.roles.AsyncRole`; `main(paths, stop)` runs it in
`appliance.rolekit.AsyncLoop` until `stop` is set:

- the loop hands it each change of the desired revision (`apply`, at start, when woken
  by the doorbell or the `reload` control method, and every 2 s): device tasks start,
  stop or take their new tags without losing their schedule; a stored revision that no
  longer validates is an event (`field.config_invalid`) and the devices keep running;
- one task per device: `DevicePoller` for Modbus TCP/RTU (devices on one serial port
  share a `Bus`), `OpcUaDevice` for OPC UA;
- values go to the live tag table, the publisher (deadband / publish policy) and from
  it to the history writer, to the alarm engine (tags with limits; comm loss per
  device; its timers run in `step`) and to the value stream;
- its live document (`snapshot`, ``<run_dir>/field.json``) is written once a second and
  soon after an alarm changes (`dirty`); it serves ``<run_dir>/field.sock``:
  ``write(tag, value, actor)`` (audited; the same bus lock as the polls),
  ``ack_alarm(id, actor)``, ``reload()`` and ``probe(request, actor)`` (a test connection
  to a device that need not be configured, `appliance.field.probe`: audited as
  ``device.probe``, one at a time, on serial lines in use under their bus lock);
- it serves ``<run_dir>/field-values.sock`` (`appliance.valuestream.ValueStream`): the
  opcua role's feed of changed values. The northbound OPC UA server runs in that role's
  own process, not here: the stack that parses what the IT network sends never shares a
  process with the OT connections, and this role stays small.

Its adapters are handed in: the Modbus TCP and RTU links (`tcp_link`, `rtu_link`), the
OPC UA client (`opcua_device`, loaded only when a device needs it) and `ring`, which
wakes the loop for a reload; a unit test builds the role with fakes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from appliance.config.field import Device, History
from appliance.config.model import Config
from appliance.errors import ApplianceError, Conflict, NotFound, Timeout
from appliance.field import store as field_store
from appliance.field.alarms import AlarmEngine
from appliance.field.history import HistoryWriter
from appliance.field.modbus import ModbusLink, rtu_link, tcp_link
from appliance.field.poller import Bus, DevicePoller, Sample, SplitMemory
from appliance.field.probe import PROBE_LIMIT_S, Prober, parse_request, rtu_key, target_of
from appliance.field.publish import Publisher
from appliance.paths import Paths
from appliance.rolekit import AsyncLoop
from appliance.roles import Change
from appliance.state.control import ControlServer, socket_path
from appliance.state.db import Store, open_store
from appliance.state.live import LiveState
from appliance.valuestream import ValueStream, stream_path

log = logging.getLogger("field")

ROLE = "field"
WRITE_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 2.0

# (device, paths) -> an object with `run(on_value, on_state, stop)` and `write(tag, value)`
OpcUaFactory = Callable[[Device, Paths], Any]
# the control call waits for the probe's own bound and a margin (the loop may be busy)
PROBE_RPC_TIMEOUT_S = PROBE_LIMIT_S + 3.0


def _opcua_device(dev: Device, paths: Paths) -> Any:
    # loaded here, not at import: asyncua is large and most units poll only Modbus
    from appliance.field.opcua_client import OpcUaDevice

    return OpcUaDevice(dev, paths=paths)


async def _opcua_probe(dev: Device, paths: Paths, node: str | None, limit: int) -> Any:
    from appliance.field.opcua_client import probe

    return await probe(dev, paths, node, limit)


@dataclass
class _Runner:
    """One device's task and what drives it."""

    device: Device
    task: asyncio.Task[None] | None = None
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    poller: DevicePoller | None = None
    opcua: Any = None
    status: dict[str, Any] = field(default_factory=dict)


def _identity(dev: Device) -> tuple[Any, ...]:
    """What makes a device's connection: a change here restarts its task."""
    serial = dev.serial.model_dump() if dev.serial else None
    sec = dev.security.model_dump() if dev.security else None
    return (dev.protocol, dev.address, json.dumps(serial), dev.unit_id, json.dumps(sec))


class FieldRole:
    """The field role's state (see the module docstring); run by `AsyncLoop`.

    `dirty` is set when an alarm changes, so the live document shows it within 0.2 s."""

    name = ROLE

    def __init__(
        self,
        paths: Paths,
        store: Store,
        *,
        ring: Callable[[], Any],
        tcp_link: Callable[[str, int, float], ModbusLink] = tcp_link,
        rtu_link: Callable[..., ModbusLink] = rtu_link,
        opcua_device: OpcUaFactory = _opcua_device,
        opcua_probe: Callable[..., Any] = _opcua_probe,
    ) -> None:
        self.paths = paths
        self.store = store
        self.ring = ring
        self.tcp_link = tcp_link
        self.rtu_link = rtu_link
        self.opcua_device = opcua_device
        self.started_at = time.time()
        self.splits = SplitMemory(paths.run_dir / "field-splits.json")
        self.runners: dict[str, _Runner] = {}
        self.buses: dict[tuple[str, ...], Bus] = {}
        self.tags: dict[str, dict[str, Any]] = {}
        # per device: tag name -> (full name, live entry, has limit alarms)
        self._tagmap: dict[str, dict[str, tuple[str, dict[str, Any], bool]]] = {}
        self.revision_id: int | None = None
        self.config: Config | None = None
        self.publisher = Publisher([])
        self.history = HistoryWriter(store)
        self.alarms = AlarmEngine(store)
        self.stream = ValueStream(stream_path(paths.run_dir), self.tags_snapshot)
        self.control = ControlServer(
            socket_path(paths.run_dir, ROLE),
            {
                "write": self.rpc_write,
                "ack_alarm": self.rpc_ack_alarm,
                "reload": self.rpc_reload,
                "probe": self.rpc_probe,
            },
        )
        self.prober = Prober(
            tcp_link=lambda host, port, timeout: self.tcp_link(host, port, timeout),
            rtu_link=lambda *a, **kw: self.rtu_link(*a, **kw),
            make_bus=Bus,
            buses=lambda: self.buses,
            opcua_probe=opcua_probe,
            paths=paths,
        )
        self.loop: asyncio.AbstractEventLoop | None = None
        self.dirty = False

    # -- the contract (appliance.roles.AsyncRole) ---------------------------------------

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.history.start()
        self.control.start()
        await self.stream.start()

    async def apply(self, change: Change) -> None:
        self.revision_id = change.revision_id
        if change.error is not None:  # stored under older rules: keep what runs, say why
            log.error("revision %s does not validate: %s", change.revision_id, change.error)
            self.event(
                "field.config_invalid",
                f"revision {change.revision_id} does not validate; the field role keeps its "
                "devices: " + change.error.splitlines()[0],
                "error",
                {"revision": change.revision_id},
            )
            return
        config = change.config if change.config is not None else Config()
        log.info(
            "configuration: revision %s, %d device(s)", change.revision_id, len(config.devices)
        )
        await self.configure(config)

    async def step(self, now: float) -> None:
        self._alarm_changes(self.alarms.tick(now))

    async def close(self) -> None:
        self.control.stop()
        self.stream.stop()
        for runner in self.runners.values():
            runner.stop.set()
        tasks = [r.task for r in self.runners.values() if r.task is not None]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=STOP_TIMEOUT_S)
        for bus in self.buses.values():
            bus.close()
        await asyncio.to_thread(self.history.stop, STOP_TIMEOUT_S)

    def snapshot(self, now: float) -> dict[str, Any]:
        return {
            "role": ROLE,
            "started_at": self.started_at,
            "revision": self.revision_id,
            "devices": self.device_status(),
            "tags": self.tags,
            "alarms": {"active": self.alarms.active(), "counts": self.alarms.counts()},
            "comm_loss": self.alarms.comm_loss(),
            "history": self.history.stats(),
        }

    # -- configuration ------------------------------------------------------------------

    async def configure(self, config: Config) -> None:
        """Make the running devices, tags and engines match `config`."""
        self.config = config
        wanted = {d.name: d for d in config.devices}
        for name in list(self.runners):
            new = wanted.get(name)
            old = self.runners[name]
            if new is None or _identity(new) != _identity(old.device) or not new.enabled:
                await self._stop_runner(name)
            elif old.poller is not None and new != old.device:
                old.poller.configure(new)
                old.device = new
            elif old.opcua is not None and new != old.device:
                await self._stop_runner(name)
        self._rebuild_tags(config.devices)
        self.stream.resnapshot()
        devices = list(config.devices)
        self.publisher.reconfigure(devices)
        self.alarms.configure(devices)
        self.history.configure(config.history if config.history else History())
        if hasattr(self.history, "describe"):
            try:
                await asyncio.to_thread(self.history.describe, devices)
            except Exception as e:  # tag metadata for the SQL views; polling goes on
                log.warning("cannot record tag descriptions: %s", e)
        # buses of stopped devices go first: a device that moved gets a new connection
        for key in [k for k in self.buses if not self._bus_used(k)]:
            self.buses.pop(key).close()
        for dev in devices:
            if dev.name not in self.runners:
                self._start_runner(dev)

    def _bus_used(self, key: tuple[str, ...]) -> bool:
        return any(
            r.poller is not None and r.poller.bus is self.buses[key] for r in self.runners.values()
        )

    def _rebuild_tags(self, devices: list[Device]) -> None:
        old = self.tags
        self.tags = {}
        self._tagmap = {}
        for dev in devices:
            m: dict[str, tuple[str, dict[str, Any], bool]] = {}
            for tag in dev.tags:
                full = f"{dev.name}.{tag.name}"
                prev = old.get(full)
                entry = {
                    "value": prev["value"] if prev else None,
                    "quality": prev["quality"] if prev else "bad",
                    "source_time": prev["source_time"] if prev else None,
                    "poll_time": prev["poll_time"] if prev else None,
                    "unit": tag.unit,
                    "device": dev.name,
                    "writable": tag.writable,
                    "description": tag.description,
                }
                self.tags[full] = entry
                m[tag.name] = (full, entry, tag.alarms is not None)
            self._tagmap[dev.name] = m

    def _bus_for(self, dev: Device) -> Bus:
        if dev.protocol == "modbus-rtu":
            s = dev.serial
            assert s is not None
            key = rtu_key(s)
            if key not in self.buses:
                link = self.rtu_link(
                    s.port,
                    baud=s.baud,
                    parity=s.parity,
                    stop_bits=s.stop_bits,
                    data_bits=s.data_bits,
                    timeout=dev.timeout,
                )
                self.buses[key] = Bus(link, gap=s.frame_gap(), shared=True)
            return self.buses[key]
        host, port = dev.host_port()
        key = ("tcp", dev.name)
        if key not in self.buses:
            self.buses[key] = Bus(self.tcp_link(host, port, dev.timeout))
        return self.buses[key]

    def _start_runner(self, dev: Device) -> None:
        runner = _Runner(dev)
        self.runners[dev.name] = runner
        if not dev.enabled:
            runner.status = _status(dev, "disabled")
            return
        if dev.protocol == "opcua":
            self._start_opcua(runner)
            return
        runner.poller = DevicePoller(dev, self._bus_for(dev), self, self.splits)
        runner.task = asyncio.create_task(runner.poller.run(runner.stop), name=f"poll:{dev.name}")

    def _start_opcua(self, runner: _Runner) -> None:
        dev = runner.device
        runner.status = _status(dev, "connecting")
        try:
            runner.opcua = self.opcua_device(dev, self.paths)
        except ApplianceError as e:
            runner.status.update(state="down", last_error=str(e))
            log.error("%s: %s", dev.name, e)
            return
        st = runner.status
        was_down = [False]

        def on_value(tag: str, value: Any, quality: str, source_time: float | None) -> None:
            t = time.time()
            st["polls"] += 1
            self._deliver(dev.name, [(tag, value, quality)], t, source_time)

        def on_state(ok: bool, error: str | None) -> None:
            t = time.time()
            if ok:
                if was_down[0]:
                    self.event("device.recovered", f"{dev.name}: answers again", "info", {})
                was_down[0] = False
                st.update(state="ok", last_ok=t, last_error=None)
            else:
                if not was_down[0]:
                    self.event("device.down", f"{dev.name}: {error}", "warning", {})
                was_down[0] = True
                st.update(state="down", last_error=error, error_count=st["error_count"] + 1)
            self.state(dev.name, ok, error, t)

        runner.task = asyncio.create_task(
            runner.opcua.run(on_value, on_state, runner.stop), name=f"opcua:{dev.name}"
        )

    async def _stop_runner(self, name: str) -> None:
        runner = self.runners.pop(name)
        runner.stop.set()
        if runner.task is not None:
            runner.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(runner.task, STOP_TIMEOUT_S)

    # -- the sink: what pollers report --------------------------------------------------

    def values(self, device: str, batch: list[Sample], t: float) -> None:
        self._deliver(device, batch, t, None)

    def _deliver(
        self, device: str, batch: list[Sample], t: float, source_time: float | None
    ) -> None:
        tagmap = self._tagmap.get(device)
        if tagmap is None:
            return
        offer = self.publisher.offer
        add = self.history.add
        stream = self.stream if self.stream.readers else None
        st = t if source_time is None else source_time
        changes: list[dict[str, Any]] = []
        for name, value, quality in batch:
            item = tagmap.get(name)
            if item is None:
                continue
            full, e, has_alarms = item
            old = e["value"]
            if value is None and quality != "good":
                value = old  # no new value: the last one is held with the new quality
                changed = quality != e["quality"]
            else:
                e["value"] = value
                e["source_time"] = st
                changed = value != old or quality != e["quality"]
            e["quality"] = quality
            e["poll_time"] = t
            if offer(full, value, quality, t):
                add(full, t, value, quality)
            if has_alarms:
                changes.extend(self.alarms.update(full, value, quality, t))
            if changed and stream is not None:
                stream.change(full, value, quality, e["source_time"])
        if changes:
            self._alarm_changes(changes)

    def state(self, device: str, ok: bool, error: str | None, t: float) -> None:
        self._alarm_changes(self.alarms.comm(device, ok, t, error=error))

    def event(self, kind: str, message: str, severity: str, data: dict[str, Any]) -> None:
        """Record an event off the loop: a busy history DB must not hold up any poll."""
        at = time.time()

        def record() -> None:
            try:
                self.store.event(kind, message, source="field", severity=severity, data=data, at=at)
            except Exception as e:  # a locked or full history DB: the log still has it
                log.warning("cannot record event %s: %s", kind, e)

        if self.loop is not None and self.loop.is_running():
            self.loop.run_in_executor(None, record)
        else:
            record()

    def _alarm_changes(self, changes: list[dict[str, Any]]) -> None:
        # The engine records its own events; an alarm change is published soon (`dirty`)
        # rather than at the next regular write of field.json.
        if changes:
            self.dirty = True

    # -- live state ---------------------------------------------------------------------

    def device_status(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for name, r in self.runners.items():
            out[name] = r.poller.status() if r.poller is not None else dict(r.status)
        return out

    def tags_snapshot(self) -> dict[str, list[Any]]:
        """Every tag's newest value for the value stream: name -> [value, quality, time]."""
        return {n: [e["value"], e["quality"], e["source_time"]] for n, e in self.tags.items()}

    # -- control socket (called on its threads) -----------------------------------------

    def _call(self, coro: Any, timeout: float) -> Any:
        assert self.loop is not None
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return fut.result(timeout)
        except TimeoutError:
            fut.cancel()
            raise Timeout(f"no answer within {timeout:g} s") from None

    def rpc_write(self, tag: str, value: Any, actor: str, source: str = "api") -> dict[str, Any]:
        return self._call(self.write(tag, value, actor, source), WRITE_TIMEOUT_S)  # type: ignore[no-any-return]

    def rpc_ack_alarm(self, id: int, actor: str) -> dict[str, Any]:
        async def ack() -> dict[str, Any]:
            result: dict[str, Any] = self.alarms.ack(int(id), actor, time.time())
            return result

        return self._call(ack(), 5.0)  # type: ignore[no-any-return]

    def rpc_reload(self) -> dict[str, Any]:
        self.ring()  # the loop's doorbell: it reads the desired revision at once
        return {"ok": True}

    def rpc_probe(self, request: Any, actor: str, source: str = "api") -> dict[str, Any]:
        return self._call(self.probe(request, actor, source), PROBE_RPC_TIMEOUT_S)  # type: ignore[no-any-return]

    async def probe(self, request: Any, actor: str, source: str = "api") -> dict[str, Any]:
        """A test connection (`appliance.field.probe`), audited whatever the outcome."""
        device = request.get("device") if isinstance(request, dict) else None
        target = target_of(device)
        try:
            result = await self.prober.run(parse_request(request))
        except ApplianceError as e:
            await asyncio.to_thread(
                self.store.audit,
                actor,
                "device.probe",
                target=target,
                result="failed",
                detail=str(e),
                source=source,
            )
            raise
        await asyncio.to_thread(
            self.store.audit,
            actor,
            "device.probe",
            target=result["target"],
            result="ok" if result["ok"] else "failed",
            detail=result["message"],
            source=source,
        )
        log.info("%s probed %s: %s", actor, result["target"], result["message"])
        return result

    async def write(self, tag: str, value: Any, actor: str, source: str = "api") -> dict[str, Any]:
        """Write a tag's device, audited whatever the outcome."""
        detail = json.dumps({"value": value}, default=str)
        try:
            if not isinstance(tag, str) or "." not in tag:
                raise NotFound(f"no tag {tag!r} (tags are named device.tag)", field="tag")
            device, name = tag.split(".", 1)
            runner = self.runners.get(device)
            if runner is None or tag not in self.tags:
                raise NotFound(f"no tag {tag}", field="tag")
            dev = runner.device
            if runner.poller is not None:
                written = await runner.poller.write(name, value)
            elif runner.opcua is not None:
                written = await runner.opcua.write(name, value)
            else:
                raise Conflict(f"{dev.name} is disabled", field="tag")  # 409: not now
        except ApplianceError as e:
            await asyncio.to_thread(
                self.store.audit,
                actor,
                "tag.write",
                target=str(tag),
                result="failed",
                detail=f"{detail}: {e}",
                source=source,
            )
            raise
        await asyncio.to_thread(
            self.store.audit, actor, "tag.write", target=tag, detail=detail, source=source
        )
        log.info("%s wrote %s = %r", actor, tag, written)
        return {"tag": tag, "value": written, "written_at": time.time()}


def _status(dev: Device, state: str) -> dict[str, Any]:
    return {
        "protocol": dev.protocol,
        "state": state,
        "last_ok": None,
        "last_error": None,
        "error_count": 0,
        "requests_per_cycle": 0,
        "ideal_requests": 0,
        "cycle_ms": 0.0,
        "poll_interval": dev.poll_interval,
        "polls": 0,
    }


def main(paths: Paths, stop: threading.Event) -> None:
    """The field role (see the module docstring); returns soon after `stop` is set."""
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)  # our adapter reports errors
    store, own = open_store(paths.data_dir, field_store.MODELS)
    live = LiveState(paths.run_dir)
    role = FieldRole(paths, store, ring=lambda: live.ring(ROLE))
    try:
        asyncio.run(AsyncLoop(role, store, live).run(stop))
    finally:
        if own:
            store.close()
