"""Redaction by key, guided by the models: which fields are secret comes from the models
themselves, so a new secret field cannot be forgotten."""

from __future__ import annotations

import re
from typing import Any

import pytest
from pydantic import Field

from appliance.config.base import Strict
from appliance.config.load import validate_data
from appliance.config.model import Config
from appliance.config.redact import (
    CHANGED,
    REDACTED,
    is_secret_key,
    redact_any,
    redact_config,
    redact_data,
    redact_pair,
    redact_text,
    redact_url,
    secret_fields,
    secret_kind,
    walk_fields,
)

from .factory import base

URLISH = re.compile(r"(^|_)(url|uri)s?$")


def test_every_field_whose_name_says_secret_is_marked_in_the_model() -> None:
    names = [(path, info) for path, info in walk_fields(Config)]
    assert any(p == "webhooks[].token" for p, _ in names)  # the walk reaches list items
    unmarked = [
        p for p, info in names if is_secret_key(p.rsplit(".", 1)[-1]) and secret_kind(info) is None
    ]
    assert unmarked == [], (
        f"mark these secret in their model (description='secret: ...'): {unmarked}"
    )


def test_every_url_field_is_marked_as_a_url_that_may_carry_credentials() -> None:
    urls = [
        (p, secret_kind(info))
        for p, info in walk_fields(Config)
        if URLISH.search(p.rsplit(".", 1)[-1])
    ]
    assert ("webhooks[].url", "url") in urls and ("fleet.url", "url") in urls
    assert [p for p, kind in urls if kind != "url"] == []


def test_the_known_secrets_are_marked() -> None:
    assert {
        "devices[].security.password": "value",
        "fleet.token": "value",
        "fleet.client_key": "value",
        "webhooks[].token": "value",
        "webhooks[].url": "url",
        "fleet.url": "url",
    }.items() <= secret_fields(Config).items()


def _doc_at(path: str, value: Any) -> dict[str, Any]:
    """A (not validated) document holding `value` at a path like ``devices[].security.x``."""
    parts = path.split(".")
    leaf: Any = value
    for part in reversed(parts):
        if part.endswith("[]"):
            leaf = {part[:-2]: [leaf]}
        elif part.endswith("{}"):
            leaf = {part[:-2]: {"one": leaf}}
        else:
            leaf = {part: leaf}
    return leaf


def _flatten(obj: Any) -> str:
    return repr(obj)


@pytest.mark.parametrize(("path", "kind"), sorted(secret_fields(Config).items()))
def test_every_marked_field_is_redacted(path: str, kind: str) -> None:
    value = "https://user:pw12@host.example/x?key=s3cr3t" if kind == "url" else "pw12"
    found: set[str] = set()
    out = redact_data(_doc_at(path, value), Config, found=found)
    assert "pw12" not in _flatten(out) and "s3cr3t" not in _flatten(out)
    assert "pw12" in found
    if kind == "url":
        assert "host.example" in _flatten(out)


class Inner(Strict):
    blob: str | None = Field(None, description="secret: a name that does not say so")
    link: str | None = Field(None, json_schema_extra={"x-secret": "url"})
    note: str = ""


class Outer(Strict):
    inner: list[Inner] = Field(default_factory=list)
    by_name: dict[str, Inner] = Field(default_factory=dict)
    mapping: dict[str, str] = Field(default_factory=dict)


def test_the_marking_not_the_name_decides() -> None:
    data = {
        "inner": [{"blob": "x1", "link": "https://a:b@h/p?x=1", "note": "plain"}],
        "by_name": {"k": {"blob": "x2"}},
        "mapping": {"password": "x3", "other": "kept"},
    }
    out = redact_data(data, Outer)
    assert out == {
        "inner": [{"blob": REDACTED, "link": f"https://{REDACTED}@h/p?x=1", "note": "plain"}],
        "by_name": {"k": {"blob": REDACTED}},
        "mapping": {"password": REDACTED, "other": "kept"},
    }
    assert data["inner"][0]["blob"] == "x1"  # a copy


@pytest.mark.parametrize(
    ("url", "strict", "want"),
    [
        (
            "https://user:pass@hooks.example:8443/alarm?key=abc&x=1",
            False,
            f"https://{REDACTED}@hooks.example:8443/alarm?key={REDACTED}&x=1",
        ),
        ("https://tok@h.example/a", False, f"https://{REDACTED}@h.example/a"),
        (
            "https://h.example/a?token=t&sig=s&Signature=u&api-key=v&code=w&n=2",
            False,
            f"https://h.example/a?token={REDACTED}&sig={REDACTED}&Signature={REDACTED}"
            f"&api-key={REDACTED}&code={REDACTED}&n=2",
        ),
        ("https://h.example/plain/path?page=2", True, "https://h.example/plain/path?page=2"),
        (
            "https://hooks.slack.com/services/T0AB12CD/B0AB12CD/a1B2c3D4e5F6g7H8i9J0k1L2",
            True,
            f"https://hooks.slack.com/services/T0AB12CD/B0AB12CD/{REDACTED}",
        ),
        ("https://h.example/a?t=a1B2c3D4e5F6g7H8i9", True, f"https://h.example/a?t={REDACTED}"),
        (
            "https://h.example/a?t=a1B2c3D4e5F6g7H8i9",
            False,
            "https://h.example/a?t=a1B2c3D4e5F6g7H8i9",
        ),
    ],
)
def test_redact_url(url: str, strict: bool, want: str) -> None:
    assert redact_url(url, strict=strict) == want


def test_redact_url_collects_what_it_took_out() -> None:
    found: set[str] = set()
    redact_url("https://user:hookpass99@h.example/?key=k3yk3y", found=found)
    assert {"user", "hookpass99", "k3yk3y"} <= found


def test_redact_text_finds_urls_and_keys_by_their_shape() -> None:
    pem = "-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----"
    text = f"webhook https://u:p@h.example/x?token=abc&y=2: 3 skipped; key {pem} end; a=b c?d=e"
    assert redact_text(text) == (
        f"webhook https://{REDACTED}@h.example/x?token={REDACTED}&y=2: 3 skipped;"
        f" key {REDACTED} end; a=b c?d=e"
    )
    assert redact_text("to https://u:p@ss@h.example/x") == f"to https://{REDACTED}@h.example/x"
    assert redact_text("login failed token=abc123, user=bob (password=pw12)") == (
        f"login failed token={REDACTED}, user=bob (password={REDACTED})"
    )
    assert redact_url("https://h/x?key=a,b;c==&x=1") == f"https://h/x?key={REDACTED}&x=1"
    # what is not a secret in free text stays: systemd's code=, an alarm's key=
    kept = "Main process exited, code=exited, status=1/FAILURE; alarm key=plc1.temp:high"
    assert redact_text(kept) == kept
    assert redact_text("see https://h/x?code=c0de&page=2#top") == (
        f"see https://h/x?code={REDACTED}&page=2#top"
    )
    assert redact_text("no secret: 10.0.0.1, user@example.com") == (
        "no secret: 10.0.0.1, user@example.com"
    )


def test_redact_any_uses_key_names_and_shapes() -> None:
    live = {"webhooks": [{"url": "https://u:pw@h/x", "sent": 3}], "token_hash": "abc"}
    assert redact_any(live) == {
        "webhooks": [{"url": f"https://{REDACTED}@h/x", "sent": 3}],
        "token_hash": REDACTED,
    }


def _cfg(**sections: Any) -> Config:
    doc = base()
    doc.update(sections)
    return validate_data(doc).config


def test_redact_config_of_a_real_document() -> None:
    cfg = _cfg(
        fleet={"url": "https://fleet.example/hb?key=fk", "token": "s3cr3t"},
        webhooks=[{"url": "https://u:p@10.0.0.9/alarm"}, {"url": "https://h/a", "token": "t"}],
    )
    out = redact_config(cfg)
    assert out["fleet"]["token"] == REDACTED
    assert out["fleet"]["url"] == f"https://fleet.example/hb?key={REDACTED}"
    assert out["webhooks"][0]["url"] == f"https://{REDACTED}@10.0.0.9/alarm"
    assert out["webhooks"][1]["token"] == REDACTED
    assert out["unit"] == cfg.canonical()["unit"]


def test_redact_pair_says_which_secret_changed() -> None:
    old = _cfg(
        fleet={"url": "https://f/hb", "token": "one"},
        webhooks=[{"url": "https://h/a", "token": "t"}],
    )
    new = _cfg(
        fleet={"url": "https://f/hb", "token": "two"},
        webhooks=[{"url": "https://h/a", "token": "t"}],
    )
    a, b = redact_pair(old, new)
    assert a["fleet"]["token"] == REDACTED and b["fleet"]["token"] == CHANGED
    assert a["webhooks"][0]["token"] == b["webhooks"][0]["token"] == REDACTED
