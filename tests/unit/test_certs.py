"""The certificate mechanics every maker uses: keys, issuing, writing, loading, validity."""

from __future__ import annotations

import hashlib
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from appliance import certs
from appliance.secretfile import UnsafeSecretPath

NOW = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)


def name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def self_signed(
    kind: certs.KeyType = "ec-p256", days: int = 10, start: datetime = NOW
) -> tuple[certs.PrivateKey, x509.Certificate]:
    key = certs.new_key(kind)
    cert = certs.issue(
        name("unit"),
        key.public_key(),
        key,
        not_before=start,
        not_after=start + timedelta(days=days),
        extensions=[
            (x509.SubjectAlternativeName([x509.DNSName("unit"), x509.DNSName("localhost")]), False),
            (x509.BasicConstraints(ca=False, path_length=None), True),
        ],
    )
    return key, cert


# -- keys and key usage ---------------------------------------------------------------------


def test_key_types() -> None:
    r = certs.new_key("rsa-2048")
    assert isinstance(r, rsa.RSAPrivateKey) and r.key_size == 2048
    e = certs.new_key("ec-p256")
    assert isinstance(e, ec.EllipticCurvePrivateKey) and e.curve.name == "secp256r1"
    with pytest.raises(ValueError, match="unknown key type"):
        certs.new_key("dsa-1024")  # type: ignore[arg-type]


def test_key_usage_sets_exactly_the_named_flags() -> None:
    ku = certs.key_usage("digital_signature", "key_cert_sign", "crl_sign")
    assert ku.digital_signature and ku.key_cert_sign and ku.crl_sign
    assert not (ku.key_encipherment or ku.content_commitment or ku.data_encipherment)
    assert not ku.key_agreement
    with pytest.raises(ValueError, match="digital_sig"):
        certs.key_usage("digital_sig")  # a typo is an error, not a missing usage


# -- issuing ---------------------------------------------------------------------------------


def test_a_self_signed_certificate_says_what_it_was_given() -> None:
    key, cert = self_signed("rsa-2048", days=10)
    assert cert.subject == cert.issuer == name("unit")
    assert cert.not_valid_before_utc == NOW
    assert cert.not_valid_after_utc == NOW + timedelta(days=10)
    assert cert.signature_hash_algorithm is not None
    assert cert.signature_hash_algorithm.name == "sha256"
    cert.verify_directly_issued_by(cert)  # signed by its own key
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert not san.critical
    assert san.value.get_values_for_type(x509.DNSName) == ["unit", "localhost"]
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca is False
    assert [type(e.value) for e in cert.extensions] == [
        x509.SubjectAlternativeName,
        x509.BasicConstraints,
    ]
    assert certs.matches(cert, key)


def test_a_ca_signed_certificate_names_and_is_signed_by_its_issuer() -> None:
    ca_key = certs.new_key("ec-p256")
    ca = certs.issue(
        name("lab CA"),
        ca_key.public_key(),
        ca_key,
        not_before=NOW,
        not_after=NOW + timedelta(days=30),
        extensions=[(x509.BasicConstraints(ca=True, path_length=0), True)],
    )
    key = certs.new_key("ec-p256")
    leaf = certs.issue(
        name("10.0.0.1"),
        key.public_key(),
        ca_key,
        issuer=ca.subject,
        not_before=NOW,
        not_after=NOW + timedelta(days=30),
        extensions=[(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)],
    )
    assert leaf.issuer == ca.subject and leaf.subject == name("10.0.0.1")
    leaf.verify_directly_issued_by(ca)
    with pytest.raises(ValueError):
        leaf.verify_directly_issued_by(leaf)  # not self-signed
    assert certs.matches(leaf, key) and not certs.matches(leaf, ca_key)
    assert leaf.serial_number != ca.serial_number


# -- writing and loading ---------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["pem", "der"])
def test_a_pair_is_written_with_its_modes_and_loads_back(
    tmp_path: Path, encoding: certs.Encoding
) -> None:
    key, cert = self_signed()
    directory = tmp_path / "secrets"
    cert_path, key_path = certs.write_pair(
        directory, "k.pem", key, "c.crt", cert, encoding=encoding, cert_mode=0o640
    )
    assert (cert_path, key_path) == (directory / "c.crt", directory / "k.pem")
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(cert_path.stat().st_mode) == 0o640
    assert sorted(os.listdir(directory)) == ["c.crt", "k.pem"]  # no temporary left behind
    assert key_path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert cert_path.read_bytes().startswith(b"-----BEGIN CERT") == (encoding == "pem")
    assert certs.load_pair(cert_path, key_path, encoding) == cert
    assert certs.read_cert(cert_path, encoding) == cert
    with pytest.raises(ValueError):
        certs.read_cert(cert_path, "der" if encoding == "pem" else "pem")


def test_the_default_certificate_mode_is_world_readable_and_the_key_is_not(
    tmp_path: Path,
) -> None:
    key, cert = self_signed()
    cert_path, key_path = certs.write_pair(tmp_path / "s", "k.pem", key, "c.pem", cert)
    assert stat.S_IMODE(cert_path.stat().st_mode) == 0o644
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600


def test_loading_refuses_a_missing_broken_mismatched_or_symlinked_pair(tmp_path: Path) -> None:
    key, cert = self_signed()
    d = tmp_path / "s"
    cert_path, key_path = certs.write_pair(d, "k.pem", key, "c.pem", cert)
    with pytest.raises(FileNotFoundError):
        certs.load_pair(d / "none.pem", key_path)
    other_key, _ = self_signed()
    certs.write_pair(d, "k.pem", other_key, "other.pem", cert)
    with pytest.raises(certs.KeyMismatch):
        certs.load_pair(cert_path, key_path)
    key_path.write_bytes(b"garbage")
    with pytest.raises(ValueError) as exc:
        certs.load_pair(cert_path, key_path)
    assert not isinstance(exc.value, certs.KeyMismatch)
    planted = tmp_path / "planted.pem"
    planted.write_bytes(certs.key_bytes(key))
    key_path.unlink()
    key_path.symlink_to(planted)
    with pytest.raises(UnsafeSecretPath):
        certs.load_pair(cert_path, key_path)


# -- validity: reuse or renew ----------------------------------------------------------------


def test_valid_at_reuses_until_the_renewal_window() -> None:
    _, cert = self_signed(days=100)
    end = cert.not_valid_after_utc
    assert certs.valid_at(cert, NOW + timedelta(days=1))
    assert not certs.valid_at(cert, end)  # expired
    assert not certs.valid_at(cert, end + timedelta(days=1))
    window = timedelta(days=30)
    assert certs.valid_at(cert, end - timedelta(days=31), renew_before=window)
    assert not certs.valid_at(cert, end - timedelta(days=29), renew_before=window)
    assert not certs.valid_at(cert, end - timedelta(days=30), renew_before=window)


def test_valid_at_before_the_start_only_when_asked_not_to_care() -> None:
    _, cert = self_signed(days=100)
    early = NOW - timedelta(days=1)  # a clock set back
    assert not certs.valid_at(cert, early)
    assert certs.valid_at(cert, early, started=False)
    assert certs.valid_at(cert, NOW)  # the first second counts


def test_valid_at_defaults_to_now() -> None:
    _, past = self_signed(days=1, start=datetime.now(UTC) - timedelta(days=3))
    _, current = self_signed(days=3, start=datetime.now(UTC) - timedelta(days=1))
    assert not certs.valid_at(past) and certs.valid_at(current)


# -- describing ------------------------------------------------------------------------------


def test_fingerprint_thumbprint_and_not_after() -> None:
    _, cert = self_signed(days=10)
    der = certs.cert_bytes(cert, "der")
    sha256 = hashlib.sha256(der).hexdigest().upper()
    fp = certs.fingerprint(cert)
    assert fp == "sha256:" + ":".join(sha256[i : i + 2] for i in range(0, 64, 2))
    assert len(fp.split(":")) == 33
    assert certs.thumbprint(cert) == hashlib.sha1(der).hexdigest().upper()
    assert len(certs.thumbprint(cert)) == 40
    assert certs.not_after(cert) == (NOW + timedelta(days=10)).timestamp()
    _, other = self_signed(days=10)
    assert certs.fingerprint(other) != fp


# -- the makers' reuse and renewal rules ---------------------------------------------------


def test_the_https_certificate_survives_a_clock_set_back(tmp_path: Path) -> None:
    """People compare the web certificate's fingerprint: a clock set back keeps it."""
    from appliance.paths import Paths
    from appliance.web import tls

    paths = Paths(tmp_path / "data", tmp_path / "run")
    tls.ensure_cert(paths, unit_name="unit-7")
    fp = tls.fingerprint(paths)
    tls.ensure_cert(paths, unit_name="unit-7", now=datetime.now(UTC).timestamp() - 86400)
    assert tls.fingerprint(paths) == fp


def test_an_opcua_certificate_not_valid_yet_is_replaced(tmp_path: Path) -> None:
    """The OPC UA certificate must be valid now (peers check it): one from the future goes."""
    from appliance import uacert
    from appliance.paths import Paths

    paths = Paths(tmp_path / "data", tmp_path / "run")
    first = uacert.ensure_certificate(paths, hostname="u")
    assert uacert.ensure_certificate(paths, hostname="u") == first  # reused
    key = certs.new_key("rsa-2048")
    soon = datetime.now(UTC) + timedelta(days=1)
    future = certs.issue(
        name("u"),
        key.public_key(),
        key,
        not_before=soon,
        not_after=soon + timedelta(days=10),
        extensions=[
            (x509.SubjectAlternativeName([x509.UniformResourceIdentifier("urn:u")]), False)
        ],
    )
    certs.write_pair(
        paths.secrets_dir,
        uacert.KEY_FILE,
        key,
        uacert.CERT_FILE,
        future,
        encoding="der",
        cert_mode=0o600,
    )
    again = uacert.ensure_certificate(paths, hostname="u")
    assert again.thumbprint not in (first.thumbprint, certs.thumbprint(future))
    assert again.application_uri == "urn:u:appliance"
