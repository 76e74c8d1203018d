"""The machine has every shared library that the venv's binaries load.

A fresh minimal Debian lacked libatomic1, which Playwright's bundled node needs, so every
browser test errored at set-up. This asks the dynamic linker about every ELF file the
venv holds (wheels' extension modules and bundled executables), so a missing package
shows up as one failing test naming the file and the library, not as 15 set-up errors.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

VENV_LIBS = Path(sysconfig.get_paths()["purelib"])


def _elf_files(root: Path) -> list[Path]:
    out = []
    for path in root.rglob("*"):
        if not path.is_file() or path.is_symlink():
            continue
        if not (path.suffix == ".so" or ".so." in path.name or path.stat().st_mode & 0o111):
            continue
        with path.open("rb") as f:
            if f.read(4) == b"\x7fELF":
                out.append(path)
    return out


@pytest.mark.skipif(sys.prefix == sys.base_prefix, reason="runs in the project's venv only")
def test_every_binary_in_the_venv_finds_its_libraries() -> None:
    ldd = shutil.which("ldd")
    assert ldd, "ldd (libc-bin) is part of every Debian"
    files = _elf_files(VENV_LIBS)
    assert files, f"no ELF file under {VENV_LIBS}: is this the project's venv?"
    missing = []
    for path in files:
        cp = subprocess.run([ldd, str(path)], capture_output=True, text=True, timeout=30)
        for line in cp.stdout.splitlines():
            if "not found" in line:
                missing.append(f"{path.relative_to(VENV_LIBS)}: {line.strip()}")
    assert not missing, "install the Debian package that holds each (scripts/setup-host):\n" + (
        "\n".join(missing)
    )
