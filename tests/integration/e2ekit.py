"""Helpers for the end-to-end test: the full lab with every role of the appliance in it.

`E2E` holds what one lab + appliance run knows (spec, state dirs, the lab's facts) and
runs the appliance's own commands the way a person would: `appliance ...` inside the
appliance namespace with the unit's --data-dir/--run-dir.
"""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from testkit import wait_for

from appliance.lab import demo, topology
from appliance.lab.topology import LabSpec
from appliance.paths import Paths
from appliance.state.live import LiveState

PREFIX = "e2"
ROLES = ("net", "field", "opcua", "agent", "web")
DEMO_DEVICES = ("plc1", "plc-slow", "rtu1", "rtu2", "opcua1")
# devices with a counter tag that counts up once a second in every simulator
COUNTERS = ("plc1.counter", "plc-slow.counter", "rtu2.counter", "opcua1.counter")
BLOCK_TABLE = "e2block"

# RFC 5424: PRI VERSION SP TIMESTAMP SP HOSTNAME SP APP-NAME SP PROCID SP MSGID SP SD [SP MSG]
RFC5424 = re.compile(
    r"^<(?P<pri>\d{1,3})>1 (?P<ts>\S+) (?P<host>\S+) (?P<app>\S+) (?P<procid>\S+)"
    r" (?P<msgid>\S+) (?P<sd>-|(?:\[(?:[^\]\\]|\\.)*\])+)(?: (?P<msg>.*))?$"
)
SD_PARAM = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def wait_until(
    pred: Callable[[], Any],
    timeout: float,
    what: str,
    detail: Callable[[], Any] | None = None,
    every: float = 0.2,
) -> Any:
    """`wait_for`, by default polling every 0.2 s (CLI calls cost ~1 s)."""
    return wait_for(pred, timeout, what, detail, every)


@dataclass
class E2E:
    """One full lab with `appliance run --roles net,field,opcua,agent,web` running in it."""

    spec: LabSpec
    paths: Paths
    facts: dict[str, Any]
    rendered: Path
    revision: int = 0
    missing_roles: list[str] = field(default_factory=list)
    admin: dict[str, str] | None = None  # the first admin, once a test made it

    @property
    def live_state(self) -> LiveState:
        return LiveState(self.paths.run_dir)

    def live(self, role: str) -> dict[str, Any]:
        return self.live_state.read(role) or {}

    @property
    def fleet_db(self) -> str:
        return f"sqlite:///{self.spec.fleet_dir / 'fleet.db'}"

    # -- the appliance's commands ---------------------------------------------------------

    def web_url(self) -> str:
        """The first HTTPS URL the web role serves (web.json `urls`, else `listen` made into
        URLs: the document has carried both forms)."""
        doc = self.live("web")
        urls = doc.get("urls") or [
            a if a.startswith("https://") else f"https://{a}/" for a in doc.get("listen") or []
        ]
        assert urls, f"web.json lists no address: {doc}"
        return str(urls[0])

    def dirs(self) -> list[str]:
        return ["--data-dir", str(self.paths.data_dir), "--run-dir", str(self.paths.run_dir)]

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """`appliance ARGS --data-dir D --run-dir R` inside the appliance namespace."""
        argv = [sys.executable, "-m", "appliance", *args, *self.dirs()]
        return topology.ns_run(self.spec.ns_app, argv, check=False, timeout=timeout)

    def cli_json(self, *args: str) -> Any:
        """The JSON a command prints; fails the test with its stderr if it fails."""
        cp = self.cli(*args)
        assert cp.returncode == 0, (
            f"`appliance {' '.join(args)}` exited {cp.returncode}: "
            f"{cp.stderr.strip() or cp.stdout.strip()}"
        )
        try:
            return json.loads(cp.stdout)
        except ValueError:
            pytest.fail(f"`appliance {' '.join(args)}` printed no JSON: {cp.stdout[:500]!r}")

    def events(self, kind: str, limit: int = 1000) -> list[dict[str, Any]]:
        """`appliance events --kind KIND --json` (newest first)."""
        return list(self.cli_json("events", "--kind", kind, "--json", "--limit", str(limit)))

    def tags(self) -> dict[str, dict[str, Any]]:
        """`appliance tags --json`, by tag name."""
        return {row["name"]: row for row in self.cli_json("tags", "--json")}

    # -- processes --------------------------------------------------------------------------

    def child_pid(self, role: str) -> int | None:
        children = self.live("supervisor").get("children") or {}
        pid = (children.get(role) or {}).get("pid")
        return int(pid) if pid else None

    def daemon_log(self, lines: int = 15) -> str:
        return topology.log_tail(self.spec, demo.DAEMON, lines)

    # -- the OT network ---------------------------------------------------------------------

    def block_ot(self, address: str, port: int) -> None:
        """Drop every packet to address:port inside the OT namespace (a pulled cable)."""
        rules = (
            f"table inet {BLOCK_TABLE} {{\n"
            "  chain input {\n"
            "    type filter hook input priority -10; policy accept;\n"
            f"    ip daddr {address} tcp dport {port} drop\n"
            "  }\n"
            "}\n"
        )
        topology.ns_run(self.spec.ns_ot, ["nft", "-f", "-"], input=rules)

    def unblock_ot(self) -> None:
        topology.ns_run(
            self.spec.ns_ot, ["nft", "delete", "table", "inet", BLOCK_TABLE], check=False
        )


def first_admin(e2e: E2E) -> tuple[dict[str, str], list[dict[str, Any]]]:
    """Make the first admin the way a person does: `appliance setup-code`, then POST
    /api/setup with it on the unit's web UI. Returns the credentials and the answers
    (setup, then /api/status without a session, log-in, /api/status with the session,
    the same setup code once more). Fails the test if the code cannot be had."""
    cp = e2e.cli("setup-code")
    assert cp.returncode == 0, f"`appliance setup-code` exited {cp.returncode}: {cp.stderr}"
    code = cp.stdout.strip()
    assert code and "\n" not in code, f"not a setup code: {cp.stdout!r}"
    admin = {"username": "e2e-admin", "password": "e2e-" + secrets.token_urlsafe(18)}
    got = https_session(
        e2e.spec.ns_app,
        e2e.web_url(),
        [
            {"method": "POST", "path": "/api/setup", "json": {"code": code, **admin}},
            {"method": "GET", "path": "/api/status"},
            {"method": "POST", "path": "/api/session", "json": admin},
            {"method": "GET", "path": "/api/status"},
            {"method": "POST", "path": "/api/setup", "json": {"code": code, **admin}},
        ],
    )
    assert "results" in got, got
    if got["results"][0].get("status") == 201:
        e2e.admin = admin
    return admin, got["results"]


OPCUA_READ = r"""
import asyncio, json, sys, tempfile
from pathlib import Path
from asyncua import Client, ua
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256

async def main():
    c = Client(sys.argv[1], timeout=10)
    if sys.argv[2]:
        c.set_user(sys.argv[2])
        c.set_password(sys.argv[3])
    out = {}
    try:
        # as an IT client connects by default: Basic256Sha256 SignAndEncrypt
        d = Path(tempfile.mkdtemp())
        cert, key = await c.setup_self_signed_certificate(d / "key.pem", d / "cert.der")
        await c.set_security(
            SecurityPolicyBasic256Sha256, str(cert), str(key),
            mode=ua.MessageSecurityMode.SignAndEncrypt,
        )
        async with c:
            ns = await c.get_namespace_index("urn:appliance:tags")
            out["ns"] = ns
            for name in sys.argv[4:]:
                dv = await c.get_node(f"ns={ns};s={name}").read_data_value()
                out[name] = {"value": dv.Value.Value, "status": dv.StatusCode.name}
    except Exception as e:
        out["error"] = f"{e.__class__.__name__}: {e}"
    print(json.dumps(out, default=str))

asyncio.run(main())
"""


def opcua_read(
    ns: str, url: str, user: str | None, password: str | None, *nodes: str
) -> dict[str, Any]:
    """Read nodes `ns=<urn:appliance:tags>;s=<name>` of url from inside ns, logged on as
    user (or anonymously): {"ns", name: {value, status}} or {"error"}."""
    argv = [sys.executable, "-c", OPCUA_READ, url, user or "", password or "", *nodes]
    cp = topology.ns_run(ns, argv, check=False, timeout=60)
    lines = cp.stdout.strip().splitlines()
    if cp.returncode != 0 or not lines:
        return {"error": (cp.stderr.strip().splitlines() or [f"exit {cp.returncode}"])[-1]}
    return dict(json.loads(lines[-1]))


MODBUS_HOLDING = r"""
import json, sys
from pymodbus.client import ModbusTcpClient
c = ModbusTcpClient(sys.argv[1], port=502, timeout=2, retries=0)
if not c.connect():
    print(json.dumps({"error": "connect"})); sys.exit(0)
r = c.read_holding_registers(int(sys.argv[2]), count=int(sys.argv[3]), device_id=1)
print(json.dumps({"error": str(r)} if r.isError() else {"registers": r.registers}))
c.close()
"""


def modbus_holding(ns: str, host: str, address: int, count: int = 1) -> dict[str, Any]:
    """Read holding registers of host:502 from inside ns: {"registers"} or {"error"}."""
    argv = [sys.executable, "-c", MODBUS_HOLDING, host, str(address), str(count)]
    cp = topology.ns_run(ns, argv, check=False)
    lines = cp.stdout.strip().splitlines()
    return dict(json.loads(lines[-1])) if lines else {"error": cp.stderr.strip()[-300:]}


def start(root: Path) -> E2E:
    """Build the full lab, start every role, render and commit the demo configuration.
    On any failure the lab is taken down before the error propagates."""
    spec = LabSpec.full(prefix=PREFIX, plcs=2, mgmt=False, root=root)
    facts = topology.up(spec)
    try:
        paths = demo.paths_for(spec.root)
        source = demo.find_config("examples/demo.yaml")
        text, _notes = demo.render_config(source.read_text(), demo.lab_values(facts), str(source))
        rendered = spec.root / demo.RENDERED
        rendered.write_text(text)
        rendered.chmod(0o600)
        e2e = E2E(spec=spec, paths=paths, facts=facts, rendered=rendered)
        e2e.missing_roles = demo.start_appliance(spec, paths, timeout=60, roles=ROLES)
        e2e.revision = demo.commit_file(paths, rendered, author="e2e", timeout=30)
        return e2e
    except BaseException:
        stop(spec)
        raise


def stop(spec: LabSpec) -> None:
    """The appliance (its whole process group: supervisor, roles, HTTPS server), any OT
    block left behind, then the lab."""
    try:
        topology.stop(spec, demo.DAEMON, timeout=15)
    finally:
        try:
            if topology.exists(spec):
                topology.ns_run(
                    spec.ns_ot, ["nft", "delete", "table", "inet", BLOCK_TABLE], check=False
                )
        finally:
            topology.down(spec)


def parse_syslog(line: str) -> dict[str, Any] | None:
    """One RFC 5424 line as a dict (pri, ts, host, app, procid, msgid, sd params, msg), or
    None if the line is not RFC 5424."""
    m = RFC5424.match(line)
    if m is None:
        return None
    try:
        ts = datetime.fromisoformat(m["ts"].replace("Z", "+00:00"))
    except ValueError:
        return None
    if ts.tzinfo is None or not 0 <= int(m["pri"]) <= 191:
        return None
    return {
        "pri": int(m["pri"]),
        "ts": ts,
        "host": m["host"],
        "app": m["app"],
        "procid": m["procid"],
        "msgid": m["msgid"],
        "sd": m["sd"],
        "params": dict(SD_PARAM.findall(m["sd"])),
        "msg": m["msg"] or "",
    }


HTTPS_SESSION = r"""
import hashlib, http.cookiejar, json, socket, ssl, sys, urllib.error, urllib.request
from urllib.parse import urlsplit
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE   # the unit's self-signed cert; its fingerprint is compared
opener = urllib.request.build_opener(
    urllib.request.HTTPSHandler(context=ctx),
    urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()),
)
base = sys.argv[1].rstrip("/")
results = []
csrf = ""   # the last "csrf" a JSON answer gave (a session's token), for "{csrf}" in headers
for step in json.loads(sys.argv[2]):
    data = None if step.get("json") is None else json.dumps(step["json"]).encode()
    req = urllib.request.Request(base + step["path"], data=data, method=step["method"])
    if data is not None:
        req.add_header("Content-Type", "application/json")
    for k, v in (step.get("headers") or {}).items():
        req.add_header(k, v.replace("{csrf}", csrf))
    try:
        with opener.open(req, timeout=15) as r:
            status, body = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, body = e.code, e.read()
    except OSError as e:
        results.append({"error": f"{e.__class__.__name__}: {e}"})
        continue
    text = body.decode("utf-8", "replace")
    try:
        doc = json.loads(text)
    except ValueError:
        doc = None
    if isinstance(doc, dict) and isinstance(doc.get("csrf"), str):
        csrf = doc["csrf"]
    results.append({"status": status, "json": doc, "text": text[:2000]})
u = urlsplit(base)
with socket.create_connection((u.hostname, u.port or 443), timeout=10) as s:
    with ctx.wrap_socket(s, server_hostname=u.hostname) as t:
        der = t.getpeercert(binary_form=True)
digest = hashlib.sha256(der).hexdigest().upper()
fp = "sha256:" + ":".join(digest[i:i + 2] for i in range(0, 64, 2))
print(json.dumps({"results": results, "fingerprint": fp}))
"""


def https_session(ns: str, base_url: str, steps: list[dict[str, Any]]) -> dict[str, Any]:
    """Run HTTPS requests in order from inside ns with one cookie jar (a browser's session).
    steps: [{"method", "path", "json"?, "headers"?}]; "{csrf}" in a header value is the
    last "csrf" a JSON answer carried. Returns {"results": [{status, json,
    text} | {error}], "fingerprint": "sha256:AB:..."} of the server's certificate, or
    {"error": ...} if the client itself failed."""
    cp = topology.ns_run(
        ns,
        [sys.executable, "-c", HTTPS_SESSION, base_url, json.dumps(steps)],
        check=False,
        timeout=90,
    )
    if cp.returncode != 0:
        return {"error": (cp.stderr.strip().splitlines() or [f"exit {cp.returncode}"])[-1]}
    return dict(json.loads(cp.stdout.strip().splitlines()[-1]))
