"""Diagnostics: the redaction function, and an archive built from a unit full of secrets that
holds none of them."""

from __future__ import annotations

import io
import json
import sqlite3
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from appliance.agent.diagnostics import REDACTED, build, is_secret_key, redact, scrub
from appliance.paths import Paths
from appliance.state import revisions as revs
from appliance.state.db import Store

from .factory import NOW, base

T0 = NOW.timestamp()

FLEET_TOKEN = "fleet-token-4f9a8b7c6d5e"
HOOK_TOKEN = "hook-token-0a1b2c3d4e5f"
OPC_PASSWORD = "opc-pass-Zx9!Qw8@Er7#"
KEY_BODY = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7secretkeybody"
CLIENT_KEY = f"-----BEGIN PRIVATE KEY-----\n{KEY_BODY}\n-----END PRIVATE KEY-----\n"
SETUP_CODE = "setup-7H3K-9QXM-22ZP"
UNIT_TOKEN = "unit-token-ab12cd34ef56ab78"
TLS_KEY_BODY = "MHcCAQEEIBkTlskeyofthewebroleXYZsecretmaterial0123456789"
TLS_KEY = f"-----BEGIN EC PRIVATE KEY-----\n{TLS_KEY_BODY}\n-----END EC PRIVATE KEY-----\n"
PASSWORD_HASH = "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$hashhashhashhashhash"
API_TOKEN_HASH = "sha256:9b74c9897bac770ffc029102a200c5de"

SECRETS = [
    FLEET_TOKEN,
    HOOK_TOKEN,
    OPC_PASSWORD,
    KEY_BODY,
    SETUP_CODE,
    UNIT_TOKEN,
    TLS_KEY_BODY,
    PASSWORD_HASH,
    API_TOKEN_HASH,
]


def secret_config() -> dict[str, Any]:
    doc = base()
    doc["fleet"] = {
        "url": "https://fleet.example/api/v1/heartbeat",
        "token": FLEET_TOKEN,
        "client_cert": "/etc/appliance/client.crt",
        "client_key": CLIENT_KEY,
    }
    doc["webhooks"] = [{"url": "https://hooks.example/a", "token": HOOK_TOKEN}]
    doc["syslog"] = [{"host": "siem.example", "transport": "tcp"}]
    doc["devices"] = [
        {
            "name": "opc1",
            "protocol": "opcua",
            "address": "opc.tcp://192.168.50.20:4840",
            "security": {
                "policy": "Basic256Sha256",
                "mode": "SignAndEncrypt",
                "username": "reader",
                "password": OPC_PASSWORD,
            },
        }
    ]
    return doc


@pytest.fixture
def unit(store: Store, tmp_path: Path) -> Paths:
    paths = Paths(store.data_dir, tmp_path / "run")
    text = yaml.safe_dump(secret_config())
    revs.import_text(store, text, author="test", now=T0)
    revs.commit(store, author="test", now=T0)
    secrets = paths.secrets_dir
    secrets.mkdir(mode=0o700)
    (secrets / "web.key").write_text(TLS_KEY)
    (secrets / "setup-code").write_text(SETUP_CODE + "\n")
    (secrets / "unit-token").write_text(UNIT_TOKEN)
    # tables as the web area may make them: they must never be dumped
    con = sqlite3.connect(paths.data_dir / "config.db")
    con.execute("CREATE TABLE IF NOT EXISTS t_users (name TEXT, password_hash TEXT)")
    con.execute("INSERT INTO t_users VALUES ('admin', ?)", (PASSWORD_HASH,))
    con.execute("CREATE TABLE IF NOT EXISTS t_api_tokens (name TEXT, token_hash TEXT)")
    con.execute("INSERT INTO t_api_tokens VALUES ('grafana', ?)", (API_TOKEN_HASH,))
    con.commit()
    con.close()
    # a secret that slipped into a message must be scrubbed too
    store.event("test.leak", f"oops, logged the token {FLEET_TOKEN}", source="test")
    store.audit("cli:root", "login", detail=f"hash {PASSWORD_HASH}")
    paths.run_dir.mkdir()
    (paths.run_dir / "field.json").write_text(
        json.dumps({"role": "field", "alarms": {"active": [], "counts": {}}, "updated_at": T0})
    )
    return paths


def members(archive: bytes) -> dict[str, str]:
    out = {}
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        for m in tar.getmembers():
            f = tar.extractfile(m)
            assert f is not None
            out[m.name.split("/", 1)[1]] = f.read().decode()
    return out


def test_no_secret_is_in_the_archive(unit: Paths) -> None:
    archive = build(unit, now=T0)
    files = members(archive)
    everything = "\n".join(files.values())
    for secret in SECRETS:
        assert secret not in everything, f"{secret[:12]}... leaked"
    assert "PRIVATE KEY" not in everything
    # and the archive still says what support needs
    running = yaml.safe_load(files["config/running.yaml"])
    assert running["fleet"]["token"] == REDACTED
    assert running["fleet"]["client_key"] == REDACTED
    assert running["fleet"]["client_cert"] == "/etc/appliance/client.crt"
    assert running["devices"][0]["security"]["password"] == REDACTED
    assert running["devices"][0]["security"]["username"] == "reader"
    assert running["webhooks"][0]["token"] == REDACTED
    assert running["conduits"][0]["name"] == "scada-modbus"
    events = json.loads(files["events.json"])
    leak = next(e for e in events if e["kind"] == "test.leak")
    assert leak["message"] == f"oops, logged the token {REDACTED}"
    db = json.loads(files["database.json"])
    assert db["config.db"]["rows"]["t_users"] == 1
    assert db["config.db"]["rows"]["revision"] >= 1


def test_archive_has_every_part(unit: Paths) -> None:
    files = members(build(unit, now=T0))
    for name in (
        "README.txt",
        "versions.json",
        "health.json",
        "config/running.yaml",
        "config/pending.yaml",
        "events.json",
        "audit.json",
        "alarms.json",
        "database.json",
        "disk.json",
        "journal/net.txt",
        "journal/agent.txt",
        "live/field.json",
    ):
        assert name in files, name
    assert "ruleset.json" in files or "ruleset.txt" in files
    assert "links.json" in files or "links.txt" in files
    assert json.loads(files["versions.json"])["appliance"]
    assert "state" in json.loads(files["health.json"]) or "note" in json.loads(files["health.json"])
    disk = json.loads(files["disk.json"])
    assert disk["data_dir"]["total"] > 0
    assert "secrets/" in disk["data_files"]


def test_a_unit_without_configuration_still_gives_an_archive(store: Store, tmp_path: Path) -> None:
    files = members(build(Paths(store.data_dir, tmp_path / "run"), now=T0))
    assert files["config/running.yaml"] == "# no revision\n"


# -- the redaction function --------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "password",
        "token",
        "client_key",
        "private_key",
        "api_key",
        "setup_code",
        "password_hash",
        "token_hash",
        "secret",
        "client-secret",
        "salt",
        "Session_Cookie",
    ],
)
def test_secret_names(name: str) -> None:
    assert is_secret_key(name)


@pytest.mark.parametrize(
    "name", ["key", "username", "client_cert", "ca_cert", "name", "tokenizer", "passive", "keys"]
)
def test_plain_names(name: str) -> None:
    assert not is_secret_key(name)


def test_redact_walks_everything_and_collects() -> None:
    found: set[str] = set()
    doc = {
        "a": {"password": "p1", "list": [{"token": "t1"}, {"x": 1}]},
        "client_key": {"nested": "k1"},
        "note": "see " + CLIENT_KEY,
        "empty_token": None,
        "key": "plc1.temp:high",
    }
    out = redact(doc, found)
    assert out == {
        "a": {"password": REDACTED, "list": [{"token": REDACTED}, {"x": 1}]},
        "client_key": REDACTED,
        "note": f"see {REDACTED}\n",
        "empty_token": None,
        "key": "plc1.temp:high",
    }
    assert {"p1", "t1", "k1"} <= found
    assert doc["a"]["password"] == "p1"  # a copy: the original is untouched


def test_scrub_replaces_long_values_only() -> None:
    text = 'token "abcdefgh12" and 1234 and {"v": "a\\"bcdefgh"}'
    got = scrub(text, {"abcdefgh12", "1234", 'a"bcdefgh'})
    assert got == f'token "{REDACTED}" and 1234 and {{"v": "{REDACTED}"}}'


def test_building_leaves_the_caller_s_store_usable(unit: Paths, store: Store) -> None:
    """The web role builds the archive in its own process, then audits with its Store."""
    build(unit, now=T0)
    store.audit("web:admin", "diagnostics")  # would wait for itself on a re-bound proxy
    store.event("test.after", "still writable", source="test")
    assert store.events(1)[0].kind == "test.after"


def test_building_for_another_data_dir_binds_the_models_back(store: Store, tmp_path: Path) -> None:
    from appliance.state.db import config_db, history_db

    before = (config_db.obj, history_db.obj)
    other = Paths(tmp_path / "other-data", tmp_path / "other-run")
    files = members(build(other, now=T0))
    assert "config/running.yaml" in files
    assert (config_db.obj, history_db.obj) == before
    store.event("test.after", "still mine", source="test")
    assert store.events(1)[0].message == "still mine"


# -- the reproductions: short values, folded values, credentials in URLs -------------------

SHORT_PASSWORD = "pw12"
SHORT_TOKEN = "s3cr3t"
LONG_TOKEN = "correct horse battery staple " * 3 + "tr0ub4dor end"  # YAML folds it
HOOK_URL = "https://hookuser:hookpass99@hooks.example/alarm?key=k3yk3y&x=1"
REPRODUCTIONS = (
    SHORT_PASSWORD,
    SHORT_TOKEN,
    "tr0ub4dor",
    "correct horse",
    "hookuser",
    "hookpass99",
    "k3yk3y",
)


def reproduction_config(n: int) -> dict[str, Any]:
    doc = secret_config()
    doc["unit"]["site"] = f"hall {n}"
    doc["fleet"]["token"] = SHORT_TOKEN
    doc["webhooks"] = [
        {"url": "https://hooks.example/long", "token": LONG_TOKEN},
        {"url": HOOK_URL},
    ]
    doc["devices"][0]["security"]["password"] = SHORT_PASSWORD
    return doc


def test_short_folded_and_url_secrets_are_in_no_file(store: Store, tmp_path: Path) -> None:
    paths = Paths(store.data_dir, tmp_path / "run")
    for n in (1, 2):  # a running (confirmed) and a pending revision
        revs.import_text(store, yaml.safe_dump(reproduction_config(n)), author="test", now=T0)
        revs.commit(store, author="test", now=T0)
        if n == 1:
            revs.confirm(store, author="net", now=T0, automatic=True)
    # the agent's live document and an old event name the webhook by its URL
    store.event("webhook.dropped", f"webhook {HOOK_URL}: 3 skipped", source="agent")
    paths.run_dir.mkdir()
    (paths.run_dir / "agent.json").write_text(
        json.dumps({"role": "agent", "webhooks": [{"url": HOOK_URL, "sent": 1}]})
    )
    files = members(build(paths, now=T0))
    assert "config/pending.yaml" in files and "live/agent.json" in files
    for name, text in files.items():
        for secret in REPRODUCTIONS:
            assert secret not in text, f"{secret!r} leaked in {name}"
    running = yaml.safe_load(files["config/running.yaml"])
    assert running["webhooks"][0]["token"] == REDACTED
    assert running["webhooks"][1]["url"].startswith("https://[redacted]@hooks.example/alarm?")
    assert running["devices"][0]["security"]["password"] == REDACTED
    live = json.loads(files["live/agent.json"])
    assert "hooks.example" in live["webhooks"][0]["url"]


def test_a_secret_of_an_earlier_revision_is_scrubbed_from_free_text(
    store: Store, tmp_path: Path
) -> None:
    """A token since changed is in no running or pending revision, but an old event (or a
    journal line) may still hold it: the scrub knows every stored revision's secrets."""
    paths = Paths(store.data_dir, tmp_path / "run")
    old_token, old_password = "old-fleet-token-77aa88bb", "old-opc-password-31"
    doc = secret_config()
    doc["fleet"]["token"] = old_token
    doc["devices"][0]["security"]["password"] = old_password
    revs.import_text(store, yaml.safe_dump(doc), author="test", now=T0)
    revs.commit(store, author="test", now=T0)
    revs.confirm(store, author="net", now=T0, automatic=True)
    store.event("test.leak", f"heartbeat refused with {old_token}", source="agent")
    store.event("test.leak", f"opc1: login {old_password} refused", source="field")
    revs.import_text(store, yaml.safe_dump(secret_config()), author="test", now=T0 + 1)
    revs.commit(store, author="test", now=T0 + 1)
    revs.confirm(store, author="net", now=T0 + 1, automatic=True)
    files = members(build(paths, now=T0))
    assert "test.leak" in files["events.json"]
    for name, text in files.items():
        for secret in (old_token, old_password):
            assert secret not in text, f"{secret!r} leaked in {name}"
