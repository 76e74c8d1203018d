"""The files the image installs: fail-closed ruleset in sync with the renderer, hardened units."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from appliance import daemon
from appliance.net.render import render_fail_closed
from appliance.roles import ROLE_NAMES

SYSTEM = Path(__file__).resolve().parents[2] / "system"
UNITS = sorted((SYSTEM / "systemd").glob("*.service"))
MAX_EXPOSURE = 2.0


def test_failclosed_json_is_what_the_renderer_renders() -> None:
    shipped = json.loads((SYSTEM / "failclosed.json").read_text())
    assert shipped == render_fail_closed().document(), (
        "system/failclosed.json is stale: regenerate it with "
        "`.venv/bin/python -m appliance net fail-closed > system/failclosed.json`"
    )


@pytest.mark.parametrize("unit", UNITS, ids=[u.name for u in UNITS])
def test_unit_is_hardened(unit: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.fail("systemd-analyze is missing: scripts/setup-host installs systemd")
    cp = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=unit.parent,
    )
    m = re.search(r"Overall exposure level for \S+: ([\d.]+)", cp.stdout + cp.stderr)
    assert m, cp.stdout + cp.stderr
    assert float(m.group(1)) <= MAX_EXPOSURE, cp.stdout


def test_net_unit_keeps_only_net_admin() -> None:
    text = (SYSTEM / "systemd" / "appliance-net.service").read_text()
    assert "CapabilityBoundingSet=CAP_NET_ADMIN\n" in text
    assert "APPLIANCE_OWNS_HOST=1" in text  # the guard in appliance.daemon needs it on a unit
    assert "User=appliance" in text


ROLE_UNITS = {f"appliance-{role}.service": role for role in ROLE_NAMES}


def unit_settings(path: Path) -> dict[str, list[str]]:
    """Each `Key=value` of a unit file (every value of a key given several times)."""
    out: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")) and "=" in line:
            key, value = line.split("=", 1)
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def test_every_role_has_its_unit() -> None:
    assert sorted(ROLE_UNITS) == sorted(
        u.name for u in UNITS if u.name != "appliance-failclosed.service"
    )


@pytest.mark.parametrize("name", sorted(ROLE_UNITS))
def test_a_role_unit_restarts_its_role_after_a_factory_reset(name: str) -> None:
    """A factory reset makes each role process exit with EXIT_RESET (appliance.daemon);
    only systemd starts it again, on the fresh databases: the unit must restart it
    whatever Restart= says, and not count it as a failure."""
    role = ROLE_UNITS[name]
    unit = unit_settings(SYSTEM / "systemd" / name)
    (exec_start,) = unit["ExecStart"]
    assert exec_start.split()[1:] == ["run", "--roles", role]  # one role, in the runner
    assert unit["Restart"] == ["always"]
    code = str(daemon.EXIT_RESET)
    assert code in " ".join(unit.get("RestartForceExitStatus", [])).split(), unit
    assert code in " ".join(unit.get("SuccessExitStatus", [])).split(), unit
    # the reset generation lies in the data directory: the unit's own, read-write
    env = " ".join(unit["Environment"]).split()
    assert "APPLIANCE_DATA_DIR=/var/lib/appliance" in env
    assert unit["StateDirectory"] == ["appliance"]


def test_the_sysctls_apply_only_once_the_machine_opted_in() -> None:
    """The package keeps system/sysctl.d out of /usr/lib/sysctl.d (installing it changes no
    setting of a machine that did not opt in); the fail-closed unit, which appliance.target
    starts, applies every file before it loads the ruleset."""
    unit = unit_settings(SYSTEM / "systemd" / "appliance-failclosed.service")
    pre = [cmd.split() for cmd in unit.get("ExecStartPre", [])]
    applied = {
        arg for argv in pre if argv[0] == "+/usr/lib/systemd/systemd-sysctl" for arg in argv[1:]
    }
    shipped = {
        f"/usr/lib/appliance/sysctl.d/{f.name}" for f in (SYSTEM / "sysctl.d").glob("*.conf")
    }
    assert shipped and shipped == applied, (shipped, pre)
    target = unit_settings(SYSTEM / "systemd" / "appliance.target")
    assert "appliance-failclosed.service" in " ".join(target["Wants"]).split()


def test_the_target_and_the_maintainer_scripts_name_every_role() -> None:
    """appliance.target starts every role of roles.ROLES; the maintainer scripts get the
    list from the registry at build time (@ROLE_UNITS@), never one of their own."""
    target = unit_settings(SYSTEM / "systemd" / "appliance.target")
    assert set(ROLE_UNITS) <= set(" ".join(target["Wants"]).split())
    for script in ("postinst", "prerm", "postrm"):
        text = (SYSTEM.parent / "image" / "deb" / script).read_text()
        assert "@ROLE_UNITS@" in text, script
        assert not any(f"appliance-{r}.service" in text for r in ROLE_NAMES), script


@pytest.mark.parametrize("name", sorted(ROLE_UNITS))
def test_every_role_unit_limits_memory_tasks_and_cpu(name: str) -> None:
    """IEC 62443-4-2 CR 7.1/7.2: one role cannot starve the others. What each role really
    uses is measured against these in tests/integration/test_resource_limits.py."""
    unit = unit_settings(SYSTEM / "systemd" / name)
    mib = {"M": 1, "G": 1024}
    high, top = (int(unit[k][0][:-1]) * mib[unit[k][0][-1]] for k in ("MemoryHigh", "MemoryMax"))
    assert 128 <= high < top <= 1024, (high, top)
    assert 16 <= int(unit["TasksMax"][0]) <= 256
    assert 1 <= int(unit["CPUWeight"][0]) <= 10000
