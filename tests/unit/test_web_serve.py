"""Where the web role listens (pure) and the unit's certificate."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import signal
import stat
import sys
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from appliance import proc
from appliance.config.load import validate_data
from appliance.paths import Paths
from appliance.web import serve, tls

from . import factory

cfg = factory.web_config


def test_listens_on_mgmt_only_by_default() -> None:
    addrs, why = serve.listen_addresses(cfg(), None)
    assert addrs == ["10.99.0.2", "fd00:99::2"]
    assert "mgmt" in why


def test_listen_it_adds_it_never_ot() -> None:
    addrs, _ = serve.listen_addresses(cfg(listen_it=True), None)
    assert addrs == ["10.99.0.2", "fd00:99::2", "10.10.0.1"]
    assert "192.168.50.1" not in addrs


def test_without_config_mgmt_nics_found_by_the_net_role() -> None:
    net = {
        "links": [
            {"name": "mgmt0", "role": "mgmt", "addresses": ["10.99.0.2/30", "fe80::1/64"]},
            {"name": "ot0", "role": "ot", "addresses": ["192.168.50.1/24"]},
        ]
    }
    addrs, why = serve.listen_addresses(None, net)
    assert addrs == ["10.99.0.2"]  # link-local skipped, OT never
    assert "mgmt-role" in why


def test_nothing_known_is_loopback_only() -> None:
    doc = factory.base()  # IT and OT, no mgmt interface
    addrs, why = serve.listen_addresses(validate_data(doc).config, None)
    assert addrs == ["127.0.0.1"] and "127.0.0.1" in why
    assert serve.listen_addresses(None, None)[0] == ["127.0.0.1"]


def test_bind_specs_and_urls() -> None:
    assert serve.bind_spec("10.0.0.1", 443) == "10.0.0.1:443"
    assert serve.bind_spec("fd00::1", 8443) == "[fd00::1]:8443"
    assert serve.url("10.0.0.1", 443) == "https://10.0.0.1/"
    assert serve.url("fd00::1", 8443) == "https://[fd00::1]:8443/"
    assert serve.can_bind("127.0.0.1")
    assert not serve.can_bind("192.0.2.123")  # TEST-NET: not on this host


def test_certificate_made_once(tmp_path: Path) -> None:
    paths = Paths(tmp_path / "data", tmp_path / "run")
    assert tls.fingerprint(paths) is None and tls.not_after(paths) is None
    cert_file, key_file = tls.ensure_cert(paths, unit_name="unit-7", addresses=["10.99.0.2"])
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(paths.secrets_dir).st_mode) == 0o700
    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert cert.public_key().curve.name == "secp256r1"
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == {"unit-7", "localhost"}
    ips = set(san.get_values_for_type(x509.IPAddress))
    assert ipaddress.ip_address("10.99.0.2") in ips and ipaddress.ip_address("127.0.0.1") in ips
    fp = tls.fingerprint(paths)
    assert fp and fp.startswith("sha256:") and len(fp.split(":")) == 33
    # a second start keeps it (same fingerprint), even with other addresses
    tls.ensure_cert(paths, unit_name="unit-7", addresses=["10.99.9.9"])
    assert tls.fingerprint(paths) == fp


def test_certificate_renewed_near_expiry_or_broken(tmp_path: Path) -> None:
    paths = Paths(tmp_path / "data", tmp_path / "run")
    tls.ensure_cert(paths)
    fp = tls.fingerprint(paths)
    end = tls.not_after(paths)
    assert end is not None
    tls.ensure_cert(paths, now=end - 10 * 86400)  # within 30 days of expiry
    assert tls.fingerprint(paths) != fp
    fp2 = tls.fingerprint(paths)
    tls.key_path(paths).write_text("garbage")
    tls.ensure_cert(paths)
    assert tls.fingerprint(paths) not in (fp, fp2)
    start = dt.datetime.now(dt.UTC).timestamp()
    assert tls.not_after(paths) > start + 9 * 365 * 86400


# The server sets its parent-death signal itself (no preexec_fn in the threaded role).
PDEATHSIG_OF_CHILD = (
    "import ctypes, os\n"
    "from appliance.web import serve\n"
    "serve.die_with_parent(os.getppid())\n"
    "sig = ctypes.c_int()\n"
    "ctypes.CDLL('libc.so.6').prctl(2, ctypes.byref(sig))  # PR_GET_PDEATHSIG\n"
    "print(sig.value)\n"
)


def test_the_server_dies_with_the_process_that_started_it() -> None:
    cp = proc.run([sys.executable, "-c", PDEATHSIG_OF_CHILD], timeout=30)
    assert cp.stdout.strip() == str(int(signal.SIGTERM))


def test_the_server_exits_when_its_parent_is_already_gone(tmp_path: Path) -> None:
    argv = serve.command(
        Paths(tmp_path / "d", tmp_path / "r"),
        [serve.bind_spec("127.0.0.1", 0)],
        tmp_path / "cert.pem",
        tmp_path / "key.pem",
        parent=os.getpid() + 1_000_000,  # not our parent: it died before we started
    )
    cp = proc.run(argv, check=False, timeout=30)
    assert cp.returncode == 1
    assert "is gone" in cp.stderr
    assert "--parent-pid" in serve.command(Paths(tmp_path, tmp_path), [], tmp_path, tmp_path)


def test_the_server_tls_policy_is_tls12_up_with_forward_secret_aead_only() -> None:
    import ssl

    ctx = tls.harden(ssl.create_default_context(ssl.Purpose.CLIENT_AUTH))
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    names = [c["name"] for c in ctx.get_ciphers()]
    tls12 = [n for n in names if not n.startswith("TLS_")]  # TLS 1.3's suites: all AEAD
    assert tls12 and all(n.startswith("ECDHE-") for n in tls12), tls12
    assert all("GCM" in n or "CHACHA20" in n for n in tls12), tls12
    assert ctx.options & ssl.OP_NO_COMPRESSION and ctx.options & ssl.OP_CIPHER_SERVER_PREFERENCE


def _redirect_listener(monkeypatch: Any) -> tuple[serve.RedirectListeners, int]:
    import socket

    assert serve._Redirect.timeout is not None and serve._Redirect.timeout <= 10
    monkeypatch.setattr(serve._Redirect, "timeout", 0.5)  # quicker than the unit's
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = serve.RedirectListeners()
    assert r.start(["127.0.0.1"], port, 8443) == []
    return r, port


def test_the_http_redirect_closes_a_silent_connection(monkeypatch: Any) -> None:
    import socket
    import time

    r, port = _redirect_listener(monkeypatch)
    try:
        with socket.create_connection(("127.0.0.1", port)) as c:
            c.settimeout(5)
            started = time.monotonic()
            assert c.recv(100) == b""  # closed by the listener, no answer
            assert time.monotonic() - started < 3
    finally:
        r.stop()


def test_the_http_redirect_takes_a_bounded_number_of_connections(monkeypatch: Any) -> None:
    """Each connection is a thread of the web role's process: a flood must not make
    thousands of them; the listener answers again once the flood is gone."""
    import socket
    import threading
    import time

    r, port = _redirect_listener(monkeypatch)
    base = threading.active_count()
    flood = []
    try:
        for _ in range(2 * serve.REDIRECT_MAX_CONNECTIONS):
            flood.append(socket.create_connection(("127.0.0.1", port)))
        time.sleep(0.2)
        assert threading.active_count() <= base + serve.REDIRECT_MAX_CONNECTIONS
    finally:
        for c in flood:
            c.close()
    time.sleep(1.0)  # the held ones time out
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
            c.sendall(b"GET /x HTTP/1.1\r\nHost: evil.example\r\n\r\n")
            answer = c.recv(1000).decode()
        assert answer.startswith("HTTP/1.0 301") or answer.startswith("HTTP/1.1 301"), answer
        assert "Location: https://127.0.0.1:8443/x\r\n" in answer  # never the Host given
    finally:
        r.stop()
