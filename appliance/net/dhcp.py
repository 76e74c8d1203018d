"""The DHCP client (IPv4) of the links whose document says `dhcp: true`, as the net role runs it.

The client is busybox's `udhcpc` (Debian's busybox), one per link, in the foreground. It
never touches the link: at each event it runs a script, `appliance.net.dhcp_script`, which
only writes the lease (address, prefix, router, DNS servers, lease time, server) as JSON to
`<run_dir>/dhcp/<link>.json`, atomically, or removes it when the client deconfigures. The
net role reads those files, applies the lease (the address with the lease's lifetime, the
default route, the DNS servers: the role owns addresses and routes) and takes it away when
the file goes or the lease runs out.

`DhcpClients` starts, restarts (when one dies, after a pause that grows) and stops the
clients; the lease's parsing is pure (`lease_from_env`, `parse_lease`).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appliance import proc
from appliance.errors import ApplianceError

log = logging.getLogger(__name__)

CLIENT = ("busybox", "udhcpc")
SCRIPT_NAME = "udhcpc-script"  # the wrapper the client runs (it runs dhcp_script)
STOP_GRACE_S = 3.0
RESTART_AFTER_S = (1.0, 2.0, 5.0, 10.0, 30.0)  # after the 1st, 2nd ... exit in a row
STEADY_S = 60.0  # a client that ran this long starts the pause count again
MAX_DNS = 3  # the resolver reads three (glibc MAXNS)


@dataclass(frozen=True)
class Lease:
    """One lease as the client reported it (`at`: when, on this unit's clock)."""

    link: str
    address: str  # with its prefix: 10.10.0.100/24
    router: str | None
    dns: tuple[str, ...]
    server: str | None
    lease_s: int
    at: float
    domain: str | None = None
    pid: int | None = None  # the client that wrote it

    @property
    def expires_at(self) -> float:
        return self.at + self.lease_s

    def remaining(self, now: float) -> int:
        return max(0, int(self.expires_at - now))

    def same(self, other: Lease) -> bool:
        """The same lease in what the unit uses of it (a renewal changes only `at`)."""
        return (self.address, self.router, self.dns, self.server) == (
            other.address,
            other.router,
            other.dns,
            other.server,
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "router": self.router,
            "dns": list(self.dns),
            "server": self.server,
            "domain": self.domain,
            "lease_s": self.lease_s,
            "obtained_at": self.at,
            "expires_at": self.expires_at,
        }


def _ipv4(text: str, what: str) -> str:
    try:
        return str(ipaddress.IPv4Address(text.strip()))
    except ValueError:
        raise ValueError(f"{what} {text!r} is not an IPv4 address") from None


def lease_from_env(env: Mapping[str, str], now: float, pid: int | None = None) -> dict[str, Any]:
    """The lease file's content from udhcpc's environment at `bound` or `renew` (pure):
    ip, mask (prefix length) or subnet (dotted), router, dns, domain, lease, serverid.
    ValueError naming what is wrong."""
    ip = _ipv4(env.get("ip", ""), "ip")
    if env.get("mask", "").strip().isdigit():
        prefix = int(env["mask"])
    elif env.get("subnet"):
        prefix = ipaddress.IPv4Network(f"0.0.0.0/{env['subnet'].strip()}").prefixlen
    else:
        raise ValueError("the lease has no subnet mask")
    address = str(ipaddress.IPv4Interface(f"{ip}/{prefix}"))
    routers = env.get("router", "").split()
    dns = [_ipv4(d, "dns") for d in env.get("dns", "").split()][:MAX_DNS]
    try:
        lease_s = int(env.get("lease", ""))
    except ValueError:
        raise ValueError(f"lease {env.get('lease')!r} is not a number of seconds") from None
    server = env.get("serverid", "").strip()
    return {
        "link": env.get("interface", ""),
        "address": address,
        "router": _ipv4(routers[0], "router") if routers else None,
        "dns": dns,
        "server": _ipv4(server, "serverid") if server else None,
        "domain": env.get("domain", "").split()[0] if env.get("domain", "").split() else None,
        "lease_s": lease_s,
        "at": now,
        "pid": pid,
    }


def parse_lease(link: str, text: str) -> Lease:
    """A lease file's content (pure); ValueError when it is not one."""
    try:
        data = json.loads(text)
        address = str(ipaddress.IPv4Interface(data["address"]))
        router = data.get("router")
        server = data.get("server")
        return Lease(
            link=link,
            address=address,
            router=_ipv4(router, "router") if router else None,
            dns=tuple(_ipv4(d, "dns") for d in data.get("dns") or [])[:MAX_DNS],
            server=_ipv4(server, "server") if server else None,
            lease_s=int(data["lease_s"]),
            at=float(data["at"]),
            domain=str(data["domain"]) if data.get("domain") else None,
            pid=int(data["pid"]) if data.get("pid") is not None else None,
        )
    except (KeyError, TypeError, AttributeError, ValueError) as e:
        raise ValueError(f"not a lease ({type(e).__name__}: {e})") from None


def lease_path(directory: Path, link: str) -> Path:
    return directory / f"{link}.json"


def script_text(python: str = sys.executable) -> str:
    """The program udhcpc runs at each event (`-s`): our script, with this Python."""
    return (
        "#!/bin/sh\n"
        "# written by the appliance's net role: hands udhcpc's events to the lease writer\n"
        f'exec {shlex.quote(python)} -m appliance.net.dhcp_script "$@"\n'
    )


@dataclass
class _Client:
    link: str
    child: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    exits: int = 0  # in a row (a client that ran STEADY_S starts again from 0)
    restart_at: float = 0.0
    last_exit: int | None = None


@dataclass
class ClientChange:
    """Something the supervisor did: an event for the net role."""

    link: str
    message: str
    severity: str = "info"
    data: dict[str, Any] = field(default_factory=dict)


class DhcpClients:
    """One udhcpc per DHCP link: started, restarted when it dies, stopped when dropped."""

    def __init__(
        self,
        run_dir: Path,
        client: tuple[str, ...] = CLIENT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.dir = run_dir / "dhcp"
        self.client = client
        self.clock = clock
        self._clients: dict[str, _Client] = {}

    @property
    def script(self) -> Path:
        return self.dir / SCRIPT_NAME

    def _write_script(self) -> None:
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        text = script_text()
        try:
            if self.script.read_text() == text:
                return
        except FileNotFoundError:
            pass
        tmp = self.dir / f".{SCRIPT_NAME}.tmp"
        tmp.write_text(text)
        os.chmod(tmp, 0o700)
        os.replace(tmp, self.script)

    def pid(self, link: str) -> int | None:
        c = self._clients.get(link)
        return c.child.pid if c and c.child and c.child.poll() is None else None

    def sync(self, links: Iterable[str], ready: Iterable[str] | None = None) -> list[ClientChange]:
        """Make the running clients the `links` given (those with dhcp): a client of a link
        no longer given is released and stopped; one is started only on a link in `ready`
        (present in the kernel; all when None)."""
        want = list(dict.fromkeys(links))
        ready = set(want if ready is None else ready)
        now = self.clock()
        changes: list[ClientChange] = []
        for link in [name for name in self._clients if name not in want]:
            self._drop(link)
            changes.append(ClientChange(link, f"{link}: DHCP client stopped, lease released"))
        for link in want:
            c = self._clients.setdefault(link, _Client(link))
            if c.child is not None and c.child.poll() is not None:
                status = c.child.returncode
                ran = now - c.started_at
                c.exits = 1 if ran >= STEADY_S else c.exits + 1
                c.restart_at = now + RESTART_AFTER_S[min(c.exits, len(RESTART_AFTER_S)) - 1]
                c.child, c.last_exit = None, status
                changes.append(
                    ClientChange(
                        link,
                        f"{link}: the DHCP client exited (status {status}) after {ran:.0f} s; "
                        f"starting it again in {c.restart_at - now:.0f} s",
                        severity="warning",
                        data={"status": status},
                    )
                )
            if c.child is None and now >= c.restart_at and link in ready:
                try:
                    self._start(c, now)
                except (ApplianceError, OSError) as e:
                    c.exits += 1
                    c.restart_at = now + RESTART_AFTER_S[min(c.exits, len(RESTART_AFTER_S)) - 1]
                    changes.append(
                        ClientChange(
                            link, f"{link}: the DHCP client cannot start: {e}", severity="error"
                        )
                    )
                    continue
                changes.append(
                    ClientChange(link, f"{link}: DHCP client started (pid {c.child.pid})")  # type: ignore[union-attr]
                )
        return changes

    def _pidfile(self, link: str) -> Path:
        return self.dir / f"{link}.pid"

    def _end_stale(self, link: str) -> None:
        """End a client an earlier net role left running on `link` (one killed with
        SIGKILL: its clients live on in their own sessions), so that one client asks for
        the link. It is ours when its command line names our script and the link."""
        try:
            pid = int(self._pidfile(link).read_text().split()[0])
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (FileNotFoundError, ProcessLookupError, ValueError, IndexError):
            return
        mine = str(self.script).encode() in argv and link.encode() in argv
        if not mine or pid == os.getpid():
            return
        log.warning("dhcp client for %s: ending pid %d, left by an earlier net role", link, pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        for _ in range(int(STOP_GRACE_S / 0.05)):
            if not Path(f"/proc/{pid}").exists():
                return
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    def _start(self, c: _Client, now: float) -> None:
        self._write_script()
        self._end_stale(c.link)
        argv = [*self.client, "-f", "-i", c.link, "-s", str(self.script)]
        argv += ["-t", "4", "-T", "2", "-A", "5"]  # 4 discovers 2 s apart, 5 s between rounds
        with contextlib.suppress(FileNotFoundError, ValueError):
            old = parse_lease(c.link, lease_path(self.dir, c.link).read_text())
            argv += ["-r", old.address.split("/")[0]]  # ask for the address held so far
        c.child = proc.spawn(
            argv,
            env={"APPLIANCE_DHCP_DIR": str(self.dir)},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        c.started_at = now
        self._pidfile(c.link).write_text(f"{c.child.pid}\n")
        log.info("dhcp client for %s started: pid %d", c.link, c.child.pid)

    def _drop(self, link: str) -> None:
        """Release the lease (SIGUSR2: udhcpc tells the server), stop the client, and
        remove the lease file (the net role then takes the address away)."""
        c = self._clients.pop(link)
        if c.child is not None and c.child.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                c.child.send_signal(signal.SIGUSR2)
            with contextlib.suppress(subprocess.TimeoutExpired):
                c.child.wait(0.5)
            proc.stop(c.child, STOP_GRACE_S)
        lease_path(self.dir, link).unlink(missing_ok=True)
        self._pidfile(link).unlink(missing_ok=True)

    def close(self) -> None:
        """Stop every client without releasing: the leases stay valid (and their addresses,
        with the kernel's lifetime) for the net role that starts next."""
        children = [c.child for c in self._clients.values() if c.child is not None]
        proc.stop_all(children, STOP_GRACE_S)
        self._clients.clear()

    def leases(self, links: Iterable[str]) -> tuple[dict[str, Lease], dict[str, str]]:
        """The lease files of `links`: the leases, and the files that are no lease (why)."""
        out: dict[str, Lease] = {}
        bad: dict[str, str] = {}
        for link in links:
            try:
                text = lease_path(self.dir, link).read_text()
            except FileNotFoundError:
                continue
            except OSError as e:
                bad[link] = str(e)
                continue
            try:
                out[link] = parse_lease(link, text)
            except ValueError as e:
                bad[link] = str(e)
        return out, bad
