"""The opcua role: the northbound OPC UA server, in its own process, fed by the field role.

Why a process of its own: the OPC UA stack listens to the IT network and parses what
anyone there sends; the field role holds the connections to the PLCs and can write to
them. Kept apart, a flaw in the stack reaches a process that has no OT connection and
no device access (it can only ask the field role to write, over the field role's
control socket, as an admin user would through the API, audited there). It also keeps
the field role small (asyncua's server costs tens of MB).

`main(paths, stop)` runs one asyncio loop until `stop` is set:

- it reads the desired revision (`revisions.desired`) at start, when its doorbell rings
  and every 2 s; it runs `Northbound(config.opcua_server, ...)` while
  ``opcua_server.enabled`` (restarted when those settings change, stopped when disabled)
  and makes the address space follow the devices and tags;
- values: it reads ``<run_dir>/field-values.sock`` (`appliance.valuestream`, served by
  the field role): a snapshot of every tag, then the changes, as JSON lines. While that
  stream is down (the field role stopped or restarting) every value shows Bad
  (BadCommunicationError); it reconnects with back-off (0.2 s doubling to 2 s) and the
  snapshot makes them good again;
- users: `appliance.web.accounts.authenticate` (the web UI's accounts; this process
  opens its own Store for it), told the client's address (the per-address throttle) and
  run on a thread; a logged-on user's current role (`_role_of`: None when disabled or
  deleted) is asked again at every write and every few seconds, so a demoted admin
  stops writing and a disabled user's session is closed; writes by admins go to the
  field role's ``write`` method (``source="opcua"``), on a thread so the loop never
  waits on a device;
- it writes ``<run_dir>/opcua.json`` every second: {"role": "opcua", "enabled",
  "running", "port", "endpoints": [{"url", "security"}], "sessions": n, "values": n,
  "connected": bool (the value stream), "last_update": t|null, "error": str|null,
  "revision": id}.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
import time
from typing import Any

from appliance.config.field import Device
from appliance.config.model import Config
from appliance.errors import ApplianceError, NotFound
from appliance.opcua.server import Authenticate, Northbound, RoleOf
from appliance.paths import Paths
from appliance.state import control, revisions
from appliance.state.db import Store, open_store
from appliance.state.live import LiveState
from appliance.valuestream import ValueReader, stream_path
from appliance.web import accounts

log = logging.getLogger("opcua")

PUBLISH_EVERY_S = 1.0
RELOAD_EVERY_S = 2.0
LOOP_S = 0.2
STOP_TIMEOUT_S = 2.0
WRITE_TIMEOUT_S = 20.0  # the field role gives a device 15 s


def _role_of(name: str) -> str | None:
    """A user's role in the web UI's accounts now; None when disabled or deleted."""
    try:
        user = accounts.get_user(name)
    except NotFound:
        return None
    return None if user.disabled else str(user.role)


class OpcUaRole:
    """The opcua role's state and loop (see the module docstring)."""

    def __init__(
        self,
        paths: Paths,
        store: Store,
        live: LiveState,
        authenticate: Authenticate,
        role_of: RoleOf | None = _role_of,
    ) -> None:
        self.paths = paths
        self.store = store
        self.live = live
        self.authenticate = authenticate
        self.role_of = role_of
        self.stream_path = stream_path(paths.run_dir)
        self.reader = ValueReader(
            self.stream_path, self._snapshot, self._changes, self.disconnected
        )
        self.field_socket = control.socket_path(paths.run_dir, "field")
        self.revision_id: int | None = None
        self.config: Config | None = None
        self.northbound: Northbound | None = None
        self.error: str | None = None
        # tag -> [value, quality, source_time] as the field role last said
        self.values: dict[str, list[Any]] = {}
        self.connected = False
        self.last_update: float | None = None
        self._wake = asyncio.Event()
        self.loop: asyncio.AbstractEventLoop | None = None

    # -- the loop -----------------------------------------------------------------------

    async def run(self, stop: threading.Event) -> None:
        self.loop = asyncio.get_running_loop()
        bell = self._bind_doorbell()
        feed = asyncio.create_task(self.reader.run(), name="opcua:values")
        try:
            self.publish()
            await self.reload(force=True)
            self.publish()
            next_publish = time.monotonic() + PUBLISH_EVERY_S
            next_reload = time.monotonic() + RELOAD_EVERY_S
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), LOOP_S)
                now = time.monotonic()
                if self._wake.is_set() or now >= next_reload:
                    self._wake.clear()
                    await self.reload()
                    next_reload = now + RELOAD_EVERY_S
                if now >= next_publish:
                    self.publish()
                    next_publish = now + PUBLISH_EVERY_S
        finally:
            self.loop.remove_reader(bell.fileno())
            bell.close()
            feed.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(feed, 0.5)
            await self._stop_server()
            self.publish()

    def _bind_doorbell(self) -> Any:
        assert self.loop is not None
        return self.live.watch_doorbell("opcua", self.loop, self._wake.set)

    # -- configuration ------------------------------------------------------------------

    async def reload(self, force: bool = False) -> None:
        try:
            rev = await asyncio.to_thread(revisions.desired, self.store)
        except Exception as e:  # a busy or broken DB: keep running what we have
            log.warning("cannot read the desired revision: %s", e)
            return
        rev_id = rev.id if rev is not None else None
        if rev_id == self.revision_id and not force:
            if self.config is not None and self.config.opcua_server.enabled and not self.running:
                await self.apply(self.config)  # it failed to start: try again
            return
        self.revision_id = rev_id
        try:
            config = revisions.config_of(rev) if rev is not None else Config()
        except ValueError as e:  # stored under older rules: keep what runs, say why
            log.error("revision %s does not validate: %s", rev_id, e)
            return
        await self.apply(config)

    @property
    def running(self) -> bool:
        return self.northbound is not None and self.northbound.running

    async def apply(self, config: Config) -> None:
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
            self.error = None
            return
        if nb is None:
            nb = Northbound(cfg, self.paths, self.authenticate, self.on_write, role_of=self.role_of)
            try:
                await nb.start(devices)
            except ApplianceError as e:
                if str(e) != self.error:
                    log.error("OPC UA server: %s", e)
                    await self._event("opcua.server_failed", f"OPC UA server: {e}", "error")
                self.error = str(e)
                return
            self.error = None
            self.northbound = nb
        else:
            await nb.reconfigure(devices)
        self._push_all()  # new variables get the values known already

    async def _stop_server(self) -> None:
        nb, self.northbound = self.northbound, None
        if nb is not None:
            with contextlib.suppress(Exception):  # best effort: a new one or none follows
                await asyncio.wait_for(nb.stop(), STOP_TIMEOUT_S)

    async def _event(self, kind: str, message: str, severity: str) -> None:
        try:
            await asyncio.to_thread(
                self.store.event, kind, message, source="opcua", severity=severity
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
        self.connected = True
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
        self.connected = False
        self._push_all()

    # -- writes to the field role ------------------------------------------------------

    async def on_write(self, tag: str, value: Any, actor: str) -> Any:
        """An admin's OPC UA write: the field role writes the device and audits it."""
        assert self.loop is not None
        call = functools.partial(
            control.call,
            self.field_socket,
            "write",
            timeout=WRITE_TIMEOUT_S,
            tag=tag,
            value=value,
            actor=actor,
            source="opcua",
        )
        try:
            return await self.loop.run_in_executor(None, call)
        except NotFound as e:
            if not self.field_socket.exists() or "role is not running" in str(e):
                raise ApplianceError("the field role is not running") from None
            raise

    # -- live state ---------------------------------------------------------------------

    def document(self) -> dict[str, Any]:
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

    def publish(self) -> None:
        try:
            self.live.write("opcua", self.document())
        except OSError as e:  # a full or vanished run dir: try again next second
            log.warning("cannot write opcua.json: %s", e)


def main(paths: Paths, stop: threading.Event) -> None:
    """The opcua role (see the module docstring); returns soon after `stop` is set."""
    store, own = open_store(paths.data_dir, accounts.MODELS)
    live = LiveState(paths.run_dir)
    role = OpcUaRole(paths, store, live, accounts.authenticate)
    try:
        asyncio.run(role.run(stop))
    finally:
        if own:
            store.close()
