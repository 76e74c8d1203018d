"""The web role for real: `appliance run --roles web` in a namespace of its own ("wb-web",
veth pairs standing in for the NICs)
serves HTTPS with its own certificate on the mgmt address only (never OT), redirects
HTTP to HTTPS, follows a new revision's addresses, and stops within 3 s."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from testkit import wait_for

from appliance.paths import Paths
from appliance.state import revisions as revs
from appliance.state.db import Store
from appliance.state.live import LiveState

NS = "wb-web"
PY = sys.executable
APPLIANCE = str(Path(sys.executable).with_name("appliance"))


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=check, capture_output=True, text=True, timeout=30)


CLIENT = r"""
import json, socket, ssl, sys, http.client
kind, host, port, path, cafile = sys.argv[1:6]
out = {}
try:
    if kind.startswith("https"):
        ctx = ssl.create_default_context(cafile=cafile)
        ctx.check_hostname = kind == "https"  # https-any: our certificate, any address
        c = http.client.HTTPSConnection(host, int(port), context=ctx, timeout=5)
    else:
        c = http.client.HTTPConnection(host, int(port), timeout=5)
    c.request("GET", path)
    r = c.getresponse()
    out = {"status": r.status, "headers": dict(r.getheaders()), "body": r.read().decode()}
except (OSError, ssl.SSLError) as e:
    out = {"error": type(e).__name__, "message": str(e)}
print(json.dumps(out))
"""


# Handshakes a client may try, each answered with the version agreed or "refused".
HANDSHAKES = """
import json, socket, ssl, sys
host, port = sys.argv[1], int(sys.argv[2])
def hello(lo, hi, ciphers=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    ctx.minimum_version, ctx.maximum_version = lo, hi
    if ciphers:
        ctx.set_ciphers(ciphers)
    try:
        with socket.create_connection((host, port), 5) as s, ctx.wrap_socket(s) as t:
            return t.version()
    except (ssl.SSLError, OSError):
        return "refused"
V = ssl.TLSVersion
print(json.dumps({
    "tls1.3": hello(V.TLSv1_3, V.TLSv1_3),
    "tls1.2 aead": hello(V.TLSv1_2, V.TLSv1_2, "ECDHE+AESGCM"),
    "tls1.2 cbc": hello(V.TLSv1_2, V.TLSv1_2, "ECDHE+AES+SHA256:ECDHE+AES+SHA384:ECDHE+AES+SHA1"),
    "tls1.1": hello(V.MINIMUM_SUPPORTED, V.TLSv1_1, "ALL:@SECLEVEL=0"),
}))
"""


def get(kind: str, host: str, port: int, path: str, cafile: Path) -> dict[str, Any]:
    r = sh("ip", "netns", "exec", NS, PY, "-c", CLIENT, kind, host, str(port), path, str(cafile))
    return json.loads(r.stdout)


def doc(addresses: list[str]) -> dict[str, Any]:
    return {
        "version": 1,
        "unit": {"name": "wb-unit"},
        "interfaces": [
            {"name": "mgmt0", "role": "mgmt", "addresses": addresses},
            {"name": "ot0", "role": "ot", "addresses": ["192.168.77.1/24"]},
        ],
        "web": {"https_port": 8443, "http_port": 8080},
    }


@pytest.fixture
def netns() -> Iterator[str]:
    if os.geteuid() != 0:
        pytest.skip("needs root: creates a network namespace")
    sh("ip", "netns", "del", NS, check=False)
    sh("ip", "netns", "add", NS)
    try:
        for cmd in (
            "link set lo up",
            "link add mgmt0 type veth peer name mgmt0p",
            "addr add 10.98.0.2/24 dev mgmt0",
            "link set mgmt0 up",
            "link set mgmt0p up",
            "link add ot0 type veth peer name ot0p",
            "addr add 192.168.77.1/24 dev ot0",
            "link set ot0 up",
            "link set ot0p up",
        ):
            sh("ip", "-n", NS, *cmd.split())
        yield NS
    finally:
        sh("ip", "netns", "del", NS, check=False)


def test_web_role_serves_https_on_mgmt_only(netns: str, tmp_path: Path) -> None:
    paths = Paths(tmp_path / "data", tmp_path / "run")
    store = Store(paths.data_dir)
    now = time.time()
    import yaml

    revs.import_text(store, yaml.safe_dump(doc(["10.98.0.2/24"])), author="test", now=now)
    first = revs.commit(store, author="test", now=now).revision.id
    env = {
        **os.environ,
        "APPLIANCE_DATA_DIR": str(paths.data_dir),
        "APPLIANCE_RUN_DIR": str(paths.run_dir),
    }
    proc = subprocess.Popen(
        ["ip", "netns", "exec", NS, APPLIANCE, "run", "--roles", "web"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    live = LiveState(paths.run_dir)
    try:
        web = wait_for(
            what="the web role to listen on mgmt",
            timeout=30,
            every=0.2,
            pred=lambda: (
                (d := live.read("web"))
                and d.get("server_alive")
                and d["urls"] == ["https://10.98.0.2:8443/"]
                and d["listen"] == ["10.98.0.2:8443"]  # as `appliance status` shows it
                and d
            ),
        )
        assert web["cert_fingerprint"].startswith("sha256:")
        assert web["setup_required"] is True
        code = paths.secrets_dir / "setup-code"
        assert code.exists() and oct(code.stat().st_mode & 0o777) == "0o600"
        key = paths.secrets_dir / "web-key.pem"
        assert oct(key.stat().st_mode & 0o777) == "0o600"
        cert = paths.secrets_dir / "web-cert.pem"

        # HTTPS, verified against the unit's own certificate (its SAN has the address)
        r = wait_for(
            what="an HTTPS answer",
            timeout=30,
            every=0.2,
            pred=lambda: (
                (x := get("https", "10.98.0.2", 8443, "/api/setup", cert)).get("status") and x
            ),
        )
        assert r["status"] == 200 and json.loads(r["body"]) == {"required": True}
        assert "default-src 'self'" in r["headers"]["Content-Security-Policy"]
        r = get("https", "10.98.0.2", 8443, "/api/status", cert)
        assert r["status"] == 403 and json.loads(r["body"])["error"] == "setup required"
        # TLS 1.2 with forward-secret AEAD ciphers and TLS 1.3 only (CR 4.3)
        got = json.loads(
            sh("ip", "netns", "exec", NS, PY, "-c", HANDSHAKES, "10.98.0.2", "8443").stdout
        )
        assert got == {
            "tls1.3": "TLSv1.3",
            "tls1.2 aead": "TLSv1.2",
            "tls1.2 cbc": "refused",  # CBC with SHA-2: Python's default would take it
            "tls1.1": "refused",
        }, got
        # plain HTTP only redirects
        r = get("http", "10.98.0.2", 8080, "/conduits?x=1", cert)
        assert r["status"] == 301
        assert r["headers"]["Location"] == "https://10.98.0.2:8443/conduits?x=1"
        # never on OT (nor on loopback, since mgmt exists)
        assert get("https", "192.168.77.1", 8443, "/", cert).get("error") == (
            "ConnectionRefusedError"
        )
        assert get("http", "192.168.77.1", 8080, "/", cert).get("error") == (
            "ConnectionRefusedError"
        )

        # a new revision with a second mgmt address: the role re-binds
        sh("ip", "-n", NS, "addr", "add", "10.98.1.2/24", "dev", "mgmt0")
        revs.confirm(store, author="test", now=time.time(), automatic=True)  # as the net role
        revs.import_text(
            store,
            yaml.safe_dump(doc(["10.98.0.2/24", "10.98.1.2/24"])),
            author="test",
            now=time.time(),
        )
        second = revs.commit(store, author="test", now=time.time()).revision.id
        assert second > first
        wait_for(
            what="the web role to re-bind",
            timeout=30,
            every=0.2,
            pred=lambda: (
                (d := live.read("web"))
                and d.get("server_alive")
                and d.get("revision") == second
                and d["urls"] == ["https://10.98.0.2:8443/", "https://10.98.1.2:8443/"]
            ),
        )
        # (the certificate keeps the names it was made with: same fingerprint for people)
        r = wait_for(
            what="HTTPS on the new address",
            timeout=30,
            every=0.2,
            pred=lambda: (
                (x := get("https-any", "10.98.1.2", 8443, "/api/setup", cert)).get("status") and x
            ),
        )
        assert r["status"] == 200
        server_pid = live.read("web")["server_pid"]

        # stop: within 3 s, the server with it, ports free
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
        took = time.monotonic() - started
        assert took <= 3.5, f"the web role took {took:.1f} s to stop"
        with pytest.raises(ProcessLookupError):
            for _ in range(20):  # the server is reaped by its parent; give it a moment
                os.kill(server_pid, 0)
                time.sleep(0.1)
        assert get("https", "10.98.0.2", 8443, "/", cert).get("error") == ("ConnectionRefusedError")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        store.close()
