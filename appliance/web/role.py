"""The web role: keeps the HTTPS server (gunicorn, a child process) listening where the
desired revision says, plus the HTTP → HTTPS redirect, and publishes `web.json`.

At start it makes the unit's certificate (first start) and, while no admin
exists, the one-time setup code. Then, every second (`run`): take the desired
revision when it changed (`rolekit.Desired`, handed to `apply`), and in `step`
work out the addresses from it and the net role's links (`serve.listen_addresses`),
keep those this host has now, and (re)start the server when that set changes or
the server died (with back-off). It writes `<run_dir>/web.json` every second and
returns within ~3 s of `stop`.

What touches the outside is handed in (`WebRole(...)`'s keywords, the real ones by
default): the server's process (`spawn`), the redirect listeners, `can_bind`, the
certificate and the accounts, so a unit test drives the role with fakes.
"""

from __future__ import annotations

import logging
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

from appliance import proc
from appliance.config.model import Config
from appliance.paths import Paths
from appliance.rolekit import Desired
from appliance.roles import Change
from appliance.state.db import Store
from appliance.state.live import LiveState
from appliance.web import accounts, serve, setup, tls

log = logging.getLogger(__name__)

ROLE = "web"
TICK_S = 1.0
STOP_GRACE_S = 2.0
BACKOFF_MAX_S = 30.0  # restarts of a dying server wait 1, 2, 4 ... s, at most this
BACKOFF_RESET_S = 30.0  # a server up this long after its start resets the back-off


class Server(Protocol):
    """The running HTTPS server, as the role sees it (`spawn_server` gives the real one)."""

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None: ...

    def poll(self) -> int | None:
        """None while it runs, else its exit status."""
        ...

    def stop(self, grace: float) -> None:
        """End it (SIGTERM, `grace` seconds, SIGKILL) and reap it."""
        ...


class Redirect(Protocol):
    """The plain-HTTP listeners that send everyone to HTTPS (`serve.RedirectListeners`)."""

    listening: list[str]

    def start(self, addresses: Iterable[str], port: int, https_port: int) -> list[str]:
        """Listen on each address; the errors of those that failed."""
        ...

    def stop(self) -> None: ...


class _Child:
    """A server process started with `proc.spawn`, ended with `proc.stop`."""

    def __init__(self, child: subprocess.Popen[bytes]) -> None:
        self.child = child

    @property
    def pid(self) -> int:
        return self.child.pid

    @property
    def returncode(self) -> int | None:
        return self.child.returncode

    def poll(self) -> int | None:
        return self.child.poll()

    def stop(self, grace: float) -> None:
        proc.stop(self.child, grace)


def spawn_server(argv: list[str]) -> Server:
    """The real server: `argv` (`serve.command`) as a child process."""
    return _Child(proc.spawn(argv))


class WebRole:
    """The web role object (`roles.SyncFollower`): `apply(change)`, `step(now)`,
    `snapshot(now)`; `run(stop)` is its one-second loop.

    `dirty` is set when something web.json shows changes (a revision taken, the server
    started or found dead, the redirect moved, an error); the loop writes web.json at
    every one-second tick anyway, which is soon enough for what it shows."""

    name = ROLE

    def __init__(
        self,
        paths: Paths,
        store: Store,
        live: LiveState,
        *,
        spawn: Callable[[list[str]], Server] = spawn_server,
        redirect: Redirect | None = None,
        can_bind: Callable[[str], bool] = serve.can_bind,
        ensure_cert: Callable[..., tuple[Path, Path]] = tls.ensure_cert,
        admin_exists: Callable[[], bool] = accounts.admin_exists,
    ) -> None:
        self.paths = paths
        self.store = store
        self.live = live
        self.spawn = spawn
        self.redirect: Redirect = serve.RedirectListeners() if redirect is None else redirect
        self.can_bind = can_bind
        self._ensure_cert = ensure_cert
        self.admin_exists = admin_exists
        self.desired = Desired(store)
        self.dirty = False
        self.started_at = time.time()
        self.server: Server | None = None
        self.binds: list[str] = []
        self.listen: list[str] = []
        self.why = ""
        self.redirect_key: tuple[Any, ...] | None = None
        self.rev_id: int | None = None
        self.config: Config | None = None
        self.restarts = 0
        self.in_a_row = 0
        self.next_start = 0.0
        self.last_error: str | None = None
        self.cert: tuple[Path, Path] | None = None

    # -- inputs ------------------------------------------------------------------

    def apply(self, change: Change) -> None:
        """The desired revision changed: serve where it says at the next step. A stored
        document that no longer loads is reported once; the last good one keeps serving."""
        if change.error is not None:
            self._error(f"cannot read revision {change.revision_id}: {change.error}")
            return
        self.rev_id, self.config = change.revision_id, change.config
        self.dirty = True

    def ensure_cert(self) -> None:
        cfg = self.config or Config()
        known = [str(a.ip) for i in cfg.links() if i.role in ("mgmt", "it") for a in i.addresses]
        self.cert = self._ensure_cert(self.paths, unit_name=cfg.unit.name, addresses=known)

    def ensure_setup_code(self) -> None:
        if not self.admin_exists() and setup.setup_code(self.paths, create=True):
            log.info("no admin yet: the setup code is printed by `appliance setup-code` (root)")

    # -- the server ----------------------------------------------------------------

    def wanted(self) -> tuple[list[str], list[str], str]:
        addrs, why = serve.listen_addresses(self.config, self.live.read("net"))
        have = [a for a in addrs if a in self.listen or self.can_bind(a)]
        if not have:
            have, why = [serve.LOOPBACK], f"{why}; none present yet: only 127.0.0.1"
        web = (self.config or Config()).web
        return [serve.bind_spec(a, web.https_port) for a in have], have, why

    def _alive(self) -> bool:
        return self.server is not None and self.server.poll() is None

    def step(self, now: float) -> None:
        """Keep the server on the addresses wanted now (restart it when they change, or
        after it died, waiting 1, 2, 4 ... `BACKOFF_MAX_S` s between deaths in a row)
        and the redirect on the same addresses."""
        binds, addrs, why = self.wanted()
        alive = self._alive()
        if alive and binds == self.binds:
            self.in_a_row = 0 if now - self.next_start > BACKOFF_RESET_S else self.in_a_row
        else:
            if self.server is not None and not alive:
                code = self.server.returncode
                self._error(f"the HTTPS server exited ({code}); restarting")
                self.server = None
                self.in_a_row += 1
                self.next_start = now + min(BACKOFF_MAX_S, 2.0 ** max(0, self.in_a_row - 1))
                self.dirty = True
            if now >= self.next_start:
                if binds != self.binds and self.binds:
                    log.info("listen addresses change: %s -> %s", self.binds, binds)
                self.start_server(binds, addrs, why)
        web = (self.config or Config()).web
        key = (tuple(addrs), web.http_port, web.https_port)
        if key != self.redirect_key:
            self.redirect.stop()
            errors = []
            if web.http_port is not None:
                errors = self.redirect.start(addrs, web.http_port, web.https_port)
            for e in errors:
                self._error(f"cannot listen for the HTTP redirect: {e}")
            self.redirect_key = key
            self.dirty = True

    def start_server(self, binds: list[str], addrs: list[str], why: str) -> None:
        self.stop_server()
        assert self.cert is not None
        argv = serve.command(self.paths, binds, *self.cert)
        log.info("serving HTTPS on %s (%s)", ", ".join(binds), why)
        self.server = self.spawn(argv)
        self.binds, self.listen, self.why = binds, addrs, why
        self.restarts += 1
        self.dirty = True
        self.store.event(
            "web.listen",
            f"web UI on {', '.join(binds)} ({why})",
            source="web",
            data={"binds": binds},
        )

    def stop_server(self) -> None:
        server, self.server = self.server, None
        if server is not None:
            server.stop(STOP_GRACE_S)

    # -- publish -------------------------------------------------------------------

    def snapshot(self, now: float) -> dict[str, Any]:
        web = (self.config or Config()).web
        return {
            "role": ROLE,
            "started_at": self.started_at,
            "listen": [serve.authority(a, web.https_port) for a in self.listen],
            "urls": [serve.url(a, web.https_port) for a in self.listen],
            "binds": self.binds,
            "why": self.why,
            "redirect": self.redirect.listening,
            "https_port": web.https_port,
            "http_port": web.http_port,
            "revision": self.rev_id,
            "server_pid": self.server.pid if self.server else None,
            "server_alive": self._alive(),
            "restarts": self.restarts,
            "cert_fingerprint": tls.fingerprint(self.paths),
            "cert_not_after": tls.not_after(self.paths),
            "setup_required": not self.admin_exists(),
            "last_error": self.last_error,
        }

    def publish(self, now: float) -> None:
        self.dirty = False
        self.live.write(ROLE, self.snapshot(now))

    def _error(self, message: str) -> None:
        if message != self.last_error:
            log.error(message)
            self.store.event("web.error", message, source="web", severity="error")
            self.dirty = True
        self.last_error = message

    def poll_desired(self, force: bool = False) -> None:
        change = self.desired.poll(force)
        if change is not None:
            self.apply(change)

    def run(self, stop: threading.Event) -> None:
        self.poll_desired(force=True)
        self.ensure_cert()
        self.ensure_setup_code()
        try:
            while not stop.is_set():
                now = time.time()
                try:
                    self.poll_desired()
                    self.step(now)
                except Exception as e:  # the role must keep serving and reporting
                    log.exception("web role tick failed")
                    self._error(f"{e.__class__.__name__}: {e}")
                self.publish(now)
                stop.wait(TICK_S)
        finally:
            self.redirect.stop()
            self.stop_server()


def main(paths: Paths, stop: threading.Event) -> None:
    """The web role's entry point (see the module docstring)."""
    store = Store(paths.data_dir, accounts.MODELS)
    live = LiveState(paths.run_dir)
    live.ensure()
    os.umask(0o027)
    try:
        WebRole(paths, store, live).run(stop)
    finally:
        store.close()
