"""The SQL console against the real server (gunicorn, TLS, the web role's workers) on
127.0.0.1: a hostile query is stopped at the time limit while /api/status keeps
answering, and answers too big for the limits leave the workers' memory small."""

from __future__ import annotations

import http.client
import json
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from appliance.paths import Paths
from appliance.state.db import Store
from appliance.web import accounts, serve, tls

PASSWORD = "sql-console-test-password"
A = "printf('%.*c', {}, 'a')"
INSTR = (
    f"WITH s(x, y) AS (SELECT {A.format(200000)}, {A.format(100000)} || 'b') SELECT "
    + ", ".join(["instr(x, y)"] * 150)
    + " FROM s"
)
ZEROBLOBS = (
    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {}) "
    "SELECT zeroblob({}) FROM n"
)


@dataclass
class Server:
    port: int
    cafile: str
    proc: subprocess.Popen[bytes]

    def client(self) -> Client:
        return Client(self)


class Client:
    def __init__(self, server: Server) -> None:
        ctx = ssl.create_default_context(cafile=server.cafile)
        self.conn = http.client.HTTPSConnection("127.0.0.1", server.port, context=ctx, timeout=60)
        self.headers: dict[str, str] = {}
        status, body = self.req("POST", "/api/session", {"username": "v", "password": PASSWORD})
        assert status == 200, body
        self.headers = {"Cookie": self.cookie, "X-CSRF-Token": body["csrf"]}

    def req(self, method: str, path: str, doc: Any = None) -> tuple[int, Any]:
        hdrs = dict(self.headers)
        data = None
        if doc is not None:
            data = json.dumps(doc).encode()
            hdrs["Content-Type"] = "application/json"
        self.conn.request(method, path, body=data, headers=hdrs)
        r = self.conn.getresponse()
        raw = r.read()
        if r.getheader("Set-Cookie"):
            self.cookie = str(r.getheader("Set-Cookie")).split(";", 1)[0]
        return r.status, json.loads(raw) if raw else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    tmp = Path(tempfile.mkdtemp(prefix="web-sql-"))
    paths = Paths(tmp / "data", tmp / "run")
    proc = None
    try:
        Store(paths.data_dir, accounts.MODELS)
        accounts.create_user("a", "admin", PASSWORD, by="test", now=time.time())
        accounts.create_user("v", "viewer", PASSWORD, by="test", now=time.time())
        cert, key = tls.ensure_cert(paths, unit_name="sql-test")
        port = free_port()
        proc = subprocess.Popen(
            serve.command(paths, [serve.bind_spec("127.0.0.1", port)], cert, key),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        ctx = ssl.create_default_context(cafile=str(cert))
        deadline = time.monotonic() + 30
        while True:
            try:
                c = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=2)
                c.request("GET", "/api/setup")
                if c.getresponse().status == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the web server did not start"
            time.sleep(0.2)
        yield Server(port, str(cert), proc)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)


def workers(server: Server) -> list[int]:
    kids = Path(f"/proc/{server.proc.pid}/task/{server.proc.pid}/children").read_text()
    return [int(k) for k in kids.split()]


def peak_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmHWM for {pid}")


def test_hostile_query_stopped_while_status_answers(server: Server) -> None:
    status_client = server.client()
    assert status_client.req("GET", "/api/status")[0] == 200
    hostile: dict[str, Any] = {}

    def run() -> None:
        c = server.client()
        t0 = time.monotonic()
        hostile["status"], hostile["body"] = c.req("POST", "/api/sql", {"query": INSTR})
        hostile["seconds"] = time.monotonic() - t0

    t = threading.Thread(target=run, daemon=True)
    t.start()
    latencies = []
    deadline = time.monotonic() + 30
    while t.is_alive() and time.monotonic() < deadline:
        t0 = time.monotonic()
        status, _ = status_client.req("GET", "/api/status")
        latencies.append(time.monotonic() - t0)
        assert status == 200
        time.sleep(0.1)
    assert not t.is_alive(), "the hostile query was not stopped"
    assert hostile["status"] == 504, hostile
    assert "ran longer than 5 s and was stopped" in hostile["body"]["error"]
    assert hostile["seconds"] < 5 + 1 + 2
    assert len(latencies) >= 20
    assert sorted(latencies)[int(len(latencies) * 0.95)] < 0.5, latencies


def test_too_big_answers_leave_the_workers_small(server: Server) -> None:
    c = server.client()
    for rows, size, says in (
        (8, 9999000, "a value would be longer than 1000000 bytes"),  # the review's query
        (100, 900000, "the result is larger than 8 MB"),
        (8, 999000, "the result is larger than 8 MB"),
    ):
        status, body = c.req("POST", "/api/sql", {"query": ZEROBLOBS.format(rows, size)})
        assert status == 400 and says in body["error"], body
    status, body = c.req("POST", "/api/sql", {"query": ZEROBLOBS.format(3, 1000000)})
    assert status == 200 and [len(r[0]) for r in body["rows"]] == [2000000] * 3
    peaks = [peak_rss_kb(pid) for pid in workers(server)]
    assert peaks and max(peaks) < 200_000, peaks
