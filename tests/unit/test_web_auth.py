"""Sessions, CSRF, throttling, timeouts, setup code, tokens, password policy, headers."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher
from click.testing import CliRunner
from testkit import T0

from appliance.errors import PermissionDenied
from appliance.state.db import Audit, Store
from appliance.web import accounts, setup
from appliance.web.auth import COOKIE

from .webkit import PASSWORD, Web, error_of, make_web


def audit_rows(action: str) -> list[Audit]:
    return list(Audit.select().where(Audit.action == action).order_by(Audit.id))


# -- CSRF -------------------------------------------------------------------------------


def test_csrf_required_with_a_session(ready: Web) -> None:
    c = ready.login("admin")
    body = {"name": "x1", "role": "viewer", "password": "long-enough-secret-1"}
    r = c.post("/api/users", json=body)
    assert r.status_code == 403 and "CSRF" in error_of(r)
    r = c.post("/api/users", json=body, headers={"X-CSRF-Token": "wrong"})
    assert r.status_code == 403 and "CSRF" in error_of(r)
    r = c.post("/api/users", json=body, headers=ready.h(c))
    assert r.status_code == 201


def test_no_csrf_with_a_token(ready: Web) -> None:
    secret = ready.token("admin")
    c = ready.client()
    r = c.post(
        "/api/users",
        json={"name": "x2", "role": "viewer", "password": "long-enough-secret-2"},
        headers={"Authorization": f"Bearer {secret}"},
    )
    assert r.status_code == 201, r.json


def test_csrf_of_another_session_is_refused(ready: Web) -> None:
    a, b = ready.login("admin"), ready.login("admin")
    r = a.post("/api/config/confirm", headers=ready.h(b))
    assert r.status_code == 403 and "CSRF" in error_of(r)


def test_refusals_of_an_authenticated_request_are_audited(ready: Web) -> None:
    """CR 2.8: a role too low (API and page) and a missing CSRF token leave a row each,
    with who, what was asked and why; a refusal of the anonymous does not."""
    viewer = ready.login("viewer")
    assert viewer.post("/api/config/confirm", headers=ready.h(viewer)).status_code == 403
    assert viewer.get("/users").status_code == 403
    admin = ready.login("admin")
    assert admin.post("/api/config/confirm").status_code == 403  # no CSRF header
    assert ready.client().post("/api/config/confirm").status_code == 401
    rows = audit_rows("auth.denied")
    got = [(a.actor, a.target, a.result, a.detail) for a in rows]
    assert got == [
        ("viewer", "POST /api/config/confirm", "denied", "needs the operator role (is viewer)"),
        ("viewer", "GET /users", "denied", "needs the admin role (is viewer)"),
        (
            "admin",
            "POST /api/config/confirm",
            "denied",
            "CSRF token missing or wrong (send the header X-CSRF-Token)",
        ),
    ]
    assert all(a.source.startswith("web:") for a in rows)


# -- login, rotation, logout ----------------------------------------------------------------


def test_login_rotates_the_session_id(ready: Web) -> None:
    c = ready.login("viewer")
    first = c.get_cookie(COOKIE).value
    r = c.post("/api/session", json={"username": "viewer", "password": PASSWORD})
    assert r.status_code == 200
    second = c.get_cookie(COOKIE).value
    assert first != second
    # the old id is dead: a client holding it is not logged in
    other = ready.client()
    other.set_cookie(COOKIE, first)
    assert other.get("/api/session").status_code == 401
    assert c.get("/api/session").json["user"] == "viewer"


def test_session_cookie_flags(ready: Web) -> None:
    r = ready.client().post("/api/session", json={"username": "admin", "password": PASSWORD})
    cookie = r.headers["Set-Cookie"]
    for flag in ("Secure", "HttpOnly", "SameSite=Strict", "Path=/"):
        assert flag in cookie
    assert cookie.startswith("__Host-")


def test_wrong_password_and_audit(ready: Web) -> None:
    c = ready.client()
    r = c.post("/api/session", json={"username": "admin", "password": "nope-nope-nope"})
    assert r.status_code == 401 and error_of(r) == "wrong user name or password"
    r = c.post("/api/session", json={"username": "ghost", "password": "nope-nope-nope"})
    assert r.status_code == 401 and error_of(r) == "wrong user name or password"
    ready.login("admin")
    rows = audit_rows("login")
    assert [(a.actor, a.result) for a in rows] == [
        ("admin", "failed"),
        ("unknown user", "failed"),  # what was typed may be a password: not stored
        ("admin", "ok"),
    ]
    assert all(a.source.startswith("web:") for a in rows)


def test_logout_ends_the_session(ready: Web) -> None:
    c = ready.login("viewer")
    assert c.delete("/api/session", headers=ready.h(c)).status_code == 204
    assert c.get("/api/status").status_code == 401


def test_disabled_user_is_logged_out(ready: Web) -> None:
    v = ready.login("viewer")
    a = ready.login("admin")
    r = a.patch("/api/users/viewer", json={"disabled": True}, headers=ready.h(a))
    assert r.status_code == 200
    assert v.get("/api/status").status_code == 401
    r = ready.client().post("/api/session", json={"username": "viewer", "password": PASSWORD})
    assert r.status_code == 401


def test_a_disabled_users_tokens_stay_dead_when_the_user_is_enabled_again(ready: Web) -> None:
    """Disabling (a lost laptop, a leaver) ends the sessions and the tokens for good:
    enabling the user again brought back every token they had, and no session."""
    token = ready.token("operator")
    bearer = {"Authorization": f"Bearer {token}"}
    a = ready.login("admin")
    assert (
        a.patch("/api/users/operator", json={"disabled": True}, headers=ready.h(a)).status_code
        == 200
    )
    assert ready.client().get("/api/status", headers=bearer).status_code == 401
    assert (
        a.patch("/api/users/operator", json={"disabled": False}, headers=ready.h(a)).status_code
        == 200
    )
    assert ready.client().get("/api/status", headers=bearer).status_code == 401
    [row] = a.get("/api/tokens").json
    assert row["user"] == "operator" and row["revoked_by"] == "user disabled"
    assert ready.login("operator").get("/api/status").status_code == 200  # the user is back


# -- throttling ---------------------------------------------------------------------------


def _fail(web: Web, user: str, addr: str = "10.0.0.1") -> int:
    c = web.client()
    r = c.post(
        "/api/session",
        json={"username": user, "password": "wrong-password-x"},
        environ_base={"REMOTE_ADDR": addr},
    )
    return r.status_code


def test_account_lockout_and_back_off(ready: Web) -> None:
    free = accounts.FREE_FAILURES["user"]
    # from different addresses, so only the account's count matters
    codes = [_fail(ready, "admin", f"10.0.1.{i}") for i in range(free)]
    assert codes[: free - 1] == [401] * (free - 1)
    # the free-th failure locks for LOCK_BASE_S: even the right password is refused
    c = ready.client()
    r = c.post(
        "/api/session",
        json={"username": "admin", "password": PASSWORD},
        environ_base={"REMOTE_ADDR": "10.0.2.1"},
    )
    assert r.status_code == 429
    assert 1 <= int(r.headers["Retry-After"]) <= accounts.LOCK_BASE_S
    ready.clock.advance(accounts.LOCK_BASE_S + 1)
    # one more failure: locked twice as long
    assert _fail(ready, "admin", "10.0.3.1") == 401
    ready.clock.advance(accounts.LOCK_BASE_S + 1)
    r = c.post(
        "/api/session",
        json={"username": "admin", "password": PASSWORD},
        environ_base={"REMOTE_ADDR": "10.0.2.1"},
    )
    assert r.status_code == 429, "the second lock lasts 2 x LOCK_BASE_S"
    ready.clock.advance(accounts.LOCK_BASE_S)
    r = c.post(
        "/api/session",
        json={"username": "admin", "password": PASSWORD},
        environ_base={"REMOTE_ADDR": "10.0.2.1"},
    )
    assert r.status_code == 200
    # a success clears the account's count
    assert _fail(ready, "admin", "10.0.4.1") == 401
    assert audit_rows("login")[-2].result == "ok"
    assert any(a.result == "throttled" for a in audit_rows("login"))


def test_address_lockout(ready: Web) -> None:
    free = accounts.FREE_FAILURES["addr"]
    for i in range(free):
        assert _fail(ready, f"user{i}", "10.9.9.9") in (401, 429)
    # a different (valid) account from the same address is refused too
    r = ready.client().post(
        "/api/session",
        json={"username": "viewer", "password": PASSWORD},
        environ_base={"REMOTE_ADDR": "10.9.9.9"},
    )
    assert r.status_code == 429
    # another address is not affected
    r = ready.client().post(
        "/api/session",
        json={"username": "viewer", "password": PASSWORD},
        environ_base={"REMOTE_ADDR": "10.9.9.10"},
    )
    assert r.status_code == 200


def test_authenticate_for_other_services(ready: Web) -> None:
    with ready.app.app_context():
        assert accounts.authenticate("operator", PASSWORD, now=ready.clock()) == "operator"
        assert accounts.authenticate("operator", "wrong-one-here", now=ready.clock()) is None
        assert accounts.authenticate("nobody", PASSWORD, now=ready.clock()) is None


def test_logons_of_other_services_are_audited_as_web_logins_are(ready: Web) -> None:
    check = accounts.audited_authenticate(ready.app.extensions["appliance"].store, "opcua")
    with ready.app.app_context():
        assert check("operator", PASSWORD, source="10.10.0.5", now=ready.clock()) == "operator"
        assert check("operator", "wrong-one-here", source="10.10.0.5", now=ready.clock()) is None
        assert (
            check("hunter2-typed-as-a-name", PASSWORD, source="10.10.0.6", now=ready.clock())
            is None
        )
        for _ in range(accounts.FREE_FAILURES["pair"]):
            check("viewer", "wrong-one-here", source="10.10.0.7", now=ready.clock())
        assert check("viewer", PASSWORD, source="10.10.0.7", now=ready.clock()) is None
    rows = audit_rows("login")
    got = [(a.actor, a.source, a.result) for a in rows[:3]]
    assert got == [
        ("operator", "opcua:10.10.0.5", "ok"),
        ("operator", "opcua:10.10.0.5", "failed"),
        (accounts.UNKNOWN_USER, "opcua:10.10.0.6", "failed"),
    ]
    assert "hunter2" not in rows[2].detail and rows[2].detail.startswith("name #")
    assert (rows[-1].actor, rows[-1].result) == ("viewer", "throttled")


# -- timeouts (injected clock) --------------------------------------------------------------


def test_idle_timeout(ready: Web) -> None:
    c = ready.login("viewer")
    ready.clock.advance(29 * 60)
    assert c.get("/api/status").status_code == 200  # activity moves the idle deadline
    ready.clock.advance(29 * 60)
    assert c.get("/api/status").status_code == 200
    ready.clock.advance(30 * 60 + 1)
    r = c.get("/api/status")
    assert r.status_code == 401 and "ended" in error_of(r)


def test_absolute_timeout(ready: Web) -> None:
    c = ready.login("viewer")
    for _ in range(12 * 60 // 20 + 2):
        ready.clock.advance(20 * 60)
        if c.get("/api/status").status_code != 200:
            break
    else:
        pytest.fail("the session outlived 12 h")
    assert 12 * 3600 - 20 * 60 < ready.clock() - 1_800_000_000.0 <= 12 * 3600 + 20 * 60


def test_session_answer_has_deadlines(ready: Web) -> None:
    c = ready.login("viewer")
    s = c.get("/api/session").json
    assert s["idle_expires_at"] == pytest.approx(ready.clock() + 30 * 60)
    assert s["expires_at"] == pytest.approx(ready.clock() + 12 * 3600)


# -- setup ------------------------------------------------------------------------------------


def test_setup_code_single_use(web: Web) -> None:
    code = setup.setup_code(web.paths, create=True)
    assert code and setup.setup_code(web.paths) == code  # stable until used
    mode = stat.S_IMODE(os.stat(web.paths.secrets_dir / "setup-code").st_mode)
    assert mode == 0o600
    c = web.client()
    assert c.get("/api/setup").json == {"required": True}
    body = {"code": "WRONG-CODE", "username": "boss", "password": "a-good-long-secret"}
    r = c.post("/api/setup", json=body)
    assert r.status_code == 403 and r.json["field"] == "code"
    body["code"] = code.lower().replace("-", " ")  # as people type it
    r = c.post("/api/setup", json=body)
    assert r.status_code == 201 and r.json["role"] == "admin"
    assert setup.setup_code(web.paths, create=False) is None
    assert c.get("/api/setup").json == {"required": False}
    body.update(code=code, username="boss2")
    assert c.post("/api/setup", json=body).status_code == 409
    assert web.login("boss", "a-good-long-secret").get("/api/status").status_code == 200


def test_setup_needs_a_code_and_a_good_password(web: Web) -> None:
    c = web.client()
    body = {"code": "ABCD-EFGH", "username": "boss", "password": "a-good-long-secret"}
    assert c.post("/api/setup", json=body).status_code == 403  # no code exists yet
    code = setup.setup_code(web.paths)
    r = c.post("/api/setup", json={**body, "code": code, "password": "short"})
    assert r.status_code == 422 and r.json["field"] == "password"
    assert setup.setup_code(web.paths, create=False) == code  # not used up by a failure


def test_setup_code_cli_root_only(web: Web) -> None:
    with pytest.raises(PermissionDenied):
        setup.code_for_cli(web.paths, euid=lambda: 1000)
    code = setup.code_for_cli(web.paths, euid=lambda: 0)
    assert code and code == setup.setup_code(web.paths, create=False)
    web.user("root-admin", "admin")
    assert setup.code_for_cli(web.paths, euid=lambda: 0) is None
    r = CliRunner().invoke(
        setup.setup_code_cmd, ["--data-dir", str(web.paths.data_dir), "--run-dir", "/tmp"]
    )
    if os.geteuid() == 0:
        assert r.exit_code == 0 and "an admin exists" in r.output
    else:
        assert isinstance(r.exception, PermissionDenied)


# -- passwords and users -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "password",
    ["short", "password1234", "Password1234", "qwertyuiop12", "operator-one", "aaaaaaaaaaaaaaaa"],
)
def test_password_policy_refuses(password: str) -> None:
    with pytest.raises(accounts.Invalid) as e:
        accounts.check_password(password, "operator-one")
    assert e.value.field == "password"


def test_password_policy_accepts() -> None:
    accounts.check_password("ramp-7-valve-orange", "alice")


def test_common_password_list_is_shipped() -> None:
    words = accounts.common_passwords()
    assert len(words) >= 1000
    assert "password1234" in words


def test_last_admin_is_kept(ready: Web) -> None:
    a = ready.login("admin")
    h = ready.h(a)
    assert a.delete("/api/users/viewer", headers=h).status_code == 204
    r = a.patch("/api/users/admin", json={"role": "viewer"}, headers=h)
    assert r.status_code == 409
    assert a.delete("/api/users/admin", headers=h).status_code == 409
    assert a.patch("/api/users/admin", json={"disabled": True}, headers=h).status_code == 409


def test_change_own_password(ready: Web) -> None:
    c = ready.login("viewer")
    other = ready.login("viewer")
    r = c.put(
        "/api/session/password",
        headers=ready.h(c),
        json={"current_password": "wrong-one-xx", "new_password": "another-long-one"},
    )
    assert r.status_code == 403
    r = c.put(
        "/api/session/password",
        headers=ready.h(c),
        json={"current_password": PASSWORD, "new_password": "another-long-one"},
    )
    assert r.status_code == 200
    assert other.get("/api/status").status_code == 401  # other sessions end
    assert c.get("/api/status").status_code == 200  # this one got a new session
    ready.login("viewer", "another-long-one")


# -- tokens -----------------------------------------------------------------------------------


def test_token_lifecycle(ready: Web) -> None:
    v = ready.login("viewer")
    r = v.post("/api/tokens", json={"name": "grafana", "role": "admin"}, headers=ready.h(v))
    assert r.status_code == 422 and r.json["field"] == "role"
    r = v.post("/api/tokens", json={"name": "grafana"}, headers=ready.h(v))
    assert r.status_code == 201
    secret, tid = r.json["token"], r.json["id"]
    assert r.json["role"] == "viewer" and secret[4:12] == r.json["prefix"]
    listed = v.get("/api/tokens").json
    assert [t["id"] for t in listed] == [tid] and "token" not in listed[0]
    auth = {"Authorization": f"Bearer {secret}"}
    c = ready.client()
    assert c.get("/api/status", headers=auth).status_code == 200
    assert c.get("/api/status", headers=auth).status_code == 200
    uses = audit_rows("token.use")
    assert len(uses) == 1 and uses[0].actor == "viewer"  # once a minute, not per request
    ready.clock.advance(accounts.TOKEN_AUDIT_EVERY_S)
    assert c.get("/api/status", headers=auth).status_code == 200
    assert len(audit_rows("token.use")) == 2
    # others cannot see or revoke it; the owner can
    o = ready.login("operator")
    assert o.delete(f"/api/tokens/{tid}", headers=ready.h(o)).status_code == 404
    assert v.delete(f"/api/tokens/{tid}", headers=ready.h(v)).status_code == 204
    r = c.get("/api/status", headers=auth)
    assert r.status_code == 401 and "token" in error_of(r)
    assert audit_rows("token.invalid")[-1].result == "denied"


def test_token_expiry_and_demotion(ready: Web) -> None:
    with ready.app.app_context():
        _, secret = accounts.create_token(
            "operator", role="operator", name="t", now=ready.clock(), expires_at=ready.clock() + 60
        )
    c = ready.client()
    auth = {"Authorization": f"Bearer {secret}"}
    assert c.get("/api/audit", headers=auth).status_code == 200
    with ready.app.app_context():
        accounts.update_user("operator", role="viewer", now=ready.clock())
    assert c.get("/api/audit", headers=auth).status_code == 403  # the user's role caps it
    ready.clock.advance(61)
    assert c.get("/api/status", headers=auth).status_code == 401


# -- headers and errors ------------------------------------------------------------------


def test_security_headers(ready: Web) -> None:
    c = ready.login("viewer")
    for path in ("/api/status", "/api/nothing-here", "/login", "/"):
        r = c.get(path)
        csp = r.headers["Content-Security-Policy"]
        for part in (
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' data:",
            "frame-ancestors 'none'",
            "form-action 'self'",
            "base-uri 'none'",
        ):
            assert part in csp
        assert "unsafe-inline" not in csp
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        assert r.headers["Referrer-Policy"] == "no-referrer"
        assert r.headers["X-Frame-Options"] == "DENY"
        assert r.headers["Strict-Transport-Security"].startswith("max-age=")
    assert c.get("/api/status").headers["Cache-Control"] == "no-store"


def test_api_errors_are_json(ready: Web) -> None:
    c = ready.login("admin")
    r = c.get("/api/nothing-here")
    assert r.status_code == 404 and r.is_json and r.json["error"]
    r = c.delete("/api/status", headers=ready.h(c))
    assert r.status_code == 405 and r.is_json
    r = c.post("/api/sql", data="not json", headers={**ready.h(c), "Content-Type": "text/plain"})
    assert r.status_code == 400 and r.is_json
    r = c.post(
        "/api/users", json={"name": "x", "role": "boss", "password": "p"}, headers=ready.h(c)
    )
    assert r.status_code == 422 and r.json["field"] == "role"
    r = c.get("/api/events?limit=0")
    assert r.status_code == 422 and r.json["field"] == "limit"
    r = c.get("/api/events?bogus=1")
    assert r.status_code == 422 and r.json["field"] == "bogus"


def test_internal_errors_are_json_without_traceback(
    ready: Web, monkeypatch: pytest.MonkeyPatch
) -> None:
    from appliance.web.views import system

    def boom(c: object) -> None:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(system, "status_doc", boom)
    r = ready.login("viewer").get("/api/status")
    assert r.status_code == 500 and r.is_json
    assert "secret internals" not in r.get_data(as_text=True)
    assert "Traceback" not in r.get_data(as_text=True)


def test_setup_code_not_made_once_an_admin_exists(web: Web) -> None:
    code = setup.setup_code(web.paths)
    assert code
    web.user("boss", "admin")
    assert setup.admin_exists(web.paths)
    assert setup.setup_code(web.paths) is None  # a leftover is deleted, none is made
    assert not (web.paths.secrets_dir / "setup-code").exists()


# -- tokens do not outlive their reason ----------------------------------------------------


def _bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def test_a_token_cannot_mint_a_longer_lived_token(ready: Web) -> None:
    with ready.app.app_context():
        _, parent = accounts.create_token(
            "operator", role=None, name="ci", now=ready.clock(), expires_at=ready.clock() + 60
        )
    c = ready.client()
    r = c.post("/api/tokens", json={"name": "forever"}, headers=_bearer(parent))
    assert r.status_code == 201
    assert r.json["expires_at"] == pytest.approx(ready.clock() + 60)  # capped at the parent's
    later = ready.clock() + 10 * 365 * 86400
    r = c.post("/api/tokens", json={"name": "long", "expires_at": later}, headers=_bearer(parent))
    assert r.status_code == 201 and r.json["expires_at"] == pytest.approx(ready.clock() + 60)
    r = c.post(
        "/api/tokens",
        json={"name": "short", "expires_at": ready.clock() + 30},
        headers=_bearer(parent),
    )
    assert r.status_code == 201 and r.json["expires_at"] == pytest.approx(ready.clock() + 30)
    child = r.json["token"]
    ready.clock.advance(61)
    assert c.get("/api/status", headers=_bearer(child)).status_code == 401
    # a token without expiry (made at a login) may still mint tokens that never expire
    forever = ready.token("operator")
    r = ready.client().post("/api/tokens", json={"name": "x"}, headers=_bearer(forever))
    assert r.status_code == 201 and r.json["expires_at"] is None


def test_a_password_reset_by_an_admin_revokes_tokens_and_sessions(ready: Web) -> None:
    v = ready.login("viewer")
    secret = ready.token("viewer")
    c = ready.client()
    assert c.get("/api/status", headers=_bearer(secret)).status_code == 200
    a = ready.login("admin")
    r = a.patch("/api/users/viewer", json={"password": "a-new-long-secret-1"}, headers=ready.h(a))
    assert r.status_code == 200, r.json
    assert c.get("/api/status", headers=_bearer(secret)).status_code == 401
    assert v.get("/api/status").status_code == 401
    assert a.get("/api/status").status_code == 200  # the admin's own session goes on
    with ready.app.app_context():
        (row,) = accounts.list_tokens("viewer")
        assert row.revoked_at == ready.clock() and row.revoked_by == "password change"


def test_changing_your_own_password_revokes_your_tokens(ready: Web) -> None:
    c = ready.login("viewer")
    secret = ready.token("viewer")
    r = c.put(
        "/api/session/password",
        headers=ready.h(c),
        json={"current_password": PASSWORD, "new_password": "another-long-one"},
    )
    assert r.status_code == 200
    assert ready.client().get("/api/status", headers=_bearer(secret)).status_code == 401


def test_a_token_cannot_change_a_password_through_the_session_api(ready: Web) -> None:
    """PUT /api/session/password is the signed-in person's: a token (a script, or a
    stolen one) is refused even with the right current password, and nothing changes."""
    token = ready.token("viewer")
    r = ready.client().put(
        "/api/session/password",
        headers=_bearer(token),
        json={"current_password": PASSWORD, "new_password": "another-long-one"},
    )
    assert r.status_code == 403 and "token" in error_of(r)
    assert ready.client().get("/api/status", headers=_bearer(token)).status_code == 200
    ready.login("viewer")  # the old password still works


def test_your_own_password_through_the_users_api_needs_the_current_one(ready: Web) -> None:
    a = ready.login("admin")
    other = ready.login("admin")
    h = ready.h(a)
    new = "admins-new-long-secret"
    r = a.patch("/api/users/admin", json={"password": new}, headers=h)
    assert r.status_code == 422 and r.json["field"] == "current_password"
    r = a.patch(
        "/api/users/admin", json={"password": new, "current_password": "wrong-one-xx"}, headers=h
    )
    assert r.status_code == 403 and r.json["field"] == "current_password"
    ready.login("admin")  # nothing changed
    stolen = a.get_cookie(COOKIE)
    assert stolen is not None
    r = a.patch("/api/users/admin", json={"password": new, "current_password": PASSWORD}, headers=h)
    assert r.status_code == 200, r.json
    assert other.get("/api/status").status_code == 401  # the others end
    # and so does this one: a copy of its cookie (the reason to change a password, maybe)
    # would go on with it; PUT /api/session/password hands out a new session instead
    thief = ready.client()
    thief.set_cookie(COOKIE, stolen.value)
    assert thief.get("/api/status").status_code == 401
    assert a.get("/api/status").status_code == 401
    b = ready.login("admin", new)
    # an admin token is the same person: it needs the current password too
    token = ready.token("admin")
    c = ready.client()
    r = c.patch("/api/users/admin", json={"password": PASSWORD}, headers=_bearer(token))
    assert r.status_code == 422 and r.json["field"] == "current_password"
    r = c.patch(
        "/api/users/admin",
        json={"password": PASSWORD, "current_password": new},
        headers=_bearer(token),
    )
    assert r.status_code == 200
    assert c.get("/api/status", headers=_bearer(token)).status_code == 401  # revoked with it
    assert b.get("/api/status").status_code == 401  # through a token, every session ends
    ready.login("admin", PASSWORD)


def test_wrong_current_password_counts_as_a_failed_login(ready: Web) -> None:
    a = ready.login("admin")
    h = ready.h(a)
    for _ in range(accounts.FREE_FAILURES["pair"]):
        r = a.patch(
            "/api/users/admin",
            json={"password": "admins-new-long-secret", "current_password": "wrong-one-xx"},
            headers=h,
        )
        assert r.status_code == 403
    r = a.patch(
        "/api/users/admin",
        json={"password": "admins-new-long-secret", "current_password": PASSWORD},
        headers=h,
    )
    assert r.status_code == 429


# -- a token's children end with it --------------------------------------------------------


def _mint(web: Web, secret: str, name: str) -> dict[str, Any]:
    r = web.client().post("/api/tokens", json={"name": name}, headers=_bearer(secret))
    assert r.status_code == 201, r.json
    return r.json


def test_revoking_a_token_revokes_the_tokens_made_with_it(ready: Web) -> None:
    """The outside review: token P mints C with `Bearer P`; DELETE P answered 204 and C
    still worked. Now C and its own children end with P, and the listing names the parent."""
    v = ready.login("viewer")
    r = v.post("/api/tokens", json={"name": "parent"}, headers=ready.h(v))
    assert r.status_code == 201 and r.json["parent"] is None
    p_secret, p_id = r.json["token"], r.json["id"]
    child = _mint(ready, p_secret, "child")
    grandchild = _mint(ready, child["token"], "grandchild")
    other = _mint(ready, ready.token("viewer"), "unrelated")
    assert child["parent"] == p_id and grandchild["parent"] == child["id"]
    listed = {t["id"]: t["parent"] for t in v.get("/api/tokens").json}
    assert listed[p_id] is None and listed[child["id"]] == p_id
    assert listed[grandchild["id"]] == child["id"]
    c = ready.client()
    for t in (child, grandchild, other):
        assert c.get("/api/status", headers=_bearer(t["token"])).status_code == 200
    assert v.delete(f"/api/tokens/{p_id}", headers=ready.h(v)).status_code == 204
    for t in (child, grandchild):
        assert c.get("/api/status", headers=_bearer(t["token"])).status_code == 401, t["name"]
    assert c.get("/api/status", headers=_bearer(other["token"])).status_code == 200
    revoked = {t["id"]: t["revoked_at"] for t in v.get("/api/tokens").json}
    assert revoked[child["id"]] is not None and revoked[grandchild["id"]] is not None
    assert revoked[other["id"]] is None


def test_use_token_checks_the_chain(ready: Web) -> None:
    """A child whose parent is revoked by other means (a row written directly, an old
    version's revocation) is refused at use as well, not only at revocation."""
    parent = ready.token("operator")
    child = _mint(ready, parent, "child")
    with ready.app.app_context():
        digest = accounts._digest(parent)
        accounts.ApiToken.update(revoked_at=ready.clock()).where(
            accounts.ApiToken.digest == digest
        ).execute()
    r = ready.client().get("/api/status", headers=_bearer(child["token"]))
    assert r.status_code == 401


def test_a_database_without_the_parent_table_keeps_working(
    tmp_path: Path, empty_data_dir: Path
) -> None:
    """An existing unit's config DB has web_token but no parent table: opening it adds
    the table, and its tokens keep working (with no parent) and can mint children."""
    old = tmp_path / "old"
    shutil.copytree(empty_data_dir, old)
    s = Store(old)
    accounts.set_hasher(PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))
    accounts.create_user("admin", "admin", PASSWORD, by="test", now=T0)
    accounts.create_user("viewer", "viewer", PASSWORD, by="test", now=T0)
    _, secret = accounts.create_token("viewer", role=None, name="old", now=T0)
    s.config.execute_sql("DROP TABLE web_token_parent")
    s.close()
    web = make_web(tmp_path, old)
    try:
        r = web.client().get("/api/tokens", headers=_bearer(secret))
        assert r.status_code == 200 and r.json[0]["parent"] is None
        assert _mint(web, secret, "child")["parent"] == r.json[0]["id"]
    finally:
        web.app.extensions["appliance"].store.close()


# -- setup does not audit typed text ----------------------------------------------------------


def test_a_failed_setup_does_not_audit_the_typed_user_name(web: Web) -> None:
    """The outside review: a wrong setup code was audited with the typed user name as the
    actor, which may be a password. Now: anonymous, with the name's keyed tag."""
    typed = "Hunter2-MySecretPassword!"
    body = {"code": "000000", "username": typed, "password": "xxxxxxxxxxxx"}
    r = web.client().post("/api/setup", json=body)
    assert r.status_code == 403
    rows = audit_rows("setup")
    assert len(rows) == 1 and rows[0].actor == "anonymous" and rows[0].result == "failed"
    assert all(typed not in f"{a.actor} {a.target} {a.detail}" for a in Audit.select())
    with web.app.app_context():
        assert f"name #{accounts.name_tag(typed)}" in rows[0].detail


def test_a_chain_of_tokens_is_bounded(ready: Web) -> None:
    """Each use checks every ancestor, so a chain has a bounded length: past it, minting
    with a token is refused (422 naming the Authorization header), at a login it works."""
    secret = ready.token("viewer")
    for _ in range(accounts.MAX_TOKEN_GENERATIONS - 1):
        secret = _mint(ready, secret, "next")["token"]
    assert ready.client().get("/api/status", headers=_bearer(secret)).status_code == 200
    r = ready.client().post("/api/tokens", json={"name": "deeper"}, headers=_bearer(secret))
    assert r.status_code == 422 and r.json["field"] == "Authorization", r.json
    v = ready.login("viewer")
    assert v.post("/api/tokens", json={"name": "x"}, headers=ready.h(v)).status_code == 201


def test_a_taken_user_name_is_refused_at_its_field(ready: Web) -> None:
    """IEC 62443-4-2 CR 1.4: one name, one account; the second is a 409 naming `name`."""
    a = ready.login("admin")
    h = ready.h(a)
    body = {"name": "viewer", "role": "admin", "password": "another-long-password-99"}
    r = a.post("/api/users", json=body, headers=h)
    assert r.status_code == 409, r.json
    assert r.json["field"] == "name"
    assert a.get("/api/users").json  # nothing else changed: the viewer is still a viewer
    users = {u["name"]: u["role"] for u in a.get("/api/users").json}
    assert users["viewer"] == "viewer"
