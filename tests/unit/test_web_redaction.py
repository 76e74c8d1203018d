"""What a non-admin reads of the configuration (diff, export, documents) holds no secret:
the documents are redacted by key before they are rendered or diffed, so a short value, a
value YAML folds over two lines, or the credentials in a webhook URL cannot slip through."""

from __future__ import annotations

from typing import Any

import pytest

from . import factory
from .webkit import Web

OPC_PASSWORD = "pw12"  # shorter than any value scrubbing could safely replace
FLEET_TOKEN = "s3cr3t"
# a long value with spaces: YAML folds it over two lines
LONG_TOKEN = "correct horse battery staple " * 3 + "tr0ub4dor end"
HOOK_URL = "https://hookuser:hookpass99@hooks.example/alarm?key=k3yk3y&x=1"
LEAKS = (
    OPC_PASSWORD,
    FLEET_TOKEN,
    "tr0ub4dor",
    "correct horse",
    "hookuser",
    "hookpass99",
    "k3yk3y",
)


def secret_doc(n: int) -> dict[str, Any]:
    """A document full of secrets; `n` changes every one of them (so the diff shows them)."""
    doc = factory.base()
    doc["interfaces"].append({"name": "mgmt0", "role": "mgmt", "addresses": ["10.99.0.2/30"]})
    doc["unit"]["site"] = f"hall {n}"
    doc["fleet"] = {"url": "https://fleet.example/hb", "token": FLEET_TOKEN + "x" * n}
    doc["webhooks"] = [
        {"url": "https://hooks.example/long", "token": LONG_TOKEN + " " + "z" * n},
        {"url": HOOK_URL + "&n=" + str(n)},
    ]
    doc["devices"] = [
        {
            "name": "opc1",
            "protocol": "opcua",
            "address": "opc.tcp://192.168.50.20:4840",
            "security": {
                "policy": "Basic256Sha256",
                "mode": "SignAndEncrypt",
                "username": "reader",
                "password": OPC_PASSWORD + "y" * n,
            },
        }
    ]
    return doc


@pytest.fixture
def secrets_web(ready: Web) -> Web:
    """Revision 1 running, revision 2 a draft: both full of (different) secrets."""
    c = ready.login("admin")
    h = ready.h(c)
    assert c.put("/api/config/draft", json=secret_doc(1), headers=h).status_code == 200
    assert c.post("/api/config/commit", json={}, headers=h).status_code == 200
    assert c.put("/api/config/draft", json=secret_doc(2), headers=h).status_code == 200
    return ready


def assert_no_leak(text: str) -> None:
    for s in LEAKS:
        assert s not in text, f"{s!r} leaked in:\n{text}"


@pytest.mark.parametrize("who", ["viewer", "operator"])
def test_the_diff_holds_no_secret_for_non_admins(secrets_web: Web, who: str) -> None:
    c = secrets_web.login(who)
    r = c.get("/api/config/diff")
    assert r.status_code == 200, r.json
    body = r.get_data(as_text=True)
    assert_no_leak(body)
    d = r.json
    # what support needs is still there: what changed, and where the webhook goes
    assert "+  site: hall 2" in d["diff"]
    assert "hooks.example" in d["diff"]
    # a secret that changed says so, not what it is
    assert "+  token: '[redacted, changed]'" in d["diff"]
    assert "-  token: '[redacted]'" in d["diff"]
    assert any("unit" in line for line in d["changes"])


def test_the_admin_still_sees_the_secrets_in_the_diff(secrets_web: Web) -> None:
    c = secrets_web.login("admin")
    d = c.get("/api/config/diff").json
    assert FLEET_TOKEN + "xx" in d["diff"] and "hookpass99" in d["diff"]


@pytest.mark.parametrize(
    "url",
    [
        "/api/config/export",
        "/api/config/export?revision=2",
        "/api/config/running",
        "/api/config/draft",
        "/api/revisions/1",
        "/api/revisions/2",
        "/api/config/draft/webhooks",
        "/api/config/draft/fleet",
        "/api/config/draft/devices",
    ],
)
def test_exports_and_documents_hold_no_secret_for_a_viewer(secrets_web: Web, url: str) -> None:
    c = secrets_web.login("viewer")
    r = c.get(url)
    assert r.status_code == 200, r.get_data(as_text=True)
    assert_no_leak(r.get_data(as_text=True))


def test_a_viewer_still_sees_where_the_webhook_goes(secrets_web: Web) -> None:
    v = secrets_web.login("viewer")
    doc = v.get("/api/config/running").json["document"]
    url = doc["webhooks"][1]["url"]
    assert url.startswith("https://[redacted]@hooks.example/alarm?key=[redacted]"), url
    assert "x=1" in url
    assert doc["fleet"]["token"] == "[redacted]"
    assert doc["devices"][0]["security"]["password"] == "[redacted]"
    assert doc["devices"][0]["security"]["username"] == "reader"
    text = v.get("/api/config/export").get_data(as_text=True)
    assert "hooks.example" in text and "username: reader" in text


def test_device_addresses_and_reports_show_no_credentials_below_admin(ready: Web) -> None:
    import json

    from appliance.state.live import LiveState

    doc = factory.base()
    doc["devices"] = [
        {
            "name": "ua",
            "protocol": "opcua",
            "address": "opc.tcp://uauser:pw12@192.168.50.20:4840",
            "tags": [{"name": "a", "node": "ns=2;i=1"}],
        }
    ]
    c = ready.login("admin")
    h = ready.h(c)
    assert c.put("/api/config/draft", json=doc, headers=h).status_code == 200
    assert c.post("/api/config/commit", json={}, headers=h).status_code == 200
    error = "cannot connect to opc.tcp://uauser:pw12@192.168.50.20:4840: refused"
    LiveState(ready.paths.run_dir).write("field", {"devices": {"ua": {"last_error": error}}})
    for role in ("viewer", "operator"):
        text = json.dumps(ready.login(role).get("/api/devices").json)
        assert "pw12" not in text and "192.168.50.20" in text, text
    admin = json.dumps(c.get("/api/devices").json)
    assert "opc.tcp://uauser:pw12@192.168.50.20:4840" in admin


# credentials in a webhook's query under names beyond the obvious (the receivers' own):
# percent-encoded, with [], after a stray ';', or simply terse
QUERY_SECRETS = [
    ("apitoken", "qs-apitoken-v1"),
    ("accesskey", "qs-accesskey-v2"),
    ("secretkey", "qs-secretkey-v3"),
    ("pw", "qs-pw-v4"),
    ("bearer", "qs-bearer-v5"),
    ("authorization", "qs-authz-v6"),
    ("session", "qs-session-v7"),
    ("hmac", "qs-hmac-v8"),
    ("to%6Ben", "qs-encoded-v9"),
    ("key[]", "qs-brackets-v10"),
    (";token", "qs-semicolon-v11"),
]


@pytest.mark.parametrize(("name", "value"), QUERY_SECRETS)
def test_webhook_query_credentials_are_redacted_whatever_their_name(
    ready: Web, name: str, value: str
) -> None:
    doc = factory.base()
    doc["webhooks"] = [{"url": f"https://hooks.example/in?page=2&{name}={value}"}]
    c = ready.login("admin")
    h = ready.h(c)
    assert c.put("/api/config/draft", json=doc, headers=h).status_code == 200, doc
    assert c.post("/api/config/commit", json={}, headers=h).status_code == 200
    v = ready.login("viewer")
    for url in ("/api/config/running", "/api/config/export", "/api/config/diff?a=1&b=1"):
        text = v.get(url).get_data(as_text=True)
        assert value not in text, f"{value!r} shown to a viewer by {url}"
    shown = v.get("/api/config/running").json["document"]["webhooks"][0]["url"]
    assert shown == f"https://hooks.example/in?page=2&{name}=[redacted]", shown


@pytest.mark.parametrize("who", ["viewer", "operator"])
def test_events_hold_no_secret_below_admin(ready: Web, who: str) -> None:
    """No event writer puts a secret in an event; if one ever did, viewers and operators
    read it redacted by its shape (URL user info, token= pairs) and its data's keys."""
    ready.app.extensions["appliance"].store.event(
        "test.leak",
        f"posting to {HOOK_URL} failed; token={FLEET_TOKEN}",
        source="agent",
        data={"password": OPC_PASSWORD, "url": HOOK_URL},
    )
    c = ready.login(who)
    r = c.get("/api/events?kind=test.leak")
    assert r.status_code == 200 and r.json["items"], r.json
    assert_no_leak(r.get_data(as_text=True))
    assert "hooks.example/alarm" in r.json["items"][0]["message"]  # where it went stays
    admin = ready.login("admin").get("/api/events?kind=test.leak").get_data(as_text=True)
    assert FLEET_TOKEN in admin  # the admin reads the event as it was written
