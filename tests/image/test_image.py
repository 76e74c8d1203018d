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
import sqlite3
import struct
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from updatekit import Pki, make_pki

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
    "scripts/build-image", "scripts/build-deb", "build/update-pki/unit-ca.pem",
)  # fmt: skip
# The throw-away update PKI (made at test time, never in the repository): the image trusts
# `unit`'s CA; `other` signs the bundle a unit must refuse.
PKI_DIR = BUILD / "update-pki"
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
    for tool in ("mmdebstrap", "qemu-system-x86_64", "qemu-img", "sfdisk", "mdir", "bmaptool",
                 "rauc", "mksquashfs", "openssl"):  # fmt: skip
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
        paths = [p for p in paths if not p.is_relative_to(REPO / "image" / "bundle")]  # bundles
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
def pki() -> Pki:
    why = _skip_reason()
    if why:
        pytest.skip(why)
    return make_pki(PKI_DIR, "unit")


@pytest.fixture(scope="session")
def image(pki: Pki) -> Path:
    if _stale():
        cp = subprocess.run(
            [str(REPO / "scripts" / "build-image")], capture_output=True, text=True,
            timeout=1200, env={**os.environ, **pki.env()},
        )  # fmt: skip
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
# On the serial console (the gate writes to it; systemd's own status lines stop once the
# boot is done, so systemd-bless-boot's are not there): the gate passed or refused the slot.
# systemd-bless-boot runs right after a pass (10 s margin: the sleep before the shutdown).
GATE_PASSED = "passes: healthy"
GATE_FAILED = "is not healthy:"
BLESSED = "Finished systemd-bless-boot.service"  # in the journal
# update-from-media's last word on a stick
INSTALLED = "update-from-media: installed"
REFUSED = "update-from-media: refused or failed"


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
            # the getty is up, the health gate passed (or failed) and systemd-bless-boot had
            # its turn after boot-complete.target
            if (
                to_multi_user is not None
                and "login:" in text
                and (GATE_PASSED in text or GATE_FAILED in text)
            ):
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


def test_the_first_boot_passed_the_health_gate(booted: Boot) -> None:
    """The first boot is counted too (a+3): the gate let systemd-bless-boot keep slot a."""
    assert "gate: slot a passes: healthy" in booted.journal
    assert "Finished systemd-bless-boot.service" in booted.journal


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


# --- updates: a signed bundle installed, blessed; a bad one falls back; a foreign one refused


class Vm:
    """One power-on of the unit's disk under qemu: the serial console to a file, a monitor
    to plug update sticks in; qemu ends when the unit reboots (-no-reboot) or powers off."""

    def __init__(self, disk: Path, vars_fd: Path, work: Path, name: str) -> None:
        self.serial = work / f"serial-{name}.log"
        self.monitor = work / f"monitor-{name}.sock"
        self.sticks = 0
        argv = [
            "qemu-system-x86_64", "-accel", "tcg", "-m", "1024", "-smp", "2",
            "-display", "none", "-no-reboot", "-nic", "none",
            "-drive", f"if=pflash,format=raw,readonly=on,file={OVMF_CODE}",
            "-drive", f"if=pflash,format=raw,file={vars_fd}",
            "-drive", f"if=virtio,format=raw,file={disk}",
            "-serial", f"file:{self.serial}",
            "-monitor", f"unix:{self.monitor},server=on,wait=off",
        ]  # fmt: skip
        self.log = (work / f"qemu-{name}.log").open("w")
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT)

    def text(self) -> str:
        return _serial(self.serial)

    def mark(self) -> int:
        """Where the console is now: wait_for(since=) looks only at what comes after."""
        return len(self.text())

    def wait_for(self, *needles: str, timeout: float, since: int = 0) -> str:
        """The first of `needles` that appears on the console (the VM still running)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.text()[since:]
            for n in needles:
                if n in text:
                    return n
            if self.proc.poll() is not None:
                break
            time.sleep(2)
        pytest.fail(f"none of {needles} within {timeout:.0f}s; the console ends:\n"
                    f"{self.text()[-3000:]}")  # fmt: skip

    def plug(self, stick: Path) -> None:
        """A USB stick, as a hot-plugged virtio disk."""
        self.sticks += 1
        n = self.sticks
        drive = f"if=none,id=stick{n},format=raw,readonly=on,file={stick}"
        _monitor(self.monitor, f"drive_add 0 {drive}")
        _monitor(self.monitor, f"device_add virtio-blk-pci,drive=stick{n},id=stickdev{n}")

    def wait_exit(self, timeout: float) -> None:
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the unit did not reboot or power off within {timeout:.0f}s; the "
                        f"console ends:\n{self.text()[-3000:]}")  # fmt: skip
        finally:
            self.log.close()

    def shutdown(self) -> None:
        _monitor(self.monitor, "sendkey ctrl-alt-delete")
        self.wait_exit(180)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def booted_slot_line(text: str) -> str | None:
    m = re.search(r"Command line:.*\brauc\.slot=([a-z0-9]+)", text)
    return m.group(1) if m else None


def stick(bundle: Path, where: Path) -> Path:
    """An ext4 stick labelled APPLIANCE-UPD with one bundle on it."""
    top = where.with_suffix(".d")
    top.mkdir()
    shutil.copy(bundle, top / bundle.name)
    img = where.with_suffix(".img")
    size = bundle.stat().st_size + (64 << 20)
    subprocess.run(["truncate", "-s", str(size), str(img)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "APPLIANCE-UPD", "-d", str(top), str(img)],
                   check=True, capture_output=True)  # fmt: skip
    shutil.rmtree(top)
    return img


def build_bundle(pki: Pki, out: Path, version: str, *extra: str) -> Path:
    cp = subprocess.run(
        [str(REPO / "scripts" / "build-bundle"), "--version", version, "--output", str(out),
         "--zstd-level", "3", *extra],
        capture_output=True, text=True, timeout=900, cwd=REPO, env={**os.environ, **pki.env()},
    )  # fmt: skip
    assert cp.returncode == 0, f"build-bundle failed:\n{cp.stdout}\n{cp.stderr}"
    return out


def broken_root(work: Path) -> Path:
    """The image's root with one role that cannot start (its ExecStart replaced by false)."""
    root = work / "broken-root.ext4"
    subprocess.run(["cp", "--sparse=always", str(BUILD / "image" / "root.img"), str(root)],
                   check=True)  # fmt: skip
    mnt = work / "broken-mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-o", "loop", str(root), str(mnt)], check=True)
    try:
        dropin = mnt / "etc/systemd/system/appliance-field.service.d"
        dropin.mkdir(parents=True)
        (dropin / "broken.conf").write_text("[Service]\nExecStart=\nExecStart=/bin/false\n")
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
    return root


@dataclass
class Updated:
    disk: Path
    consoles: dict[str, str]  # each power-on's serial console, by name
    journal: str
    seconds: dict[str, float]


@pytest.fixture(scope="session")
def updated(booted: Boot, pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Updated:
    """After the first boot (slot a blessed), on a copy of its disk:

    1. power-on on a: a stick with a bundle signed by another CA (refused), then one with a
       good bundle (installed into b) -> reboot;
    2. power-on on b (trial): the gate passes, b is blessed; then a stick with a bundle whose
       field role cannot start (installed into a) -> reboot;
    3. three power-ons on a (trial): the gate fails each time -> reboot;
    4. power-on on b again (a ran out of tries): the fallback is reported; shut down.
    """
    work = tmp_path_factory.mktemp("update")
    disk = work / "disk.img"
    subprocess.run(["cp", "--sparse=always", str(booted.disk), str(disk)], check=True)
    vars_fd = work / "vars.fd"
    shutil.copy(OVMF_VARS, vars_fd)
    other = make_pki(PKI_DIR, "other")
    started = time.monotonic()
    good = build_bundle(pki, work / "good.raucb", "0.1.0+update1")
    broken = str(broken_root(work))
    bad = build_bundle(pki, work / "broken.raucb", "0.1.0+broken", "--rootfs", broken)
    # refused before anything is written: a small root is enough
    small = work / "small.ext4"
    subprocess.run(["truncate", "-s", "32M", str(small)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(small)], check=True, capture_output=True)
    foreign = build_bundle(other, work / "foreign.raucb", "0.1.0+foreign", "--rootfs", str(small))
    sticks = {n: stick(b, work / f"stick-{n}") for n, b in
              (("good", good), ("bad", bad), ("foreign", foreign))}  # fmt: skip
    seconds = {"bundles": time.monotonic() - started}
    consoles: dict[str, str] = {}

    def power_on(name: str) -> Vm:
        seconds[name] = time.monotonic()
        return Vm(disk, vars_fd, work, name)

    def done(name: str, vm: Vm) -> None:
        consoles[name] = vm.text()
        seconds[name] = time.monotonic() - seconds[name]

    vm = power_on("install-good")
    try:
        vm.wait_for("login:", timeout=BOOT_TIMEOUT)
        vm.plug(sticks["foreign"])
        got = vm.wait_for(INSTALLED, REFUSED, timeout=300)
        assert got == REFUSED, "the bundle signed by another CA was installed"
        at = vm.mark()
        vm.plug(sticks["good"])
        got = vm.wait_for(INSTALLED, REFUSED, timeout=900, since=at)
        assert got == INSTALLED, f"the good bundle was refused:\n{vm.text()[at:][-3000:]}"
        vm.wait_exit(300)
    finally:
        vm.kill()
        done("install-good", vm)

    vm = power_on("trial-good")
    try:
        got = vm.wait_for(GATE_PASSED, GATE_FAILED, timeout=BOOT_TIMEOUT + 660)
        assert got == GATE_PASSED, f"slot b failed the gate:\n{vm.text()[-3000:]}"
        vm.wait_for("login:", timeout=120)
        time.sleep(10)  # systemd-bless-boot's turn
        vm.plug(sticks["bad"])
        got = vm.wait_for(INSTALLED, REFUSED, timeout=900)
        assert got == INSTALLED, f"the broken bundle was refused:\n{vm.text()[-3000:]}"
        vm.wait_exit(300)
    finally:
        vm.kill()
        done("trial-good", vm)

    for n in range(1, 4):
        name = f"trial-bad-{n}"
        vm = power_on(name)
        try:
            vm.wait_exit(BOOT_TIMEOUT + 660)  # the gate fails and reboots
        finally:
            vm.kill()
            done(name, vm)

    vm = power_on("fallback")
    try:
        vm.wait_for("login:", timeout=BOOT_TIMEOUT)
        vm.wait_for("update report:", timeout=120)
        time.sleep(5)
        vm.shutdown()
    finally:
        vm.kill()
        done("fallback", vm)

    copy = work / "history"
    copy.mkdir()
    with mounted(disk, by_name(disk)["data"], work / "data") as data:
        # one journal directory per boot: the machine-id is made afresh at each (issue 11)
        journal = "".join(
            subprocess.run(
                ["journalctl", "--directory", str(d), "--no-pager", "-o", "short-monotonic"],
                capture_output=True, text=True, check=True,
            ).stdout
            for d in sorted((data / "journal").iterdir()) if d.is_dir()
        )  # fmt: skip
        raucs = data / "rauc" / "central.raucs"
        consoles["rauc-status"] = raucs.read_text() if raucs.is_file() else ""
        for f in (data / "appliance").glob("history.db*"):
            shutil.copy(f, copy / f.name)  # with its WAL: the copy is read, not the disk
    db = sqlite3.connect(copy / "history.db")
    try:
        rows = db.execute("SELECT kind, message FROM event WHERE source = 'update'").fetchall()
    finally:
        db.close()
    consoles["events"] = "\n".join(f"{k}: {m}" for k, m in rows)
    for name, t in seconds.items():
        print(f"update step {name}: {t:.0f}s")
    return Updated(disk, consoles, journal, seconds)


def test_a_bundle_signed_by_another_ca_is_refused(updated: Updated) -> None:
    text = updated.consoles["install-good"]
    assert "refused or failed: foreign.raucb" in text
    assert "signature verification failed" in updated.journal
    assert booted_slot_line(text) == "a"


def test_a_good_bundle_boots_its_slot_on_trial_and_is_blessed(updated: Updated) -> None:
    text = updated.consoles["trial-good"]
    assert booted_slot_line(text) == "b"
    assert "gate: slot b passes" in text
    assert BLESSED in updated.journal
    assert "update.healthy: slot b is healthy" in updated.consoles["events"]
    # RAUC's record on the data partition: slot b holds the good bundle
    assert "bundle.version=0.1.0+update1" in updated.consoles["rauc-status"]


def test_a_bundle_that_never_gets_healthy_falls_back_after_three_tries(updated: Updated) -> None:
    for n in range(1, 4):
        text = updated.consoles[f"trial-bad-{n}"]
        assert booted_slot_line(text) == "a", f"try {n} did not boot slot a"
        assert "gate: slot a is not healthy: the field role" in text, f"try {n}"
    assert booted_slot_line(updated.consoles["fallback"]) == "b"
    assert esp_entries(updated.disk) == ["appliance-a+0-3.conf", "appliance-b.conf"]
    reported = ("the update in slot a did not get healthy in its tries (3 boots): "
                "the unit fell back to slot b")  # fmt: skip
    assert f"update.fallback: {reported}" in updated.consoles["events"]
    assert updated.consoles["events"].count("update.fallback") == 1
