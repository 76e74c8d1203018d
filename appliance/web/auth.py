"""Who is asking, and may they: sessions, API tokens, CSRF, roles; the session and setup API.

A request is authenticated by `Authorization: Bearer <token>` (scripts; no CSRF
needed, a browser never sends it by itself) or by the session cookie (the UI;
every non-GET must carry the session's CSRF token in `X-CSRF-Token`). Cookies are
`__Host-` prefixed, Secure, HttpOnly, SameSite=Strict. Until an admin exists the
API answers 403 `setup required` (pages redirect to /setup); without a principal
401 (pages redirect to /login).

`require(role, page=False)` guards a view: viewer < operator < admin.

Logins are throttled by `accounts` (see there); this module tells it whether the
client is on the management side (`on_mgmt_side`: loopback, or an address inside a
subnet of a mgmt interface, from the desired configuration and the net role's report),
where an account-wide lock never applies. A failed login with a name that does not
exist is audited as `unknown user` with the name's keyed tag, never the typed text; a
failed setup (wrong code) as `anonymous`, with the typed name's tag too.
"""

from __future__ import annotations

import contextlib
import functools
import hmac
import ipaddress
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from flask import Blueprint, Response, abort, g, jsonify, make_response, redirect, request

from appliance.errors import ApplianceError, Conflict, PermissionDenied
from appliance.web import accounts
from appliance.web.api import created, endpoint, error_body, no_content
from appliance.web.context import ctx
from appliance.web.schemas import (
    Error,
    LoginIn,
    PasswordIn,
    SessionOut,
    SetupIn,
    SetupState,
    UserOut,
)

log = logging.getLogger(__name__)

COOKIE = "__Host-appliance-session"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_HEADER = "X-CSRF-Token"


class Unauthorized(ApplianceError):
    code = "unauthorized"
    exit_code = 77


@dataclass(frozen=True)
class Principal:
    name: str
    role: str
    via: str  # "session" | "token"
    csrf: str | None = None
    session: accounts.SessionInfo | None = None
    token: accounts.TokenUse | None = None

    @property
    def actor(self) -> str:
        """How the audit log names who acted."""
        if self.token is not None:
            return f"{self.name} (token {self.token.prefix})"
        return self.name

    def at_least(self, role: str) -> bool:
        return accounts.at_least(self.role, role)


def source() -> str:
    return request.remote_addr or "unknown"


def mgmt_networks() -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """The subnets of the mgmt interfaces: the desired configuration's, and what the net
    role reports on mgmt-role links (DHCP, or before there is a configuration)."""
    c = ctx()
    nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    cfg = c.desired()[1]
    if cfg is not None:
        nets.extend(a.network for i in cfg.interfaces_by_role("mgmt") for a in i.addresses)
    for link in (c.live.read("net") or {}).get("links") or []:
        if isinstance(link, dict) and link.get("role") == "mgmt":
            for a in link.get("addresses") or []:
                with contextlib.suppress(ValueError, TypeError):
                    nets.append(ipaddress.ip_interface(a).network)
    return nets


def on_mgmt_side(addr: str | None = None) -> bool:
    """Whether the client (`addr`, default: this request's) is the console or on a mgmt
    subnet: the side that an account-wide login lock never shuts out."""
    try:
        ip = ipaddress.ip_address(source() if addr is None else addr)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return True
    return any(ip.version == n.version and ip in n for n in mgmt_networks())


def audit(
    action: str,
    *,
    target: str = "",
    result: str = "ok",
    detail: str = "",
    actor: str | None = None,
) -> None:
    """An audit row for this request: who (the principal), from where (client address)."""
    if actor is None:
        p = principal()
        actor = p.actor if p else "anonymous"
    ctx().store.audit(
        actor, action, target=target, result=result, detail=detail, source=f"web:{source()}"
    )


def _bearer() -> str | None:
    header = request.headers.get("Authorization", "")
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer":
        return ""
    return value.strip()


def _token_target(secret: str) -> str:
    """How the audit names a refused bearer token: by the prefix people see for our
    tokens; anything else may be a password pasted into the wrong place, so not at all."""
    if secret.startswith(accounts.TOKEN_PREFIX) and len(secret) > len(accounts.TOKEN_PREFIX):
        start = len(accounts.TOKEN_PREFIX)
        return f"token {secret[start : start + 8]}"
    return "not an appliance token"


def _resolve() -> Principal | None:
    c = ctx()
    now = c.now()
    secret = _bearer()
    if secret is not None:
        use = accounts.use_token(secret, source=source(), now=now) if secret else None
        if use is None:
            # A valid token works whatever its address did; a wrong one counts as a failed
            # login of the address (and is refused unheard while the address is locked).
            accounts.check_throttle(None, source(), now)
            accounts.record_source_failure(source(), now)
            c.store.audit(
                "anonymous",
                "token.invalid",
                target=_token_target(secret),
                result="denied",
                detail=f"{request.method} {request.path}",
                source=f"web:{source()}",
            )
            g.auth_problem = "the API token is unknown, revoked or expired"
            return None
        if use.audit_due:
            c.store.audit(
                use.user,
                "token.use",
                target=f"token {use.prefix}",
                detail=f"{request.method} {request.path}",
                source=f"web:{source()}",
            )
        return Principal(use.user, use.role, "token", token=use)
    sid = request.cookies.get(COOKIE)
    if not sid:
        return None
    idle, absolute = c.session_limits()
    info = accounts.lookup_session(sid, now=now, idle_s=idle, max_s=absolute)
    if info is None:
        g.auth_problem = "the session has ended: log in again"
        g.clear_cookie = True
        return None
    return Principal(info.user, info.role, "session", csrf=info.csrf, session=info)


def principal() -> Principal | None:
    """The authenticated caller of this request (resolved once per request)."""
    if "principal" not in g:
        g.principal = _resolve()
    return g.principal


def csrf_token() -> str:
    """For the page templates (`<meta name="csrf-token">`): '' without a session."""
    try:
        p = principal()
    except ApplianceError:
        return ""
    return (p.csrf or "") if p else ""


def current_user() -> Principal | None:
    try:
        return principal()
    except ApplianceError:
        return None


def _json(status: int, message: str, **extra: Any) -> Response:
    resp = jsonify(error_body(message, **extra))
    resp.status_code = status
    if getattr(g, "clear_cookie", False):
        clear_cookie(resp)
    return resp


def check_csrf(p: Principal) -> None:
    if request.method in SAFE_METHODS or p.via != "session":
        return
    offered = request.headers.get(CSRF_HEADER, "")
    if not offered or not hmac.compare_digest(offered.encode(), (p.csrf or "").encode()):
        raise PermissionDenied(f"CSRF token missing or wrong (send the header {CSRF_HEADER})")


def require(role: str, page: bool = False) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Guard a view: setup done, authenticated, at least `role`, CSRF on changes.

    API views answer JSON 403/401/403; page views (page=True) redirect to /setup or
    /login, and answer a plain 403 for a role too low.
    """
    accounts.rank(role)

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kw: Any) -> Any:
            if not ctx().admin_exists():
                if page:
                    return redirect("/setup")
                return _json(403, "setup required")
            p = principal()
            if p is None:
                if page:
                    target = request.full_path.rstrip("?")
                    resp = redirect(f"/login?next={quote(target, safe='/')}")
                    if getattr(g, "clear_cookie", False):
                        clear_cookie(resp)
                    return resp
                return _json(401, getattr(g, "auth_problem", None) or "login required")
            if not p.at_least(role):
                if page:
                    abort(403)
                return _json(403, f"needs the {role} role (you are {p.role})")
            check_csrf(p)
            return fn(*args, **kw)

        wrapper.required_role = role  # type: ignore[attr-defined]
        return wrapper

    return deco


def public(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A view anyone may call (login, setup, the OpenAPI document)."""
    fn.required_role = None  # type: ignore[attr-defined]
    return fn


def set_cookie(resp: Response, sid: str) -> None:
    resp.set_cookie(COOKIE, sid, secure=True, httponly=True, samesite="Strict", path="/")


def clear_cookie(resp: Response) -> None:
    resp.delete_cookie(COOKIE, secure=True, httponly=True, samesite="Strict", path="/")


def session_out(p: Principal) -> dict[str, Any]:
    s = p.session
    return {
        "user": p.name,
        "role": p.role,
        "csrf": p.csrf,
        "idle_expires_at": s.idle_expires_at if s else None,
        "expires_at": s.expires_at if s else None,
        "via": p.via,
    }


# -- the session and setup API -------------------------------------------------------

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
        return _json(401, getattr(g, "auth_problem", None) or "login required")
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
        return _json(401, "wrong user name or password")
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
    actor = accounts.audit_name(username)
    detail = "" if actor == username else f"name #{accounts.name_tag(username)}"
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
        return _json(403, "the current password is wrong", field="current_password")
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
        return _json(403, "wrong setup code", field="code")
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


__all__ = ["Error", "Principal", "audit", "bp", "csrf_token", "principal", "require"]
