"""Helpers for the integration tests: the test configuration, the appliance in the lab, probes."""

from __future__ import annotations

import contextlib
import copy
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from testkit import wait_for

from appliance.lab import demo, topology
from appliance.lab.topology import IT_MAC, OT_MAC, LabSpec
from appliance.paths import Paths
from appliance.state import revisions as revs
from appliance.state.db import Revision, Store
from appliance.state.live import LiveState

PREFIX = "t"
PLC1, PLC2 = "192.168.50.10", "192.168.50.11"
IT_HOST = "10.10.0.2"

BASE: dict[str, Any] = {
    "version": 1,
    "unit": {"name": "test-unit"},
    "interfaces": [
        {"name": "it0", "role": "it", "mac": IT_MAC, "addresses": ["10.10.0.1/24"]},
        {"name": "ot0", "role": "ot", "mac": OT_MAC, "addresses": ["192.168.50.1/24"]},
    ],
    "conduits": [
        {
            "name": "scada-modbus",
            "owner": "ot-team",
            "reason": "SCADA polls PLC 1",
            "from": [IT_HOST],
            "to": [PLC1],
            "services": ["modbus"],
        }
    ],
}


def config(**changes: Any) -> dict[str, Any]:
    """The base test configuration with top-level sections replaced or added."""
    out = copy.deepcopy(BASE)
    out.update(copy.deepcopy(changes))
    return out


def conduit(name: str, to: str, services: list[str], **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "owner": "tests",
        "reason": "integration test",
        "from": [IT_HOST],
        "to": [to],
        "services": services,
        **extra,
    }


class Appliance:
    """The daemon running in the lab's appliance namespace, with its own state dirs."""

    def __init__(self, spec: LabSpec, root: Path) -> None:
        self.spec = spec
        self.paths = Paths(root / "data", root / "run")
        self.store = Store(self.paths.data_dir)
        self.live_state = LiveState(self.paths.run_dir)

    # -- process -----------------------------------------------------------------------

    def start(self) -> None:
        demo.start_appliance(self.spec, self.paths)

    def pid(self) -> int:
        return int((self.spec.pids / f"{demo.DAEMON}.pid").read_text().split()[0])

    def kill9(self) -> None:
        pid = self.pid()
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not topology.alive(self.spec, demo.DAEMON), 5, "the daemon to die")
        (self.spec.pids / f"{demo.DAEMON}.pid").unlink(missing_ok=True)

    def stop(self) -> None:
        topology.stop(self.spec, demo.DAEMON)

    # -- configuration ---------------------------------------------------------------------

    def import_(self, cfg: dict[str, Any] | str, comment: str = "test") -> Revision:
        text = cfg if isinstance(cfg, str) else yaml.safe_dump(cfg, sort_keys=False)
        return revs.import_text(
            self.store, text, author="test", comment=comment, now=time.time()
        ).revision

    def commit(self, cfg: dict[str, Any] | str, confirm_within: float | None = None) -> int:
        """Import, commit and wait until the net role runs it; returns the revision id."""
        draft = self.import_(cfg)
        revs.commit(
            self.store, author="test", now=time.time(), ref=draft.id, confirm_within=confirm_within
        )
        self.live_state.ring("net")
        self.wait_applied(draft.id)
        return draft.id

    def wait_applied(self, rev_id: int, timeout: float = 15) -> None:
        def applied() -> bool:
            rev = Revision.get_by_id(rev_id)
            if rev.state == "rolled-back":
                pytest.fail(f"revision {rev_id} was rolled back: {rev.reason}")
            return self.live().get("applied", {}).get("revision") == rev_id

        wait_for(applied, timeout, f"revision {rev_id} to be applied")

    def revision(self, rev_id: int) -> Revision:
        return Revision.get_by_id(rev_id)

    # -- observation ---------------------------------------------------------------------------

    def live(self) -> dict[str, Any]:
        return self.live_state.read("net") or {}

    def events(self, kind: str) -> list[dict[str, Any]]:
        return [e.as_dict() for e in self.store.events(500, kind)]

    def nft(self, *args: str, check: bool = True) -> str:
        return topology.ns_run(self.spec.ns_app, ["nft", *args], check=check).stdout

    def probe(self, host: str, port: int, ns: str | None = None, timeout: float = 1.0) -> str:
        return demo.probe_tcp(ns or self.spec.ns_it, host, port, timeout)


MODBUS_READ = r"""
import json, sys
from pymodbus.client import ModbusTcpClient
c = ModbusTcpClient(sys.argv[1], port=int(sys.argv[2]), timeout=2, retries=0)
if not c.connect():
    print(json.dumps({"error": "connect"})); sys.exit(0)
r = c.read_holding_registers(0, count=5, device_id=1)
print(json.dumps({"error": str(r)} if r.isError() else {"registers": r.registers}))
c.close()
"""


def modbus_read(spec: LabSpec, host: str, port: int = 502) -> dict[str, Any]:
    """Read holding registers 0..4 from the IT host, through the appliance."""
    import json

    cp = topology.ns_run(spec.ns_it, [sys.executable, "-c", MODBUS_READ, host, str(port)])
    return json.loads(cp.stdout.strip().splitlines()[-1])


LISTEN = """
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(16)
print("ready", flush=True)
while True:
    s.accept()[0].close()
"""


@contextlib.contextmanager
def tcp_listener(ns: str, host: str, port: int) -> Iterator[None]:
    """A TCP service on host:port in namespace `ns` that accepts and closes (a probe's
    "open"), for as long as the block runs."""
    argv = ["ip", "netns", "exec", ns, sys.executable, "-c", LISTEN, host, str(port)]
    server = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        yield
    finally:
        server.kill()
        server.wait()
