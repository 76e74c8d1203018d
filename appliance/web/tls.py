"""The unit's own HTTPS key and self-signed certificate, made on first start.

ECDSA P-256, valid for `VALID_DAYS`, with the unit's name, `localhost`, the
loopback addresses and the management/IT addresses known at first start as
subject alternative names. The key is 0600 in the secrets directory, written and read
through `appliance.certs` (no symlink followed: root may write it). The
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
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import NameOID

from appliance import certs, secretfile
from appliance.paths import Paths
from appliance.secretfile import UnsafeSecretPath

log = logging.getLogger(__name__)

VALID_DAYS = 3650
RENEW_BEFORE_S = 30 * 86400.0


def cert_path(paths: Paths) -> Path:
    return paths.web_cert


def key_path(paths: Paths) -> Path:
    return paths.web_key


def _load(paths: Paths) -> x509.Certificate | None:
    try:
        return certs.load_pair(cert_path(paths), key_path(paths))
    except UnsafeSecretPath as e:  # a planted symlink or FIFO: replaced by a new pair
        log.warning("%s", e)
        return None
    except (OSError, ValueError, TypeError):  # missing, unreadable or not matching
        return None


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
    renew_before = dt.timedelta(seconds=RENEW_BEFORE_S)
    # not `started`: a clock set back must not replace the certificate people compare
    if cert is not None and certs.valid_at(cert, when, renew_before=renew_before, started=False):
        return cert_path(paths), key_path(paths)
    key = certs.new_key("ec-p256")
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
    cert = certs.issue(
        name,
        key.public_key(),
        key,
        not_before=when - dt.timedelta(minutes=5),
        not_after=when + dt.timedelta(days=VALID_DAYS),
        extensions=[
            (x509.SubjectAlternativeName(sans), False),
            (x509.BasicConstraints(ca=False, path_length=None), True),
            (certs.key_usage("digital_signature", "key_agreement"), True),
            (x509.ExtendedKeyUsage([x509.OID_SERVER_AUTH]), False),
        ],
    )
    owner = secretfile.owner_for(paths.data_dir)  # root making it for the roles' user
    certs.write_pair(
        paths.secrets_dir, paths.web_key.name, key, paths.web_cert.name, cert, owner=owner
    )
    log.info("made a new HTTPS certificate: %s", certs.fingerprint(cert))
    return cert_path(paths), key_path(paths)


def _read(paths: Paths) -> x509.Certificate | None:
    try:
        return certs.read_cert(cert_path(paths))
    except (OSError, ValueError, UnsafeSecretPath):
        return None


def fingerprint(paths: Paths) -> str | None:
    """'sha256:AB:CD:...' of the unit's certificate, None before it exists."""
    cert = _read(paths)
    return certs.fingerprint(cert) if cert is not None else None


def not_after(paths: Paths) -> float | None:
    """When the certificate expires (epoch seconds), None before it exists."""
    cert = _read(paths)
    return certs.not_after(cert) if cert is not None else None


# TLS 1.2 only with forward secrecy and AEAD (TLS 1.3's suites are all of that kind): what
# BSI TR-02102-2 and Mozilla's "intermediate" profile accept, for IEC 62443-4-2 CR 4.3.
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL:!MD5:!SHA1:!DSS:!RSAPSK:!PSK"


def harden(ctx: ssl.SSLContext) -> ssl.SSLContext:
    """The web role's server TLS: TLS 1.2 and 1.3 only, forward-secret AEAD ciphers, no
    compression or renegotiation, the server's cipher order."""
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(TLS12_CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    ctx.options |= getattr(ssl, "OP_NO_RENEGOTIATION", 0)
    return ctx
