"""The Debian package: `make deb`'s .deb installed by apt into a fresh Debian 12 chroot.

Someone with an existing Debian 12 PC installs the package instead of flashing the image,
so this installs it the way they would (`apt-get install ./appliance_*.deb`, which pulls
the Debian dependencies) into a minbase chroot made from this machine's Debian sources,
and checks what they get: the program runs, the units verify, dpkg owns every file,
nothing is enabled or started, and purge leaves nothing behind.

The base chroot is cached as a tarball under build/chroot/, keyed by what makes it
(mmdebstrap's version, the sources, the variant), and the .debs apt fetches are kept in
build/chroot/archives, so a rerun downloads nothing but the package lists. Every command
runs in its own mount namespace (`unshare --mount`), where /proc and the apt cache are
mounted: the mounts end with the command, and the host's network and systemd are never
touched (systemctl inside the chroot sees it is in a chroot and only edits files).
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import subprocess
import tarfile
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.roles import ROLE_NAMES

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / "build"
CACHE = BUILD / "chroot"
SUITE = "bookworm"
VARIANT = "minbase"
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
VENV_PY = "/usr/lib/appliance/venv/bin/python"
UNITS = (
    "appliance.target",
    "appliance-failclosed.service",
    *(f"appliance-{r}.service" for r in ROLE_NAMES),
)
# The Debian dependencies, as image/deb/depends names them (without versions).
DEPENDS = sorted(
    {
        line.split("#", 1)[0].split()[0]
        for line in (REPO / "image" / "deb" / "depends").read_text().splitlines()
        if line.split("#", 1)[0].strip()
    }
)
DEFAULT_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
UNSHARE = ("unshare", "--mount", "--propagation", "private", "--")
# Records every systemctl call a maintainer script makes (then runs the real one).
SYSTEMCTL_LOG = "/var/log/systemctl-calls"
# apt runs dpkg with a PATH of its own (DPkg::Path): put the shim's directory first in it.
APT_OPTS = ("-y", "-q", "-o", f"DPkg::Path=/usr/local/sbin:{DEFAULT_PATH}")
SYSTEMCTL_SHIM = f"""#!/bin/sh
echo "$*" >> {SYSTEMCTL_LOG}
[ -x /bin/systemctl ] && exec /bin/systemctl "$@"
exit 0
"""

pytestmark = pytest.mark.integration


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "the package test needs root: it makes a chroot and mounts /proc in it"
    if shutil.which("mmdebstrap") is None:
        return "mmdebstrap is missing: scripts/setup-host --test installs it"
    return None


def debian_sources() -> str:
    """This machine's apt sources for Debian 12 itself (one-line and deb822 files),
    without third-party repositories: entries whose suite is bookworm or bookworm-*."""
    apt = Path("/etc/apt")
    files = [apt / "sources.list", *sorted((apt / "sources.list.d").glob("*.list"))]
    lines = []
    for f in files:
        if f.is_file():
            for line in f.read_text().splitlines():
                words = re.sub(r"\[[^]]*\]", "", line.split("#", 1)[0]).split()
                if len(words) >= 3 and words[0] == "deb" and words[2].startswith(SUITE):
                    lines.append(line.strip())
    stanzas = []
    for f in sorted((apt / "sources.list.d").glob("*.sources")):
        for stanza in re.split(r"\n\s*\n", f.read_text()):
            fields = _deb822_fields(stanza)
            suites = fields.get("suites", "").split()
            if (
                "deb" in fields.get("types", "").split()
                and suites
                and all(s.startswith(SUITE) for s in suites)
                and fields.get("enabled", "yes") != "no"
            ):
                stanzas.append("\n".join(ln for ln in stanza.splitlines() if ln.strip()))
    if stanzas:
        return "\n\n".join(stanzas) + "\n"
    if lines:
        return "\n".join(lines) + "\n"
    pytest.fail(f"no Debian {SUITE} entry in /etc/apt/sources.list*: nothing to build from")


def _deb822_fields(stanza: str) -> dict[str, str]:
    """The single-line fields of one deb822 stanza, by lower-case name."""
    fields = {}
    for line in stanza.splitlines():
        key, sep, value = line.partition(":")
        if sep and value.strip() and not line.startswith(("#", " ", "\t")):
            fields[key.strip().lower()] = value.strip()
    return fields


def _run(argv: list[str], what: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    cp = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    assert cp.returncode == 0, (
        f"{what} failed (exit {cp.returncode}):\n{cp.stdout[-3000:]}\n{cp.stderr[-3000:]}"
    )
    return cp


class Chroot:
    """A Debian tree under `root` and a way to run commands in it: each one in a new
    mount namespace with /proc (the host's, so systemctl knows it runs in a chroot) and
    the shared apt cache mounted; both mounts end with the command."""

    def __init__(self, root: Path, archives: Path) -> None:
        self.root = root
        self.archives = archives

    def run(
        self, argv: list[str], *, check: bool = True, timeout: float = 600
    ) -> subprocess.CompletedProcess[str]:
        script = (
            'mount -t proc proc "$1/proc" && mount --bind "$2" "$1/var/cache/apt/archives" && '
            'root=$1 && shift 2 && exec chroot "$root" "$@"'
        )
        env = {
            "PATH": DEFAULT_PATH,
            "DEBIAN_FRONTEND": "noninteractive",
            "LANG": "C.UTF-8",
            "HOME": "/root",
        }
        cp = subprocess.run(
            [*UNSHARE, "/bin/sh", "-c", script, "sh", str(self.root), str(self.archives), *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
        )
        if check:
            assert cp.returncode == 0, (
                f"in the chroot, {' '.join(argv)} failed (exit {cp.returncode}):\n"
                f"{cp.stdout[-3000:]}\n{cp.stderr[-3000:]}"
            )
        return cp

    def path(self, inside: str) -> Path:
        return self.root / inside.lstrip("/")


def _mounts_below(root: Path) -> list[str]:
    prefix = str(root.resolve())
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point == prefix or point.startswith(prefix + "/"):
            out.append(point)
    return out


@pytest.fixture(scope="module")
def deb() -> Path:
    """The package, built once per session with `make deb`'s script."""
    why = _skip_reason()
    if why:
        pytest.skip(why)
    _run([str(REPO / "scripts" / "build-deb")], "scripts/build-deb")
    path = BUILD / f"appliance_{VERSION}_amd64.deb"
    assert path.is_file(), f"scripts/build-deb made no {path}"
    return path


@pytest.fixture(scope="module")
def base_tarball() -> Path:
    """A Debian 12 minbase tree from this machine's Debian sources, made once per set of
    inputs and kept (stale ones are removed)."""
    why = _skip_reason()
    if why:
        pytest.skip(why)
    sources = debian_sources()
    mmdebstrap = _run(["mmdebstrap", "--version"], "mmdebstrap --version").stdout.strip()
    key = hashlib.sha256(f"{mmdebstrap}\n{VARIANT}\n{SUITE}\n{sources}".encode()).hexdigest()
    CACHE.mkdir(parents=True, exist_ok=True)
    tarball = CACHE / f"{SUITE}-{VARIANT}-{key[:16]}.tar"
    if not tarball.exists():
        for old in CACHE.glob(f"{SUITE}-{VARIANT}-*.tar"):
            old.unlink()
        # mmdebstrap reads a sources file; the name says which format it holds
        sources_file = CACHE / ("debian.sources" if "Types:" in sources else "debian.list")
        sources_file.write_text(sources)
        partial = tarball.with_suffix(".partial.tar")
        _run(
            [
                "mmdebstrap",
                "--quiet",
                f"--variant={VARIANT}",
                SUITE,
                str(partial),
                str(sources_file),
            ],
            "mmdebstrap",
        )
        partial.rename(tarball)
    return tarball


@pytest.fixture(scope="module")
def chroot(deb: Path, base_tarball: Path) -> Iterator[Chroot]:
    """A fresh chroot from the base tarball with the package installed by apt-get, as on a
    booted machine: /run/systemd/system exists while apt runs, so the maintainer scripts
    act as they would there (their systemctl calls are recorded; with no systemd to talk
    to they change nothing), and policy-rc.d lets no package start a service."""
    root = CACHE / "root"
    archives = CACHE / "archives"
    if root.exists():
        assert not _mounts_below(root), f"mounts left below {root}: {_mounts_below(root)}"
        shutil.rmtree(root)
    root.mkdir()
    archives.mkdir(exist_ok=True)
    ch = Chroot(root, archives)
    try:
        _run(["tar", "-C", str(root), "-xf", str(base_tarball)], "unpacking the base chroot")
        shutil.copy("/etc/resolv.conf", ch.path("/etc/resolv.conf"))
        policy = ch.path("/usr/sbin/policy-rc.d")
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
        shim = ch.path("/usr/local/sbin/systemctl")
        shim.write_text(SYSTEMCTL_SHIM)
        shim.chmod(0o755)
        ch.path("/run/systemd/system").mkdir(parents=True)
        shutil.copy(deb, ch.path(f"/tmp/{deb.name}"))
        ch.run(["apt-get", "update", "-q"])
        ch.run(["apt-get", *APT_OPTS, "install", f"/tmp/{deb.name}"], timeout=900)
        ch.path(f"/tmp/{deb.name}").unlink()
        # From here on systemctl works on the files only, as in any chroot.
        ch.path("/run/systemd/system").rmdir()
        yield ch
    finally:
        left = _mounts_below(root)
        for point in sorted(left, reverse=True):
            subprocess.run(["umount", "-l", point], check=False)
        assert not left, f"mounts were left below the chroot: {left}"
        shutil.rmtree(root, ignore_errors=True)


def deb_paths(deb: Path) -> list[str]:
    """The paths the .deb holds, as dpkg names them ("/usr/bin/appliance")."""
    data = subprocess.run(
        ["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        paths = {os.path.normpath("/" + name) for name in tar.getnames()}
    return sorted(paths - {"/"})


# Files that change a machine with no unit of ours running. The package ships none: its
# sysctls are applied by appliance-failclosed.service, once the machine opted in.
MACHINE_SETTINGS = (
    "/etc",
    "/usr/lib/sysctl.d",
    "/usr/lib/modules-load.d",
    "/usr/lib/modprobe.d",
    "/usr/lib/systemd/network",
    "/usr/lib/systemd/system-preset",
    "/usr/lib/udev",
    "/usr/lib/NetworkManager",
)


def test_installing_changes_no_setting_of_the_machine(deb: Path) -> None:
    shipped = deb_paths(deb)
    bad = [p for p in shipped for d in MACHINE_SETTINGS if p == d or p.startswith(d + "/")]
    assert not bad, bad
    assert "/usr/lib/appliance/sysctl.d/90-appliance.conf" in shipped


def test_apt_pulls_the_debian_dependencies(chroot: Chroot) -> None:
    for pkg in ["appliance", *DEPENDS]:
        cp = chroot.run(["dpkg-query", "-W", "-f=${Status}", pkg], check=False)
        assert cp.stdout == "install ok installed", f"{pkg}: {cp.stdout} {cp.stderr}"


def test_appliance_version_prints_the_version(chroot: Chroot) -> None:
    for argv in (["appliance"], ["runuser", "-u", "appliance", "--", "/usr/bin/appliance"]):
        cp = chroot.run([*argv, "--version"])
        assert cp.stdout.strip() == f"appliance, version {VERSION}", cp.stdout + cp.stderr


def test_every_unit_verifies(chroot: Chroot) -> None:
    paths = [f"/usr/lib/systemd/system/{u}" for u in UNITS]
    for p in paths:
        assert chroot.path(p).is_file(), f"the package installs no {p}"
    cp = chroot.run(["systemd-analyze", "verify", *paths], check=False)
    said = [ln for ln in (cp.stdout + cp.stderr).splitlines() if "appliance" in ln]
    assert cp.returncode == 0 and not said, cp.stdout + cp.stderr
    # verify checks the programs; the files they are given must be installed too
    named = set()
    for p in paths:
        for line in chroot.path(p).read_text().splitlines():
            if re.match(r"Exec\w+=", line):
                named |= {w.lstrip("+-@!:") for w in line.split("=", 1)[1].split()}
    files = sorted(w for w in named if w.startswith("/"))
    script = 'for f; do [ -e "$f" ] || echo "$f"; done'  # in the chroot: links resolve there
    missing = chroot.run(["sh", "-c", script, "sh", *files]).stdout.split()
    assert files and not missing, missing


def test_the_users_and_directories_exist(chroot: Chroot) -> None:
    entry = chroot.run(["getent", "passwd", "appliance"]).stdout.strip().split(":")
    assert entry[5] == "/var/lib/appliance", entry
    groups = chroot.run(["id", "-nG", "appliance"]).stdout.split()
    assert {"appliance", "dialout", "gpio"} <= set(groups), groups
    uid = int(entry[2])
    data = chroot.path("/var/lib/appliance").stat()
    assert (data.st_uid, data.st_mode & 0o777) == (uid, 0o750)
    assert chroot.path("/run/appliance").stat().st_uid == uid


def test_the_venv_imports_nftables_and_every_module(chroot: Chroot) -> None:
    """python3-nftables comes from Debian (--system-site-packages); every module of the
    package imports, so no run-time dependency is missing from the venv."""
    chroot.run([VENV_PY, "-c", "import nftables; nftables.Nftables()"])
    script = (
        "import importlib, pkgutil, appliance\n"
        "for m in pkgutil.walk_packages(appliance.__path__, 'appliance.'):\n"
        "    if not m.name.endswith('.__main__'):\n"
        "        importlib.import_module(m.name)\n"
    )
    chroot.run([VENV_PY, "-c", script])


def test_every_binary_in_the_venv_finds_its_libraries(chroot: Chroot) -> None:
    """What the wheels' extension modules link must come with the Depends: line."""
    cp = chroot.run(
        ["sh", "-c", "find /usr/lib/appliance -name '*.so*' -type f -exec ldd {} + 2>&1"]
    )
    missing = [ln.strip() for ln in cp.stdout.splitlines() if "not found" in ln]
    assert not missing, missing


def test_no_role_is_enabled_or_started(chroot: Chroot) -> None:
    for unit in UNITS:
        cp = chroot.run(["/bin/systemctl", "is-enabled", unit], check=False)
        assert cp.stdout.strip() == "disabled", f"{unit}: {cp.stdout} {cp.stderr}"
    calls = chroot.path(SYSTEMCTL_LOG).read_text().splitlines()
    assert "daemon-reload" in calls, calls  # the scripts did see a running systemd
    assert not [c for c in calls if "appliance" in c], calls
    root = str(chroot.root.resolve())
    inside = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.readlink(f"/proc/{pid}/root") == root:
                inside.append(pid)
        except OSError:
            continue  # the process ended, or is a kernel thread
    assert not inside, f"processes left running in the chroot: {inside}"


def test_an_upgrade_restarts_only_the_roles_that_already_run(chroot: Chroot, deb: Path) -> None:
    """The one path where the scripts name the roles: dpkg configures an upgrade (here the
    same version again) on a running machine. postinst may only try-restart the roles (one
    that is not running stays stopped), never start or enable one, and never rerun the
    fail-closed unit (that would replace the live ruleset)."""
    log = chroot.path(SYSTEMCTL_LOG)
    before = len(log.read_text().splitlines())
    shutil.copy(deb, chroot.path(f"/tmp/{deb.name}"))
    chroot.path("/run/systemd/system").mkdir()
    try:
        # dpkg gives the maintainer scripts its own PATH: the shim's directory first
        chroot.run(
            ["env", f"PATH=/usr/local/sbin:{DEFAULT_PATH}", "dpkg", "-i", f"/tmp/{deb.name}"]
        )
    finally:
        chroot.path("/run/systemd/system").rmdir()
        chroot.path(f"/tmp/{deb.name}").unlink()
    calls = log.read_text().splitlines()[before:]
    ours = [c.split() for c in calls if "appliance" in c]
    assert ours, calls
    for argv in ours:
        assert argv[0] == "try-restart", calls
        assert not {"appliance.target", "appliance-failclosed.service"} & set(argv), calls
    assert "appliance-net.service" in ours[0], calls


def test_dpkg_owns_every_file(chroot: Chroot, deb: Path) -> None:
    """dpkg -L names every path of the .deb, and nothing else lies in the package's own
    directory (after the tests above ran the program: no bytecode written at run time)."""
    owned = set(chroot.run(["dpkg", "-L", "appliance"]).stdout.splitlines())
    shipped = deb_paths(deb)
    assert set(shipped) <= owned, sorted(set(shipped) - owned)
    lib = chroot.path("/usr/lib/appliance")
    on_disk = {"/" + str(p.relative_to(chroot.root)) for p in lib.rglob("*")}
    assert on_disk - owned == set(), sorted(on_disk - owned)[:20]


def test_purge_removes_everything_it_made(chroot: Chroot, deb: Path) -> None:
    """Runs last: opt in (enable the target, as an installer would), leave data behind,
    then purge: the files, the data and live-state directories, the enablement links and
    the user are gone; a directory stays only if another package owns it."""
    chroot.run(["/bin/systemctl", "enable", "appliance.target"])
    link = chroot.path("/etc/systemd/system/multi-user.target.wants/appliance.target")
    assert link.is_symlink()
    chroot.path("/var/lib/appliance/config.db").write_text("the plant's configuration")
    chroot.path("/run/systemd/system").mkdir()  # the scripts act as on a running machine
    chroot.run(["apt-get", *APT_OPTS, "purge", "appliance"])
    chroot.path("/run/systemd/system").rmdir()
    calls = chroot.path(SYSTEMCTL_LOG).read_text().splitlines()
    assert [c for c in calls if c.startswith("stop ") and "appliance-net.service" in c], "\n".join(
        calls
    )
    left = []
    for p in deb_paths(deb):
        target = chroot.path(p)
        if not target.exists() and not target.is_symlink():
            continue
        other = target.is_dir() and not target.is_symlink()
        if other and chroot.run(["dpkg-query", "-S", p], check=False).returncode == 0:
            continue  # a directory of another package: /usr/lib/systemd/system, ...
        left.append(p)
    assert not left, left
    for p in ("/var/lib/appliance", "/run/appliance", "/usr/lib/appliance"):
        assert not chroot.path(p).exists(), p
    assert not link.is_symlink()
    assert not list(chroot.path("/etc/systemd/system").rglob("appliance*"))
    for db in ("passwd", "group"):
        cp = chroot.run(["getent", db, "appliance"], check=False)
        assert cp.returncode == 2, f"the appliance entry is still in {db}: {cp.stdout}"
