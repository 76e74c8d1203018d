"""The session and setup API: log in and out, change your own password, first-time setup.

Authentication itself (who is asking, may they) is `auth.py`; these are its routes.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, g, jsonify, make_response, request

from appliance.errors import ApplianceError, Conflict, PermissionDenied
from appliance.web import accounts
from appliance.web.api import endpoint
from appliance.web.auth import (
    COOKIE,
    Principal,
    audit,
    check_csrf,
    clear_cookie,
    on_mgmt_side,
    principal,
    refusal,
    session_out,
    set_cookie,
    source,
)
from appliance.web.context import ctx
from appliance.web.jsonapi import created, no_content
from appliance.web.schemas import LoginIn, PasswordIn, SessionOut, SetupIn, SetupState, UserOut

bp = Blueprint("auth", __name__, url_prefix="/api")


@endpoint(
    bp,
    "/session",
    "GET",
    role=None,
    summary="Who am I: user, role, CSRF token, when the session ends (401: nobody)",
    response=SessionOut,
    errors=(401, 429),
)
def session_get() -> Any:
    p = principal()
    if p is None:
        return refusal(401, getattr(g, "auth_problem", None) or "login required")
    return session_out(p)


@endpoint(
    bp,
    "/session",
    "POST",
    role=None,
    summary="Log in: a new session (a new id every time) and its CSRF token",
    body=LoginIn,
    response=SessionOut,
    errors=(400, 401, 422, 429),
)
def session_login(body: LoginIn) -> Any:
    c = ctx()
    now = c.now()
    try:
        result = accounts.login(
            body.username, body.password, source=source(), now=now, trusted=on_mgmt_side()
        )
    except accounts.Throttled:
        _audit_failed_login(body.username, "throttled")
        raise
    if result is None:
        _audit_failed_login(body.username, "failed")
        return refusal(401, "wrong user name or password")
    old = request.cookies.get(COOKIE)
    sid, _ = accounts.create_session(result.user, source=source(), now=now, replace=old)
    idle, absolute = c.session_limits()
    info = accounts.lookup_session(sid, now=now, idle_s=idle, max_s=absolute)
    assert info is not None
    p = Principal(info.user, info.role, "session", csrf=info.csrf, session=info)
    g.principal = p
    audit("login", actor=result.user)
    resp = make_response(jsonify(session_out(p)))
    set_cookie(resp, sid)
    return resp


def _audit_failed_login(username: str, result: str) -> None:
    actor, detail = accounts.failed_login_name(username)
    audit("login", actor=actor, result=result, detail=detail)


@endpoint(
    bp,
    "/session",
    "DELETE",
    role=None,
    summary="Log out (ends the session; without one, nothing to do)",
    status=204,
    errors=(403,),
)
def session_logout() -> Any:
    sid = request.cookies.get(COOKIE)
    resp = no_content()
    if sid:
        try:
            p = principal()
        except ApplianceError:
            p = None
        if p is not None and p.via == "session":
            check_csrf(p)
            audit("logout")
        accounts.end_session(sid)
        clear_cookie(resp)
    return resp


@endpoint(
    bp,
    "/session/password",
    "PUT",
    role="viewer",
    summary="Change your own password (revokes your API tokens, ends your other sessions)",
    body=PasswordIn,
    response=SessionOut,
    errors=(400, 401, 403, 422, 429),
)
def session_password(body: PasswordIn) -> Any:
    p = principal()
    assert p is not None
    if p.via != "session":
        raise PermissionDenied("an API token cannot change a password: log in")
    c = ctx()
    now = c.now()
    if not accounts.verify_password(
        p.name, body.current_password, source=source(), now=now, trusted=on_mgmt_side()
    ):
        audit("password.change", target=p.name, result="failed", detail="wrong current password")
        return refusal(403, "the current password is wrong", field="current_password")
    accounts.update_user(p.name, password=body.new_password, now=now)
    audit("password.change", target=p.name)
    sid, _ = accounts.create_session(p.name, source=source(), now=now)
    idle, absolute = c.session_limits()
    info = accounts.lookup_session(sid, now=now, idle_s=idle, max_s=absolute)
    assert info is not None
    resp = make_response(
        jsonify(session_out(Principal(p.name, info.role, "session", csrf=info.csrf, session=info)))
    )
    set_cookie(resp, sid)
    return resp


@endpoint(
    bp, "/setup", "GET", role=None, summary="Is first-time setup needed?", response=SetupState
)
def setup_get() -> Any:
    return {"required": not ctx().admin_exists()}


@endpoint(
    bp,
    "/setup",
    "POST",
    role=None,
    summary="Create the first admin with the one-time setup code (`appliance setup-code`)",
    body=SetupIn,
    response=UserOut,
    status=201,
    errors=(400, 403, 409, 422, 429),
)
def setup_post(body: SetupIn) -> Any:
    from appliance.web import setup

    c = ctx()
    now = c.now()
    if c.admin_exists():
        raise Conflict("setup is done: an admin exists")
    accounts.check_throttle(None, source(), now)
    if not setup.code_matches(c.paths, body.code):
        accounts.record_source_failure(source(), now)
        # no user exists yet, so what was typed as the name is never one (may be a password)
        detail = f"wrong setup code; name #{accounts.name_tag(body.username)}"
        audit("setup", actor="anonymous", result="failed", detail=detail)
        return refusal(403, "wrong setup code", field="code")
    with c.store.config.atomic():
        if accounts.admin_exists():
            raise Conflict("setup is done: an admin exists")
        user = accounts.create_user(body.username, "admin", body.password, by="setup", now=now)
    setup.consume(c.paths)
    c.forget_admin()
    audit("setup", actor=user.name, target=f"user {user.name}", detail="first admin created")
    c.store.event(
        "web.setup",
        f"first admin {user.name!r} created with the setup code from {source()}",
        source="web",
        at=now,
    )
    return created(user.as_dict())
