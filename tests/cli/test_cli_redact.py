"""`config export --redact` and `config diff --redact`: what a person attaches to a ticket."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "examples" / "demo.yaml"
SECRETS = ("pw12", "s3cr3t", "hookpass99")


def run(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    env.update(APPLIANCE_DATA_DIR=str(tmp / "data"), APPLIANCE_RUN_DIR=str(tmp / "run"))
    cp = subprocess.run(
        [sys.executable, "-m", "appliance", *args], capture_output=True, text=True, env=env,
        timeout=60,
    )  # fmt: skip
    assert cp.returncode == 0, cp.stderr
    return cp


def test_export_and_diff_redacted_hold_no_secret(tmp_path: Path) -> None:
    doc = yaml.safe_load(DEMO.read_text())
    doc["fleet"] = {"url": "https://fleet.example/hb", "token": "s3cr3t"}
    doc["webhooks"] = [{"url": "https://hook:hookpass99@hooks.example/a"}]
    first = tmp_path / "a.yaml"
    first.write_text(yaml.safe_dump(doc))
    run(tmp_path, "config", "import", str(first), "-m", "first")
    run(tmp_path, "config", "commit")
    doc["fleet"]["token"] = "pw12"
    second = tmp_path / "b.yaml"
    second.write_text(yaml.safe_dump(doc))
    run(tmp_path, "config", "import", str(second), "-m", "second")
    plain = run(tmp_path, "config", "export").stdout
    assert "s3cr3t" in plain  # without --redact: the document as written
    exported = run(tmp_path, "config", "export", "--redact").stdout
    diff = run(tmp_path, "config", "diff", "--redact").stdout
    for text in (exported, diff):
        for secret in SECRETS:
            assert secret not in text, text
    assert "@hooks.example/a" in exported
    assert "~ fleet" in diff and "[redacted, changed]" in diff  # a changed secret still shows
