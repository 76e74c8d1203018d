"""The one secret writer: no symlink followed, no predictable name, mode and owner by fd."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from pathlib import Path

import pytest

from appliance import secretfile
from appliance.errors import ApplianceError
from appliance.secretfile import UnsafeSecretPath


def test_write_creates_the_directory_0700_and_the_file_0600(tmp_path: Path) -> None:
    d = tmp_path / "secrets"
    assert secretfile.write(d, "key.pem", b"KEY")
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    assert stat.S_IMODE((d / "key.pem").stat().st_mode) == 0o600
    assert secretfile.read(d / "key.pem") == b"KEY"
    assert sorted(os.listdir(d)) == ["key.pem"]  # no temporary left behind


def test_a_wide_directory_is_narrowed(tmp_path: Path) -> None:
    d = tmp_path / "secrets"
    d.mkdir(mode=0o755)
    secretfile.write(d, "cert.pem", b"C", mode=0o644)
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    assert stat.S_IMODE((d / "cert.pem").stat().st_mode) == 0o644


def test_a_symlinked_directory_is_refused_and_its_target_untouched(tmp_path: Path) -> None:
    target = tmp_path / "etc"
    target.mkdir(mode=0o755)
    (tmp_path / "secrets").symlink_to(target)
    with pytest.raises(UnsafeSecretPath, match="not a directory"):
        secretfile.write(tmp_path / "secrets", "setup-code", b"1234")
    assert list(target.iterdir()) == []
    assert stat.S_IMODE(target.stat().st_mode) == 0o755


def test_a_symlink_at_the_target_name_is_replaced_not_followed(tmp_path: Path) -> None:
    d = tmp_path / "secrets"
    d.mkdir(mode=0o700)
    victim = tmp_path / "passwd"
    victim.write_text("root:x:0:0\n")
    (d / "key.pem").symlink_to(victim)
    secretfile.write(d, "key.pem", b"NEW")
    assert victim.read_text() == "root:x:0:0\n"
    assert not (d / "key.pem").is_symlink()
    assert (d / "key.pem").read_bytes() == b"NEW"


def test_replace_false_keeps_what_another_process_made_first(tmp_path: Path) -> None:
    d = tmp_path / "secrets"
    assert secretfile.write(d, "setup-code", b"first", replace=False)
    assert not secretfile.write(d, "setup-code", b"second", replace=False)
    assert (d / "setup-code").read_bytes() == b"first"
    assert sorted(os.listdir(d)) == ["setup-code"]


def test_a_dangling_symlink_at_the_name_does_not_count_as_made(tmp_path: Path) -> None:
    d = tmp_path / "secrets"
    d.mkdir(mode=0o700)
    (d / "setup-code").symlink_to(tmp_path / "elsewhere")
    assert not secretfile.write(d, "setup-code", b"x", replace=False)
    assert not (tmp_path / "elsewhere").exists()


def test_read_refuses_a_symlink(tmp_path: Path) -> None:
    (tmp_path / "real").write_bytes(b"s")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(UnsafeSecretPath):
        secretfile.read(tmp_path / "link")
    with pytest.raises(FileNotFoundError):
        secretfile.read(tmp_path / "missing")


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root (CI runs as root)")
def test_root_gives_the_secret_to_the_data_directorys_owner(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    os.chown(data, 4242, 4242)
    owner = secretfile.owner_for(data)
    assert owner == (4242, 4242)
    secretfile.write(data / "secrets", "key.pem", b"K", owner=owner)
    for p in (data / "secrets", data / "secrets" / "key.pem"):
        st = p.stat()
        assert (st.st_uid, st.st_gid) == (4242, 4242)


def test_a_directory_of_another_user_is_refused(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to make a directory of another user (CI runs as root)")
    d = tmp_path / "secrets"
    d.mkdir(mode=0o700)
    os.chown(d, 4343, 4343)
    with pytest.raises(UnsafeSecretPath, match="belongs to uid 4343"):
        secretfile.write(d, "k", b"x", owner=(4242, 4242))


def test_a_bad_name_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        secretfile.write(tmp_path, "../x", b"")


def test_dir_mode_none_keeps_a_shared_directory_as_it_is(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir(mode=0o755)
    os.chmod(run, 0o755)
    secretfile.write(run, "agent.reset-key", b"k", dir_mode=None)
    assert stat.S_IMODE(run.stat().st_mode) == 0o755  # others still read the status files
    assert stat.S_IMODE((run / "agent.reset-key").stat().st_mode) == 0o600
    os.chmod(run, 0o777)
    with pytest.raises(UnsafeSecretPath, match="writable by others"):
        secretfile.write(run, "agent.reset-key", b"k2", dir_mode=None)
    assert (run / "agent.reset-key").read_bytes() == b"k"


def test_missing_parents_are_made(tmp_path: Path) -> None:
    secretfile.write(tmp_path / "data" / "secrets", "k", b"x")
    assert (tmp_path / "data" / "secrets" / "k").read_bytes() == b"x"


def test_a_directory_at_the_name_is_a_clear_error(tmp_path: Path) -> None:
    d = tmp_path / "secrets"
    (d / "key.pem").mkdir(parents=True)
    with pytest.raises(ApplianceError, match=r"cannot write .*key\.pem"):
        secretfile.write(d, "key.pem", b"x")
    assert sorted(os.listdir(d)) == ["key.pem"]  # the temporary is gone


def test_read_refuses_a_symlinked_directory_a_fifo_and_a_huge_file(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (real / "k").write_bytes(b"s")
    (tmp_path / "secrets").symlink_to(real)
    with pytest.raises(UnsafeSecretPath, match="not a directory"):
        secretfile.read(tmp_path / "secrets" / "k")
    os.mkfifo(real / "fifo")
    with pytest.raises(UnsafeSecretPath, match="not a regular file"):
        secretfile.read(real / "fifo")  # O_NONBLOCK: no writer, no hang
    (real / "big").write_bytes(b"x" * 11)
    with pytest.raises(UnsafeSecretPath, match="larger than 10 bytes"):
        secretfile.read(real / "big", limit=10)
    assert secretfile.read(real / "big", limit=11) == b"x" * 11


def test_read_refuses_a_hard_link(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_bytes(b"not a secret of ours")
    d = tmp_path / "secrets"
    d.mkdir()
    os.link(elsewhere, d / "k")
    with pytest.raises(UnsafeSecretPath, match="2 links"):
        secretfile.read(d / "k")
    os.unlink(elsewhere)  # the last name left: one link, an ordinary file again
    assert secretfile.read(d / "k") == b"not a secret of ours"


def test_remove_never_goes_through_a_symlinked_directory(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (real / "setup-code").write_text("keep")
    (tmp_path / "secrets").symlink_to(real)
    with pytest.raises(UnsafeSecretPath):
        secretfile.remove(tmp_path / "secrets", "setup-code")
    assert (real / "setup-code").read_text() == "keep"
    assert secretfile.remove(real, "setup-code") and not (real / "setup-code").exists()
    assert not secretfile.remove(real, "setup-code")
    assert not secretfile.remove(tmp_path / "missing", "setup-code")


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root (CI runs as root)")
def test_an_admins_symlink_as_the_data_directory_still_names_its_owner(tmp_path: Path) -> None:
    real = tmp_path / "flash" / "appliance"
    real.mkdir(parents=True)
    os.chown(real, 4242, 4242)
    (tmp_path / "data").symlink_to(real)  # /var/lib/appliance -> /data/appliance, by root
    assert secretfile.owner_for(tmp_path / "data") == (4242, 4242)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become another user")
def test_read_needs_only_search_permission_on_the_directory() -> None:
    d = Path(tempfile.mkdtemp(prefix="secretfile-"))  # pytest's tmp_path is root's 0700
    try:
        (d / "k").write_bytes(b"s")
        os.chown(d / "k", 4242, 4242)
        os.chmod(d, 0o711)  # others may pass through, not list
        pid = os.fork()
        if pid == 0:  # the child becomes the service user and reads its own file
            code = 1
            try:
                os.setgid(4242)
                os.setuid(4242)
                code = 0 if secretfile.read(d / "k") == b"s" else 2
            except PermissionError:
                code = 3
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        shutil.rmtree(d)
