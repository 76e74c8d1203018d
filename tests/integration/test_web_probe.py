"""The web server as an outside probe meets it (issue 18, "done when"): the real gunicorn over
TLS (`python -m appliance.web.serve`, as the web role starts it) on 127.0.0.1, clients
on other loopback addresses (127.0.0.2...) standing in for other hosts.

- slow clients (slowloris: a silent connection, a request line and then a header now
  and then, a body a byte at a time) hold no thread for long: one slow host cannot keep
  others from being answered, many are cut off within the read deadline;
- the answers gunicorn writes itself (400, 414, 431, a bad chunk) carry the unit's
  security headers and name no product, like every answer of the app;
- bodies still arrive (chunked or with a length, several requests on one connection),
  and the session cookie has its flags.
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from testkit import wait_for

from appliance.paths import Paths
from appliance.state import revisions as revs
from appliance.web import accounts, tls
from appliance.web.app import SECURITY_HEADERS, create_app
from appliance.web.worker import READ_S

PASSWORD = "plant-floor-secret-42"
THREADS = 8  # per worker (the default), 2 workers: 16 threads to hold


@dataclass
class Server:
    port: int
    proc: subprocess.Popen[bytes]
    log: Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("probe")
    paths = Paths(root / "data", root / "run")
    paths.data_dir.mkdir(parents=True)
    paths.run_dir.mkdir(parents=True)
    app = create_app(paths)
    store = app.extensions["appliance"].store
    doc = {
        "version": 1,
        "unit": {"name": "probe-unit"},
        "interfaces": [{"name": "mgmt0", "role": "mgmt", "addresses": ["10.98.0.2/24"]}],
    }
    revs.import_text(store, yaml.safe_dump(doc), author="test", now=time.time())
    revs.commit(store, author="test", now=time.time())
    with app.app_context():
        accounts.create_user("admin", "admin", PASSWORD, by="test", now=time.time())
    store.close()
    cert, key = tls.ensure_cert(paths, unit_name="probe-unit")
    port = _free_port()
    log = root / "server.log"
    env = {**os.environ, "APPLIANCE_WEB_WORKERS": "2", "APPLIANCE_WEB_THREADS": str(THREADS)}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "appliance.web.serve"),
                *("--data-dir", str(paths.data_dir), "--run-dir", str(paths.run_dir)),
                *("--bind", f"127.0.0.1:{port}", "--certfile", str(cert), "--keyfile", str(key)),
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    srv = Server(port, proc, log)
    try:
        wait_for(
            what="the server to answer",
            timeout=30,
            every=0.2,
            pred=lambda: (
                b"HTTP/1.1 200" in exchange(srv, b"GET /api/setup HTTP/1.1\r\nHost: x\r\n")
            ),
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


def connect(srv: Server, source: str = "127.0.0.1", tls_: bool = True) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=10, source_address=(source, 0))
    return CTX.wrap_socket(s) if tls_ else s


def exchange(srv: Server, head: bytes, body: bytes = b"", source: str = "127.0.0.1") -> bytes:
    """One request on its own connection (Connection: close added), the whole answer."""
    try:
        with connect(srv, source) as s:
            s.sendall(head + b"Connection: close\r\n\r\n" + body)
            return read_all(s)
    except OSError as e:
        return f"error: {e}".encode()


def read_all(s: socket.socket) -> bytes:
    out = b""
    with contextlib.suppress(OSError):
        while data := s.recv(65536):
            out += data
    return out


def headers_of(answer: bytes) -> dict[str, str]:
    head = answer.split(b"\r\n\r\n", 1)[0].decode("latin1").split("\r\n")[1:]
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in head)}


def timed_get(srv: Server) -> float:
    started = time.monotonic()
    answer = exchange(srv, b"GET /api/setup HTTP/1.1\r\nHost: x\r\n")
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    return time.monotonic() - started


class Slow:
    """Connections from `sources`, each a silent one, a request line followed by a header
    a second, or a body a byte a second (`KINDS` in turn); `lifetimes` how long each
    lasted, from its request's first bytes, before the server closed it."""

    KINDS = ("silent", "headers", "body")

    def __init__(self, srv: Server, sources: list[str], per_source: int) -> None:
        self.conns: list[tuple[socket.socket, str, float]] = []
        self.lifetimes: dict[int, float] = {}
        for i in range(per_source):
            for j, src in enumerate(sources):
                kind = self.KINDS[(i + j) % 3]
                try:
                    s = connect(srv, src, tls_=kind != "silent")
                    if kind == "headers":
                        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
                    elif kind == "body":
                        s.sendall(
                            b"POST /api/session HTTP/1.1\r\nHost: x\r\n"
                            b"Content-Type: application/json\r\nContent-Length: 5000\r\n\r\n{"
                        )
                except OSError:  # refused or closed at once: fine too
                    continue
                s.settimeout(0.02)
                self.conns.append((s, kind, time.monotonic()))
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._drip, daemon=True)
        self._t.start()

    def _drip(self) -> None:
        while not self._stop.wait(0.5):
            for i, (s, kind, opened) in enumerate(self.conns):
                if i in self.lifetimes:
                    continue
                try:
                    if s.recv(1) == b"":
                        raise ConnectionResetError
                except (TimeoutError, ssl.SSLWantReadError):
                    pass
                except (OSError, ssl.SSLError):
                    self.lifetimes[i] = time.monotonic() - opened
                    continue
                with contextlib.suppress(OSError):
                    if kind != "silent":
                        s.sendall(b"X-Slow: 1\r\n" if kind == "headers" else b" ")

    def open_count(self) -> int:
        return len(self.conns) - len(self.lifetimes)

    def stop(self) -> None:
        self._stop.set()
        self._t.join(timeout=5)
        for s, _, _ in self.conns:
            s.close()


def test_one_slow_host_cannot_keep_others_waiting(server: Server) -> None:
    slow = Slow(server, ["127.0.0.2"], per_source=6 * THREADS)  # 3x every thread there is
    try:
        took = []
        for _ in range(8):
            took.append(timed_get(server))
            time.sleep(0.5)
        assert max(took) < 2.0, f"answers took {took} while one host was slow"
    finally:
        slow.stop()


def test_many_slow_hosts_are_cut_off_within_the_read_deadline(server: Server) -> None:
    sources = [f"127.0.0.{i}" for i in range(10, 10 + 2 * THREADS)]  # one per thread
    slow = Slow(server, sources, per_source=2)
    try:
        wait_for(
            what="the server to cut every slow connection",
            timeout=READ_S + 8,
            every=0.5,
            pred=lambda: slow.open_count() == 0,
        )
        late = max(slow.lifetimes.values())
        assert late <= READ_S + 5, f"a slow connection lasted {late:.1f} s"
        assert timed_get(server) < 2.0  # and the unit answers again
    finally:
        slow.stop()
    assert "connection cut" in server.log.read_text()


@pytest.mark.parametrize(
    "request_bytes, status",
    [
        (b"GET /x<script> HTTP/1.1 junk\r\nHost: x\r\n\r\n", 400),
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n", 431),
        (
            b"POST /api/session HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\nzz\r\n",
            400,  # a bad chunk is the client's error, not the unit's 500
        ),
    ],
    ids=["bad request line", "long URL", "big header", "bad chunk"],
)
def test_the_servers_own_errors_carry_the_units_headers(
    server: Server, request_bytes: bytes, status: int
) -> None:
    with connect(server) as s:
        s.sendall(request_bytes)
        answer = read_all(s)
    assert answer.startswith(b"HTTP/1.1 %d " % status), answer[:300]
    h = headers_of(answer)
    for name, value in SECURITY_HEADERS.items():
        assert h.get(name) == value, (name, h)
    assert h["Cache-Control"] == "no-store"
    assert "gunicorn" not in answer.decode("latin1").lower()
    assert "<script>" not in answer.decode("latin1")


def test_every_answer_names_no_product(server: Server) -> None:
    for path in (b"/api/setup", b"/login", b"/assets/app.css", b"/nope", b"/api/status"):
        answer = exchange(server, b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n")
        h = headers_of(answer)
        assert "gunicorn" not in h.get("Server", "").lower(), (path, h)
        assert h["Content-Security-Policy"] == SECURITY_HEADERS["Content-Security-Policy"]


def test_bodies_still_arrive_chunked_or_not_on_one_connection(server: Server) -> None:
    body = b'{"username": "admin", "password": "%s"}' % PASSWORD.encode()
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    json_ = b"Content-Type: application/json\r\n"
    with connect(server) as s:
        s.sendall(
            b"POST /api/session HTTP/1.1\r\nHost: x\r\n" + json_
            + b"Transfer-Encoding: chunked\r\n\r\n" + chunked
            + b"GET /api/setup HTTP/1.1\r\nHost: x\r\n\r\n"
            + b"POST /api/session HTTP/1.1\r\nHost: x\r\n" + json_
            + b"Content-Length: %d\r\n\r\n" % len(body) + body
            + b"GET /api/setup HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )  # fmt: skip
        answer = read_all(s).decode("latin1")
    lines = answer.replace("\r\n", "\n").split("\n")  # a JSON body ends in a newline
    statuses = [line for line in lines if line.startswith("HTTP/1.1 ")]
    assert statuses == ["HTTP/1.1 200 OK"] * 4, answer[-600:]
    cookies = [line for line in lines if line.lower().startswith("set-cookie:")]
    assert len(cookies) == 2
    for c in cookies:
        flags = [f.strip().lower() for f in c.split(":", 1)[1].split(";")]
        assert flags[0].startswith("__host-appliance-session=")
        assert {"secure", "httponly", "samesite=strict", "path=/"} <= set(flags), c
        assert not [f for f in flags if f.startswith("domain=")], c
