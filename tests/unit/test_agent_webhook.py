"""Webhooks: alarm changes only, in order, retried with back-off, bounded, idempotent."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from pydantic import ValidationError

from appliance.agent.heartbeat import FleetError
from appliance.agent.webhook import BACKLOG_MAX, WebhookSender, idempotency_key
from appliance.config.agent import Webhook
from appliance.state.db import Store

UNIT = {"id": "6f1c1f7e-0000-4000-8000-000000000001", "name": "unit-7", "site": "A"}
HOOK = Webhook(url="https://hooks.example/alarms", token="hook-secret")


class FakeEndpoint:
    def __init__(self) -> None:
        self.down = False
        self.status = 200
        self.posts: list[dict[str, Any]] = []

    def __call__(self, url: str, body: bytes, headers: dict, ctx: Any, timeout: float):
        if self.down:
            raise FleetError("unreachable", "refused")
        self.posts.append({"url": url, "headers": headers, "doc": json.loads(body)})
        return self.status, b""


def make(store: Store, fake: FakeEndpoint) -> tuple[WebhookSender, list[tuple]]:
    events: list[tuple] = []
    s = WebhookSender(
        UNIT, event=lambda k, m, **kw: events.append((k, m)), rand=lambda: 0.0, post=fake
    )
    s._contexts[HOOK.url] = None  # type: ignore[assignment]  # no real TLS here
    s.configure([HOOK], UNIT, 0.0)
    s._contexts[HOOK.url] = None  # type: ignore[assignment]
    return s, events


def test_only_alarm_events_are_posted_from_configuration_on(store: Store) -> None:
    store.event("alarm.raised", "before the webhook existed", source="field")
    fake = FakeEndpoint()
    s, _ = make(store, fake)
    store.event("alarm.raised", "plc1.temp high", source="field", severity="warning")
    store.event("net.drift", "not an alarm", source="net")
    store.event("alarm.cleared", "plc1.temp normal", source="field")
    assert s.deliver(1.0) == 2
    docs = [p["doc"] for p in fake.posts]
    assert [d["event"]["message"] for d in docs] == ["plc1.temp high", "plc1.temp normal"]
    assert docs[0]["schema"] == "appliance-alarm/1"
    assert docs[0]["unit"] == {"id": UNIT["id"], "name": "unit-7", "site": "A"}
    h = fake.posts[0]["headers"]
    assert h["Authorization"] == "Bearer hook-secret"
    assert h["Idempotency-Key"] == idempotency_key(UNIT["id"], HOOK.url, docs[0]["event"]["id"])
    assert s.deliver(2.0) == 0  # nothing twice


def test_failure_retries_later_in_order_with_the_same_key(store: Store) -> None:
    fake = FakeEndpoint()
    s, _ = make(store, fake)
    for k in range(3):
        store.event("alarm.raised", f"a{k}", source="field")
    fake.status = 503
    assert s.deliver(0.0) == 0
    st = s.status[HOOK.url]
    assert st["failures"] == 1 and st["next_attempt"] == 1.0  # 2 s ceiling, half of it
    fake.status = 200
    assert s.deliver(0.5) == 0  # still backing off
    assert s.deliver(1.0) == 3
    msgs = [p["doc"]["event"]["message"] for p in fake.posts]
    assert msgs == ["a0", "a0", "a1", "a2"]
    assert fake.posts[0]["headers"] == fake.posts[1]["headers"]
    assert st["failures"] == 0 and st["sent"] == 3


def test_unreachable_backs_off_exponentially(store: Store) -> None:
    fake = FakeEndpoint()
    s, _ = make(store, fake)
    store.event("alarm.raised", "x", source="field")
    fake.down = True
    now = 0.0
    delays = []
    for _ in range(4):
        s.deliver(now)
        nxt = s.status[HOOK.url]["next_attempt"]
        delays.append(nxt - now)
        now = nxt
    assert delays == [1.0, 2.0, 4.0, 8.0]


def test_refused_event_is_skipped_not_retried(store: Store) -> None:
    fake = FakeEndpoint()
    s, _ = make(store, fake)
    store.event("alarm.raised", "x", source="field")
    store.event("alarm.raised", "y", source="field")
    fake.status = 400
    s.deliver(0.0)
    assert len(fake.posts) == 2
    assert s.status[HOOK.url]["dropped"] == 2


def test_backlog_is_bounded(store: Store) -> None:
    fake = FakeEndpoint()
    s, events = make(store, fake)
    with store.history.atomic():
        for k in range(BACKLOG_MAX + 5):
            store.event("alarm.raised", f"a{k}", source="field")
    fake.down = True
    s.deliver(0.0)
    fake.down = False
    s.deliver(10_000.0)
    msgs = [p["doc"]["event"]["message"] for p in fake.posts]
    assert msgs[0] == "a5" and msgs[-1] == f"a{BACKLOG_MAX + 4}"
    assert len(msgs) == BACKLOG_MAX
    assert s.status[HOOK.url]["dropped"] == 5
    assert events[0][0] == "webhook.dropped"


# -- validation: a bearer token never crosses the network in clear text ---------------------


def test_a_token_over_http_is_refused_with_the_field_path() -> None:
    from appliance.config.load import validate_data
    from appliance.errors import ConfigInvalid

    from .factory import base

    doc = base()
    doc["webhooks"] = [
        {"url": "https://hooks.example/a", "token": "fine"},
        {"url": "http://10.10.0.9:8080/alarm", "token": "s3cr3t"},
    ]
    with pytest.raises(ConfigInvalid) as exc:
        validate_data(doc)
    path, message, _ = exc.value.errors[0]
    assert path == "webhooks[1].token"
    assert "a bearer token needs https://" in message
    assert "s3cr3t" not in message  # the error names no secret
    doc["webhooks"][1] = {"url": "http://user:pw12@10.10.0.9:8080/alarm"}  # nor a password
    with pytest.raises(ConfigInvalid) as exc:
        validate_data(doc)
    path, message, _ = exc.value.errors[0]
    assert path == "webhooks[1].url"
    assert "user:password@" in message and "https://" in message
    assert "pw12" not in message
    doc["webhooks"][1]["url"] = "http://10.10.0.9:8080/alarm"  # no credentials: fine
    assert validate_data(doc).config.webhooks[1].token is None


@pytest.mark.parametrize(
    "url",
    [
        "http://user:pw12@hooks.example/alarm",
        "http://:pw12@hooks.example/alarm",
        "http://user@hooks.example/alarm",
        "http://hooks.example/alarm?key=pw12",
        "http://hooks.example/alarm?x=1&api_key=pw12",
        "HTTP://user:pw12@hooks.example/alarm",
    ],
)
def test_credentials_in_an_http_url_are_refused(url: str) -> None:
    """Basic auth (user:password@) and secret query values (?key=) cross an http://
    network in clear text as a bearer token would: refused at validation alike."""
    with pytest.raises(ValidationError) as exc:
        Webhook(url=url)
    [err] = exc.value.errors()
    assert err["loc"] == ("url",)
    assert "https://" in err["msg"] and "pw12" not in err["msg"]
    Webhook(url="https" + url[4:])  # over TLS they are fine


def test_a_url_scheme_in_capitals_is_the_same_scheme() -> None:
    """`HTTPS://` is https (a token with it was refused as if it were http://), and the
    sender's TLS context (ca_cert) is chosen by the stored, lower-case, scheme."""
    hook = Webhook(url="HTTPS://hooks.example/alarm", token="s3cr3t")
    assert hook.url == "https://hooks.example/alarm"


def test_a_token_and_a_password_in_the_url_are_refused_together() -> None:
    with pytest.raises(ValidationError) as exc:
        Webhook(url="https://user:pw12@hooks.example/alarm", token="s3cr3t")
    [err] = exc.value.errors()
    assert err["loc"] == ("token",) and "not both" in err["msg"]


def test_a_password_in_the_url_is_sent_as_basic_auth_over_https(store: Store) -> None:
    """user:password@ in an https:// URL is what the endpoint expects as Basic auth: it
    was dropped (the request went out unauthenticated) and the endpoint answered 401."""
    hook = Webhook(url="https://hook%40user:p%3Ass@hooks.example/alarm")
    fake = FakeEndpoint()
    s = WebhookSender(UNIT, event=lambda *a, **kw: None, rand=lambda: 0.0, post=fake)
    s.configure([hook], UNIT, 0.0)
    s._contexts[hook.url] = None  # type: ignore[assignment]  # no real TLS here
    store.event("alarm.raised", "x", source="field")
    assert s.deliver(1.0) == 1
    auth = fake.posts[0]["headers"]["Authorization"]
    assert auth == "Basic " + base64.b64encode(b"hook@user:p:ss").decode()


def test_the_sender_never_sends_a_url_password_in_clear_text(store: Store) -> None:
    hook = Webhook.model_construct(url="http://user:pw12@10.10.0.9/alarm", token=None, timeout=1.0)
    fake = FakeEndpoint()
    s = WebhookSender(UNIT, event=lambda *a, **kw: None, rand=lambda: 0.0, post=fake)
    s.configure([hook], UNIT, 0.0)
    store.event("alarm.raised", "x", source="field")
    assert s.deliver(1.0) == 0
    assert fake.posts == []
    assert "https://" in s.live()[0]["last_error"]
    assert "pw12" not in s.live()[0]["last_error"]


def test_the_sender_never_sends_a_token_in_clear_text(store: Store) -> None:
    """A Webhook that skipped validation (an old revision): the token is not sent over http."""
    hook = Webhook.model_construct(url="http://10.10.0.9/alarm", token="s3cr3t", timeout=1.0)
    fake = FakeEndpoint()
    s = WebhookSender(UNIT, event=lambda *a, **kw: None, rand=lambda: 0.0, post=fake)
    s.configure([hook], UNIT, 0.0)
    store.event("alarm.raised", "x", source="field")
    assert s.deliver(1.0) == 0
    assert fake.posts == []
    assert "https://" in s.live()[0]["last_error"]


def test_status_events_and_logs_name_the_webhook_without_its_credentials(
    store: Store, caplog: Any
) -> None:
    import logging

    url = "https://hookuser:hookpass99@hooks.example/alarm?key=k3yk3y"
    hook = Webhook(url=url)
    fake = FakeEndpoint()
    events: list[tuple] = []
    s = WebhookSender(
        UNIT,
        event=lambda k, m, **kw: events.append((k, m, kw)),
        rand=lambda: 0.0,
        post=fake,
    )
    s.configure([hook], UNIT, 0.0)
    s._contexts[url] = None  # type: ignore[assignment]  # no real TLS here
    with store.history.atomic():
        for k in range(BACKLOG_MAX + 2):
            store.event("alarm.raised", f"a{k}", source="field")
    fake.status = 400
    with caplog.at_level(logging.DEBUG, logger="appliance.agent.webhook"):
        s.deliver(0.0)
        fake.status = 503
        store.event("alarm.raised", "again", source="field")
        s.deliver(100.0)
    seen = repr(s.live()) + repr(events) + caplog.text
    for secret in ("hookuser", "hookpass99", "k3yk3y"):
        assert secret not in seen, secret
    assert s.live()[0]["url"] == "https://[redacted]@hooks.example/alarm?key=[redacted]"
    assert events and "hooks.example" in events[0][1]
    assert fake.posts[0]["url"] == url  # the real URL is still the one posted to
