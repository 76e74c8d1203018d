"""The files the image installs: fail-closed ruleset in sync with the renderer, hardened units."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from appliance.net.render import render_fail_closed

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
