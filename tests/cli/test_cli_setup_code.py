"""`sudo appliance setup-code` as root on a data directory the service user owns: it follows
no symlink the service user planted, and says so in one line (no traceback)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SERVICE = 4242

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (CI runs as root)")


def setup_code(tmp_path: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    where = ["--data-dir", str(tmp_path / "data"), "--run-dir", str(tmp_path / "run")]
    return subprocess.run(
        [sys.executable, "-m", "appliance", "setup-code", *where],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        cwd=REPO,
    )


@pytest.fixture
def data(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    d.mkdir(mode=0o750)
    os.chown(d, SERVICE, SERVICE)
    return d


def test_setup_code_refuses_a_symlinked_secrets_dir(tmp_path: Path, data: Path) -> None:
    etc = tmp_path / "etc"
    etc.mkdir(mode=0o755)
    (etc / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    (data / "secrets").symlink_to(etc)
    cp = setup_code(tmp_path)
    assert cp.returncode == 77, (cp.returncode, cp.stdout, cp.stderr)
    assert "Traceback" not in cp.stderr and cp.stdout == ""
    line = cp.stderr.strip()
    assert "\n" not in line and line.startswith("appliance: "), line
    assert "secrets" in line and "refusing" in line, line
    st = etc.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 0, 0o755)
    assert sorted(os.listdir(etc)) == ["passwd"]
    assert (etc / "passwd").read_text() == "root:x:0:0::/root:/bin/sh\n"


def test_setup_code_refuses_to_print_a_symlinked_code(tmp_path: Path, data: Path) -> None:
    secret = tmp_path / "shadow"
    secret.write_text("root:$6$hash-of-root:19000::::::\n")
    os.chmod(secret, 0o600)
    (data / "secrets").mkdir(mode=0o700)
    os.chown(data / "secrets", SERVICE, SERVICE)
    (data / "secrets" / "setup-code").symlink_to(secret)
    cp = setup_code(tmp_path)
    assert cp.returncode == 77, (cp.returncode, cp.stdout, cp.stderr)
    assert "hash-of-root" not in cp.stdout + cp.stderr
    assert "symlink" in cp.stderr and "Traceback" not in cp.stderr


def test_setup_code_prints_a_code_owned_by_the_service_user(tmp_path: Path, data: Path) -> None:
    cp = setup_code(tmp_path)
    assert cp.returncode == 0, cp.stderr
    code = cp.stdout.strip()
    f = data / "secrets" / "setup-code"
    assert f.read_text().strip() == code and len(code) == 19
    for p, mode in ((data / "secrets", 0o700), (f, 0o600)):
        st = p.lstat()
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (SERVICE, SERVICE, mode)
    again = setup_code(tmp_path)
    assert again.returncode == 0 and again.stdout.strip() == code  # stable until used
