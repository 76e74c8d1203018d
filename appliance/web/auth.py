"""Who is asking, and may they: sessions, API tokens, CSRF, roles.

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

from flask import Response, abort, g, jsonify, redirect, request

from appliance.errors import ApplianceError, PermissionDenied
from appliance.web import accounts
from appliance.web.context import ctx
from appliance.web.jsonapi import error_body

log = logging.getLogger(__name__)

COOKIE = "__Host-appliance-session"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_HEADER = "X-CSRF-Token"


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


def refusal(status: int, message: str, **extra: Any) -> Response:
    """A JSON error answer from authentication (401, 403), clearing a dead session's cookie."""
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
                return refusal(403, "setup required")
            p = principal()
            if p is None:
                if page:
                    target = request.full_path.rstrip("?")
                    resp = redirect(f"/login?next={quote(target, safe='/')}")
                    if getattr(g, "clear_cookie", False):
                        clear_cookie(resp)
                    return resp
                return refusal(401, getattr(g, "auth_problem", None) or "login required")
            if not p.at_least(role):
                _denied(f"needs the {role} role (is {p.role})")
                if page:
                    abort(403)
                return refusal(403, f"needs the {role} role (you are {p.role})")
            try:
                check_csrf(p)
            except PermissionDenied as e:
                _denied(e.message)
                raise
            return fn(*args, **kw)

        wrapper.required_role = role  # type: ignore[attr-defined]
        return wrapper

    return deco


def _denied(why: str) -> None:
    """An authenticated request refused by its role or CSRF token: an audit row (CR 2.8:
    authorization failures are audited), named by method and path, never by body."""
    audit("auth.denied", target=f"{request.method} {request.path}", result="denied", detail=why)


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


__all__ = ["Principal", "audit", "csrf_token", "principal", "require"]
