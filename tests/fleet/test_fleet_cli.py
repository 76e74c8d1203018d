"""`appliance fleet` commands: units and tokens, the operator password, serve's flag checks."""

from __future__ import annotations

import hashlib
import json
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from appliance.fleet import store
from appliance.fleet.cli import main
from appliance.fleet.server import Listen, check_tls, gunicorn_options, parse_listen
from appliance.fleet.validate import HeartbeatValidator

from .test_fleet_validate import T0, heartbeat


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run `appliance fleet ARGS` as the CLI does: (exit code, stdout, stderr)."""
    code = 0
    try:
        main(list(args))
    except SystemExit as e:
        code = int(e.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(autouse=True)
def cheap_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    """argon2id with small costs: the hash format and checks are the same, ten times faster."""
    monkeypatch.setattr(store, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024))


@pytest.fixture
def db(fleet_url: str) -> str:
    return fleet_url


def raw_contents(db: str, tmp_path: Path) -> bytes:
    """Everything the database holds: the SQLite file, or every PostgreSQL row as text."""
    if db.startswith("sqlite"):
        return (tmp_path / "fleet.db").read_bytes()
    with store.fleet_db.connection_context():
        rows = [
            row[0]
            for model in store.MODELS
            for row in store.fleet_db.execute_sql(
                f"SELECT t::text FROM {model._meta.table_name} t"
            ).fetchall()
        ]
    return "\n".join(rows).encode()


def test_add_unit_prints_a_token_once_and_keeps_only_its_hash(
    capsys: pytest.CaptureFixture[str], db: str, tmp_path: Path
) -> None:
    code, out, err = run(capsys, "add-unit", "press-3", "--db", db)
    assert code == 0, err
    token = out.strip()
    assert len(token) == 43 and "\n" not in token
    assert "not shown again" in err
    raw_db = raw_contents(db, tmp_path)
    assert token.encode() not in raw_db
    assert hashlib.sha256(token.encode()).hexdigest().encode() in raw_db
    with store.fleet_db.connection_context():
        assert store.unit_by_token(token).name == "press-3"


def test_add_unit_with_a_token_file_and_replace(
    capsys: pytest.CaptureFixture[str], db: str, tmp_path: Path
) -> None:
    tok = tmp_path / "token"
    tok.write_text("lab-token-0123456789abcdef\n")
    code, out, err = run(capsys, "add-unit", "lab-unit", "--db", db, "--token-file", str(tok))
    assert code == 0, err
    assert out == ""  # a given token is not printed
    code, _, err = run(capsys, "add-unit", "lab-unit", "--db", db)
    assert code == 4 and err.strip() == (
        "appliance: NAME: unit 'lab-unit' already exists (--replace gives it a new token)"
    )
    code, out, _ = run(capsys, "add-unit", "lab-unit", "--db", db, "--replace")
    assert code == 0
    with store.fleet_db.connection_context():
        assert store.unit_by_token("lab-token-0123456789abcdef") is None
        assert store.unit_by_token(out.strip()).name == "lab-unit"


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["add-unit", "bad/name"], 2, "NAME: 'bad/name' must be 1-64 characters"),
        (["add-unit", "u1", "--token-file", "/nonexistent/t"], 1, "--token-file: /nonexistent/t"),
    ],
)
def test_add_unit_errors_are_one_line(
    capsys: pytest.CaptureFixture[str], db: str, args: list[str], code: int, message: str
) -> None:
    got, _, err = run(capsys, *args, "--db", db)
    assert got == code
    assert err.count("\n") == 1 and message in err and "Traceback" not in err


def test_a_short_token_file_is_refused(
    capsys: pytest.CaptureFixture[str], db: str, tmp_path: Path
) -> None:
    tok = tmp_path / "token"
    tok.write_text("short")
    code, _, err = run(capsys, "add-unit", "u1", "--db", db, "--token-file", str(tok))
    assert code == 2 and "token: must be 16-512 characters" in err


def test_units_lists_what_the_units_said(capsys: pytest.CaptureFixture[str], db: str) -> None:
    code, out, _ = run(capsys, "units", "--db", db)
    assert code == 0 and "no units" in out
    run(capsys, "add-unit", "press-3", "--db", db)
    run(capsys, "add-unit", "quiet-one", "--db", db)
    hb = HeartbeatValidator(None).parse(json.dumps(heartbeat(4, state="degraded")).encode())
    with store.fleet_db.connection_context():
        store.record(store.get_unit("press-3"), hb, "k", now=T0)
    code, out, _ = run(capsys, "units", "--db", db)
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "SITE", "LAST", "SEEN", "HEALTH", "REVISION", "FIRMWARE"]
    press = next(line for line in lines if line.startswith("press-3"))
    assert "degraded" in press and "r3 confirmed" in press and "0.1.0" in press
    assert "Plant 2" in press  # the site its heartbeat reports
    assert " !" in press  # T0 is long ago: overdue
    quiet = next(line for line in lines if line.startswith("quiet-one"))
    assert "never" in quiet
    code, out, _ = run(capsys, "units", "--db", db, "--json")
    data = {u["name"]: u for u in json.loads(out)}
    assert data["press-3"]["health"]["state"] == "degraded"
    assert data["press-3"]["overdue"] is True
    assert data["quiet-one"]["last_seen"] is None


def test_remove_unit(capsys: pytest.CaptureFixture[str], db: str) -> None:
    run(capsys, "add-unit", "press-3", "--db", db)
    code, out, _ = run(capsys, "remove-unit", "press-3", "--db", db, "--yes")
    assert code == 0 and "removed" in out
    code, _, err = run(capsys, "remove-unit", "press-3", "--db", db, "--yes")
    assert code == 3 and "no unit named 'press-3'" in err


def test_set_password(capsys: pytest.CaptureFixture[str], db: str, tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("short\n")
    code, _, err = run(capsys, "set-password", "--db", db, "--password-file", str(pw))
    assert code == 2 and "password: must be at least 10 characters" in err  # bad input
    pw.write_text("a long operator password\n")
    code, _, err = run(capsys, "set-password", "--db", db, "--password-file", str(pw))
    assert code == 0, err
    with store.fleet_db.connection_context():
        assert store.verify_password("a long operator password")
        assert not store.verify_password("a long operator password\n")
        assert store.password_hash().startswith("$argon2id$")


try:
    import psycopg2  # noqa: F401

    _PG_MESSAGE = "cannot open postgresql://fleet:***@/fleet"  # the driver is there
except ImportError:
    _PG_MESSAGE = "psycopg2"  # the message says which driver to install


@pytest.mark.parametrize(
    ("url", "message"),
    [
        # a socket directory that does not exist: no name lookup, no network
        ("postgresql://fleet:secret@/fleet?host=/nonexistent-dir", _PG_MESSAGE),
        ("mongodb://x/y", "unsupported database URL scheme 'mongodb'"),
        ("/nonexistent-dir/fleet.db", "directory /nonexistent-dir does not exist"),
    ],
)
def test_database_url_errors(capsys: pytest.CaptureFixture[str], url: str, message: str) -> None:
    code, _, err = run(capsys, "units", "--db", url)
    assert code == 1 and message in err and err.startswith("appliance: --db: ")
    assert "secret" not in err  # no password in messages


def test_normalize_and_redact_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert store.normalize_url(None) == f"sqlite:///{tmp_path}/fleet.db"
    assert store.normalize_url("sqlite:///x.db") == f"sqlite:///{tmp_path}/x.db"
    assert store.normalize_url("/abs/f.db") == "sqlite:////abs/f.db"
    assert store.normalize_url("sqlite:////abs/f.db") == "sqlite:////abs/f.db"
    assert store.redact_url("postgresql://u:pw@h/db") == "postgresql://u:***@h/db"


# -- serve: flags checked before gunicorn starts -------------------------------------------


def test_parse_listen() -> None:
    assert parse_listen("0.0.0.0:8443") == Listen("0.0.0.0", 8443)
    assert parse_listen("[::1]:9000") == Listen("::1", 9000)
    assert parse_listen(":8443") == Listen("0.0.0.0", 8443)
    assert parse_listen("[::]:1").bind == "[::]:1"
    assert Listen("0.0.0.0", 8443).url(True) == "https://127.0.0.1:8443/"
    for bad, msg in [
        ("8443", "must be ADDR:PORT"),
        ("::1:8443", "brackets"),
        ("host.example:8443", "not an IP address"),
        ("1.2.3.4:http", "not a number"),
        ("1.2.3.4:70000", "1-65535"),
    ]:
        with pytest.raises(Exception, match=msg) as exc:
            parse_listen(bad)
        assert exc.value.field == "--listen"  # type: ignore[attr-defined]


def make_cert(tmp_path: Path) -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fleet")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cp, kp = tmp_path / "c.pem", tmp_path / "k.pem"
    cp.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    kp.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(cp), str(kp)


def test_check_tls(tmp_path: Path) -> None:
    cert, key = make_cert(tmp_path)
    assert check_tls(cert, key) is True
    assert check_tls(None, None) is False
    (tmp_path / "other").mkdir()
    _, other_key = make_cert(tmp_path / "other")
    with pytest.raises(Exception, match="not a matching PEM certificate and key"):
        check_tls(cert, other_key)
    opts = gunicorn_options(
        Listen("127.0.0.1", 8443), cert=cert, key=key, workers=2, threads=4, access_log=False
    )
    assert opts["certfile"] == cert and opts["keyfile"] == key and opts["workers"] == 2
    assert opts["control_socket_disable"] is True


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--listen", "nonsense"], "--listen: 'nonsense' must be ADDR:PORT"),
        (["--cert", "CERT"], "--key: needs both --cert and --key"),
        (["--cert", "/nonexistent.pem", "--key", "KEY"], "--cert: /nonexistent.pem: no such file"),
        (["--cert", "GARBAGE", "--key", "KEY"], "--cert: "),
    ],
)
def test_serve_flag_errors_are_one_line(
    capsys: pytest.CaptureFixture[str],
    db: str,
    tmp_path: Path,
    extra: list[str],
    message: str,
) -> None:
    cert, key = make_cert(tmp_path)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")
    subst = {"CERT": cert, "KEY": key, "GARBAGE": str(garbage)}
    args = [subst.get(a, a) for a in extra]
    code, _, err = run(capsys, "serve", "--db", db, "--listen", "127.0.0.1:1", *args)
    assert code != 0
    assert err.count("\n") == 1 and message in err, err


def test_serve_refuses_a_port_in_use(capsys: pytest.CaptureFixture[str], db: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        code, _, err = run(capsys, "serve", "--db", db, "--listen", f"127.0.0.1:{port}")
    assert code == 4
    assert err.strip() == f"appliance: --listen: 127.0.0.1:{port} is already in use"


@pytest.mark.parametrize("days", ["nan", "inf", "-1", "1e300"])
def test_serve_refuses_a_retention_that_is_not_a_number_of_days(
    capsys: pytest.CaptureFixture[str], db: str, days: str
) -> None:
    # NaN would make PostgreSQL's `received_at < NaN` true for every row: prune all
    with socket.socket() as s:  # a port in use: were the flag taken, serve stops there
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        code, _, err = run(
            capsys, "serve", "--db", db, "--listen", f"127.0.0.1:{port}", "--keep-days", days
        )
    assert code == 2, err
    assert err.count("\n") == 1 and "--keep-days" in err, err


def test_stats_and_prune(capsys: pytest.CaptureFixture[str], db: str, backend: str) -> None:
    store.open_db(db)
    with store.fleet_db.connection_context():
        store.add_unit("press-3", now=T0)
        unit = store.get_unit("press-3")
        for seq in range(1, 8):
            hb = HeartbeatValidator(None).parse(json.dumps(heartbeat(seq)).encode())
            store.record(unit, hb, f"k{seq}", T0)
    code, out, err = run(capsys, "stats", "--db", db)
    assert code == 0, err
    assert f"database     {backend}, schema {store.SCHEMA_VERSION}" in out
    assert "heartbeats   7 (received 2026-" in out and "units        1" in out
    code, out, err = run(capsys, "prune", "--db", db, "--keep-days", "0", "--keep-heartbeats", "3")
    assert (code, out) == (0, "pruned 4 heartbeats and 0 events\n"), err
    code, out, _ = run(capsys, "stats", "--db", db, "--json")
    found = json.loads(out)
    assert found["heartbeats"] == 3 and found["size_bytes"] > 0


@pytest.mark.parametrize("flag", ["--keep-heartbeats"])
@pytest.mark.parametrize("value", ["-1", "10000001", "x", "1.5"])
def test_a_bad_heartbeat_count_is_one_line(
    capsys: pytest.CaptureFixture[str], fleet_url: str, flag: str, value: str
) -> None:
    for command in ("prune", "serve"):
        code, _, err = run(capsys, command, "--db", fleet_url, flag, value)
        assert code == 2, err
        assert err.count("\n") == 1 and flag in err, err
