"""The lab with the appliance running in it: `lab up|down|status` and `appliance demo`.

topology.py builds the namespaces and simulators; this module starts the
appliance's roles inside `lab-app` with their state under the lab directory,
renders and commits a configuration, and shows what crosses and what does not.

A configuration may hold `${LAB_...}` placeholders for what only the running lab
knows (`render_config`): the serial port of the RTU line, the fleet receiver's CA
and the unit's token. Parts that need an extra the lab does not run (no fleet
receiver installed, a lab without the RTU line) are left out of the rendered copy,
with a line saying so.
"""

from __future__ import annotations

import re
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from appliance import secretfile
from appliance.errors import ApplianceError, LabError
from appliance.lab import topology
from appliance.lab.topology import LabSpec
from appliance.paths import Paths
from appliance.roles import CONFIG_FOLLOWERS, ROLE_NAMES

Echo = Callable[[str], None]
REPO = Path(__file__).resolve().parents[2]
DAEMON = "appliance"
RENDERED = "config.yaml"
_PLACEHOLDER = re.compile(r"\$\{([A-Z][A-Z0-9_]*)\}")
# placeholder -> the lab extra that provides it (what to leave out without that extra)
PLACEHOLDERS = {"LAB_RTU_PORT": "rtu", "LAB_FLEET_CA": "fleet", "LAB_FLEET_TOKEN": "fleet"}


def paths_for(lab_dir: Path) -> Paths:
    return Paths((lab_dir / "data").absolute(), (lab_dir / "run").absolute())


def find_config(name: str) -> Path:
    for candidate in (Path(name), REPO / name):
        if candidate.is_file():
            return candidate
    raise LabError(f"{name}: no such configuration file")


# -- rendering the configuration for this lab -----------------------------------------------


def lab_values(facts: dict[str, Any]) -> dict[str, str]:
    """Placeholder values from what `topology.up` reported (only the extras that run)."""
    extras = facts.get("extras", {})
    values: dict[str, str] = {}
    if "rtu" in extras:
        values["LAB_RTU_PORT"] = extras["rtu"]["port"]
    if "fleet" in extras:
        values["LAB_FLEET_CA"] = extras["fleet"]["ca_cert"]
        values["LAB_FLEET_TOKEN"] = Path(extras["fleet"]["token_file"]).read_text().strip()
    return values


def _placeholders(node: Any) -> set[str]:
    if isinstance(node, str):
        return set(_PLACEHOLDER.findall(node))
    if isinstance(node, dict):
        return set().union(*(_placeholders(v) for v in node.values())) if node else set()
    if isinstance(node, list):
        return set().union(*(_placeholders(v) for v in node)) if node else set()
    return set()


def _substitute(node: Any, values: dict[str, str]) -> Any:
    if isinstance(node, str):
        return _PLACEHOLDER.sub(lambda m: values[m.group(1)], node)
    if isinstance(node, dict):
        return {k: _substitute(v, values) for k, v in node.items()}
    if isinstance(node, list):
        return [_substitute(v, values) for v in node]
    return node


def render_config(
    text: str, values: dict[str, str], source: str = "config"
) -> tuple[str, list[str]]:
    """The configuration with `${LAB_...}` placeholders filled in, and notes on what was
    left out. Text without placeholders comes back unchanged. A device or the fleet
    section that needs a value the lab does not have is dropped (and noted); any other
    unknown placeholder is a LabError naming it."""
    if not _PLACEHOLDER.search(text):
        return text, []
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise LabError(f"{source}: not YAML ({e})") from None
    if not isinstance(doc, dict):
        raise LabError(f"{source}: not a configuration document")
    unknown = sorted(_placeholders(doc) - set(PLACEHOLDERS) - set(values))
    if unknown:
        raise LabError(f"{source}: unknown placeholder ${{{unknown[0]}}}")
    notes: list[str] = []

    def missing(node: Any) -> list[str]:
        return sorted(_placeholders(node) - set(values))

    devices = doc.get("devices")
    if isinstance(devices, list):
        kept = []
        for device in devices:
            lacking = missing(device)
            if lacking:
                name = device.get("name", "?") if isinstance(device, dict) else "?"
                extra = PLACEHOLDERS[lacking[0]]
                notes.append(f"device {name} left out: this lab has no {extra} extra")
            else:
                kept.append(device)
        doc["devices"] = kept
    if isinstance(doc.get("fleet"), dict) and missing(doc["fleet"]):
        notes.append("fleet section left out: this lab has no fleet receiver")
        del doc["fleet"]
    leftover = missing(doc)
    if leftover:
        extra = PLACEHOLDERS[leftover[0]]
        raise LabError(f"{source}: ${{{leftover[0]}}} needs the lab's {extra} extra")
    rendered = _substitute(doc, values)
    header = f"# Rendered by the lab from {source}; edit that file, not this one.\n"
    return header + yaml.safe_dump(rendered, sort_keys=False, allow_unicode=True), notes


# -- the appliance in the lab ----------------------------------------------------------------


def start_appliance(
    spec: LabSpec, paths: Paths, timeout: float = 30.0, roles: Sequence[str] = ("net",)
) -> list[str]:
    """Start `appliance run --roles ...` inside the appliance namespace; wait until the net
    role runs (LabError if not) and, for `timeout`, the other roles. Returns the roles
    that did not come up (the caller says so; the lab keeps going without them)."""
    from appliance.state.live import LiveState

    argv = [sys.executable, "-m", "appliance", "run"]
    argv += ["--data-dir", str(paths.data_dir), "--run-dir", str(paths.run_dir)]
    if list(roles) != ["net"]:
        argv += ["--roles", ",".join(roles)]
    topology.spawn(spec, spec.ns_app, DAEMON, argv)
    live = LiveState(paths.run_dir)
    deadline = time.monotonic() + timeout
    waiting = list(roles)
    while time.monotonic() < deadline:
        waiting = [r for r in waiting if not live.alive(r)]
        if not waiting:
            return []
        if not topology.alive(spec, DAEMON):
            break
        time.sleep(0.1)
    if "net" in waiting or not topology.alive(spec, DAEMON):
        raise LabError(
            "the appliance did not start: "
            + topology.log_tail(spec, DAEMON, 5).replace("\n", " | ")
        )
    return waiting


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
    live.ring(*CONFIG_FOLLOWERS)
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
    extras: bool = True,
    roles: Sequence[str] | None = None,
    bridge: bool = False,
) -> LabSpec:
    """The lab (with every extra unless `extras` is false; `bridge`: the bridge topology,
    IT host and PLCs in one subnet), the appliance running `roles` (default: every role this
    checkout has) and, if given, the rendered configuration."""
    root = lab_dir.absolute()
    if extras:
        spec = LabSpec.full(prefix=prefix, plcs=plcs, mgmt=mgmt, root=root, bridge=bridge)
    else:
        spec = LabSpec(prefix=prefix, plcs=plcs, mgmt=mgmt, root=root, bridge=bridge)
    cfg = find_config(config_file) if config_file else None
    if topology.exists(spec):
        echo("lab: removing the previous lab")
    topology.down(spec)
    paths = paths_for(spec.root)
    for d in (paths.data_dir, paths.run_dir):
        shutil.rmtree(d, ignore_errors=True)
    (spec.root / RENDERED).unlink(missing_ok=True)
    facts = topology.up(spec, progress=lambda s: echo(f"lab: {s}"))
    rendered: Path | None = None
    if cfg is not None:
        text, notes = render_config(cfg.read_text(), lab_values(facts), str(cfg))
        for note in notes:
            echo(f"lab: {note}")
        rendered = spec.root / RENDERED
        # it may hold the unit's fleet token: 0600 from the start, no link followed
        secretfile.write(spec.root, RENDERED, text.encode(), mode=0o600, dir_mode=None)
    run_roles = list(roles) if roles is not None else list(ROLE_NAMES)
    echo(
        f"lab: starting the appliance in {spec.ns_app} (roles {', '.join(run_roles)};"
        f" state in {paths.data_dir})"
    )
    missing = start_appliance(spec, paths, roles=run_roles)
    for role in missing:
        echo(f"lab: WARNING: the {role} role is not running (see {spec.logs / (DAEMON + '.log')})")
    if cfg is not None and rendered is not None:
        rev = commit_file(paths, rendered)
        echo(f"lab: {cfg} committed as revision {rev} and running")
    if "web" in run_roles:
        code = _wait_setup_code(paths)
        where = "https://10.99.0.2/" if spec.mgmt else "the web UI"
        if code:
            echo(f"lab: first login at {where}: setup code {code} (works once)")
    return spec


def _wait_setup_code(paths: Paths, timeout: float = 15.0) -> str | None:
    """The web role makes the one-time setup code on its first start; wait for it briefly."""
    deadline = time.monotonic() + timeout
    while True:
        code = web_login_facts(paths)["setup_code"]
        if code or time.monotonic() > deadline:
            return code
        time.sleep(0.3)


def down(lab_dir: Path, *, echo: Echo = print, prefix: str = "lab") -> None:
    spec = LabSpec(prefix=prefix, root=lab_dir.absolute())
    had = topology.exists(spec)
    topology.down(spec)
    (spec.root / RENDERED).unlink(missing_ok=True)
    echo("lab: removed" if had else "lab: nothing to remove")


def status(lab_dir: Path, prefix: str = "lab") -> dict[str, Any]:
    spec = LabSpec(prefix=prefix, root=lab_dir.absolute())
    from appliance.state.live import LiveState

    data = topology.status(spec)
    live = LiveState(paths_for(spec.root).run_dir)
    roles = {role: live.alive(role) for role in ROLE_NAMES}
    data["appliance"] = {"net_alive": roles["net"], "roles": roles}
    return data


def describe_extras(extras: dict[str, Any]) -> list[str]:
    """One line per extra the lab runs, saying where to find it."""
    lines = []
    if "slow_plc" in extras:
        slow = extras["slow_plc"]
        lines.append(
            f"slow PLC  {slow['address']}:{slow['port']} (answers after {slow['delay']:g} s)"
        )
    if "rtu" in extras:
        rtu = extras["rtu"]
        units = ", ".join(map(str, rtu["units"]))
        lines.append(
            f"RTU line  {rtu['port']} (units {units}; {rtu['baud']} 8{rtu['parity']}"
            f"{rtu['stop_bits']})"
        )
    if "opcua" in extras:
        lines.append(f"OPC UA    {extras['opcua']['url']}")
    if "fleet" in extras:
        fleet = extras["fleet"]
        lines.append(
            f"fleet     {fleet['url']}/ (in {fleet.get('namespace', 'lab-it')};"
            f" CA {fleet['ca_cert']},"
            f" unit token {fleet['token_file']})"
        )
    if "syslog" in extras:
        sl = extras["syslog"]
        lines.append(
            f"syslog    {sl['host']} udp/{sl['udp']} tcp/{sl['tcp']} tls/{sl['tls']} -> {sl['log']}"
        )
    return lines


def describe(data: dict[str, Any]) -> list[str]:
    """`lab status` for people: namespaces, processes, extras, links with addresses."""
    if not data.get("exists"):
        return ["lab: not up (`appliance lab up` or `make demo`)"]
    lines = []
    for ns, present in data.get("namespaces", {}).items():
        lines.append(f"namespace {ns:<10} {'present' if present else 'MISSING'}")
    for name, proc in data.get("processes", {}).items():
        state = "running" if proc.get("alive") else "STOPPED"
        lines.append(f"process   {name:<10} {state} (pid {proc.get('pid')})")
    appliance = data.get("appliance", {})
    roles = appliance.get("roles") or {"net": appliance.get("net_alive")}
    running = [r for r, ok in roles.items() if ok]
    lines.append(f"appliance roles running: {', '.join(running) or 'NONE'}")
    lines += [f"extra     {line}" for line in describe_extras(data.get("extras", {}))]
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


def web_login_facts(paths: Paths) -> dict[str, str | None]:
    """The UI's certificate fingerprint and the first-login setup code, once the web role
    has made them."""
    from appliance.web import setup, tls

    facts: dict[str, str | None] = {"fingerprint": None, "setup_code": None}
    try:
        facts["fingerprint"] = tls.fingerprint(paths)
    except (ApplianceError, OSError, ValueError):  # not made yet: the demo says where
        pass
    try:
        facts["setup_code"] = setup.setup_code(paths)
    except (ApplianceError, OSError, ValueError):  # already set up, or not made yet
        pass
    return facts


def run_demo(
    lab_dir: Path, *, plcs: int = 3, echo: Echo = print, prefix: str = "lab", mgmt: bool = True
) -> None:
    """The full lab, the appliance with every role, the demo configuration; then the probes
    of what crosses the demarcation point and where to look next."""
    spec = up(lab_dir, plcs=plcs, echo=echo, prefix=prefix, mgmt=mgmt)
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
    for line in where_to_look(spec, paths):
        echo(line)


def where_to_look(spec: LabSpec, paths: Paths) -> list[str]:
    """The demo's closing words: the UI, the data, the fleet, syslog, the simulators."""
    bin_ = Path(sys.executable).parent
    extras = topology.read_facts(spec).get("extras", {})
    web = web_login_facts(paths)
    lines = ["", "The lab is up and the appliance runs in it."]
    if spec.mgmt:
        lines.append("Web UI (from this machine):  https://10.99.0.2/")
        if web["fingerprint"]:
            lines.append(f"  its certificate:            {web['fingerprint']}")
        if web["setup_code"]:
            lines.append(f"  first login, setup code:    {web['setup_code']}")
        else:
            lines.append(f"  first login, setup code:    {bin_}/appliance setup-code")
    lines += [
        "",
        "In a shell here:",
        f"  export APPLIANCE_DATA_DIR={paths.data_dir} APPLIANCE_RUN_DIR={paths.run_dir}",
        f"  {bin_}/appliance status                  # health, revision, links, conduits, drops",
        f"  {bin_}/appliance tags                    # live values polled from the OT side",
        f"  {bin_}/appliance events                  # what happened, newest first",
        f"  {bin_}/appliance config export > my.yaml # edit, then:",
        f'  {bin_}/appliance config import my.yaml -m "why" && \\',
        f"    {bin_}/appliance config commit --confirm-within 60  # then: config confirm",
        f"  ip netns exec {spec.ns_it} bash              # a shell on the IT host (10.10.0.2)",
        f"  ip netns exec {spec.ns_app} nft list ruleset # what the kernel holds",
    ]
    if "fleet" in extras:
        fleet = extras["fleet"]
        lines += [
            "",
            f"Fleet receiver (on the IT host, {fleet['url']}/): the unit's heartbeats",
            f"  ip netns exec {spec.ns_it} curl -s --cacert {fleet['ca_cert']} \\",
            f"    {fleet['url']}/api/v1/ping",
            f"  operator password: {fleet['password_file']}",
        ]
    if "syslog" in extras:
        lines += ["", f"Syslog as the SIEM gets it:  tail -f {extras['syslog']['log']}"]
    simulated = describe_extras(extras)
    if simulated:
        lines += ["", "Simulated field devices besides the PLCs (maps in docs/lab.md):"]
        lines += [f"  {line}" for line in simulated]
    if spec.prefix == "lab" and spec.root == Path(".lab").absolute():
        lines += ["", "Stop everything: `make demo-down`."]
    else:
        down = f"{bin_}/appliance lab down --prefix {spec.prefix} --dir {spec.root}"
        lines += ["", f"Stop everything: {down}"]
    return lines
