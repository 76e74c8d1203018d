"""Root's factory reset (the CLI, the agent not running) in a data and a run directory the
roles' user owns and can write: it follows no link and waits on no FIFO planted there, and
the unit it leaves behind is one that user can run (its databases are that user's)."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
import traceback
from collections.abc import Callable
from pathlib import Path

import pytest

from appliance.agent import reset
from appliance.paths import Paths
from appliance.state.db import Store

ROLES_USER = (65534, 65534)  # nobody: the data directory's owner, as the roles' user is


def unit_of_nobody(tmp_path: Path) -> Paths:
    """A data and a run directory that belong to the roles' user, with databases in it."""
    for d in (tmp_path, *tmp_path.parents):  # pytest's temporary directories are 0700
        if d == Path(tempfile.gettempdir()):
            break
        os.chmod(d, d.stat().st_mode | 0o055)
    paths = Paths(tmp_path / "data", tmp_path / "run")
    Store(paths.data_dir).close()
    paths.run_dir.mkdir()
    for d in (paths.data_dir, paths.run_dir):
        for p in (d, *d.iterdir()):
            os.chown(p, *ROLES_USER)
    return paths


def test_the_marker_is_written_over_a_planted_link_not_through_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = Paths(tmp_path / "data", tmp_path / "run")
    Store(paths.data_dir).close()
    paths.run_dir.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("a file of root's")
    first_boot = reset._first_boot_history

    def planted(*args: object) -> None:
        # after the wipe, a compromised role plants links at the marker's names
        first_boot(*args)  # type: ignore[arg-type]
        for name in (reset.MARKER, f"factory-reset.tmp{os.getpid()}"):
            (paths.run_dir / name).symlink_to(victim)

    monkeypatch.setattr(reset, "_first_boot_history", planted)
    reset.factory_reset(paths, "test", now=1000.0)
    assert victim.read_text() == "a file of root's"
    marker = paths.run_dir / reset.MARKER
    assert not marker.is_symlink()
    assert json.loads(marker.read_text())["actor"] == "test"
    assert oct(marker.stat().st_mode & 0o777) == "0o644"


def test_a_fifo_at_the_generation_does_not_hang_the_reset(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    os.mkfifo(data / reset.GENERATION)
    got: list[object] = []

    def read_then_bump() -> None:
        try:
            reset.generation(data)
        except OSError as e:
            got.append(str(e))
        got.append(reset.bump_generation(data))

    t = threading.Thread(target=read_then_bump, daemon=True)
    t.start()
    t.join(10)
    if t.is_alive():  # release the reader that waits on the FIFO, then fail
        for _ in range(2):
            with contextlib.suppress(OSError):
                os.close(os.open(data / reset.GENERATION, os.O_WRONLY | os.O_NONBLOCK))
            t.join(2)
        pytest.fail("the reset waited on a FIFO planted at the generation's name")
    assert len(got) == 2 and "not a regular file" in str(got[0]), got
    assert got[1] == 1
    assert (data / reset.GENERATION).read_text() == "1\n"


def test_a_symlinked_data_directory_is_followed(tmp_path: Path) -> None:
    """An admin's /var/lib/appliance -> /data/appliance: the generation is still read and
    written (only root can make that link: the data directory's parent is root's)."""
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "data").symlink_to(real)
    assert reset.bump_generation(tmp_path / "data") == 1
    assert reset.bump_generation(tmp_path / "data") == 2
    assert reset.generation(tmp_path / "data") == "2"


@pytest.mark.skipif(os.geteuid() != 0, reason="root's reset (the CLI, no agent running)")
def test_roots_reset_leaves_a_unit_the_roles_user_can_run(tmp_path: Path) -> None:
    paths = unit_of_nobody(tmp_path)
    done = reset.factory_reset(paths, "cli:root", now=1000.0)
    assert str(paths.data_dir / "config.db") in done["removed"]
    for p in (
        paths.data_dir / "config.db",
        paths.data_dir / "history.db",
        paths.data_dir / reset.GENERATION,
        paths.run_dir / reset.MARKER,
    ):
        st = p.stat()
        assert (st.st_uid, st.st_gid) == ROLES_USER, p
    left = [p.name for p in paths.data_dir.iterdir() if p.stat().st_uid != ROLES_USER[0]]
    assert left == [], left
    # the roles' user writes the fresh databases (a role's first event, the first admin)

    def first_writes() -> int:
        s = Store(paths.data_dir)
        s.event("role.started", "web", source="web")
        s.audit("web:setup", "user.create")
        return len(s.events(10))

    assert as_roles_user(first_writes) == 2  # the reset's own first-boot event, and this one


def as_roles_user(fn: Callable[[], int]) -> int:
    """fn()'s result, run in a forked child as the roles' user. A fork, not a new Python: a
    checkout under /root (CI, the fresh machine) is not readable by that user."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child)
        os.close(r)
        code = 1
        try:
            os.setgroups([])
            os.setgid(ROLES_USER[1])
            os.setuid(ROLES_USER[0])
            os.write(w, str(fn()).encode())
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r) as f:
        out = f.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the roles' user could not write (stderr)"
    return int(out)
