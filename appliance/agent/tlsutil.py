"""TLS client contexts for the agent's outgoing connections (fleet, syslog, webhooks).

Always verifying: the CA is the configured one (a file path or PEM text) or
the system store; host names are checked. There is no switch to turn
verification off: a certificate the unit cannot verify is an error the
caller reports, never a connection it makes anyway.
"""

from __future__ import annotations

import ssl
import tempfile
from pathlib import Path

from appliance import secretfile
from appliance.errors import ApplianceError

PEM_MARK = "-----BEGIN"


def is_pem(text: str) -> bool:
    return PEM_MARK in text


def client_context(
    ca_cert: str | None,
    client_cert: str | None = None,
    client_key: str | None = None,
    *,
    field: str = "ca_cert",
) -> ssl.SSLContext:
    """A verifying client context; ApplianceError naming the field if a file is unusable."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca_cert:
        try:
            if is_pem(ca_cert):
                ctx.load_verify_locations(cadata=ca_cert)
            else:
                ctx.load_verify_locations(cafile=ca_cert)
        except (OSError, ssl.SSLError, ValueError) as e:
            raise ApplianceError(f"cannot load the CA certificate: {e}", field=field) from None
    if client_cert and client_key:
        _load_chain(ctx, client_cert, client_key)
    return ctx


def _load_chain(ctx: ssl.SSLContext, cert: str, key: str) -> None:
    """Client certificate and key, each a file path or PEM text (written 0600 by
    `appliance.secretfile` in a private 0700 temporary directory, removed at once)."""
    with tempfile.TemporaryDirectory(prefix="appliance-tls-") as scratch:

        def as_file(value: str, name: str) -> str:
            if not is_pem(value):
                return value
            secretfile.write(Path(scratch), name, value.encode())
            return str(Path(scratch) / name)

        try:
            ctx.load_cert_chain(as_file(cert, "cert.pem"), as_file(key, "key.pem"))
        except (OSError, ssl.SSLError, ValueError) as e:
            raise ApplianceError(
                f"cannot load the client certificate/key: {e}", field="client_cert"
            ) from None
