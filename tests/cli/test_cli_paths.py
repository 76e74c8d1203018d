"""Where the CLI looks when told nowhere: the unit's directories, else a lab up in the checkout."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from appliance.state.live import LiveState


def _status(cwd: Path, default_data: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    # the unit's default directories, moved somewhere empty for the test
    code = (
        "import sys, appliance.paths as p; from pathlib import Path; "
        f"p.DEFAULT_DATA_DIR = Path({str(default_data / 'data')!r}); "
        f"p.DEFAULT_RUN_DIR = Path({str(default_data / 'run')!r}); "
        "from appliance.cli import main; sys.argv = ['appliance', 'status']; main()"
    )
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=cwd, timeout=60
    )


def _fake_lab(root: Path) -> Path:
    lab = root / ".lab"
    (lab / "data").mkdir(parents=True)
    (lab / "data" / "config.db").write_bytes(b"")
    LiveState(lab / "run").write("net", {"forwarding": True})  # alive: this pid, now
    return lab


def test_without_unit_state_status_says_where_it_looked(tmp_path: Path) -> None:
    cp = _status(tmp_path, tmp_path / "unit")
    assert cp.returncode == 0, cp.stderr
    first = cp.stdout.splitlines()[0]
    assert first.startswith(f"state:     none found in {tmp_path / 'unit' / 'data'}")
    assert "APPLIANCE_DATA_DIR" in first and "make demo" in first


def test_a_lab_up_in_this_folder_is_used_and_said_in_one_line(tmp_path: Path) -> None:
    lab = _fake_lab(tmp_path)
    # the live file names this test's pid: "alive" while the test runs
    cp = _status(tmp_path, tmp_path / "unit")
    assert cp.returncode == 0, cp.stderr
    note = [line for line in cp.stderr.splitlines() if line.startswith("appliance:")]
    assert note == [
        f"appliance: no unit state in {tmp_path / 'unit' / 'data'}; using the lab's unit in "
        f"{lab} (export APPLIANCE_DATA_DIR={lab / 'data'} APPLIANCE_RUN_DIR={lab / 'run'} "
        "to say so)"
    ]
    assert "state:     none found" not in cp.stdout
    assert "net role:  running" in cp.stdout


def test_a_lab_whose_roles_are_gone_is_not_used(tmp_path: Path) -> None:
    lab = _fake_lab(tmp_path)
    (lab / "run" / "net.json").unlink()
    cp = _status(tmp_path, tmp_path / "unit")
    assert "using the lab's unit" not in cp.stderr
    assert cp.stdout.startswith("state:     none found")
