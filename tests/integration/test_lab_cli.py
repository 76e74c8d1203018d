"""`appliance lab up|status|down` as a person runs them (own prefix, so a demo can stay up)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from appliance.lab.demo import probe_tcp

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def appliance(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "appliance", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )


def test_lab_up_commits_the_demo_config_then_down_removes_everything(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: creates network namespaces")
    lab = ["--prefix", "tc", "--dir", str(tmp_path)]
    try:
        up = appliance("lab", "up", "--no-mgmt", "--plcs", "2", *lab)
        assert up.returncode == 0, up.stderr
        assert "committed as revision 1 and running" in up.stdout
        status = json.loads(appliance("lab", "status", "--json", *lab).stdout)
        assert status["appliance"]["net_alive"] is True
        assert probe_tcp("tc-it", "192.168.50.10", 502) == "open"
        assert probe_tcp("tc-it", "192.168.50.11", 502) == "dropped"
        env = {
            **os.environ,
            "APPLIANCE_DATA_DIR": str(tmp_path / "data"),
            "APPLIANCE_RUN_DIR": str(tmp_path / "run"),
        }
        st = subprocess.run(
            [sys.executable, "-m", "appliance", "status", "--json"],
            capture_output=True,
            text=True,
            env=env,
            cwd=REPO,
            timeout=60,
        )
        data = json.loads(st.stdout)
        assert data["running"]["state"] == "confirmed" and data["unit"] == "demo-unit"
        # no management link in this lab: the unit works but says what is missing
        assert data["health"]["state"] == "degraded", data["health"]
        assert [r["code"] for r in data["health"]["reasons"]] == ["mgmt-link-down"]
        # up again over a running lab: leftovers are cleaned up first
        again = appliance("lab", "up", "--no-mgmt", *lab)
        assert again.returncode == 0 and "removing the previous lab" in again.stdout
    finally:
        down = appliance("lab", "down", *lab)
    assert down.returncode == 0, down.stderr
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not [ln for ln in left.splitlines() if ln.startswith("tc-")]
    gone = appliance("lab", "status", *lab)
    assert "not up" in gone.stdout
