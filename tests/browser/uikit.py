"""Helpers for the browser tests: the unit in the lab, its configuration, probes, waits."""

from __future__ import annotations

import importlib.util
import os
import time
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

PREFIX = "br"
IT_HOST = "10.10.0.2"
UNIT_IT = "10.10.0.1"
PLC1, PLC2 = "192.168.50.10", "192.168.50.11"
ABSENT = "192.168.50.30"  # no host: a device that never answers
ROLES = ("net", "field", "agent", "web")
ADMIN, PASSWORD = "installer", "blue-cable-ot-gate-42"
BANNER = "Authorised plant staff only. Activity is logged."
# The README's screenshots are rewritten only when asked (UPDATE_SCREENSHOTS=1), so a
# test run never dirties the checkout; otherwise they go to a scratch directory.
SHOTS = (
    Path(__file__).resolve().parents[2] / "docs" / "screenshots"
    if os.environ.get("UPDATE_SCREENSHOTS") == "1"
    else Path(os.environ.get("TMPDIR", "/tmp")) / "appliance-screenshots"
)

CONFIG: dict[str, Any] = {
    "version": 1,
    "unit": {"name": "line3-gate", "site": "Plant 1, line 3 cabinet"},
    "interfaces": [
        {
            "name": "it0",
            "role": "it",
            "mac": IT_MAC,
            "addresses": [f"{UNIT_IT}/24"],
            "description": "plant IT network",
        },
        {
            "name": "ot0",
            "role": "ot",
            "mac": OT_MAC,
            "addresses": ["192.168.50.1/24"],
            "description": "line 3 cell network",
        },
    ],
    "conduits": [
        {
            "name": "scada-modbus",
            "owner": "ot-engineering@plant.example",
            "reason": "SCADA server polls PLC 1",
            "from": [IT_HOST],
            "to": [PLC1],
            "services": ["modbus"],
        }
    ],
    "devices": [
        {
            "name": "plc1",
            "protocol": "modbus-tcp",
            "address": f"{PLC1}:502",
            "poll_interval": 0.5,
            "description": "line 3 PLC",
            "tags": [
                {"name": "counter", "table": "holding", "address": 0, "type": "uint16"},
                {
                    "name": "temperature",
                    "table": "holding",
                    "address": 10,
                    "type": "float32",
                    "unit": "degC",
                    "publish": "every-poll",
                    "description": "cabinet temperature",
                },
                # holds 1234 for ever: a high alarm at 1000 is raised at once and stays
                {
                    "name": "pressure",
                    "table": "holding",
                    "address": 2,
                    "type": "uint16",
                    "unit": "kPa",
                    "alarms": {"high": 1000},
                    "description": "line pressure",
                },
                {
                    "name": "setpoint",
                    "table": "holding",
                    "address": 40,
                    "type": "uint16",
                    "writable": True,
                },
            ],
        },
        {
            "name": "plc2",
            "protocol": "modbus-tcp",
            "address": f"{PLC2}:502",
            "poll_interval": 1.0,
            "description": "line 3 packer",
            "tags": [
                {"name": "counter", "table": "input", "address": 0, "type": "uint16"},
                {"name": "sine", "table": "holding", "address": 1, "type": "int16"},
                {"name": "step", "table": "holding", "address": 30, "type": "uint16"},
            ],
        },
        # nobody answers there: the device is down and raises a comm-loss alarm
        {
            "name": "dosing-pump",
            "protocol": "modbus-tcp",
            "address": f"{ABSENT}:502",
            "poll_interval": 1.0,
            "timeout": 0.5,
            "retries": 0,
            "tags": [{"name": "flow", "table": "holding", "address": 0, "type": "uint16"}],
        },
    ],
    "opcua_server": {"enabled": False},
    "web": {"listen_it": True, "banner": BANNER},
}


class Unit:
    """The appliance (every role) in the lab's appliance namespace, state in `root`."""

    def __init__(self, spec: LabSpec, root: Path) -> None:
        self.spec = spec
        self.paths = Paths(root / "data", root / "run")
        self.store = Store(self.paths.data_dir)
        self.live = LiveState(self.paths.run_dir)
        self.url = f"https://{UNIT_IT}"

    def start(self) -> None:
        missing = [r for r in ROLES if r != "net" and not _exists(f"appliance.{r}.role")]
        if missing:
            pytest.fail(f"roles without a module: {', '.join(missing)} (appliance.<role>.role)")
        text = yaml.safe_dump(CONFIG, sort_keys=False)
        draft = revs.import_text(self.store, text, author="test", comment="base", now=time.time())
        revs.commit(self.store, author="test", now=time.time(), ref=draft.revision.id)
        not_up = demo.start_appliance(self.spec, self.paths, timeout=60, roles=ROLES)
        if not_up:
            log = topology.log_tail(self.spec, demo.DAEMON, 30)
            pytest.fail(f"roles not running after 60 s: {', '.join(not_up)}\n{log}")
        topology.wait_tcp(self.spec.ns_it, UNIT_IT, 443, timeout=30)

    def stop(self) -> None:
        topology.stop(self.spec, demo.DAEMON, timeout=15)

    def setup_code(self) -> str:
        from appliance.web.setup import setup_code

        return wait_for(
            lambda: setup_code(self.paths, create=False), 20, "the web role's setup code"
        )

    def revision(self, rev_id: int) -> Revision:
        return Revision.get_by_id(rev_id)

    def latest(self) -> Revision:
        return Revision.select().order_by(Revision.id.desc()).first()

    def probe(self, host: str, port: int) -> str:
        """A TCP connect from the IT host through the appliance: open/dropped/refused."""
        return demo.probe_tcp(self.spec.ns_it, host, port, 1.5)

    def log_tail(self) -> str:
        return topology.log_tail(self.spec, demo.DAEMON, 40)


def _exists(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False
