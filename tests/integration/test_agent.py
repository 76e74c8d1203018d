"""The agent against real servers on localhost: an HTTPS fleet with its own CA (outage and
recovery, a bad certificate, a malformed answer, a lost answer), syslog receivers over UDP,
TCP and TLS, and the agent role as a process (agent.json, identify, factory reset)."""

from __future__ import annotations

import contextlib
import datetime as dt
import http.server
import ipaddress
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from testkit import Clock, start_roles, wait_for

from appliance.agent import outbox
from appliance.agent import role as agent_role
from appliance.agent.cli import diagnostics, factory_reset, identify
from appliance.agent.heartbeat import validate
from appliance.agent.role import Agent
from appliance.paths import Paths
from appliance.state import revisions as revs
from appliance.state.control import call, socket_path
from appliance.state.db import Store
from appliance.state.live import LiveState

pytestmark = pytest.mark.integration

TOKEN = "unit-token-for-tests-1234"

# -- a CA and certificates made for the test ---------------------------------------------


class Pki:
    def __init__(self, name: str) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = dt.datetime.now(dt.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )

    @property
    def pem(self) -> str:
        return self.cert.public_bytes(serialization.Encoding.PEM).decode()

    def server(self, tmp: Path, name: str) -> tuple[Path, Path]:
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.DNSName("localhost"),
                        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    ]
                ),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )
        cert_path, key_path = tmp / f"{name}.crt", tmp / f"{name}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return cert_path, key_path


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    return ctx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- the fleet: an HTTPS server that can go away and come back ------------------------------


class Fleet:
    """Records heartbeats; de-duplicates by Idempotency-Key as a real receiver does."""

    def __init__(self, ctx: ssl.SSLContext, port: int) -> None:
        self.ctx = ctx
        self.port = port
        self.received: list[dict[str, Any]] = []  # every POST, duplicates included
        self.by_key: dict[str, dict[str, Any]] = {}
        self.answer: bytes | None = None  # None: ack the events cursor
        self.lose_next_answer = False
        self.lock = threading.Lock()
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        fleet = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                doc = json.loads(body)
                key = self.headers["Idempotency-Key"]
                with fleet.lock:
                    fleet.received.append(
                        {"key": key, "auth": self.headers["Authorization"], "doc": doc}
                    )
                    fleet.by_key.setdefault(key, doc)
                    lose = fleet.lose_next_answer
                    fleet.lose_next_answer = False
                if lose:  # stored, but the unit never hears back
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                answer = fleet.answer
                if answer is None:
                    answer = json.dumps({"ack_cursor": doc["events_cursor"]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

        class Server(http.server.ThreadingHTTPServer):
            allow_reuse_address = True
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # failed handshakes are what some tests are about

        srv = Server(("127.0.0.1", self.port), Handler)
        srv.socket = self.ctx.wrap_socket(srv.socket, server_side=True)
        self._server = srv
        self._thread = threading.Thread(target=srv.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}/api/v1/heartbeat"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("pki")
    ca, rogue = Pki("test fleet CA"), Pki("rogue CA")
    return {
        "ca": ca,
        "rogue": rogue,
        "good": ca.server(tmp, "good"),
        "bad": rogue.server(tmp, "bad"),
    }


@pytest.fixture
def fleet(pki: dict[str, Any]) -> Iterator[Fleet]:
    f = Fleet(server_context(*pki["good"]), free_port())
    f.start()
    try:
        yield f
    finally:
        f.stop()


@pytest.fixture
def unit(tmp_path: Path) -> Iterator[tuple[Paths, Store]]:
    paths = Paths(tmp_path / "data", tmp_path / "run")
    store = Store(paths.data_dir, outbox.MODELS)
    try:
        yield paths, store
    finally:
        store.close()


def commit(store: Store, **sections: Any) -> None:
    doc: dict[str, Any] = {
        "version": 1,
        "unit": {"name": "agent-test", "site": "lab"},
        "interfaces": [{"name": "ot0", "role": "ot", "addresses": ["192.168.50.1/24"]}],
    }
    doc.update(sections)
    revs.import_text(store, yaml.safe_dump(doc), author="test", now=time.time())
    revs.commit(store, author="test", now=time.time())


def agent_for(paths: Paths, store: Store) -> tuple[Agent, Clock]:
    clock = Clock(time.time())
    agent = Agent(paths, store, LiveState(paths.run_dir), clock=clock, hostname="agent-test")
    agent.step(clock())
    return agent, clock


def fleet_section(url: str, ca: str | None, **over: Any) -> dict[str, Any]:
    return {"url": url, "token": TOKEN, "interval": 5, "ca_cert": ca, "outbox_max": 10, **over}


# -- fleet ---------------------------------------------------------------------------------


def test_outage_of_several_intervals_then_recovery(
    unit: tuple[Paths, Store], fleet: Fleet, pki: dict[str, Any]
) -> None:
    paths, store = unit
    commit(store, fleet=fleet_section(fleet.url, pki["ca"].pem))
    agent, clock = agent_for(paths, store)
    agent.io_step(clock())
    assert len(fleet.received) == 1
    fleet.stop()
    for k in range(6):  # six intervals without the fleet, one event in each
        clock.t += 5
        store.event("test.tick", f"tick {k}", source="test")
        agent.step(clock())
        agent.io_step(clock())
    assert agent.fleet is not None
    assert agent.fleet.outbox.count() == 6
    st = agent.fleet.status
    assert st.failures >= 1 and st.last_error and "Refused" in st.last_error
    clock.t += 1
    agent.step(clock())  # publishes agent.json
    doc = LiveState(paths.run_dir).read("agent")
    assert doc is not None and doc["fleet"]["outbox"] == 6 and doc["fleet"]["last_error"]
    fleet.start()
    clock.t += 700  # past any back-off
    agent.io_step(clock())
    assert agent.fleet.outbox.count() == 0
    docs = [r["doc"] for r in fleet.received]
    seqs = [d["seq"] for d in docs]
    assert seqs[0] == 1 and seqs[1:9] == list(range(2, 9))  # order kept, nothing lost
    for r in fleet.received:
        assert r["auth"] == f"Bearer {TOKEN}"
        assert r["key"] == r["doc"]["id"]
        assert validate(r["doc"]) == []
    ticks = [e["message"] for d in docs for e in d["events"] if e["kind"] == "test.tick"]
    assert ticks == [f"tick {k}" for k in range(6)]


def test_a_lost_answer_gives_a_duplicate_the_fleet_can_recognise(
    unit: tuple[Paths, Store], fleet: Fleet, pki: dict[str, Any]
) -> None:
    paths, store = unit
    commit(store, fleet=fleet_section(fleet.url, pki["ca"].pem))
    agent, clock = agent_for(paths, store)
    fleet.lose_next_answer = True
    agent.io_step(clock())
    assert agent.fleet is not None and agent.fleet.outbox.count() == 1
    clock.t += 700
    agent.io_step(clock())
    assert agent.fleet.outbox.count() == 0
    keys = [r["key"] for r in fleet.received]
    assert keys[0] == keys[1]  # the same heartbeat again: the fleet stores it once
    assert fleet.received[0]["doc"] == fleet.received[1]["doc"]
    assert [d["seq"] for d in fleet.by_key.values()] == list(range(1, len(keys)))


@pytest.mark.parametrize("trust", ["our-ca", "system-store"])
def test_a_bad_certificate_is_refused_and_an_event(
    unit: tuple[Paths, Store], pki: dict[str, Any], trust: str
) -> None:
    paths, store = unit
    bad = Fleet(server_context(*pki["bad"]), free_port())
    bad.start()
    try:
        ca = pki["ca"].pem if trust == "our-ca" else None
        commit(store, fleet=fleet_section(bad.url, ca))
        agent, clock = agent_for(paths, store)
        agent.io_step(clock())
        assert agent.fleet is not None and agent.fleet.status.next_attempt is not None
        clock.t = agent.fleet.status.next_attempt
        agent.io_step(clock())
        assert bad.received == []  # never talked to, never retried insecurely
        assert agent.fleet is not None and agent.fleet.outbox.count() >= 1
        assert agent.fleet.status.failures >= 2
        events = store.events(10, "fleet.tls_error")
        assert len(events) == 1  # rate-limited
        assert events[0].severity == "error"
        assert "certif" in events[0].message.lower()
    finally:
        bad.stop()


def test_ca_cert_as_a_file_path(
    unit: tuple[Paths, Store], fleet: Fleet, pki: dict[str, Any], tmp_path: Path
) -> None:
    paths, store = unit
    ca_file = tmp_path / "fleet-ca.pem"
    ca_file.write_text(pki["ca"].pem)
    commit(store, fleet=fleet_section(fleet.url, str(ca_file)))
    agent, clock = agent_for(paths, store)
    agent.io_step(clock())
    assert len(fleet.received) == 1


def test_a_malformed_answer_is_ignored(
    unit: tuple[Paths, Store], fleet: Fleet, pki: dict[str, Any]
) -> None:
    paths, store = unit
    commit(store, fleet=fleet_section(fleet.url, pki["ca"].pem))
    agent, clock = agent_for(paths, store)
    fleet.answer = b'{"interval": "now", "identify": "please", "ack_cursor": -4}'
    agent.io_step(clock())
    assert agent.fleet is not None
    assert agent.fleet.outbox.count() == 0
    assert agent.fleet.interval == 5
    assert agent.identify_until is None
    bad = store.events(10, "fleet.bad_answer")
    assert len(bad) == 1 and "interval" in bad[0].message
    fleet.answer = b'{"interval": 60, "identify": true}'
    clock.t += 5
    agent.io_step(clock())
    assert agent.fleet.interval == 60
    assert agent.identify_until is not None
    assert store.events(5, "unit.identify")[0].message.endswith("fleet")


# -- syslog -----------------------------------------------------------------------------------

HEADER = re.compile(
    r"^<(\d{1,3})>1 \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}(?:Z|[+-]\d\d:\d\d) "
    r"[!-~]{1,255} appliance [!-~]{1,128} [!-~]{1,32} "
    r'\[event@32473(?: [!#-<>-\\^-~]{1,32}="(?:[^"\\\]]|\\["\\\]])*")*\]'
    r"(?: (.*))?$",
    re.DOTALL,
)


class Receiver:
    """A syslog receiver: UDP datagrams or octet-counted frames over TCP/TLS."""

    def __init__(self, transport: str, ctx: ssl.SSLContext | None = None) -> None:
        self.transport = transport
        self.ctx = ctx
        self.port = free_port()
        self.lines: list[str] = []
        self.conns: list[socket.socket] = []
        self._stop = threading.Event()
        kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
        self.sock = socket.socket(socket.AF_INET, kind)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", self.port))
        self.sock.settimeout(0.2)
        if transport != "udp":
            self.sock.listen(4)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if self.transport == "udp":
                    data, _ = self.sock.recvfrom(65535)
                    self.lines.append(data.decode())
                    continue
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            threading.Thread(target=self._stream, args=(conn,), daemon=True).start()

    def _stream(self, conn: socket.socket) -> None:
        self.conns.append(conn)
        try:
            if self.ctx is not None:
                conn.settimeout(5)
                conn = self.ctx.wrap_socket(conn, server_side=True)
            conn.settimeout(None)
            buf = b""
            while True:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                buf += chunk
                while b" " in buf:
                    length, rest = buf.split(b" ", 1)
                    n = int(length)  # a bad frame fails the test: the line is missing
                    if len(rest) < n:
                        break
                    self.lines.append(rest[:n].decode())
                    buf = rest[n:]
        except (OSError, ssl.SSLError):
            return
        finally:
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self.sock.close()
        for c in self.conns:  # a stopped server ends its connections too
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
        self.thread.join(2)


def test_syslog_over_udp_tcp_and_tls(unit: tuple[Paths, Store], pki: dict[str, Any]) -> None:
    paths, store = unit
    rx = {
        "udp": Receiver("udp"),
        "tcp": Receiver("tcp"),
        "tls": Receiver("tls", server_context(*pki["good"])),
    }
    try:
        commit(
            store,
            syslog=[
                {"host": "127.0.0.1", "port": rx["udp"].port, "transport": "udp"},
                {
                    "host": "127.0.0.1",
                    "port": rx["tcp"].port,
                    "transport": "tcp",
                    "min_severity": "warning",
                },
                {
                    "host": "127.0.0.1",
                    "port": rx["tls"].port,
                    "transport": "tls",
                    "ca_cert": pki["ca"].pem,
                },
            ],
        )
        agent, clock = agent_for(paths, store)
        agent.io_step(clock())  # the targets start at the newest event
        store.event("net.drift", "ruleset drift repaired", source="net", severity="warning")
        store.event("config.committed", 'revision 2 "quoted" ] ü', source="cli")
        agent.io_step(clock())

        def got(t: str, n: int) -> bool:
            return len(rx[t].lines) >= n

        for t, n in (("udp", 2), ("tcp", 1), ("tls", 2)):
            wait_for(lambda t=t, n=n: got(t, n), 10, f"{t} syslog lines", lambda t=t: rx[t].lines)
        for t, r in rx.items():
            for line in r.lines:
                assert HEADER.match(line), f"{t}: not RFC 5424: {line!r}"
        assert [HEADER.match(x).group(2) for x in rx["udp"].lines] == [  # type: ignore[union-attr]
            "ruleset drift repaired",
            'revision 2 "quoted" ] ü',
        ]
        assert len(rx["tcp"].lines) == 1 and "net.drift" in rx["tcp"].lines[0]  # warning+
        assert rx["udp"].lines[0].startswith("<132>1 ")  # local0.warning
        status = {s["target"]: s for s in agent.forwarder.live()}
        assert status[f"tls://127.0.0.1:{rx['tls'].port}"]["sent"] == 2

        # the TCP receiver goes away; what happens meanwhile arrives after it is back
        port = rx["tcp"].port
        rx["tcp"].close()
        store.event("net.link", "OT link down", source="net", severity="error")
        agent.io_step(clock())
        store.event("net.link", "OT link down again", source="net", severity="error")
        agent.io_step(clock())
        back = Receiver.__new__(Receiver)
        back.transport, back.ctx, back.port, back.lines = "tcp", None, port, []
        back.conns = []
        back._stop = threading.Event()
        back.sock = socket.socket()
        back.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        back.sock.bind(("127.0.0.1", port))
        back.sock.settimeout(0.2)
        back.sock.listen(4)
        back.thread = threading.Thread(target=back._run, daemon=True)
        back.thread.start()
        rx["tcp"] = back
        clock.t += 10  # past the retry delay
        agent.io_step(clock())
        wait_for(
            lambda: len(back.lines) >= 2, 10, "missed lines after reconnect", lambda: back.lines
        )
        messages = [HEADER.match(x).group(2) for x in back.lines]  # type: ignore[union-attr]
        assert messages[-2:] == ["OT link down", "OT link down again"]
    finally:
        for r in rx.values():
            r.close()


def test_syslog_tls_refuses_an_untrusted_receiver(
    unit: tuple[Paths, Store], pki: dict[str, Any]
) -> None:
    paths, store = unit
    rx = Receiver("tls", server_context(*pki["bad"]))
    try:
        commit(
            store,
            syslog=[
                {
                    "host": "127.0.0.1",
                    "port": rx.port,
                    "transport": "tls",
                    "ca_cert": pki["ca"].pem,
                }
            ],
        )
        agent, clock = agent_for(paths, store)
        agent.io_step(clock())
        store.event("net.drift", "must not leak", source="net", severity="warning")
        agent.io_step(clock())
        time.sleep(0.5)
        assert rx.lines == []
        st = agent.forwarder.live()[0]
        assert st["sent"] == 0 and "CERTIFICATE_VERIFY_FAILED" in (st["last_error"] or "")
    finally:
        rx.close()


# -- the role as a process ----------------------------------------------------------------------


@pytest.fixture
def running_agent(tmp_path: Path) -> Iterator[tuple[Paths, subprocess.Popen[bytes]]]:
    paths = Paths(tmp_path / "data", tmp_path / "run")
    proc = start_roles(paths, "agent")
    live = LiveState(paths.run_dir)
    try:
        wait_for(lambda: live.alive("agent"), 20, "agent.json", lambda: proc.poll())
        yield paths, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_agent_json_liveness_identify_and_prompt_stop(
    running_agent: tuple[Paths, subprocess.Popen[bytes]],
) -> None:
    paths, proc = running_agent
    live = LiveState(paths.run_dir)
    first = live.read("agent")
    assert first is not None and first["role"] == "agent"
    assert first["health"]["state"] in agent_role.HEALTH_EVENT_SEVERITY or first["health"]
    wait_for(
        lambda: (live.read("agent") or {}).get("updated_at", 0) > first["updated_at"],
        5,
        "agent.json refreshed",
    )
    result = call(socket_path(paths.run_dir, "agent"), "identify", seconds=30, actor="test")
    assert result["until"] > time.time()
    wait_for(
        lambda: (live.read("agent") or {}).get("health", {}).get("state") == "identify",
        5,
        "identify in agent.json",
        lambda: live.read("agent"),
    )
    runner = CliRunner()
    out = runner.invoke(
        identify,
        ["--seconds", "20", "--run-dir", str(paths.run_dir), "--data-dir", str(paths.data_dir)],
    )
    assert out.exit_code == 0, out.output
    assert "identifying until" in out.output
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.wait(10)
    assert time.monotonic() - started < 5
    assert not (paths.run_dir / "agent.sock").exists()


def test_diagnostics_cli(
    running_agent: tuple[Paths, subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    import tarfile

    paths, _ = running_agent
    target = tmp_path / "diag.tar.gz"
    out = CliRunner().invoke(
        diagnostics,
        ["-o", str(target), "--run-dir", str(paths.run_dir), "--data-dir", str(paths.data_dir)],
    )
    assert out.exit_code == 0, out.output
    assert oct(target.stat().st_mode & 0o777) == "0o600"
    with tarfile.open(target) as tar:
        names = [m.name.split("/", 1)[1] for m in tar.getmembers()]
        health = json.loads(
            tar.extractfile(
                next(m for m in tar.getmembers() if m.name.endswith("/health.json"))
            ).read()
        )  # type: ignore[union-attr]
    assert "live/agent.json" in names
    assert health["source"] == "agent.json"


def test_factory_reset_through_the_running_agent(
    running_agent: tuple[Paths, subprocess.Popen[bytes]],
) -> None:
    if os.geteuid() != 0:
        pytest.skip("factory-reset is root only")
    paths, proc = running_agent
    paths.secrets_dir.mkdir(exist_ok=True)
    (paths.secrets_dir / "web-key.pem").write_text("key")
    unit_id = (paths.data_dir / "unit-id").read_text()
    no = CliRunner().invoke(
        factory_reset, ["--run-dir", str(paths.run_dir), "--data-dir", str(paths.data_dir)]
    )
    assert no.exit_code != 0 and "--yes" in str(no.exception or no.output)
    out = CliRunner().invoke(
        factory_reset,
        ["--yes", "--run-dir", str(paths.run_dir), "--data-dir", str(paths.data_dir)],
    )
    assert out.exit_code == 0, (out.output, out.exception)
    assert "factory reset done" in out.output
    proc.wait(10)  # the role returns: the supervisor restarts everything
    assert not paths.secrets_dir.exists()
    assert (paths.data_dir / "unit-id").read_text() == unit_id
    assert (paths.run_dir / "factory-reset.json").exists()
    store = Store(paths.data_dir, outbox.MODELS)
    try:
        kinds = [e.kind for e in store.events(10)]
    finally:
        store.close()
    assert kinds[-1] == "unit.factory_reset"
