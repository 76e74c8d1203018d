"""Who the real server thinks is asking (issue 18, item 3): the gunicorn over TLS
(`python -m appliance.web.serve`, as the web role starts it) on 127.0.0.1, clients on
other loopback addresses standing in for other hosts.

A login lock is per (account, source) and the source is the TCP peer: no header a
client sends (X-Forwarded-For, X-Real-IP, Forwarded, True-Client-IP ...) moves a guess
to another address, out of its lock or into the console's. And logging out ends the
session on the server: a copy of the cookie is refused afterwards.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from testkit import wait_for

from appliance.paths import Paths
from appliance.state.db import Audit, Store
from appliance.web import accounts, tls
from appliance.web.app import create_app

PASSWORD = "plant-floor-secret-42"
GUESSER, COLLEAGUE = "127.0.0.2", "127.0.0.3"


@dataclass
class Server:
    port: int
    proc: subprocess.Popen[bytes]
    paths: Paths


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("source")
    paths = Paths(root / "data", root / "run")
    paths.data_dir.mkdir(parents=True)
    paths.run_dir.mkdir(parents=True)
    app = create_app(paths)
    with app.app_context():
        accounts.create_user("admin", "admin", PASSWORD, by="test", now=time.time())
    app.extensions["appliance"].store.close()
    cert, key = tls.ensure_cert(paths, unit_name="source-unit")
    port = _free_port()
    with (root / "server.log").open("wb") as out:
        proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "appliance.web.serve"),
                *("--data-dir", str(paths.data_dir), "--run-dir", str(paths.run_dir)),
                *("--bind", f"127.0.0.1:{port}", "--certfile", str(cert), "--keyfile", str(key)),
            ],
            env={**os.environ, "APPLIANCE_WEB_WORKERS": "2"},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    srv = Server(port, proc, paths)
    try:
        wait_for(
            what="the server to answer",
            timeout=30,
            every=0.2,
            pred=lambda: request(srv, "GET", "/api/setup")[0] == 200,
        )
        yield srv
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


CTX = ssl.create_default_context()
CTX.check_hostname = False
CTX.verify_mode = ssl.CERT_NONE


def request(
    srv: Server,
    method: str,
    path: str,
    body: object = None,
    headers: dict[str, str] | None = None,
    source: str = "127.0.0.1",
) -> tuple[int, dict[str, str], bytes]:
    """One request on its own connection from `source`: (status, headers, body); (0, ...)
    when the server is not answering yet."""
    data = b"" if body is None else json.dumps(body).encode()
    head = [f"{method} {path} HTTP/1.1", "Host: unit", "Connection: close"]
    head += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if body is not None:
        head += ["Content-Type: application/json", f"Content-Length: {len(data)}"]
    try:
        raw = socket.create_connection(
            ("127.0.0.1", srv.port), timeout=10, source_address=(source, 0)
        )
        with CTX.wrap_socket(raw) as s:
            s.sendall("\r\n".join(head).encode() + b"\r\n\r\n" + data)
            answer = b""
            with contextlib.suppress(OSError):
                while chunk := s.recv(65536):
                    answer += chunk
    except OSError:
        return 0, {}, b""
    top, _, rest = answer.partition(b"\r\n\r\n")
    lines = top.decode("latin1").split("\r\n")
    fields = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    return int(lines[0].split()[1]), fields, rest


SPOOFS = (
    "X-Forwarded-For",
    "X-Real-IP",
    "Forwarded",
    "True-Client-IP",
    "X-Client-IP",
    "CF-Connecting-IP",
    "X-Originating-IP",
)


def _spoofed(i: int) -> dict[str, str]:
    """Every forwarding header naming another host each time (and once the console)."""
    claim = "127.0.0.1" if i == 0 else f"10.{i}.0.9"
    out = {h: claim for h in SPOOFS}
    out["Forwarded"] = f"for={claim}"
    return out


def _login(srv: Server, password: str, source: str, headers: dict[str, str] | None = None):
    body = {"username": "admin", "password": password}
    return request(srv, "POST", "/api/session", body, headers, source=source)


def test_forwarding_headers_do_not_move_a_guess_to_another_source(server: Server) -> None:
    for i in range(accounts.FREE_FAILURES["pair"]):
        status, _, _ = _login(server, "wrong-password-x", GUESSER, _spoofed(i))
        assert status == 401, i
    # the guesser's pair is locked whatever address it claims, even the right password
    status, fields, _ = _login(server, PASSWORD, GUESSER, _spoofed(99))
    assert status == 429 and int(fields["retry-after"]) > 0
    # the colleague is not (the claims were never taken as sources)
    status, _, _ = _login(server, PASSWORD, COLLEAGUE)
    assert status == 200
    store = Store(server.paths.data_dir)
    try:
        sources = {
            a.source
            for a in Audit.select().where((Audit.action == "login") & (Audit.result != "ok"))
        }
    finally:
        store.close()
    assert sources == {f"web:{GUESSER}"}


def test_a_copy_of_the_cookie_is_refused_after_logout(server: Server) -> None:
    status, fields, body = _login(server, PASSWORD, COLLEAGUE)
    assert status == 200
    cookie = fields["set-cookie"].split(";", 1)[0]
    csrf = json.loads(body)["csrf"]
    assert request(server, "GET", "/api/status", headers={"Cookie": cookie})[0] == 200
    logout = {"Cookie": cookie, "X-CSRF-Token": csrf}
    assert request(server, "DELETE", "/api/session", headers=logout)[0] == 204
    status, _, body = request(server, "GET", "/api/status", headers={"Cookie": cookie})
    assert status == 401 and b"session has ended" in body
