"""The lab with the appliance running in it: `lab up|down|status` and `appliance demo`.

topology.py builds the namespaces and simulators; this module starts the
appliance's roles inside `lab-app` with their state under the lab directory,
commits a configuration and shows what crosses and what does not.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance.errors import ApplianceError, LabError
from appliance.lab import topology
from appliance.lab.topology import LabSpec
from appliance.paths import Paths

Echo = Callable[[str], None]
REPO = Path(__file__).resolve().parents[2]
DAEMON = "appliance"


def paths_for(lab_dir: Path) -> Paths:
    return Paths((lab_dir / "data").absolute(), (lab_dir / "run").absolute())


def find_config(name: str) -> Path:
    for candidate in (Path(name), REPO / name):
        if candidate.is_file():
            return candidate
    raise LabError(f"{name}: no such configuration file")


def start_appliance(spec: LabSpec, paths: Paths, timeout: float = 30.0) -> None:
    """Start `appliance run` inside the appliance namespace and wait for the net role."""
    from appliance.state.live import LiveState

    argv = [
        sys.executable,
        "-m",
        "appliance",
        "run",
        "--data-dir",
        str(paths.data_dir),
        "--run-dir",
        str(paths.run_dir),
    ]
    topology.spawn(spec, spec.ns_app, DAEMON, argv)
    live = LiveState(paths.run_dir)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if live.alive("net"):
            return
        if not topology.alive(spec, DAEMON):
            break
        time.sleep(0.1)
    raise LabError(
        "the appliance did not start: " + topology.log_tail(spec, DAEMON, 5).replace("\n", " | ")
    )


def commit_file(paths: Paths, config_file: Path, author: str = "lab", timeout: float = 20) -> int:
    """Import and commit a file, and wait until the net role runs it."""
    from appliance.state import revisions as revs
    from appliance.state.db import Store
    from appliance.state.live import LiveState

    store = Store(paths.data_dir)
    draft = revs.import_text(
        store,
        config_file.read_text(),
        author=author,
        comment=f"lab: {config_file.name}",
        source=str(config_file),
        now=time.time(),
    )
    revs.commit(store, author=author, now=time.time(), ref=draft.revision.id)
    live = LiveState(paths.run_dir)
    live.ring("net")
    try:
        return revs.wait_applied(live, draft.revision.id, timeout).id
    except ApplianceError as e:
        raise LabError(str(e)) from None


def up(
    lab_dir: Path,
    *,
    plcs: int = 1,
    config_file: str | None = "examples/demo.yaml",
    echo: Echo = print,
    prefix: str = "lab",
    mgmt: bool = True,
) -> LabSpec:
    spec = LabSpec(prefix=prefix, plcs=plcs, mgmt=mgmt, root=lab_dir.absolute())
    cfg = find_config(config_file) if config_file else None
    if topology.exists(spec):
        echo("lab: removing the previous lab")
    topology.down(spec)
    paths = paths_for(spec.root)
    for d in (paths.data_dir, paths.run_dir):
        shutil.rmtree(d, ignore_errors=True)
    topology.up(spec, progress=lambda s: echo(f"lab: {s}"))
    echo(f"lab: starting the appliance in {spec.ns_app} (state in {paths.data_dir})")
    start_appliance(spec, paths)
    if cfg is not None:
        rev = commit_file(paths, cfg)
        echo(f"lab: {cfg} committed as revision {rev} and running")
    return spec


def down(lab_dir: Path, *, echo: Echo = print, prefix: str = "lab") -> None:
    spec = LabSpec(prefix=prefix, root=lab_dir.absolute())
    had = topology.exists(spec)
    topology.down(spec)
    echo("lab: removed" if had else "lab: nothing to remove")


def status(lab_dir: Path, prefix: str = "lab") -> dict[str, Any]:
    spec = LabSpec(prefix=prefix, root=lab_dir.absolute())
    from appliance.state.live import LiveState

    data = topology.status(spec)
    data["appliance"] = {"net_alive": LiveState(paths_for(spec.root).run_dir).alive("net")}
    return data


def describe(data: dict[str, Any]) -> list[str]:
    """`lab status` for people: namespaces, processes, links with addresses."""
    if not data.get("exists"):
        return ["lab: not up (`appliance lab up` or `make demo`)"]
    lines = []
    for ns, present in data.get("namespaces", {}).items():
        lines.append(f"namespace {ns:<10} {'present' if present else 'MISSING'}")
    for name, proc in data.get("processes", {}).items():
        state = "running" if proc.get("alive") else "STOPPED"
        lines.append(f"process   {name:<10} {state} (pid {proc.get('pid')})")
    net = "running" if data.get("appliance", {}).get("net_alive") else "NOT RUNNING"
    lines.append(f"appliance net role: {net}")
    for ns, links in data.get("links", {}).items():
        for lk in links:
            addrs = " ".join(lk.get("addresses", []))
            lines.append(f"link      {ns:<10} {lk['name']:<10} {lk.get('state', ''):<8} {addrs}")
    return lines


# -- probes: what crosses and what does not ---------------------------------------------


@dataclass(frozen=True)
class Probe:
    label: str
    ns: str
    host: str
    port: int
    expect_open: bool


PROBE_SNIPPET = """
import socket, sys
family = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
s = socket.socket(family); s.settimeout(float(sys.argv[3]))
try:
    s.connect((sys.argv[1], int(sys.argv[2]))); print("open")
except socket.timeout:
    print("dropped")
except ConnectionRefusedError:
    print("refused")
except OSError as e:
    print("unreachable" if e.errno in (101, 113) else f"error {e.errno}")
"""


def probe_tcp(ns: str, host: str, port: int, timeout: float = 1.5) -> str:
    """Try a TCP connect from inside `ns`: open, dropped (silence), refused or unreachable."""
    cp = topology.ns_run(
        ns,
        [sys.executable, "-c", PROBE_SNIPPET, host, str(port), str(timeout)],
        timeout=timeout + 10,
    )
    return cp.stdout.strip()


def run_demo(lab_dir: Path, *, plcs: int = 3, echo: Echo = print) -> None:
    spec = up(lab_dir, plcs=plcs, echo=echo)
    paths = paths_for(spec.root)
    probes = [
        Probe("IT host → PLC 1 Modbus (the conduit)", spec.ns_it, spec.plc_addresses[0], 502, True),
        Probe(
            "IT host → PLC 1 tcp/8080 (no conduit)", spec.ns_it, spec.plc_addresses[0], 8080, False
        ),
    ]
    if len(spec.plc_addresses) > 1:
        probes.append(
            Probe(
                "IT host → PLC 2 Modbus (no conduit)", spec.ns_it, spec.plc_addresses[1], 502, False
            )
        )
    probes.append(Probe("PLC network → IT host ssh (OT→IT)", spec.ns_ot, "10.10.0.2", 22, False))
    echo("")
    echo("What crosses the demarcation point:")
    for p in probes:
        got = probe_tcp(p.ns, p.host, p.port)
        ok = (got == "open") == p.expect_open
        echo(f"  {'ok ' if ok else 'BAD'} {p.label:<42} {got}")
    time.sleep(1.2)  # one counter refresh, so `status` shows the probes
    venv_bin = Path(sys.executable).parent
    echo(
        f"""
The lab is up and the appliance runs in it. Next:
  export APPLIANCE_DATA_DIR={paths.data_dir} APPLIANCE_RUN_DIR={paths.run_dir}
  {venv_bin}/appliance status                  # revision, links, conduit counters, drops
  {venv_bin}/appliance events                  # what happened, newest first
  {venv_bin}/appliance config export > my.yaml # edit, then:
  {venv_bin}/appliance config import my.yaml -m "why" && \\
    {venv_bin}/appliance config commit --confirm-within 60   # then: appliance config confirm
  ip netns exec {spec.ns_it} bash              # a shell on the IT host (10.10.0.2)
  ip netns exec {spec.ns_app} nft list ruleset # what the kernel holds
The PLCs' register map is in README.md. Stop everything: `make demo-down`."""
    )
