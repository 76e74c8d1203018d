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

Modes (the restriction's `mode`, `inspect`'s docstring): in `test` what would have been
refused passes and is counted (`would_refuse`) and reported as `modbus.would_refuse`
events, aggregated like refusals; in `learn` everything passes and each request is
recorded (`learn.Learning`), saved to the history DB every SAVE_EVERY_S and when the role
stops (`store.StoreRecords`), and loaded again when it starts, so a restart keeps what was
learned; `appliance conduits learned NAME` prints it as the restriction to paste.

The asset inventory (`assets.Inventory`, saved alongside): every PLC that requests reached,
its unit ids and function codes, the conduits and clients, first and last seen, and the
device identification the PLC answered (43/14) when a client asked, or, on a conduit with
`identify: true`, when the proxy asked (once per unit id, on the client's connection; the
answer is kept out of the client's stream: `Session.ask_identification`). A device seen for the
first time is a `modbus.device_new` event; a known device that identifies as another
(vendor, product code or revision changed: replaced, or its firmware was) is a
`modbus.device_changed` warning.

Counters per conduit, requests allowed and refused by function code, are in the live
document. Refusals are events (`modbus.refused`), aggregated by (conduit, source, PLC,
unit, function, addresses): the first at once, then at most one per REPORT_EVERY_S with
the count since the last one, so a client retrying every 100 ms writes one event a minute.

The I/O path is asyncio Protocols (`_Conn`, `_Upstream`): each chunk read goes through
the session and what passes is written on at once, with no task, stream or drain per
request; a transport above its high-water mark stops the reading of the side that fills
it (flow control). Counters are ints in the session's `Counts`, turned into the live
document's dicts only when it is published.

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
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from appliance.config.check import carries_modbus
from appliance.config.modbus import FUNCTION_CODES
from appliance.config.model import Conduit, Config
from appliance.modbusproxy.assets import Asset, Inventory, describe
from appliance.modbusproxy.inspect import (
    EXCEPTIONS,
    Counts,
    Policy,
    Seen,
    Session,
    Verdict,
    device_identification,
)
from appliance.modbusproxy.learn import Key, Learning, Observed
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
MAX_CONNECTIONS = 512  # proxied at once; more are reset (a PLC takes a handful)
SAVE_EVERY_S = 10.0  # what was learned and the inventory are written this often

Address = tuple[str, int]


class Sockets(Protocol):
    """How the role listens and reaches PLCs (`TransparentSockets` on a unit)."""

    def listener(self) -> socket.socket:
        """A bound, listening, non-blocking socket; OSError when it cannot be."""
        ...

    def destination(self, transport: asyncio.BaseTransport) -> Address:
        """Where the client's connection was going (the PLC and port)."""
        ...

    async def connect(self, source: str | None, destination: Address) -> socket.socket:
        """The upstream connection (connected, non-blocking), from `source` (the client's
        address) when given."""
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

    def destination(self, transport: asyncio.BaseTransport) -> Address:
        name = transport.get_extra_info("sockname")
        return str(name[0]), int(name[1])

    async def connect(self, source: str | None, destination: Address) -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.setblocking(False)
            if source is not None:
                s.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
                s.bind((source, 0))  # another port than the client's: its own conntrack entry
            await asyncio.get_running_loop().sock_connect(s, destination)
        except BaseException:
            s.close()
            raise
        return s


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


class Records(Protocol):
    """Where the role keeps what it learned and the inventory (`store.StoreRecords`);
    called from a worker thread."""

    def load_learned(self) -> list[Observed]: ...
    def save_learned(self, changed: list[Observed], gone: list[Key]) -> None: ...
    def load_assets(self) -> list[Asset]: ...
    def save_assets(self, changed: list[Asset]) -> None: ...


@dataclass
class Refusal:
    """Refusals of one kind (conduit, source, PLC, unit, function, addresses) aggregated;
    `would` those a conduit in mode test passed."""

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
    would: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "would": self.would,
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


def _nodelay(sock: Any) -> None:
    """TCP_NODELAY: each answer leaves at once, not after the peer's delayed ACK (asyncio
    sets it only on sockets made with proto IPPROTO_TCP, which these are not)."""
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _abort(transport: asyncio.BaseTransport | None, reset: bool) -> None:
    """Close a connection; with `reset` by a RST (SO_LINGER 0), not a FIN (after what is
    buffered has been sent)."""
    if transport is None:
        return
    if reset:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()  # type: ignore[attr-defined]
    else:
        transport.close()


class _Conn(asyncio.Protocol):
    """One proxied connection: this protocol is the client's side, `_Upstream` the PLC's.

    Bytes read go through the session and are written on at once (no task, no drain per
    request). Flow control by the transports' high-water marks: while the PLC's side has
    more buffered than its mark, the client's side is not read; while the client's is
    (its answers, the proxy's exceptions), neither side is read."""

    def __init__(self, role: ModbusProxyRole) -> None:
        self.role = role
        self.conduit = ""
        self.client: Address = ("", 0)
        self.plc: Address = ("", 0)
        self.session: Session | None = None
        self.client_t: asyncio.Transport | None = None
        self.upstream_t: asyncio.Transport | None = None
        self.connecting: asyncio.Task[None] | None = None
        self.early: list[bytes] = []  # read before the PLC's side was up
        self.ended = False
        self.reset_why: str | None = None
        self.up_full = False  # the PLC's side is above its high-water mark
        self.client_full = False

    # the client's side

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.client_t = transport
        self.role._accept(self)

    def data_received(self, data: bytes) -> None:
        s, up = self.session, self.upstream_t
        if s is None or self.ended:
            return
        if up is None:  # the PLC's side is connecting: held until it is up
            self.early.append(data)
            self._reading()
            return
        forward = s.from_client(data)
        if forward:
            up.write(forward)
        if s.reply:
            assert self.client_t is not None
            self.client_t.write(s.reply)
            s.reply = b""
        if s.refused:
            self.role._refused(self, s.refused)
            s.refused.clear()
        if s.would:
            self.role._refused(self, s.would, would=True)
            s.would.clear()
        if s.seen:
            self.role._seen(self, s.seen)
            s.seen.clear()
        if s.reset is not None:
            self.role._end(self, s.reset, reset=True)

    def eof_received(self) -> bool:
        self.role._end(self, None, reset=False)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.role._end(self, None, reset=False)

    def pause_writing(self) -> None:
        self.client_full = True
        self._reading()

    def resume_writing(self) -> None:
        self.client_full = False
        self._reading()

    def _reading(self) -> None:
        """Read each side only while what it would write has room (module docstring)."""
        client, up = self.client_t, self.upstream_t
        if self.ended or client is None:
            return
        if self.client_full or self.up_full or up is None:
            client.pause_reading()
        else:
            client.resume_reading()
        if up is not None:
            if self.client_full:
                up.pause_reading()
            else:
                up.resume_reading()

    # the PLC's side (`_Upstream` hands its events here)

    def upstream_made(self, transport: asyncio.Transport) -> None:
        self.upstream_t = transport
        early, self.early = self.early, []
        for data in early:
            self.data_received(data)
        self._reading()

    def upstream_data(self, data: bytes) -> None:
        s, client = self.session, self.client_t
        if s is None or client is None or self.ended:
            return
        forward = s.from_server(data)
        if forward:
            client.write(forward)
        if s.idents:
            self.role._identified(self, s.idents)
            s.idents.clear()
        if s.reset is not None:
            log.warning("%s: %s:%s: %s; reset", self.conduit, *self.plc, s.reset)
            self.role._end(self, s.reset, reset=True)


class _Upstream(asyncio.Protocol):
    """The PLC's side of a `_Conn`."""

    def __init__(self, conn: _Conn) -> None:
        self.conn = conn

    def data_received(self, data: bytes) -> None:
        self.conn.upstream_data(data)

    def eof_received(self) -> bool:
        self.conn.role._end(self.conn, None, reset=False)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.conn.role._end(self.conn, None, reset=False)

    def pause_writing(self) -> None:
        self.conn.up_full = True
        self.conn._reading()

    def resume_writing(self) -> None:
        self.conn.up_full = False
        self.conn._reading()


class ModbusProxyRole:
    """The modbusproxy role object (`roles.AsyncRole`, see the module docstring)."""

    name = ROLE

    def __init__(
        self,
        events: EventLog,
        *,
        sockets: Sockets | None = None,
        clock: Any = time.time,
        records: Records | None = None,
    ) -> None:
        self.events = events
        self.records = records
        self.learning = Learning()
        self.inventory = Inventory()
        self.identify: set[str] = set()  # the conduits whose devices the proxy asks itself
        self.asked: set[tuple[str, int]] = set()  # (PLC, unit) asked since the role started
        self.saved_at = float("-inf")
        self.sockets: Sockets = sockets or TransparentSockets()
        self.clock = clock
        self.dirty = False
        self.revision_id: int | None = None
        self.config: Config | None = None
        self.server: asyncio.Server | None = None
        self.error: str | None = None
        self.tried_at = float("-inf")
        self.conns: set[_Conn] = set()
        self.counters: dict[str, Counts] = {}
        self.refusals: dict[tuple, Refusal] = {}
        self._pending_events: list[tuple[str, str, str, dict[str, Any], float]] = []

    # -- the contract -------------------------------------------------------------------

    async def start(self) -> None:
        if self.records is not None:
            records = self.records
            try:
                learned = await asyncio.to_thread(records.load_learned)
                assets = await asyncio.to_thread(records.load_assets)
            except Exception as e:  # a locked or broken history DB: learn afresh, say so
                log.error("cannot read what was learned and the inventory: %s", e)
            else:
                self.learning.load(learned)
                self.inventory.load(assets)
        await self._listen()

    async def apply(self, change: Change) -> None:
        self.revision_id = change.revision_id
        self.dirty = True
        if change.error is not None:
            log.error("revision %s does not validate: %s", change.revision_id, change.error)
            return
        self.config = change.config if change.config is not None else Config()
        self.identify = {c.name for c in self.config.conduits if c.modbus and c.modbus.identify}
        self._recheck(self.clock())

    async def step(self, now: float) -> None:
        if self.server is None and now - self.tried_at >= RETRY_EVERY_S:
            await self._listen()
        self._recheck(now)
        for conn in list(self.conns):
            self._collect(conn, now)
        self._report(now)
        await self._flush_events()
        if now - self.saved_at >= SAVE_EVERY_S:
            await self._save(now)

    async def close(self) -> None:
        server, self.server = self.server, None
        if server is not None:
            server.close()
        conns = list(self.conns)
        for conn in conns:
            self._end(conn, "the proxy stops", reset=True)
        tasks = [c.connecting for c in conns if c.connecting is not None]
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.sleep(0)  # the transports' aborts take effect
        self._report(self.clock(), final=True)
        await self._flush_events()
        await self._save(self.clock())

    # -- listening ------------------------------------------------------------------------

    async def _listen(self) -> None:
        try:
            sock = self.sockets.listener()
            loop = asyncio.get_running_loop()
            self.server = await loop.create_server(lambda: _Conn(self), sock=sock)
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

    def conduit_for(
        self, client: str, plc: Address, now: float, restricted: list[Conduit] | None = None
    ) -> Conduit | None:
        """The active restricted conduit from `client` to `plc` (tcp/502), if any."""
        if plc[1] != MODBUS_PORT:
            return None
        try:
            src, dst = ipaddress.ip_address(client), ipaddress.ip_address(plc[0])
        except ValueError:
            return None
        for c in self.restricted(now) if restricted is None else restricted:
            if carries_modbus(c) and any(src in n for n in c.from_) and any(dst in n for n in c.to):
                return c
        return None

    def _recheck(self, now: float) -> None:
        """Connections follow their conduit: gone or inactive, reset; changed, new policy."""
        if not self.conns:
            return
        restricted = self.restricted(now)
        policies: dict[str, Policy] = {}
        for conn in list(self.conns):
            c = self.conduit_for(conn.client[0], conn.plc, now, restricted)
            if c is None or c.name != conn.conduit:
                self._end(conn, "its conduit no longer allows it", reset=True)
                continue
            assert c.modbus is not None and conn.session is not None
            policy = policies.get(c.name)
            if policy is None:
                policy = policies[c.name] = Policy.of(c.modbus)
            if policy != conn.session.policy:
                conn.session.policy = policy

    # -- one connection -------------------------------------------------------------------

    def _accept(self, conn: _Conn) -> None:
        """A client's connection (tproxy'd here): its conduit, or a reset; then the PLC's."""
        t = conn.client_t
        assert t is not None
        peer = t.get_extra_info("peername")
        client: Address = (str(peer[0]), int(peer[1]))
        plc = self.sockets.destination(t)
        conduit = self.conduit_for(client[0], plc, self.clock())
        if conduit is None or conduit.modbus is None:
            log.warning("%s → %s:%s: no restricted conduit; reset", client[0], *plc)
            conn.ended = True
            _abort(t, reset=True)
            return
        if len(self.conns) >= MAX_CONNECTIONS:
            log.warning("%s: %d connections already; reset", conduit.name, len(self.conns))
            conn.ended = True
            _abort(t, reset=True)
            return
        _nodelay(t.get_extra_info("socket"))
        counts = self.counters.setdefault(conduit.name, Counts())
        conn.conduit, conn.client, conn.plc = conduit.name, client, plc
        conn.session = Session(Policy.of(conduit.modbus), counts)
        self.conns.add(conn)
        self.dirty = True
        conn.connecting = asyncio.create_task(self._connect(conn))

    async def _connect(self, conn: _Conn) -> None:
        source = None if self.config is not None and self.config.nat.masquerade else conn.client[0]
        loop = asyncio.get_running_loop()
        try:
            sock = await asyncio.wait_for(self.sockets.connect(source, conn.plc), CONNECT_TIMEOUT_S)
            _nodelay(sock)
            transport, _ = await loop.create_connection(lambda: _Upstream(conn), sock=sock)
        except (OSError, TimeoutError) as e:
            log.warning("%s: cannot reach %s:%s: %s", conn.conduit, *conn.plc, e or "timeout")
            self._end(conn, f"the PLC cannot be reached: {e}", reset=True)
            return
        finally:
            conn.connecting = None
        if conn.ended:  # ended while connecting
            _abort(transport, reset=True)
            return
        conn.upstream_made(transport)

    def _end(self, conn: _Conn, why: str | None, reset: bool) -> None:
        """End a proxied connection, both sides (once; later calls do nothing)."""
        if conn.ended:
            return
        conn.ended = True
        conn.reset_why = why
        if conn in self.conns:
            self._collect(conn, self.clock())
        self.conns.discard(conn)
        self.dirty = True
        if conn.connecting is not None:
            conn.connecting.cancel()
        _abort(conn.client_t, reset)
        _abort(conn.upstream_t, reset)

    # -- refusals ---------------------------------------------------------------------------

    def _refused(self, conn: _Conn, verdicts: list[Verdict], would: bool = False) -> None:
        now = self.clock()
        for v in verdicts:
            self._refusal(conn, v, now, would)

    def _refusal(self, conn: _Conn, v: Verdict, now: float, would: bool) -> None:
        assert conn.session is not None
        addresses = ", ".join(str(s) for s in v.spans)
        key = (would, conn.conduit, conn.client[0], conn.plc[0], v.adu.unit, v.function, addresses)
        r = self.refusals.get(key)
        if r is None:
            if len(self.refusals) >= MAX_AGGREGATES:
                oldest = min(self.refusals, key=lambda k: self.refusals[k].last_seen)
                del self.refusals[oldest]
            r = self.refusals[key] = Refusal(
                conn.conduit, conn.client[0], conn.plc[0], v.adu.unit, v.function,
                addresses, v.reason, 0 if conn.session.policy.reset else v.code or 0, now, now,
                would=would,
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
        what = "would refuse (mode test: passed)" if r.would else "refused"
        message = (
            f"conduit {r.conduit}: {what} {r.source} → {r.plc} unit {r.unit} function "
            f"{r.function} ({fname}){where} ({answer}){times}"
        )
        if r.would:
            self._queue_event("modbus.would_refuse", message, "info", r.as_dict(), now)
        else:
            self._queue_event("modbus.refused", message, "warning", r.as_dict(), now)
        r.reported, r.reported_at = r.count, now

    # -- learning and the inventory ---------------------------------------------------------

    def _seen(self, conn: _Conn, seen: list[Seen]) -> None:
        now = self.clock()
        for x in seen:
            self.learning.add(conn.conduit, conn.client[0], conn.plc[0], x, now)
        self.dirty = True

    def _collect(self, conn: _Conn, now: float) -> None:
        """What reached the connection's PLC since the last time, into the inventory."""
        s = conn.session
        if s is None or not s.used:
            return
        used = set(s.used)
        s.used.clear()
        if conn.conduit in self.identify and conn.upstream_t is not None and not conn.ended:
            self._ask(conn, s, {k >> 8 for k in used})
        if self.inventory.saw(conn.plc[0], conn.conduit, conn.client[0], used, now):
            units = ", ".join(str(u) for u in sorted({k >> 8 for k in used}))
            self._queue_event(
                "modbus.device_new",
                f"new Modbus device {conn.plc[0]} (unit {units}) seen through conduit "
                f"{conn.conduit} from {conn.client[0]}",
                "info",
                {"address": conn.plc[0], "conduit": conn.conduit, "client": conn.client[0]},
                now,
            )
        self.dirty = True

    def _ask(self, conn: _Conn, s: Session, units: set[int]) -> None:
        """Ask the units of a conduit with `identify: true` not identified yet, once."""
        asset = self.inventory.items.get(conn.plc[0])
        for unit in sorted(units):
            key = (conn.plc[0], unit)
            if key in self.asked or (asset is not None and unit in asset.identity):
                continue
            request = s.ask_identification(unit)
            if request is None:
                return
            assert conn.upstream_t is not None
            conn.upstream_t.write(request)
            self.asked.add(key)

    def _identified(self, conn: _Conn, idents: list[tuple[int, bytes]]) -> None:
        now = self.clock()
        self._collect(conn, now)  # a device new to the inventory is reported as such first
        for unit, pdu in idents:
            if pdu[0] == 0xAB and len(pdu) > 1:  # the proxy's own request was refused
                code = pdu[1]
                self.inventory.unidentified(conn.plc[0], unit, f"exception {code:02X}", now)
                continue
            objects = device_identification(pdu)
            if objects is None:  # not an identification (or cut short)
                continue  # (an answer with no objects is kept: the unit was asked)
            before = self.inventory.identified(conn.plc[0], unit, objects, now)
            if before is not None:
                now_is = self.inventory.items[conn.plc[0]].identity[unit]
                self._queue_event(
                    "modbus.device_changed",
                    f"Modbus device {conn.plc[0]} unit {unit} identifies as "
                    f"{describe(now_is)}, was {describe(before)}",
                    "warning",
                    {"address": conn.plc[0], "unit": unit, "before": before, "now": objects},
                    now,
                )
        self.dirty = True

    async def _save(self, now: float) -> None:
        self.saved_at = now
        if self.records is None:
            return
        changed, gone = self.learning.take_dirty()
        assets = self.inventory.take_dirty()
        try:
            if changed or gone:
                await asyncio.to_thread(self.records.save_learned, changed, gone)
            if assets:
                await asyncio.to_thread(self.records.save_assets, assets)
        except Exception as e:  # a locked history DB: kept, tried again at the next save
            log.warning("cannot save what was learned and the inventory: %s", e)
            self.learning.dirty.update(o.key for o in changed)
            self.learning.forgotten.extend(gone)
            self.inventory.dirty.update(a.address for a in assets)

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
        learned = self.learning.counts()
        for c in self.restricted(now):
            assert c.modbus is not None
            conduits[c.name] = {
                "restriction": c.modbus.describe(),
                "mode": c.modbus.mode,
                "learned": learned.get(c.name, 0),
                "on_refusal": c.modbus.on_refusal,
                "connections": sum(1 for x in self.conns if x.conduit == c.name),
                **self.counters.get(c.name, Counts()).as_dict(),
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
            "devices": len(self.inventory.items),
        }


def main(paths: Paths, stop: threading.Event) -> None:
    """The modbusproxy role (see the module docstring); returns soon after `stop` is set."""
    from appliance.modbusproxy.store import MODELS, StoreRecords  # peewee: at the edge

    store, own = open_store(paths.data_dir, MODELS)
    role = ModbusProxyRole(store, records=StoreRecords(store))
    try:
        asyncio.run(AsyncLoop(role, store, LiveState(paths.run_dir)).run(stop))
    finally:
        if own:
            store.close()
