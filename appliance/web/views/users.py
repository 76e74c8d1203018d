"""Users (admin) and API tokens (your own; admins see and revoke all).

A new password revokes the user's tokens and ends all their sessions
(`accounts.update_user`), the admin's own too when it is their own password (log in
again; `PUT /api/session/password` hands out a new session instead); an admin changing
their *own* password here needs `current_password`, with a session or a token alike (a
stolen admin token must not become the account). A token made with a
token expires at the latest when that token does (capped, not refused: scripts may
make narrower tokens for their helpers, never longer-lived ones).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify

from appliance.errors import ApplianceError, BadRequest
from appliance.web import accounts
from appliance.web.api import endpoint
from appliance.web.auth import audit, on_mgmt_side, principal, source
from appliance.web.context import ctx
from appliance.web.jsonapi import created, error_body, no_content
from appliance.web.schemas import TokenCreated, TokenIn, TokenOut, UserIn, UserOut, UserPatch

bp = Blueprint("users", __name__, url_prefix="/api")


def _list(model: type) -> dict[str, Any]:
    return {"type": "array", "items": {"$ref": f"#/components/schemas/{model.__name__}"}}


@endpoint(
    bp,
    "/users",
    "GET",
    role="admin",
    summary="Every user",
    response=_list(UserOut),
    extra_schemas=(UserOut,),
)
def users() -> Any:
    return [u.as_dict() for u in accounts.list_users()]


@endpoint(
    bp,
    "/users",
    "POST",
    role="admin",
    body=UserIn,
    response=UserOut,
    status=201,
    errors=(400, 409, 422),
    summary="Create a user",
)
def user_create(body: UserIn) -> Any:
    p = principal()
    assert p is not None
    try:
        user = accounts.create_user(body.name, body.role, body.password, by=p.name, now=ctx().now())
    except ApplianceError as e:
        if e.field == "username":  # accounts names the setup form's key; this body's is `name`
            e.field = "name"
            if isinstance(e, BadRequest):
                e.errors = [{"path": "name", "message": e.message}]
        raise
    audit("user.create", target=f"user {user.name}", detail=f"role={user.role}")
    return created(user.as_dict())


@endpoint(
    bp,
    "/users/<name>",
    "PATCH",
    role="admin",
    body=UserPatch,
    response=UserOut,
    errors=(400, 403, 404, 409, 422, 429),
    summary="Change a user's role, password or disabled flag "
    "(your own password: with current_password; a new password revokes the user's tokens "
    "and ends their sessions, this one too)",
)
def user_patch(name: str, body: UserPatch) -> Any:
    p = principal()
    assert p is not None
    now = ctx().now()
    if body.password is not None and name == p.name:
        if body.current_password is None:
            raise accounts.Invalid(
                "is required to change your own password", field="current_password"
            )
        if not accounts.verify_password(
            name, body.current_password, source=source(), now=now, trusted=on_mgmt_side()
        ):
            audit(
                "user.update",
                target=f"user {name}",
                result="failed",
                detail="password: wrong current password",
            )
            resp = jsonify(error_body("the current password is wrong", "current_password"))
            resp.status_code = 403
            return resp
    user = accounts.update_user(
        name, now=now, role=body.role, password=body.password, disabled=body.disabled
    )
    changed = [k for k in ("role", "disabled") if getattr(body, k) is not None] + (
        ["password"] if body.password is not None else []
    )
    audit(
        "user.update",
        target=f"user {name}",
        detail=", ".join(
            f"{k}={getattr(body, k)}" if k != "password" else "password" for k in changed
        ),
    )
    return user.as_dict()


@endpoint(
    bp,
    "/users/<name>",
    "DELETE",
    role="admin",
    status=204,
    errors=(404, 409),
    summary="Delete a user (their sessions and tokens end)",
)
def user_delete(name: str) -> Any:
    accounts.delete_user(name)
    audit("user.delete", target=f"user {name}")
    return no_content()


@endpoint(
    bp,
    "/tokens",
    "GET",
    role="viewer",
    response=_list(TokenOut),
    extra_schemas=(TokenOut,),
    summary="API tokens: your own (admins: everyone's)",
)
def tokens() -> Any:
    p = principal()
    assert p is not None
    mine = None if p.at_least("admin") else p.name
    return [t.as_dict() for t in accounts.list_tokens(mine)]


@endpoint(
    bp,
    "/tokens",
    "POST",
    role="viewer",
    body=TokenIn,
    response=TokenCreated,
    status=201,
    errors=(400, 409, 422),
    summary="Create an API token for yourself (the secret is shown only in this answer; "
    "made with a token, it expires at the latest when that token does; 409: you have "
    "the most live tokens a user may have)",
)
def token_create(body: TokenIn) -> Any:
    p = principal()
    assert p is not None
    role = body.role or p.role
    if accounts.rank(role) > accounts.rank(p.role):
        raise accounts.Invalid(f"cannot exceed your own role ({p.role})", field="role")
    row, secret = accounts.create_token(
        p.name,
        role=role,
        name=body.name,
        now=ctx().now(),
        expires_at=body.expires_at,
        not_after=p.token.expires_at if p.token is not None else None,
        parent=p.token.token_id if p.token is not None else None,
    )
    audit("token.create", target=f"token {row.prefix}", detail=f"role={row.role} {row.name}")
    return created({**row.as_dict(), "token": secret})


@endpoint(
    bp,
    "/tokens/<int:token_id>",
    "DELETE",
    role="viewer",
    status=204,
    errors=(404,),
    summary="Revoke a token and the tokens made with it (your own; admins: any)",
)
def token_revoke(token_id: int) -> Any:
    p = principal()
    assert p is not None
    owner = None if p.at_least("admin") else p.name
    row = accounts.revoke_token(token_id, by=p.actor, now=ctx().now(), owner=owner)
    audit("token.revoke", target=f"token {row.prefix}", detail=f"user={row.user}")
    return no_content()
