"""`sudo appliance factory-reset` reads the agent's reset key from a directory the roles own:
a symlink planted there must not make root send another file's contents to the socket."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from appliance.state.live import LiveState


@pytest.mark.skipif(os.geteuid() != 0, reason="factory-reset is root's (CI runs as root)")
def test_a_symlinked_reset_key_is_refused(tmp_path: Path) -> None:
    data, run = tmp_path / "data", tmp_path / "run"
    data.mkdir()
    (data / "config.db").write_bytes(b"")
    secret = tmp_path / "shadow"
    secret.write_text("root:$6$not-for-the-service-user\n")
    secret.chmod(0o600)
    LiveState(run).write("agent", {})  # "alive": names this test's pid
    (run / "agent.reset-key").symlink_to(secret)
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    env.update(APPLIANCE_DATA_DIR=str(data), APPLIANCE_RUN_DIR=str(run))
    cp = subprocess.run(
        [sys.executable, "-m", "appliance", "factory-reset", "--yes"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert cp.returncode == 77, (cp.stdout, cp.stderr)
    assert "Traceback" not in cp.stderr
    assert cp.stderr.strip().startswith("appliance: ") and "symlink" in cp.stderr
    assert len(cp.stderr.strip().splitlines()) == 1
    assert secret.read_text().startswith("root:")  # untouched, and never sent
