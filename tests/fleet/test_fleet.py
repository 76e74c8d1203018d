"""`appliance fleet serve` really running: gunicorn over TLS with a CA made here, real clients,
on SQLite and on PostgreSQL (the `fleet_url` fixture, tests/fleet/conftest.py).

No namespace is needed: the receiver listens on a free localhost port.
"""

from __future__ import annotations

import http.cookiejar
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from testkit import wait_for

from appliance.lab import pki

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
PASSWORD = "integration operator pw"
UNIT_UUID = "7d0e2f9a-4c1b-4a8e-9f3d-2b6c5e8a1f04"
TOKEN = "integration-token-0123456789abcdef"


def fleet(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "appliance.fleet", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )


def make_pki(root: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 signed by it -> (ca, cert, key) paths."""
    made = pki.make(root, "127.0.0.1", "fleet test")
    return made.ca_cert, made.server_cert, made.server_key


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Receiver:
    base: str
    ca: Path
    db: str
    proc: subprocess.Popen
    log: Path

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))

    def request(
        self,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
        context: ssl.SSLContext | None = None,
    ) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            self.base + path,
            data=data,
            headers={"Content-Type": "application/json", **(headers or {})},
            method="POST" if data is not None else "GET",
        )
        try:
            with urllib.request.urlopen(req, context=context or self.context(), timeout=20) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def heartbeat(self, body: dict[str, Any], key: str | None = None) -> tuple[int, Any]:
        return self.request(
            "/api/v1/heartbeat",
            body,
            {"Authorization": f"Bearer {TOKEN}", "Idempotency-Key": key or body["id"]},
        )

    def workers(self) -> list[int]:
        path = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        return [int(p) for p in path.read_text().split()]


def heartbeat(seq: int, state: str = "ok", events: list[dict] | None = None) -> dict[str, Any]:
    """A heartbeat as the agent sends it (appliance/agent/heartbeat.schema.json)."""
    events = events or []
    return {
        "schema": "appliance-heartbeat/1",
        "id": str(uuid.uuid4()),
        "unit": {"id": UNIT_UUID, "name": "it-unit", "site": "Integration", "serial": None},
        "seq": seq,
        "sent_at": 1_790_000_000.0 + 60 * seq,
        "firmware": "0.1.0",
        "uptime_s": 100.0 + seq,
        "health": {"state": state, "reasons": []},
        "revision": {"id": 2, "sha256": "cd" * 32, "state": "confirmed"},
        "links": [{"name": "it0", "role": "it", "up": True}],
        "conduits": {"count": 0, "drops": {}, "top": []},
        "devices": {"total": 0, "ok": 0, "down": 0},
        "tags": {"total": 0, "good": 0, "bad": 0},
        "alarms": [],
        "events": events,
        "events_cursor": max((e["id"] for e in events), default=0),
        "outbox": {"queued": 0, "dropped": 0},
    }


@pytest.fixture
def receiver(tmp_path: Path, fleet_url: str) -> Iterator[Receiver]:
    ca, cert, key = make_pki(tmp_path)
    db = fleet_url
    (tmp_path / "token").write_text(TOKEN + "\n")
    (tmp_path / "pw").write_text(PASSWORD + "\n")
    r = fleet("add-unit", "it-unit", "--db", db, "--token-file", str(tmp_path / "token"))
    assert r.returncode == 0, r.stderr
    r = fleet("set-password", "--db", db, "--password-file", str(tmp_path / "pw"))
    assert r.returncode == 0, r.stderr
    port = free_port()
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "appliance.fleet",
                "serve",
                "--listen",
                f"127.0.0.1:{port}",
                "--db",
                db,
                "--cert",
                str(cert),
                "--key",
                str(key),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            start_new_session=True,
        )
    rcv = Receiver(f"https://127.0.0.1:{port}", ca, db, proc, log)

    def answers() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"fleet serve exited {proc.returncode}: {log.read_text()}")
        try:
            return rcv.request("/api/v1/ping")[0] == 200
        except (OSError, ssl.SSLError):
            return False

    try:
        wait_for(answers, 60, "the fleet receiver to answer HTTPS", lambda: log.read_text())
        yield rcv
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)


def test_a_unit_reports_over_verified_tls(receiver: Receiver) -> None:
    log = receiver.log.read_text()
    assert "fleet receiver on https://127.0.0.1:" in log
    assert "Using worker: gthread" in log
    wait_for(lambda: len(receiver.workers()) == 2, 30, "two gunicorn workers", receiver.workers)

    status, answer = receiver.heartbeat(heartbeat(1, "degraded", [{
        "id": 1, "at": 1_790_000_001.0, "kind": "net.applied", "severity": "info",
        "source": "net", "message": "revision 2 applied",
    }]))  # fmt: skip
    assert status == 200, answer
    assert answer == {"ack_cursor": 1, "interval": None, "identify": False}

    r = fleet("units", "--db", receiver.db, "--json")
    units = json.loads(r.stdout)
    assert units[0]["name"] == "it-unit"
    assert units[0]["health"]["state"] == "degraded"
    assert units[0]["revision"] == {"id": 2, "sha256": "cd" * 32, "state": "confirmed"}


def test_tls_is_verified_by_the_client(receiver: Receiver) -> None:
    # the system trust store does not know our CA
    with pytest.raises(urllib.error.URLError) as exc:
        receiver.request("/api/v1/ping", context=ssl.create_default_context())
    assert isinstance(exc.value.reason, ssl.SSLCertVerificationError)
    # the right CA, the wrong name
    ctx = receiver.context()
    port = int(receiver.base.rsplit(":", 1)[1])
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as sock,
        pytest.raises(ssl.SSLCertVerificationError),
    ):
        ctx.wrap_socket(sock, server_hostname="fleet.example")


def test_concurrent_heartbeats_and_repeats_are_each_stored_once(receiver: Receiver) -> None:
    bodies = [heartbeat(seq) for seq in range(1, 13)]
    results: list[tuple[int, Any]] = []
    lock = threading.Lock()

    def send(body: dict[str, Any]) -> None:
        got = receiver.heartbeat(body)
        with lock:
            results.append(got)

    # every heartbeat twice, all at once: the outbox of a unit that came back
    threads = [threading.Thread(target=send, args=(b,)) for b in bodies + bodies]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == 24 and all(s == 200 for s, _ in results), results
    assert sum(1 for _, a in results if a.get("duplicate")) == 12
    units = json.loads(fleet("units", "--db", receiver.db, "--json").stdout)
    assert units[0]["heartbeats"] == 12
    assert units[0]["last_seq"] == 12  # the newest sent_at, whatever the arrival order


def test_bad_requests_are_refused_with_json(receiver: Receiver) -> None:
    body = heartbeat(1)
    status, answer = receiver.request("/api/v1/heartbeat", body)
    assert status == 401 and answer["field"] == "Authorization"
    bad = dict(body, seq="one")
    status, answer = receiver.heartbeat(bad)
    assert status == 400 and answer["field"] == "seq"


def test_an_operator_logs_in_and_asks_for_identify(receiver: Receiver) -> None:
    receiver.heartbeat(heartbeat(1))
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(
        urllib.request.HTTPSHandler(context=receiver.context()),
        urllib.request.HTTPCookieProcessor(jar),
    )

    def csrf(html: str) -> str:
        m = re.search(r'name="csrf_token" value="([^"]+)"', html)
        assert m
        return m.group(1)

    with opener.open(receiver.base + "/login", timeout=20) as r:
        token = csrf(r.read().decode())
    form = urllib.parse.urlencode({"password": PASSWORD, "csrf_token": token}).encode()
    with opener.open(receiver.base + "/login", data=form, timeout=20) as r:
        assert r.status == 200 and r.url == receiver.base + "/"
        assert "it-unit" in r.read().decode()
    cookie = next(c for c in jar if c.name == "fleet_session")
    assert cookie.secure and cookie.has_nonstandard_attr("HttpOnly")
    with opener.open(receiver.base + "/units/it-unit", timeout=20) as r:
        token = csrf(r.read().decode())
    form = urllib.parse.urlencode({"csrf_token": token}).encode()
    with opener.open(receiver.base + "/units/it-unit/identify", data=form, timeout=20) as r:
        assert "identify requested" in r.read().decode()
    assert receiver.heartbeat(heartbeat(2))[1]["identify"] is True
    assert receiver.heartbeat(heartbeat(3))[1]["identify"] is False


def test_sigterm_stops_every_process(receiver: Receiver) -> None:
    workers = receiver.workers()
    assert workers
    os.killpg(receiver.proc.pid, signal.SIGTERM)
    assert receiver.proc.wait(30) == 0
    for pid in workers:
        wait_for(lambda pid=pid: not Path(f"/proc/{pid}").exists(), 15, f"worker {pid} to exit")
