"""The bootable image: `make image`'s build/appliance.img, checked as built and booted.

Built once per session by scripts/build-image into build/ (reused when it is newer than
everything that goes into it; APPLIANCE_IMAGE_REBUILD=1 forces a build). The boot runs a
copy, grown by 1.5 GiB with qemu-img, under qemu with OVMF (TCG: KVM hangs on these
machines), serial console to a file, no network. The unit has no login (root is locked),
so the test reads what it did from the outside: the serial console while it runs, and
after a clean power-off (ACPI power button) the disk itself: the journal on the data
partition, the GPT, the ESP's loader entries and the root slot's bytes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from appliance.roles import ROLE_NAMES

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / "build"
IMAGE = BUILD / "appliance.img"
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
GROW = 1536 * 1024 * 1024
SECTOR = 512
# What goes into the image: a change in any of these makes build/appliance.img stale.
INPUTS = (
    "pyproject.toml", "README.md", "appliance", "system", "image",
    "scripts/build-image", "scripts/build-deb",
)  # fmt: skip
BOOT_TIMEOUT = 420
ESP_TYPE = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"
ROOT_TYPE = "4f68bce3-e8cd-4db1-96e7-fbcaf984b709"

pytestmark = pytest.mark.integration


# --- the secret scan (pure: a tree in, findings out) ---------------------------------------

PRIVATE_KEY = re.compile(rb"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----")
TOKENS = re.compile(
    rb"(?:ghp_[A-Za-z0-9]{36}|github_pat_[A-Za-z0-9_]{40,}|AKIA[0-9A-Z]{16}"
    rb"|xox[abpr]-[A-Za-z0-9-]{10,}|glpat-[A-Za-z0-9_-]{20})"
)
# Where a unit's own secrets would land. Not the Python packages in the venv: their code
# holds PEM markers and test keys of its own (cryptography's serialization, for one).
SCAN_DIRS = ("etc", "root", "home", "srv", "opt", "var", "usr/local", "usr/lib/appliance", "boot")
SCAN_MAX = 4 * 1024 * 1024


def find_secrets(root: Path) -> list[str]:
    """Every secret a built root must not hold, one line each: private keys, tokens,
    password hashes in /etc/shadow, a machine-id (the image's is empty: first boot makes
    it), ssh host keys."""
    found = []
    for rel in SCAN_DIRS:
        top = root / rel
        if not top.is_dir() or top.is_symlink():
            continue
        for dirpath, dirs, files in os.walk(top):
            dirs[:] = [d for d in dirs if d != "site-packages"]
            for name in files:
                path = Path(dirpath) / name
                if path.is_symlink() or not path.is_file() or path.stat().st_size > SCAN_MAX:
                    continue
                data = path.read_bytes()
                where = "/" + str(path.relative_to(root))
                if PRIVATE_KEY.search(data):
                    found.append(f"{where}: a private key")
                if m := TOKENS.search(data):
                    found.append(f"{where}: a token ({m.group()[:6].decode()}...)")
                if name.startswith("ssh_host_") and name.endswith("_key"):
                    found.append(f"{where}: an ssh host key")
    shadow = root / "etc" / "shadow"
    if shadow.is_file():
        for line in shadow.read_text().splitlines():
            user, _, rest = line.partition(":")
            pw = rest.split(":", 1)[0]
            if pw.lstrip("!*").startswith("$") or (pw and pw[0] not in "!*"):
                found.append(f"/etc/shadow: a password for {user}")
    for mid in ("etc/machine-id", "var/lib/dbus/machine-id"):
        p = root / mid
        if p.is_file() and not p.is_symlink() and p.read_text().strip():
            found.append(f"/{mid}: a machine-id ({p.read_text().strip()[:8]}...)")
    return found


def test_the_secret_scan_finds_each_kind(tmp_path: Path) -> None:
    """The scan itself: a tree with one of each finding, and a clean one."""
    clean = tmp_path / "clean"
    (clean / "etc").mkdir(parents=True)
    (clean / "etc" / "shadow").write_text("root:!*:19000:0:99999:7:::\nappliance:!:19000::::::\n")
    (clean / "etc" / "machine-id").write_text("")
    assert find_secrets(clean) == []

    dirty = tmp_path / "dirty"
    shutil.copytree(clean, dirty)
    (dirty / "etc" / "shadow").write_text("root:$y$j9T$abc$def:19000:0:99999:7:::\n")
    (dirty / "etc" / "machine-id").write_text("0123456789abcdef0123456789abcdef\n")
    (dirty / "etc" / "ssl").mkdir()
    (dirty / "etc" / "ssl" / "unit.pem").write_text("-----BEGIN EC PRIVATE KEY-----\nMHcC\n")
    (dirty / "etc" / "ssh").mkdir()
    (dirty / "etc" / "ssh" / "ssh_host_ed25519_key").write_text("x")
    (dirty / "var" / "lib").mkdir(parents=True)
    (dirty / "var" / "lib" / "fleet.env").write_text("TOKEN=ghp_" + "a1" * 18 + "\n")
    found = "\n".join(find_secrets(dirty))
    for what in (
        "/etc/shadow: a password for root",
        "/etc/machine-id: a machine-id",
        "/etc/ssl/unit.pem: a private key",
        "/etc/ssh/ssh_host_ed25519_key: an ssh host key",
        "/var/lib/fleet.env: a token (ghp_a1...)",
    ):
        assert what in found, f"{what!r} not in:\n{found}"


# --- the partition design agrees with itself (no root needed) ------------------------------


def _conf(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.startswith("#"):
            out[key.strip()] = value.strip()
    return out


def test_the_partition_uuids_agree() -> None:
    """fstab and the loader entries name the partitions by the UUIDs image/repart.d gives
    them: a changed UUID in one place would make the unit unbootable or lose its data."""
    parts = {
        _conf(p)["Label"]: _conf(p) for p in sorted((REPO / "image" / "repart.d").glob("*.conf"))
    }
    assert list(parts) == ["esp", "root-a", "root-b", "data"]
    fstab = (REPO / "image" / "rootfs" / "etc" / "fstab").read_text()
    mounts = {f[1]: f[0] for f in (ln.split() for ln in fstab.splitlines()) if f and f[0][0] != "#"}
    assert "/" not in mounts, "the root is the booted slot's, not one fstab names"
    assert mounts["/efi"] == f"PARTUUID={parts['esp']['UUID']}"
    assert mounts["/data"] == f"PARTUUID={parts['data']['UUID']}"
    entries = REPO / "image" / "esp" / "loader" / "entries"
    for slot in ("a", "b"):
        text = (entries / f"appliance-{slot}+3.conf").read_text()
        assert f"root=PARTUUID={parts['root-' + slot]['UUID']} " in text
        assert re.search(r"\bro\b", text), f"slot {slot}'s entry does not mount / read-only"
    assert parts["root-a"]["SizeMinBytes"] == parts["root-a"]["SizeMaxBytes"]
    assert parts["root-b"]["SizeMaxBytes"] == parts["root-a"]["SizeMaxBytes"]
    assert "SizeMaxBytes" not in parts["data"], "the data partition must be free to grow"


# --- the built image ---------------------------------------------------------------------


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "the image test needs root: scripts/build-image runs mmdebstrap, loop mounts"
    for tool in ("mmdebstrap", "qemu-system-x86_64", "qemu-img", "sfdisk", "mdir", "bmaptool"):
        if shutil.which(tool) is None:
            return f"{tool} is missing: scripts/setup-host --test installs it"
    if not OVMF_CODE.is_file():
        return f"{OVMF_CODE} is missing: scripts/setup-host --test installs ovmf"
    return None


def _stale() -> bool:
    if os.environ.get("APPLIANCE_IMAGE_REBUILD") or not (BUILD / "SHA256SUMS").is_file():
        return True
    built = min(
        (BUILD / n).stat().st_mtime
        for n in ("appliance.img", "appliance.img.zst", "appliance.img.bmap", "SHA256SUMS")
    )
    for name in INPUTS:
        top = REPO / name
        paths = [top] if top.is_file() else [p for p in top.rglob("*") if p.is_file()]
        if any(p.stat().st_mtime > built for p in paths if "__pycache__" not in p.parts):
            return True
    return False


@dataclass
class Part:
    number: int
    start: int
    size: int
    name: str
    type: str
    uuid: str


def partitions(disk: Path) -> list[Part]:
    cp = subprocess.run(["sfdisk", "-J", str(disk)], capture_output=True, text=True, check=True)
    table = json.loads(cp.stdout)["partitiontable"]
    assert table["label"] == "gpt"
    return [
        Part(i + 1, p["start"] * SECTOR, p["size"] * SECTOR, p.get("name", ""),
             p["type"].lower(), p["uuid"].lower())
        for i, p in enumerate(table["partitions"])
    ]  # fmt: skip


def by_name(disk: Path) -> dict[str, Part]:
    return {p.name: p for p in partitions(disk)}


def part_sha256(disk: Path, part: Part) -> str:
    h = hashlib.sha256()
    with disk.open("rb") as f:
        f.seek(part.start)
        left = part.size
        while left:
            chunk = f.read(min(left, 8 << 20))
            assert chunk, "the disk ends inside a partition"
            h.update(chunk)
            left -= len(chunk)
    return h.hexdigest()


@contextlib.contextmanager
def mounted(disk: Path, part: Part, where: Path) -> Iterator[Path]:
    """The partition mounted read-only (noload: the journal is not replayed, nothing is
    written) from a loop device, unmounted after."""
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mount", "-o", f"ro,noload,loop,offset={part.start},sizelimit={part.size}",
         str(disk), str(where)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=False)


def esp_entries(disk: Path) -> list[str]:
    esp = by_name(disk)["esp"]
    cp = subprocess.run(
        ["mdir", "-b", "-i", f"{disk}@@{esp.start}", "::/loader/entries"],
        capture_output=True, text=True, check=True,
        env={**os.environ, "MTOOLS_SKIP_CHECK": "1"},
    )  # fmt: skip
    return sorted(Path(line.strip()).name for line in cp.stdout.splitlines() if line.strip())


def ext4_size(disk: Path, part: Part) -> int:
    """The ext4 file system's size in bytes, from its superblock."""
    with disk.open("rb") as f:
        f.seek(part.start + 1024)
        sb = f.read(1024)
    assert struct.unpack_from("<H", sb, 0x38)[0] == 0xEF53, f"{part.name} is not ext4"
    (lo,) = struct.unpack_from("<I", sb, 4)
    (log_block,) = struct.unpack_from("<I", sb, 24)
    (hi,) = struct.unpack_from("<I", sb, 0x150)
    return ((hi << 32) | lo) * (1024 << log_block)


@pytest.fixture(scope="session")
def image() -> Path:
    why = _skip_reason()
    if why:
        pytest.skip(why)
    if _stale():
        cp = subprocess.run(
            [str(REPO / "scripts" / "build-image")], capture_output=True, text=True, timeout=1200
        )
        assert cp.returncode == 0, f"scripts/build-image failed:\n{cp.stdout}\n{cp.stderr}"
    assert IMAGE.is_file()
    return IMAGE


def test_the_image_is_gpt_with_esp_two_slots_and_data(image: Path) -> None:
    parts = partitions(image)
    assert [p.name for p in parts] == ["esp", "root-a", "root-b", "data"]
    assert parts[0].type == ESP_TYPE
    assert parts[1].type == parts[2].type == ROOT_TYPE
    assert parts[1].size == parts[2].size <= 1 << 30, "a slot is at most 1 GiB"
    assert sorted(esp_entries(image)) == ["appliance-a+3.conf", "appliance-b+3.conf"]
    # the firmware's fallback path is systemd-boot
    esp = parts[0]
    boot = subprocess.run(
        ["mtype", "-i", f"{image}@@{esp.start}", "::/EFI/BOOT/BOOTX64.EFI"],
        capture_output=True, check=True, env={**os.environ, "MTOOLS_SKIP_CHECK": "1"},
    ).stdout  # fmt: skip
    assert b"systemd-boot" in boot


def test_the_artifacts_match_their_sums(image: Path) -> None:
    sums = dict(reversed(line.split()) for line in (BUILD / "SHA256SUMS").read_text().splitlines())
    assert set(sums) == {"appliance.img", "appliance.img.zst", "appliance.img.bmap"}
    for name in ("appliance.img.zst", "appliance.img.bmap"):
        h = hashlib.sha256((BUILD / name).read_bytes()).hexdigest()
        assert h == sums[name], f"{name} does not match SHA256SUMS"
    cp = subprocess.run(
        ["sha256sum", "-c", "--quiet", "SHA256SUMS"], cwd=BUILD, capture_output=True, text=True
    )
    assert cp.returncode == 0, cp.stdout + cp.stderr
    bmap = (BUILD / "appliance.img.bmap").read_text()
    assert f"<ImageSize> {image.stat().st_size} </ImageSize>" in bmap


def test_the_root_holds_no_secret_and_no_sshd(image: Path, tmp_path: Path) -> None:
    parts = by_name(image)
    for slot in ("root-a", "root-b"):
        with mounted(image, parts[slot], tmp_path / slot) as root:
            assert find_secrets(root) == [], f"{slot} holds secrets"
            assert not (root / "usr" / "sbin" / "sshd").exists(), f"{slot} has an sshd"
            shadow = dict(
                (ln.split(":")[0], ln.split(":")[1])
                for ln in (root / "etc" / "shadow").read_text().splitlines()
            )
            assert shadow["root"].startswith("!"), "root is not locked"
            assert (root / "etc" / "machine-id").read_text() == ""
            wants = root / "etc" / "systemd" / "system" / "multi-user.target.wants"
            assert (wants / "appliance.target").is_symlink(), "appliance.target is not enabled"
            journald = (root / "etc/systemd/journald.conf.d/appliance.conf").read_text()
            assert re.search(r"^SystemMaxUse=\d+M$", journald, re.M)


# --- the image booted ----------------------------------------------------------------------


@dataclass
class Boot:
    disk: Path
    serial: str
    journal: str
    seconds_to_multi_user: float
    root_a_before: str
    root_b_before: str


ANSI = re.compile(r"\x1b\[[0-9;=?]*[A-Za-z]")


def _serial(path: Path) -> str:
    """The serial console so far, without the colours and cursor moves."""
    return ANSI.sub("", path.read_text(errors="replace")) if path.exists() else ""


def _monitor(sock: Path, command: str) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(str(sock))
        s.sendall(command.encode() + b"\n")
        time.sleep(0.5)


@pytest.fixture(scope="session")
def booted(image: Path, tmp_path_factory: pytest.TempPathFactory) -> Boot:
    work = tmp_path_factory.mktemp("boot")
    disk = work / "disk.img"
    subprocess.run(["cp", "--sparse=always", str(image), str(disk)], check=True)
    before = by_name(disk)
    root_a, root_b = part_sha256(disk, before["root-a"]), part_sha256(disk, before["root-b"])
    subprocess.run(
        ["qemu-img", "resize", "-f", "raw", str(disk), f"+{GROW}"], check=True, capture_output=True
    )
    vars_fd = work / "vars.fd"
    shutil.copy(OVMF_VARS, vars_fd)
    serial, monitor, log = work / "serial.log", work / "monitor.sock", work / "qemu.log"
    argv = [
        "qemu-system-x86_64", "-accel", "tcg", "-m", "1024", "-smp", "2",
        "-display", "none", "-no-reboot", "-nic", "none",
        "-drive", f"if=pflash,format=raw,readonly=on,file={OVMF_CODE}",
        "-drive", f"if=pflash,format=raw,file={vars_fd}",
        "-drive", f"if=virtio,format=raw,file={disk}",
        "-serial", f"file:{serial}",
        "-monitor", f"unix:{monitor},server=on,wait=off",
    ]  # fmt: skip
    started = time.monotonic()
    with log.open("w") as out:
        qemu = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        to_multi_user = None
        deadline = started + BOOT_TIMEOUT
        while time.monotonic() < deadline and qemu.poll() is None:
            text = _serial(serial)
            if to_multi_user is None and "Reached target multi-user.target" in text:
                to_multi_user = time.monotonic() - started
            # the getty is up and systemd-bless-boot has had its turn (boot-complete.target)
            if to_multi_user is not None and "login:" in text:
                break
            time.sleep(2)
        text = _serial(serial)
        assert to_multi_user is not None, (
            f"no multi-user.target within {BOOT_TIMEOUT}s; the serial console ends:\n{text[-3000:]}"
        )
        time.sleep(10)
        # Ctrl-Alt-Del: systemd shuts down cleanly and reboots, where qemu (-no-reboot) ends
        _monitor(monitor, "sendkey ctrl-alt-delete")
        try:
            qemu.wait(timeout=180)
        except subprocess.TimeoutExpired:
            pytest.fail("the unit did not shut down within 180s of Ctrl-Alt-Del")
    finally:
        if qemu.poll() is None:
            qemu.kill()
            qemu.wait()
    text = _serial(serial)
    after = by_name(disk)
    with mounted(disk, after["data"], work / "data") as data:
        journal = subprocess.run(
            ["journalctl", "--directory", str(next((data / "journal").iterdir())),
             "--no-pager", "-o", "short-monotonic"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
    return Boot(disk, text, journal, to_multi_user, root_a, root_b)


def test_boot_reaches_multi_user_with_the_roles_started(booted: Boot) -> None:
    print(f"boot to multi-user.target: {booted.seconds_to_multi_user:.0f}s (TCG)")
    assert "Reached target appliance.target" in booted.journal
    for role in ROLE_NAMES:
        assert f"Started appliance-{role}.service" in booted.journal, f"{role} did not start"
    assert "Finished appliance-failclosed.service" in booted.journal


def test_no_unit_failed_from_boot_to_shutdown(booted: Boot) -> None:
    """Also at shutdown: a role still starting (the OPC UA role builds its address space
    cache on a first boot, minutes under TCG) stops at SIGTERM, not at SIGKILL 90 s later."""
    failed = [
        ln for ln in booted.journal.splitlines()
        if re.search(r"Failed to start|Failed with result|entered failed state", ln)
    ]  # fmt: skip
    assert failed == [], "units failed:\n" + "\n".join(failed)


def test_root_stayed_read_only(booted: Boot) -> None:
    """Not one byte of either slot changed: a root mounted read-write at any time (even
    only to replay a journal or count a mount) writes its superblock."""
    parts = by_name(booted.disk)
    assert part_sha256(booted.disk, parts["root-a"]) == booted.root_a_before
    assert part_sha256(booted.disk, parts["root-b"]) == booted.root_b_before
    assert "Read-only file system" not in booted.journal.replace(
        "Failed to write wtmp record, ignoring: Read-only file system", ""
    ), "something tried to write to the read-only root"


def test_the_data_partition_grew_to_the_disk(booted: Boot) -> None:
    parts = partitions(booted.disk)
    data = parts[-1]
    assert data.name == "data"
    end = booted.disk.stat().st_size - 34 * SECTOR  # the backup GPT
    assert end - (data.start + data.size) < 1 << 20, "the data partition does not reach the end"
    assert data.size > GROW
    assert ext4_size(booted.disk, data) > data.size - (8 << 20), "the file system did not grow"


def test_the_booted_slot_is_blessed(booted: Boot) -> None:
    """systemd-boot counted the try (a+3 -> a+2-1) and systemd-bless-boot marked the good
    boot (the counter gone); slot B, not booted, keeps its three tries."""
    assert esp_entries(booted.disk) == ["appliance-a.conf", "appliance-b+3.conf"]
