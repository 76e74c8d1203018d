"""The agent role: health, LEDs, identify, the button, heartbeat, syslog and webhooks.

`main(paths, stop)` runs an `Agent`. Its main thread computes health every
`LOOP_S` from the live documents of the roles, drives the LEDs (waking for
each LED step), handles the button and publishes `<run_dir>/agent.json`
every second. Everything that talks to the network (fleet, syslog, webhooks)
runs on one worker thread, so a slow SIEM never freezes an LED. The control
socket `<run_dir>/agent.sock` answers `identify(seconds, actor)` and
`factory_reset(actor, proof)`; `proof` is the content of
`<run_dir>/agent.reset-key` (0600), so only root (the CLI) or the button can
reset the unit, not a role that may merely talk to the socket.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import secrets
import shutil
import socket
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from appliance import certs
from appliance.agent import button as btn
from appliance.agent import leds as leds_mod
from appliance.agent import outbox
from appliance.agent.health import Health, HealthInputs, from_live, health
from appliance.agent.heartbeat import (
    FleetSender,
    HeartbeatInputs,
    build,
    read_serial,
    unit_id,
)
from appliance.agent.syslog import Forwarder
from appliance.agent.webhook import WebhookSender
from appliance.config.model import Config
from appliance.errors import ApplianceError, Conflict, Invalid, PermissionDenied
from appliance.paths import Paths
from appliance.rolekit import Desired
from appliance.roles import ROLE_NAMES, Change
from appliance.secretfile import UnsafeSecretPath
from appliance.state import revisions as revs
from appliance.state.control import ControlServer, socket_path
from appliance.state.db import Store, borrowed_store, open_store
from appliance.state.live import LiveState

log = logging.getLogger("appliance.agent")

ROLE = "agent"
LOOP_S = 0.25
PUBLISH_S = 1.0
CONFIG_CHECK_S = 1.0
CERT_CHECK_S = 60.0
AUDIT_PROBE_S = 30.0  # a committed write to the config DB this often (about 4 KB of WAL)
AUDIT_RETRY_S = 5.0  # and this often while it fails, so changes come back soon
IO_LOOP_S = 0.5
IDENTIFY_DEFAULT_S = 15.0
IDENTIFY_MAX_S = 3600.0
RESET_KEY = "agent.reset-key"


# -- inputs of the health function ---------------------------------------------------


def uptime_s(path: Path = Path("/proc/uptime")) -> float | None:
    try:
        return float(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def cert_not_after(paths: Paths) -> float | None:
    """When the web role's HTTPS certificate expires, or None before it exists (or when it
    cannot be read: health then does not judge it)."""
    try:
        return certs.not_after(certs.read_cert(paths.web_cert))
    except (OSError, ValueError, UnsafeSecretPath) as e:
        log.debug("web certificate %s: %s", paths.web_cert, e)
        return None


def daemon_uptime(live: LiveState, now: float) -> float | None:
    """Seconds since the appliance started: the machine's uptime, or less when a supervisor
    started the roles later (a restarted daemon boots again: its roles have not reported
    yet, which is booting, not a fault)."""
    up = uptime_s()
    sup = live.read("supervisor")
    if sup and live.alive("supervisor", now):
        try:
            since = max(0.0, now - float(sup["started_at"]))
        except (KeyError, TypeError, ValueError):
            return up
        return since if up is None else min(up, since)
    return up


def expected_roles(live: LiveState, now: float) -> tuple[str, ...]:
    """The roles the supervisor runs, else those that have published a live document."""
    sup = live.read("supervisor")
    if sup and live.alive("supervisor", now) and isinstance(sup.get("roles"), list):
        return tuple(str(r) for r in sup["roles"])
    return tuple(r for r in ROLE_NAMES if live.read(r) is not None or r in ("net", ROLE))


def gather_inputs(
    paths: Paths,
    live: LiveState,
    now: float,
    *,
    expect_confirmed: bool,
    identify_until: float | None = None,
    cert: float | None = None,
    self_alive: bool = True,
    modbus_restricted: Sequence[str] = (),
    audit_failed: str | None = None,
) -> HealthInputs:
    roles = expected_roles(live, now)
    proxy = {"modbusproxy"} if modbus_restricted else set()
    docs = {r: live.read(r) for r in set(roles) | {"net", "field"} | proxy}
    alive = {r: live.alive(r, now) for r in docs}
    if self_alive:
        alive[ROLE] = True
    field = docs.get("field") if alive.get("field") else None
    counts = ((field or {}).get("alarms") or {}).get("counts") or {}
    alarms = {str(k): int(v) for k, v in counts.items() if isinstance(v, int | float)}
    comm_loss = [str(d) for d in (field or {}).get("comm_loss") or []]
    try:
        disk = shutil.disk_usage(paths.data_dir)
        free, total = disk.free, disk.total
    except OSError:
        free = total = None
    shown = {r: d for r, d in docs.items() if r in roles or r == "net" or r in proxy}
    if live.alive("supervisor", now):
        shown["supervisor"] = live.read("supervisor")  # which roles it had to restart
    return from_live(
        shown,
        now,
        expected_roles=roles,
        alive=alive,
        uptime_s=daemon_uptime(live, now),
        expect_confirmed=expect_confirmed,
        alarms=alarms,
        comm_loss=comm_loss,
        disk_free=free,
        disk_total=total,
        cert_not_after=cert,
        identify_until=identify_until,
        modbus_restricted=modbus_restricted,
        update_fallback=update_fallback(paths),
        audit_failed=audit_failed,
    )


def update_fallback(paths: Paths) -> str | None:
    """The message appliance.update.gate's report left when the unit fell back from an
    update (<data>/update/fallback.json; the gate removes it when a slot passes)."""
    try:
        doc = json.loads((paths.data_dir / "update" / "fallback.json").read_text())
    except (OSError, ValueError):
        return None
    msg = doc.get("message") if isinstance(doc, dict) else None
    return str(msg) if msg else None


def modbus_restricted(config: Config | None, now: float) -> tuple[str, ...]:
    """The conduits active now whose Modbus requests the modbusproxy role checks."""
    if config is None:
        return ()
    when = datetime.fromtimestamp(now, UTC)
    return tuple(c.name for c in config.conduits if c.modbus is not None and c.active(when))


def compute_health(paths: Paths, now: float | None = None) -> Health:
    """Health as the agent would compute it (for `status`/diagnostics without the agent)."""
    now = time.time() if now is None else now
    with borrowed_store(paths.data_dir) as store:
        expect = revs.confirmed(store) is not None
        desired = revs.desired(store)
        try:
            config = revs.config_of(desired) if desired is not None else None
        except ValueError:
            config = None
    live = LiveState(paths.run_dir)
    inputs = gather_inputs(
        paths,
        live,
        now,
        expect_confirmed=expect,
        cert=cert_not_after(paths),
        self_alive=False,
        modbus_restricted=modbus_restricted(config, now),
    )
    return health(inputs, now)


HEALTH_EVENT_SEVERITY = {
    "fault": "error",
    "degraded": "warning",
    "pending-confirm": "notice",
    "ok": "notice",
    "booting": "info",
}


# -- the agent -------------------------------------------------------------------------


class Agent:
    name = ROLE

    def __init__(
        self,
        paths: Paths,
        store: Store,
        live: LiveState,
        *,
        clock: Callable[[], float] = time.time,
        hostname: str | None = None,
    ) -> None:
        self.paths = paths
        self.store = store
        self.live = live
        self.clock = clock
        self.started_at = clock()
        self.config: Config | None = None
        self.desired = Desired(store)
        self.dirty = False  # publish at the next step, not at the next regular write
        self._config_gen = 0
        self.expect_confirmed = False
        self.identify_until: float | None = None
        self.health = Health("booting", ())
        self._reported_state: str | None = None
        self._cert: float | None = None
        self._next = {"config": 0.0, "publish": 0.0, "cert": 0.0, "audit": 0.0}
        # why the config DB (the audit log's) took no write at the last probe; None: it did
        self.audit_failed: str | None = None
        self.audit_checked_at: float | None = None
        self.leds: leds_mod.LedDriver | None = None
        self._leds_config: Any = None
        self._led_backend: Any = None
        self.led_error: str | None = None
        self.button: btn.GpioButton | None = None
        self.button_error: str | None = None
        self._lock = threading.Lock()
        self.unit = {
            "id": unit_id(paths.data_dir),
            "name": "appliance",
            "site": "",
            "serial": read_serial(),
        }
        self.forwarder = Forwarder(hostname)
        self.fleet: FleetSender | None = None
        self.webhooks = WebhookSender(self.unit, event=self._agent_event)
        self._io_gen = -1
        self._io_stop = threading.Event()
        self._io_thread: threading.Thread | None = None
        self._reset_request: str | None = None
        self._reset_done = threading.Event()
        self._reset_result: dict[str, Any] | None = None
        self.reset_key = self._make_reset_key()
        self.server = ControlServer(
            socket_path(paths.run_dir, ROLE),
            {"identify": self.identify, "factory_reset": self.factory_reset},
        )

    # -- helpers ---------------------------------------------------------------

    def _agent_event(self, kind: str, message: str, **kw: Any) -> None:
        try:
            self.store.event(kind, message, source=ROLE, **kw)
        except Exception as e:  # an event that cannot be written must not stop the agent
            log.warning("event %s not written: %s", kind, e)

    def _make_reset_key(self) -> str:
        """The proof `appliance factory-reset` (root) reads: 0600 in the run directory,
        which keeps its mode (others read the status files there)."""
        from appliance import secretfile

        self.live.ensure()
        key = secrets.token_urlsafe(32)
        secretfile.write(self.paths.run_dir, RESET_KEY, key.encode(), dir_mode=None)
        return key

    # -- control socket ----------------------------------------------------------

    def identify(self, seconds: float = IDENTIFY_DEFAULT_S, actor: str = "cli") -> dict[str, Any]:
        try:
            secs = float(seconds)
        except (TypeError, ValueError):
            raise Invalid(f"{seconds!r} is not a number", field="seconds") from None
        if not math.isfinite(secs) or not 0 < secs <= IDENTIFY_MAX_S:
            raise Invalid(f"must be between 0 and {IDENTIFY_MAX_S:g} seconds", field="seconds")
        now = self.clock()
        with self._lock:
            self.identify_until = now + secs
        self._agent_event(
            "unit.identify",
            f"identify for {secs:g} s, asked by {actor}",
            data={"actor": str(actor), "seconds": secs},
        )
        with contextlib.suppress(Exception):  # the audit line is a courtesy here
            self.store.audit(str(actor), "identify", target=f"{secs:g} s", source=ROLE)
        return {"until": now + secs}

    def factory_reset(self, actor: str, proof: str = "") -> dict[str, Any]:
        if not secrets.compare_digest(str(proof), self.reset_key):
            raise PermissionDenied(
                "a factory reset needs root (`appliance factory-reset --yes`) or the button"
            )
        return self._request_reset(str(actor), wait=30.0)

    def _request_reset(self, actor: str, wait: float) -> dict[str, Any]:
        with self._lock:
            if self._reset_request is not None:
                raise Conflict("a factory reset is already under way")
            self._reset_request = actor
        if not self._reset_done.wait(wait):
            raise ApplianceError("the factory reset did not finish in time: see the journal")
        return self._reset_result or {}

    # -- configuration -------------------------------------------------------------

    def _check_config(self, now: float) -> None:
        self.expect_confirmed = revs.confirmed(self.store) is not None
        change = self.desired.poll()
        if change is not None:
            self.apply(change)

    def apply(self, change: Change) -> None:
        """The desired revision changed: the unit's name and site, the LEDs and button."""
        if change.error is not None:  # a stored document that no longer validates: keep the last
            log.error("revision %s does not load: %s", change.revision_id, change.error)
            return
        config = change.config
        self.config = config
        unit = config.unit if config else None
        self.unit["name"] = unit.name if unit else "appliance"
        self.unit["site"] = unit.site if unit else ""
        leds_cfg = config.leds if config else None
        if leds_cfg != self._leds_config or self._leds_config is None:
            self._leds_config = leds_cfg  # only a change of the section touches the pins
            self._setup_leds(config)
            self._setup_button(config)
        with self._lock:
            self._config_gen += 1
        self.dirty = True
        log.info("configuration: revision %s", change.revision_id or "none")

    def _setup_leds(self, config: Config | None) -> None:
        if self._led_backend is not None and hasattr(self._led_backend, "close"):
            with contextlib.suppress(Exception):
                self._led_backend.close()
        self.leds = None
        self._led_backend = None
        self.led_error = None
        cfg = config.leds if config else None
        if cfg is None or cfg.backend == "none":
            return
        try:
            if cfg.backend == "gpio":
                backend: Any = leds_mod.GpioBackend(cfg.map, active_high=cfg.active_high)
            else:
                names = {k: str(v) for k, v in cfg.map.items()}
                backend = leds_mod.SysfsBackend(Path(cfg.sysfs_root), names)
        except Exception as e:  # no GPIO/sysfs here: health goes on without LEDs
            self.led_error = f"{e.__class__.__name__}: {e}"
            log.error("LEDs (%s) unavailable: %s", cfg.backend, self.led_error)
            return
        self._led_backend = backend
        self.leds = leds_mod.LedDriver(backend, leds=tuple(cfg.map))

    def _setup_button(self, config: Config | None) -> None:
        if self.button is not None:
            with contextlib.suppress(Exception):
                self.button.close()
        self.button = None
        self.button_error = None
        b = config.leds.button if config else None
        if b is None:
            return
        try:
            self.button = btn.GpioButton(
                b.pin, pull_up=b.pull_up, factory_reset=b.factory_reset, clock=self.clock
            )
        except Exception as e:  # no GPIO here: the rest works
            self.button_error = f"{e.__class__.__name__}: {e}"
            log.error("button unavailable: %s", self.button_error)

    # -- one step of the main loop ---------------------------------------------------------

    def step(self, now: float) -> None:
        if now >= self._next["config"]:
            self._next["config"] = now + CONFIG_CHECK_S
            self._check_config(now)
        if now >= self._next["cert"]:
            self._next["cert"] = now + CERT_CHECK_S
            self._cert = cert_not_after(self.paths)
        if now >= self._next["audit"]:
            self._probe_audit(now)
        self._button(now)
        with self._lock:
            ident = self.identify_until
        if ident is not None and now >= ident:
            with self._lock:
                self.identify_until = ident = None
        inputs = gather_inputs(
            self.paths,
            self.live,
            now,
            expect_confirmed=self.expect_confirmed,
            identify_until=ident,
            cert=self._cert,
            modbus_restricted=modbus_restricted(self.config, now),
            audit_failed=self.audit_failed,
        )
        self.health = health(inputs, now)
        self._health_event()
        self._show(now)
        if self.dirty or now >= self._next["publish"]:
            self.publish(now)

    def _probe_audit(self, now: float) -> None:
        """Whether the audit log can be written (IEC 62443-4-2 CR 2.10): a committed write
        to its database every AUDIT_PROBE_S (AUDIT_RETRY_S while it fails). A failure is
        a fault in health, an alert straight to the syslog receivers (the events table
        may be on the same full disk) and a critical log line; the web refuses changes
        meanwhile (it reads `audit` in this role's live document)."""
        reason = self.store.probe_audit(now)
        self.audit_checked_at = now
        self._next["audit"] = now + (AUDIT_RETRY_S if reason else AUDIT_PROBE_S)
        if reason == self.audit_failed:
            return
        before, self.audit_failed = self.audit_failed, reason
        self.dirty = True
        if reason is not None:
            text = f"the audit log cannot be written ({reason}): changes are refused"
            log.critical("%s", text)
            self.forwarder.alert(text, now, severity="alert", kind="audit.failed")
            self._agent_event("audit.failed", text, severity="critical")
        else:
            text = f"the audit log can be written again (it failed: {before})"
            log.warning("%s", text)
            self.forwarder.alert(text, now, severity="warning", kind="audit.recovered")
            self._agent_event("audit.recovered", text, severity="warning")

    def _health_event(self) -> None:
        state = self.health.state
        if state == "identify":
            return
        if state == self._reported_state:
            return
        before = self._reported_state
        self._reported_state = state
        problems = [r for r in self.health.reasons if r.severity != "info"]
        why = f" ({'; '.join(r.message for r in problems[:3])})" if problems else ""
        self._agent_event(
            "health.changed",
            f"health {before or 'unknown'} → {state}{why}",
            severity=HEALTH_EVENT_SEVERITY.get(state, "info"),
            data={"from": before, "to": state, "reasons": [r.code for r in self.health.reasons]},
        )

    def _button(self, now: float) -> None:
        if self.button is None:
            return
        for action in self.button.actions(now):
            if action == btn.IDENTIFY:
                self.identify(IDENTIFY_DEFAULT_S, actor="button")
            elif action == btn.WARNING:
                log.warning(
                    "button held: factory reset in %g s", btn.RESET_AFTER_S - btn.WARN_AFTER_S
                )
                self._agent_event(
                    "unit.reset_warning",
                    "button held: factory reset unless it is let go",
                    severity="warning",
                )
            elif action == btn.CANCEL:
                self._agent_event("unit.reset_cancelled", "button let go: no factory reset")
            elif action == btn.RESET:
                with self._lock:
                    if self._reset_request is None:
                        self._reset_request = "button"

    def _show(self, now: float) -> None:
        if self.leds is None:
            return
        with self._lock:
            resetting = self._reset_request is not None
        if resetting:
            self.leds.show(leds_mod.special(leds_mod.RESETTING), now)
        elif self.button is not None and self.button.warning:
            self.leds.show(leds_mod.special(leds_mod.RESET_WARNING), now)
        else:
            self.leds.show_health(self.health, now)
        try:
            self.leds.tick(now)
        except OSError as e:  # a sysfs write that fails: say so once
            if self.led_error is None:
                self.led_error = str(e)
                log.error("LED write failed: %s", e)

    def snapshot(self, now: float) -> dict[str, Any]:
        with self._lock:
            ident = self.identify_until
            fleet = self.fleet.status.live() if self.fleet else None
        return {
            "role": ROLE,
            "started_at": self.started_at,
            "unit": dict(self.unit),
            "health": self.health.as_dict(),
            "identify_until": ident,
            "fleet": fleet,
            "syslog": self.forwarder.live(),
            "audit": {
                "ok": self.audit_failed is None,
                "reason": self.audit_failed,
                "checked_at": self.audit_checked_at,
            },
            "webhooks": self.webhooks.live(),
            "leds": {
                "backend": self.config.leds.backend if self.config else "none",
                "values": self.leds.values(now) if self.leds else {},
                "error": self.led_error,
                "button_error": self.button_error,
            },
            "revision": self.desired.revision_id,
        }

    def publish(self, now: float) -> None:
        self.dirty = False
        self.live.write(ROLE, self.snapshot(now))
        self._next["publish"] = now + PUBLISH_S

    # -- network work (worker thread) -------------------------------------------------------

    def _io_reconfigure(self, now: float) -> None:
        with self._lock:
            gen = self._config_gen
            config = self.config
        if gen == self._io_gen:
            return
        self._io_gen = gen
        self.forwarder.configure(list(config.syslog) if config else [], now)
        self.webhooks.configure(list(config.webhooks) if config else [], self.unit, now)
        fleet_cfg = config.fleet if config else None
        with self._lock:
            current = self.fleet
        if fleet_cfg is None:
            new = None
        elif current is not None and current.fleet == fleet_cfg:
            new = current
        else:
            new = FleetSender(
                fleet_cfg,
                event=self._agent_event,
                on_identify=lambda: self.identify(IDENTIFY_DEFAULT_S, actor="fleet"),
            )
        with self._lock:
            self.fleet = new

    def _heartbeat_doc(self, now: float, **parts: Any) -> dict[str, Any]:
        with self._lock:
            config = self.config
        return build(
            HeartbeatInputs(
                heartbeat_id=parts["heartbeat_id"],
                unit=dict(self.unit),
                seq=parts["seq"],
                sent_at=now,
                uptime_s=uptime_s(),
                health=self.health.as_dict(),
                net=self.live.read("net"),
                field=self.live.read("field"),
                conduit_count=len(config.conduits) if config else 0,
                events=parts["events"],
                events_cursor=parts["events_cursor"],
                outbox_queued=parts["queued"],
                outbox_dropped=parts["dropped"],
                audit_head=self.store.audit_head(),
            )
        )

    def io_step(self, now: float, stopping: Callable[[], bool] = lambda: False) -> None:
        self._io_reconfigure(now)
        with self._lock:
            fleet = self.fleet
        if fleet is not None:
            if fleet.due(now):
                fleet.enqueue(now, lambda **kw: self._heartbeat_doc(now, **kw))
            fleet.deliver(now, stopping)
        self.forwarder.forward(now, stopping)
        self.webhooks.deliver(now, stopping)

    def _io_loop(self) -> None:
        while not self._io_stop.is_set():
            try:
                self.io_step(self.clock(), self._io_stop.is_set)
            except Exception:  # a bug in one sender must not end fleet, syslog and webhooks
                log.exception("agent network step failed")
            self._io_stop.wait(IO_LOOP_S)

    def start_io(self) -> None:
        self._io_thread = threading.Thread(target=self._io_loop, name="agent-io", daemon=True)
        self._io_thread.start()

    def stop_io(self, timeout: float = 2.0) -> None:
        self._io_stop.set()
        if self._io_thread is not None:
            self._io_thread.join(timeout)
        self.forwarder.close()

    # -- factory reset ------------------------------------------------------------------

    def _do_reset(self, actor: str) -> None:
        from appliance.agent.reset import factory_reset

        now = self.clock()
        if self.leds is not None:
            self.leds.show(leds_mod.special(leds_mod.RESETTING), now)
            with contextlib.suppress(OSError):
                self.leds.tick(now)
        self.stop_io()

        def flush() -> None:  # the SIEM hears about the reset before the history is gone
            self.forwarder.configure(list(self.config.syslog) if self.config else [], now)
            self.forwarder.forward(now)
            self.forwarder.close()

        try:
            self._reset_result = factory_reset(
                self.paths, actor, store=self.store, before_wipe=flush, now=now
            )
        finally:
            self._reset_done.set()

    # -- the loop -------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        self.server.start()
        self.start_io()
        try:
            while not stop.is_set():
                now = self.clock()
                try:
                    self.step(now)
                except Exception:  # a bad document or a bug: keep the LEDs and socket alive
                    log.exception("agent step failed")
                    self._next["publish"] = 0.0
                with self._lock:
                    reset_by = self._reset_request
                if reset_by is not None:
                    self._do_reset(reset_by)
                    # the process exits with EXIT_RESET and is started again, as every
                    # other role is (the reset generation: see reset.py)
                    return
                wake = now + LOOP_S
                if self.leds is not None:
                    wake = min(wake, self.leds.next_change(now))
                stop.wait(max(0.01, wake - self.clock()))
        finally:
            self.stop_io()
            self.server.stop()
            if self.button is not None:
                with contextlib.suppress(Exception):
                    self.button.close()
            if self._led_backend is not None and hasattr(self._led_backend, "close"):
                with contextlib.suppress(Exception):
                    self._led_backend.close()
            with contextlib.suppress(FileNotFoundError):
                (self.paths.run_dir / RESET_KEY).unlink()


def main(paths: Paths, stop: threading.Event) -> None:
    """Run the agent role until `stop` is set (or a factory reset)."""
    store, _ = open_store(paths.data_dir, outbox.MODELS)
    live = LiveState(paths.run_dir)
    agent = Agent(paths, store, live, hostname=socket.gethostname())
    agent.run(stop)
