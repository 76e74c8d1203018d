"""A factory reset really resets, whatever runs the roles.

On a unit each role is its own systemd unit (`appliance run --roles X`,
`Restart=always`, `RestartSec=1`); on a developer's machine `appliance run` supervises
them. Both are run here in the lab's appliance namespace: the units by a small stand-in
for systemd's Restart= (each role its own process, started again a second after it
exits, as systemd would), the supervisor as the demo runs it. Then: commit a conduit
that forwards, make the first web admin and an API token, `appliance factory-reset
--yes`, and check that every role was started afresh (new pids), that the kernel's
ruleset read back holds no conduit and nothing forwards, and that the old login and
token are refused while the setup-code flow is back.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from e2ekit import https_session
from labkit import PLC1, config, modbus_read
from testkit import wait_for

from appliance import daemon
from appliance.lab import topology
from appliance.lab.topology import LabSpec
from appliance.paths import Paths
from appliance.proc import clean_env
from appliance.state import revisions as revs
from appliance.state.db import Store
from appliance.state.live import LiveState

ROLES = ("net", "field", "opcua", "agent", "web")  # the order systemd starts them (After=)
RESTART_SEC = 1.0  # the units' RestartSec=


@dataclass
class Run:
    pid: int
    exit: int | None = None


@dataclass
class Restarted:
    """One process as systemd runs it with Restart=always: started again RESTART_SEC after
    each exit, whatever the exit status. `runs` keeps every start (pid, exit status)."""

    ns: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    runs: list[Run] = field(default_factory=list)
    _proc: subprocess.Popen[bytes] | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                if self._stop.is_set():
                    return
                with self.log.open("ab") as out:
                    # `ip netns exec` execs the command: the pid is the role's own
                    proc = subprocess.Popen(
                        ["ip", "netns", "exec", self.ns, *self.argv],
                        env=self.env,
                        stdin=subprocess.DEVNULL,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                self._proc = proc
                run = Run(proc.pid)
                self.runs.append(run)
            run.exit = proc.wait()
            self._stop.wait(RESTART_SEC)

    def pid(self) -> int | None:
        with self._lock:
            run = self.runs[-1] if self.runs else None
        return run.pid if run and run.exit is None else None

    def stop(self, timeout: float = 15) -> None:
        self._stop.set()
        with self._lock:
            proc = self._proc
        if proc is not None and proc.poll() is None:
            with _no_such_process():
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with _no_such_process():
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        if self._thread is not None:
            self._thread.join(timeout)


class _no_such_process:
    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> bool:
        return kind is ProcessLookupError


@dataclass
class Unit:
    """The appliance in the lab, run one way or the other."""

    spec: LabSpec
    paths: Paths
    how: str  # "units" or "supervisor"
    procs: dict[str, Restarted]

    @property
    def live(self) -> LiveState:
        return LiveState(self.paths.run_dir)

    def pids(self) -> dict[str, int | None]:
        if self.how == "units":
            return {role: self.procs[role].pid() for role in ROLES}
        children = (self.live.read("supervisor") or {}).get("children") or {}
        return {role: (children.get(role) or {}).get("pid") for role in ROLES}

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        dirs = ["--data-dir", str(self.paths.data_dir), "--run-dir", str(self.paths.run_dir)]
        argv = [sys.executable, "-m", "appliance", *args, *dirs]
        return topology.ns_run(self.spec.ns_app, argv, check=False, timeout=90)

    def ruleset(self) -> list[dict[str, Any]]:
        """Our table as the kernel holds it (`nft -j list table inet appliance`)."""
        cp = topology.ns_run(
            self.spec.ns_app, ["nft", "-j", "list", "table", "inet", "appliance"], check=False
        )
        assert cp.returncode == 0, f"no table of ours in the kernel: {cp.stderr}"
        return [item for item in json.loads(cp.stdout)["nftables"] if "metainfo" not in item]

    def web_url(self) -> str:
        doc = self.live.read("web") or {}
        urls = doc.get("urls") or []
        assert urls, f"web.json lists no address: {doc}"
        return str(urls[0])

    def https(self, steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
        got = https_session(self.spec.ns_app, self.web_url(), steps)
        assert "results" in got, got
        return list(got["results"])

    def log_tail(self, lines: int = 12) -> str:
        out = []
        for role, p in self.procs.items():
            text = p.log.read_text(errors="replace").splitlines() if p.log.exists() else []
            out.append(f"--- {role}: " + " | ".join(text[-lines:]))
        return "\n".join(out)


def _env(paths: Paths) -> dict[str, str]:
    """The units' environment (Environment=APPLIANCE_DATA_DIR=... APPLIANCE_RUN_DIR=...)."""
    return clean_env(
        {
            "APPLIANCE_DATA_DIR": str(paths.data_dir),
            "APPLIANCE_RUN_DIR": str(paths.run_dir),
            "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
            "PYTHONUNBUFFERED": "1",
        }
    )


@pytest.fixture(params=["units", "supervisor"])
def unit(request: pytest.FixtureRequest, lab: LabSpec, tmp_path: Path) -> Iterator[Unit]:
    how = str(request.param)
    paths = Paths(tmp_path / "data", tmp_path / "run")
    run = [sys.executable, "-m", "appliance", "run", "--roles"]
    if how == "units":
        commands = {role: [*run, role] for role in ROLES}
    else:
        commands = {"supervisor": [*run, ",".join(ROLES)]}
    procs = {
        name: Restarted(lab.ns_app, argv, _env(paths), tmp_path / f"{name}.log")
        for name, argv in commands.items()
    }
    u = Unit(lab, paths, how, procs)
    live = u.live
    try:
        for name, p in procs.items():
            p.start()
            if how == "units":  # one by one, each after the one it comes After=
                wait_for(lambda n=name: live.alive(n), 30, f"the {name} role", u.log_tail)
        wait_for(lambda: all(live.alive(r) for r in ROLES), 60, "every role", u.log_tail)
        yield u
    finally:
        for p in reversed(list(procs.values())):
            p.stop()
        topology.ns_run(lab.ns_app, ["nft", "delete", "table", "inet", "appliance"], check=False)


def _commit(paths: Paths, doc: dict[str, Any]) -> int:
    import yaml

    store = Store(paths.data_dir)
    try:
        text = yaml.safe_dump(doc, sort_keys=False)
        draft = revs.import_text(store, text, author="test", comment="test", now=time.time())
        revs.commit(store, author="test", now=time.time(), ref=draft.revision.id)
        live = LiveState(paths.run_dir)
        live.ring("net")
        return revs.wait_applied(live, draft.revision.id, 30).id
    finally:
        store.close()


def _flows(listing: list[dict[str, Any]]) -> list[Any]:
    """The elements of the conduit sets (`c_it_ot_4`, `cr_...`, `p_...`: render.set_name)."""
    sets = [i["set"] for i in listing if "set" in i]
    return [
        e for s in sets if s["name"].split("_")[0] in ("c", "cr", "p") for e in s.get("elem") or []
    ]


def _rules(listing: list[dict[str, Any]], chain: str) -> list[dict[str, Any]]:
    return [i["rule"] for i in listing if "rule" in i and i["rule"]["chain"] == chain]


def _first_admin(u: Unit) -> tuple[str, dict[str, str], str]:
    """`appliance setup-code`, then the first admin and an API token: (code, creds, token)."""
    cp = u.cli("setup-code")
    assert cp.returncode == 0, cp.stderr
    code = cp.stdout.strip()
    admin = {"username": "reset-admin", "password": "rst-" + secrets.token_urlsafe(18)}
    setup, login, token = u.https(
        [
            {"method": "POST", "path": "/api/setup", "json": {"code": code, **admin}},
            {"method": "POST", "path": "/api/session", "json": admin},
            {
                "method": "POST",
                "path": "/api/tokens",
                "json": {"name": "before the reset"},
                "headers": {"X-CSRF-Token": "{csrf}"},
            },
        ]
    )
    assert setup.get("status") == 201, setup
    assert login.get("status") == 200, login
    assert token.get("status") == 201, token
    return code, admin, str(token["json"]["token"])


def _web_answers(u: Unit) -> bool:
    """The web role answers HTTPS (its address is published when its server is started,
    a moment before the server listens)."""
    urls = (u.live.read("web") or {}).get("urls") or []
    if not urls:
        return False
    got = https_session(u.spec.ns_app, str(urls[0]), [{"method": "GET", "path": "/api/setup"}])
    return "results" in got


def _bearer(token: str) -> dict[str, Any]:
    return {"method": "GET", "path": "/api/status", "headers": {"Authorization": f"Bearer {token}"}}


def test_a_factory_reset_restarts_every_role_and_wipes_what_they_hold(unit: Unit) -> None:
    u = unit
    # -- before: a conduit that forwards, an admin with a token -------------------------
    _commit(u.paths, config())
    assert PLC1 in json.dumps(_flows(u.ruleset())), "the conduit is not in the kernel"
    assert "registers" in modbus_read(u.spec, PLC1), "the conduit does not forward"
    wait_for(lambda: _web_answers(u), 30, "the web role to answer", u.log_tail)
    old_code, admin, token = _first_admin(u)
    (with_token,) = u.https([_bearer(token)])
    assert with_token.get("status") == 200, with_token
    before = u.pids()
    assert all(before.values()), before

    # -- the reset, as root does it -----------------------------------------------------
    reset_at = time.time()
    cp = u.cli("factory-reset", "--yes")
    assert cp.returncode == 0, cp.stderr
    assert "factory reset done" in cp.stdout

    # -- every role runs again, in a new process -----------------------------------------
    def restarted() -> bool:
        now = u.pids()
        return all(now[r] and now[r] != before[r] and u.live.alive(r) for r in ROLES)

    def seen() -> str:
        docs = {r: u.live.read(r) or {} for r in ROLES}
        started = {r: round(d.get("started_at", 0) - reset_at, 1) for r, d in docs.items()}
        alive = {r: u.live.alive(r) for r in ROLES}
        return f"pids {before} -> {u.pids()}, started {started} s after the reset, alive {alive}"

    wait_for(restarted, 60, "every role to be started afresh", lambda: seen() + u.log_tail())
    if u.how == "units":
        for role in ROLES:
            first = u.procs[role].runs[0]
            assert first.exit == daemon.EXIT_RESET, (role, u.procs[role].runs, u.log_tail())

    # -- the gate: the kernel holds the fail-closed ruleset, nothing forwards ------------
    listing = u.ruleset()
    assert _flows(listing) == [], "the wiped conduit is still in the kernel"
    forward = _rules(listing, "forward")
    assert len(forward) == 1 and "drop" in forward[0]["expr"][-1], forward
    assert "registers" not in modbus_read(u.spec, PLC1), "a wiped conduit still forwards"
    net = u.live.read("net") or {}
    assert net["applied"]["revision"] is None and net["applied"]["fail_closed"], net

    # -- the web: the old login and token are refused, the setup-code flow is back -------
    wait_for(lambda: _web_answers(u), 30, "the web role to answer", u.log_tail)
    state, login, old_token = u.https(
        [
            {"method": "GET", "path": "/api/setup"},
            {"method": "POST", "path": "/api/session", "json": admin},
            _bearer(token),
        ]
    )
    assert state.get("json") == {"required": True}, state
    assert login.get("status") in (401, 403), f"the old login still works: {login}"
    assert old_token.get("status") in (401, 403), f"the old token still works: {old_token}"
    cp = u.cli("setup-code")
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.strip() and cp.stdout.strip() != old_code
