"""The web role: keeps the HTTPS server (gunicorn, a child process) listening where the
desired revision says, plus the HTTP → HTTPS redirect, and publishes `web.json`.

At start it makes the unit's certificate (first start) and, while no admin
exists, the one-time setup code. Then, every second: read the desired revision
and the net role's links, work out the addresses (`serve.listen_addresses`),
keep those this host has now, and (re)start the server when that set changes or
the server died (with back-off). It writes `<run_dir>/web.json` every second and
returns within ~3 s of `stop`.
"""

from __future__ import annotations

import logging
import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from appliance import proc
from appliance.config.model import Config
from appliance.paths import Paths
from appliance.state.db import Revision, Store
from appliance.state.live import LiveState
from appliance.state.revisions import config_of, desired
from appliance.web import accounts, serve, setup, tls

log = logging.getLogger(__name__)

TICK_S = 1.0
STOP_GRACE_S = 2.0


class WebRole:
    def __init__(self, paths: Paths, store: Store, live: LiveState) -> None:
        self.paths = paths
        self.store = store
        self.live = live
        self.started_at = time.time()
        self.proc: subprocess.Popen[bytes] | None = None
        self.binds: list[str] = []
        self.listen: list[str] = []
        self.why = ""
        self.redirect = serve.RedirectListeners()
        self.redirect_key: tuple[Any, ...] | None = None
        self.rev_id: int | None = None
        self.config: Config | None = None
        self.restarts = 0
        self.in_a_row = 0
        self.next_start = 0.0
        self.last_error: str | None = None
        self.cert: tuple[Path, Path] | None = None

    # -- inputs ------------------------------------------------------------------

    def read_config(self) -> None:
        rev = desired(self.store)
        if rev is None:
            self.rev_id, self.config = None, None
        elif rev.id != self.rev_id:
            try:
                self.config = config_of(Revision.get_by_id(rev.id))
                self.rev_id = rev.id
            except Exception as e:  # a stored document that no longer loads: keep serving
                self._error(f"cannot read revision {rev.id}: {e}")

    def ensure_cert(self) -> None:
        cfg = self.config or Config()
        known = [str(a.ip) for i in cfg.interfaces if i.role in ("mgmt", "it") for a in i.addresses]
        self.cert = tls.ensure_cert(self.paths, unit_name=cfg.unit.name, addresses=known)

    def ensure_setup_code(self) -> None:
        if not accounts.admin_exists() and setup.setup_code(self.paths, create=True):
            log.info("no admin yet: the setup code is printed by `appliance setup-code` (root)")

    # -- the server ----------------------------------------------------------------

    def wanted(self) -> tuple[list[str], list[str], str]:
        addrs, why = serve.listen_addresses(self.config, self.live.read("net"))
        have = [a for a in addrs if a in self.listen or serve.can_bind(a)]
        if not have:
            have, why = [serve.LOOPBACK], f"{why}; none present yet: only 127.0.0.1"
        web = (self.config or Config()).web
        return [serve.bind_spec(a, web.https_port) for a in have], have, why

    def reconcile(self, now: float) -> None:
        binds, addrs, why = self.wanted()
        alive = self.proc is not None and self.proc.poll() is None
        if alive and binds == self.binds:
            self.in_a_row = 0 if now - self.next_start > 30 else self.in_a_row
        else:
            if self.proc is not None and not alive:
                code = self.proc.returncode
                self._error(f"the HTTPS server exited ({code}); restarting")
                self.proc = None
                self.in_a_row += 1
                self.next_start = now + min(30.0, 2.0 ** max(0, self.in_a_row - 1))
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

    def start_server(self, binds: list[str], addrs: list[str], why: str) -> None:
        self.stop_server()
        assert self.cert is not None
        argv = serve.command(self.paths, binds, *self.cert)
        log.info("serving HTTPS on %s (%s)", ", ".join(binds), why)
        self.proc = proc.spawn(argv)
        self.binds, self.listen, self.why = binds, addrs, why
        self.restarts += 1
        self.store.event(
            "web.listen",
            f"web UI on {', '.join(binds)} ({why})",
            source="web",
            data={"binds": binds},
        )

    def stop_server(self) -> None:
        server, self.proc = self.proc, None
        if server is not None:
            proc.stop(server, STOP_GRACE_S)

    # -- publish -------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        web = (self.config or Config()).web
        return {
            "role": "web",
            "started_at": self.started_at,
            "listen": [serve.authority(a, web.https_port) for a in self.listen],
            "urls": [serve.url(a, web.https_port) for a in self.listen],
            "binds": self.binds,
            "why": self.why,
            "redirect": self.redirect.listening,
            "https_port": web.https_port,
            "http_port": web.http_port,
            "revision": self.rev_id,
            "server_pid": self.proc.pid if self.proc else None,
            "server_alive": self.proc is not None and self.proc.poll() is None,
            "restarts": self.restarts,
            "cert_fingerprint": tls.fingerprint(self.paths),
            "cert_not_after": tls.not_after(self.paths),
            "setup_required": not accounts.admin_exists(),
            "last_error": self.last_error,
        }

    def _error(self, message: str) -> None:
        if message != self.last_error:
            log.error(message)
            self.store.event("web.error", message, source="web", severity="error")
        self.last_error = message

    def run(self, stop: threading.Event) -> None:
        self.read_config()
        self.ensure_cert()
        self.ensure_setup_code()
        try:
            while not stop.is_set():
                now = time.time()
                try:
                    self.read_config()
                    self.reconcile(now)
                except Exception as e:  # the role must keep serving and reporting
                    log.exception("web role tick failed")
                    self._error(f"{e.__class__.__name__}: {e}")
                self.live.write("web", self.snapshot())
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
