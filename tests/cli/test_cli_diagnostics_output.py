"""`appliance diagnostics -o FILE` follows no symlink planted at FILE (root runs it, often
in a shared directory such as /tmp): one line naming the option, exit 1, the link's target
untouched; a plain file is written 0600."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def run(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    env.update(APPLIANCE_DATA_DIR=str(tmp / "data"), APPLIANCE_RUN_DIR=str(tmp / "run"))
    return subprocess.run(
        [sys.executable, "-m", "appliance", *args], capture_output=True, text=True, env=env,
        timeout=120,
    )  # fmt: skip


def test_a_symlink_at_the_output_is_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep me\n")
    planted = tmp_path / "bundle.tar.gz"
    planted.symlink_to(victim)
    cp = run(tmp_path, "diagnostics", "-o", str(planted))
    assert cp.returncode != 0 and "Traceback" not in cp.stderr
    assert cp.stderr.strip().splitlines() == [
        f"appliance: --output: cannot write {planted}: it is a symlink"
    ]
    assert victim.read_text() == "keep me\n"


def test_a_plain_output_file_is_written_for_its_owner_only(tmp_path: Path) -> None:
    out = tmp_path / "bundle.tar.gz"
    cp = run(tmp_path, "diagnostics", "-o", str(out))
    assert cp.returncode == 0, cp.stderr
    assert out.stat().st_mode & 0o777 == 0o600 and out.stat().st_size > 0


def test_an_archive_taken_on_a_unit_with_state_is_audited(tmp_path: Path) -> None:
    """IEC 62443-4-2 CR 2.8: who took the unit's figures, logs and (redacted) config."""
    from appliance.state.db import Audit, Store

    Store(tmp_path / "data").close()  # a unit with state: the config DB exists
    out = tmp_path / "bundle.tar.gz"
    cp = run(tmp_path, "diagnostics", "-o", str(out))
    assert cp.returncode == 0, cp.stderr
    store = Store(tmp_path / "data")
    try:
        rows = [(a.action, a.source) for a in Audit.select().order_by(Audit.id)]
        assert rows and rows[-1] == ("diagnostics", "cli"), rows
        assert store.verify_audit().broken_at is None
    finally:
        store.close()
