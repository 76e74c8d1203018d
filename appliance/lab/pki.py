"""The lab's small PKI: a CA and one server certificate for a lab host (fleet, syslog TLS).

Generated fresh by every `lab up` with the `cryptography` package (ECDSA P-256), valid
for 30 days, the server certificate naming its IP address as subjectAltName so that a
verifying client (the appliance's agent) accepts it for that address and nothing else.
Private keys are written 0600 in a 0700 directory, through `appliance.certs` like every
other certificate of the package (no symlink followed, no predictable temporary name).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from appliance import certs, secretfile

VALID_DAYS = 30


@dataclass(frozen=True)
class LabPki:
    """Where the files are: the CA to trust, the server's certificate and key."""

    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "appliance lab"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def make(directory: Path, host: str, label: str, now: dt.datetime | None = None) -> LabPki:
    """A CA ("appliance lab CA <label>") and a server certificate for IP address `host`."""
    address = ipaddress.ip_address(host)
    now = now or dt.datetime.now(dt.UTC)
    start, end = now - dt.timedelta(hours=1), now + dt.timedelta(days=VALID_DAYS)
    with secretfile.open_dir(directory):  # made 0700 (or refused) before any key exists
        pass

    ca_key = certs.new_key("ec-p256")
    ca_name = _name(f"appliance lab CA {label}")
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = certs.issue(
        ca_name,
        ca_key.public_key(),
        ca_key,
        not_before=start,
        not_after=end,
        extensions=[
            (x509.BasicConstraints(ca=True, path_length=0), True),
            (certs.key_usage("digital_signature", "key_cert_sign", "crl_sign"), True),
            (ca_ski, False),
        ],
    )

    key = certs.new_key("ec-p256")
    server = certs.issue(
        _name(host),
        key.public_key(),
        ca_key,
        issuer=ca_name,
        not_before=start,
        not_after=end,
        extensions=[
            (x509.BasicConstraints(ca=False, path_length=None), True),
            (certs.key_usage("digital_signature", "key_agreement"), True),
            (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False),
            (x509.SubjectAlternativeName([x509.IPAddress(address)]), False),
            (x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False),
            (x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), False),
        ],
    )

    ca_cert, ca_key_path = certs.write_pair(directory, "ca-key.pem", ca_key, "ca.pem", ca)
    server_cert, server_key = certs.write_pair(
        directory, "server-key.pem", key, "server.pem", server
    )
    return LabPki(
        ca_cert=ca_cert, ca_key=ca_key_path, server_cert=server_cert, server_key=server_key
    )
