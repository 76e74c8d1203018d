"""The unit's OPC UA application instance certificate, shared by the server and the client.

The opcua role's server presents it to IT clients; the field role's OPC UA client
presents it to devices (Basic256Sha256). So it sits below both roles, outside
`appliance.opcua` and `appliance.field`, and imports neither asyncua nor the server: the
field process loads it without the server, and neither role imports the other.

Generated on first use into ``<data>/secrets/opcua-cert.der`` and ``opcua-key.pem``
(both 0600, through `appliance.certs`): RSA 2048, SHA-256, valid `CERT_DAYS`, the
application URI ``urn:<hostname>:appliance`` and the hostname in the SubjectAltName,
usable for server and client authentication. It is kept while it is valid and matches
its key (a new hostname does not make IT trust the unit anew); a missing, unreadable,
mismatched or expired pair is replaced. A symlink in its place is refused
(UnsafeSecretPath), not replaced: the field and opcua roles and root all read it.
"""

from __future__ import annotations

import fcntl
import logging
import socket
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from appliance import certs, secretfile
from appliance.paths import Paths

log = logging.getLogger("uacert")

CERT_FILE = "opcua-cert.der"
KEY_FILE = "opcua-key.pem"
CERT_DAYS = 20 * 365


@dataclass(frozen=True)
class Certificate:
    """The unit's OPC UA application instance certificate and where it lives."""

    cert_path: Path
    key_path: Path
    application_uri: str
    thumbprint: str  # SHA-1 of the DER, hex, as OPC UA tools (UaExpert) show it
    fingerprint: str  # "sha256:AB:CD:..."


def _describe_cert(cert_path: Path, key_path: Path, cert: x509.Certificate) -> Certificate:
    """The description of `cert`; ExtensionNotFound or IndexError without an application URI."""
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    return Certificate(
        cert_path=cert_path,
        key_path=key_path,
        application_uri=uris[0],
        thumbprint=certs.thumbprint(cert),
        fingerprint=certs.fingerprint(cert),
    )


def _load(cert_path: Path, key_path: Path) -> Certificate | None:
    """The existing pair if both files are there, match, and the certificate is valid now."""
    try:
        cert = certs.load_pair(cert_path, key_path, "der")
    except FileNotFoundError:
        return None
    except certs.KeyMismatch:
        log.warning("OPC UA certificate and key do not match: generating a new pair")
        return None
    except ValueError as exc:
        log.warning("OPC UA certificate or key unreadable (%s): generating a new pair", exc)
        return None
    if not certs.valid_at(cert):
        log.warning("OPC UA certificate not valid now: generating a new pair")
        return None
    try:
        return _describe_cert(cert_path, key_path, cert)
    except (x509.ExtensionNotFound, IndexError):
        log.warning("OPC UA certificate has no application URI: generating a new pair")
        return None


def ensure_certificate(paths: Paths, hostname: str | None = None) -> Certificate:
    """The unit's certificate, generated on first use (also the client's, towards devices).

    Written through `appliance.certs` (no symlink followed, 0600, owned by the data
    directory's owner when root makes it); the secrets directory is locked meanwhile so
    the field and opcua roles starting together make one pair, not two halves."""
    paths.data_dir.mkdir(parents=True, exist_ok=True, mode=0o750)
    owner = secretfile.owner_for(paths.data_dir)
    with secretfile.open_dir(paths.secrets_dir, owner=owner) as dfd:
        fcntl.flock(dfd, fcntl.LOCK_EX)
        return _ensure_certificate(paths, hostname, owner)


def _ensure_certificate(
    paths: Paths, hostname: str | None, owner: tuple[int, int] | None
) -> Certificate:
    secrets = paths.secrets_dir
    existing = _load(secrets / CERT_FILE, secrets / KEY_FILE)
    if existing is not None:
        return existing
    host = hostname or socket.gethostname() or "appliance"
    uri = f"urn:{host}:appliance"
    key = certs.new_key("rsa-2048")
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, f"appliance@{host}"[:64]),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "IT/OT demarcation appliance"),
        ]
    )
    now = datetime.now(UTC)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = certs.issue(
        name,
        key.public_key(),
        key,
        not_before=now - timedelta(minutes=5),
        not_after=now + timedelta(days=CERT_DAYS),
        extensions=[
            (
                x509.SubjectAlternativeName(
                    [x509.UniformResourceIdentifier(uri), x509.DNSName(host)]
                ),
                False,
            ),
            (x509.BasicConstraints(ca=False, path_length=None), True),
            (
                certs.key_usage(
                    "digital_signature",
                    "content_commitment",
                    "key_encipherment",
                    "data_encipherment",
                ),
                True,
            ),
            (
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                False,
            ),
            (ski, False),
            (x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), False),
        ],
    )
    cert_path, key_path = certs.write_pair(
        secrets, KEY_FILE, key, CERT_FILE, cert, encoding="der", cert_mode=0o600, owner=owner
    )
    info = _describe_cert(cert_path, key_path, cert)
    log.info("generated the OPC UA certificate %s (%s)", info.application_uri, info.thumbprint)
    return info
