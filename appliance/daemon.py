"""`appliance run`: the roles in the foreground, stopped cleanly by SIGTERM/SIGINT."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from pathlib import Path

from appliance.errors import ApplianceError, PermissionDenied
from appliance.paths import Paths
from appliance.state.db import Store
from appliance.state.live import LiveState

ROLES = ("net",)
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
        from appliance.net.conntrack import Conntrack
        from appliance.net.links import Links
        from appliance.net.nft import Nft, NftMonitor
        from appliance.net.role import NetRole

        role = NetRole(store, live, Nft(), Links(), monitor=NftMonitor(), conntrack=Conntrack())
        log.info("net role starting (data %s, run %s)", paths.data_dir, paths.run_dir)
        store.event("role.started", f"net role started (pid {os.getpid()})", source="net")
        try:
            role.run(stop.is_set)
        except ApplianceError:
            raise
        finally:
            store.event("role.stopped", f"net role stopped (pid {os.getpid()})", source="net")
            log.info("net role stopped")
