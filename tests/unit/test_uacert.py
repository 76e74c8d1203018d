"""The unit's OPC UA application certificate: made once, private, replaced when broken."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from appliance.paths import Paths
from appliance.secretfile import UnsafeSecretPath
from appliance.uacert import CERT_FILE, KEY_FILE, ensure_certificate


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    return Paths(tmp_path / "data", tmp_path / "run")


def test_certificate_is_generated_once_with_private_files(paths: Paths) -> None:
    info = ensure_certificate(paths, hostname="unit7")
    assert info.cert_path == paths.secrets_dir / CERT_FILE
    assert info.key_path == paths.secrets_dir / KEY_FILE
    assert stat.S_IMODE(paths.secrets_dir.stat().st_mode) == 0o700
    for f in (info.cert_path, info.key_path):
        assert stat.S_IMODE(f.stat().st_mode) == 0o600
    assert info.application_uri == "urn:unit7:appliance"
    assert len(info.thumbprint) == 40 and info.fingerprint.startswith("sha256:")

    cert = x509.load_der_x509_certificate(info.cert_path.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["urn:unit7:appliance"]
    assert san.get_values_for_type(x509.DNSName) == ["unit7"]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku and ExtendedKeyUsageOID.CLIENT_AUTH in eku
    key = cert.public_key()
    assert isinstance(key, rsa.RSAPublicKey) and key.key_size == 2048
    assert cert.signature_hash_algorithm is not None
    assert cert.signature_hash_algorithm.name == "sha256"

    again = ensure_certificate(paths, hostname="other-name")
    assert again == info  # reused: a new hostname does not make IT re-trust the unit


def test_broken_or_mismatched_pair_is_replaced(paths: Paths) -> None:
    first = ensure_certificate(paths, hostname="u")
    first.cert_path.write_bytes(b"not a certificate")
    second = ensure_certificate(paths, hostname="u")
    assert second.thumbprint != first.thumbprint

    # a key that does not belong to the certificate
    other = Paths(paths.data_dir.parent / "other", paths.run_dir)
    ensure_certificate(other, hostname="u")
    second.key_path.write_bytes((other.secrets_dir / KEY_FILE).read_bytes())
    third = ensure_certificate(paths, hostname="u")
    assert third.thumbprint not in (first.thumbprint, second.thumbprint)


def test_certificate_is_written_through_no_symlink(paths: Paths, tmp_path: Path) -> None:
    """A secrets directory that is a symlink (planted by a compromised role) is refused
    before anything is written or chmod'ed through it."""
    elsewhere = tmp_path / "etc"
    elsewhere.mkdir(mode=0o755)
    paths.data_dir.mkdir(parents=True)
    paths.secrets_dir.symlink_to(elsewhere)
    with pytest.raises(UnsafeSecretPath):
        ensure_certificate(paths, hostname="u")
    assert list(elsewhere.iterdir()) == []
    assert stat.S_IMODE(elsewhere.stat().st_mode) == 0o755


def test_a_symlinked_key_is_not_read(paths: Paths, tmp_path: Path) -> None:
    info = ensure_certificate(paths, hostname="u")
    other = tmp_path / "other-key.pem"
    other.write_bytes(info.key_path.read_bytes())
    info.key_path.unlink()
    info.key_path.symlink_to(other)
    with pytest.raises(UnsafeSecretPath):
        ensure_certificate(paths, hostname="u")
