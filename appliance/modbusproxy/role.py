"""The modbusproxy role: every Modbus request of a restricted conduit checked before the PLC.

The net role's ruleset (`appliance.net.render`, chain `modbus_tproxy`) hands each tcp/502
connection of a conduit with `modbus:` to this process's transparent listening socket
(127.0.0.1:15020, IP_TRANSPARENT): the accepted socket's local address is the PLC the
client meant. The role finds the conduit (its `from` holds the client, its `to` the
PLC), opens the upstream connection to the PLC from the client's own address
(IP_TRANSPARENT again, so the PLC's own access list still sees the real client; from the
appliance's OT address when `nat.masquerade` is on, since the PLC has no route back to
IT then) and relays the two streams through `inspect.Session`: allowed requests go on,
a refused one is answered with its Modbus exception (or resets the connection, per the
conduit's `on_refusal`), a response to no request resets the connection.

Fail closed: while this process is not listening, tproxy finds no socket and the flow
is dropped in forward (render's docstring); the net role's live document shows the
attempts as denied, and health shows this role not running (its live document stops).
A conduit that is removed, disabled, expires or loses its restriction has its proxied
connections reset; one whose restriction changes checks the next request by the new one.

Counters per conduit, requests allowed and refused by function code, are in the live
document. Refusals are events (`modbus.refused`), aggregated by (conduit, source, PLC,
unit, function, addresses): the first at once, then at most one per REPORT_EVERY_S with
the count since the last one, so a client retrying every 100 ms writes one event a minute.

Privileges: IP_TRANSPARENT needs CAP_NET_RAW (not CAP_NET_ADMIN); the systemd unit gives
the role that one capability and nothing else.

The sockets are an adapter (`Sockets`, the real one `TransparentSockets`), handed in so
a unit test runs the role over plain loopback sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from appliance.config.check import carries_modbus
from appliance.config.modbus import FUNCTION_CODES
from appliance.config.model import Conduit, Config
from appliance.modbusproxy.inspect import EXCEPTIONS, Policy, Session, Verdict
from appliance.net.render import MODBUS_PORT, MODBUS_PROXY_ADDRESS, MODBUS_PROXY_PORT
from appliance.paths import Paths
from appliance.rolekit import AsyncLoop
from appliance.roles import Change
from appliance.state.db import open_store
from appliance.state.live import LiveState

log = logging.getLogger("modbusproxy")

ROLE = "modbusproxy"
IP_TRANSPARENT = getattr(socket, "IP_TRANSPARENT", 19)
CONNECT_TIMEOUT_S = 5.0  # the PLC's upstream connection
RETRY_EVERY_S = 2.0  # a listener that could not be opened is tried again this often
REPORT_EVERY_S = 60.0  # an aggregated refusal is reported again at most this often
FORGET_AFTER_S = 3600.0  # an aggregate not seen for this long is dropped
MAX_AGGREGATES = 1000
SHOWN_REFUSALS = 20  # the most recent aggregates in the live document
READ_SIZE = 65536
MAX_CONNECTIONS = 512  # proxied at once; more are reset (a PLC takes a handful)

Address = tuple[str, int]


class Sockets(Protocol):
    """How the role listens and reaches PLCs (`TransparentSockets` on a unit)."""

    def listener(self) -> socket.socket:
        """A bound, listening, non-blocking socket; OSError when it cannot be."""
        ...

    def destination(self, writer: asyncio.StreamWriter) -> Address:
        """Where the client's connection was going (the PLC and port)."""
        ...

    async def connect(
        self, source: str | None, destination: Address
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """The upstream connection, from `source` (the client's address) when given."""
        ...


class TransparentSockets:
    """IP_TRANSPARENT sockets: the listener tproxy hands connections to, and upstream
    connections from the client's own address."""

    def __init__(self, address: str = MODBUS_PROXY_ADDRESS, port: int = MODBUS_PROXY_PORT):
        self.address = address
        self.port = port

    def listener(self) -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
            s.bind((self.address, self.port))
            s.listen(256)
            s.setblocking(False)
        except OSError:
            s.close()
            raise
        return s

    def destination(self, writer: asyncio.StreamWriter) -> Address:
        name = writer.get_extra_info("sockname")
        return str(name[0]), int(name[1])

    async def connect(
        self, source: str | None, destination: Address
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.setblocking(False)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if source is not None:
                s.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
                s.bind((source, 0))  # another port than the client's: its own conntrack entry
            await asyncio.get_running_loop().sock_connect(s, destination)
        except BaseException:
            s.close()
            raise
        return await asyncio.open_connection(sock=s)


class EventLog(Protocol):
    """Where the role's events go (`appliance.state.db.Store.event`)."""

    def event(
        self,
        kind: str,
        message: str,
        *,
        source: str,
        severity: str = ...,
        data: dict[str, Any] | None = ...,
        at: float | None = ...,
    ) -> Any: ...


@dataclass
class Counters:
    allowed: dict[int, int] = field(default_factory=dict)
    refused: dict[int, int] = field(default_factory=dict)

    def count(self, v: Verdict) -> None:
        table = self.allowed if v.allowed else self.refused
        table[v.function] = table.get(v.function, 0) + 1

    def as_dict(self) -> dict[str, dict[str, int]]:
        return {
            "allowed": {str(k): n for k, n in sorted(self.allowed.items())},
            "refused": {str(k): n for k, n in sorted(self.refused.items())},
        }


@dataclass
class Refusal:
    """Refusals of one kind (conduit, source, PLC, unit, function, addresses) aggregated."""

    conduit: str
    source: str
    plc: str
    unit: int
    function: int
    addresses: str
    reason: str
    code: int  # the exception answered
    first_seen: float
    last_seen: float
    count: int = 0
    reported: int = 0  # count at the last event
    reported_at: float = float("-inf")

    def as_dict(self) -> dict[str, Any]:
        return {
            "conduit": self.conduit,
            "source": self.source,
            "plc": self.plc,
            "unit": self.unit,
            "function": self.function,
            "addresses": self.addresses,
            "reason": self.reason,
            "exception": self.code,
            "count": self.count,
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
        }


@dataclass(eq=False)  # one per connection, in a set by identity
class _Conn:
    conduit: str
    client: Address
    plc: Address
    session: Session
    client_w: asyncio.StreamWriter
    upstream_w: asyncio.StreamWriter | None = None
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    reset_why: str | None = None


def _abort(writer: asyncio.StreamWriter | None, reset: bool) -> None:
    """Close a connection; with `reset` by a RST (SO_LINGER 0), not a FIN."""
    if writer is None:
        return
    if reset:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()
    else:
        writer.close()


class ModbusProxyRole:
    """The modbusproxy role object (`roles.AsyncRole`, see the module docstring)."""

    name = ROLE

    def __init__(
        self, events: EventLog, *, sockets: Sockets | None = None, clock: Any = time.time
    ) -> None:
        self.events = events
        self.sockets: Sockets = sockets or TransparentSockets()
        self.clock = clock
        self.dirty = False
        self.revision_id: int | None = None
        self.config: Config | None = None
        self.server: asyncio.Server | None = None
        self.error: str | None = None
        self.tried_at = float("-inf")
        self.conns: set[_Conn] = set()
        self.counters: dict[str, Counters] = {}
        self.refusals: dict[tuple, Refusal] = {}
        self._pending_events: list[tuple[str, str, str, dict[str, Any], float]] = []

    # -- the contract -------------------------------------------------------------------

    async def start(self) -> None:
        await self._listen()

    async def apply(self, change: Change) -> None:
        self.revision_id = change.revision_id
        self.dirty = True
        if change.error is not None:
            log.error("revision %s does not validate: %s", change.revision_id, change.error)
            return
        self.config = change.config if change.config is not None else Config()
        self._recheck(self.clock())

    async def step(self, now: float) -> None:
        if self.server is None and now - self.tried_at >= RETRY_EVERY_S:
            await self._listen()
        self._recheck(now)
        self._report(now)
        await self._flush_events()

    async def close(self) -> None:
        server, self.server = self.server, None
        if server is not None:
            server.close()
        for conn in list(self.conns):
            self._end(conn, "the proxy stops", reset=True)
        tasks = [t for c in list(self.conns) for t in c.tasks]
        if tasks:
            await asyncio.wait(tasks, timeout=1.0)
        self._report(self.clock(), final=True)
        await self._flush_events()

    # -- listening ------------------------------------------------------------------------

    async def _listen(self) -> None:
        try:
            sock = self.sockets.listener()
            self.server = await asyncio.start_server(self._serve, sock=sock)
        except OSError as e:
            self.tried_at = self.clock()
            error = f"cannot listen for the restricted conduits: {e}"
            if error != self.error:
                log.error("%s", error)
                self._queue_event("modbusproxy.failed", error, "error", {}, self.clock())
            self._set_error(error)
            return
        self._set_error(None)
        self.dirty = True

    def _set_error(self, error: str | None) -> None:
        if error != self.error:
            self.error = error
            self.dirty = True

    # -- conduits -------------------------------------------------------------------------

    def restricted(self, now: float) -> list[Conduit]:
        config = self.config
        if config is None:
            return []
        at = datetime.fromtimestamp(now, UTC)
        return [c for c in config.conduits if c.modbus is not None and c.active(at)]

    def conduit_for(self, client: str, plc: Address, now: float) -> Conduit | None:
        """The active restricted conduit from `client` to `plc` (tcp/502), if any."""
        if plc[1] != MODBUS_PORT:
            return None
        try:
            src, dst = ipaddress.ip_address(client), ipaddress.ip_address(plc[0])
        except ValueError:
            return None
        for c in self.restricted(now):
            if carries_modbus(c) and any(src in n for n in c.from_) and any(dst in n for n in c.to):
                return c
        return None

    def _recheck(self, now: float) -> None:
        """Connections follow their conduit: gone or inactive, reset; changed, new policy."""
        for conn in list(self.conns):
            c = self.conduit_for(conn.client[0], conn.plc, now)
            if c is None or c.name != conn.conduit:
                self._end(conn, "its conduit no longer allows it", reset=True)
                continue
            assert c.modbus is not None
            policy = Policy.of(c.modbus)
            if policy != conn.session.policy:
                conn.session.policy = policy

    # -- one connection -------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        client: Address = (str(peer[0]), int(peer[1]))
        plc = self.sockets.destination(writer)
        now = self.clock()
        conduit = self.conduit_for(client[0], plc, now)
        if conduit is None or conduit.modbus is None:
            log.warning("%s → %s:%s: no restricted conduit; reset", client[0], *plc)
            _abort(writer, reset=True)
            return
        if len(self.conns) >= MAX_CONNECTIONS:
            log.warning("%s: %d connections already; reset", conduit.name, len(self.conns))
            _abort(writer, reset=True)
            return
        with contextlib.suppress(OSError):
            writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = _Conn(conduit.name, client, plc, Session(Policy.of(conduit.modbus)), writer)
        self.conns.add(conn)
        self.dirty = True
        try:
            source = None if self.config is not None and self.config.nat.masquerade else client[0]
            try:
                up_r, up_w = await asyncio.wait_for(
                    self.sockets.connect(source, plc), CONNECT_TIMEOUT_S
                )
            except (OSError, TimeoutError) as e:
                log.warning("%s: cannot reach %s:%s: %s", conduit.name, *plc, e or "timeout")
                self._end(conn, f"the PLC cannot be reached: {e}", reset=True)
                return
            conn.upstream_w = up_w
            if conn.reset_why is not None:  # ended while connecting
                _abort(up_w, reset=True)
                return
            conn.tasks = [
                asyncio.create_task(self._requests(conn, reader)),
                asyncio.create_task(self._responses(conn, up_r)),
            ]
            _done, pending = await asyncio.wait(conn.tasks, return_when=asyncio.FIRST_COMPLETED)
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            self._end(conn, conn.reset_why, reset=conn.reset_why is not None)
        finally:
            self.conns.discard(conn)
            self.dirty = True

    async def _requests(self, conn: _Conn, reader: asyncio.StreamReader) -> None:
        """Client → PLC: each request checked; refused ones answered here."""
        up = conn.upstream_w
        assert up is not None
        counters = self.counters.setdefault(conn.conduit, Counters())
        with contextlib.suppress(ConnectionError):
            while True:
                data = await reader.read(READ_SIZE)
                if not data:
                    return
                out = conn.session.from_client(data)
                now = self.clock()
                for v in out.verdicts:
                    counters.count(v)
                    if not v.allowed:
                        self._refused(conn, v, now)
                if out.forward:
                    up.write(out.forward)
                if out.reply:
                    conn.client_w.write(out.reply)
                if out.reset is not None:
                    conn.reset_why = out.reset
                    return
                await up.drain()
                await conn.client_w.drain()

    async def _responses(self, conn: _Conn, reader: asyncio.StreamReader) -> None:
        """PLC → client: only responses to the client's requests."""
        with contextlib.suppress(ConnectionError):
            while True:
                data = await reader.read(READ_SIZE)
                if not data:
                    return
                out = conn.session.from_server(data)
                if out.forward:
                    conn.client_w.write(out.forward)
                if out.reset is not None:
                    log.warning("%s: %s:%s: %s; reset", conn.conduit, *conn.plc, out.reset)
                    conn.reset_why = out.reset
                    return
                await conn.client_w.drain()

    def _end(self, conn: _Conn, why: str | None, reset: bool) -> None:
        if why is not None and conn.reset_why is None:
            conn.reset_why = why
        for t in conn.tasks:
            t.cancel()
        _abort(conn.client_w, reset)
        _abort(conn.upstream_w, reset)

    # -- refusals ---------------------------------------------------------------------------

    def _refused(self, conn: _Conn, v: Verdict, now: float) -> None:
        addresses = ", ".join(str(s) for s in v.spans)
        key = (conn.conduit, conn.client[0], conn.plc[0], v.adu.unit, v.function, addresses)
        r = self.refusals.get(key)
        if r is None:
            if len(self.refusals) >= MAX_AGGREGATES:
                oldest = min(self.refusals, key=lambda k: self.refusals[k].last_seen)
                del self.refusals[oldest]
            r = self.refusals[key] = Refusal(
                conn.conduit, conn.client[0], conn.plc[0], v.adu.unit, v.function,
                addresses, v.reason, 0 if conn.session.policy.reset else v.code or 0, now, now,
            )  # fmt: skip
        r.count += 1
        r.last_seen = now
        self.dirty = True
        if r.reported == 0:
            self._report_one(r, now)

    def _report(self, now: float, final: bool = False) -> None:
        for key, r in list(self.refusals.items()):
            if r.count > r.reported and (final or now - r.reported_at >= REPORT_EVERY_S):
                self._report_one(r, now)
            elif now - r.last_seen >= FORGET_AFTER_S:
                del self.refusals[key]

    def _report_one(self, r: Refusal, now: float) -> None:
        new = r.count - r.reported
        fname = FUNCTION_CODES.get(r.function, "not a public function code")
        where = f" {r.addresses}" if r.addresses else ""
        times = "" if r.reported == 0 and new == 1 else f" ({new} times since the last report)"
        answer = EXCEPTIONS.get(r.code, "connection reset")
        message = (
            f"conduit {r.conduit}: refused {r.source} → {r.plc} unit {r.unit} function "
            f"{r.function} ({fname}){where} ({answer}){times}"
        )
        self._queue_event("modbus.refused", message, "warning", r.as_dict(), now)
        r.reported, r.reported_at = r.count, now

    def _queue_event(
        self, kind: str, message: str, severity: str, data: dict[str, Any], at: float
    ) -> None:
        self._pending_events.append((kind, message, severity, data, at))

    async def _flush_events(self) -> None:
        pending, self._pending_events = self._pending_events, []
        for kind, message, severity, data, at in pending:
            try:
                await asyncio.to_thread(
                    self.events.event,
                    kind,
                    message,
                    source=ROLE,
                    severity=severity,
                    data=data,
                    at=at,
                )
            except Exception as e:  # a locked history DB: the log has it
                log.warning("cannot record event %s: %s", kind, e)

    # -- live state -------------------------------------------------------------------------

    def snapshot(self, now: float) -> dict[str, Any]:
        conduits: dict[str, Any] = {}
        for c in self.restricted(now):
            assert c.modbus is not None
            conduits[c.name] = {
                "restriction": c.modbus.describe(),
                "on_refusal": c.modbus.on_refusal,
                "connections": sum(1 for x in self.conns if x.conduit == c.name),
                **self.counters.get(c.name, Counters()).as_dict(),
            }
        recent = sorted(self.refusals.values(), key=lambda r: r.last_seen, reverse=True)
        return {
            "role": ROLE,
            "listening": self.server is not None,
            "error": self.error,
            "revision": self.revision_id,
            "connections": len(self.conns),
            "conduits": conduits,
            "refusals": [r.as_dict() for r in recent[:SHOWN_REFUSALS]],
        }


def main(paths: Paths, stop: threading.Event) -> None:
    """The modbusproxy role (see the module docstring); returns soon after `stop` is set."""
    store, own = open_store(paths.data_dir)
    role = ModbusProxyRole(store)
    try:
        asyncio.run(AsyncLoop(role, store, LiveState(paths.run_dir)).run(stop))
    finally:
        if own:
            store.close()
