"""The unit's own HTTPS key and self-signed certificate, made on first start.

ECDSA P-256, valid for `VALID_DAYS`, with the unit's name, `localhost`, the
loopback addresses and the management/IT addresses known at first start as
subject alternative names. The key is 0600 in the secrets directory, written and read
through `appliance.secretfile` (no symlink followed: root may write it). The
certificate is kept across address changes on purpose: people compare its
fingerprint (shown by `appliance status` and on the System page) and a new one
would look like an attack; it is made again only when missing, unreadable, not
matching its key, or within `RENEW_BEFORE_S` of expiring.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import logging
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from appliance import secretfile
from appliance.paths import Paths
from appliance.secretfile import UnsafeSecretPath

log = logging.getLogger(__name__)

CERT_FILE = "web-cert.pem"
KEY_FILE = "web-key.pem"
VALID_DAYS = 3650
RENEW_BEFORE_S = 30 * 86400.0


def cert_path(paths: Paths) -> Path:
    return paths.secrets_dir / CERT_FILE


def key_path(paths: Paths) -> Path:
    return paths.secrets_dir / KEY_FILE


def _load(paths: Paths) -> x509.Certificate | None:
    try:
        cert = x509.load_pem_x509_certificate(secretfile.read(cert_path(paths)))
        key = serialization.load_pem_private_key(secretfile.read(key_path(paths)), password=None)
    except UnsafeSecretPath as e:  # a planted symlink or FIFO: replaced by a new pair
        log.warning("%s", e)
        return None
    except (OSError, ValueError, TypeError):
        return None
    if cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) != key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ):
        return None
    return cert


def ensure_cert(
    paths: Paths,
    *,
    unit_name: str = "appliance",
    addresses: list[str] | tuple[str, ...] = (),
    now: float | None = None,
) -> tuple[Path, Path]:
    """(certificate path, key path), making them when needed (see the module docstring)."""
    when = dt.datetime.now(dt.UTC) if now is None else dt.datetime.fromtimestamp(now, dt.UTC)
    cert = _load(paths)
    if cert is not None and cert.not_valid_after_utc.timestamp() - when.timestamp() > (
        RENEW_BEFORE_S
    ):
        return cert_path(paths), key_path(paths)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, unit_name[:64] or "appliance"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "IT/OT appliance (self-signed)"),
        ]
    )
    sans: list[x509.GeneralName] = [x509.DNSName("localhost")]
    if unit_name and unit_name != "localhost":
        with contextlib.suppress(ValueError):
            sans.insert(0, x509.DNSName(unit_name))
    ips: list[str] = ["127.0.0.1", "::1", *addresses]
    for text in dict.fromkeys(ips):
        with contextlib.suppress(ValueError):
            sans.append(x509.IPAddress(ipaddress.ip_address(text.split("/")[0])))
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(when - dt.timedelta(minutes=5))
        .not_valid_after(when + dt.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([x509.OID_SERVER_AUTH]), critical=False)
    )
    cert = builder.sign(key, hashes.SHA256())
    owner = secretfile.owner_for(paths.data_dir)  # root making it for the roles' user
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    secretfile.write(paths.secrets_dir, KEY_FILE, key_pem, mode=0o600, owner=owner)
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    secretfile.write(paths.secrets_dir, CERT_FILE, cert_pem, mode=0o644, owner=owner)
    log.info("made a new HTTPS certificate: %s", _fingerprint_of(cert))
    return cert_path(paths), key_path(paths)


def _fingerprint_of(cert: x509.Certificate) -> str:
    digest = cert.fingerprint(hashes.SHA256())
    return "sha256:" + ":".join(f"{b:02X}" for b in digest)


def fingerprint(paths: Paths) -> str | None:
    """'sha256:AB:CD:...' of the unit's certificate, None before it exists."""
    try:
        cert = x509.load_pem_x509_certificate(secretfile.read(cert_path(paths)))
    except (OSError, ValueError, UnsafeSecretPath):
        return None
    return _fingerprint_of(cert)


def not_after(paths: Paths) -> float | None:
    """When the certificate expires (epoch seconds), None before it exists."""
    try:
        cert = x509.load_pem_x509_certificate(secretfile.read(cert_path(paths)))
    except (OSError, ValueError, UnsafeSecretPath):
        return None
    return cert.not_valid_after_utc.timestamp()
