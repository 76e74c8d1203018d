"""The unit's own HTTPS key and self-signed certificate, made on first start.

ECDSA P-256, valid for `VALID_DAYS`, with the unit's name, `localhost`, the
loopback addresses and the management/IT addresses known at first start as
subject alternative names. The key is 0600 in the secrets directory. The
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
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from appliance.errors import ApplianceError
from appliance.paths import Paths

log = logging.getLogger(__name__)

CERT_FILE = "web-cert.pem"
KEY_FILE = "web-key.pem"
VALID_DAYS = 3650
RENEW_BEFORE_S = 30 * 86400.0


def cert_path(paths: Paths) -> Path:
    return paths.secrets_dir / CERT_FILE


def key_path(paths: Paths) -> Path:
    return paths.secrets_dir / KEY_FILE


def ensure_secrets_dir(paths: Paths) -> Path:
    """The secrets directory (0700), owned like the data directory when made by root."""
    d = paths.secrets_dir
    try:
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(d, 0o700)
    except OSError as e:
        raise ApplianceError(f"cannot create {d}: {e.strerror}")
    match_owner(paths, d)
    return d


def match_owner(paths: Paths, target: Path) -> None:
    """Root making a secret for a role that runs as the data directory's owner: chown it."""
    if os.geteuid() != 0:
        return
    with contextlib.suppress(OSError):
        st = paths.data_dir.stat()
        if st.st_uid != 0:
            os.chown(target, st.st_uid, st.st_gid)


def _load(paths: Paths) -> x509.Certificate | None:
    try:
        cert = x509.load_pem_x509_certificate(cert_path(paths).read_bytes())
        key = serialization.load_pem_private_key(key_path(paths).read_bytes(), password=None)
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
    ensure_secrets_dir(paths)
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
    _write(
        paths,
        key_path(paths),
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        0o600,
    )
    _write(paths, cert_path(paths), cert.public_bytes(serialization.Encoding.PEM), 0o644)
    log.info("made a new HTTPS certificate: %s", _fingerprint_of(cert))
    return cert_path(paths), key_path(paths)


def _write(paths: Paths, target: Path, data: bytes, mode: int) -> None:
    tmp = target.with_suffix(f".tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, mode)
    match_owner(paths, tmp)
    os.replace(tmp, target)


def _fingerprint_of(cert: x509.Certificate) -> str:
    digest = cert.fingerprint(hashes.SHA256())
    return "sha256:" + ":".join(f"{b:02X}" for b in digest)


def fingerprint(paths: Paths) -> str | None:
    """'sha256:AB:CD:...' of the unit's certificate, None before it exists."""
    try:
        cert = x509.load_pem_x509_certificate(cert_path(paths).read_bytes())
    except (OSError, ValueError):
        return None
    return _fingerprint_of(cert)


def not_after(paths: Paths) -> float | None:
    """When the certificate expires (epoch seconds), None before it exists."""
    try:
        cert = x509.load_pem_x509_certificate(cert_path(paths).read_bytes())
    except (OSError, ValueError):
        return None
    return cert.not_valid_after_utc.timestamp()
