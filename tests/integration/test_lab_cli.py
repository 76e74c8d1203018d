"""`appliance lab up|status|down` as a person runs them (own prefix, so a demo can stay up),
and the demo configuration as the lab renders it."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from appliance.config.load import load_text
from appliance.errors import LabError
from appliance.lab.demo import PLACEHOLDERS, probe_tcp, render_config

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "examples" / "demo.yaml"
LAB_VALUES = {
    "LAB_RTU_PORT": "/srv/lab/tty-rtu-app",
    "LAB_FLEET_CA": "/srv/lab/fleet/ca.pem",
    "LAB_FLEET_TOKEN": "k5Yb0m3Xw2Qe8Rt7Uy6Io5Pa4Sd3Fg2Hj1Kl0Zx9Cv8",
}


def appliance(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "appliance", *args],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=REPO,
    )


# -- the demo configuration, rendered for a lab ---------------------------------------------


def test_demo_config_rendered_for_the_full_lab_is_valid() -> None:
    text, notes = render_config(DEMO.read_text(), LAB_VALUES, "examples/demo.yaml")
    assert notes == [] and "${" not in text
    config = load_text(text, "rendered demo.yaml").config
    devices = {d.name: d for d in config.devices}
    assert set(devices) == {"plc1", "plc-slow", "rtu1", "rtu2", "opcua1"}
    assert {d.protocol for d in devices.values()} == {"modbus-tcp", "modbus-rtu", "opcua"}
    assert devices["rtu1"].serial.port == devices["rtu2"].serial.port == "/srv/lab/tty-rtu-app"
    assert devices["plc-slow"].address == "192.168.50.19:502"
    assert devices["plc-slow"].timeout > 0.8  # the slow PLC answers after 0.8 s
    assert devices["opcua1"].address == "opc.tcp://192.168.50.20:4840/"
    temperature = {t.name: t for t in devices["plc1"].tags}["temperature"]
    assert temperature.unit == "degC" and temperature.deadband is not None
    limits = temperature.alarms
    assert (limits.high, limits.high_high) == (24, 24.8) and limits.hysteresis > 0
    writable = [f"{d.name}.{t.name}" for d in config.devices for t in d.tags if t.writable]
    assert "plc1.speed_setpoint" in writable
    assert config.fleet is not None
    assert config.fleet.url == "https://10.10.0.2:8443/api/v1/heartbeat"
    assert config.fleet.ca_cert == LAB_VALUES["LAB_FLEET_CA"]
    assert config.fleet.token == LAB_VALUES["LAB_FLEET_TOKEN"]
    assert [s.host for s in config.syslog] == ["10.10.0.2"]
    assert [c.name for c in config.conduits] == ["scada-modbus"]


def test_demo_config_in_a_lab_without_extras_leaves_their_parts_out() -> None:
    text, notes = render_config(DEMO.read_text(), {}, "examples/demo.yaml")
    assert notes == [
        "device rtu1 left out: this lab has no rtu extra",
        "device rtu2 left out: this lab has no rtu extra",
        "fleet section left out: this lab has no fleet receiver",
    ]
    config = load_text(text).config
    assert [d.name for d in config.devices] == ["plc1", "plc-slow", "opcua1"]
    assert config.fleet is None


def test_render_config_refuses_unknown_placeholders_and_keeps_plain_text() -> None:
    plain = DEMO.read_text().split("\n# The appliance itself polls")[0] + "\n"
    assert render_config(plain, LAB_VALUES) == (plain, [])
    with pytest.raises(LabError, match=r"unknown placeholder \$\{LAB_NOPE\}"):
        render_config("version: 1\nunit: {name: '${LAB_NOPE}'}\n", LAB_VALUES)
    with pytest.raises(LabError, match=r"LAB_RTU_PORT.*rtu extra"):
        render_config("version: 1\nunit: {name: '${LAB_RTU_PORT}'}\n", {})
    assert set(PLACEHOLDERS) == {"LAB_RTU_PORT", "LAB_FLEET_CA", "LAB_FLEET_TOKEN"}
    raw = yaml.safe_load(DEMO.read_text())
    assert raw["fleet"]["token"] == "${LAB_FLEET_TOKEN}"  # no secret in the repository


# -- the CLI ------------------------------------------------------------------------------------


def test_lab_up_commits_the_demo_config_then_down_removes_everything(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: creates network namespaces")
    lab = ["--prefix", "tc", "--dir", str(tmp_path)]
    try:
        up = appliance("lab", "up", "--no-mgmt", "--plcs", "2", *lab)
        assert up.returncode == 0, up.stderr
        assert "committed as revision 1 and running" in up.stdout
        assert "WARNING" not in up.stdout, up.stdout
        status = json.loads(appliance("lab", "status", "--json", *lab).stdout)
        assert status["appliance"]["net_alive"] is True
        assert all(p["alive"] for p in status["processes"].values()), status["processes"]
        extras = status["extras"]
        assert sorted(extras) == ["fleet", "opcua", "rtu", "slow_plc", "syslog"]
        port = Path(extras["rtu"]["port"])
        assert port == tmp_path / "tty-rtu-app" and port.is_symlink()
        people = appliance("lab", "status", *lab).stdout
        assert f"RTU line  {port}" in people
        rendered = tmp_path / "config.yaml"
        assert stat.S_IMODE(rendered.stat().st_mode) == 0o600  # it holds the fleet token
        token = Path(extras["fleet"]["token_file"]).read_text().strip()
        config = load_text(rendered.read_text()).config
        assert config.fleet is not None and config.fleet.token == token
        assert {d.serial.port for d in config.devices if d.serial} == {str(port)}
        assert probe_tcp("tc-it", "192.168.50.10", 502) == "open"
        assert probe_tcp("tc-it", "192.168.50.11", 502) == "dropped"
        env = {
            **os.environ,
            "APPLIANCE_DATA_DIR": str(tmp_path / "data"),
            "APPLIANCE_RUN_DIR": str(tmp_path / "run"),
        }

        def status() -> dict:
            st = subprocess.run(
                [sys.executable, "-m", "appliance", "status", "--json"],
                capture_output=True,
                text=True,
                env=env,
                cwd=REPO,
                timeout=60,
            )
            return json.loads(st.stdout)

        data = status()
        assert data["running"]["state"] == "confirmed" and data["unit"] == "demo-unit"
        # the roles have just started: booting (never a fault) until the grace is over
        deadline = time.time() + 60
        while data["health"]["state"] == "booting" and time.time() < deadline:
            assert [r for r in data["health"]["reasons"] if r["severity"] == "fault"] == []
            time.sleep(1)
            data = status()
        # no management link in this lab: the unit works but says what is missing
        assert data["health"]["state"] == "degraded", data["health"]
        reasons = data["health"]["reasons"]
        assert "mgmt-link-down" in [r["code"] for r in reasons]
        assert [r for r in reasons if r["severity"] == "fault"] == []
        # up again over a running lab: leftovers are cleaned up first
        again = appliance("lab", "up", "--no-mgmt", *lab)
        assert again.returncode == 0 and "removing the previous lab" in again.stdout
    finally:
        down = appliance("lab", "down", *lab)
    assert down.returncode == 0, down.stderr
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not [ln for ln in left.splitlines() if ln.startswith("tc-")]
    assert not (tmp_path / "tty-rtu-app").is_symlink() and not (tmp_path / "fleet").exists()
    assert not (tmp_path / "config.yaml").exists()
    gone = appliance("lab", "status", *lab)
    assert "not up" in gone.stdout
