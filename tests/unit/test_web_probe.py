"""What an outside probe of the web app found (issue 18, "done when"), with Flask's test
client: a state change from another site's page is refused even with a good CSRF token
(its Origin, or Sec-Fetch-Site: cross-site), and the framework's own redirects (a path
with a doubled slash) never send a browser to the host named in the request's Host."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from appliance.state.db import Audit

from .webkit import Web, error_of


def _admin(ready: Web) -> tuple[object, dict[str, str]]:
    c = ready.login("admin")
    return c, ready.h(c)


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example"},
        {"Origin": "https://localhost.evil.example"},
        {"Origin": "http://localhost"},  # same host, not HTTPS
        {"Origin": "https://localhost:444"},  # same host, another port
        {"Origin": "null"},  # a sandboxed frame, a privacy redirect
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},  # a sibling host is not this unit
    ],
    ids=lambda h: ",".join(f"{k}={v}" for k, v in h.items()),
)
def test_a_change_from_another_origin_is_refused_with_a_good_token(
    ready: Web, headers: dict[str, str]
) -> None:
    c, h = _admin(ready)
    r = c.post("/api/tokens", json={"name": "t"}, headers={**h, **headers})  # type: ignore[attr-defined]
    assert r.status_code == 403, r.json
    assert "origin" in error_of(r).lower()
    assert r.json["field"] is None
    with ready.app.app_context():
        from appliance.web import accounts

        assert not [t for t in accounts.list_tokens("admin") if t.name == "t"]
        rows = list(Audit.select().where(Audit.action == "auth.denied"))
    assert any("origin" in row.detail for row in rows), [r.detail for r in rows]


def test_a_login_from_another_origin_is_refused(ready: Web) -> None:
    r = ready.client().post(
        "/api/session",
        json={"username": "admin", "password": "plant-floor-secret-42"},
        headers={"Origin": "https://evil.example"},
    )
    assert r.status_code == 403 and "Set-Cookie" not in r.headers


@pytest.mark.parametrize(
    "headers",
    [
        {},  # a script (curl, requests): no Origin
        {"Origin": "https://localhost"},
        {"Origin": "HTTPS://LOCALHOST"},  # origins compare without case
        {"Sec-Fetch-Site": "same-origin", "Origin": "https://localhost"},
        {"Sec-Fetch-Site": "none"},  # typed by the user
    ],
    ids=lambda h: ",".join(f"{k}={v}" for k, v in h.items()) or "none",
)
def test_a_change_from_the_units_own_pages_goes_through(
    ready: Web, headers: dict[str, str]
) -> None:
    c, h = _admin(ready)
    r = c.post(  # type: ignore[attr-defined]
        "/api/tokens",
        json={"name": "t"},
        headers={**h, **headers},
        base_url="https://localhost",
    )
    assert r.status_code == 201, r.json


def test_reading_from_another_origin_is_not_refused(ready: Web) -> None:
    """GET has no effect (and CORS keeps the answer from the other page)."""
    c, _ = _admin(ready)
    r = c.get("/api/status", headers={"Origin": "https://evil.example"})  # type: ignore[attr-defined]
    assert r.status_code == 200
    assert not [k for k, _ in r.headers.items() if k.lower().startswith("access-control-")]


@pytest.mark.parametrize("path", ["//evil.example/x", "/assets//app.css", "/tags//x"])
def test_a_framework_redirect_never_names_the_requests_host(ready: Web, path: str) -> None:
    for client in (ready.client(), ready.login("viewer")):
        r = client.get(path, headers={"Host": "evil.example"})
        assert r.status_code in (301, 302, 303, 307, 308, 404), r.status_code
        assert "evil.example" not in r.get_data(as_text=True).replace(path, "")
        assert r.headers["Content-Security-Policy"].startswith("default-src 'self'")
        if r.status_code == 404:
            continue
        loc = r.headers["Location"]
        assert not urlsplit(loc).netloc and not urlsplit(loc).scheme, loc
        assert loc.startswith("/") and not loc.startswith("//"), loc
