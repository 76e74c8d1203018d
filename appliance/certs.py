"""Certificates: make a key, build a certificate, write and load a key pair, describe it.

The mechanics shared by the package's three certificate makers: the web role's HTTPS
certificate (`appliance.web.tls`), the unit's OPC UA application certificate
(`appliance.uacert`) and the lab's CA (`appliance.lab.pki`). What a certificate says
(key type, names, extensions, validity, file names) and when a new one is made stays
with its maker; how it is made, written and read is here, once:

- keys are RSA 2048 or ECDSA P-256, written as unencrypted PKCS#8 PEM, 0600;
- certificates are signed with SHA-256, by their own key (self-signed) or an issuer's;
- files are written and read through `appliance.secretfile` (atomically, with their mode
  from creation on, never through a symlink), so a certificate and its key are never
  half-written and a planted symlink is refused (UnsafeSecretPath);
- a loaded pair is checked: both files parse and the key belongs to the certificate.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from appliance import secretfile

KeyType = Literal["rsa-2048", "ec-p256"]
Encoding = Literal["pem", "der"]
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey
# (extension, critical) as a maker lists them; added in that order
Extensions = Iterable[tuple[x509.ExtensionType, bool]]

KEY_MODE = 0o600

_KEY_USAGE = (
    "digital_signature",
    "content_commitment",
    "key_encipherment",
    "data_encipherment",
    "key_agreement",
    "key_cert_sign",
    "crl_sign",
    "encipher_only",
    "decipher_only",
)
_ENCODING = {"pem": serialization.Encoding.PEM, "der": serialization.Encoding.DER}


class KeyMismatch(ValueError):
    """A certificate and a key that do not belong together."""


def new_key(kind: KeyType) -> PrivateKey:
    """A fresh private key of `kind`."""
    if kind == "rsa-2048":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if kind == "ec-p256":
        return ec.generate_private_key(ec.SECP256R1())
    raise ValueError(f"unknown key type {kind!r}")


def key_usage(*allowed: str) -> x509.KeyUsage:
    """A KeyUsage with the named flags set and every other one clear (a typo is an error,
    not a silently missing usage)."""
    unknown = set(allowed) - set(_KEY_USAGE)
    if unknown:
        raise ValueError(f"unknown key usage {', '.join(sorted(unknown))}")
    return x509.KeyUsage(**{flag: flag in allowed for flag in _KEY_USAGE})


def issue(
    subject: x509.Name,
    public_key: PublicKey,
    signer: PrivateKey,
    *,
    not_before: datetime,
    not_after: datetime,
    extensions: Extensions = (),
    issuer: x509.Name | None = None,
) -> x509.Certificate:
    """A certificate for `public_key`, signed (SHA-256) by `signer`: self-signed when
    `issuer` is None (the subject is the issuer), else issued by the CA named `issuer`."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject if issuer is None else issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(signer, hashes.SHA256())


def key_bytes(key: PrivateKey) -> bytes:
    """The key as unencrypted PKCS#8 PEM (its file is 0600: the mode is the protection)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def cert_bytes(cert: x509.Certificate, encoding: Encoding = "pem") -> bytes:
    return cert.public_bytes(_ENCODING[encoding])


def parse_cert(data: bytes, encoding: Encoding = "pem") -> x509.Certificate:
    """A certificate from its bytes; ValueError when they are not one."""
    if encoding == "der":
        return x509.load_der_x509_certificate(data)
    return x509.load_pem_x509_certificate(data)


def write_pair(
    directory: Path,
    key_file: str,
    key: PrivateKey,
    cert_file: str,
    cert: x509.Certificate,
    *,
    encoding: Encoding = "pem",
    cert_mode: int = 0o644,
    owner: tuple[int, int] | None = None,
) -> tuple[Path, Path]:
    """Write the key (0600) and then the certificate (`cert_mode`) into `directory`, each
    atomically; (certificate path, key path). The key goes first: a crash in between
    leaves a certificate that does not match its key, which `load_pair` refuses."""
    secretfile.write(directory, key_file, key_bytes(key), mode=KEY_MODE, owner=owner)
    secretfile.write(directory, cert_file, cert_bytes(cert, encoding), mode=cert_mode, owner=owner)
    return directory / cert_file, directory / key_file


def read_cert(path: Path, encoding: Encoding = "pem") -> x509.Certificate:
    """The certificate at `path`, read as a secret is (never through a symlink:
    UnsafeSecretPath); OSError when it cannot be read, ValueError when it is not one."""
    return parse_cert(secretfile.read(path), encoding)


def load_pair(cert_path: Path, key_path: Path, encoding: Encoding = "pem") -> x509.Certificate:
    """The certificate of a pair whose key belongs to it.

    Raises FileNotFoundError (or another OSError) when a file cannot be read,
    UnsafeSecretPath when one is a symlink, KeyMismatch when the key is not the
    certificate's, ValueError (or TypeError) when a file does not parse."""
    cert = read_cert(cert_path, encoding)
    key = serialization.load_pem_private_key(secretfile.read(key_path), password=None)
    if not matches(cert, key):
        raise KeyMismatch(f"{key_path.name} is not the key of {cert_path.name}")
    return cert


def matches(cert: x509.Certificate, key: object) -> bool:
    """Whether `key` is the private key of `cert` (same public key)."""
    public = getattr(key, "public_key", None)
    if public is None:
        return False
    enc, fmt = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    return bool(cert.public_key().public_bytes(enc, fmt) == public().public_bytes(enc, fmt))


def valid_at(
    cert: x509.Certificate,
    when: datetime | None = None,
    *,
    renew_before: timedelta = timedelta(0),
    started: bool = True,
) -> bool:
    """Whether `cert` may still be used at `when` (now): it expires more than
    `renew_before` later and, with `started`, its validity has begun. A maker whose
    fingerprint people compare (the web role's) leaves `started` off, so a clock set
    back keeps the certificate rather than making a new one that looks like an attack."""
    when = when or datetime.now(UTC)
    if started and when < cert.not_valid_before_utc:
        return False
    return cert.not_valid_after_utc - when > renew_before


def fingerprint(cert: x509.Certificate) -> str:
    """'sha256:AB:CD:...' of the DER, as `appliance status` and the pages show it."""
    digest = cert.fingerprint(hashes.SHA256())
    return "sha256:" + ":".join(f"{b:02X}" for b in digest)


def thumbprint(cert: x509.Certificate) -> str:
    """SHA-1 of the DER in hex, as OPC UA tools (UaExpert) show a certificate."""
    return hashlib.sha1(cert_bytes(cert, "der")).hexdigest().upper()


def not_after(cert: x509.Certificate) -> float:
    """When `cert` expires, in epoch seconds."""
    return cert.not_valid_after_utc.timestamp()
