"""Test a device's connection and read what it holds, before it is configured (issue 17).

`ProbeRequest` is what `POST /api/devices/probe` takes (docs/api.md): one device as in
the configuration's ``devices:`` list (its name may be left out, its tags are ignored),
and for Modbus an optional register or bit range to read (`ProbeRead`), for OPC UA an
optional node whose children to list (``browse``). `parse_request` validates one and
raises `ConfigInvalid` with every problem at its path (``device.address``, ``read.count``).

`Prober` runs one in the field role, which owns the OT connections and the serial bus
locks:

- Modbus TCP: a fresh connection through the role's link factory, closed afterwards.
  Modbus RTU: on a serial port a running device already uses, that line's `Bus` (its
  lock and inter-frame gap, so a probe never talks over a poll; the port is not opened
  twice; other line settings than the running ones are refused at ``device.serial``);
  on any other port a line opened for the probe and closed afterwards.
  Without a ``read`` it reads holding register 0: any answer, an exception too, proves
  the device is there. Timeouts and garbled answers are retried ``retries`` times, as
  the poller does.
- OPC UA: the adapter (`appliance.field.opcua_client.probe`, handed in) connects with
  the device's security, reads the server's state and lists at most `MAX_CHILDREN`
  children of the browsed node with their values, types and whether they are writable.

Bounds: the device's timeout and retries, and never more than `PROBE_LIMIT_S` in all;
one probe at a time (another one meanwhile is a `Conflict`, 409). A device that does
not answer is a result (``ok: false``, the ``stage`` that failed and a plain
``message``), not an error.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from appliance.config import plain
from appliance.config.base import Int, Line, Strict
from appliance.config.field import Device, Serial
from appliance.config.load import format_path
from appliance.config.points import BIT_TABLES, MAX_READ_BITS, MAX_READ_REGISTERS, Table
from appliance.errors import ConfigInvalid, Conflict, DeviceError, Invalid, OpcUaError

PROBE_LIMIT_S = 15.0  # the longest one probe may take, whatever the device's settings
MAX_CHILDREN = 500  # children of a browsed node listed at most
OBJECTS_FOLDER = "ns=0;i=85"
DEFAULT_READ = ("holding", 0, 1)  # what a bare test connection reads

# The Modbus exception codes in words (the standard's names; 7 is from older editions,
# 9 is not assigned), and what each one means for a read.
EXCEPTION_WORDS: dict[int, tuple[str, str]] = {
    1: ("illegal function", "the device does not offer this kind of read"),
    2: ("illegal data address", "the device has nothing at these addresses"),
    3: ("illegal data value", "the device refuses this count or range"),
    4: ("server device failure", "the device failed while answering"),
    5: ("acknowledge", "the device accepted the request but needs long to answer"),
    6: ("server device busy", "the device is busy; try again"),
    7: ("negative acknowledge", "the device cannot do this request"),
    8: ("memory parity error", "the device found a fault in its memory"),
    9: ("unassigned code", "the standard defines no code 9"),
    10: ("gateway path unavailable", "the gateway has no way to the device behind it"),
    11: (
        "gateway target device failed to respond",
        "the gateway is there, the device behind it did not answer",
    ),
}
GATEWAY_UNREACHABLE = frozenset({10, 11})

_NODE_ID = re.compile(
    r"^(?:(?:ns=\d{1,5}|nsu=[^;]+);)?(?:i=\d{1,10}|s=.+|g=[0-9A-Fa-f-]{36}|b=[A-Za-z0-9+/=]+)$"
)


def exception_words(code: int | None) -> str:
    """'exception 2 (illegal data address)' for a Modbus exception code."""
    name = EXCEPTION_WORDS.get(code or 0, ("not a code the standard defines", ""))[0]
    return f"exception {code} ({name})"


# -- the request ------------------------------------------------------------------------


def _problems(model: object, problems: list[tuple[tuple[str | int, ...], str]]) -> None:
    if problems:
        raise ValidationError.from_exception_data(
            type(model).__name__,
            [
                InitErrorDetails(
                    type=PydanticCustomError("probe_rule", "{message}", {"message": msg}),
                    loc=loc,
                    input=None,
                )
                for loc, msg in problems
            ],
        )


class ProbeRead(Strict):
    """A range of one Modbus table to read: up to 125 registers or 2000 bits."""

    table: Table
    address: Int = Field(ge=0, le=65535)
    count: Int = Field(1, ge=1, le=MAX_READ_BITS, description="1-125 registers, 1-2000 bits")

    @model_validator(mode="after")
    def _fits(self) -> ProbeRead:
        problems: list[tuple[tuple[str | int, ...], str]] = []
        cap = MAX_READ_BITS if self.table in BIT_TABLES else MAX_READ_REGISTERS
        if self.count > cap:
            what = "bits" if self.table in BIT_TABLES else "registers"
            problems.append((("count",), f"one read takes at most {cap} {what}"))
        elif self.address + self.count > 65536:
            problems.append(
                (
                    ("count",),
                    f"the range passes the last address, 65535 (at most {65536 - self.address})",
                )
            )
        _problems(self, problems)
        return self

    def span(self) -> str:
        last = self.address + self.count - 1
        where = f"{self.address}" if self.count == 1 else f"{self.address}-{last}"
        return f"{self.table} {where}"


class ProbeRequest(Strict):
    """One test connection: a device, and what to read (Modbus) or browse (OPC UA)."""

    device: Device = Field(
        description="a device as in the configuration (name optional, tags ignored)"
    )
    read: ProbeRead | None = Field(None, description="Modbus: a range to read")
    browse: Line | None = Field(
        None,
        description="OPC UA: the node whose children to list; empty or null: the Objects folder",
    )

    @model_validator(mode="before")
    @classmethod
    def _device_as_given(cls, data: Any) -> Any:
        # the device has no name yet, and its tags are not what a probe looks at
        if isinstance(data, dict) and isinstance(data.get("device"), dict):
            dev = {k: v for k, v in data["device"].items() if k != "tags"}
            dev.setdefault("name", "probe")
            data = {**data, "device": dev}
        return data

    @model_validator(mode="after")
    def _fits(self) -> ProbeRequest:
        problems: list[tuple[tuple[str | int, ...], str]] = []
        opcua = self.device.protocol == "opcua"
        if self.read is not None and opcua:
            problems.append((("read",), "an OPC UA device has no registers to read: browse it"))
        if self.browsing() and not opcua:
            problems.append((("browse",), "only an OPC UA device can be browsed: read a range"))
        _problems(self, problems)
        return self

    @field_validator("browse")
    @classmethod
    def _node_id(cls, v: str | None) -> str | None:
        if v and not _NODE_ID.match(v.strip()):
            raise ValueError(f"{v} is not a node id (e.g. ns=2;s=Temperature or i=85)")
        return v

    def browsing(self) -> bool:
        """Whether to list children: `browse` was given (null too: the Objects folder)."""
        return "browse" in self.model_fields_set

    def browse_node(self) -> str:
        return (self.browse or "").strip() or OBJECTS_FOLDER


def parse_request(data: Any) -> ProbeRequest:
    """A probe request from JSON data; ConfigInvalid (422) with every problem's path."""
    if not isinstance(data, dict):
        raise Invalid("a probe request is a JSON object with a device", field="device")
    try:
        return ProbeRequest.model_validate(data)
    except ValidationError as e:
        errors = [
            (format_path(tuple(err["loc"])), plain.sentence(err, ProbeRequest), None)
            for err in e.errors()
        ]
        raise ConfigInvalid(errors or [("device", "is not valid", None)]) from None


def target_of(device: Device | Mapping[str, Any] | Any) -> str:
    """What the probe talks to, as people say it: host:port, a serial port and unit, a URL."""
    if isinstance(device, Device):
        if device.serial is not None:
            return f"{device.serial.port} unit {device.unit_id}"
        if device.protocol == "modbus-tcp" and device.address:
            host, port = device.host_port()
            return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        return device.address or ""
    if isinstance(device, Mapping):
        serial = device.get("serial")
        if isinstance(serial, Mapping) and isinstance(serial.get("port"), str):
            return f"{serial['port']} unit {device.get('unit_id', 1)}"
        if isinstance(device.get("address"), str):
            return str(device["address"])
    return ""


# -- running one ------------------------------------------------------------------------

# (host, port, timeout) -> a link; (port, baud=, parity=, stop_bits=, data_bits=, timeout=)
LinkFactory = Callable[..., Any]
# (device, paths, node to browse or None, at most this many children) -> what it found
OpcUaProbe = Callable[[Device, Any, str | None, int], Awaitable[dict[str, Any]]]


def rtu_key(s: Serial) -> tuple[str, ...]:
    """A serial line's key in the field role's buses: its port and line settings."""
    return ("rtu", s.port, str(s.baud), s.parity, str(s.stop_bits), str(s.data_bits))


def line_text(key: tuple[str, ...]) -> str:
    return f"{key[2]} baud, {key[5]}{key[3]}{key[4]}"


@dataclass
class _Progress:
    stage: str = "connect"


class Prober:
    """Runs probes on the field role's loop, one at a time (see the module docstring).

    `buses` returns the role's running buses (key -> `appliance.field.poller.Bus`);
    `make_bus(link, gap, shared)` wraps a fresh link as a bus (the poller's `Bus`)."""

    def __init__(
        self,
        *,
        tcp_link: LinkFactory,
        rtu_link: LinkFactory,
        make_bus: Callable[..., Any],
        buses: Callable[[], Mapping[tuple[str, ...], Any]],
        opcua_probe: OpcUaProbe,
        paths: Any = None,
        limit_s: float = PROBE_LIMIT_S,
    ) -> None:
        self.tcp_link = tcp_link
        self.rtu_link = rtu_link
        self.make_bus = make_bus
        self.buses = buses
        self.opcua_probe = opcua_probe
        self.paths = paths
        self.limit_s = limit_s
        self.busy = False

    async def run(self, req: ProbeRequest) -> dict[str, Any]:
        """The answer of API-probe.md; Conflict while another probe runs, Invalid for a
        serial port in use with other settings."""
        if self.busy:
            raise Conflict("another test connection is running; try again when it is done")
        self.busy = True
        dev = req.device
        started = time.monotonic()
        progress = _Progress()
        target = target_of(dev)
        try:
            bound = min(self.limit_s, _natural_bound(dev))
            try:
                async with asyncio.timeout(bound):
                    if dev.protocol == "opcua":
                        out = await self._opcua(req, progress)
                    else:
                        out = await self._modbus(req, progress)
            except TimeoutError:
                out = _fail(progress.stage, f"no answer from {target} within {bound:g} s")
        finally:
            self.busy = False
        out.setdefault("read", None)
        out.setdefault("browse", None)
        return {
            "ok": out.pop("ok"),
            "protocol": dev.protocol,
            "target": target,
            "elapsed_ms": round((time.monotonic() - started) * 1000, 1),
            "stage": out.pop("stage", None),
            "message": out.pop("message"),
            **out,
        }

    # -- Modbus -------------------------------------------------------------------------

    def _bus(self, dev: Device) -> tuple[Any, bool]:
        """The bus to talk over and whether it is the probe's own (closed afterwards)."""
        if dev.protocol == "modbus-tcp":
            host, port = dev.host_port()
            return self.make_bus(self.tcp_link(host, port, dev.timeout)), True
        s = dev.serial
        assert s is not None
        key = rtu_key(s)
        running = self.buses()
        for other, bus in running.items():
            if other[:2] == key[:2]:
                if other != key:
                    raise Invalid(
                        f"{s.port} is in use at {line_text(other)}: test it with the same "
                        "line settings",
                        field="device.serial",
                    )
                return bus, False
        link = self.rtu_link(
            s.port,
            baud=s.baud,
            parity=s.parity,
            stop_bits=s.stop_bits,
            data_bits=s.data_bits,
            timeout=dev.timeout,
        )
        return self.make_bus(link, gap=s.frame_gap(), shared=True), True

    async def _modbus(self, req: ProbeRequest, progress: _Progress) -> dict[str, Any]:
        dev = req.device
        target = target_of(dev)
        bus, own = self._bus(dev)
        try:
            try:
                async with bus.use() as link:
                    link.set_timeout(dev.timeout)
                    await link.connect()
            except DeviceError as e:
                return _fail("connect", _connect_failed(target, dev.timeout, e))
            progress.stage = "read"
            rng = req.read or ProbeRead(table="holding", address=0, count=1)
            sent = time.monotonic()
            try:
                values = await self._read(bus, own, dev, rng)
            except DeviceError as e:
                return self._read_failed(req, rng, target, e, sent)
            ms = (time.monotonic() - sent) * 1000
            result = {
                "table": rng.table,
                "address": rng.address,
                "count": rng.count,
                "values": [bool(v) for v in values]
                if rng.table in BIT_TABLES
                else [int(v) & 0xFFFF for v in values],
            }
            if req.read is None:
                message = f"{target} answered in {_ms(ms)}"
            else:
                message = f"{target} answered in {_ms(ms)}: {rng.span()}"
            return {"ok": True, "message": message, "read": result}
        finally:
            if own:
                bus.close()

    async def _read(self, bus: Any, own: bool, dev: Device, rng: ProbeRead) -> list[Any]:
        attempts = dev.retries + 1
        for attempt in range(attempts):
            try:
                async with bus.use() as link:
                    link.set_timeout(dev.timeout)
                    return list(await link.read(dev.unit_id, rng.table, rng.address, rng.count))
            except DeviceError as e:
                if e.kind not in ("timeout", "garbled") or attempt == attempts - 1:
                    raise
                if e.kind == "garbled" and own:
                    async with bus.use() as link:  # out of step: a fresh connection
                        link.close()
                        await link.connect()
        raise AssertionError("unreachable")

    def _read_failed(
        self, req: ProbeRequest, rng: ProbeRead, target: str, e: DeviceError, sent: float
    ) -> dict[str, Any]:
        ms = (time.monotonic() - sent) * 1000
        dev = req.device
        if e.kind == "exception":
            code = e.exception_code
            words = exception_words(code)
            meaning = EXCEPTION_WORDS.get(code or 0, ("", ""))[1]
            if code in GATEWAY_UNREACHABLE:
                return _fail("read", f"the gateway at {target} answered {words}: {meaning}")
            if req.read is None:  # a bare test: any answer proves the device is there
                return {
                    "ok": True,
                    "message": f"{target} answered in {_ms(ms)}: {words} for holding "
                    "register 0, so the device is there but has no such register",
                }
            why = f": {meaning}" if meaning else ""
            return _fail("read", f"the device answered {words} for {rng.span()}{why}")
        if e.kind == "timeout":
            tries = dev.retries + 1
            asked = f"{tries} times " if tries > 1 else ""
            return _fail(
                "read",
                f"no answer from {target} within {dev.timeout:g} s (asked {asked}for "
                f"{rng.span()}; is the unit id {dev.unit_id} right?)",
            )
        if e.kind == "garbled":
            return _fail("read", f"{target} sent an answer that is not valid Modbus: {_tail(e)}")
        return _fail("read", f"{target} dropped the connection: {_tail(e)}")

    # -- OPC UA -------------------------------------------------------------------------

    async def _opcua(self, req: ProbeRequest, progress: _Progress) -> dict[str, Any]:
        dev = req.device
        node = req.browse_node() if req.browsing() else None
        try:
            found = await self.opcua_probe(dev, self.paths, node, MAX_CHILDREN)
        except OpcUaError as e:
            return _fail("connect", _opcua_failed(dev, e))
        sec = dev.security
        how = f"security {sec.policy} {sec.mode}" if sec and sec.policy != "None" else "no security"
        who = f" as {sec.username}" if sec and sec.username else ""
        message = f"connected to {dev.address} ({how}{who}): the server says {found['state']}"
        if node is None:
            return {"ok": True, "message": message}
        progress.stage = "browse"
        if found.get("browse_error"):
            return _fail(
                "browse", f"{message}, but browsing {node} failed: {found['browse_error']}"
            )
        children = found.get("children") or []
        more = f" (the first {MAX_CHILDREN})" if found.get("truncated") else ""
        return {
            "ok": True,
            "message": f"{message}; {node} has {len(children)} children{more}",
            "browse": {
                "node": node,
                "children": children,
                "truncated": bool(found.get("truncated")),
            },
        }


def _natural_bound(dev: Device) -> float:
    """How long the device's own timeout and retries may take: connect, then each try."""
    if dev.protocol == "opcua":
        return dev.timeout * 6 + 4  # connect (4 timeouts + 2 s), state, browse and read
    return (dev.timeout + 1) * (dev.retries + 2)


def _ms(ms: float) -> str:
    return f"{ms:.1f} ms" if ms < 10 else f"{ms:.0f} ms"


def _fail(stage: str, message: str) -> dict[str, Any]:
    return {"ok": False, "stage": stage, "message": message}


def _tail(e: DeviceError) -> str:
    """A link error's text without the link's name in front ('host:port: read ...: x')."""
    return e.message.rsplit(": ", 1)[-1]


_REASONS = {
    "connection refused": "connection refused: the host is there, nothing listens on that port",
    "no route to host": "no route to the host: nothing answers at that address",
    "network is unreachable": "the network is unreachable from the OT port",
    "host is unreachable": "the host is unreachable",
    "no such file or directory": "there is no such serial port",
    "permission denied": "the field role may not open that serial port",
    "name or service not known": "that name does not resolve",
    "temporary failure in name resolution": "that name does not resolve",
    # asyncio's own text, whatever the errno was
    "connect call failed": "the connection was refused, or nothing answers at that address",
}


def _connect_failed(target: str, timeout: float, e: DeviceError) -> str:
    if e.kind == "timeout":
        return f"no answer from {target} within {timeout:g} s (nothing answered the connection)"
    reason = e.message.split("cannot connect: ", 1)[-1].strip()
    low = reason.lower()
    for key, words in _REASONS.items():
        if key in low:
            return f"cannot connect to {target}: {words}"
    return f"cannot connect to {target}: {reason[:1].lower() + reason[1:]}"


def _opcua_failed(dev: Device, e: OpcUaError) -> str:
    msg = e.message.removeprefix(f"{dev.name}: ")
    if e.kind == "timeout":
        return f"no answer from {dev.address} within {dev.timeout:g} s"
    if e.kind == "security":
        return f"{dev.address} refused the security settings: {msg}"
    if e.kind == "auth":
        return f"{dev.address} refused the log-on: {msg}"
    low = msg.lower()
    for key, words in _REASONS.items():
        if key in low:
            return f"cannot connect to {dev.address}: {words}"
    return f"cannot connect to {dev.address}: {msg}"
