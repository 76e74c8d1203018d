"""Every writer of a secret goes through appliance.secretfile: root writing into a data
directory the service user owns follows no symlink the service user planted there.

As root (CI runs as root) with a data directory owned by a fake service uid, the way the
shipped units run: `sudo appliance setup-code` and the TLS key writer must refuse a
symlinked secrets directory without touching its target, must not write through the old
predictable temporary names, must read no secret through a symlink, and make files 0600
owned by the data directory's owner."""

from __future__ import annotations

import os
import ssl
import stat
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from appliance import secretfile
from appliance.agent import tlsutil
from appliance.agent.role import RESET_KEY, Agent
from appliance.lab import pki
from appliance.paths import Paths
from appliance.secretfile import UnsafeSecretPath
from appliance.state.db import Store
from appliance.state.live import LiveState
from appliance.web import setup, tls

SERVICE = 4242
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (CI runs as root)")


def snapshot(d: Path) -> tuple:
    """Owner, mode and contents of a directory, to show it was left alone."""
    st = d.lstat()
    files = {
        p.name: (p.read_bytes(), p.lstat().st_uid, stat.S_IMODE(p.lstat().st_mode))
        for p in d.iterdir()
    }
    return st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode), files


@pytest.fixture
def unit(tmp_path: Path) -> Paths:
    """A unit whose data directory belongs to the service user, like /var/lib/appliance."""
    data = tmp_path / "data"
    data.mkdir(mode=0o750)
    if os.geteuid() == 0:
        os.chown(data, SERVICE, SERVICE)
    return Paths(data, tmp_path / "run")


@pytest.fixture
def etc(tmp_path: Path) -> Path:
    """A root directory like /etc that a symlink could point root at."""
    d = tmp_path / "etc"
    d.mkdir(mode=0o755)
    (d / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    os.chmod(d / "passwd", 0o644)
    return d


# -- the setup code -------------------------------------------------------------------------


@root_only
def test_setup_code_refuses_a_symlinked_secrets_dir(unit: Paths, etc: Path) -> None:
    before = snapshot(etc)
    unit.secrets_dir.symlink_to(etc)
    with pytest.raises(UnsafeSecretPath, match="refusing"):
        setup.setup_code(unit, create=True)
    assert snapshot(etc) == before  # not chowned to the service user, not 0700, no file


@root_only
def test_setup_code_writes_nothing_through_the_old_temporary_name(unit: Paths, etc: Path) -> None:
    before = snapshot(etc)
    unit.secrets_dir.mkdir(mode=0o700)
    os.chown(unit.secrets_dir, SERVICE, SERVICE)
    (unit.secrets_dir / f"setup-code.tmp{os.getpid()}").symlink_to(etc / "passwd")
    code = setup.setup_code(unit, create=True)
    assert code and len(setup.normalize(code)) == 16
    assert snapshot(etc) == before


@root_only
def test_setup_code_is_0600_and_belongs_to_the_data_directorys_owner(unit: Paths) -> None:
    code = setup.setup_code(unit, create=True)
    f = unit.secrets_dir / "setup-code"
    assert f.read_text().strip() == code
    for p, mode in ((unit.secrets_dir, 0o700), (f, 0o600)):
        st = p.lstat()
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (SERVICE, SERVICE, mode)
    assert sorted(os.listdir(unit.secrets_dir)) == ["setup-code"]


def test_setup_code_is_not_read_through_a_symlink(unit: Paths, tmp_path: Path) -> None:
    private = tmp_path / "root-only"
    private.write_text("TOP-SECRET-OF-ROOT\n")
    unit.secrets_dir.mkdir(mode=0o700)
    (unit.secrets_dir / "setup-code").symlink_to(private)
    with pytest.raises(UnsafeSecretPath, match="symlink"):
        setup.setup_code(unit, create=True)
    assert not setup.code_matches(unit, "TOP-SECRET-OF-ROOT")  # the web role: no, no 500
    assert private.read_text() == "TOP-SECRET-OF-ROOT\n"


@root_only
def test_setup_code_is_not_read_through_a_hard_link(unit: Paths, tmp_path: Path) -> None:
    """Where the system lets the roles' user link a file of root's (fs.protected_hardlinks
    off), `sudo appliance setup-code` must not print that file as the code."""
    private = tmp_path / "root-only"
    private.write_text("TOP-SECRET-OF-ROOT\n")
    os.chmod(private, 0o600)
    unit.secrets_dir.mkdir(mode=0o700)
    os.chown(unit.secrets_dir, SERVICE, SERVICE)
    os.link(private, unit.secrets_dir / "setup-code")  # root can; so can a user, on some systems
    with pytest.raises(UnsafeSecretPath, match="2 links"):
        setup.code_for_cli(unit)
    assert not setup.code_matches(unit, "TOP-SECRET-OF-ROOT")
    assert private.read_text() == "TOP-SECRET-OF-ROOT\n"


def test_setup_code_is_not_read_through_a_symlinked_directory(unit: Paths, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "setup-code").write_text("TOP-SECRET-OF-ROOT\n")
    unit.secrets_dir.symlink_to(elsewhere)
    with pytest.raises(UnsafeSecretPath):
        setup.setup_code(unit, create=False)


def test_a_fifo_at_the_setup_code_does_not_hang_the_reader(unit: Paths) -> None:
    unit.secrets_dir.mkdir(mode=0o700)
    fifo = unit.secrets_dir / "setup-code"
    os.mkfifo(fifo)
    outcome: list[BaseException | str | None] = []

    def look() -> None:
        try:
            outcome.append(setup.setup_code(unit, create=False))
        except BaseException as e:  # recorded for the assertion below
            outcome.append(e)

    t = threading.Thread(target=look, daemon=True)
    t.start()
    t.join(5)
    if t.is_alive():  # release the blocked open() so the thread ends
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        t.join(5)
        pytest.fail("reading the setup code blocked on a FIFO")
    assert isinstance(outcome[0], UnsafeSecretPath), outcome


@root_only
def test_consume_does_not_delete_through_a_symlinked_directory(unit: Paths, etc: Path) -> None:
    (etc / "setup-code").write_text("not ours\n")
    unit.secrets_dir.symlink_to(etc)
    with pytest.raises(UnsafeSecretPath):
        setup.consume(unit)
    assert (etc / "setup-code").read_text() == "not ours\n"


# -- the web role's TLS key -------------------------------------------------------------------


@root_only
def test_tls_writer_refuses_a_symlinked_secrets_dir(unit: Paths, etc: Path) -> None:
    before = snapshot(etc)
    unit.secrets_dir.symlink_to(etc)
    with pytest.raises(UnsafeSecretPath, match="refusing"):
        tls.ensure_cert(unit, unit_name="unit-7")
    assert snapshot(etc) == before


@root_only
def test_tls_writer_writes_nothing_through_the_old_temporary_names(unit: Paths, etc: Path) -> None:
    before = snapshot(etc)
    unit.secrets_dir.mkdir(mode=0o700)
    os.chown(unit.secrets_dir, SERVICE, SERVICE)
    pid = os.getpid()
    (unit.secrets_dir / f"web-key.tmp{pid}").symlink_to(etc / "passwd")
    (unit.secrets_dir / f"web-cert.tmp{pid}").symlink_to(etc / "shadow")
    cert, key = tls.ensure_cert(unit, unit_name="unit-7")
    assert snapshot(etc) == before and not (etc / "shadow").exists()
    for p, mode in ((key, 0o600), (cert, 0o644), (unit.secrets_dir, 0o700)):
        st = p.lstat()
        assert stat.S_ISLNK(st.st_mode) is False
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (SERVICE, SERVICE, mode)


def test_tls_key_is_not_loaded_through_a_symlink(unit: Paths, tmp_path: Path) -> None:
    """A valid pair planted elsewhere and symlinked in is not served: a new pair is made."""
    other = Paths(tmp_path / "other", tmp_path / "run2")
    other_cert, other_key = tls.ensure_cert(other, unit_name="planted")
    planted = other_key.read_bytes()
    unit.secrets_dir.mkdir(mode=0o700)
    tls.cert_path(unit).symlink_to(other_cert)
    tls.key_path(unit).symlink_to(other_key)
    cert, key = tls.ensure_cert(unit, unit_name="unit-7")
    assert not cert.is_symlink() and not key.is_symlink()
    assert key.read_bytes() != planted and other_key.read_bytes() == planted
    got = x509.load_pem_x509_certificate(cert.read_bytes())
    assert (
        got.subject.rfc4514_string().startswith("OU=") or "unit-7" in got.subject.rfc4514_string()
    )


def test_tls_fingerprint_is_not_read_through_a_symlink(unit: Paths, tmp_path: Path) -> None:
    other = Paths(tmp_path / "other", tmp_path / "run2")
    other_cert, _ = tls.ensure_cert(other)
    unit.secrets_dir.mkdir(mode=0o700)
    tls.cert_path(unit).symlink_to(other_cert)
    assert tls.fingerprint(unit) is None and tls.not_after(unit) is None


# -- the lab's PKI and the agent's client key -------------------------------------------------


def test_lab_pki_refuses_a_symlinked_directory(tmp_path: Path, etc: Path) -> None:
    before = snapshot(etc)
    (tmp_path / "fleet").symlink_to(etc)
    with pytest.raises(UnsafeSecretPath):
        pki.make(tmp_path / "fleet", "127.0.0.1", "t")
    assert snapshot(etc) == before


def test_lab_pki_keys_are_0600_in_a_0700_directory(tmp_path: Path) -> None:
    made = pki.make(tmp_path / "fleet", "127.0.0.1", "t")
    assert stat.S_IMODE((tmp_path / "fleet").stat().st_mode) == 0o700
    assert stat.S_IMODE(made.ca_key.stat().st_mode) == 0o600
    assert stat.S_IMODE(made.server_key.stat().st_mode) == 0o600
    assert stat.S_IMODE(made.server_cert.stat().st_mode) == 0o644
    serialization.load_pem_private_key(made.server_key.read_bytes(), password=None)


def test_client_key_as_pem_text_loads_and_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = pki.make(tmp_path / "pki", "127.0.0.1", "t")
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(scratch))
    ctx = tlsutil.client_context(
        made.ca_cert.read_text(), made.server_cert.read_text(), made.server_key.read_text()
    )
    assert isinstance(ctx, ssl.SSLContext)
    assert list(scratch.iterdir()) == []


# -- the agent's factory-reset proof ------------------------------------------------------------


def test_reset_key_is_0600_replaces_a_planted_symlink_and_keeps_the_run_dir_readable(
    store: Store, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    run.mkdir(mode=0o755)
    os.chmod(run, 0o755)
    victim = tmp_path / "victim"
    victim.write_text("keep\n")
    (run / RESET_KEY).symlink_to(victim)
    agent = Agent(Paths(store.data_dir, run), store, LiveState(run), hostname="unit-test")
    key_file = run / RESET_KEY
    assert not key_file.is_symlink() and victim.read_text() == "keep\n"
    assert secretfile.read(key_file).decode() == agent.reset_key
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(run.stat().st_mode) == 0o755  # `appliance status` reads it unprivileged
