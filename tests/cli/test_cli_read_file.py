"""`appliance config validate FILE` with files that are not UTF-8 YAML of a sane size:
exit 2, one line, where in the file, in well under a second, and bounded memory."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "examples" / "demo.yaml"
TEXT = DEMO.read_text()
SITE_LINE = TEXT.splitlines().index("  site: Lab bench") + 1


@pytest.mark.parametrize(
    ("encode", "needle"),
    [
        (lambda t: t.replace("Lab bench", "Labé bench").encode("latin-1"), f":{SITE_LINE}:"),
        (lambda t: t.encode("utf-16"), "UTF-16"),
        (lambda t: t.encode() + b"\xff\xfe\x00", "offset"),
    ],
)
def test_a_file_that_is_not_utf8_is_exit_2_with_where(tmp_path: Path, encode, needle) -> None:
    bad = tmp_path / "site.yaml"
    bad.write_bytes(encode(TEXT))
    line = one_line_error(run("config", "validate", str(bad)), 2, "UTF-8", needle)
    assert "UnicodeDecodeError" not in line


def test_a_raw_nul_names_its_line(tmp_path: Path) -> None:
    bad = tmp_path / "site.yaml"
    bad.write_text(TEXT.replace("Lab bench", "Lab\0bench"))
    one_line_error(run("config", "validate", str(bad)), 2, f"site.yaml:{SITE_LINE}:", "U+0000")


def test_a_file_larger_than_the_limit_is_refused_without_reading_it_all(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    with big.open("wb") as f:
        f.write(TEXT.encode())
        f.seek(300 * 1024 * 1024)  # sparse: 300 MB that costs no disk
        f.write(b"\n")
    cp = run_limited("config", "validate", str(big))
    one_line_error(cp, 2, "larger than 1 MiB")


def test_dev_zero_is_refused_quickly() -> None:
    start = time.monotonic()
    cp = run_limited("config", "validate", "/dev/zero")
    one_line_error(cp, 2, "larger than 1 MiB")
    assert time.monotonic() - start < 10


def test_stdin_is_bounded_too() -> None:
    cp = subprocess.run(
        [sys.executable, "-m", "appliance", "config", "validate", "-"],
        stdin=open("/dev/zero", "rb"),  # noqa: SIM115 - closed with the process
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=_limit_memory,
    )
    one_line_error(cp, 2, "larger than 1 MiB")


def one_line_error(cp: subprocess.CompletedProcess, code: int, *needles: str) -> str:
    assert cp.returncode == code, (cp.returncode, cp.stdout, cp.stderr)
    assert "Traceback" not in cp.stderr
    line = cp.stderr.strip()
    assert line.startswith("appliance: ") and "\n" not in line, line
    for needle in needles:
        assert needle in line, line
    return line


def run(*args: str) -> subprocess.CompletedProcess:
    return run_limited(*args)


def _limit_memory() -> None:
    import resource

    # 400 MiB of address space: the interpreter and the package fit, a 300 MB read does not
    resource.setrlimit(resource.RLIMIT_AS, (400 * 1024 * 1024, 400 * 1024 * 1024))


def run_limited(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    return subprocess.run(
        [sys.executable, "-m", "appliance", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        cwd=REPO,
        preexec_fn=_limit_memory,
    )
