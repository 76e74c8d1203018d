"""Build, inspect and tear down the lab: IT host, appliance and OT network in netns."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

import appliance
from appliance import proc
from appliance.errors import LabError
from appliance.proc import run

T = TypeVar("T")

NETNS_DIR = Path("/run/netns")
READY_TIMEOUT = 20.0
MODBUS_PORT = 502
OTHER_PORT = 8080

# The appliance's NICs, which its net role matches by MAC, and the lab hosts' ends.
IT_MAC = "02:a0:00:00:01:01"
OT_MAC = "02:a0:00:00:02:01"
MGMT_MAC = "02:a0:00:00:99:01"
IT_HOST_MAC = "02:a0:00:00:01:02"
OT_HOST_MAC = "02:a0:00:00:02:02"
MGMT_ROOT_MAC = "02:a0:00:00:99:02"

IT_HOST = "10.10.0.2"
# The bridge lab (`LabSpec(bridge=True)`): the IT host in the PLCs' subnet, the appliance a
# transparent bridge between them (no address on it0/ot0, management on mgmt0 as ever).
BRIDGE_IT_HOST = "192.168.50.2"
MGMT_ROOT_ADDRESS = "10.99.0.1"
# The extras' fixed addresses on the OT side; PLC hosts (.10 upwards) skip them.
SLOW_PLC_ADDRESS = "192.168.50.19"
OPCUA_ADDRESS = "192.168.50.20"
OPCUA_PORT = 4840
RESERVED_OT = frozenset({SLOW_PLC_ADDRESS, OPCUA_ADDRESS})
FLEET_PORT = 8443
SYSLOG_PORT = 514
SYSLOG_TLS_PORT = 6514
RTU_UNITS = (1, 2)
RTU_BAUD = 19200
RTU_PARITY = "N"  # a pty may refuse even parity on reopen (see appliance.lab.rtu)
EXTRAS = ("slow_plc", "rtu", "opcua", "fleet", "syslog")
BRIDGE_LACKS = ("fleet", "syslog")  # the extras the bridge lab cannot have
EXTRA_TIMEOUT = 30.0  # an extra's readiness (asyncua and Flask take a while on a busy VM)
FLEET_UNIT = "demo-unit"
# What the lab expects the appliance to configure on its own links (the lab never does).
APPLIANCE_ADDRESSES = {"it0": "10.10.0.1/24", "ot0": "192.168.50.1/24", "mgmt0": "10.99.0.2/30"}

_PREFIX = re.compile(r"[a-z][a-z0-9]{0,7}\Z")
_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}\Z")
_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
_children: dict[int, subprocess.Popen[bytes]] = {}


@dataclass(frozen=True)
class LabSpec:
    """Which lab: its name prefix, how many PLCs, whether the host gets a management link,
    and which extras run (all off by default, so tests build a lean lab; `full()` has all):
    `slow_plc` a PLC at 192.168.50.19 that answers after 0.8 s, `rtu` a Modbus RTU line
    (socat pty pair, simulator on one end), `opcua` an OPC UA server at 192.168.50.20:4840,
    `fleet` a fleet receiver at https://10.10.0.2:8443 with a lab CA, `syslog` a syslog
    sink on 10.10.0.2 (udp/tcp 514, tls 6514 with the lab CA) writing root/logs/syslog.log.
    `bridge`: the second topology, for the appliance's bridge mode: the IT host is
    192.168.50.2/24, in the PLCs' subnet, and no lab host has a route via the appliance
    (it has no address there). The fleet and syslog extras need the routed lab (the unit
    reaches them from its IT address, which a bridge does not have).
    """

    prefix: str = "lab"
    plcs: int = 1
    mgmt: bool = True
    root: Path = Path(".lab")  # logs in root/logs/NAME.log, pids in root/pids/NAME.pid
    slow_plc: bool = False
    rtu: bool = False
    opcua: bool = False
    fleet: bool = False
    syslog: bool = False
    bridge: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.prefix, str) or not _PREFIX.match(self.prefix):
            raise LabError(f"lab prefix {self.prefix!r}: 1-8 lower-case letters or digits")
        if isinstance(self.plcs, bool) or not isinstance(self.plcs, int):
            raise LabError(f"lab plcs {self.plcs!r}: not a whole number")
        if not 1 <= self.plcs <= 100:
            raise LabError(f"lab plcs {self.plcs}: between 1 and 100")
        for name in ("mgmt", "bridge", *EXTRAS):
            if not isinstance(getattr(self, name), bool):
                raise LabError(f"lab {name} {getattr(self, name)!r}: true or false")
        if self.bridge and (self.fleet or self.syslog):
            raise LabError(
                "the bridge lab has no fleet or syslog extra: the unit reaches them from its "
                "IT address, and a bridge has none"
            )
        object.__setattr__(self, "root", Path(self.root))

    @classmethod
    def full(cls, **kwargs: Any) -> LabSpec:
        """Every extra on (what `appliance lab up` and the demo build; the bridge lab's
        every extra it can have); kwargs override."""
        extras = [e for e in EXTRAS if not (kwargs.get("bridge") and e in BRIDGE_LACKS)]
        return cls(**{**dict.fromkeys(extras, True), **kwargs})

    @property
    def it_host(self) -> str:
        """The IT host's address: 10.10.0.2, or 192.168.50.2 in the bridge lab."""
        return BRIDGE_IT_HOST if self.bridge else IT_HOST

    @property
    def extras(self) -> list[str]:
        return [name for name in EXTRAS if getattr(self, name)]

    @property
    def ns_it(self) -> str:
        return f"{self.prefix}-it"

    @property
    def ns_app(self) -> str:
        return f"{self.prefix}-app"

    @property
    def ns_ot(self) -> str:
        return f"{self.prefix}-ot"

    @property
    def namespaces(self) -> tuple[str, str, str]:
        return (self.ns_it, self.ns_app, self.ns_ot)

    @property
    def plc_addresses(self) -> list[str]:
        """192.168.50.10 upwards, skipping the extras' addresses (.19, .20)."""
        hosts = (f"192.168.50.{n}" for n in range(10, 255))
        return [a for a in hosts if a not in RESERVED_OT][: self.plcs]

    @property
    def ot_addresses(self) -> list[str]:
        """Every address the OT network's hosts hold: PLCs, then the extras'."""
        extra = [SLOW_PLC_ADDRESS] if self.slow_plc else []
        return self.plc_addresses + extra + ([OPCUA_ADDRESS] if self.opcua else [])

    @property
    def rtu_app(self) -> Path:
        """The serial port the appliance opens (the pty end socat links here)."""
        return self.root.absolute() / "tty-rtu-app"

    @property
    def rtu_dev(self) -> Path:
        """The serial port the RTU simulator holds."""
        return self.root.absolute() / "tty-rtu-dev"

    @property
    def fleet_dir(self) -> Path:
        return self.root.absolute() / "fleet"

    @property
    def fleet_url(self) -> str:
        return f"https://{IT_HOST}:{FLEET_PORT}"

    @property
    def syslog_log(self) -> Path:
        return self.logs.absolute() / "syslog.log"

    @property
    def facts_file(self) -> Path:
        """What `up` built and generated (lab.json), for `status`, the demo and tests."""
        return self.root / "lab.json"

    @property
    def mgmt_root_link(self) -> str:
        return f"{self.prefix}-mgmt"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def pids(self) -> Path:
        return self.root / "pids"


# -- the lab as a whole ---------------------------------------------------------------------


def up(spec: LabSpec, progress: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Build the lab from scratch (removing leftovers first); return when every simulator
    answers, with the facts of what runs (also written to root/lab.json)."""
    _require_root()
    if exists(spec) or any(spec.pids.glob("*.pid")) or spec.facts_file.exists():
        progress(f"removing leftovers of lab {spec.prefix!r}")
        down(spec)
    if spec.mgmt:
        _check_mgmt_free(spec)
    try:
        progress(f"creating namespaces {', '.join(spec.namespaces)} and their links")
        _create(spec)
        slow = " and the slow PLC" if spec.slow_plc else ""
        plural = "s" if spec.plcs > 1 else ""
        progress(f"starting the PLC simulator ({spec.plcs} PLC{plural}{slow})")
        spawn(spec, spec.ns_ot, "plc", _plc_argv(spec))
        facts = _start_extras(spec, progress)
        progress("waiting for the PLCs to listen")
        _wait_plcs(spec)
        _wait_extras(spec, facts, progress)
        _write_facts(spec, facts)
    except BaseException:
        down(spec)
        raise
    progress(f"lab {spec.prefix!r} is up")
    return facts


def down(spec: LabSpec) -> None:
    """Stop every lab process, delete the namespaces, the host's management link, the
    RTU line's pty links and the generated fleet keys."""
    _require_root()
    for pidfile in sorted(spec.pids.glob("*.pid")):
        stop(spec, pidfile.stem)
    present = [ns for ns in spec.namespaces if _ns_exists(ns)]
    _terminate([(pid, None) for ns in present for pid in _ns_pids(ns)], "lab process")
    if _root_link_exists(spec.mgmt_root_link):
        run(["ip", "link", "del", spec.mgmt_root_link], error=LabError)
    for ns in present:
        run(["ip", "netns", "del", ns], error=LabError)
    for link in (spec.rtu_app, spec.rtu_dev):
        if link.is_symlink():  # socat removes them on SIGTERM, not when it was killed
            link.unlink()
    if spec.fleet_dir.is_dir():
        shutil.rmtree(spec.fleet_dir)
    spec.facts_file.unlink(missing_ok=True)


def exists(spec: LabSpec) -> bool:
    """Whether any part of the lab (a namespace or the management link) is present."""
    return any(_ns_exists(ns) for ns in spec.namespaces) or _root_link_exists(spec.mgmt_root_link)


def status(spec: LabSpec) -> dict[str, Any]:
    """Namespaces present, processes (by pidfile) alive, links with MAC, state and addresses."""
    namespaces = {ns: _ns_exists(ns) for ns in spec.namespaces}
    links = {ns: _links(["-n", ns]) for ns, present in namespaces.items() if present}
    if _root_link_exists(spec.mgmt_root_link):
        links["root"] = _links(["dev", spec.mgmt_root_link])
    processes = {}
    for pidfile in sorted(spec.pids.glob("*.pid")):
        ident = _read_pidfile(pidfile)
        processes[pidfile.stem] = {
            "pid": ident[0] if ident else None,
            "alive": bool(ident) and _running(*ident),
        }
    return {
        "prefix": spec.prefix,
        "exists": any(namespaces.values()) or "root" in links,
        "namespaces": namespaces,
        "processes": processes,
        "links": links,
        "extras": read_facts(spec).get("extras", {}),
    }


def read_facts(spec: LabSpec) -> dict[str, Any]:
    """lab.json as `up` wrote it ({} when the lab is not up or predates it)."""
    try:
        data = json.loads(spec.facts_file.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


# -- running things in the lab --------------------------------------------------------------


def ns_run(
    ns: str,
    argv: list[str],
    *,
    check: bool = True,
    timeout: float = 30,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run argv inside namespace ns (`ip netns exec`), capturing text output."""
    if not _ns_exists(ns):
        raise LabError(f"network namespace {ns} does not exist (is the lab up?)")
    return run(
        ["ip", "netns", "exec", ns, *argv],
        check=check,
        timeout=timeout,
        input=input,
        env={"PYTHONPATH": _pythonpath()},
        error=LabError,
    )


def spawn(
    spec: LabSpec, ns: str | None, name: str, argv: list[str], env: dict[str, str] | None = None
) -> int:
    """Start argv in the background (in ns, or the host's namespace for None); return its pid."""
    _check_name(name)
    if alive(spec, name):
        raise LabError(f"{name} is already running (pidfile {_pidfile(spec, name)})")
    if ns is not None and not _ns_exists(ns):
        raise LabError(f"network namespace {ns} does not exist (is the lab up?)")
    spec.logs.mkdir(parents=True, exist_ok=True)
    spec.pids.mkdir(parents=True, exist_ok=True)
    full = ["ip", "netns", "exec", ns, *argv] if ns else list(argv)
    with _logfile(spec, name).open("ab") as log:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        log.write(f"--- {stamp} start in {ns or 'host'}: {' '.join(argv)}\n".encode())
        log.flush()
        try:
            child = proc.spawn(
                full,
                env={"PYTHONPATH": _pythonpath(), "PYTHONUNBUFFERED": "1", **(env or {})},
                error=LabError,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            raise LabError(f"cannot start {name} ({argv[0]}): {exc.strerror}")
    _children[child.pid] = child
    start = _stat(child.pid)
    _pidfile(spec, name).write_text(f"{child.pid} {start[1] if start else ''}\n")
    return child.pid


def stop(spec: LabSpec, name: str, timeout: float = 5) -> None:
    """Stop a spawned process (and its process group): SIGTERM, then SIGKILL; drop the pidfile."""
    _check_name(name)
    pidfile = _pidfile(spec, name)
    ident = _read_pidfile(pidfile)
    if ident and _running(*ident):
        _terminate([ident], name, timeout, group=True)
    pidfile.unlink(missing_ok=True)


def alive(spec: LabSpec, name: str) -> bool:
    """Whether the process in name's pidfile is still running (and is still that process)."""
    _check_name(name)
    ident = _read_pidfile(_pidfile(spec, name))
    return bool(ident) and _running(*ident)


def wait_tcp(ns: str | None, host: str, port: int, timeout: float = 10) -> None:
    """Return once host:port accepts a connection made from inside ns; LabError on timeout."""
    if not _connect_until(ns, host, port, time.monotonic() + timeout, lambda: None):
        where = f" in {ns}" if ns else ""
        raise LabError(f"{host}:{port}{where} accepts no connection after {timeout:g} s")


def log_tail(spec: LabSpec, name: str, lines: int = 20) -> str:
    """The last lines of name's log ('' when there is none)."""
    _check_name(name)
    try:
        with _logfile(spec, name).open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 65536))
            data = f.read()
    except FileNotFoundError:
        return ""
    return "\n".join(data.decode(errors="replace").splitlines()[-lines:])


# -- building -------------------------------------------------------------------------------


def _create(spec: LabSpec) -> None:
    """Namespaces and veths in one batch, then each namespace's own configuration."""
    app = spec.ns_app
    root = [f"netns add {ns}" for ns in spec.namespaces]
    root += [
        _veth("lan0", spec.ns_it, IT_HOST_MAC, "it0", app, IT_MAC),
        _veth("plcnet0", spec.ns_ot, OT_HOST_MAC, "ot0", app, OT_MAC),
    ]
    if spec.mgmt:
        link = spec.mgmt_root_link
        root += [
            _veth(link, None, MGMT_ROOT_MAC, "mgmt0", app, MGMT_MAC),
            f"addr add {MGMT_ROOT_ADDRESS}/30 dev {link}",
        ]
    _ip_batch(None, root)
    if spec.mgmt:
        _seal_mgmt(spec.mgmt_root_link)
        _ip_batch(None, [f"link set {spec.mgmt_root_link} up"])
    _no_dad(spec.ns_it, "lan0")
    _no_dad(spec.ns_ot, "plcnet0")
    if spec.bridge:  # one subnet across the appliance: no host routes through it
        _ip_batch(spec.ns_it, _host("lan0", [f"{BRIDGE_IT_HOST}/24"], None))
        _ip_batch(spec.ns_ot, _host("plcnet0", [f"{a}/24" for a in spec.ot_addresses], None))
    else:
        _ip_batch(spec.ns_it, _host("lan0", [f"{IT_HOST}/24"], "10.10.0.1"))
        _ip_batch(
            spec.ns_ot, _host("plcnet0", [f"{a}/24" for a in spec.ot_addresses], "192.168.50.1")
        )
    _ip_batch(app, ["link set lo up"])


def _seal_mgmt(link: str) -> None:
    """The host's end of the management link: no forwarding from it, no IPv6 on it.

    Both are settings of this one link only; the host never routes lab traffic onwards.
    """
    Path(f"/proc/sys/net/ipv4/conf/{link}/forwarding").write_text("0\n")
    with contextlib.suppress(FileNotFoundError):  # a host without IPv6
        Path(f"/proc/sys/net/ipv6/conf/{link}/disable_ipv6").write_text("1\n")


def _veth(name: str, ns: str | None, mac: str, peer: str, peer_ns: str, peer_mac: str) -> str:
    here = f" netns {ns}" if ns else ""
    return (
        f"link add {name}{here} address {mac} type veth"
        f" peer name {peer} netns {peer_ns} address {peer_mac}"
    )


def _host(link: str, addresses: list[str], gateway: str | None) -> list[str]:
    """A lab host: loopback, its addresses on one link, a default route via the appliance
    (none in the bridge lab: `gateway` None)."""
    lines = ["link set lo up"]
    lines += [f"addr add {a} dev {link}" for a in addresses]
    lines.append(f"link set {link} up")
    if gateway is not None:
        lines.append(f"route add default via {gateway} dev {link} onlink")
    return lines


def _no_dad(ns: str, link: str) -> None:
    """IPv6 stays on, but without duplicate address detection delays (lab hosts only)."""
    keys = [f"net.ipv6.conf.{name}.accept_dad=0" for name in ("all", "default", link)]
    ns_run(ns, ["sysctl", "-q", "-w", *keys])


def _ip_batch(ns: str | None, commands: list[str]) -> None:
    """Run ip commands in one process (in ns if given); fail with ip's own error lines."""
    netns = ["-n", ns] if ns else []
    cp = run(["ip", *netns, "-batch", "-"], input="\n".join(commands) + "\n", check=False)
    if cp.returncode != 0:
        errors = [line for line in cp.stderr.splitlines() if not line.startswith("Command failed")]
        raise LabError(f"ip{' -n ' + ns if ns else ''}: {'; '.join(errors) or cp.stderr.strip()}")


def _check_mgmt_free(spec: LabSpec) -> None:
    cp = run(["ip", "-j", "-4", "addr", "show", "to", f"{MGMT_ROOT_ADDRESS}/32"], error=LabError)
    holders = [i["ifname"] for i in json.loads(cp.stdout or "[]") if i.get("addr_info")]
    if holders:
        raise LabError(
            f"{MGMT_ROOT_ADDRESS} is already on the host's {holders[0]} (another lab?);"
            " take that lab down or start this one without mgmt"
        )


def _plc_argv(spec: LabSpec) -> list[str]:
    binds = [arg for addr in spec.plc_addresses for arg in ("--bind", addr)]
    slow = ["--slow", SLOW_PLC_ADDRESS] if spec.slow_plc else []
    return [sys.executable, "-m", "appliance.lab.plc", *binds, *slow]


def _wait_plcs(spec: LabSpec) -> None:
    """Every PLC's Modbus and other-service port accepts, or a LabError with the log tail."""
    deadline = time.monotonic() + READY_TIMEOUT

    def watch() -> None:
        if not alive(spec, "plc"):
            raise LabError(f"the PLC simulator exited: {_tail_line(spec, 'plc')}")

    addresses = spec.plc_addresses + ([SLOW_PLC_ADDRESS] if spec.slow_plc else [])
    for addr in addresses:
        for port in (MODBUS_PORT, OTHER_PORT):
            if not _connect_until(spec.ns_ot, addr, port, deadline, watch):
                raise LabError(
                    f"PLC {addr}:{port} not listening after {READY_TIMEOUT:g} s:"
                    f" {_tail_line(spec, 'plc')}"
                )


def _tail_line(spec: LabSpec, name: str) -> str:
    tail = log_tail(spec, name, 5).splitlines()
    return " | ".join(tail) + f" (log: {_logfile(spec, name)})"


# -- the extras: slow PLC, RTU line, OPC UA server, fleet receiver, syslog sink -------------


def _start_extras(spec: LabSpec, progress: Callable[[str], None]) -> dict[str, Any]:
    """Spawn the extras the spec asks for (without waiting); their facts, for lab.json."""
    from appliance.lab.plc import SLOW_DELAY

    extras: dict[str, Any] = {}
    if spec.slow_plc:
        extras["slow_plc"] = {"address": SLOW_PLC_ADDRESS, "port": MODBUS_PORT, "delay": SLOW_DELAY}
    if spec.rtu:
        progress("starting the RTU line (socat pty pair) and the Modbus RTU simulator")
        extras["rtu"] = _start_rtu(spec)
    if spec.opcua:
        progress(f"starting the OPC UA simulator on {OPCUA_ADDRESS}:{OPCUA_PORT}")
        argv = [sys.executable, "-m", "appliance.lab.opcua_sim"]
        argv += ["--listen", OPCUA_ADDRESS, "--port", str(OPCUA_PORT)]
        spawn(spec, spec.ns_ot, "opcua", argv)
        url = f"opc.tcp://{OPCUA_ADDRESS}:{OPCUA_PORT}/"
        extras["opcua"] = {"address": OPCUA_ADDRESS, "port": OPCUA_PORT, "url": url}
    tls = None
    if spec.fleet or spec.syslog:
        from appliance.lab import pki

        shutil.rmtree(spec.fleet_dir, ignore_errors=True)
        tls = pki.make(spec.fleet_dir, IT_HOST, spec.prefix)
    if spec.fleet and tls is not None:
        fleet = _start_fleet(spec, tls, progress)
        if fleet:
            extras["fleet"] = fleet
    if spec.syslog and tls is not None:
        progress(f"starting the syslog sink on {IT_HOST} (udp/tcp {SYSLOG_PORT}, tls 6514)")
        argv = [sys.executable, "-m", "appliance.lab.sinks", "--listen", IT_HOST]
        argv += ["--udp-port", str(SYSLOG_PORT), "--tcp-port", str(SYSLOG_PORT)]
        argv += ["--tls-port", str(SYSLOG_TLS_PORT), "--cert", str(tls.server_cert)]
        argv += ["--key", str(tls.server_key), "--out", str(spec.syslog_log)]
        spawn(spec, spec.ns_it, "syslog-sink", argv)  # its own log: logs/syslog-sink.log
        extras["syslog"] = {
            "namespace": spec.ns_it,
            "host": IT_HOST,
            "udp": SYSLOG_PORT,
            "tcp": SYSLOG_PORT,
            "tls": SYSLOG_TLS_PORT,
            "ca_cert": str(tls.ca_cert),
            "log": str(spec.syslog_log),
        }
    return {
        "prefix": spec.prefix,
        "spec": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(spec).items()},
        "plc_addresses": spec.plc_addresses,
        "mode": "bridge" if spec.bridge else "routed",
        "it_host": spec.it_host,
        "extras": extras,
    }


def _start_rtu(spec: LabSpec) -> dict[str, Any]:
    """socat's pty pair (links tty-rtu-app, tty-rtu-dev), then the simulator on the dev end."""
    app, dev = spec.rtu_app, spec.rtu_dev
    for link in (app, dev):
        if link.is_symlink():
            link.unlink()
    spec.root.mkdir(parents=True, exist_ok=True)
    pty = "pty,raw,echo=0,link={}"
    spawn(spec, spec.ns_ot, "socat-rtu", ["socat", "-d", "-d", pty.format(app), pty.format(dev)])
    deadline = time.monotonic() + 10
    while not (app.exists() and dev.exists()):
        if not alive(spec, "socat-rtu"):
            raise LabError(f"socat (the RTU line) exited: {_tail_line(spec, 'socat-rtu')}")
        if time.monotonic() > deadline:
            raise LabError(f"socat made no pty links {app}, {dev} in 10 s")
        time.sleep(0.02)
    spawn(spec, spec.ns_ot, "rtu", _rtu_argv(spec))
    return {
        "port": str(app),
        "device_end": str(dev),
        "units": list(RTU_UNITS),
        "baud": RTU_BAUD,
        "parity": RTU_PARITY,
        "stop_bits": 1,
    }


def _rtu_argv(spec: LabSpec) -> list[str]:
    argv = [sys.executable, "-m", "appliance.lab.rtu", "--port", str(spec.rtu_dev)]
    argv += [arg for unit in RTU_UNITS for arg in ("--unit", str(unit))]
    return [*argv, "--baud", str(RTU_BAUD), "--parity", RTU_PARITY, "--stop-bits", "1"]


def _start_fleet(spec: LabSpec, tls: Any, progress: Callable[[str], None]) -> dict[str, Any] | None:
    """Register the demo unit's token with a fresh fleet database, then start the receiver."""
    from appliance.lab import fleetlab

    progress(f"starting the fleet receiver on {spec.fleet_url}")
    setup = fleetlab.prepare(spec.fleet_dir, unit=FLEET_UNIT, env={"PYTHONPATH": _pythonpath()})
    argv = fleetlab.serve_argv(
        setup, listen=f"{IT_HOST}:{FLEET_PORT}", cert=tls.server_cert, key=tls.server_key
    )
    spawn(spec, spec.ns_it, "fleet", argv)
    return {
        "namespace": spec.ns_it,
        "url": spec.fleet_url,
        "heartbeat_url": f"{spec.fleet_url}/api/v1/heartbeat",
        "ca_cert": str(tls.ca_cert),
        "unit": FLEET_UNIT,
        "token_file": str(setup.token_file),
        "password_file": str(setup.password_file),
        "db": setup.db_url,
    }


def _wait_extras(spec: LabSpec, facts: dict[str, Any], progress: Callable[[str], None]) -> None:
    """Each started extra answers, or a LabError naming it with its log's tail."""
    extras = facts["extras"]
    checks = [
        ("opcua", "opcua", spec.ns_ot, OPCUA_ADDRESS, OPCUA_PORT, "the OPC UA simulator"),
        ("fleet", "fleet", spec.ns_it, IT_HOST, FLEET_PORT, "the fleet receiver"),
        ("syslog", "syslog-sink", spec.ns_it, IT_HOST, SYSLOG_PORT, "the syslog sink"),
    ]
    for extra, name, ns, host, port, what in checks:
        if extra not in extras:
            continue
        progress(f"waiting for {what} ({host}:{port})")
        _wait_listening(spec, name, ns, host, port, what)
    if "rtu" in extras:
        progress("waiting for the RTU units to answer on the serial line")
        _wait_rtu(spec)


def _wait_listening(spec: LabSpec, name: str, ns: str, host: str, port: int, what: str) -> None:
    def watch() -> None:
        if not alive(spec, name):
            raise LabError(f"{what} exited: {_tail_line(spec, name)}")

    if not _connect_until(ns, host, port, time.monotonic() + EXTRA_TIMEOUT, watch):
        raise LabError(
            f"{what} is not listening on {host}:{port} after {EXTRA_TIMEOUT:g} s:"
            f" {_tail_line(spec, name)}"
        )


def _wait_rtu(spec: LabSpec) -> None:
    """A real Modbus RTU read of each unit's name over the appliance's end of the line."""
    from pymodbus.client import ModbusSerialClient
    from pymodbus.exceptions import ModbusException

    deadline = time.monotonic() + EXTRA_TIMEOUT
    pending = list(RTU_UNITS)
    last = "no answer"
    while pending:
        for name, what in (("socat-rtu", "socat (the RTU line)"), ("rtu", "the RTU simulator")):
            if not alive(spec, name):
                raise LabError(f"{what} exited: {_tail_line(spec, name)}")
        if time.monotonic() > deadline:
            raise LabError(
                f"RTU unit {pending[0]} does not answer on {spec.rtu_app} after"
                f" {EXTRA_TIMEOUT:g} s ({last}): {_tail_line(spec, 'rtu')}"
            )
        client = ModbusSerialClient(
            str(spec.rtu_app), baudrate=RTU_BAUD, parity=RTU_PARITY, timeout=0.5, retries=0
        )
        try:
            if client.connect():
                reply = client.read_holding_registers(20, count=8, device_id=pending[0])
                if reply.isError():
                    last = str(reply)
                else:
                    pending.pop(0)
                    continue
            else:
                last = "cannot open the port"
        except ModbusException as exc:  # no answer yet: the simulator is still starting
            last = str(exc)
        finally:
            client.close()
        time.sleep(0.2)


def _write_facts(spec: LabSpec, facts: dict[str, Any]) -> None:
    spec.root.mkdir(parents=True, exist_ok=True)
    tmp = spec.facts_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(facts, indent=2) + "\n")
    tmp.replace(spec.facts_file)


# -- namespaces, links, sockets ------------------------------------------------------------


def _require_root() -> None:
    if os.geteuid() != 0:
        raise LabError("the lab needs root (it creates network namespaces)")


def _ns_exists(ns: str) -> bool:
    return (NETNS_DIR / ns).exists()


def _root_link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def _ns_pids(ns: str) -> list[int]:
    cp = run(["ip", "netns", "pids", ns], check=False)
    return [int(word) for word in cp.stdout.split() if word.isdigit()]


def _links(selector: list[str]) -> list[dict[str, Any]]:
    """Links as {name, mac, state, up, addresses}, from `ip -j addr show`."""
    if selector[0] == "-n":
        cp = run(["ip", "-j", *selector, "addr", "show"], check=False)
    else:
        cp = run(["ip", "-j", "addr", "show", *selector], check=False)
    return [
        {
            "name": link["ifname"],
            "mac": link.get("address"),
            "state": link.get("operstate"),
            "up": "UP" in link.get("flags", []),
            "addresses": [f"{a['local']}/{a['prefixlen']}" for a in link.get("addr_info", [])],
        }
        for link in json.loads(cp.stdout or "[]")
    ]


def in_netns(ns: str | None, fn: Callable[[], T]) -> T:
    """Call fn in a short-lived thread that has joined ns (the process itself never moves)."""
    if ns is None:
        return fn()
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            with open(NETNS_DIR / ns, "rb") as f:
                if _libc.setns(f.fileno(), _CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns {ns}: {os.strerror(err)}")
            box["value"] = fn()
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=work, name=f"netns-{ns}", daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def _can_connect(host: str, port: int, timeout: float) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _connect_until(
    ns: str | None, host: str, port: int, deadline: float, watch: Callable[[], None]
) -> bool:
    """Try to connect from ns until deadline; watch() may raise to give up early."""
    while True:
        if ns is not None and not _ns_exists(ns):
            raise LabError(f"network namespace {ns} does not exist (is the lab up?)")
        remaining = deadline - time.monotonic()
        attempt = min(1.0, max(0.1, remaining))
        if in_netns(ns, functools.partial(_can_connect, host, port, attempt)):
            return True
        watch()
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


# -- processes ------------------------------------------------------------------------------


def _check_name(name: str) -> None:
    if not _NAME.match(name):
        raise LabError(f"process name {name!r}: lower-case letters, digits, '_', '.', '-'")


def _pidfile(spec: LabSpec, name: str) -> Path:
    return spec.pids / f"{name}.pid"


def _logfile(spec: LabSpec, name: str) -> Path:
    return spec.logs / f"{name}.log"


def _pythonpath() -> str:
    """The directory holding the appliance package, so `python -m appliance...` works anywhere."""
    here = str(Path(appliance.__file__).resolve().parent.parent)
    rest = os.environ.get("PYTHONPATH")
    return f"{here}:{rest}" if rest else here


def _read_pidfile(path: Path) -> tuple[int, int | None] | None:
    """(pid, start time in clock ticks) from a pidfile, None when missing or unreadable."""
    try:
        words = path.read_text().split()
        return int(words[0]), int(words[1]) if len(words) > 1 else None
    except (OSError, ValueError, IndexError):
        return None


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, start time) of pid from /proc, None when it does not exist."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0], int(fields[19])


def _running(pid: int, start: int | None) -> bool:
    """pid runs (not a zombie) and, when start is known, is the process that was recorded."""
    child = _children.get(pid)
    if child is not None and child.poll() is not None:
        del _children[pid]
        return False
    stat = _stat(pid)
    return stat is not None and stat[0] != "Z" and (start is None or stat[1] == start)


def _signal(pid: int, sig: int, group: bool) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if group and os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)


def _terminate(
    procs: list[tuple[int, int | None]], what: str, timeout: float = 5, group: bool = False
) -> None:
    """SIGTERM, wait up to timeout, SIGKILL the rest; LabError if one still survives."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 2.0)):
        procs = [p for p in procs if _running(*p)]
        for pid, _start in procs:
            _signal(pid, sig, group)
        deadline = time.monotonic() + wait
        while procs and time.monotonic() < deadline:
            time.sleep(0.02)
            procs = [p for p in procs if _running(*p)]
        if not procs:
            return
    raise LabError(f"{what} (pid {procs[0][0]}) does not stop, even after SIGKILL")
