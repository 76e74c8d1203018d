"""`appliance run`: the roles in the foreground, stopped cleanly by SIGTERM/SIGINT.

One role (`appliance run --roles net`, what each systemd unit runs) runs in this
process; several run as one child process each under a `Supervisor`. Either way a
role goes through `run_role`, which also watches the reset generation
(`appliance.agent.reset`): when a factory reset raises it, the role stops as on
SIGTERM and the process exits with `EXIT_RESET`, so that whatever runs it (systemd's
`Restart=always` / `RestartForceExitStatus=75`, or the supervisor) starts it again
on the fresh databases. Nothing has to know who runs the roles.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance import proc
from appliance import roles as registry
from appliance.errors import ApplianceError, PermissionDenied
from appliance.paths import Paths
from appliance.roles import ROLE_NAMES
from appliance.state.db import Store
from appliance.state.live import LiveState

# EX_TEMPFAIL: "stopped for a factory reset, start me again". The units list it in
# SuccessExitStatus= (not a failure) and RestartForceExitStatus= (restarted whatever
# Restart= says); the supervisor restarts such a role at once, without back-off.
EXIT_RESET = 75
RESET_WATCH_S = 0.5
log = logging.getLogger("appliance")


def named_netns(netns_dir: Path = Path("/run/netns")) -> str | None:
    """The `ip netns` name of this process's network namespace, None if it has none."""
    try:
        mine = os.stat("/proc/self/ns/net")
    except OSError:
        return None
    try:
        entries = list(netns_dir.iterdir())
    except OSError:
        return None
    for entry in entries:
        try:
            st = entry.stat()
        except OSError:
            continue
        if (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino):
            return entry.name
    return None


def guard_netns() -> None:
    """The net role takes over NICs and the ruleset: on a unit that is the point, on a
    developer's machine it would cut the machine off. So it runs only inside a named
    network namespace (the lab's) or where the unit says it owns the host."""
    if named_netns() is None and os.environ.get("APPLIANCE_OWNS_HOST") != "1":
        raise PermissionDenied(
            "refusing to run the net role in this machine's own network namespace; on a "
            "unit set APPLIANCE_OWNS_HOST=1 (the systemd unit does), to try it use "
            "`appliance lab up`"
        )
    if not has_net_admin():
        raise PermissionDenied("the net role needs CAP_NET_ADMIN (run it as root or by its unit)")


def has_net_admin(status: Path = Path("/proc/self/status")) -> bool:
    """Whether CAP_NET_ADMIN (bit 12) is in this process's effective capabilities."""
    try:
        for line in status.read_text().splitlines():
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) & (1 << 12))
    except (OSError, ValueError):
        pass
    return False


def setup_logging(debug: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # Libraries that narrate every packet at INFO: their warnings are enough in a journal.
    for noisy in ("asyncua", "pymodbus", "gunicorn.access"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if debug else logging.WARNING)
    # peewee logs every SQL statement with its parameters at DEBUG (the user name typed at
    # a failed login, which may be a password, would go to the journal and the diagnostics
    # bundle): INFO, even with --debug
    logging.getLogger("peewee").setLevel(logging.INFO)


def run(paths: Paths, roles: list[str]) -> None:
    """One role: run it in this process. Several: supervise one child process per role."""
    unknown = [r for r in roles if r not in ROLE_NAMES]
    if unknown:
        raise ApplianceError(f"unknown role {unknown[0]!r} (roles: {', '.join(ROLE_NAMES)})")
    if not roles:
        raise ApplianceError(f"no role given (roles: {', '.join(ROLE_NAMES)})")
    roles = list(dict.fromkeys(roles))
    if "net" in roles:
        guard_netns()  # refuse early, before any child starts
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("signal %s: stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if len(roles) == 1:
        if run_role(paths, roles[0], stop):
            log.warning("%s role: exiting to be started afresh after the factory reset", roles[0])
            raise SystemExit(EXIT_RESET)
    else:
        Supervisor(paths, roles).run(stop)


class ResetWatch:
    """Whether a factory reset happened since this process started: the reset generation
    in the data directory is no longer the one read at the start (read it before any
    database is opened, so a reset in between is not missed)."""

    def __init__(self, data_dir: Path, every: float = RESET_WATCH_S) -> None:
        from appliance.agent.reset import generation

        self._read = generation
        self.data_dir = Path(data_dir)
        self.every = every
        self.seen = self._read_or(None)
        self.now = self.seen
        self.tripped = False
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def _read_or(self, default: str | None) -> str | None:
        try:
            return self._read(self.data_dir)
        except OSError as e:  # unreadable for a moment: no reason to restart every role
            log.debug("reset generation unreadable: %s", e)
            return default

    def changed(self) -> bool:
        if not self.tripped:
            self.now = self._read_or(self.seen)
            self.tripped = self.now != self.seen
        return self.tripped

    def start(self, stop: threading.Event) -> None:
        """Set `stop` when the generation changes (checked every `every` seconds)."""

        def loop() -> None:
            while not self._done.wait(self.every):
                if self.changed():
                    log.warning(
                        "factory reset (reset generation %s -> %s): stopping to start afresh",
                        self.seen,
                        self.now,
                    )
                    stop.set()
                    return

        self._thread = threading.Thread(target=loop, name="reset-watch", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join(2)


def run_role(paths: Paths, role: str, stop: threading.Event) -> bool:
    """Run one role until `stop` (or until it returns); True if it stopped because of a
    factory reset, and so must be started again."""
    watch = ResetWatch(paths.data_dir)
    watch.start(stop)
    try:
        if role == "net":
            _run_net(paths, stop, watch)
        else:
            _run_module(paths, role, stop)
    except Exception as e:
        if not watch.changed():
            raise
        # the reset pulled the role's files from under it (e.g. a cache it closes on the
        # way out): it was stopping for the reset anyway, and starts again on what is there
        log.warning("%s role: %s: %s (stopping for the factory reset)", role, type(e).__name__, e)
    finally:
        watch.close()
    return watch.changed()


def _run_module(paths: Paths, role: str, stop: threading.Event) -> None:
    module = importlib.import_module(registry.get(role).module)
    log.info("%s role starting (data %s, run %s)", role, paths.data_dir, paths.run_dir)
    # The role opens its own Store: one connection of ours held open here would make its
    # writes wait on us (BEGIN IMMEDIATE), so ours is closed before and opened after.
    store = Store(paths.data_dir)
    store.event("role.started", f"{role} role started (pid {os.getpid()})", source=role)
    store.close()
    try:
        module.main(paths, stop)
    finally:
        try:
            after = Store(paths.data_dir)
            after.event("role.stopped", f"{role} role stopped (pid {os.getpid()})", source=role)
            after.close()
        except ApplianceError as e:  # e.g. the data directory was wiped by a factory reset
            log.warning("could not record the stop: %s", e)
        log.info("%s role stopped", role)


def _fail_closed() -> dict[str, Any]:
    from appliance.net.render import render_fail_closed

    return render_fail_closed().document()


def _run_net(paths: Paths, stop: threading.Event, watch: ResetWatch | None = None) -> None:
    store = Store(paths.data_dir)
    live = LiveState(paths.run_dir)
    from appliance.net.conntrack import Conntrack
    from appliance.net.links import Links
    from appliance.net.nft import Nft, NftMonitor
    from appliance.net.role import NetRole

    nft = Nft()
    from appliance.net.netsvc import NetServices

    role = NetRole(
        store,
        live,
        nft,
        Links(),
        monitor=NftMonitor(),
        conntrack=Conntrack(),
        services=NetServices(paths.run_dir),
    )
    log.info("net role starting (data %s, run %s)", paths.data_dir, paths.run_dir)
    store.event("role.started", f"net role started (pid {os.getpid()})", source="net")
    try:
        role.run(stop.is_set)  # starts fail-closed when there is no configuration
    finally:
        if watch is not None and watch.changed():
            # the conduits were wiped: the gate closes now, not only once started again
            try:
                nft.apply(_fail_closed())
                log.warning("factory reset: the fail-closed ruleset is loaded")
            except ApplianceError as e:
                log.error("factory reset: could not load the fail-closed ruleset: %s", e)
            store.close()
            store = Store(paths.data_dir)  # the fresh databases, for the event below
        store.event("role.stopped", f"net role stopped (pid {os.getpid()})", source="net")
        store.close()
        log.info("net role stopped")


def restart_delay(restarts_in_a_row: int) -> float:
    """Back-off before restarting a role that died: 1 s, 2 s, 4 s ... at most 30 s."""
    return float(min(30, 2 ** max(0, restarts_in_a_row - 1)))


@dataclass
class Child:
    role: str
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restarts: int = 0
    in_a_row: int = 0
    last_exit: int | None = None
    next_start: float = 0.0


class Supervisor:
    """One child process per role (privilege separation as on a unit, where systemd does
    this); a role that dies is restarted with back-off and the restart is an event."""

    STABLE_AFTER_S = 60.0  # a child that ran this long resets the back-off

    def __init__(self, paths: Paths, roles: list[str]) -> None:
        self.paths = paths
        self.roles = roles
        self.reset_watch = ResetWatch(paths.data_dir)
        self.store = Store(paths.data_dir)
        self.live = LiveState(paths.run_dir)
        self.children = {r: Child(r) for r in roles}
        self.started_at = time.time()

    def _spawn(self, child: Child, now: float) -> None:
        # a clean environment (proc.clean_env) and the paths
        env = {
            "APPLIANCE_DATA_DIR": str(self.paths.data_dir),
            "APPLIANCE_RUN_DIR": str(self.paths.run_dir),
        }
        cmd = [sys.executable, "-m", "appliance", "run", "--roles", child.role]
        child.proc = proc.spawn(cmd, env=env)
        child.started_at = now
        log.info("started %s role (pid %d)", child.role, child.proc.pid)

    def _publish(self) -> None:
        self.live.write(
            "supervisor",
            {
                "role": "supervisor",
                "roles": self.roles,
                "started_at": self.started_at,
                "children": {
                    c.role: {
                        "pid": c.proc.pid if c.proc and c.proc.poll() is None else None,
                        "restarts": c.restarts,
                        "last_exit": c.last_exit,
                        "started_at": c.started_at,
                    }
                    for c in self.children.values()
                },
            },
        )

    def _factory_reset_done(self, now: float) -> bool:
        """After a factory reset (the reset generation changed) every role starts afresh,
        so none keeps the wiped databases open. The roles see the change too and exit
        with EXIT_RESET; those still running are stopped here, and all started again."""
        if not self.reset_watch.changed():
            return False
        log.warning("factory reset: restarting every role")
        self.shutdown(grace=10.0, keep_doc=True)
        self.reset_watch = ResetWatch(self.paths.data_dir)
        self.store.close()
        self.store = Store(self.paths.data_dir)
        for child in self.children.values():
            child.proc = None
            child.in_a_row = 0
            child.next_start = now
        self.store.event(
            "role.restarted",
            "factory reset: every role restarted",
            source="supervisor",
            severity="warning",
            data={"roles": self.roles},
        )
        return True

    def step(self, now: float) -> None:
        self._factory_reset_done(now)
        for child in self.children.values():
            if child.proc is None:
                if now >= child.next_start:
                    self._spawn(child, now)
                continue
            code = child.proc.poll()
            if code is None:
                if now - child.started_at > self.STABLE_AFTER_S:
                    child.in_a_row = 0
                continue
            child.proc = None
            child.last_exit = code
            child.restarts += 1
            if code == EXIT_RESET:  # it saw a factory reset: again at once, no back-off
                child.next_start = now
                self.store.event(
                    "role.restarted",
                    f"{child.role} role stopped for a factory reset; restarting "
                    f"(restart {child.restarts})",
                    source="supervisor",
                    severity="warning",
                    data={"role": child.role, "exit": code, "restarts": child.restarts},
                )
                log.warning("%s role stopped for a factory reset; restarting", child.role)
                self._spawn(child, now)
                continue
            child.in_a_row += 1
            delay = restart_delay(child.in_a_row)
            child.next_start = now + delay
            how = f"signal {-code}" if code < 0 else f"exit status {code}"
            self.store.event(
                "role.restarted",
                f"{child.role} role died ({how}); restarting in {delay:g} s "
                f"(restart {child.restarts})",
                source="supervisor",
                severity="warning",
                data={"role": child.role, "exit": code, "restarts": child.restarts},
            )
            log.warning("%s role died (%s); restarting in %g s", child.role, how, delay)

    def run(self, stop: threading.Event) -> None:
        try:
            while not stop.is_set():
                now = time.time()
                self.step(now)
                self._publish()
                stop.wait(0.5)
        finally:
            self.shutdown()

    def shutdown(self, grace: float = 10.0, keep_doc: bool = False) -> None:
        proc.stop_all([c.proc for c in self.children.values() if c.proc], grace)
        if not keep_doc:
            with contextlib.suppress(FileNotFoundError):
                self.live.path("supervisor").unlink()
