"""The opcua role: the northbound OPC UA server, in its own process, fed by the field role.

Why a process of its own: the OPC UA stack listens to the IT network and parses what
anyone there sends; the field role holds the connections to the PLCs and can write to
them. Kept apart, a flaw in the stack reaches a process that has no OT connection and
no device access (it can only ask the field role to write, over the field role's
control socket, as an admin user would through the API, audited there). It also keeps
the field role small (asyncua's server costs tens of MB).

`main(paths, stop)` runs the role object (`OpcUaRole`, an `appliance.roles.AsyncRole`)
in `appliance.rolekit.AsyncLoop` until `stop` is set:

- each `Change` of the desired revision (read at start, when its doorbell rings and
  every 2 s) goes to `apply`: it runs `Northbound(config.opcua_server, ...)` while
  ``opcua_server.enabled`` (restarted when those settings change, stopped when
  disabled) and makes the address space follow the devices and tags. A server that
  failed to start is tried again by `step` every `RETRY_EVERY_S`;
- values: `start` runs the reader of ``<run_dir>/field-values.sock``
  (`appliance.valuestream`, served by the field role): a snapshot of every tag, then
  the changes, as JSON lines. While that stream is down (the field role stopped or
  restarting) every value shows Bad (BadCommunicationError); it reconnects with
  back-off (0.2 s doubling to 2 s) and the snapshot makes them good again;
- users: `appliance.web.accounts.audited_authenticate` (the web UI's accounts; this
  process opens its own Store for it), told the client's address (the per-address
  throttle) and run on a thread; every log-on, good, failed or throttled, is an audit
  row with the client's address (`opcua:<address>`); a logged-on user's current role
  (`_role_of`: None when disabled or deleted) is asked again at every write and every
  few seconds, so a demoted admin stops writing and a disabled user's session is closed;
  writes by admins go to the field role's ``write`` method (``source="opcua"``,
  `field_writer`), on a thread so the loop never waits on a device;
- the loop writes ``<run_dir>/opcua.json`` (`snapshot`) every second: {"role": "opcua",
  "enabled", "running", "port", "endpoints": [{"url", "security"}], "sessions": n,
  "values": n, "connected": bool (the value stream), "last_update": t|null,
  "error": str|null, "revision": id}.

What touches the outside is handed in (`OpcUaRole(...)`'s keywords, the real ones by
default): the server (`northbound`, a factory called like `Northbound`), the field
role's write (`write_field`) and the event log, so a unit test drives the role with fakes.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

from appliance.config.field import Device
from appliance.config.field import Northbound as NorthboundConfig
from appliance.config.model import Config
from appliance.errors import ApplianceError, NotFound, Unavailable
from appliance.opcua.server import Authenticate, Northbound, OnWrite, RoleOf
from appliance.paths import Paths
from appliance.rolekit import AsyncLoop
from appliance.roles import Change
from appliance.state import control
from appliance.state.db import open_store
from appliance.state.live import LiveState
from appliance.valuestream import ValueReader, stream_path
from appliance.web import accounts

log = logging.getLogger("opcua")

ROLE = "opcua"
RETRY_EVERY_S = 2.0  # a server that failed to start is tried again this often
STOP_TIMEOUT_S = 2.0
READER_STOP_S = 0.5
WRITE_TIMEOUT_S = 20.0  # the field role gives a device 15 s


def _role_of(name: str) -> str | None:
    """A user's role in the web UI's accounts now; None when disabled or deleted."""
    try:
        user = accounts.get_user(name)
    except NotFound:
        return None
    return None if user.disabled else str(user.role)


class Server(Protocol):
    """The OPC UA server as the role sees it (`appliance.opcua.server.Northbound`)."""

    @property
    def cfg(self) -> NorthboundConfig: ...

    @property
    def running(self) -> bool: ...

    @property
    def endpoint(self) -> str: ...

    @property
    def sessions(self) -> int: ...

    async def start(self, devices: Iterable[Device]) -> None:
        """Listen with these devices' tags; ApplianceError when it cannot."""
        ...

    async def reconfigure(self, devices: Iterable[Device]) -> None: ...

    def update(self, name: str, value: Any, quality: str, source_time: float | None) -> None: ...

    async def stop(self) -> None: ...


class MakeServer(Protocol):
    """Builds a server; called like `Northbound(cfg, paths, authenticate, on_write, role_of=)`."""

    def __call__(
        self,
        cfg: NorthboundConfig,
        paths: Paths,
        authenticate: Authenticate,
        on_write: OnWrite,
        *,
        role_of: RoleOf | None = ...,
    ) -> Server: ...


class EventLog(Protocol):
    """Where the role's events go (`appliance.state.db.Store.event`)."""

    def event(self, kind: str, message: str, *, source: str, severity: str = ...) -> Any: ...


WriteField = Callable[[str, Any, str], Any]  # (tag, value, actor) -> the field role's answer


def field_writer(run_dir: Path) -> WriteField:
    """The real `write_field`: the field role's ``write`` over its control socket
    (blocking: the role calls it on a thread), ``source="opcua"``. Unavailable when the
    field role is not running (the OPC UA client gets BadCommunicationError)."""
    sock = control.socket_path(run_dir, "field")

    def write(tag: str, value: Any, actor: str) -> Any:
        try:
            return control.call(
                sock,
                "write",
                timeout=WRITE_TIMEOUT_S,
                tag=tag,
                value=value,
                actor=actor,
                source="opcua",
            )
        except NotFound as e:
            if not sock.exists() or "role is not running" in str(e):
                raise Unavailable("the field role is not running") from None
            raise  # an unknown tag: BadNodeIdUnknown

    return write


class OpcUaRole:
    """The opcua role object (`roles.AsyncRole`, see the module docstring).

    `dirty` is set when what opcua.json shows changes in a way worth publishing before
    the next one-second write: the value stream connected or lost, the server started
    or stopped, its error changed (not for each value)."""

    name = ROLE

    def __init__(
        self,
        paths: Paths,
        events: EventLog,
        authenticate: Authenticate,
        *,
        role_of: RoleOf | None = _role_of,
        northbound: MakeServer = Northbound,
        write_field: WriteField | None = None,
    ) -> None:
        self.paths = paths
        self.events = events
        self.authenticate = authenticate
        self.role_of = role_of
        self.make_server = northbound
        self.write_field = field_writer(paths.run_dir) if write_field is None else write_field
        self.reader = ValueReader(
            stream_path(paths.run_dir), self._snapshot, self._changes, self.disconnected
        )
        self.dirty = False
        self.revision_id: int | None = None
        self.config: Config | None = None
        self.northbound: Server | None = None
        self.error: str | None = None
        self.tried_at = float("-inf")  # the last failed start (wall clock)
        # tag -> [value, quality, source_time] as the field role last said
        self.values: dict[str, list[Any]] = {}
        self.connected = False
        self.last_update: float | None = None
        self._feed: asyncio.Task[None] | None = None

    # -- the contract -------------------------------------------------------------------

    async def start(self) -> None:
        """Read the field role's value stream (for ever, reconnecting) from now on."""
        if self._feed is None:
            self._feed = asyncio.create_task(self.reader.run(), name="opcua:values")

    async def apply(self, change: Change) -> None:
        """Take a desired revision: no revision yet is the defaults; one that no longer
        validates is logged and what runs is kept."""
        self.revision_id = change.revision_id
        self.dirty = True
        if change.error is not None:  # stored under older rules: keep what runs, say why
            log.error("revision %s does not validate: %s", change.revision_id, change.error)
            return
        await self._apply(change.config if change.config is not None else Config())

    async def step(self, now: float) -> None:
        """Try again to start a server that failed to (every RETRY_EVERY_S)."""
        cfg = self.config.opcua_server if self.config is not None else None
        if cfg is None or not cfg.enabled or self.running:
            return
        if now - self.tried_at >= RETRY_EVERY_S:
            assert self.config is not None
            await self._apply(self.config)

    async def close(self) -> None:
        """Stop the value-stream reader and the server."""
        feed, self._feed = self._feed, None
        if feed is not None:
            feed.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(feed, READER_STOP_S)
        await self._stop_server()

    # -- configuration ------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.northbound is not None and self.northbound.running

    async def _apply(self, config: Config) -> None:
        """Run, restart, stop or reconfigure the server to match `config`."""
        self.config = config
        cfg = config.opcua_server
        devices: list[Device] = list(config.devices)
        nb = self.northbound
        if nb is not None and (not cfg.enabled or nb.cfg != cfg):
            log.info("OPC UA server: %s", "restarting" if cfg.enabled else "disabled, stopping")
            await self._stop_server()
            nb = None
        if not cfg.enabled:
            self._set_error(None)
            return
        if nb is None:
            nb = self.make_server(
                cfg, self.paths, self.authenticate, self.on_write, role_of=self.role_of
            )
            try:
                await nb.start(devices)
            except ApplianceError as e:
                self.tried_at = time.time()
                if str(e) != self.error:  # once per cause, not once per retry
                    log.error("OPC UA server: %s", e)
                    await self._event("opcua.server_failed", f"OPC UA server: {e}", "error")
                self._set_error(str(e))
                return
            except asyncio.CancelledError:  # stopped while starting: close what listens
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(nb.stop(), STOP_TIMEOUT_S)
                raise
            self._set_error(None)
            self.northbound = nb
            self.dirty = True
        else:
            await nb.reconfigure(devices)
        self._push_all()  # new variables get the values known already

    def _set_error(self, error: str | None) -> None:
        if error != self.error:
            self.error = error
            self.dirty = True

    async def _stop_server(self) -> None:
        nb, self.northbound = self.northbound, None
        if nb is not None:
            self.dirty = True
            with contextlib.suppress(Exception):  # best effort: a new one or none follows
                await asyncio.wait_for(nb.stop(), STOP_TIMEOUT_S)

    async def _event(self, kind: str, message: str, severity: str) -> None:
        try:
            await asyncio.to_thread(
                self.events.event, kind, message, source="opcua", severity=severity
            )
        except Exception as e:  # a locked history DB: the log has it
            log.warning("cannot record event %s: %s", kind, e)

    # -- values from the field role -----------------------------------------------------

    def _push_all(self) -> None:
        nb = self.northbound
        if nb is None:
            return
        for name, (value, quality, source_time) in self.values.items():
            nb.update(name, value, quality if self.connected else "bad", source_time)

    def handle(self, line: bytes) -> None:
        """One line of the value stream (`ValueReader.handle`: a line that does not parse
        is logged and skipped)."""
        self.reader.handle(line)

    def _snapshot(self, table: dict[str, list[Any]]) -> None:
        self.values = table
        if not self.connected:
            self.connected = self.dirty = True
        self._push_all()
        self.last_update = time.time()

    def _changes(self, table: dict[str, list[Any]]) -> None:
        self.values.update(table)
        nb = self.northbound
        if nb is not None:
            for name, (value, quality, source_time) in table.items():
                nb.update(name, value, quality, source_time)
        self.last_update = time.time()

    def disconnected(self) -> None:
        """The field role is gone: every value is bad until it answers again."""
        if self.connected:
            log.warning("value stream: the field role went away; values are bad")
            self.dirty = True
        self.connected = False
        self._push_all()

    # -- writes to the field role ------------------------------------------------------

    async def on_write(self, tag: str, value: Any, actor: str) -> Any:
        """An admin's OPC UA write: the field role writes the device and audits it (on a
        thread: the loop never waits on a device)."""
        return await asyncio.to_thread(functools.partial(self.write_field, tag, value, actor))

    # -- live state ---------------------------------------------------------------------

    def snapshot(self, now: float) -> dict[str, Any]:
        cfg = self.config.opcua_server if self.config is not None else None
        nb = self.northbound
        return {
            "role": "opcua",
            "enabled": bool(cfg and cfg.enabled),
            "running": self.running,
            "port": cfg.port if cfg else None,
            "endpoints": (
                [{"url": nb.endpoint, "security": p} for p in nb.cfg.security]
                if nb is not None
                else []
            ),
            "sessions": nb.sessions if nb is not None else 0,
            "values": len(self.values),
            "connected": self.connected,
            "last_update": self.last_update,
            "error": self.error,
            "revision": self.revision_id,
        }


def main(paths: Paths, stop: threading.Event) -> None:
    """The opcua role (see the module docstring); returns soon after `stop` is set."""
    store, own = open_store(paths.data_dir, accounts.MODELS)
    role = OpcUaRole(paths, store, accounts.audited_authenticate(store, "opcua"))
    try:
        asyncio.run(AsyncLoop(role, store, LiveState(paths.run_dir)).run(stop))
    finally:
        if own:
            store.close()
