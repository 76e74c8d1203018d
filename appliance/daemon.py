"""`appliance run`: the roles in the foreground, stopped cleanly by SIGTERM/SIGINT."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading

from appliance.errors import ApplianceError, PermissionDenied
from appliance.paths import Paths
from appliance.state.db import Store
from appliance.state.live import LiveState

ROLES = ("net",)
log = logging.getLogger("appliance")


def in_root_netns() -> bool:
    """True when this process shares PID 1's network namespace (the host's own)."""
    try:
        return os.stat("/proc/self/ns/net").st_ino == os.stat("/proc/1/ns/net").st_ino
    except OSError:
        return False


def guard_netns() -> None:
    """The net role takes over NICs and the ruleset: on a unit that is the point, on a
    developer's machine it would cut the machine off. A unit says so explicitly."""
    if in_root_netns() and os.environ.get("APPLIANCE_OWNS_HOST") != "1":
        raise PermissionDenied(
            "refusing to run the net role in the host's own network namespace; on a unit "
            "set APPLIANCE_OWNS_HOST=1 (the systemd unit does), for a try use `appliance lab up`"
        )
    if os.geteuid() != 0:
        raise PermissionDenied("the net role needs root (CAP_NET_ADMIN)")


def setup_logging(debug: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def run(paths: Paths, roles: list[str]) -> None:
    unknown = [r for r in roles if r not in ROLES]
    if unknown:
        raise ApplianceError(f"unknown role {unknown[0]!r} (roles: {', '.join(ROLES)})")
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("signal %s: stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    store = Store(paths.data_dir)
    live = LiveState(paths.run_dir)
    if "net" in roles:
        guard_netns()
        from appliance.net.links import Links
        from appliance.net.nft import Nft, NftMonitor
        from appliance.net.role import NetRole

        role = NetRole(store, live, Nft(), Links(), monitor=NftMonitor())
        log.info("net role starting (data %s, run %s)", paths.data_dir, paths.run_dir)
        store.event("role.started", f"net role started (pid {os.getpid()})", source="net")
        try:
            role.run(stop.is_set)
        except ApplianceError:
            raise
        finally:
            store.event("role.stopped", f"net role stopped (pid {os.getpid()})", source="net")
            log.info("net role stopped")
