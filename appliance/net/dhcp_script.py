"""What udhcpc runs at each DHCP event (`-s`, through the wrapper `appliance.net.dhcp` writes):
it only writes the lease for the net role, never touches the link.

    python -m appliance.net.dhcp_script EVENT     (udhcpc's environment: interface, ip ...)

`bound` and `renew` write `$APPLIANCE_DHCP_DIR/<interface>.json` atomically; `deconfig`
(the lease is gone: released, refused or run out) removes it, when this client wrote it: a
new client deconfigures at its start, while the lease an earlier one got is still valid
(the net role lets it run out at its expiry). `leasefail` and `nak` change nothing (a
`deconfig` follows a refusal). Exit status 0 always but for bad input (2), so that the
client goes on.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from appliance.net.dhcp import lease_from_env, lease_path, parse_lease
from appliance.net.netsvc import write_atomically


def handle(event: str, env: dict[str, str], directory: Path, client_pid: int, now: float) -> str:
    """Act on one event; a line saying what was done (for the client's log)."""
    link = env.get("interface", "")
    if not link or "/" in link or link.startswith("."):
        raise ValueError(f"interface {link!r} is not a link name")
    path = lease_path(directory, link)
    if event in ("bound", "renew"):
        data = lease_from_env(env, now, pid=client_pid)
        write_atomically(path, json.dumps(data, sort_keys=True) + "\n", mode=0o600)
        return f"{link}: {event} {data['address']} for {data['lease_s']} s"
    if event == "deconfig":
        try:
            held = parse_lease(link, path.read_text())
        except FileNotFoundError:
            return f"{link}: deconfig (no lease)"
        except ValueError:
            held = None
        if held is not None and held.pid != client_pid and held.expires_at > now:
            return f"{link}: deconfig of a new client; the lease of pid {held.pid} runs on"
        path.unlink(missing_ok=True)
        return f"{link}: deconfig, lease removed"
    return f"{link}: {event}"


def main(argv: list[str]) -> int:
    directory = os.environ.get("APPLIANCE_DHCP_DIR")
    if len(argv) != 2 or not directory:
        print("usage: APPLIANCE_DHCP_DIR=DIR dhcp_script EVENT", file=sys.stderr)
        return 2
    try:
        print(handle(argv[1], dict(os.environ), Path(directory), os.getppid(), time.time()))
    except ValueError as e:
        print(f"dhcp_script: {argv[1]}: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
