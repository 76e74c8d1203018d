"""A throw-away update PKI for the tests: a CA (the units' keyring) and a code-signing
certificate it issued (the bundle signer), made with openssl at test time, never kept in
the repository."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Pki:
    ca: Path  # the keyring: what a unit trusts
    cert: Path  # the signer's certificate
    key: Path  # the signer's key

    def env(self) -> dict[str, str]:
        return {
            "APPLIANCE_UPDATE_KEYRING": str(self.ca),
            "APPLIANCE_BUNDLE_CERT": str(self.cert),
            "APPLIANCE_BUNDLE_KEY": str(self.key),
        }


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, text=True)


def make_pki(where: Path, name: str) -> Pki:
    """CA `name` and a signer under it in `where` (reused when there already)."""
    where.mkdir(parents=True, exist_ok=True)
    ca, ca_key = where / f"{name}-ca.pem", where / f"{name}-ca.key"
    cert, key = where / f"{name}-signer.pem", where / f"{name}-signer.key"
    if all(p.is_file() for p in (ca, ca_key, cert, key)):
        return Pki(ca, cert, key)
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-keyout", str(ca_key), "-out", str(ca), "-days", "3650",
        "-subj", f"/O=appliance test/CN={name} update CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    csr = where / f"{name}-signer.csr"
    _openssl(
        "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-keyout", str(key), "-out", str(csr),
        "-subj", f"/O=appliance test/CN={name} bundle signer",
    )  # fmt: skip
    ext = where / f"{name}-signer.ext"
    ext.write_text(
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=critical,codeSigning\n"
    )
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
        "-CAcreateserial", "-out", str(cert), "-days", "3650", "-extfile", str(ext),
    )  # fmt: skip
    for p in (key, ca_key):
        p.chmod(0o600)
    return Pki(ca, cert, key)
